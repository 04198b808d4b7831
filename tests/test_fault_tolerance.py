"""Training survives SIGKILL (resume from the last checkpoint, same episode stream) and stops on
a non-finite loss keeping the last good checkpoint."""

import csv
import dataclasses
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

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
            deadline = time.monotonic() + 240
            while not checkpoint_steps(tmp_path / "run") and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 240 s"
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
        omniglot_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "nan_from_step3", NanFromStep3)
    config = dataclasses.replace(RUN, model="nan_from_step3", episodes=6,
                                 episodes_per_epoch=2, lr_decay_every=2)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 3 \(episodes 3-3\)"
                       r".*last good checkpoint .*ckpt-2\.weights\.h5 is kept"):
        training.train(config, tmp_path / "run", data_source=omniglot_dir, verbose=0)
    assert checkpoint_steps(tmp_path / "run") == [2]
    assert logged_epochs(tmp_path / "run") == 1
    assert not (tmp_path / "run" / "model.weights.h5").exists()
    good = training.model_from_dir(tmp_path / "run").get_weights()
    assert all(np.isfinite(w).all() for w in good)
