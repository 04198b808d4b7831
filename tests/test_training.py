"""keras_fewshot.training: a tiny run, its files, resuming, and rebuilding the model."""

import csv
import dataclasses
import json
import pathlib
import re
import shutil

import keras
import numpy as np
import pytest

from keras_fewshot import training
from keras_fewshot.models import PrototypicalNetwork

TINY = training.TrainConfig(model="protonet", model_config={"filters": 8}, split="vinyals",
                            subset="val", ways=5, shots=1, queries=1, episodes=4,
                            episodes_per_epoch=2, lr_decay_every=2, seed=3)
INIT_SEED = 42


def checkpoint_numbers(model_dir):
    """Step numbers of the complete checkpoints (TF `ckpt-N.index` or `ckpt-N.weights.h5`)."""
    return sorted(int(m.group(1)) for p in (pathlib.Path(model_dir) / "checkpoints").iterdir()
                  if (m := re.fullmatch(r"ckpt-(\d+)\.(index|weights\.h5)", p.name)))


def history_rows(model_dir):
    with open(pathlib.Path(model_dir) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def train(config, model_dir, omniglot_dir):
    keras.utils.set_random_seed(INIT_SEED)  # same initial weights for every fresh model
    return training.train(config, model_dir, data_source=omniglot_dir, verbose=0)


@pytest.fixture(scope="module")
def tiny_run(omniglot_dir, tmp_path_factory):
    """(model, model_dir) of TINY trained in one go (4 episodes, 2 epochs)."""
    model_dir = tmp_path_factory.mktemp("train") / "run"
    return train(TINY, model_dir, omniglot_dir), model_dir


@pytest.fixture(scope="module")
def episode(vinyals_test, sample_episodes):
    (inputs, _), = sample_episodes(vinyals_test, 5, 2, 3, 1, seed=9)
    return inputs


def test_run_writes_its_files(tiny_run):
    model, model_dir = tiny_run
    assert training.read_config(model_dir) == TINY
    assert json.loads((model_dir / "config.json").read_text())["ways"] == 5
    assert (model_dir / "model.weights.h5").is_file()
    assert not list(model_dir.rglob("tmp.*"))  # no half-written weights or checkpoints
    assert any((model_dir / "logs").rglob("events.out.tfevents.*"))
    assert checkpoint_numbers(model_dir) == [2, 4]  # one per epoch, numbered by step
    rows = history_rows(model_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert np.isfinite(float(row["loss"])) and 0 <= float(row["accuracy"]) <= 1
    assert int(model.optimizer.iterations.numpy()) == 4


def test_model_from_dir_rebuilds_the_model(tiny_run, episode):
    model, model_dir = tiny_run
    rebuilt = training.model_from_dir(model_dir)
    assert isinstance(rebuilt, PrototypicalNetwork) and rebuilt.filters == 8
    np.testing.assert_array_equal(rebuilt(episode).numpy(), model(episode).numpy())


def test_model_from_dir_falls_back_to_the_latest_checkpoint(tiny_run, episode, tmp_path):
    model, model_dir = tiny_run
    copy = shutil.copytree(model_dir, tmp_path / "run")
    (copy / "model.weights.h5").unlink()
    np.testing.assert_array_equal(training.model_from_dir(copy)(episode).numpy(),
                                  model(episode).numpy())
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(FileNotFoundError, match="neither"):
        training.model_from_dir(copy)


def test_resume_continues_the_run(tiny_run, omniglot_dir, tmp_path):
    _, model_dir = tiny_run
    copy = shutil.copytree(model_dir, tmp_path / "run")
    longer = dataclasses.replace(TINY, episodes=8)
    model = train(longer, copy, omniglot_dir)
    assert int(model.optimizer.iterations.numpy()) == 8
    assert checkpoint_numbers(copy) == [4, 6, 8]  # max_to_keep=3, numbering continues at 4
    assert [int(r["epoch"]) for r in history_rows(copy)] == [0, 1, 2, 3]
    assert training.read_config(copy) == longer
    # Budget already reached: nothing more is trained, the weights stay.
    again = train(longer, copy, omniglot_dir)
    assert int(again.optimizer.iterations.numpy()) == 8
    assert len(history_rows(copy)) == 4
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resumed_run_equals_an_uninterrupted_one(tiny_run, omniglot_dir, tmp_path):
    """2 episodes, then resumed to 4: the same weights as 4 in one go (same initial weights)."""
    uninterrupted, _ = tiny_run
    train(dataclasses.replace(TINY, episodes=2), tmp_path / "run", omniglot_dir)
    resumed = train(TINY, tmp_path / "run", omniglot_dir)
    assert checkpoint_numbers(tmp_path / "run") == [2, 4]
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_different_config_in_the_same_dir_is_refused(tiny_run, omniglot_dir):
    _, model_dir = tiny_run
    before = (model_dir / "config.json").read_text()
    with pytest.raises(ValueError, match="different config"):
        training.train(dataclasses.replace(TINY, ways=4), model_dir, data_source=omniglot_dir,
                       verbose=0)
    assert (model_dir / "config.json").read_text() == before
    assert checkpoint_numbers(model_dir) == [2, 4]


def test_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="multiple of episodes_per_epoch"):
        training.train(dataclasses.replace(TINY, episodes=5), tmp_path / "a", verbose=0)
    with pytest.raises(ValueError, match=r"Unknown training config keys \['wayz'\]"):
        training.TrainConfig.from_dict({"wayz": 5})
    with pytest.raises(FileNotFoundError, match="not a training directory"):
        training.read_config(tmp_path)
    with pytest.raises(ValueError, match="Unknown dataset"):
        training.load_data(dataclasses.replace(TINY, dataset="mnist"), "val")


def test_config_json_round_trip():
    assert training.TrainConfig.from_dict(json.loads(TINY.to_json())) == TINY
    assert training.TrainConfig().image_size == 28
    assert dataclasses.replace(TINY, model_config={"image_size": 32}).image_size == 32


def test_failed_start_does_not_block_the_corrected_retry(omniglot_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'protonte'"):
        training.train(dataclasses.replace(TINY, model="protonte"), tmp_path / "run",
                       data_source=omniglot_dir, verbose=0)
    model = train(dataclasses.replace(TINY, episodes=2), tmp_path / "run", omniglot_dir)
    assert int(model.optimizer.iterations.numpy()) == 2


def test_run_trains_its_whole_budget_or_refuses(omniglot_dir, tmp_path):
    config = dataclasses.replace(TINY, episodes=6, episodes_per_epoch=3, episodes_per_step=2)
    try:
        model = train(config, tmp_path / "run", omniglot_dir)
    except ValueError:
        return  # refusing the inconsistent config up front is a correct outcome too
    assert int(model.optimizer.iterations.numpy()) * config.episodes_per_step == config.episodes
