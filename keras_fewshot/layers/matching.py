"""Matching Networks (Vinyals et al. 2016): cosine attention and full context embeddings.

P(y | x, S) = sum_i a(x, x_i) y_i with a(x, x_i) = softmax_i(cosine(f(x), g(x_i))) (eqs. 1-2).
With full context embeddings (FCE, section 2.1.2 and appendix A):
  g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)          a bidirectional LSTM over the support set;
  f(x, S)   = h_K after K read steps of an LSTM with attention over g(S):
      h^_t, c_t = LSTM(f'(x), [h_{t-1}, r_{t-1}], c_{t-1});  h_t = h^_t + f'(x)
      r_t = sum_i softmax_i(h_t . g(x_i)) g(x_i)
Without FCE, f = g = the embedding.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_fewshot")
class CosineAttentionClassifier(keras.layers.Layer):
    """(query f(x) [B,Q,D], support g(x_i) [B,S,D], labels [B,S], N) -> logits [B,Q,N].

    Works in log space: logits_n = log sum_{i: y_i = n} exp(scale * cosine(f(x), g(x_i))),
    so softmax(logits) is exactly the paper's sum of attention over class n. `scale` = 1 is
    the paper's kernel.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, query_embeddings, support_embeddings, support_labels, num_classes):
        return self.logits(query_embeddings, support_embeddings,
                           tf.one_hot(support_labels, num_classes))

    def logits(self, query_embeddings, support_embeddings, support_onehot):
        """The same with the labels one-hot: [B, S, N] (1 where example i is of class n)."""
        q = tf.math.l2_normalize(query_embeddings, axis=-1)
        s = tf.math.l2_normalize(support_embeddings, axis=-1)
        similarity = self.scale * tf.einsum("bqd,bsd->bqs", q, s)
        # expand_dims rather than [:, None] (here and below): TFLite builtins for any sizes
        in_class = tf.expand_dims(support_onehot, 1) > 0.5                       # [B,1,S,N]
        masked = tf.where(in_class, tf.expand_dims(similarity, -1), -1e9)        # [B,Q,S,N]
        return tf.reduce_logsumexp(masked, axis=2)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class SupportContextEmbedding(keras.layers.Layer):
    """g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i): [B, S, D] -> [B, S, D].

    The bidirectional LSTM (D units each way) reads the support set in the order given.
    """

    def build(self, input_shape):
        dim = input_shape[-1]
        self.bilstm = keras.layers.Bidirectional(
            keras.layers.LSTM(dim, return_sequences=True), merge_mode="sum", name="bilstm")
        self.bilstm.build(input_shape)

    def call(self, support_embeddings):
        return self.bilstm(support_embeddings) + support_embeddings


@keras.saving.register_keras_serializable(package="keras_fewshot")
class QueryAttentionEmbedding(keras.layers.Layer):
    """f(x, S) = h_K of an attention LSTM: (f'(x) [B,Q,D], g(S) [B,S,D]) -> [B,Q,D].

    The LSTM's input is f'(x) and its hidden state is [h_{t-1}, r_{t-1}]: the gates read
    [f'(x); h_{t-1}; r_{t-1}] through one kernel [3D, 4D].
    """

    def __init__(self, steps=5, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)

    def build(self, query_embeddings_shape, support_embeddings_shape=None):
        dim = query_embeddings_shape[-1]
        self.kernel = self.add_weight(shape=(3 * dim, 4 * dim), initializer="glorot_uniform",
                                      name="kernel")
        self.bias = self.add_weight(shape=(4 * dim,), name="bias", initializer=keras.initializers
                                    .Constant([0.0] * dim + [1.0] * dim + [0.0] * 2 * dim))

    def call(self, query_embeddings, support_embeddings):
        x = query_embeddings
        h = tf.zeros_like(x)
        c = tf.zeros_like(x)
        for _ in range(self.steps):
            # r_{t-1} reads the support with attention from h_{t-1} (uniform when h_0 = 0).
            attention = tf.nn.softmax(tf.einsum("bqd,bsd->bqs", h, support_embeddings), axis=-1)
            r = tf.einsum("bqs,bsd->bqd", attention, support_embeddings)
            gates = tf.matmul(tf.concat([x, h, r], axis=-1), self.kernel) + self.bias
            i, f, g, o = tf.split(gates, 4, axis=-1)  # input, forget, cell, output gates
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c) + x
        return h

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}
