"""Siamese L1 head (Koch, Zemel & Salakhutdinov 2015, eq. 1).

p(x1, x2) = sigmoid(W . |f(x1) - f(x2)| + b), with f shared by both inputs.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_fewshot")
class NonPositive(keras.constraints.Constraint):
    """Clips weights to <= 0: W . |a - b| then stays a (weighted) negative L1 distance."""

    def __call__(self, w):
        return tf.minimum(w, 0.0)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class SiameseL1Head(keras.layers.Layer):
    """(embeddings a [..., D], embeddings b [..., D]) -> same-class logit [...].

    The logit is W . |a - b| + b; `tf.sigmoid` of it is the paper's p(x1, x2). Returning
    the logit keeps the binary cross-entropy numerically sound.
    """

    def __init__(self, kernel_initializer=None, kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        # Koch et al. initialise the head's weights from N(0, 0.2).
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(0.0, 0.2))
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, a_shape, b_shape=None):  # Keras matches *_shape to call()'s a, b
        dim = a_shape[-1]
        self.kernel = self.add_weight(shape=(dim,), name="kernel",
                                      initializer=self.kernel_initializer,
                                      constraint=self.kernel_constraint)
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, a, b):
        return tf.reduce_sum(tf.abs(a - b) * self.kernel, axis=-1) + self.bias

    def get_config(self):
        return {**super().get_config(),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint)}
