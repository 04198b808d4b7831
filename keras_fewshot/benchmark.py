"""Speed and memory measurements: ms per training step, ms per inference episode (or label
sequence) and serving request, the training input pipeline's steps/s.

Each function returns a dict ready to print as one JSON line. Times are medians over
`repeats` runs after warm-up; they depend on the machine and on whatever else runs on it.
"""

import dataclasses
import os
import resource
import statistics
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot import export, training
from keras_fewshot.data import LabelledImages
from keras_fewshot.tasks.episodes import first_episode
from keras_fewshot.training.data import RGB, run_preprocessor
from keras_fewshot.models import build_model


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


def train_step_ms(model, config, data, repeats=10, jit_compile=False):
    """One optimizer step of `model.fit`'s train function on the element `config` trains on
    (its `episodes_per_step` episodes or sequences, or a batch of pairs), with the model's
    own loss; XLA with `jit_compile`."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.training_loss(),
                  jit_compile=jit_compile)
    inputs, labels = next(iter(training.training_dataset(config, model, data)))
    return {"measure": "train_ms_per_step", "episode": model.task_kind.step_input(config),
            **_timed(lambda: model.train_on_batch(inputs, labels), repeats)}


def pipeline_steps_per_s(model, config, data, steps=100, warmup=10):
    """The training input pipeline alone, as `fit` reads it (`training.training_dataset`):
    optimizer steps' worth of input delivered per second, over `steps` steps after
    `warmup`. Divided by the training step's rate, it says how far the pipeline outpaces
    training."""
    stream = training.training_dataset(
        dataclasses.replace(config, episodes=(steps + warmup) * config.episodes_per_step),
        model, data)
    return {"measure": "pipeline_steps_per_s", "episode": model.task_kind.step_input(config),
            "steps_per_s": round(_elements_per_s(stream, steps, warmup), 1), "steps": steps}


def meta_step_ms(config, data, repeats=5):
    """One meta-step (an optimizer step over `config.episodes_per_step` tasks) of the model
    `config` describes: seconds of the first step (tracing included), then ms per step, and
    the process's peak memory afterwards (measure one configuration per process)."""
    keras.utils.set_random_seed(config.seed)
    model = build_model(config.model, config.model_config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.training_loss())
    inputs, labels = next(iter(training.training_dataset(config, model, data)))
    start = time.perf_counter()
    model.train_on_batch(inputs, labels)
    first = time.perf_counter() - start
    return {"measure": "meta_step_ms", "model": config.model, **config.model_config,
            "tasks": config.episodes_per_step,
            "episode": model.task_kind.task_shape(config),
            "first_step_s": round(first, 1),
            **_timed(lambda: model.train_on_batch(inputs, labels), repeats, warmup=1),
            "peak_memory_mb": peak_memory_mb()["mb"]}


def synthetic_data(config, seed=0) -> LabelledImages:
    """Random uint8 images in place of `config`'s data set (e.g. a natural-image benchmark
    whose files are not on the machine), as `training.load_data` gives them: at the model's
    resolution, with 3 channels for an RGB preprocessor, else 1; `config.ways` classes with
    enough examples each for one training element. A step's time does not depend on the
    pixels."""
    per_class = max(config.shots + config.queries, config.instances, 2)
    channels = 3 if run_preprocessor(config) == RGB else 1
    size = config.image_size
    images = np.random.default_rng(seed).integers(
        0, 256, (config.ways * per_class, size, size, channels), dtype=np.uint8)
    return LabelledImages(images, np.repeat(np.arange(config.ways, dtype=np.int32), per_class),
                          tuple(f"class{c}" for c in range(config.ways)),
                          np.zeros(config.ways, np.int32))


def inference_ms(model, unit, shape, inputs, repeats=20):
    """A forward pass (training=False) on one `unit` ("episode", "sequence": the model's task
    kind's) of `shape`, inside a tf.function."""
    inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
    predict = tf.function(lambda x: model(x, training=False))
    return {"measure": f"inference_ms_per_{unit}", unit: shape,
            **_timed(lambda: predict(inputs).numpy(), repeats)}


def serving_ms(saved_model_dir, unit, shape, inputs, repeats=50):
    """One request (a `unit` of `shape`) through a loaded SavedModel's serving_default
    signature (in-process)."""
    serve = export.load_serving(saved_model_dir)
    inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
    return {"measure": "serving_ms_per_request", unit: shape,
            **_timed(lambda: serve(**inputs)["classes"].numpy(), repeats)}


