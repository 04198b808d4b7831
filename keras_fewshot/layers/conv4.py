"""The conv4 embedding of Vinyals et al. (2016) and Snell et al. (2017).

Four blocks of [3x3 conv (64 filters), batch norm, ReLU, 2x2 max pool]; 28x28 -> 64 features.
"""

import keras


@keras.saving.register_keras_serializable(package="keras_fewshot")
class Conv4Embedding(keras.layers.Layer):
    """float32 [M, H, W, C] -> float32 [M, D] (D = filters * remaining spatial size)."""

    def __init__(self, filters=64, blocks=4, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.blocks = int(blocks)
        self.block_layers = []
        for i in range(self.blocks):
            self.block_layers += [
                keras.layers.Conv2D(self.filters, 3, padding="same", name=f"conv{i}"),
                keras.layers.BatchNormalization(name=f"bn{i}"),
                keras.layers.ReLU(name=f"relu{i}"),
                keras.layers.MaxPooling2D(2, name=f"pool{i}"),
            ]
        self.flatten = keras.layers.Flatten()

    def build(self, input_shape):
        shape = input_shape
        for layer in self.block_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.flatten.build(shape)

    def call(self, x, training=False):
        for layer in self.block_layers:
            x = layer(x, training=training)
        return self.flatten(x)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self.block_layers:
            shape = layer.compute_output_shape(shape)
        return self.flatten.compute_output_shape(shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "blocks": self.blocks}
