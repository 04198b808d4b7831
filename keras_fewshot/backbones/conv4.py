"""The conv4 embedding of Vinyals et al. (2016), Snell et al. (2017) and Sung et al. (2018).

Blocks of [3x3 conv (64 filters, same padding), batch norm, ReLU, 2x2 max pool]. The
Prototypical / Matching Networks version pools in all four blocks (28x28 -> 64 features);
the Relation Network's embedding module pools in the first two only and keeps the feature
maps (28x28 -> 7x7x64). A pooled block applies its ReLU after the pool: max pooling and ReLU
commute (both are monotone), and the ReLU then runs on a quarter of the values.

Batch norm runs as TensorFlow's fused kernel (this module's `BatchNormalization`): in a
60-way 5-shot 5-query ProtoNet training step, Keras's op-by-op batch norm took half of the
CPU time.

Built under a tf.distribute strategy with several replicas, batch norm takes its statistics
over the whole global batch (synchronized), as on one device; `synchronized=False` keeps them
per call on each replica, for models whose batches are per task anyway (MAML's inner loop).
"""

import keras
import tensorflow as tf

from keras_fewshot.backbones.chain import build_chain, chain_output_shape


@keras.saving.register_keras_serializable(package="keras_fewshot")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras's batch norm (Ioffe & Szegedy 2015, Algorithm 1: y = gamma (x - mean) /
    sqrt(var + eps) + beta, with moving averages of the batch mean and biased variance), run
    on [M, H, W, C] maps as one `FusedBatchNormV3` kernel and its gradient kernel, which has a
    gradient of its own (second-order MAML). The same weights and results as the Keras layer;
    synchronized statistics across replicas, masks and other ranks or axes use the Keras
    layer's computation. It keeps the Keras class name because weights files key a list's
    layers by class name: files written with the Keras layer load into this one.

    `fused_training=False` computes training-mode batch norm op by op, as Keras does but with
    exact second derivatives (`_moments`). Both paths give second-order MAML its exact
    meta-gradient (tests/test_maml_second_order.py; on a small conv4 and ResNet-12 learner
    the fused kernel's float32 meta-gradient is within 3e-6 of the float64 one); the fused
    kernel is the faster."""

    def __init__(self, fused_training=True, **kwargs):
        super().__init__(**kwargs)
        self.fused_training = bool(fused_training)

    def call(self, inputs, training=None, mask=None):
        if (self.synchronized or mask is not None or len(inputs.shape) != 4
                or (training and not self.fused_training)
                or self.axis not in (-1, 3) or not (self.scale and self.center)
                or inputs.dtype not in (tf.float32, tf.bfloat16, tf.float16)):
            return super().call(inputs, training=training, mask=mask)
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if not (training and self.trainable):
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=False)
            return tf.cast(outputs, self.compute_dtype)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (count - 1.0) / count  # the kernel's is Bessel-corrected
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)

    def _moments(self, inputs, mask):
        """The batch mean and biased variance of the op-by-op path (Keras's hook), the
        variance differentiated through the mean as well. tf.nn.moments, which Keras uses,
        stops the mean's gradient there: exact to first order, where var's derivative in the
        mean is zero, but it drops -2/n^2 from every second derivative, so second-order MAML's
        meta-gradient was wrong by up to the size of its second-order part."""
        if mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        mean = tf.reduce_mean(inputs, self._reduction_axes, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(inputs, mean),
                                  self._reduction_axes, keepdims=True)
        return (tf.squeeze(mean, self._reduction_axes),
                tf.squeeze(variance, self._reduction_axes))

    def folded_conv(self, conv, inputs):
        """`conv` (a linear, stride-1, 'same' Conv2D) and then this layer in inference mode,
        as one convolution: kernel * s and (bias - moving mean) * s + beta, with
        s = gamma / sqrt(moving variance + eps), folded in float32 and computed in the conv's
        compute dtype (bf16 under mixed_bfloat16)."""
        scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        bias = (conv.bias - self.moving_mean) * scale + self.beta
        dtype = conv.compute_dtype
        return tf.nn.bias_add(tf.nn.conv2d(tf.cast(inputs, dtype),
                                           tf.cast(conv.kernel * scale, dtype), 1, "SAME"),
                              tf.cast(bias, dtype))

    def get_config(self):
        return {**super().get_config(), "fused_training": self.fused_training}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class Conv4Embedding(keras.layers.Layer):
    """float32 [M, H, W, C] -> [M, D] (flatten=True) or feature maps [M, h, w, filters]."""

    takes_model_filters = True  # a model's `filters` argument is this backbone's width

    def __init__(self, filters=64, blocks=4, pooled_blocks=None, flatten=True,
                 synchronized=None, fused_training_batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.blocks = int(blocks)
        self.pooled_blocks = self.blocks if pooled_blocks is None else int(pooled_blocks)
        self.flatten = bool(flatten)
        self.synchronized = synchronized  # None: when built under several replicas
        self.fused_training_batch_norm = bool(fused_training_batch_norm)
        if synchronized is None:
            synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.block_layers = []
        for i in range(self.blocks):
            self.block_layers += [
                keras.layers.Conv2D(self.filters, 3, padding="same", name=f"conv{i}"),
                BatchNormalization(name=f"bn{i}", synchronized=bool(synchronized),
                                   fused_training=self.fused_training_batch_norm),
            ]
            if i < self.pooled_blocks:
                self.block_layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
            self.block_layers.append(keras.layers.ReLU(name=f"relu{i}"))
        if self.flatten:
            self.block_layers.append(keras.layers.Flatten(name="flatten"))

    @classmethod
    def for_model(cls, feature_map=False, relation=False, **options):
        """A model's conv4: flattened, or maps for a head that reads them (`feature_map`);
        for the Relation Network's embedding module, pooled in the first two blocks only and
        maps kept (Sung et al. 2018, sec. 3.4: 28x28 -> 7x7x64)."""
        if relation:
            return cls(pooled_blocks=2, flatten=False, **options)
        return cls(flatten=not feature_map, **options)

    def build(self, input_shape):
        build_chain(self.block_layers, input_shape)

    def call(self, x, training=False):
        layers = iter(self.block_layers)
        for layer in layers:
            if isinstance(layer, keras.layers.Conv2D) and not training:
                x = next(layers).folded_conv(layer, x)  # inference: batch norm in the conv
            else:
                x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return chain_output_shape(self.block_layers, input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "blocks": self.blocks,
                "pooled_blocks": self.pooled_blocks, "flatten": self.flatten,
                "synchronized": self.synchronized,
                "fused_training_batch_norm": self.fused_training_batch_norm}
