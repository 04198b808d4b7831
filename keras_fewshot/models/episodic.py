"""The episode contract every classifier in the zoo honours.

    logits = model({"support_images": [S, H, W, C] or [B, S, H, W, C] uint8 raw pixels,
                    "support_labels": [S] or [B, S] ints in [0, N),
                    "query_images":   [Q, H, W, C] or [B, Q, H, W, C] uint8 raw pixels})
    # -> float32 [Q, N] or [B, Q, N]

N is the number of classes in the support set (largest label + 1, at least 2); every class
in [0, N) needs at least one support example; shots may be uneven. Values may be numpy
arrays, tensors or (nested) Python lists: a list of images holds whole-number pixel values in
[0, 255] and is taken as uint8. Bad input raises an error naming the problem: ValueError when
the problem is visible eagerly or from static shapes, tf.errors.InvalidArgumentError from
inside a traced function (training, serving).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot.models.preset import FromPreset
from keras_fewshot.tasks import EPISODES

EPISODE_KEYS = ("support_images", "support_labels", "query_images")


@dataclasses.dataclass
class Episode:
    """A validated episode, always batched: images [B, M, H, W, C], labels [B, S]."""
    support_images: tf.Tensor
    support_labels: tf.Tensor
    query_images: tf.Tensor
    num_classes: tf.Tensor
    batched: bool


def _check(condition, message):
    """Raises ValueError eagerly; in a graph, adds an assertion that fails with `message`."""
    if tf.executing_eagerly():
        if not bool(condition):
            raise ValueError(message)
        return []
    return [tf.debugging.Assert(condition, [message])]


def _is_python_value(value):
    return isinstance(value, (list, tuple, int, float, bool))


def as_arrays(inputs):
    """`inputs` (a dict) with each Python list, tuple or number made a numpy array, so Keras
    takes it as a tensor: lists of images ("...images" keys) become uint8 when they hold
    whole numbers in [0, 255], lists of labels ("...labels") must hold integers. ValueError
    naming the key when a list is ragged or holds anything else; the rest is left to the
    contract's checks."""
    if not isinstance(inputs, dict) or not any(map(_is_python_value, inputs.values())):
        return inputs
    return {key: _array(key, value) if _is_python_value(value) else value
            for key, value in inputs.items()}


def _array(key, value):
    images = isinstance(key, str) and key.endswith("images")
    try:
        array = np.asarray(value)
    except ValueError as error:  # rows of different lengths
        raise ValueError(f"{key} is a ragged nested list (rows of different lengths); it must "
                         f"be a rectangular array: {error}") from None
    except (TypeError, NotImplementedError):  # e.g. a list of symbolic tensors in a graph
        return _tensor(key, value)
    if array.size == 0 and array.dtype == np.float64:  # [] says nothing about its type
        return array.astype(np.uint8 if images else np.int32)
    if array.dtype.kind not in "biuf":
        kinds = sorted({type(v).__name__ for v in array.ravel().tolist()})
        raise ValueError(f"{key} must hold numbers only, got a list of {kinds}")
    if isinstance(key, str) and key.endswith("labels") and array.dtype.kind not in "iu":
        raise ValueError(f"{key} must be integers, got a list of {array.dtype.name} values")
    if images and array.dtype != np.uint8:
        if array.dtype.kind not in "iu":
            raise ValueError(f"{key} must be raw pixels: whole numbers in [0, 255] (uint8), "
                             f"got a list of {array.dtype.name} values")
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"{key} must be raw pixels: whole numbers in [0, 255] (uint8), "
                             f"got values from {array.min()} to {array.max()}")
        array = array.astype(np.uint8)
    return array


def _tensor(key, value):
    """tf.convert_to_tensor(value), or ValueError naming `key` when it is no array."""
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{key} must be an array (numpy, tensor or nested list), got "
                         f"{type(value).__name__}") from error


