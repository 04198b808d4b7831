"""Prototypical Networks (Snell, Swersky & Zemel 2017): a backbone (conv4 by default, the
paper's) + prototypical head."""

import keras

from keras_fewshot.layers import PrototypicalHead
from keras_fewshot.layers.prototypical import class_means
from keras_fewshot.models.components import ImageModelMixin, make_backbone
from keras_fewshot.models.metric import MetricClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class PrototypicalNetwork(ImageModelMixin, MetricClassifier):
    """Any N, any (uneven) shots: queries are scored by distance to class-mean prototypes;
    the support code is the prototypes."""

    code_ranks = {"prototypes": 2}

    def __init__(self, image_size=28, filters=None, distance="squared_euclidean",
                 backbone="conv4", preprocessor="ink", **kwargs):
        super().__init__(**kwargs)
        shape = self.set_preprocessor(image_size, preprocessor, backbone, filters)
        self.distance = distance
        self.embedding, _ = make_backbone(backbone, shape, self.filters)
        self.head = PrototypicalHead(distance, name="head")
        self.built = True

    def support_code(self, support_features, support_labels, num_classes, training=False):
        return {"prototypes": class_means(support_features, support_labels, num_classes)}

    def code_logits(self, code, query_features, training=False):
        return self.head.logits(code["prototypes"], query_features)

    def get_config(self):
        return {**super().get_config(), **self.image_parts_config(self.embedding),
                "distance": self.distance}
