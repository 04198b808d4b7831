"""Raw pixels in, model pixels out: the one preprocessing every zoo model applies inside.

Grayscale is the mean over channels (1 or 3 channels; Omniglot's three are equal), resizing
is area interpolation to `image_size`, and scaling maps white paper to 0 and full ink to 1.
"""

import keras
import tensorflow as tf


def _gray_resized(images, image_size):
    """uint8 [M, H, W, C] -> float32 [M, image_size, image_size, 1] in [0, 255]."""
    x = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1, keepdims=True)
    return tf.image.resize(x, (image_size, image_size), method="area")


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
