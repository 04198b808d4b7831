"""The LSTM meta-learner of Ravi & Larochelle (2017): an LSTM whose cell state is the learner.

Every coordinate of the learner's flat parameter vector theta is one "unit", and all units
share the meta-learner's weights (Andrychowicz et al. 2016). One update, for each coordinate:

    x_t = [pre(grad_t), pre(L_t)]                       Andrychowicz et al. 2016, appendix A
    h_t, s_t = LSTM(x_t, (h_{t-1}, s_{t-1}))            first layer, `hidden_units` (paper: 20)
    f_t = sigmoid(w_f . [h_t, theta_{t-1}, f_{t-1}] + b_f)         Ravi & Larochelle, eq. 2
    i_t = sigmoid(w_i . [h_t, theta_{t-1}, i_{t-1}] + b_i)
    theta_t = f_t * theta_{t-1} + i_t * (-grad_t)                  eq. 2 (c_t = theta_t)

with grad_t = the gradient of the learner's loss L_t at theta_{t-1}, and pre(x) = (log|x| / p,
sign x) if |x| >= e^-p else (-1, e^p x). Whether L_t and grad_t are constants to the
meta-gradient (the paper's simplification) is the caller's choice (keras_fewshot.meta.MetaLSTM).
"""

import math

import keras
import tensorflow as tf


def preprocess_gradient(x, p=10.0):
    """Andrychowicz et al. (2016), appendix A: any shape [...] -> [..., 2].

    Large values (|x| >= e^-p) become (log|x| / p, sign x), small ones (-1, e^p x), so
    magnitudes spanning many orders fit an LSTM's input range and the sign is kept.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    threshold = math.exp(-p)
    large = tf.abs(x) >= threshold
    log_magnitude = tf.math.log(tf.maximum(tf.abs(x), threshold)) / p
    return tf.stack([tf.where(large, log_magnitude, -tf.ones_like(x)),
                     tf.where(large, tf.sign(x), math.exp(p) * x)], axis=-1)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MetaLearnerLSTM(keras.layers.Layer):
    """One meta-learner update (theta [P], grad [P], loss [], state) -> (theta', state').

    The state is (h [P, H], s [P, H], f [P], i [P]); `initial_state(theta)` gives zeros, so
    f_0 = i_0 = 0. The gate biases start at `forget_bias` (f close to 1) and `input_bias` (a
    small learning rate), the midpoints of the paper's initial ranges (4, 6) and (-5, -4);
    the gate kernels start uniform in +-`gate_init_scale`.
    """

    def __init__(self, hidden_units=20, p=10.0, forget_bias=5.0, input_bias=-4.5,
                 gate_init_scale=0.01, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.p = float(p)
        self.forget_bias_init = float(forget_bias)
        self.input_bias_init = float(input_bias)
        self.gate_init_scale = float(gate_init_scale)
        # in this layer's dtype (sublayers take the global policy otherwise)
        self.first_layer = keras.layers.LSTMCell(self.hidden_units, name="first_lstm",
                                                 dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.first_layer.build((None, 4))  # [pre(grad), pre(loss)]
        gate_inputs = self.hidden_units + 2  # [h_t, theta_{t-1}, gate_{t-1}]
        kernel_init = keras.initializers.RandomUniform(-self.gate_init_scale,
                                                       self.gate_init_scale)
        self.forget_kernel = self.add_weight(shape=(gate_inputs,), initializer=kernel_init,
                                             name="forget_kernel")
        self.forget_bias = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.forget_bias_init),
            name="forget_bias")
        self.input_kernel = self.add_weight(shape=(gate_inputs,), initializer=kernel_init,
                                            name="input_kernel")
        self.input_bias = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.input_bias_init),
            name="input_bias")

    def initial_state(self, theta):
        """Zero state for parameters theta [P] (P static): (h [P, H], s [P, H], f [P], i [P])."""
        hidden = tf.zeros((theta.shape[0], self.hidden_units), theta.dtype)
        gate = tf.zeros_like(theta)
        return hidden, hidden, gate, gate

    def call(self, theta, gradient, loss, state):
        h, s, forget, input_gate = state
        loss = preprocess_gradient(tf.cast(loss, theta.dtype), self.p)
        x = tf.concat([preprocess_gradient(gradient, self.p),
                       tf.broadcast_to(loss, (theta.shape[0], 2))], axis=-1)
        h, (h, s) = self.first_layer(x, (h, s))
        forget = self._gate(self.forget_kernel, self.forget_bias, h, theta, forget)
        input_gate = self._gate(self.input_kernel, self.input_bias, h, theta, input_gate)
        theta = forget * theta - input_gate * gradient
        return theta, (h, s, forget, input_gate)

    @staticmethod
    def _gate(kernel, bias, h, theta, previous):
        """sigmoid(kernel . [h, theta, previous] + bias) for every coordinate: [P]."""
        return tf.sigmoid(tf.linalg.matvec(h, kernel[:-2]) + kernel[-2] * theta
                          + kernel[-1] * previous + bias)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "p": self.p,
                "forget_bias": self.forget_bias_init, "input_bias": self.input_bias_init,
                "gate_init_scale": self.gate_init_scale}