def _one_query_request(data, ways, shots):
    """A `ways`-way `shots`-shot support set and ONE query image (numpy arrays)."""
    inputs, _ = first_episode(data, ways, shots, 1)
    return {**inputs, "query_images": inputs["query_images"][:1]}


def one_query_serving_ms(saved_model_dir, data, ways=5, shots=1, repeats=50):
    """The one-query request (support set plus one query) through serving_default: what a
    peer's one-query figure compares with."""
    serve = export.load_serving(saved_model_dir)
    inputs = _one_query_request(data, ways, shots)
    return {"measure": "serving_ms_per_request", "episode": f"{ways}w{shots}s, 1 query",
            **_timed(lambda: serve(**inputs)["classes"].numpy(), repeats)}


def cached_query_ms(saved_model_dir, data, ways=5, shots=1, repeats=50):
    """One query against a stored support code: classify_encoded, the code made once by
    encode_support (metric models' SavedModels)."""
    encode = export.load_serving(saved_model_dir, "encode_support")
    classify = export.load_serving(saved_model_dir, "classify_encoded")
    inputs = _one_query_request(data, ways, shots)
    code = {k: v.numpy() for k, v in encode(support_images=inputs["support_images"],
                                            support_labels=inputs["support_labels"]).items()}
    query = inputs["query_images"]
    return {"measure": "cached_support_ms_per_query", "episode": f"{ways}w{shots}s, 1 query",
            **_timed(lambda: classify(query_images=query, **code)["classes"].numpy(), repeats)}


def threaded_serving(saved_model_dir, data, threads=8, seconds=10.0, ways=5, shots=1):
    """Requests/s and per-request latency (p50, p99) of one loaded SavedModel serving
    `threads` client threads at once for `seconds`, each sending the one-query request."""
    serve = export.load_serving(saved_model_dir)
    inputs = _one_query_request(data, ways, shots)
    serve(**inputs)["classes"].numpy()  # traced and warm before the clock starts
    latencies = [[] for _ in range(threads)]
    deadline = time.perf_counter() + seconds

    def client(times):  # at least one request each, then until the deadline
        while not times or time.perf_counter() < deadline:
            start = time.perf_counter()
            serve(**inputs)["classes"].numpy()
            times.append(1000.0 * (time.perf_counter() - start))

    ticks = _machine_cpu_ticks()
    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(times,)) for times in latencies]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    times = np.sort(np.concatenate([np.asarray(t) for t in latencies]))
    return {"measure": "serving_threads", "episode": f"{ways}w{shots}s, 1 query",
            "threads": threads, "requests": int(times.size),
            "requests_per_s": round(times.size / elapsed, 1),
            "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2),
            "steal_percent": _steal_percent(ticks, _machine_cpu_ticks())}


