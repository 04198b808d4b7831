"""Matching Networks (Vinyals et al. 2016): cosine attention over the support set.

`fce=True` adds full context embeddings: g = bidirectional LSTM over the support embeddings
plus a skip connection, f = attention LSTM reading g(S) for `fce_steps` steps. Without FCE,
f = g = the conv4 embedding.
"""

import keras

from keras_fewshot.layers import (Conv4Embedding, CosineAttentionClassifier, ImagePreprocessing,
                                  QueryAttentionEmbedding, SupportContextEmbedding)
import tensorflow as tf

from keras_fewshot.models.metric import MetricClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MatchingNetwork(MetricClassifier):
    """Any N, any shots; with FCE the support order is read by the bidirectional LSTM. The
    support code is g(S) (after the support context with FCE) and the one-hot labels."""

    code_ranks = {"support_embeddings": 2, "support_onehot": 2}

    def __init__(self, image_size=28, filters=64, fce=False, fce_steps=5, scale=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.filters = int(filters)
        self.fce = bool(fce)
        self.fce_steps = int(fce_steps)
        self.scale = float(scale)
        self.preprocess = ImagePreprocessing(self.image_size, name="preprocess")
        self.embedding = Conv4Embedding(self.filters, name="embedding")
        self.head = CosineAttentionClassifier(self.scale, name="head")
        shape = (None, self.image_size, self.image_size, 1)
        self.embedding.build(shape)
        if self.fce:
            dim = self.embedding.compute_output_shape(shape)[-1]
            self.support_context = SupportContextEmbedding(name="support_context")
            self.query_attention = QueryAttentionEmbedding(self.fce_steps,
                                                           name="query_attention")
            self.support_context.build((None, None, dim))
            self.query_attention.build((None, None, dim), (None, None, dim))
        self.built = True

    def support_code(self, support_features, support_labels, num_classes, training=False):
        g = (self.support_context(support_features, training=training) if self.fce
             else support_features)
        return {"support_embeddings": g,
                "support_onehot": tf.one_hot(support_labels, num_classes, dtype=g.dtype)}

    def code_logits(self, code, query_features, training=False):
        g = code["support_embeddings"]
        f = self.query_attention(query_features, g) if self.fce else query_features
        return self.head.logits(f, g, code["support_onehot"])

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "filters": self.filters,
                "fce": self.fce, "fce_steps": self.fce_steps, "scale": self.scale}
