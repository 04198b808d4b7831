"""The conv4 embedding of Vinyals et al. (2016), Snell et al. (2017) and Sung et al. (2018).

Blocks of [3x3 conv (64 filters, same padding), batch norm, ReLU, 2x2 max pool]. The
Prototypical / Matching Networks version pools in all four blocks (28x28 -> 64 features);
the Relation Network's embedding module pools in the first two only and keeps the feature
maps (28x28 -> 7x7x64).

Built under a tf.distribute strategy with several replicas, batch norm takes its statistics
over the whole global batch (synchronized), as on one device; `synchronized=False` keeps them
per call on each replica, for models whose batches are per task anyway (MAML's inner loop).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_fewshot")
class Conv4Embedding(keras.layers.Layer):
    """float32 [M, H, W, C] -> [M, D] (flatten=True) or feature maps [M, h, w, filters]."""

    def __init__(self, filters=64, blocks=4, pooled_blocks=None, flatten=True,
                 synchronized=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.blocks = int(blocks)
        self.pooled_blocks = self.blocks if pooled_blocks is None else int(pooled_blocks)
        self.flatten = bool(flatten)
        self.synchronized = synchronized  # None: when built under several replicas
        if synchronized is None:
            synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.block_layers = []
        for i in range(self.blocks):
            self.block_layers += [
                keras.layers.Conv2D(self.filters, 3, padding="same", name=f"conv{i}"),
                keras.layers.BatchNormalization(name=f"bn{i}", synchronized=bool(synchronized)),
                keras.layers.ReLU(name=f"relu{i}"),
            ]
            if i < self.pooled_blocks:
                self.block_layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
        if self.flatten:
            self.block_layers.append(keras.layers.Flatten(name="flatten"))

    def build(self, input_shape):
        shape = input_shape
        for layer in self.block_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, x, training=False):
        for layer in self.block_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self.block_layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "blocks": self.blocks,
                "pooled_blocks": self.pooled_blocks, "flatten": self.flatten,
                "synchronized": self.synchronized}
