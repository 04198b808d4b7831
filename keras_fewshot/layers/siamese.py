"""Siamese L1 head (Koch, Zemel & Salakhutdinov 2015, eq. 1).

p(x1, x2) = sigmoid(W . |f(x1) - f(x2)| + b), with f shared by both inputs.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_fewshot")
class SiameseL1Head(keras.layers.Layer):
    """(embeddings a [..., D], embeddings b [..., D]) -> same-class logit [...].

    The logit is W . |a - b| + b; `tf.sigmoid` of it is the paper's p(x1, x2). Returning
    the logit keeps the binary cross-entropy numerically sound.
    """

    def build(self, a_shape, b_shape=None):  # Keras matches *_shape to call()'s a, b
        dim = a_shape[-1]
        # Koch et al. initialise the head's weights from N(0, 0.2).
        self.kernel = self.add_weight(shape=(dim,), name="kernel",
                                      initializer=keras.initializers.RandomNormal(0.0, 0.2))
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, a, b):
        return tf.reduce_sum(tf.abs(a - b) * self.kernel, axis=-1) + self.bias
