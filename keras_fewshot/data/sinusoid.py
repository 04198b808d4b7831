"""Sinusoid regression tasks (Finn, Abbeel & Levine 2017, sec. 5.1) on tf.data.

Task i: y = amplitude * sin(x - phase), amplitude ~ U[0.1, 5], phase ~ U[0, pi], with K support
and Q query points x ~ U[-5, 5]. Sampling is stateless: task i of a stream depends only on
(seed, stream, i), so streams are reproducible and resumable, and the "train" and "test"
streams of one seed never share a task.

Elements follow the regression-task contract of `keras_fewshot.models.MAMLRegressor`:
({"support_x": [K, 1], "support_y": [K, 1], "query_x": [Q, 1]}, query_y [Q, 1]).
"""

import math

import tensorflow as tf

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
STREAMS = {"train": 0, "test": 1}


def _task_seed(seed, stream, index):
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {stream!r}")
    key = tf.constant([seed, STREAMS[stream]], tf.int64)
    return tf.random.experimental.stateless_fold_in(key, tf.cast(index, tf.int64))


def sinusoid_parameters(seed, index, stream="train"):
    """(amplitude, phase) of task `index` of the stream."""
    seeds = tf.random.experimental.stateless_split(_task_seed(seed, stream, index), 3)
    amplitude = tf.random.stateless_uniform([], seeds[0], *AMPLITUDE_RANGE)
    phase = tf.random.stateless_uniform([], seeds[1], *PHASE_RANGE)
    return amplitude, phase


def sinusoid(x, amplitude, phase):
    return amplitude * tf.sin(x - phase)


def sinusoid_task(seed, index, shots, queries, stream="train"):
    """One task: ({"support_x", "support_y", "query_x"}, query_y), points [M, 1] float32."""
    amplitude, phase = sinusoid_parameters(seed, index, stream)
    point_seed = tf.random.experimental.stateless_split(_task_seed(seed, stream, index), 3)[2]
    x = tf.random.stateless_uniform([shots + queries, 1], point_seed, *X_RANGE)
    y = sinusoid(x, amplitude, phase)
    return ({"support_x": x[:shots], "support_y": y[:shots], "query_x": x[shots:]},
            y[shots:])


def sinusoid_tasks(shots, queries, *, seed=0, stream="train", start=0, num_tasks=None,
                   batch_size=None) -> tf.data.Dataset:
    """Tasks `start`, `start + 1`, ... (endless when num_tasks is None), optionally batched."""
    for name, value in (("shots", shots), ("queries", queries)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    _task_seed(seed, stream, 0)  # checks the stream name eagerly
    indices = (tf.data.Dataset.counter(start) if num_tasks is None
               else tf.data.Dataset.range(start, start + num_tasks))
    ds = indices.map(lambda i: sinusoid_task(seed, i, int(shots), int(queries), stream),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
