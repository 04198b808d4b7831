"""Siamese network (Koch, Zemel & Salakhutdinov 2015) for verification and few-shot use.

Trained as a verifier on same/different pairs with binary cross-entropy (`task_kind =
PAIRS`); used through the episode contract by scoring every (query, support) pair and
giving each class the mean score of its shots. Class scores are log(mean p), so softmax
over classes gives normalised probabilities and argmax the paper's choice when K = 1.

The pair scorer on its own:
    p = tf.sigmoid(model({"first_images": a, "second_images": b}))  # a, b uint8 [P, H, W, C]
"""

import keras
import tensorflow as tf

from keras_fewshot.layers import NonPositive, SiameseL1Head
from keras_fewshot.models.components import ImageModelMixin, make_backbone
from keras_fewshot.models.episodic import _check
from keras_fewshot.models.metric import MetricClassifier
from keras_fewshot.tasks import PAIRS

PAIR_KEYS = ("first_images", "second_images")


@keras.saving.register_keras_serializable(package="keras_fewshot")
class PairCrossEntropy(keras.losses.Loss):
    """Binary cross-entropy of same-class logits [P] against same/different labels [P] (Koch
    et al. eq. 1, without the regulariser), one value per pair. Keras's BinaryCrossentropy
    averages [P] over its last axis into one scalar, which Keras then neither averages nor
    divides by the replicas of a tf.distribute strategy: their summed gradients doubled."""

    def call(self, y_true, y_pred):
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(y_true, y_pred.dtype),
                                                       logits=y_pred)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class SiameseNetwork(ImageModelMixin, MetricClassifier):
    """A backbone twin f (conv4 by default; optionally followed by a sigmoid dense layer, as
    Koch's) + L1 head.

    head_init: "koch" draws the head's weights W from N(0, 0.2), unconstrained, as the
    paper; "distance" starts them all at -0.1 and keeps them <= 0, so the logit is a learned
    weighted negative L1 distance plus a threshold, and an embedding trained for distances
    (`--embedding_from`) ranks by nearest neighbour from the first step. The support code is
    f of the support images and their one-hot labels.
    """

    code_ranks = {"support_embeddings": 2, "support_onehot": 2}

    task_kind = PAIRS
    HEAD_INITIALIZERS = {"koch": (None, None),
                         "distance": (keras.initializers.Constant(-0.1), NonPositive())}

    def __init__(self, image_size=28, filters=None, dense_units=0, head_init="koch",
                 backbone="conv4", preprocessor="ink", **kwargs):
        super().__init__(**kwargs)
        if head_init not in self.HEAD_INITIALIZERS:
            raise ValueError(f"head_init must be one of {sorted(self.HEAD_INITIALIZERS)}, "
                             f"got {head_init!r}")
        shape = self.set_preprocessor(image_size, preprocessor, backbone, filters)
        self.dense_units = int(dense_units)
        self.head_init = head_init
        self.embedding, shape = make_backbone(backbone, shape, self.filters)
        self.dense = None
        if self.dense_units:
            self.dense = keras.layers.Dense(self.dense_units, activation="sigmoid", name="dense")
            self.dense.build(shape)
            shape = self.dense.compute_output_shape(shape)
        # float32 whatever the policy: a bf16 twin's features are cast up, and the logits
        # (pairs and episodes) are float32 as every metric model's (`metric_features`)
        self.head = SiameseL1Head(*self.HEAD_INITIALIZERS[head_init], name="head",
                                  dtype="float32")
        self.head.build(shape, shape)
        self.built = True

    def training_loss(self):
        return PairCrossEntropy()

    def training_metrics(self):
        return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]

    def features(self, pixels, training=False):
        """f(x) on preprocessed pixels [M, s, s, C] -> [M, D]."""
        x = self.embedding(pixels, training=training)
        return self.dense(x) if self.dense is not None else x

    def call(self, inputs, training=False):
        if isinstance(inputs, dict) and all(k in inputs for k in PAIR_KEYS):
            return self.pair_logits(inputs["first_images"], inputs["second_images"], training)
        return super().call(inputs, training=training)

    def pair_logits(self, first_images, second_images, training=False):
        """Same-class logits [P] of image pairs; sigmoid gives p(x1, x2)."""
        for name, x in (("first_images", first_images), ("second_images", second_images)):
            if x.dtype != tf.uint8 or x.shape.rank != 4:
                raise ValueError(f"{name} must be uint8 [P, H, W, C], got {x.dtype.name} "
                                 f"{x.shape}")
        count = tf.shape(first_images)[0]
        checks = _check(count == tf.shape(second_images)[0],
                        "first_images and second_images must hold the same number of images "
                        "(one pair each)")
        with tf.control_dependencies(checks):  # each side at model size, then one pass
            pixels = tf.concat([self.preprocess(first_images),
                                self.preprocess(second_images)], 0)
            both = self.features(pixels, training)
        return self.head(both[:count], both[count:])

    def support_code(self, support_features, support_labels, num_classes, training=False):
        return {"support_embeddings": support_features,
                "support_onehot": tf.one_hot(support_labels, num_classes,
                                             dtype=support_features.dtype)}

    def code_logits(self, code, query_features, training=False):
        # expand_dims rather than [:, None]: TFLite builtins for any sizes
        support = tf.expand_dims(code["support_embeddings"], 1)  # [B, 1, S, D]
        query = tf.expand_dims(query_features, 2)                # [B, Q, 1, D]
        log_p = tf.math.log_sigmoid(self.head(query, support))  # [B, Q, S], no underflow
        onehot = code["support_onehot"]                          # [B, S, N]
        # log mean_{i in class n} p_i = logsumexp over the class's shots - log(shots)
        in_class = tf.expand_dims(log_p, -1) + tf.expand_dims(tf.math.log(onehot), 1)
        shots = tf.reduce_sum(onehot, 1, keepdims=True)          # [B, 1, N]
        return tf.reduce_logsumexp(in_class, axis=2) - tf.math.log(shots)

    def get_config(self):
        return {**super().get_config(), **self.image_parts_config(self.embedding),
                "dense_units": self.dense_units, "head_init": self.head_init}
