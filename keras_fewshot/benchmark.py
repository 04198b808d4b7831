"""Speed and memory measurements: ms per training step, ms per inference episode (or label
sequence) and serving request, the training input pipeline's steps/s.

Each function returns a dict ready to print as one JSON line. Times are medians over
`repeats` runs after warm-up; they depend on the machine and on whatever else runs on it.
"""

import dataclasses
import os
import resource
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot import export, training
from keras_fewshot.data import episode_dataset, sequence_dataset


def _machine_cpu_ticks():
    """The machine's CPU time so far by kind (Linux /proc/stat: user, nice, system, idle,
    iowait, irq, softirq, steal, ...), or None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _steal_percent(before, after):
    """Of the machine's CPU time between two readings, the share the hypervisor gave to
    other guests (steal): a virtual machine's times are inflated by about as much."""
    if before is None or after is None or len(before) < 8:
        return None
    spent = [b - a for a, b in zip(before, after)]
    return round(100.0 * spent[7] / max(sum(spent), 1), 1)


def _timed(fn, repeats, warmup=2):
    """Wall-clock ms (median, min), the process's CPU ms (all threads; median), which
    depends less on what else runs on the machine, and the CPU steal while timing."""
    for _ in range(warmup):
        fn()
    ticks = _machine_cpu_ticks()
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
        cpu_times.append(1000.0 * (time.process_time() - cpu_start))
    return {"ms_median": round(statistics.median(times), 2),
            "ms_min": round(min(times), 2), "cpu_ms_median": round(statistics.median(cpu_times), 2),
            "steal_percent": _steal_percent(ticks, _machine_cpu_ticks()), "repeats": repeats}


def _episode(data, ways, shots, queries):
    return next(iter(episode_dataset(data.images, data.labels, ways, shots, queries, seed=0,
                                     num_episodes=1)))


def _step_input(config, model):
    """What one optimizer step of `config` trains on, e.g. "32 episodes of 5w1s5q"."""
    if model.training_task == "pairs":
        return f"{config.pairs} pairs"
    if model.training_task == "sequences":
        return f"{config.episodes_per_step} sequences of {config.ways}x{config.instances}"
    shape = f"{config.ways}w{config.shots}s{config.queries}q"
    return f"{config.episodes_per_step} episodes of {shape}" if config.episodes_per_step > 1 \
        else shape


def train_step_ms(model, config, data, repeats=10, jit_compile=False):
    """One optimizer step of `model.fit`'s train function on the element `config` trains on
    (its `episodes_per_step` episodes or sequences, or a batch of pairs), with the model's
    own loss; XLA with `jit_compile`."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.training_loss(),
                  jit_compile=jit_compile)
    inputs, labels = next(iter(training.training_dataset(config, model, data)))
    return {"measure": "train_ms_per_step", "episode": _step_input(config, model),
            **_timed(lambda: model.train_on_batch(inputs, labels), repeats)}


def pipeline_steps_per_s(model, config, data, steps=100, warmup=10):
    """The training input pipeline alone, as `fit` reads it (`training.training_dataset`):
    optimizer steps' worth of input delivered per second, over `steps` steps after
    `warmup`. Divided by the training step's rate, it says how far the pipeline outpaces
    training."""
    per_step = 1 if model.training_task == "pairs" else config.episodes_per_step
    stream = training.training_dataset(
        dataclasses.replace(config, episodes=(steps + warmup) * per_step), model, data)
    return {"measure": "pipeline_steps_per_s", "episode": _step_input(config, model),
            "steps_per_s": round(_elements_per_s(stream, steps, warmup), 1), "steps": steps}


def meta_step_ms(config, data, repeats=5):
    """One meta-step (an optimizer step over `config.episodes_per_step` tasks) of the model
    `config` describes: seconds of the first step (tracing included), then ms per step, and
    the process's peak memory afterwards (measure one configuration per process)."""
    keras.utils.set_random_seed(config.seed)
    model = training.build_model(config.model, config.model_config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.training_loss())
    inputs, labels = next(iter(training.training_dataset(config, model, data)))
    start = time.perf_counter()
    model.train_on_batch(inputs, labels)
    first = time.perf_counter() - start
    return {"measure": "meta_step_ms", "model": config.model, **config.model_config,
            "tasks": config.episodes_per_step,
            "episode": (f"{config.shots} support + {config.queries} query points"
                        if config.dataset == "sinusoid"
                        else f"{config.ways}w{config.shots}s{config.queries}q"),
            "first_step_s": round(first, 1),
            **_timed(lambda: model.train_on_batch(inputs, labels), repeats, warmup=1),
            "peak_memory_mb": peak_memory_mb()["mb"]}


def inference_ms(model, data, ways, shots, queries, repeats=20):
    """A forward pass (training=False) on one episode, inside a tf.function."""
    inputs, _ = _episode(data, ways, shots, queries)
    predict = tf.function(lambda x: model(x, training=False))
    return {"measure": "inference_ms_per_episode", "episode": f"{ways}w{shots}s{queries}q",
            **_timed(lambda: predict(inputs).numpy(), repeats)}


def serving_ms(saved_model_dir, data, ways, shots, queries, repeats=50):
    """One request through a loaded SavedModel's serving_default signature (in-process)."""
    serve = export.load_serving(saved_model_dir)
    inputs, _ = _episode(data, ways, shots, queries)
    return {"measure": "serving_ms_per_request", "episode": f"{ways}w{shots}s{queries}q",
            **_timed(lambda: serve(**inputs)["classes"].numpy(), repeats)}


def _elements_per_s(dataset, count, warmup=10):
    """Elements per second that `dataset` delivers over `count` elements after `warmup`."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


def _sequence(data, classes, instances):
    return next(iter(sequence_dataset(data.images, data.labels, classes, instances, seed=0,
                                      num_sequences=1)))


def sequence_inference_ms(model, data, classes, instances, repeats=20):
    """A forward pass (training=False) on one label sequence, inside a tf.function."""
    inputs, _ = _sequence(data, classes, instances)
    predict = tf.function(lambda x: model(x, training=False))
    return {"measure": "inference_ms_per_sequence", "sequence": f"{classes}x{instances}",
            **_timed(lambda: predict(inputs).numpy(), repeats)}


def sequence_serving_ms(saved_model_dir, data, classes, instances, repeats=50):
    """One request (a whole sequence) through a loaded SavedModel's sequence signature."""
    serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    inputs, _ = _sequence(data, classes, instances)
    return {"measure": "serving_ms_per_request", "sequence": f"{classes}x{instances}",
            **_timed(lambda: serve(**inputs)["classes"].numpy(), repeats)}


def peak_memory_mb():
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return {"measure": "peak_memory_mb",
            "mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def environment():
    """Versions, settings that change the speed, and the machine's load when measured."""
    return {"measure": "environment", "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "cpus": os.cpu_count(),
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "dtype_policy": keras.config.dtype_policy().name,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}
