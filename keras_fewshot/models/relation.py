"""Relation Network (Sung et al. 2018): a learned comparison of query and class feature maps.

The embedding module keeps 7x7 feature maps (conv4, pooling in the first two blocks); a
class's support maps are summed over its shots; each (query, class) pair of maps is
concatenated along channels and scored by the relation module. Trained with the paper's
MSE between relation scores sigmoid(logits) and one-hot targets (`RelationMSE`).
"""

import keras
import tensorflow as tf

from keras_fewshot.layers import Conv4Embedding, ImagePreprocessing, RelationModule
from keras_fewshot.models.metric import MetricClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RelationMSE(keras.losses.Loss):
    """mean over queries and classes of (sigmoid(logit) - one_hot(label))^2 (Sung et al. eq. 2)."""

    def call(self, y_true, y_pred):
        targets = tf.one_hot(tf.cast(y_true, tf.int32), tf.shape(y_pred)[-1])
        return tf.reduce_mean(tf.square(tf.sigmoid(y_pred) - targets), axis=-1)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class RelationNetwork(MetricClassifier):
    """Any N, any shots. Class scores are relation logits: sigmoid gives r in [0, 1]. The
    support code is the class feature maps (support maps summed over each class's shots)."""

    code_ranks = {"class_maps": 4}

    def __init__(self, image_size=28, filters=64, hidden_units=8, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.filters = int(filters)
        self.hidden_units = int(hidden_units)
        self.preprocess = ImagePreprocessing(self.image_size, name="preprocess")
        self.embedding = Conv4Embedding(self.filters, pooled_blocks=2, flatten=False,
                                        name="embedding")
        self.relation = RelationModule(self.filters, self.hidden_units, name="relation")
        shape = (None, self.image_size, self.image_size, 1)
        self.embedding.build(shape)
        maps = self.embedding.compute_output_shape(shape)
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
        return {**super().get_config(), "image_size": self.image_size, "filters": self.filters,
                "hidden_units": self.hidden_units}
