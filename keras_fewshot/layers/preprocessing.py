"""Raw pixels in, model pixels out: the one preprocessing every zoo model applies inside.

Grayscale is the mean over channels (1 or 3 channels; Omniglot's three are equal), resizing
is area interpolation to `image_size`, and scaling maps white paper to 0 and full ink to 1.

Area interpolation is a fixed linear map for a given input and output size, and separable:
output pixel (i, j) is the mean of the input over the square it covers, i.e. rows, then
columns, each a matrix with the covered fraction of every input row (column) per output row
(column). Written as two matrix products (`area_resize`), it is TensorFlow's
`tf.image.resize(method="area")` (`ResizeArea`) up to float32 round-off, and unlike that op
it converts to TFLite (LiteRT) builtins and compiles under XLA.
"""

import keras
import tensorflow as tf


def area_weights(in_size, out_size):
    """float32 [out_size, in_size]: row i holds, for every input pixel k, the fraction of
    output pixel i's footprint [i * r, (i + 1) * r) (r = in_size / out_size, in input
    pixels) that [k, k + 1) covers; each row sums to 1. Sizes may be tensors."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    lower = tf.cast(tf.range(out_size), tf.float32)[:, None] * scale  # footprint [lower,
    k = tf.cast(tf.range(in_size), tf.float32)[None, :]               #  lower + scale)
    covered = tf.minimum(k + 1.0, lower + scale) - tf.maximum(k, lower)
    return tf.nn.relu(covered) / scale


def area_resize(images, height, width):
    """float32 [M, H, W] -> [M, height, width] by area interpolation: rows, then columns."""
    shape = tf.shape(images)
    rows = area_weights(shape[1], height)   # [height, H]
    columns = area_weights(shape[2], width)  # [width, W]
    return tf.matmul(tf.matmul(rows, images), columns, transpose_b=True)


def _gray_resized(images, image_size):
    """uint8 [M, H, W, C] -> float32 [M, image_size, image_size, 1] in [0, 255]."""
    gray = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1)
    return area_resize(gray, image_size, image_size)[..., None]


def to_model_pixels(images, image_size):
    """uint8 [M, H, W, C] -> uint8 [M, image_size, image_size, 1]: what a data pipeline caches.

    `ImagePreprocessing` maps these to the same model input as the raw images (up to the
    rounding to uint8), so episodes can be cached at model resolution.
    """
    return tf.cast(tf.round(_gray_resized(images, image_size)), tf.uint8)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class ImagePreprocessing(keras.layers.Layer):
    """uint8 [M, H, W, C] raw pixels -> float32 [M, s, s, 1] ink intensity (0 paper, 1 ink)."""

    def __init__(self, image_size=28, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def call(self, images):
        return 1.0 - _gray_resized(images, self.image_size) / 255.0

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 1)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}
