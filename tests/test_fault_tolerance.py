"""Training survives SIGKILL (resume from the last checkpoint, same episode stream), stops on
a non-finite loss keeping the last good checkpoint, and never resumes from a damaged
checkpoint (each carries its sha256; the newest intact one is taken, and the skip is said)."""

import csv
import dataclasses
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot import models, training
from keras_fewshot.models import PrototypicalNetwork

TRAIN_TOOL = pathlib.Path(__file__).resolve().parent.parent / "tools" / "train.py"
# 120 episodes, a checkpoint every 6: the kill lands among ~20 checkpoints.
RUN = training.TrainConfig(model="protonet", model_config={"filters": 8}, subset="val", ways=5,
                           shots=1, queries=1, episodes=120, episodes_per_epoch=6,
                           lr_decay_every=60, seed=3)


def tool_command(model_dir, omniglot_dir, config):
    return [sys.executable, str(TRAIN_TOOL), f"--model_dir={model_dir}",
            f"--data_dir={omniglot_dir}", f"--model={config.model}",
            '--model_config={"filters": 8}', f"--subset={config.subset}",
            f"--ways={config.ways}", f"--shots={config.shots}", f"--queries={config.queries}",
            f"--episodes={config.episodes}", f"--episodes_per_epoch={config.episodes_per_epoch}",
            f"--lr_decay_every={config.lr_decay_every}", f"--seed={config.seed}", "--verbose=2"]


def checkpoint_steps(model_dir):
    return training.Checkpoints(pathlib.Path(model_dir) / "checkpoints").steps()


def logged_epochs(model_dir):
    path = pathlib.Path(model_dir) / "history.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        return len(list(csv.DictReader(f)))


def final_weights(model_dir):
    return training.model_from_dir(model_dir).get_weights()


def test_sigkilled_run_resumes_from_its_last_checkpoint_with_the_same_stream(omniglot_dir,
                                                                             tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = tool_command(tmp_path / "run", omniglot_dir, RUN)
    delay = random.Random().uniform(0.0, 2.0)  # a random moment after the first checkpoint
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Only a hung run hits this: on a loaded machine (load 12 on 2 cores) the tool
            # took over 5 minutes to import and load its data before the first epoch.
            deadline = time.monotonic() + 1200
            while not checkpoint_steps(tmp_path / "run") and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 1200 s"
                time.sleep(0.05)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended before the kill {delay:.2f} s after its first checkpoint:\n"
        f"{(tmp_path / 'killed.log').read_text()[-2000:]}")
    steps = checkpoint_steps(tmp_path / "run")
    assert steps and steps[-1] < RUN.episodes, steps
    last = steps[-1]
    # Checkpoints are written before the epoch's history row: every logged epoch is kept, so
    # the kill loses only the unfinished epoch (less than one checkpoint interval).
    assert last // RUN.episodes_per_epoch >= logged_epochs(tmp_path / "run")
    assert not (tmp_path / "run" / "model.weights.h5").exists()

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    output = resumed.stdout + resumed.stderr
    assert f"episode {last} of {RUN.episodes} (resumed)" in output, output[-2000:]
    assert checkpoint_steps(tmp_path / "run")[-1] == RUN.episodes
    assert not list((tmp_path / "run").rglob("tmp.*"))  # a kill mid-save leaves nothing behind

    # The same command never killed: the same weights, so the same episodes in the same order.
    training.train(RUN, tmp_path / "uninterrupted", data_source=omniglot_dir, verbose=0)
    for a, b in zip(final_weights(tmp_path / "run"), final_weights(tmp_path / "uninterrupted")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                   err_msg=f"killed {delay:.2f} s after the first checkpoint")


class NanFromStep3(PrototypicalNetwork):
    """A Prototypical Network whose training logits turn nan at the optimizer's third step."""

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        logits = super().classify(support_images, support_labels, query_images, num_classes,
                                  training=training)
        if training:
            poison = tf.where(self.optimizer.iterations >= 2, float("nan"), 0.0)
            logits += poison
        return logits


def test_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(
        omniglot_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(models.MODELS, "nan_from_step3", NanFromStep3)
    config = dataclasses.replace(RUN, model="nan_from_step3", episodes=6,
                                 episodes_per_epoch=2, lr_decay_every=2)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 3 \(episodes 3-3\)"
                       r".*last good checkpoint .*ckpt-2\.weights\.h5 is kept"):
        training.train(config, tmp_path / "run", data_source=omniglot_dir, verbose=0)
    assert checkpoint_steps(tmp_path / "run") == [2]
    assert logged_epochs(tmp_path / "run") == 1
    assert not (tmp_path / "run" / "model.weights.h5").exists()
    with caplog.at_level(logging.INFO, logger="keras_fewshot.training.run_dir"):
        good = training.model_from_dir(tmp_path / "run").get_weights()
    assert all(np.isfinite(w).all() for w in good)
    assert caplog.messages[-1].endswith("ckpt-2.weights.h5")  # the run's newest, named


