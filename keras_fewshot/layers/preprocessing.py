"""Raw pixels in, model pixels out: a preprocessor is a Keras layer inside the model, uint8
[M, H, W, C] -> float32 [M, s, s, channels].

"ink" (`InkPreprocessing`, every Omniglot zoo model's): grayscale is the mean over channels
(1 or 3 channels; Omniglot's three are equal), resizing is area interpolation to
`image_size`, and scaling maps white paper to 0 and full ink to 1. "rgb"
(`RGBPreprocessing`): the same area resize on each channel, [0, 1] scaling and per-channel
mean / std normalisation, colour kept.

Area interpolation is a fixed linear map for a given input and output size, and separable:
output pixel (i, j) is the mean of the input over the square it covers, i.e. rows, then
columns, each a matrix with the covered fraction of every input row (column) per output row
(column). Written as two matrix products (`area_resize`), it is TensorFlow's
`tf.image.resize(method="area")` (`ResizeArea`) up to float32 round-off, and unlike that op
it converts to TFLite (LiteRT) builtins and compiles under XLA.
"""

import keras
import tensorflow as tf

from keras_fewshot.backbones import layer_from_spec


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

    `InkPreprocessing` maps these to the same model input as the raw images (up to the
    rounding to uint8), so episodes can be cached at model resolution.
    """
    return tf.cast(tf.round(_gray_resized(images, image_size)), tf.uint8)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class InkPreprocessing(keras.layers.Layer):
    """uint8 [M, H, W, C] raw pixels -> float32 [M, s, s, 1] ink intensity (0 paper, 1 ink):
    Omniglot's preprocessing, the zoo's."""

    channels = 1  # of the output: what the backbone reads

    def __init__(self, image_size=28, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def call(self, images):
        return 1.0 - _gray_resized(images, self.image_size) / 255.0

    def cache_pixels(self, images):
        """uint8 [M, H, W, C] -> uint8 [M, s, s, 1] (`to_model_pixels`): what a data pipeline
        may cache; this layer maps them to its output on `images` up to the rounding."""
        return to_model_pixels(images, self.image_size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 1)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


# Its name before RGB images came: importable, and .keras files that recorded it still load.
ImagePreprocessing = InkPreprocessing
keras.saving.get_custom_objects()["keras_fewshot>ImagePreprocessing"] = InkPreprocessing


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RGBPreprocessing(keras.layers.Layer):
    """uint8 [M, H, W, C] raw pixels -> float32 [M, s, s, 3]: area resize of each channel,
    scaled to [0, 1], then (x - mean) / std per channel (ImageNet's statistics by default).
    A 1-channel image is repeated into 3 (gray stays gray)."""

    channels = 3

    def __init__(self, image_size=84, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("RGBPreprocessing takes 3 channel means and 3 positive standard "
                             f"deviations, got mean={mean!r}, std={std!r}")

    def _resized(self, images):
        """uint8 [M, H, W, C] -> float32 [M, s, s, C] in [0, 255], each channel resized."""
        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        # channels first, so each channel is one [H, W] image for `area_resize`
        planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), tf.stack([-1, shape[1], shape[2]]))
        planes = area_resize(planes, self.image_size, self.image_size)
        return tf.transpose(tf.reshape(planes, tf.stack([shape[0], shape[3], self.image_size,
                                                         self.image_size])), [0, 2, 3, 1])

    def cache_pixels(self, images):
        """uint8 [M, H, W, C] -> uint8 [M, s, s, C], channels kept: what a data pipeline may
        cache; this layer maps them to its output on `images` up to the rounding."""
        return tf.cast(tf.round(self._resized(images)), tf.uint8)

    def call(self, images):
        x = self._resized(images)
        shape = tf.shape(x)
        x = tf.broadcast_to(x, tf.stack([shape[0], self.image_size, self.image_size, 3]))
        scale = tf.constant([255.0 * s for s in self.std])  # (x / 255 - mean) / std
        return (x - tf.constant([255.0 * m for m in self.mean])) / scale

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std)}


PREPROCESSORS = {"ink": InkPreprocessing, "rgb": RGBPreprocessing}


def get_preprocessor(spec, image_size, **kwargs):
    """A preprocessor layer from `spec`: "ink" or "rgb" (built for `image_size`, with
    `kwargs` such as name), a serialised config dict, or a Keras layer (as is). A
    preprocessor's `channels` is its output's channel count."""
    return layer_from_spec(spec, PREPROCESSORS, "preprocessor", image_size=image_size, **kwargs)
