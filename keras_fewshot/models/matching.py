"""Matching Networks (Vinyals et al. 2016): cosine attention over the support set.

`fce=True` adds full context embeddings: g = bidirectional LSTM over the support embeddings
plus a skip connection, f = attention LSTM reading g(S) for `fce_steps` steps. Without FCE,
f = g = the backbone (conv4 by default, the paper's).
"""

import keras
import tensorflow as tf

from keras_fewshot.layers import (CosineAttentionClassifier, QueryAttentionEmbedding,
                                  SupportContextEmbedding)
from keras_fewshot.models.components import ImageModelMixin, make_backbone
from keras_fewshot.models.metric import MetricClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MatchingNetwork(ImageModelMixin, MetricClassifier):
    """Any N, any shots; with FCE the support order is read by the bidirectional LSTM. The
    support code is g(S) (after the support context with FCE) and the one-hot labels."""

    code_ranks = {"support_embeddings": 2, "support_onehot": 2}

    def __init__(self, image_size=28, filters=None, fce=False, fce_steps=5, scale=1.0,
                 backbone="conv4", preprocessor="ink", **kwargs):
        super().__init__(**kwargs)
        shape = self.set_preprocessor(image_size, preprocessor, backbone, filters)
        self.fce = bool(fce)
        self.fce_steps = int(fce_steps)
        self.scale = float(scale)
        self.embedding, features = make_backbone(backbone, shape, self.filters)
        self.head = CosineAttentionClassifier(self.scale, name="head")
        if self.fce:
            dim = features[-1]
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
        return {**super().get_config(), **self.image_parts_config(self.embedding),
                "fce": self.fce, "fce_steps": self.fce_steps, "scale": self.scale}