# --- Damaged checkpoints ------------------------------------------------------------------------

TINY = dataclasses.replace(RUN, episodes=4, episodes_per_epoch=2, lr_decay_every=2)
TRAINING_LOG = "keras_fewshot.training.checkpoints"


@pytest.fixture(scope="module")
def tiny_run(omniglot_dir, tmp_path_factory):
    """A finished run of TINY: checkpoints at steps 2 and 4, each with its sha256."""
    model_dir = tmp_path_factory.mktemp("tiny") / "run"
    training.train(TINY, model_dir, data_source=omniglot_dir, verbose=0)
    return model_dir


def unfinished_copy(run, where):
    """A copy of `run` stopped after its last checkpoint (no final weights yet)."""
    copy = shutil.copytree(run, where)
    (copy / training.WEIGHTS_FILE).unlink()
    return copy


def flip_data_bytes(path):
    """Flips bits in the stored values of one float32 weight of the HDF5 file `path`, the way
    a bad disk or a bad copy would: the file still opens and loads, with other numbers.
    Returns the weight's name and its values before and after."""
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                     and obj.dtype == np.float32 and obj.size >= 8 else None)
        name = names[0]
        offset = f[name].id.get_offset()  # contiguous storage: the values' place in the file
        before = f[name][()]
    assert offset is not None, f"{name} is not stored contiguously"
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(16)  # the first four values: flip the high bits of their exponents
        f.seek(offset)
        f.write(bytes(b ^ (0x55 if i % 4 == 3 else 0) for i, b in enumerate(data)))
    with h5py.File(path, "r") as f:
        after = f[name][()]
    return name, before, after


def test_flipped_bytes_are_a_silent_change_without_the_hash(tiny_run, tmp_path):
    """The damage the hash is for: h5py reads the flipped file without complaint."""
    path = shutil.copy(tiny_run / "checkpoints" / "ckpt-4.weights.h5", tmp_path)
    name, before, after = flip_data_bytes(path)
    assert not np.array_equal(before, after)
    assert np.array_equal(before.ravel()[4:], after.ravel()[4:])  # only those four values
    assert training.Checkpoints.verify(tiny_run / "checkpoints" / "ckpt-4.weights.h5") is True
    assert training.Checkpoints.verify(path) is False  # copied without its record: unhashed


def test_damaged_latest_checkpoint_is_refused_and_the_newest_good_one_resumes(
        tiny_run, omniglot_dir, tmp_path, caplog):
    damaged = unfinished_copy(tiny_run, tmp_path / "damaged")
    flip_data_bytes(damaged / "checkpoints" / "ckpt-4.weights.h5")
    with pytest.raises(training.DamagedCheckpointError, match=r"ckpt-4\.weights\.h5 is damaged: "
                       r"its sha256 is [0-9a-f]{64}, but ckpt-4\.weights\.h5\.sha256 records"):
        training.Checkpoints.verify(damaged / "checkpoints" / "ckpt-4.weights.h5")

    with caplog.at_level(logging.WARNING, logger=TRAINING_LOG):
        training.train(TINY, damaged, data_source=omniglot_dir, verbose=0)
    warnings = [r.getMessage() for r in caplog.records if r.name == TRAINING_LOG]
    assert any("ckpt-4.weights.h5 is damaged" in w and "moved to damaged-ckpt-4.weights.h5" in w
               for w in warnings), warnings
    assert any(re.search(r"Resuming from \S*ckpt-2\.weights\.h5, the newest intact checkpoint, "
                         r"instead of the damaged ckpt-4\.weights\.h5", w) for w in warnings), \
        warnings
    kept = damaged / "checkpoints" / "damaged-ckpt-4.weights.h5"
    assert kept.is_file() and kept.with_name(kept.name + ".sha256").is_file()  # the evidence
    assert checkpoint_steps(damaged) == [2, 4]  # step 4 trained again and saved intact
    assert training.Checkpoints.verify(damaged / "checkpoints" / "ckpt-4.weights.h5") is True

    # What a clean resume from step 2 gives: the damaged checkpoint simply absent.
    clean = unfinished_copy(tiny_run, tmp_path / "clean")
    for path in (clean / "checkpoints").glob("ckpt-4.*"):
        path.unlink()
    training.train(TINY, clean, data_source=omniglot_dir, verbose=0)
    resumed, reference = final_weights(damaged), final_weights(clean)
    assert all(np.isfinite(w).all() for w in resumed)
    for a, b in zip(resumed, reference):  # the same checkpoint, episodes and ops: same bits
        np.testing.assert_array_equal(a, b)


