"""Training under tf.distribute equals the one-device run: MirroredStrategy over two logical
CPUs for every model family and training task (CONFIGS: episodes, pairs, MAML-family meta
batches, sinusoid tasks, label sequences), and MultiWorkerMirroredStrategy as two
tools/train.py workers on loopback for the ProtoNet (the same `train` code path; two worker
processes per family would multiply the test's time).

Equal means: the same function (outputs on unseen data: logits with batch statistics on a
test episode, scores on a test sequence, predictions on sinusoid test tasks), the same
kernels (conv, dense, LSTM, memory, meta-learner) and batch-norm scales to 2% of how far
training moved them, and the same logged training loss. Conv biases feeding batch norm (and
the last batch-norm shift, which the distances cancel) have a true gradient of zero; Adam
turns the rounding noise of their gradients into steps of +-learning_rate, which the function
ignores, so they are left out of the comparison.

Batch norm: the metric models take statistics over the whole global batch (synchronised
across replicas), as one device does over the step's episodes. The MAML family's learner takes
them per task (its support set in the inner loop, its query set in the outer loop), so each
replica computes them for its own tasks without synchronising, which is again exactly what
one device computes. Reptile runs on plain SGD so that a wrong factor (the replicas' summed
theta - mean(phi)) would show; Adam's normalised steps would hide it.
"""

import csv
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_fewshot import training
from keras_fewshot.data import sequence_dataset, sinusoid_tasks
from keras_fewshot.models import build_model

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TWO_EPISODES_PER_STEP = training.TrainConfig(
    model="protonet", model_config={"filters": 8}, subset="val", ways=5, shots=1, queries=2,
    episodes=4, episodes_per_epoch=2, lr_decay_every=2, episodes_per_step=2, seed=3)
PAIRS = dataclasses.replace(TWO_EPISODES_PER_STEP, model="siamese", episodes_per_step=1,
                            pairs=8, episodes=2, episodes_per_epoch=2, lr_decay_every=2)
TINY_MAML = {"filters": 8, "ways": 5, "train_inner_steps": 1, "test_inner_steps": 1}


def _two_steps(model, **model_config):
    """A tiny run of `model`: one epoch of two steps of two episodes (sequences, tasks)."""
    return dataclasses.replace(TWO_EPISODES_PER_STEP, model=model, model_config=model_config,
                               episodes_per_epoch=4)


# Every model family and training task; each step splits over the two replicas.
CONFIGS = {
    "protonet": TWO_EPISODES_PER_STEP,
    "siamese": PAIRS,
    "matching_fce": _two_steps("matching", filters=8, fce=True, fce_steps=2),
    "relation": _two_steps("relation", filters=8, hidden_units=4),
    "maml": _two_steps("maml", **TINY_MAML),  # second order
    "metasgd_first_order": _two_steps("maml", **TINY_MAML, algorithm="metasgd",
                                      first_order=True),
    # plain SGD: Reptile hands the optimizer theta - mean(phi), which must not be summed
    # over the replicas (Adam would hide a factor 2)
    "reptile": dataclasses.replace(_two_steps("maml", **TINY_MAML, algorithm="reptile"),
                                   optimizer="sgd", learning_rate=0.5),
    # two updates: at the first the meta-learner LSTM's state is zero, so its recurrent
    # kernel would get no gradient and only Adam's noise
    "metalstm": _two_steps("metalstm", filters=8, train_inner_steps=2, test_inner_steps=2),
    # four updates: G's MLPs get their first gradient once the first has moved G's read-out
    "metanet": dataclasses.replace(_two_steps("metanet", filters=8, key_units=6,
                                              hidden_units=5, max_ways=5, meta_units=3),
                                   episodes=8, episodes_per_epoch=8),
    "maml_regressor": dataclasses.replace(_two_steps("maml_regressor", hidden_units=[8, 8]),
                                          dataset="sinusoid", shots=5, queries=5),
    # at 28x28 (not the models' 20) the runs share the episode models' data
    "mann": dataclasses.replace(_two_steps("mann", classes=3, image_size=28, units=8,
                                           memory_size=6, word_size=4, read_heads=2),
                                ways=3, instances=3),
    "sequence_lstm": dataclasses.replace(_two_steps("sequence_lstm", classes=3, image_size=28,
                                                    units=8), ways=3, instances=3),
}

# Two logical CPU devices must be configured before TensorFlow initialises: a fresh process.
MIRRORED_RUNS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_fewshot import training
out_dir, data_dir, configs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
for name, values in configs.items():
    training.train(training.TrainConfig.from_dict(values), f"{out_dir}/{name}",
                   data_source=data_dir, verbose=0, strategy=strategy)
