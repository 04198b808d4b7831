"""Prototypical head (Snell, Swersky & Zemel 2017, eqs. 1-2).

c_k = mean of the support embeddings of class k; logits_k(x) = -d(f(x), c_k), with d the
squared Euclidean distance (the paper's choice) or, as an option, scaled cosine similarity.
"""

import keras
import tensorflow as tf

DISTANCES = ("squared_euclidean", "cosine")


def class_means(support_embeddings, support_labels, num_classes):
    """[B, S, D], [B, S] ints, N -> [B, N, D] per-class mean (uneven shots allowed)."""
    onehot = tf.one_hot(support_labels, num_classes, dtype=support_embeddings.dtype)
    sums = tf.einsum("bsn,bsd->bnd", onehot, support_embeddings)
    counts = tf.reduce_sum(onehot, axis=1)[..., None]
    return sums / tf.maximum(counts, 1.0)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class PrototypicalHead(keras.layers.Layer):
    """(support [B,S,D], labels [B,S], query [B,Q,D], N) -> logits [B,Q,N]."""

    def __init__(self, distance="squared_euclidean", cosine_scale=10.0, **kwargs):
        super().__init__(**kwargs)
        if distance not in DISTANCES:
            raise ValueError(f"Unknown distance {distance!r}; expected one of {DISTANCES}")
        self.distance = distance
        self.cosine_scale = float(cosine_scale)

    def call(self, support_embeddings, support_labels, query_embeddings, num_classes):
        return self.logits(class_means(support_embeddings, support_labels, num_classes),
                           query_embeddings)

    def logits(self, prototypes, query_embeddings):
        """(prototypes [B, N, D], query [B, Q, D]) -> logits [B, Q, N]."""
        if self.distance == "cosine":
            q = tf.math.l2_normalize(query_embeddings, axis=-1)
            p = tf.math.l2_normalize(prototypes, axis=-1)
            return self.cosine_scale * tf.einsum("bqd,bnd->bqn", q, p)
        # expand_dims rather than [:, None]: a TFLite builtin for any sizes
        diff = tf.expand_dims(query_embeddings, 2) - tf.expand_dims(prototypes, 1)
        return -tf.reduce_sum(tf.square(diff), axis=-1)

    def get_config(self):
        return {**super().get_config(), "distance": self.distance,
                "cosine_scale": self.cosine_scale}
