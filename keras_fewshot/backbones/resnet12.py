"""ResNet-12, the few-shot literature's standard backbone (Lee, Maji, Ravichandran & Soatto
2019, "Meta-Learning with Differentiable Convex Optimization" (MetaOptNet), sec. 4.2).

Four residual blocks. Each block: three [3x3 conv (no bias), batch norm], with a
LeakyReLU(0.1) after the first two; a shortcut of a 1x1 conv (no bias) and batch norm; the
sum, a LeakyReLU(0.1) and a 2x2 max pool (floor, as PyTorch's MaxPool2d). Widths 64-160-320-640.
84x84 images give 5x5x640 maps, 32x32 images 2x2x640. Optional DropBlock (Ghiasi, Lin & Le
2018) after each block's pool, active in training only; MetaOptNet drops with rate 0.1 and
5x5 blocks in the last two blocks, which `drop_rate=0.1, dropblock_size=5` gives (the first two
blocks use plain dropout there, left out here).

`pooled=True` (the default) ends in global average pooling: [M, H, W, C] -> [M, 640], the
embedding of a metric head; `pooled=False` keeps the maps [M, h, w, 640] for a head that reads
them (the Relation Network's relation module).

Batch norm is the conv4 backbone's (`keras_fewshot.backbones.conv4.BatchNormalization`: the
fused kernel, or op by op with `fused_training=False`; both differentiate twice exactly).
"""

import keras
import tensorflow as tf

from keras_fewshot.backbones.chain import build_chain, chain_output_shape
from keras_fewshot.backbones.conv4 import BatchNormalization


