"""Relation module (Sung et al. 2018, sec. 3.4 and fig. 2).

r_{i,j} = g_phi([f(x_i), f(x_j)]): query and class feature maps concatenated along channels,
two conv blocks (64 3x3, batch norm, ReLU, 2x2 max pool), FC 8 (ReLU), FC 1 (sigmoid).
"""

import keras
import tensorflow as tf

from keras_fewshot.layers.conv4 import Conv4Embedding


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RelationModule(keras.layers.Layer):
    """Pair feature maps [M, h, w, 2C] -> relation logits [M]; sigmoid gives r in [0, 1]."""

    def __init__(self, filters=64, hidden_units=8, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.hidden_units = int(hidden_units)
        self.convs = Conv4Embedding(self.filters, blocks=2, name="blocks")
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="fc1")
        self.score = keras.layers.Dense(1, name="fc2")

    def build(self, input_shape):
        self.convs.build(input_shape)
        shape = self.convs.compute_output_shape(input_shape)
        self.hidden.build(shape)
        self.score.build(self.hidden.compute_output_shape(shape))

    def call(self, pairs, training=False):
        features = self.convs(pairs, training=training)
        return tf.squeeze(self.score(self.hidden(features)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "hidden_units": self.hidden_units}
