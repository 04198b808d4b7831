"""Meta Networks (Munkhdalai & Yu 2017): fast weights from loss gradients, and the layers
that generate, store, read and use them (the paper's Algorithm 1).

  meta information     the gradient of a loss with respect to a layer's slow weights,
                       preprocessed coordinate by coordinate as (log|g| / p, sign g) when
                       |g| >= e^-p, else (-1, e^p g) (Andrychowicz et al. 2016; MetaNet's
                       code uses p = 7)
  F (task level)       theta+ = F({grad_theta L_emb_t}_{t=1..T}): an LSTM over the gradients
                       of a verification loss on T support pairs -> fast weights of u
  G (example level)    phi+_i = G(grad_phi L_task_i): an MLP over the gradient of support
                       example i's loss -> its fast weights, stored as M_i under key R_i = r'_i
  memory read          phi+_j = softmax_i(cosine(r_j, R_i))^T M for query j
  layer augmentation   y = act(x W) + act(x W+): slow and fast weights in parallel branches
                       summed element-wise after the activation (ReLU); an output layer
                       without activation sums its pre-activations

F and G are coordinate-wise, as in the paper: every coordinate of a kernel is one input
(batch row) to the same small network, so they fit any kernel shape. Their read-outs start
small, so training starts close to the slow network and grows the fast weights, but not at
zero, where nothing upstream of a read-out would get a gradient:
  * G's read-out starts as the constant 0.01 (zero kernel): G feeds the ReLU branch
    relu(x W+), which an all-zero W+ would leave without gradient for good, and on
    non-negative features x (conv4 after ReLU) a small positive W+ keeps it active;
  * F's read-out starts with a small random kernel (normal, stddev 0.01): F feeds a linear
    layer, and F and the verification head below it get a gradient from the first step.
"""

import keras
import tensorflow as tf

from keras_fewshot.backbones.chain import build_chain
from keras_fewshot.layers.meta_lstm import preprocess_gradient


def per_example_kernel_gradients(inputs, pre_activation_gradients):
    """The gradient of each row's loss with respect to a dense kernel.

    For z_m = x_m W and a loss L = sum_m L_m in which L_m depends on z_m alone,
    dL_m/dW = x_m^T (dL/dz_m): inputs [B, M, I], dL/dz [B, M, O] -> [B, M, I, O].
    """
    return tf.einsum("bmi,bmo->bmio", inputs, pre_activation_gradients)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class AugmentedDense(keras.layers.Layer):
    """Layer augmentation (Munkhdalai & Yu 2017, fig. 2): act(x W) + act(x W+).

    inputs [B, M, I] with fast weights W+ of one task [B, I, O] or of each row [B, M, I, O]
    -> [B, M, O]. `active_units` keeps the first n output units (the base learner's softmax
    over the N classes of an episode, of at most `units`).
    """

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation_name = activation
        self.activation = keras.activations.get(activation)

    def build(self, inputs_shape, fast_kernel_shape=None):
        # cast by `slow_pre_activation` to this layer's compute dtype, not to its caller's
        self.kernel = self.add_weight(shape=(inputs_shape[-1], self.units),
                                      initializer="glorot_uniform", name="kernel",
                                      autocast=False)

    def slow_pre_activation(self, inputs, active_units=None):
        """x W with the slow weights alone: [B, M, I] -> [B, M, O or active_units]."""
        kernel = tf.cast(self.kernel[:, :active_units], self.compute_dtype)
        return tf.einsum("bmi,io->bmo", inputs, kernel)

    def call(self, inputs, fast_kernel, active_units=None):
        slow = self.slow_pre_activation(inputs, active_units)
        if fast_kernel.shape.rank == 3:
            fast = tf.einsum("bmi,bio->bmo", inputs, fast_kernel)
        elif fast_kernel.shape.rank == 4:
            fast = tf.einsum("bmi,bmio->bmo", inputs, fast_kernel)
        else:
            raise ValueError(f"fast_kernel must be [B, I, O] or [B, M, I, O], got "
                             f"{fast_kernel.shape}")
        return self.activation(slow) + self.activation(fast)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class FastWeightGenerator(keras.layers.Layer):
    """G (Munkhdalai & Yu 2017, Algorithm 1): phi+_i = G(grad_phi L_task_i).

    Coordinate-wise: each gradient entry, preprocessed to 2 numbers, goes through the same
    MLP (2 -> hidden -> ... -> 1, ReLU between): gradients [...] -> fast weights [...].
    """

    def __init__(self, hidden_units=20, hidden_layers=2, p=7.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.hidden_layers = int(hidden_layers)
        self.p = float(p)
        dtype = self.dtype_policy  # this layer's (sublayers take the global policy otherwise)
        self.mlp = [keras.layers.Dense(self.hidden_units, activation="relu", name=f"hidden{i}",
                                       dtype=dtype)
                    for i in range(self.hidden_layers)]
        self.mlp.append(keras.layers.Dense(
            1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(0.01),
            name="fast_weight", dtype=dtype))

    def build(self, gradients_shape=None):
        build_chain(self.mlp, (None, 2))

    def call(self, gradients):
        x = tf.reshape(preprocess_gradient(gradients, self.p), (-1, 2))
        for layer in self.mlp:
            x = layer(x)
        return tf.reshape(x, tf.shape(gradients))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "hidden_layers": self.hidden_layers, "p": self.p}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class TaskFastWeightLSTM(keras.layers.Layer):
    """F (Munkhdalai & Yu 2017, Algorithm 1): theta+ = F(grad L_emb_1, ..., grad L_emb_T).

    Coordinate-wise: the T preprocessed gradients of one kernel coordinate are a sequence
    through the same LSTM; a linear read-out of its last output is that coordinate's fast
    weight. gradients [B, T, *kernel] -> task-level fast weights [B, *kernel].
    """

    def __init__(self, units=20, p=7.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.p = float(p)
        dtype = self.dtype_policy  # this layer's (sublayers take the global policy otherwise)
        self.lstm = keras.layers.LSTM(self.units, name="lstm", dtype=dtype)
        self.readout = keras.layers.Dense(
            1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="fast_weight", dtype=dtype)

    def build(self, gradients_shape=None):
        self.lstm.build((None, None, 2))
        self.readout.build((None, self.units))

    def call(self, gradients):
        shape = tf.shape(gradients)
        batch, steps = shape[0], shape[1]
        flat = tf.reshape(gradients, (batch, steps, -1))              # [B, T, P]
        sequences = tf.transpose(preprocess_gradient(flat, self.p), (0, 2, 1, 3))
        sequences = tf.reshape(sequences, (-1, steps, 2))             # [B * P, T, 2]
        fast = self.readout(self.lstm(sequences))                     # [B * P, 1]
        return tf.reshape(fast, tf.concat([[batch], shape[2:]], axis=0))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "p": self.p}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class FastWeightMemoryRead(keras.layers.Layer):
    """The memory read (Munkhdalai & Yu 2017, Algorithm 1): a_j = cosine(R, r_j),
    phi+_j = softmax(a_j)^T M.

    keys R [B, S, D] (support representations r'_i), values M [B, S, P] (their fast weights,
    flattened), query keys r [B, Q, D] -> fast weights [B, Q, P] for each query.
    """

    def call(self, keys, values, query_keys):
        similarity = tf.einsum("bqd,bsd->bqs", tf.math.l2_normalize(query_keys, axis=-1),
                               tf.math.l2_normalize(keys, axis=-1))
        return tf.einsum("bqs,bsp->bqp", tf.nn.softmax(similarity, axis=-1), values)