def check_label_range(labels, upper, name, what):
    """Checks integer `labels` (any integer dtype) are in [0, upper) before any cast, and
    returns them as int32. `what` describes `upper` in the message."""
    if labels.dtype == tf.uint64:  # the one dtype int64 cannot hold: compare in uint64
        checks = _check(tf.reduce_max(labels) < tf.cast(upper, tf.uint64),
                        f"{name} has a label >= {what}")
        with tf.control_dependencies(checks):
            labels = tf.cast(tf.minimum(labels, tf.cast(upper, tf.uint64)), tf.int64)
    wide = tf.cast(labels, tf.int64)
    checks = _check(tf.reduce_min(wide) >= 0, f"{name} has a label below 0")
    checks += _check(tf.reduce_max(wide) < tf.cast(upper, tf.int64),
                     f"{name} has a label >= {what}")
    with tf.control_dependencies(checks):
        return tf.cast(wide, tf.int32)


def validate_episode(inputs, fixed_ways=None, max_ways=None) -> Episode:
    """Checks an episode dict against the contract and returns it batched; `fixed_ways` /
    `max_ways`: the number of classes a model needs exactly / can take at most."""
    if not isinstance(inputs, dict):
        raise TypeError(f"An episode is a dict with keys {EPISODE_KEYS}; got {type(inputs)}")
    missing = [k for k in EPISODE_KEYS if k not in inputs]
    if missing:
        raise ValueError(f"Episode is missing {missing}; expected keys {EPISODE_KEYS}, got "
                         f"keys {sorted(map(str, inputs))}")
    inputs = as_arrays(inputs)
    s_x, s_y, q_x = (_tensor(k, inputs[k]) for k in EPISODE_KEYS)
    for name, x in (("support_images", s_x), ("query_images", q_x)):
        if x.dtype != tf.uint8:
            raise ValueError(f"{name} must be uint8 raw pixels, got {x.dtype.name}")
        if x.shape.rank not in (4, 5):
            raise ValueError(f"{name} must have rank 4 [M, H, W, C] or 5 [B, M, H, W, C], "
                             f"got shape {x.shape}")
        if x.shape[-1] is not None and x.shape[-1] not in (1, 3):
            raise ValueError(f"{name} must have 1 or 3 channels, got shape {x.shape}")
    if not s_y.dtype.is_integer:
        raise ValueError(f"support_labels must be integers, got {s_y.dtype.name}")
    if q_x.shape.rank != s_x.shape.rank:
        raise ValueError(f"support_images {s_x.shape} and query_images {q_x.shape} must both "
                         "be batched (rank 5) or both unbatched (rank 4)")
    batched = s_x.shape.rank == 5
    if s_y.shape.rank != s_x.shape.rank - 3:
        raise ValueError(f"support_labels must have shape {'[B, S]' if batched else '[S]'} "
                         f"for support_images {s_x.shape}, got {s_y.shape}")
    if not batched:
        s_x, s_y, q_x = s_x[None], s_y[None], q_x[None]
    checks = []
    for name, x in (("support_images", s_x), ("query_images", q_x)):
        channels = tf.shape(x)[-1]
        checks += _check((channels == 1) | (channels == 3), f"{name} must have 1 or 3 channels")
        checks += _check(tf.minimum(tf.shape(x)[2], tf.shape(x)[3]) > 0,
                         f"{name} has images of height or width 0")
    checks += _check(tf.shape(s_x)[0] > 0, "the batch holds no episodes")
    checks += _check(tf.shape(s_x)[0] == tf.shape(q_x)[0],
                     "support_images and query_images have different numbers of episodes")
    checks += _check(tf.shape(s_x)[0] == tf.shape(s_y)[0],
                     "support_images and support_labels have different numbers of episodes")
    checks += _check(tf.shape(s_x)[1] == tf.shape(s_y)[1],
                     "support_images and support_labels have different numbers of examples")
    checks += _check(tf.size(s_y) > 0, "the support set is empty")
    checks += _check(tf.shape(q_x)[1] > 0, "the query set is empty")
    with tf.control_dependencies(checks):
        # Range checks on the labels as given (before any cast or one-hot of size N).
        s_y = check_label_range(s_y, tf.shape(s_y)[1], "support_labels",
                                "the number of support examples, so a class in [0, N) has no "
                                "support example")
        num_classes = tf.reduce_max(s_y) + 1
    counts = tf.reduce_sum(tf.one_hot(s_y, num_classes, dtype=tf.int32), axis=1)
    checks = _check(tf.reduce_min(counts) > 0,
                    "a class in [0, N) has no support example (labels must be 0..N-1, "
                    "N = largest label + 1, each present in every episode)")
    checks += _check(num_classes >= 2,
                     "the support set has a single class (every label is 0): a classifier "
                     "needs at least 2 classes to choose between")
    if fixed_ways is not None:
        checks += _check(num_classes == fixed_ways,
                         f"this model classifies exactly {fixed_ways} classes; the support set "
                         "has a different number")
    if max_ways is not None:
        checks += _check(num_classes <= max_ways,
                         f"this model classifies at most {max_ways} classes; the support set "
                         "has more")
    with tf.control_dependencies(checks):  # (which run after the first ones: see s_y)
        num_classes = tf.identity(num_classes)
        if checks:  # in a graph, the images too wait for every check, so a bad one fails
            s_x, q_x = tf.identity(s_x), tf.identity(q_x)  # there, not inside an image op
    return Episode(s_x, s_y, q_x, num_classes, batched)


