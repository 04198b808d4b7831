"""The sequence contract of the memory models (Santoro et al. 2016's task setup).

    logits = model({"images": [T, H, W, C] or [B, T, H, W, C] uint8 raw pixels,
                    "labels": [T] or [B, T] ints in [0, N)})
    # -> float32 [T, N] or [B, T, N]

labels[t] is the true label of images[t]; the model shifts them itself: the scores of step
t see images[0..t] and labels[0..t-1] only (step 0 sees no label), so callers pass labels
aligned with their images, and the last label of a sequence is never read (any label in
[0, N) will do when it is unknown). N is the model's fixed number of classes. Values may be
numpy arrays, tensors or (nested) Python lists (a list of images holds whole-number pixel
values in [0, 255], taken as uint8). Bad input raises an error naming the problem:
ValueError eagerly or from static shapes, tf.errors.InvalidArgumentError from inside a traced
function (training, serving).
"""

import dataclasses

import keras
import tensorflow as tf

from keras_fewshot.layers import InkPreprocessing
from keras_fewshot.models.episodic import (TakesPythonLists, _check, _tensor, as_arrays,
                                           check_label_range, merge_leading)
from keras_fewshot.models.preset import FromPreset
from keras_fewshot.tasks import SEQUENCES

SEQUENCE_KEYS = ("images", "labels")


@dataclasses.dataclass
class Sequence:
    """A validated sequence, always batched: images [B, T, H, W, C], labels int32 [B, T]."""
    images: tf.Tensor
    labels: tf.Tensor
    batched: bool


def validate_sequence(inputs, classes) -> Sequence:
    """Checks a sequence dict against the contract (labels in [0, classes)); batches it."""
    if not isinstance(inputs, dict):
        raise TypeError(f"A sequence is a dict with keys {SEQUENCE_KEYS}; got {type(inputs)}")
    missing = [k for k in SEQUENCE_KEYS if k not in inputs]
    if missing:
        raise ValueError(f"Sequence is missing {missing}; expected keys {SEQUENCE_KEYS}, got "
                         f"keys {sorted(map(str, inputs))}")
    inputs = as_arrays(inputs)
    images, labels = (_tensor(k, inputs[k]) for k in SEQUENCE_KEYS)
    if images.dtype != tf.uint8:
        raise ValueError(f"images must be uint8 raw pixels, got {images.dtype.name}")
    if images.shape.rank not in (4, 5):
        raise ValueError("images must have rank 4 [T, H, W, C] or 5 [B, T, H, W, C], got "
                         f"shape {images.shape}")
    if images.shape[-1] is not None and images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {images.shape}")
    if not labels.dtype.is_integer:
        raise ValueError(f"labels must be integers, got {labels.dtype.name}")
    batched = images.shape.rank == 5
    if labels.shape.rank != images.shape.rank - 3:
        raise ValueError(f"labels must have shape {'[B, T]' if batched else '[T]'} for images "
                         f"{images.shape}, got {labels.shape}")
    if not batched:
        images, labels = images[None], labels[None]
    if (images.shape[1] is not None and labels.shape[1] is not None
            and images.shape[1] != labels.shape[1]):
        raise ValueError(f"images and labels have different lengths: {images.shape[1]} "
                         f"images, {labels.shape[1]} labels (one label per image)")
    channels = tf.shape(images)[-1]
    checks = _check((channels == 1) | (channels == 3), "images must have 1 or 3 channels")
    checks += _check(tf.minimum(tf.shape(images)[2], tf.shape(images)[3]) > 0,
                     "images must be at least 1x1 pixel, got height or width 0")
    checks += _check(tf.shape(images)[0] > 0, "the batch holds no sequences")
    checks += _check(tf.shape(images)[0] == tf.shape(labels)[0],
                     "images and labels have different numbers of sequences")
    checks += _check(tf.shape(images)[1] == tf.shape(labels)[1],
                     "images and labels have different lengths (one label per image)")
    checks += _check(tf.shape(labels)[1] > 0, "the sequence is empty")
    with tf.control_dependencies(checks):  # range checks before any cast to int32
        labels = check_label_range(labels, classes, "labels",
                                   f"N = {classes}, the model's number of classes")
        if checks:  # in a graph, the images wait for the checks: a bad one fails there
            images = tf.identity(images)
    return Sequence(images, labels, batched)


def shifted_labels(labels, classes):
    """int [B, T] -> float32 [B, T, N]: one-hot labels[t - 1] at step t, zeros at step 0."""
    first = tf.zeros([tf.shape(labels)[0], 1, classes])
    return tf.concat([first, tf.one_hot(labels[:, :-1], classes)], axis=1)


class SequenceClassifier(TakesPythonLists, FromPreset, keras.Model):
    """Base of the sequence models: validates, preprocesses, shifts labels, calls `steps`.

    The input of step t is [pixels of images[t] flattened; one-hot labels[t - 1]].
    Subclasses implement `steps(inputs [B, T, s*s + N], training) -> logits [B, T, N]`.
    """

    task_kind = SEQUENCES  # the trainer feeds `fit` label sequences

    def __init__(self, classes=5, image_size=20, **kwargs):
        super().__init__(**kwargs)
        self.classes = int(classes)
        self.image_size = int(image_size)
        if self.classes < 2:
            raise ValueError(f"classes must be at least 2, got {classes}")
        self.preprocess = InkPreprocessing(self.image_size, name="preprocess")
        self.input_size = self.image_size ** 2 + self.classes

    def training_loss(self):
        """Cross-entropy of every step's scores (the paper's loss)."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def training_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def call(self, inputs, training=False):
        sequence = validate_sequence(inputs, self.classes)
        shape = tf.shape(sequence.images)
        pixels = self.preprocess(merge_leading(sequence.images))
        pixels = tf.reshape(pixels, [shape[0], shape[1], self.image_size ** 2])
        steps = tf.concat([pixels, shifted_labels(sequence.labels, self.classes)], axis=-1)
        logits = self.steps(steps, training=training)
        return logits if sequence.batched else logits[0]

    def steps(self, inputs, training=False):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "classes": self.classes,
                "image_size": self.image_size}