"""


@pytest.fixture(scope="module")
def single_device_runs(omniglot_dir, tmp_path_factory):
    """{name: model_dir} of every CONFIGS run trained on one device, in this process."""
    root = tmp_path_factory.mktemp("single")
    for name, config in CONFIGS.items():
        training.train(config, root / name, data_source=omniglot_dir, verbose=0)
    return {name: root / name for name in CONFIGS}


@pytest.fixture(scope="module")
def unseen_inputs(vinyals_test, sample_episodes):
    """{training task: an input no run trained on}: a 5-way test episode, a 3-class test
    sequence, two sinusoid test tasks."""
    (episode, _), = sample_episodes(vinyals_test, 5, 2, 3, 1, seed=21)
    (sequence, _), = sequence_dataset(vinyals_test.images, vinyals_test.labels, 3, 3, seed=21,
                                      num_sequences=1).as_numpy_iterator()
    (tasks, _), = sinusoid_tasks(5, 10, seed=21, stream="test", num_tasks=2,
                                 batch_size=2).as_numpy_iterator()
    return {"episodes": episode, "pairs": episode, "sequences": sequence,
            "regression_tasks": tasks}


# How far every kernel must have moved to count as trained. F and the verification head of
# a MetaNet learn through the second-order path of the meta information (gradients of a
# loss inside the loss), which starts weak: in four updates they move 4e-5 to 1.5e-4.
TRAINED = {"metanet": 1e-5}


def assert_same_training(model_dir, reference_dir, unseen_inputs, trained=1e-4):
    model, reference = (training.model_from_dir(d) for d in (model_dir, reference_dir))
    assert int(training.Checkpoints(model_dir / "checkpoints").steps()[-1]) == \
        training.Checkpoints(reference_dir / "checkpoints").steps()[-1]
    config = training.read_config(reference_dir)
    keras.utils.set_random_seed(config.seed)  # as train() does before building
    initial = build_model(config.model, config.model_config)
    compared = 0
    for a, b, start in zip(model.weights, reference.weights, initial.weights):
        if a.path.endswith(("kernel", "gamma")):
            # Adam also steps weights whose gradient is ~0 by +-learning_rate on rounding
            # noise; compare each variable's difference with how far training moved it.
            change = np.linalg.norm(b.numpy() - start.numpy())
            assert change > trained, a.path
            assert np.linalg.norm(a.numpy() - b.numpy()) <= 0.02 * change, a.path
            compared += 1
    assert compared >= 2, [w.path for w in model.weights]
    inputs = unseen_inputs[model.training_task]
    outputs = model(inputs, training=True).numpy()
    expected = reference(inputs, training=True).numpy()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    # the logged training loss is the global batch's, as on one device
    np.testing.assert_allclose(logged_losses(model_dir), logged_losses(reference_dir),
                               rtol=1e-3)


def logged_losses(model_dir):
    with open(model_dir / "history.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_mirrored_over_two_cpus_equals_one_device(single_device_runs, unseen_inputs,
                                                  run_python, omniglot_dir, tmp_path):
    configs = {name: dataclasses.asdict(config) for name, config in CONFIGS.items()}
    run_python("-c", MIRRORED_RUNS, tmp_path, omniglot_dir, json.dumps(configs), timeout=1800)
    for name in CONFIGS:
        assert_same_training(tmp_path / name, single_device_runs[name], unseen_inputs,
                             TRAINED.get(name, 1e-4))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_on_loopback_equal_one_device(single_device_runs, unseen_inputs,
                                                  omniglot_dir, tmp_path):
    config = TWO_EPISODES_PER_STEP
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    command = [sys.executable, str(REPO_ROOT / "tools" / "train.py"),
               f"--model_dir={tmp_path / 'run'}", f"--data_dir={omniglot_dir}",
               "--strategy=multi_worker", "--verbose=2", f"--model={config.model}",
               f"--model_config={json.dumps(config.model_config)}", f"--subset={config.subset}",
               f"--ways={config.ways}", f"--shots={config.shots}", f"--queries={config.queries}",
               f"--episodes={config.episodes}", f"--episodes_per_epoch={config.episodes_per_epoch}",
               f"--episodes_per_step={config.episodes_per_step}",
               f"--lr_decay_every={config.lr_decay_every}", f"--seed={config.seed}"]
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"  # where a worker's throw-away files go
        scratch.mkdir()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append((subprocess.Popen(command, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO_ROOT), log))
    try:
        for proc, log in workers:
            proc.wait(timeout=600)
            log.close()
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
    for index, (proc, _) in enumerate(workers):
        assert proc.returncode == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]
    assert_same_training(tmp_path / "run", single_device_runs["protonet"], unseen_inputs)
    assert training.read_config(tmp_path / "run") == config
    assert not any((tmp_path / "tmp1").iterdir())  # worker 1 wrote nothing that stayed


def test_a_step_that_does_not_split_over_the_replicas_is_refused():
    model = build_model("protonet", {"filters": 8})
    with pytest.raises(ValueError, match="episodes_per_step=3 does not split evenly over 2 "
                       "replicas"):
        training._check_divisible(dataclasses.replace(TWO_EPISODES_PER_STEP,
                                                      episodes_per_step=3), model, 2)
    training._check_divisible(TWO_EPISODES_PER_STEP, model, 2)
    pairs = build_model("siamese", {"filters": 8})
    with pytest.raises(ValueError, match="pairs=9 does not split evenly over 2 replicas"):
        training._check_divisible(dataclasses.replace(PAIRS, pairs=9), pairs, 2)
