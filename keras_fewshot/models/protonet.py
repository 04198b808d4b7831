"""Prototypical Networks (Snell, Swersky & Zemel 2017): conv4 embedding + prototypical head."""

import keras

from keras_fewshot.layers import Conv4Embedding, ImagePreprocessing, PrototypicalHead
from keras_fewshot.models.episodic import EpisodicClassifier


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
        support_emb, query_emb = self.embed_episode(self.embedding, support_images,
                                                    query_images, training)
        return self.head(support_emb, support_labels, query_emb, num_classes)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "filters": self.filters, "distance": self.distance}
