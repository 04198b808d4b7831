"""Relation module (Sung et al. 2018, sec. 3.4 and fig. 2).

r_{i,j} = g_phi([f(x_i), f(x_j)]): query and class feature maps concatenated along channels,
two conv blocks (64 3x3, batch norm, ReLU, 2x2 max pool), FC 8 (ReLU), FC 1 (sigmoid).

The pairs are never built: the first convolution is linear in its input, so on [q; c] it
equals the kernel's query half on q plus its class half on c. Each query map and each class
map is convolved once (Q + N convolutions instead of Q * N), and the sums for every pair
go on through batch norm and the rest, exactly as the concatenated pairs would.
"""

import keras
import tensorflow as tf

from keras_fewshot.backbones.chain import build_chain
from keras_fewshot.backbones.conv4 import Conv4Embedding


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RelationModule(keras.layers.Layer):
    """Query maps [B, Q, h, w, C] and class maps [B, N, h, w, C] -> relation logits
    [B, Q, N] of every (query, class) pair; sigmoid gives r in [0, 1]."""

    def __init__(self, filters=64, hidden_units=8, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.hidden_units = int(hidden_units)
        self.convs = Conv4Embedding(self.filters, blocks=2, name="blocks")
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="fc1")
        self.score = keras.layers.Dense(1, name="fc2")

    def build(self, pairs_shape):
        """pairs_shape: [M, h, w, 2C], the concatenated pair maps the first conv reads."""
        build_chain([self.convs, self.hidden, self.score], pairs_shape)

    def call(self, query_maps, class_maps, training=False):
        first_conv, *rest = self.convs.block_layers
        channels = query_maps.shape[-1]
        shape = tf.shape(query_maps)
        batch, queries, ways = shape[0], shape[1], tf.shape(class_maps)[1]

        def half_conv(maps, kernel):  # [B, M, h, w, C] -> [B, M, h, w, F]
            flat = tf.reshape(maps, tf.concat([[-1], tf.shape(maps)[2:]], 0))
            out = tf.nn.conv2d(flat, kernel, strides=1, padding="SAME")
            return tf.reshape(out, tf.concat([tf.shape(maps)[:2], tf.shape(out)[1:]], 0))

        # expand_dims rather than [:, None]: TFLite builtins for any sizes
        x = (tf.expand_dims(half_conv(query_maps, first_conv.kernel[:, :, :channels]), 2)
             + tf.expand_dims(half_conv(class_maps, first_conv.kernel[:, :, channels:]), 1)
             + first_conv.bias)                                     # [B, Q, N, h, w, F]
        x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[3:]], 0))    # pairs [B * Q * N, ...]
        for layer in rest:
            x = layer(x, training=training)
        logits = tf.squeeze(self.score(self.hidden(x)), axis=-1)
        return tf.reshape(logits, tf.stack([batch, queries, ways]))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "hidden_units": self.hidden_units}