def serving_peer_ratios(model, saved_model_dir, data, ways=5, shots=1, rounds=5, calls=60):
    """The SavedModel's one-query request and cached-support query against an eager PyTorch
    ProtoNet with the same weights and preprocessing doing the same work, timed alternately
    (`rounds` rounds of `calls` calls each) in this process; None when torch is not
    importable or `model` is no squared-distance ProtoNet. Ratios < 1: the SavedModel is
    faster."""
    from keras_fewshot.models import PrototypicalNetwork
    if not isinstance(model, PrototypicalNetwork) or model.distance != "squared_euclidean":
        return None
    try:
        import torch
        from keras_fewshot import benchmark_peers
    except ImportError:
        return None
    serve = export.load_serving(saved_model_dir)
    encode = export.load_serving(saved_model_dir, "encode_support")
    classify = export.load_serving(saved_model_dir, "classify_encoded")
    inputs = _one_query_request(data, ways, shots)
    code = {k: v.numpy() for k, v in encode(support_images=inputs["support_images"],
                                            support_labels=inputs["support_labels"]).items()}
    peer = benchmark_peers.torch_protonet(model)
    with torch.inference_mode():
        prototypes = peer.encode_support(torch.from_numpy(inputs["support_images"]),
                                         torch.from_numpy(inputs["support_labels"]))

    def torch_request():
        with torch.inference_mode():
            return peer(*(torch.from_numpy(inputs[k]) for k in
                          ("support_images", "support_labels", "query_images"))).numpy()

    def torch_cached():
        with torch.inference_mode():
            return peer.classify(prototypes, torch.from_numpy(inputs["query_images"])).numpy()

    contestants = {
        "savedmodel_request": lambda: serve(**inputs)["probabilities"].numpy(),
        "torch_request": torch_request,
        "savedmodel_cached": lambda: classify(query_images=inputs["query_images"],
                                              **code)["probabilities"].numpy(),
        "torch_cached": torch_cached}
    agreement = max(float(np.abs(contestants["savedmodel_request"]() - fn()).max())
                    for fn in contestants.values())
    ticks = _machine_cpu_ticks()
    wall, cpu = {name: [] for name in contestants}, {name: [] for name in contestants}
    for _ in range(rounds):
        for name, fn in contestants.items():
            for _ in range(3):
                fn()
            for _ in range(calls):
                start, cpu_start = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(1000.0 * (time.perf_counter() - start))
                cpu[name].append(1000.0 * (time.process_time() - cpu_start))
    median = {name: statistics.median(times) for name, times in wall.items()}
    cpu_median = {name: statistics.median(times) for name, times in cpu.items()}
    return {"measure": "serving_vs_torch_eager", "episode": f"{ways}w{shots}s, 1 query",
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            **{f"{name}_ms_median": round(v, 3) for name, v in median.items()},
            **{f"{name}_cpu_ms_median": round(v, 3) for name, v in cpu_median.items()},
            "request_ratio": round(median["savedmodel_request"] / median["torch_request"], 2),
            "cached_ratio": round(median["savedmodel_cached"] / median["torch_cached"], 2),
            "request_cpu_ratio": round(cpu_median["savedmodel_request"]
                                       / cpu_median["torch_request"], 2),
            "cached_cpu_ratio": round(cpu_median["savedmodel_cached"]
                                      / cpu_median["torch_cached"], 2),
            "max_probability_difference": float(f"{agreement:.2g}"),
            "steal_percent": _steal_percent(ticks, _machine_cpu_ticks()),
            "calls": rounds * calls}


def tflite_ms(tflite_path, data, ways=5, shots=1, repeats=50):
    """The one-query request and the cached-support query in the TFLite interpreter (TF's
    `tf.lite.Interpreter`, default threads), and the file's size."""
    interpreter = tf.lite.Interpreter(model_path=str(tflite_path))
    serve = interpreter.get_signature_runner("serving_default")
    encode = interpreter.get_signature_runner("encode_support")
    classify = interpreter.get_signature_runner("classify_encoded")
    inputs = _one_query_request(data, ways, shots)
    code = encode(support_images=inputs["support_images"],
                  support_labels=inputs["support_labels"])
    episode = f"{ways}w{shots}s, 1 query"
    size = os.path.getsize(tflite_path)
    return [{"measure": "tflite_ms_per_request", "episode": episode, "bytes": size,
             **_timed(lambda: serve(**inputs), repeats)},
            {"measure": "tflite_cached_support_ms_per_query", "episode": episode,
             **_timed(lambda: classify(query_images=inputs["query_images"], **code),
                      repeats)}]


def support_set_serving_rows(model, saved_model_dir, data, repeats=50, threads_seconds=10.0,
                             feature_branches=1):
    """The serving measures of an exported episodic classifier beyond its requests: the
    5-way 1-shot request with one query, 8 client threads sending it for `threads_seconds`
    (requests/s, p50 / p99), the cached-support query (metric models), where torch is
    importable the PyTorch ProtoNet peer, and (float32 metric models) the TFLite file's size
    and its request and cached query in the interpreter (written next to the SavedModel).
    `feature_branches`: those the SavedModel was exported with, recorded in its rows (the
    TFLite file has none)."""
    rows = [one_query_serving_ms(saved_model_dir, data, 5, 1, repeats),
            threaded_serving(saved_model_dir, data, threads=8, seconds=threads_seconds)]
    if hasattr(model, "encode_support"):
        rows.append(cached_query_ms(saved_model_dir, data, 5, 1, repeats))
    peers = serving_peer_ratios(model, saved_model_dir, data, 5, 1,
                                calls=max(1, repeats // 5))
    rows += [peers] if peers else []
    rows = [{**row, "feature_branches": feature_branches} for row in rows]
    if hasattr(model, "encode_support") and export.computes_in_float32(model):
        tflite = os.path.join(os.path.dirname(str(saved_model_dir)), "model.tflite")
        rows += tflite_ms(export.export_tflite(model, tflite, overwrite=True), data, 5, 1,
                          repeats)
    return rows


def _elements_per_s(dataset, count, warmup=10):
    """Elements per second that `dataset` delivers over `count` elements after `warmup`."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


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