@keras.saving.register_keras_serializable(package="keras_fewshot")
class DropBlock(keras.layers.Layer):
    """DropBlock (Ghiasi et al. 2018, Algorithm 1) on [M, H, W, C] maps, per channel: in
    training, zeroes `block_size` x `block_size` squares around centres drawn with probability
    gamma = rate / block_size^2 * HW / ((H - block_size + 1)(W - block_size + 1)) among the
    centres whose square fits, so about `rate` of the values are dropped, then rescales by
    (number of values) / (number kept). The identity outside training or when rate is 0."""

    def __init__(self, rate=0.0, block_size=5, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.block_size = int(block_size)
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"DropBlock rate must be in [0, 1), got {rate}")
        if self.block_size < 1:
            raise ValueError(f"DropBlock block_size must be at least 1, got {block_size}")

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        static = [d for d in x.shape[1:3] if d is not None]
        size = min([self.block_size] + static)  # a square no larger than the maps
        shape = tf.shape(x)
        height, width = shape[1], shape[2]
        valid_h, valid_w = height - size + 1, width - size + 1
        gamma = (self.rate / size ** 2 * tf.cast(height * width, tf.float32)
                 / tf.cast(valid_h * valid_w, tf.float32))
        centres = tf.cast(tf.random.uniform([shape[0], valid_h, valid_w, shape[3]]) < gamma,
                          tf.float32)
        # a centre at c drops [c - size // 2, c + (size - 1) // 2]: the max pool below covers
        # [p - (size - 1) // 2, p + size // 2], so pad the centres to full size accordingly
        centres = tf.pad(centres, [[0, 0], [size // 2, (size - 1) // 2],
                                   [size // 2, (size - 1) // 2], [0, 0]])
        dropped = tf.nn.max_pool2d(centres, size, 1, "SAME")
        keep = 1.0 - dropped
        scale = tf.cast(tf.size(keep), tf.float32) / tf.maximum(tf.reduce_sum(keep), 1.0)
        return x * tf.cast(keep * scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class ResidualBlock(keras.layers.Layer):
    """One ResNet-12 block: [M, H, W, C_in] -> [M, floor(H / 2), floor(W / 2), filters]."""

    def __init__(self, filters, drop_rate=0.0, dropblock_size=5, synchronized=False,
                 fused_training_batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.drop_rate = float(drop_rate)
        self.dropblock_size = int(dropblock_size)
        self.synchronized = bool(synchronized)
        self.fused_training_batch_norm = bool(fused_training_batch_norm)

        def conv(size, name):
            return keras.layers.Conv2D(self.filters, size, padding="same", use_bias=False,
                                       kernel_initializer="he_normal", name=name)

        def norm(name):
            return BatchNormalization(name=name, synchronized=self.synchronized,
                                      fused_training=self.fused_training_batch_norm)

        self.conv1, self.bn1 = conv(3, "conv1"), norm("bn1")
        self.conv2, self.bn2 = conv(3, "conv2"), norm("bn2")
        self.conv3, self.bn3 = conv(3, "conv3"), norm("bn3")
        self.shortcut_conv, self.shortcut_bn = conv(1, "shortcut_conv"), norm("shortcut_bn")
        self.pool = keras.layers.MaxPooling2D(2, name="pool")
        self.dropblock = DropBlock(self.drop_rate, self.dropblock_size, name="dropblock")

    def build(self, input_shape):
        maps = (*input_shape[:-1], self.filters)
        for conv, norm, shape in ((self.conv1, self.bn1, input_shape), (self.conv2, self.bn2, maps),
                                  (self.conv3, self.bn3, maps),
                                  (self.shortcut_conv, self.shortcut_bn, input_shape)):
            conv.build(shape)
            norm.build(maps)

    def call(self, x, training=False):
        y = tf.nn.leaky_relu(self.bn1(self.conv1(x), training=training), 0.1)
        y = tf.nn.leaky_relu(self.bn2(self.conv2(y), training=training), 0.1)
        y = self.bn3(self.conv3(y), training=training)
        y = y + self.shortcut_bn(self.shortcut_conv(x), training=training)
        y = self.pool(tf.nn.leaky_relu(y, 0.1))
        return self.dropblock(y, training=training)

    def compute_output_shape(self, input_shape):
        return self.pool.compute_output_shape((*input_shape[:-1], self.filters))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "drop_rate": self.drop_rate,
                "dropblock_size": self.dropblock_size, "synchronized": self.synchronized,
                "fused_training_batch_norm": self.fused_training_batch_norm}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class ResNet12(keras.layers.Layer):
    """float32 [M, H, W, C] -> [M, filters[-1]] (pooled=True) or maps [M, h, w, filters[-1]].

    filters: the four blocks' widths. drop_rate / dropblock_size / dropblock_blocks: DropBlock
    after the pool of the blocks whose index is in `dropblock_blocks` (default: the last two),
    off when drop_rate is 0 (the default). synchronized: batch statistics over all replicas
    (None: when built under a strategy with several). fused_training_batch_norm: False runs
    training-mode batch norm op by op (see backbones/conv4.py).
    """

    def __init__(self, filters=(64, 160, 320, 640), pooled=True, drop_rate=0.0,
                 dropblock_size=5, dropblock_blocks=(2, 3), synchronized=None,
                 fused_training_batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, (int, float)) or len(filters) != 4:
            raise ValueError(f"ResNet12 filters are the four blocks' widths, e.g. "
                             f"(64, 160, 320, 640); got {filters!r}")
        self.filters = tuple(int(f) for f in filters)
        self.pooled = bool(pooled)
        self.drop_rate = float(drop_rate)
        self.dropblock_size = int(dropblock_size)
        self.dropblock_blocks = tuple(int(i) for i in dropblock_blocks)
        self.synchronized = synchronized
        self.fused_training_batch_norm = bool(fused_training_batch_norm)
        if synchronized is None:
            synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.residual_blocks = [
            ResidualBlock(width, self.drop_rate if i in self.dropblock_blocks else 0.0,
                          self.dropblock_size, bool(synchronized),
                          self.fused_training_batch_norm, name=f"block{i}")
            for i, width in enumerate(self.filters)]

    @classmethod
    def for_model(cls, feature_map=False, relation=False, **options):
        """A model's ResNet-12: pooled to vectors, or maps for a head that reads them
        (`feature_map`; the Relation Network's module reads them as they are, `relation`)."""
        return cls(pooled=not feature_map, **options)

    def build(self, input_shape):
        build_chain(self.residual_blocks, input_shape)

    def call(self, x, training=False):
        for block in self.residual_blocks:
            x = block(x, training=training)
        return tf.reduce_mean(x, axis=[1, 2]) if self.pooled else x

    def compute_output_shape(self, input_shape):
        shape = chain_output_shape(self.residual_blocks, input_shape)
        return (shape[0], shape[-1]) if self.pooled else shape

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters), "pooled": self.pooled,
                "drop_rate": self.drop_rate, "dropblock_size": self.dropblock_size,
                "dropblock_blocks": list(self.dropblock_blocks),
                "synchronized": self.synchronized,
                "fused_training_batch_norm": self.fused_training_batch_norm}
