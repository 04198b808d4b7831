"""Training under tf.distribute equals the one-device run: MirroredStrategy over two logical
CPUs for every model family and training task (CONFIGS: episodes, pairs, MAML-family meta
batches, sinusoid tasks, label sequences), and MultiWorkerMirroredStrategy as two
tools/train.py workers on loopback for the ProtoNet (the same `train` code path; two worker
processes per family would multiply the test's time).

Equal means equal to float32 round-off, and how far round-off moves a run is measured, not
guessed. A mirrored step computes the same sums (loss, gradients, batch statistics) over the
step's episodes in another order, and a different order changes each sum by rounding only.
Next to the one-device run trains a probe: the same run with each step's episodes (pairs,
tasks, sequences) in reverse order, mathematically the same steps, every sum over them taken
in yet another order. How far the probe lands from the one-device run is how far this
computation carries a reordering's rounding (through Adam's normalised steps, second-order
updates, batch statistics) on this machine's floating-point path, which is what differs
between machines: oneDNN picks its kernels, and with them its summation orders, by CPU. The
mirrored run must stay within SPREAD times the probe's distance from the one-device run in
the function (outputs on unseen data: logits with batch statistics on a test episode, scores
on a test sequence, predictions on sinusoid test tasks), in every kernel (conv, dense, LSTM,
memory, meta-learner) and batch-norm scale, and in the logged training loss. A wrong
distributed computation (a gradient summed instead of averaged, statistics of one replica's
share) moves a run by a part of what training moved it, orders of magnitude more. Conv
biases feeding batch norm (and the last batch-norm shift, which the distances cancel) have a
true gradient of zero; Adam turns the rounding noise of their gradients into steps of
+-learning_rate, which the function ignores, so they are left out of the weight comparison.

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
import tensorflow as tf

from keras_fewshot import training
from keras_fewshot.data import sequence_dataset, sinusoid_tasks
from keras_fewshot.models import build_model
from keras_fewshot.training import distribution, loop

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
def mirrored_runs(omniglot_dir, tmp_path_factory):
    """wait: every CONFIGS run is trained under MirroredStrategy over two logical CPUs in a
    fresh process, started when this fixture is set up; `wait()` waits for it (failing with
    its output if it fails) and returns the folder holding each run's model_dir, <name>. Requested
    before the one-device fixtures, the process trains beside them: both are mostly tracing,
    one core each."""
    root = tmp_path_factory.mktemp("mirrored")
    configs = {name: dataclasses.asdict(config) for name, config in CONFIGS.items()}
    log = open(root / "process.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", MIRRORED_RUNS, str(root), str(omniglot_dir), json.dumps(configs)],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})

    def wait():
        proc.wait(timeout=1800)
        log.flush()
        if proc.returncode != 0:
            pytest.fail(f"the mirrored runs exited {proc.returncode}\n"
                        f"{(root / 'process.log').read_text()[-4000:]}")
        return root

    yield wait
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def single_device_runs(omniglot_dir, tmp_path_factory):
    """{name: model_dir} of every CONFIGS run trained on one device, in this process."""
    root = tmp_path_factory.mktemp("single")
    for name, config in CONFIGS.items():
        training.train(config, root / name, data_source=omniglot_dir, verbose=0)
    return {name: root / name for name in CONFIGS}


@pytest.fixture(scope="module")
def probe_runs(omniglot_dir, tmp_path_factory):
    """{name: model_dir} of every CONFIGS run trained on one device with each step's episodes
    (pairs, tasks, sequences) in reverse order: its round-off spread."""
    root = tmp_path_factory.mktemp("probe")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "training_dataset",
                      _each_step_reversed(loop.training_dataset))
        for name, config in CONFIGS.items():
            training.train(config, root / name, data_source=omniglot_dir, verbose=0)
    return {name: root / name for name in CONFIGS}


@pytest.fixture(scope="module")
def unseen_inputs(vinyals_test, sample_episodes):
    """{task kind's name: an input no run trained on}: a 5-way test episode, a 3-class test
    sequence, two sinusoid test tasks."""
    (episode, _), = sample_episodes(vinyals_test, 5, 2, 3, 1, seed=21)
    (sequence, _), = sequence_dataset(vinyals_test.images, vinyals_test.labels, 3, 3, seed=21,
                                      num_sequences=1).as_numpy_iterator()
    (tasks, _), = sinusoid_tasks(5, 10, seed=21, stream="test", num_tasks=2,
                                 batch_size=2).as_numpy_iterator()
    return {"episodes": episode, "pairs": episode, "sequences": sequence,
            "regression_tasks": tasks}


# The mirrored run may differ from the one-device run by SPREAD times the probe's distance:
# both are reorderings of the same sums, and the largest of many rounding differences varies
# from one order to another by a small factor (on this project's CPU the mirrored run's
# distance was 0.05 to 0.96 times the probe's for the ProtoNet and the Siamese network, in
# outputs, kernels and loss). A kernel counts as trained when training moved it TRAINED
# times its round-off spread, so that the comparison resolves it, whatever its gradient's
# scale (MetaNet's F and verification head, trained through the second-order path of its
# meta information, move 4e-5 to 1.5e-4 in four updates; a conv kernel 1e-2).
SPREAD = 10.0
TRAINED = 10.0
# Where the probe lands on the very same floats (a weight or output blind to the change), a
# floor of a few roundings of the magnitude compared.
ROUNDINGS = 8 * float(np.finfo(np.float32).eps)


def _each_step_reversed(make_dataset):
    """training_dataset, with every tensor of each step's element in reverse order along its
    first axis (the step's episodes, pairs, tasks or sequences)."""
    def reversed_steps(*args, **kwargs):
        return make_dataset(*args, **kwargs).map(
            lambda *element: tf.nest.map_structure(lambda t: tf.reverse(t, [0]), element))
    return reversed_steps


def _max_difference(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def assert_same_training(model_dir, reference_dir, probe_dir, unseen_inputs):
    """`model_dir`'s run equals `reference_dir`'s to within SPREAD times the round-off spread
    `probe_dir` shows (the reference run with each step's episodes reversed)."""
    model, reference, probe = (training.model_from_dir(d)
                               for d in (model_dir, reference_dir, probe_dir))
    assert int(training.Checkpoints(model_dir / "checkpoints").steps()[-1]) == \
        training.Checkpoints(reference_dir / "checkpoints").steps()[-1]
    config = training.read_config(reference_dir)
    keras.utils.set_random_seed(config.seed)  # as train() does before building
    initial = build_model(config.model, config.model_config)
    compared = 0
    for weights in zip(model.weights, reference.weights, probe.weights, initial.weights):
        if weights[0].path.endswith(("kernel", "gamma")):
            path = weights[0].path
            a, b, p, start = (np.asarray(w.numpy(), np.float64) for w in weights)
            spread = np.linalg.norm(p - b) + ROUNDINGS * np.linalg.norm(b)
            change = np.linalg.norm(b - start)
            assert change > TRAINED * spread, (path, change, spread)
            assert np.linalg.norm(a - b) <= SPREAD * spread, (path, spread)
            compared += 1
    assert compared >= 2, [w.path for w in model.weights]
    inputs = unseen_inputs[model.task_kind.name]
    outputs = model(inputs, training=True).numpy()
    expected = reference(inputs, training=True).numpy()
    spread = (_max_difference(probe(inputs, training=True).numpy(), expected)
              + ROUNDINGS * np.abs(expected).max())
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=SPREAD * spread)
    # the logged training loss is the global batch's, as on one device
    losses, expected = logged_losses(model_dir), logged_losses(reference_dir)
    spread = (_max_difference(logged_losses(probe_dir), expected)
              + ROUNDINGS * np.abs(expected).max())
    np.testing.assert_allclose(losses, expected, rtol=0, atol=SPREAD * spread)


def logged_losses(model_dir):
    with open(model_dir / "history.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_mirrored_over_two_cpus_equals_one_device(mirrored_runs, single_device_runs, probe_runs,
                                                  unseen_inputs):
    root = mirrored_runs()
    failures = {}
    for name in CONFIGS:  # every family's verdict, not only the first
        try:
            assert_same_training(root / name, single_device_runs[name], probe_runs[name],
                                 unseen_inputs)
        except AssertionError as error:
            failures[name] = error
    assert not failures, "\n\n".join(f"{name}: {error}" for name, error in failures.items())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_on_loopback_equal_one_device(single_device_runs, probe_runs, unseen_inputs,
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
    assert_same_training(tmp_path / "run", single_device_runs["protonet"],
                         probe_runs["protonet"], unseen_inputs)
    assert training.read_config(tmp_path / "run") == config
    assert not any((tmp_path / "tmp1").iterdir())  # worker 1 wrote nothing that stayed


def test_a_step_that_does_not_split_over_the_replicas_is_refused():
    model = build_model("protonet", {"filters": 8})
    with pytest.raises(ValueError, match="episodes_per_step=3 does not split evenly over 2 "
                       "replicas"):
        distribution.check_divisible(dataclasses.replace(TWO_EPISODES_PER_STEP,
                                                      episodes_per_step=3), model, 2)
    distribution.check_divisible(TWO_EPISODES_PER_STEP, model, 2)
    pairs = build_model("siamese", {"filters": 8})
    with pytest.raises(ValueError, match="pairs=9 does not split evenly over 2 replicas"):
        distribution.check_divisible(dataclasses.replace(PAIRS, pairs=9), pairs, 2)
