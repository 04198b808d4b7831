"""keras_fewshot.zoo: the registry, hash-checked loading, and the released model's accuracy."""

import dataclasses
import hashlib
import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import keras_fewshot
from keras_fewshot import evaluation, training, zoo
from keras_fewshot.models import PrototypicalNetwork

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME = "protonet_omniglot"
RELEASED_WEIGHTS = REPO_ROOT / "zoo" / NAME / training.WEIGHTS_FILE


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, make_episode, rng):
    """A zoo folder for NAME holding a tiny model, registered with its true sha256.

    Returns (weights path, original model, an episode).
    """
    keras.utils.set_random_seed(0)
    model = PrototypicalNetwork(filters=8)
    folder = tmp_path / "zoo" / NAME
    folder.mkdir(parents=True)
    config = training.TrainConfig(model_config={"filters": 8})
    (folder / training.CONFIG_FILE).write_text(config.to_json())
    weights = folder / training.WEIGHTS_FILE
    model.save_weights(weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path / "zoo"))
    monkeypatch.setitem(zoo.REGISTRY, NAME, dataclasses.replace(zoo.REGISTRY[NAME],
                                                                sha256=digest))
    episode, _ = make_episode(4, 2, 3, rng)
    return weights, model, episode


def corrupt(path):
    """Flips one byte in the middle of `path`; returns the corrupted bytes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def test_list_models():
    models = keras_fewshot.list_models()
    assert NAME in models
    assert isinstance(models[NAME], str) and len(models[NAME]) > 10
    assert set(models) == set(zoo.REGISTRY)


def test_registry_entries_are_complete():
    for name, entry in zoo.REGISTRY.items():
        assert entry.name == name
        assert entry.protocol in evaluation.PROTOCOLS
        assert "tools/train.py" in entry.train_command
        assert f"--model={name}" in entry.evaluate_command


def test_unknown_name_lists_the_available_models():
    with pytest.raises(ValueError, match=rf"Unknown zoo model 'nope'.*available:.*{NAME}"):
        keras_fewshot.load("nope")


def test_zoo_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    assert zoo.zoo_dir() == REPO_ROOT / "zoo"
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path))
    assert zoo.zoo_dir() == tmp_path
    assert zoo.get_entry(NAME).weights_path == tmp_path / NAME / training.WEIGHTS_FILE


def test_load_verified_weights(tiny_zoo):
    _, model, episode = tiny_zoo
    loaded = keras_fewshot.load(NAME)
    assert isinstance(loaded, PrototypicalNetwork) and loaded.filters == 8
    np.testing.assert_array_equal(loaded(episode).numpy(), model(episode).numpy())


def test_corrupted_weights_are_refused_and_left_alone(tiny_zoo):
    weights, _, _ = tiny_zoo
    corrupted = corrupt(weights)
    with pytest.raises(ValueError, match="sha256"):
        keras_fewshot.load(NAME)
    assert weights.read_bytes() == corrupted


def test_missing_weights(tiny_zoo):
    weights, _, _ = tiny_zoo
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="not found"):
        keras_fewshot.load(NAME)


@pytest.fixture
def released_weights():
    """Skips (before any data is loaded) while the released weights do not exist."""
    if not RELEASED_WEIGHTS.is_file():
        pytest.skip(f"{RELEASED_WEIGHTS} does not exist yet (the zoo model is being trained)")
    return RELEASED_WEIGHTS


def test_corrupted_copy_of_the_released_model_is_refused(released_weights, tmp_path,
                                                         monkeypatch):
    shutil.copytree(released_weights.parent, tmp_path / NAME)
    corrupted = corrupt(tmp_path / NAME / training.WEIGHTS_FILE)
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        keras_fewshot.load(NAME)
    assert (tmp_path / NAME / training.WEIGHTS_FILE).read_bytes() == corrupted


@pytest.mark.parametrize("name", sorted(zoo.REGISTRY))
def test_released_model_matches_its_card(name, omniglot_dir, monkeypatch):
    """Every zoo model on 10 fresh episodes of its protocol's first setting (seed 7, not the
    card's seed 0) lands within 6 points of the accuracy its card reports over 1000
    (regression: 200 fresh tasks within 0.1 + 25% of the reported MSE; sequence models: 20
    fresh sequences, accuracy averaged over the instances)."""
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    entry = zoo.get_entry(name)
    if not entry.weights_path.is_file():
        pytest.skip(f"{entry.weights_path} does not exist yet (the zoo model is being trained)")
    reported = json.loads((entry.directory / f"eval_{entry.protocol}.json").read_text())
    model = keras_fewshot.load(name)
    if entry.protocol == "sinusoid":  # 200 fresh tasks (seed 7): MSE after the most steps
        row = evaluation.evaluate(model, "sinusoid", episodes=200, seed=7)[-1]
        assert row["inner_steps"] == reported[-1]["inner_steps"]
        assert abs(row["mse"] - reported[-1]["mse"]) < 0.1 + 0.25 * reported[-1]["mse"], (
            row, reported[-1])
        return
    if "instance" in reported[0]:  # a sequence model: 20 fresh sequences, mean over instances
        rows = evaluation.evaluate(model, entry.protocol, episodes=20, seed=7,
                                   data_source=omniglot_dir, image_size=model.image_size,
                                   verbose=0)
        mean = np.mean([r["accuracy"] for r in rows])
        assert abs(mean - np.mean([r["accuracy"] for r in reported])) < 0.06, (rows, reported)
        return
    reported = reported[0]
    setting = (reported["ways"], reported["shots"])
    [row] = evaluation.evaluate(model, entry.protocol, episodes=10, seed=7,
                                data_source=omniglot_dir, image_size=model.image_size,
                                settings=[setting], verbose=0)
    assert abs(row["accuracy"] - reported["accuracy"]) < 0.06, (row, reported)