def test_damaged_checkpoint_is_skipped_when_rebuilding_a_model_without_moving_it(
        tiny_run, tmp_path, caplog):
    copy = unfinished_copy(tiny_run, tmp_path / "run")
    flip_data_bytes(copy / "checkpoints" / "ckpt-4.weights.h5")
    with caplog.at_level(logging.WARNING, logger=TRAINING_LOG):
        weights = training.model_from_dir(copy).get_weights()
    assert "ckpt-4.weights.h5 is damaged" in caplog.text
    expected = build_from_checkpoint(copy / "checkpoints" / "ckpt-2.weights.h5")
    for a, b in zip(weights, expected):
        np.testing.assert_array_equal(a, b)
    assert checkpoint_steps(copy) == [2, 4]  # reading a directory changes nothing in it


def build_from_checkpoint(path):
    model = models.build_model(TINY.model, TINY.model_config)
    model.load_weights(path)
    return model.get_weights()


def test_checkpoints_written_before_the_hashes_still_resume_with_a_notice(
        tiny_run, omniglot_dir, tmp_path, caplog):
    old = unfinished_copy(tiny_run, tmp_path / "old")
    for record in (old / "checkpoints").glob("*.sha256"):
        record.unlink()
    longer = dataclasses.replace(TINY, episodes=6)
    with caplog.at_level(logging.WARNING, logger=TRAINING_LOG):
        model = training.train(longer, old, data_source=omniglot_dir, verbose=0)
    assert re.search(r"ckpt-4\.weights\.h5 carries no sha256 .*without an integrity check",
                     caplog.text), caplog.text
    assert int(model.optimizer.iterations.numpy()) == 6  # resumed at 4, not restarted
    assert checkpoint_steps(old) == [2, 4, 6]
    assert training.Checkpoints.verify(old / "checkpoints" / "ckpt-6.weights.h5") is True
    assert training.Checkpoints.verify(old / "checkpoints" / "ckpt-4.weights.h5") is False


def test_a_run_whose_every_checkpoint_is_damaged_is_refused(tiny_run, omniglot_dir, tmp_path):
    copy = unfinished_copy(tiny_run, tmp_path / "run")
    flip_data_bytes(copy / "checkpoints" / "ckpt-4.weights.h5")
    (copy / "checkpoints" / "ckpt-2.weights.h5.sha256").write_text("not a hash\n")
    before = sorted(p.name for p in (copy / "checkpoints").iterdir())
    with pytest.raises(training.DamagedCheckpointError,
                       match=r"Every checkpoint in .* is damaged \(ckpt-4\.weights\.h5, "
                             r"ckpt-2\.weights\.h5\); nothing to resume from: .*ckpt-4\."
                             r"weights\.h5 is damaged: its sha256 is .*ckpt-2\.weights\.h5"
                             r"\.sha256 is not a sha256 record of ckpt-2\.weights\.h5"):
        training.train(TINY, copy, data_source=omniglot_dir, verbose=0)
    assert not (copy / training.WEIGHTS_FILE).exists()
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == before  # none moved


def test_truncated_checkpoint_without_a_hash_is_refused(tiny_run, tmp_path):
    path = shutil.copy(tiny_run / "checkpoints" / "ckpt-4.weights.h5", tmp_path)
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(training.DamagedCheckpointError, match="not a readable weights file"):
        training.Checkpoints.verify(path)


def test_a_kill_between_the_hash_and_its_checkpoint_leaves_no_trace(tiny_run, tmp_path):
    """The record is renamed into place before its checkpoint: a kill in between leaves a
    record without a checkpoint, which resuming ignores and the next save removes."""
    copy = unfinished_copy(tiny_run, tmp_path / "run")
    checkpoints = training.Checkpoints(copy / "checkpoints")
    orphan = copy / "checkpoints" / "ckpt-6.weights.h5.sha256"
    orphan.write_text("0" * 64 + "  ckpt-6.weights.h5\n")
    assert checkpoints.restore_point() == copy / "checkpoints" / "ckpt-4.weights.h5"
    model = training.model_from_dir(copy)
    checkpoints.save(model, 8)
    assert not orphan.exists() and checkpoints.steps() == [2, 4, 8]
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == [
        f"ckpt-{s}.weights.h5{suffix}" for s in (2, 4, 8) for suffix in ("", ".sha256")]
