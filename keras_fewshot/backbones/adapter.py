"""Any Keras image model as a backbone: a `keras.applications` network built with
`include_top=False`, a keras-hub image backbone, or a Functional model of one's own.

    from keras_fewshot.backbones import ImageModelBackbone
    from keras_fewshot.layers import RGBPreprocessing
    trunk = keras.applications.MobileNetV3Small(include_top=False, weights="imagenet",
                                                input_shape=(224, 224, 3),
                                                include_preprocessing=False)  # reads [-1, 1]
    model = PrototypicalNetwork(backbone=ImageModelBackbone(trunk), image_size=224,
                                preprocessor=RGBPreprocessing(224, mean=(0.5,) * 3,
                                                              std=(0.5,) * 3))

The wrapped model reads the preprocessor's output, so give it the scaling the model was
trained with: the "rgb" preprocessor's default is ImageNet mean/std; (x - 0.5) / 0.5 gives
MobileNetV3's [-1, 1] once its own preprocessing is switched off. A rank-4 output [M, h, w, C]
is global-average-pooled to [M, C] unless `pooled=False`; a vector output passes through.
The wrapped model is serialised with the adapter (keras.saving.serialize_keras_object), so a
few-shot model holding it saves and loads as a `.keras` file.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_fewshot")
class ImageModelBackbone(keras.layers.Layer):
    """float32 [M, H, W, C] -> the wrapped model's output, rank-4 maps pooled to [M, C]."""

    def __init__(self, model, pooled=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        if not isinstance(model, keras.layers.Layer):
            raise TypeError("ImageModelBackbone wraps a Keras model or layer mapping images to "
                            f"feature maps or vectors; got {type(model).__name__}")
        self.model = model
        self.pooled = bool(pooled)

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)

    def call(self, x, training=False):
        y = self.model(x, training=training)
        if self.pooled and len(y.shape) == 4:
            y = tf.reduce_mean(y, axis=[1, 2])
        return y

    def compute_output_shape(self, input_shape):
        shape = tuple(self.model.compute_output_shape(input_shape))
        return (shape[0], shape[-1]) if self.pooled and len(shape) == 4 else shape

    def get_config(self):
        return {**super().get_config(),
                "model": keras.saving.serialize_keras_object(self.model),
                "pooled": self.pooled}
