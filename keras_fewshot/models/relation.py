"""Relation Network (Sung et al. 2018): a learned comparison of query and class feature maps.

The embedding module keeps feature maps (by default conv4 pooling in the first two blocks:
7x7 maps of 28x28 images; any backbone giving maps, such as ResNet12(pooled=False)); a
class's support maps are summed over its shots; each (query, class) pair of maps is
concatenated along channels and scored by the relation module. Trained with the paper's
MSE between relation scores sigmoid(logits) and one-hot targets (`RelationMSE`).
"""

import keras
import tensorflow as tf

from keras_fewshot.layers import RelationModule
from keras_fewshot.models.components import ImageModelMixin, make_backbone
from keras_fewshot.models.metric import MetricClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RelationMSE(keras.losses.Loss):
    """mean over queries and classes of (sigmoid(logit) - one_hot(label))^2 (Sung et al. eq. 2)."""

    def call(self, y_true, y_pred):
        targets = tf.one_hot(tf.cast(y_true, tf.int32), tf.shape(y_pred)[-1])
        return tf.reduce_mean(tf.square(tf.sigmoid(y_pred) - targets), axis=-1)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RelationNetwork(ImageModelMixin, MetricClassifier):
    """Any N, any shots. Class scores are relation logits: sigmoid gives r in [0, 1]. The
    support code is the class feature maps (support maps summed over each class's shots)."""

    code_ranks = {"class_maps": 4}

    def __init__(self, image_size=28, filters=None, hidden_units=8, backbone="conv4",
                 preprocessor="ink", relation_filters=None, **kwargs):
        super().__init__(**kwargs)
        shape = self.set_preprocessor(image_size, preprocessor, backbone, filters)
        self.hidden_units = int(hidden_units)
        # the relation module's width: conv4's (the paper's 64 for both), else 64
        self.relation_filters = int(relation_filters or self.filters or 64)
        self.embedding, maps = make_backbone(backbone, shape, self.filters, feature_map=True,
                                             relation=True)
        if min(maps[1:3]) < 4:
            raise ValueError(f"The relation module pools twice (2x2): it needs feature maps of "
                             f"at least 4x4, and the backbone gives {maps[1]}x{maps[2]} at "
                             f"image_size={self.image_size}; use larger images or a backbone "
                             "that pools less")
        self.relation = RelationModule(self.relation_filters, self.hidden_units,
                                       name="relation")
        self.relation.build(maps[:-1] + (2 * maps[-1],))
        self.built = True

    def training_loss(self):
        return RelationMSE()

    def support_code(self, support_features, support_labels, num_classes, training=False):
        onehot = tf.one_hot(support_labels, num_classes, dtype=support_features.dtype)
        return {"class_maps": tf.einsum("bsn,bshwc->bnhwc", onehot, support_features)}

    def code_logits(self, code, query_features, training=False):
        return self.relation(query_features, code["class_maps"], training=training)

    def get_config(self):
        return {**super().get_config(), **self.image_parts_config(self.embedding),
                "hidden_units": self.hidden_units, "relation_filters": self.relation_filters}
