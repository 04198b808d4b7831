"""Learners wrapped by the MAML family (keras_fewshot.meta): an N-way Omniglot classifier and
a regressor for regression tasks such as sinusoids.

`algorithm` picks the meta-algorithm ("maml", "metasgd", "reptile"; MAML's `first_order`
switch gives first-order MAML; "metalstm", the LSTM meta-learner, whose inner learning rate is
the LSTM's starting one); every other argument is the meta-algorithm's (inner learning rate,
inner steps when training and when testing). One class per task type, not per
algorithm: the algorithms differ only in the wrapped layer, which config.json records.
"""

import keras
import tensorflow as tf

from keras_fewshot.meta import ALGORITHMS, MetaTrainStep
from keras_fewshot.models.components import ImageModelMixin, make_backbone
from keras_fewshot.models.episodic import (EpisodicClassifier, TakesPythonLists, merge_leading,
                                           validate_episode)
from keras_fewshot.models.preset import FromPreset
from keras_fewshot.tasks import REGRESSION


def meta_layer(learner, algorithm, loss, **options):
    """The MAML-family layer `algorithm` around `learner`."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"Unknown meta-learning algorithm {algorithm!r}; expected one of "
                         f"{sorted(ALGORITHMS)}")
    return ALGORITHMS[algorithm](learner, loss=loss, name="meta", **options)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MAMLClassifier(ImageModelMixin, MetaTrainStep, EpisodicClassifier):
    """Finn et al. (2017) Omniglot model: a backbone (by default conv4: 3x3 conv 64, batch
    norm, ReLU, 2x2 max pool, four times) and a dense `ways`-way head, adapted to each
    episode's support set inside the call (sec. 5.2); queries are scored by the adapted
    network. Exactly `ways` classes.

    A backbone given by name ("conv4", "resnet12") takes batch statistics per task, never
    across replicas, and, in a learner differentiated twice (second-order MAML, Meta-SGD),
    computes batch norm op by op, whose second derivative is exact (backbones/conv4.py). A
    backbone given as a layer or config is used as given.
    """

    def __init__(self, ways=5, algorithm="maml", inner_learning_rate=0.4, train_inner_steps=1,
                 test_inner_steps=3, first_order=False, image_size=28, filters=None,
                 backbone="conv4", preprocessor="ink", **kwargs):
        super().__init__(**kwargs)
        self.ways = int(ways)
        if self.ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}")
        self.fixed_ways = self.ways
        self.algorithm = algorithm
        shape = self.set_preprocessor(image_size, preprocessor, backbone, filters)
        second_order = algorithm != "reptile" and not first_order
        # batch statistics per task (see keras_fewshot.meta.maml), never across replicas;
        # built by the learner, under its name scope
        embedding, _ = make_backbone(backbone, shape, self.filters, build=False,
                                     synchronized=False,
                                     fused_training_batch_norm=not second_order)
        learner = keras.Sequential([keras.Input(shape[1:]), embedding,
                                    keras.layers.Dense(self.ways, name="head")],
                                   name="learner")
        self.meta = meta_layer(learner, algorithm, "cross_entropy",
                               inner_learning_rate=inner_learning_rate,
                               train_inner_steps=train_inner_steps,
                               test_inner_steps=test_inner_steps, first_order=first_order)
        self.built = True

    def model_pixels(self, images):
        """uint8 [B, M, H, W, C] -> float32 [B, M, s, s, channels]."""
        x = self.preprocess(merge_leading(images))
        return tf.reshape(x, (tf.shape(images)[0], -1, self.image_size, self.image_size,
                              self.channels))

    def meta_tasks(self, inputs):
        episode = validate_episode(inputs, self.fixed_ways)
        return (self.model_pixels(episode.support_images), episode.support_labels,
                self.model_pixels(episode.query_images))

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        return self.meta(self.model_pixels(support_images), support_labels,
                         self.model_pixels(query_images), training=training)

    def get_config(self):
        meta = self.meta
        return {**super().get_config(), "ways": self.ways, "algorithm": self.algorithm,
                "inner_learning_rate": meta.inner_learning_rate,
                "train_inner_steps": meta.train_inner_steps,
                "test_inner_steps": meta.test_inner_steps, "first_order": meta.first_order,
                **self.image_parts_config(meta.learner.layers[0])}


REGRESSION_KEYS = ("support_x", "support_y", "query_x")


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MAMLRegressor(MetaTrainStep, TakesPythonLists, FromPreset, keras.Model):
    """Finn et al. (2017, sec. 5.1) regression model: an MLP (ReLU, 40-40 by default) adapted
    to each task's support points inside the call.

        model({"support_x": [B, K, D], "support_y": [B, K, E], "query_x": [B, Q, D]})
        # -> [B, Q, E] (or unbatched [K, D], [K, E], [Q, D] -> [Q, E])

    With `train_inner_steps=0` it is the paper's "pretrained on all tasks" baseline: plain
    regression on the query points of mixed tasks, fine-tuned at test like MAML.
    """

    task_kind = REGRESSION

    def __init__(self, algorithm="maml", inner_learning_rate=0.01, train_inner_steps=1,
                 test_inner_steps=10, first_order=False, hidden_units=(40, 40), input_dim=1,
                 output_dim=1, **kwargs):
        super().__init__(**kwargs)
        self.algorithm = algorithm
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        learner = keras.Sequential(
            [keras.Input((self.input_dim,))]
            + [keras.layers.Dense(u, activation="relu", name=f"hidden{i}")
               for i, u in enumerate(self.hidden_units)]
            + [keras.layers.Dense(self.output_dim, name="output")], name="learner")
        self.meta = meta_layer(learner, algorithm, "mse",
                               inner_learning_rate=inner_learning_rate,
                               train_inner_steps=train_inner_steps,
                               test_inner_steps=test_inner_steps, first_order=first_order,
                               vectorize_tasks=True)
        self.built = True

    def training_loss(self):
        return keras.losses.MeanSquaredError()

    def training_metrics(self):
        return []

    def meta_tasks(self, inputs):
        if not isinstance(inputs, dict) or any(k not in inputs for k in REGRESSION_KEYS):
            raise ValueError(f"A regression task is a dict with keys {REGRESSION_KEYS}")
        tensors = [tf.cast(inputs[k], self.compute_dtype) for k in REGRESSION_KEYS]
        ranks = {x.shape.rank for x in tensors}
        if len(ranks) != 1 or ranks.pop() not in (2, 3):
            raise ValueError("support_x, support_y and query_x must all be [M, D] or all be "
                             f"batched [B, M, D]; got shapes {[x.shape for x in tensors]}")
        if tensors[0].shape.rank == 2:
            tensors = [x[None] for x in tensors]
        return tuple(tensors)

    def call(self, inputs, training=False, inner_steps=None):
        """Query predictions after adapting on the support points; `inner_steps` overrides
        the number of inner steps (default: train or test steps)."""
        support_x, support_y, query_x = self.meta_tasks(inputs)
        outputs = self.meta(support_x, support_y, query_x, training=training, steps=inner_steps)
        return outputs if tf.convert_to_tensor(inputs["query_x"]).shape.rank == 3 else outputs[0]

    def get_config(self):
        meta = self.meta
        return {**super().get_config(), "algorithm": self.algorithm,
                "inner_learning_rate": meta.inner_learning_rate,
                "train_inner_steps": meta.train_inner_steps,
                "test_inner_steps": meta.test_inner_steps, "first_order": meta.first_order,
                "hidden_units": list(self.hidden_units), "input_dim": self.input_dim,
                "output_dim": self.output_dim}