def dummy_episode(ways=2, shots=1, queries=1, image_size=28, channels=1):
    """A small all-white episode: enough to build a model's weights."""
    return {
        "support_images": np.full((ways * shots, image_size, image_size, channels), 255,
                                  np.uint8),
        "support_labels": np.repeat(np.arange(ways, dtype=np.int32), shots),
        "query_images": np.full((queries, image_size, image_size, channels), 255, np.uint8),
    }


def merge_leading(x):
    """[B, M, ...] -> [B * M, ...]."""
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))


class TakesPythonLists:
    """keras.Model mixin: Python lists (and numbers) in the input dict become numpy arrays
    (`as_arrays`) before Keras sees them; Keras takes only tensors and arrays."""

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(as_arrays(inputs), *args, **kwargs)


class EpisodicClassifier(TakesPythonLists, FromPreset, keras.Model):
    """Base of every classifier in the zoo: validates, batches, calls `classify`.

    Subclasses implement `classify(support_images [B,S,H,W,C], support_labels [B,S],
    query_images [B,Q,H,W,C], num_classes, training) -> logits [B,Q,N]`; a model that only
    works for one N sets `fixed_ways`, one that takes at most so many classes `max_ways`; a
    model trained otherwise overrides `task_kind`, `training_loss` and
    `training_metrics`.
    """

    fixed_ways = None
    max_ways = None
    task_kind = EPISODES  # what the trainer feeds `fit` (keras_fewshot.tasks)

    def training_loss(self):
        """The training loss on (query labels, logits); the papers' default is cross-entropy."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def training_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def call(self, inputs, training=False):
        episode = validate_episode(inputs, self.fixed_ways, self.max_ways)
        logits = self.classify(episode.support_images, episode.support_labels,
                               episode.query_images, episode.num_classes, training=training)
        # float32 logits whatever the compute dtype (bf16 under mixed_bfloat16): the
        # softmax and the loss are taken in float32
        logits = tf.cast(logits, tf.float32)
        return logits if episode.batched else logits[0]

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        raise NotImplementedError

    def embed_episode(self, embed, support_images, query_images, training=False):
        """Preprocesses and embeds support and query in one pass of `embed`, so batch norm
        sees the whole episode; returns [B, S, ...] and [B, Q, ...] features."""
        batch = tf.shape(support_images)[0]
        support = self.preprocess(merge_leading(support_images))
        query = self.preprocess(merge_leading(query_images))
        features = embed(tf.concat([support, query], axis=0), training=training)
        split = tf.shape(support)[0]
        shape = (batch, -1, *features.shape[1:])
        return tf.reshape(features[:split], shape), tf.reshape(features[split:], shape)
