"""Colour photographs at a square size, from image files or from arrays.

Both paths give uint8 [M, s, s, C], computed as `images.read_images` computes it: first the
channels (3: RGB, a grayscale file repeated, an alpha channel dropped; 1: the mean of R, G
and B, rounded), then area interpolation to s x s, rounded. Files are decoded in parallel on
tf.data (a data set's tens of thousands of JPEGs), and a file that does not decode is named
in the error.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf

from keras_fewshot.data import images as image_files

BATCH = 256


def convert(image, image_size, channels):
    """uint8 [..., H, W, 3] -> uint8 [..., s, s, channels] (see the module)."""
    if channels == 1:
        image = tf.cast(tf.round(tf.reduce_mean(tf.cast(image, tf.float32), axis=-1,
                                                keepdims=True)), tf.uint8)
    resized = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size),
                              method="area")
    return tf.cast(tf.round(resized), tf.uint8)


def _check(image_size, channels):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size is None or int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")


def resize_array(images, image_size, channels=3, source="the data") -> np.ndarray:
    """uint8 [M, H, W, 3] (already decoded, e.g. from a pickle) -> uint8 [M, s, s, C]."""
    _check(image_size, channels)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{source}: expected uint8 RGB images [M, H, W, 3], got "
                         f"{images.dtype} {list(images.shape)}")
    if images.shape[1:3] == (image_size, image_size) and channels == 3:
        return images
    out = [convert(images[i:i + BATCH], image_size, channels).numpy()
           for i in range(0, len(images), BATCH)]
    return np.concatenate(out) if out else np.zeros((0, image_size, image_size, channels),
                                                    np.uint8)


def check_files(paths, listed_in):
    """FileNotFoundError naming the missing files of `paths` (and where they were listed)."""
    missing = [str(p) for p in paths if not pathlib.Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the {len(paths)} images {listed_in} lists "
                                f"are missing, e.g. {missing[:3]}")


def read_photos(paths, image_size, channels=3) -> np.ndarray:
    """uint8 [M, s, s, C] of image files (PNG, JPEG, GIF, BMP), in the order given."""
    _check(image_size, channels)
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("No image files given")

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return convert(image, image_size, channels)

    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(BATCH)
    out = []
    try:
        for batch in ds.as_numpy_iterator():
            out.append(batch)
    except tf.errors.OpError:
        done = sum(len(b) for b in out)  # the failing file is in the next batch
        for path in paths[done:done + BATCH]:
            image_files.read_images([path], image_size, channels)  # raises, naming the file
        raise
    return np.concatenate(out)
