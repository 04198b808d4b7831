"""Episodes as label sequences for memory-augmented networks (Santoro et al. 2016, sec. 4).

A sequence shows `classes` classes x `instances` distinct examples of each, all in random
order, with a class-to-label assignment drawn afresh for every sequence. Elements follow the
sequence contract (keras_fewshot.models.sequence):

    ({"images": uint8 [T, H, W, C], "labels": int32 [T]}, labels int32 [T])

with T = classes * instances and labels[t] the true label of images[t]; the model itself
presents labels[t] together with images[t + 1] (the one-step offset), so targets and input
labels are the same array. With `distort=True` every image is randomly rotated (up to
+-`ROTATION` degrees) and translated (up to +-`SHIFT` pixels at 105x105, scaled to the image
size), as the paper augments its training sequences.

Sequence i depends only on (seed, i), as episodes do: streams are reproducible and resumable.
"""

import tensorflow as tf

from keras_fewshot.data.distortions import affine_parameters, affine_transform
from keras_fewshot.data.episodes import EpisodeSpec, check_images, sample_class_examples

ROTATION = 10.0  # degrees
SHIFT = 10.0  # pixels at 105x105 (2 pixels at 20x20)


def sequence_dataset(images, labels, classes=5, instances=10, *, groups=None, seed=0,
                     start=0, num_sequences=None, batch_size=None,
                     distort=False) -> tf.data.Dataset:
    """Label sequences from labelled images at model resolution (uint8 [M, H, W, C]).

    Args:
      images, labels: the examples and their integer classes (any values).
      classes: classes per sequence (N; the paper uses 5, and 15 as an option).
      instances: distinct examples of each class per sequence (the paper: 10).
      groups: optional array mapping each class value to a group; every sequence then takes
        its classes from one group (e.g. one alphabet).
      seed: sequence i is a function of (seed, i) alone.
      start: index of the first sequence (resuming a stream).
      num_sequences: length of the stream; None for endless.
      batch_size: if given, stack this many sequences per element ([B, T, ...] tensors).
      distort: randomly rotate and translate every image (training augmentation).
    """
    for name, value in (("classes", classes), ("instances", instances)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    images = check_images(images, labels)
    spec = EpisodeSpec(labels, classes, instances, 0, groups)
    sorted_images = tf.constant(images[spec.order])
    length = int(classes) * int(instances)
    stop = None if num_sequences is None else start + num_sequences
    indices = tf.data.Dataset.counter(start) if stop is None else tf.data.Dataset.range(
        start, stop)

    def make(i):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), tf.cast(i, tf.int64)]), 5)
        index = tf.reshape(sample_class_examples(spec, seeds), [-1])  # class-major
        class_labels = tf.repeat(tf.range(classes, dtype=tf.int32), instances)
        order = tf.argsort(tf.random.stateless_uniform([length], seeds[3]))
        sequence_images = tf.gather(sorted_images, tf.gather(index, order))
        sequence_labels = tf.gather(class_labels, order)
        element = {"images": sequence_images, "labels": sequence_labels}, sequence_labels
        if distort:  # drawn per sequence, applied per batch: one transform op per batch
            return *element, affine_parameters(length, seeds[4], rotation=ROTATION, shift=SHIFT)
        return element

    def distorted(inputs, labels, parameters):
        images = inputs["images"]
        flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[-3:]], 0))
        flat = affine_transform(flat, tf.reshape(parameters, [-1, 7]))
        return {**inputs, "images": tf.reshape(flat, tf.shape(images))}, labels

    def finished(element):
        return distorted(*element) if distort else element

    def make_batch(batch):  # a batch's sequences and their one warp in one call, so that
        #                     tf.data makes whole batches in parallel
        return finished(tf.nest.map_structure(lambda *parts: tf.stack(parts),
                                              *[make(batch[j]) for j in range(batch_size)]))

    if batch_size:
        ds = indices.batch(batch_size, drop_remainder=True).map(
            make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = indices.map(lambda i: finished(make(i)), num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
