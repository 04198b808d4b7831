"""The memory-augmented cell of Santoro et al. (2016, sec. 3.1): an LSTM controller with an
external memory read by content and written by Least Recently Used Access (LRUA).

At step t, with H read heads, memory M [S, W] and usage w_u [S]:
  h_t, c_t = LSTM([x_t; r_{t-1}], h_{t-1}, c_{t-1})
  k_t^h = tanh(W_k h_t + b_k),  alpha_t^h = W_a h_t + b_a          (one key and gate per head)
  w_r^h(t)(i) = softmax_i(cosine(k_t^h, M_{t-1}(i))),  r_t^h = sum_i w_r^h(t)(i) M_{t-1}(i)
  w_lu(t-1)(i) = 1 if w_u(t-1)(i) is among the H smallest usages, else 0
  w_w^h(t) = sigma(alpha_t^h) w_r^h(t-1) + (1 - sigma(alpha_t^h)) w_lu(t-1)
  M_{t-1}(argmin_i w_u(t-1)(i)) <- 0          (the least-used location is zeroed, then written)
  M_t(i) = M_{t-1}(i) + sum_h w_w^h(t)(i) k_t^h
  w_u(t) = gamma w_u(t-1) + sum_h w_r^h(t) + sum_h w_w^h(t)
and the cell outputs [h_t; r_t^1 .. r_t^H]. The memory starts at 1e-6 everywhere (so every
cosine is defined), read weights and usage at 0; ties among usages go to the lower index.

With `key_strength=True` each head also learns the NTM's key strength (Graves et al. 2014,
eq. 5), beta_t^h = softplus(W_b h_t + b_b), starting at 1 (W_b = 0: the paper's read), and
reads w_r^h(t)(i) = softmax_i(beta_t^h cosine(k_t^h, M_{t-1}(i))). A cosine lies in [-1, 1], so
without it the read softmax over 128 rows stays nearly flat: a row matching the key exactly
gets at most e^2 times the weight of an opposite one.

The read addresses the memory as the previous steps left it. The paper's equations leave the
order open; reading after this step's write would find k_t itself in the row just written
(cosine 1), an echo of the key rather than anything stored before.
"""

import keras
import tensorflow as tf

MEMORY_INIT = 1e-6
COSINE_EPSILON = 1e-12  # floor of the squared norms in the cosine similarity
SOFTPLUS_INVERSE_OF_1 = 0.5413248546129181  # log(e - 1): a key strength starts at 1


def cosine_similarity(keys, memory):
    """[B, H, W] keys, [B, S, W] memory -> [B, H, S] cosine of every key with every row."""
    keys = tf.math.l2_normalize(keys, axis=-1, epsilon=COSINE_EPSILON)
    memory = tf.math.l2_normalize(memory, axis=-1, epsilon=COSINE_EPSILON)
    return tf.einsum("bhw,bsw->bhs", keys, memory)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class LRUAMemoryCell(keras.layers.Layer):
    """An RNN cell for `keras.layers.RNN`: input [B, D] -> output [B, units + H * W].

    States (flat, in order): h [units], c [units], memory [S * W], reads [H * W],
    read weights [H * S], usage [S].
    """

    def __init__(self, units=200, memory_size=128, word_size=40, read_heads=4, gamma=0.95,
                 key_strength=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.memory_size = int(memory_size)
        self.word_size = int(word_size)
        self.read_heads = int(read_heads)
        self.gamma = float(gamma)
        self.key_strength = bool(key_strength)
        if self.read_heads > self.memory_size:
            raise ValueError(f"read_heads ({self.read_heads}) must not exceed memory_size "
                             f"({self.memory_size}): w_lu marks read_heads locations")
        self.controller = keras.layers.LSTMCell(self.units, name="controller")
        self.key_layer = keras.layers.Dense(self.read_heads * self.word_size,
                                            activation="tanh", name="keys")
        self.gate_layer = keras.layers.Dense(self.read_heads, name="write_gates")
        self.strength_layer = keras.layers.Dense(
            self.read_heads, activation="softplus", name="key_strengths",
            kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(SOFTPLUS_INVERSE_OF_1)
        ) if self.key_strength else None
        heads, size, word = self.read_heads, self.memory_size, self.word_size
        self.state_size = [self.units, self.units, size * word, heads * word, heads * size,
                           size]
        self.output_size = self.units + heads * word

    def build(self, input_shape):
        self.controller.build((input_shape[0], input_shape[-1] + self.read_heads
                               * self.word_size))
        self.key_layer.build((input_shape[0], self.units))
        self.gate_layer.build((input_shape[0], self.units))
        if self.strength_layer is not None:
            self.strength_layer.build((input_shape[0], self.units))

    def get_initial_state(self, batch_size=None):
        states = [tf.zeros([batch_size, size]) for size in self.state_size]
        states[2] = tf.fill([batch_size, self.state_size[2]], MEMORY_INIT)
        return states

    def call(self, inputs, states, training=False):
        h, c, memory, reads, read_weights, usage = states
        heads, size, word = self.read_heads, self.memory_size, self.word_size
        memory = tf.reshape(memory, [-1, size, word])
        read_weights = tf.reshape(read_weights, [-1, heads, size])
        output, (h, c) = self.controller(tf.concat([inputs, reads], axis=-1), [h, c],
                                         training=training)
        keys = tf.reshape(self.key_layer(output), [-1, heads, word])
        gates = tf.sigmoid(self.gate_layer(output))[..., None]  # sigma(alpha) [B, H, 1]
        # Content-based read of M_{t-1}.
        similarity = cosine_similarity(keys, memory)
        if self.strength_layer is not None:
            similarity = self.strength_layer(output)[..., None] * similarity  # beta [B, H, 1]
        new_read_weights = tf.nn.softmax(similarity, axis=-1)
        reads = tf.reshape(tf.einsum("bhs,bsw->bhw", new_read_weights, memory),
                           [-1, heads * word])
        # LRUA write: the H least-used locations of w_u(t-1), ascending (ties: lower index).
        least_used = tf.math.top_k(-usage, k=heads).indices  # [B, H]
        least_used_weights = tf.reduce_sum(tf.one_hot(least_used, size), axis=1)  # w_lu
        write_weights = gates * read_weights + (1.0 - gates) * least_used_weights[:, None]
        memory = memory * (1.0 - tf.one_hot(least_used[:, 0], size))[..., None]
        memory = memory + tf.einsum("bhs,bhw->bsw", write_weights, keys)
        read_weights = new_read_weights
        usage = (self.gamma * usage + tf.reduce_sum(read_weights, axis=1)
                 + tf.reduce_sum(write_weights, axis=1))
        states = [h, c, tf.reshape(memory, [-1, size * word]), reads,
                  tf.reshape(read_weights, [-1, heads * size]), usage]
        return tf.concat([h, reads], axis=-1), states

    def get_config(self):
        return {**super().get_config(), "units": self.units, "memory_size": self.memory_size,
                "word_size": self.word_size, "read_heads": self.read_heads,
                "gamma": self.gamma, "key_strength": self.key_strength}
