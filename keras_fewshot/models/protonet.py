"""Prototypical Networks (Snell, Swersky & Zemel 2017): conv4 embedding + prototypical head."""

import keras

from keras_fewshot.layers import Conv4Embedding, ImagePreprocessing, PrototypicalHead
from keras_fewshot.layers.prototypical import class_means
from keras_fewshot.models.metric import MetricClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class PrototypicalNetwork(MetricClassifier):
    """Any N, any (uneven) shots: queries are scored by distance to class-mean prototypes;
    the support code is the prototypes."""

    code_ranks = {"prototypes": 2}

    def __init__(self, image_size=28, filters=64, distance="squared_euclidean", **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.filters = int(filters)
        self.distance = distance
        self.preprocess = ImagePreprocessing(self.image_size, name="preprocess")
        self.embedding = Conv4Embedding(self.filters, name="embedding")
        self.head = PrototypicalHead(distance, name="head")
        self.embedding.build((None, self.image_size, self.image_size, 1))
        self.built = True

    def support_code(self, support_features, support_labels, num_classes, training=False):
        return {"prototypes": class_means(support_features, support_labels, num_classes)}

    def code_logits(self, code, query_features, training=False):
        return self.head.logits(code["prototypes"], query_features)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "filters": self.filters, "distance": self.distance}
