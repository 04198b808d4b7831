"""Prototypical Networks (Snell, Swersky & Zemel 2017): conv4 embedding + prototypical head."""

import keras
import tensorflow as tf

from keras_fewshot.layers import Conv4Embedding, ImagePreprocessing, PrototypicalHead
from keras_fewshot.models.episodic import EpisodicClassifier, merge_leading


@keras.saving.register_keras_serializable(package="keras_fewshot")
class PrototypicalNetwork(EpisodicClassifier):
    """Any N, any (uneven) shots: queries are scored by distance to class-mean prototypes."""

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

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        batch = tf.shape(support_images)[0]
        support = self.preprocess(merge_leading(support_images))
        query = self.preprocess(merge_leading(query_images))
        # One pass over support and query: batch-norm statistics cover the whole episode.
        features = self.embedding(tf.concat([support, query], axis=0), training=training)
        split = tf.shape(support)[0]
        dim = features.shape[-1]
        support_emb = tf.reshape(features[:split], (batch, -1, dim))
        query_emb = tf.reshape(features[split:], (batch, -1, dim))
        return self.head(support_emb, support_labels, query_emb, num_classes)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "filters": self.filters, "distance": self.distance}
