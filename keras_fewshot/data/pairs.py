"""Same/different pairs for verification training (Koch, Zemel & Salakhutdinov 2015).

Batch i of a stream depends only on (seed, i), like episodes. Each batch holds `pairs`
pairs, half from one class (two distinct examples) and half from two distinct classes, in
random order. Elements: ({"first_images", "second_images"}, same) with `same` float32 1/0.

With `distort=True` each image gets the paper's random affine distortion (sec. 4.1): each of
rotation in [-10, 10] degrees, shear in [-0.3, 0.3], scale in [0.8, 1.2] (per axis) and
translation in [-2, 2] pixels at 105x105 (scaled to the image size) applied with
probability 0.5, filling with white paper.

With `groups` (each class's group, e.g. its alphabet) the two classes of every different
pair come from one group: harder negatives, as in Lake's within-alphabet test episodes.
"""

import numpy as np
import tensorflow as tf

from keras_fewshot.data.distortions import koch_distort
from keras_fewshot.data.episodes import EpisodeSpec


def pair_dataset(images, labels, pairs, *, groups=None, seed=0, start=0, num_batches=None,
                 distort=False) -> tf.data.Dataset:
    """Batches of same/different pairs from labelled images (uint8 [M, H, W, C])."""
    if pairs < 2 or pairs % 2:
        raise ValueError(f"pairs per batch must be an even number >= 2, got {pairs}")
    images = np.asarray(images)
    # Same pairs need 2 examples of a class; different pairs need 2 classes.
    spec = EpisodeSpec(labels, ways=2, shots=1, queries=1, groups=groups)
    sorted_images = tf.constant(images[spec.order])
    num_classes, half = len(spec.offsets), pairs // 2
    stop = None if num_batches is None else start + num_batches
    indices = tf.data.Dataset.counter(start) if stop is None else tf.data.Dataset.range(
        start, stop)

    def example(classes, draw):
        """One random example of each class (draw in [0, 1))."""
        counts = tf.gather(spec.counts, classes)
        within = tf.cast(tf.floor(draw * tf.cast(counts, tf.float32)), tf.int64)
        return tf.gather(spec.offsets, classes) + tf.minimum(within, counts - 1)

    def make(i):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), tf.cast(i, tf.int64)]), 9)
        # Same: a class, then two distinct examples (second offset by 1..count-1).
        same_class = tf.random.stateless_uniform([half], seeds[0], 0, num_classes, tf.int64)
        counts = tf.gather(spec.counts, same_class)
        first = tf.cast(tf.floor(tf.random.stateless_uniform([half], seeds[1])
                                 * tf.cast(counts, tf.float32)), tf.int64)
        step = 1 + tf.cast(tf.floor(tf.random.stateless_uniform([half], seeds[2])
                                    * tf.cast(counts - 1, tf.float32)), tf.int64)
        offsets = tf.gather(spec.offsets, same_class)
        same_a = offsets + tf.minimum(first, counts - 1)
        same_b = offsets + (tf.minimum(first, counts - 1) + step) % counts
        # Different: two distinct classes, one example each.
        if spec.groups is None:
            class_a = tf.random.stateless_uniform([half], seeds[3], 0, num_classes, tf.int64)
            shift = tf.random.stateless_uniform([half], seeds[4], 1, num_classes, tf.int64)
            class_b = (class_a + shift) % num_classes
        else:  # class_a from a group with >= 2 classes, class_b another class of its group
            class_group = tf.constant(spec.groups)
            usable = tf.reduce_any(class_group[:, None] == spec.usable_groups[None], axis=1)
            scores = tf.random.stateless_uniform([half, num_classes], seeds[3])
            class_a = tf.argmax(tf.where(usable[None], scores, -1.0), axis=1)
            same_group = tf.gather(class_group, class_a)[:, None] == class_group[None]
            others = same_group & (tf.range(num_classes, dtype=tf.int64)[None]
                                   != class_a[:, None])
            scores = tf.random.stateless_uniform([half, num_classes], seeds[4])
            class_b = tf.argmax(tf.where(others, scores, -1.0), axis=1)
        draws = tf.random.stateless_uniform([2, half], seeds[5])
        diff_a, diff_b = example(class_a, draws[0]), example(class_b, draws[1])
        first_idx = tf.concat([same_a, diff_a], 0)
        second_idx = tf.concat([same_b, diff_b], 0)
        same = tf.concat([tf.ones([half]), tf.zeros([half])], 0)
        perm = tf.argsort(tf.random.stateless_uniform([pairs], seeds[6]))
        first_images = tf.gather(sorted_images, tf.gather(first_idx, perm))
        second_images = tf.gather(sorted_images, tf.gather(second_idx, perm))
        if distort:
            first_images = koch_distort(first_images, seeds[7])
            second_images = koch_distort(second_images, seeds[8])
        return ({"first_images": first_images, "second_images": second_images},
                tf.gather(same, perm))

    return indices.map(make, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)
