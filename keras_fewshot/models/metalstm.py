"""The LSTM meta-learner (Ravi & Larochelle 2017): a learned optimizer trains a conv4 learner.

For each episode (Algorithm 1): theta_0 = c_0, the learned initial parameters of the learner
(conv4 and a dense layer to N classes; 32 filters, the paper's learner); then T times, L_t and
grad_t = the learner's support loss and its gradient at theta_{t-1}, and theta_t =
MetaLearnerLSTM(theta_{t-1}, grad_t, L_t) (eq. 2); the logits are the learner's with theta_T
on the queries. `model.fit` minimises the query loss after the last update over c_0 and the
meta-learner's weights; L_t and grad_t are constants to it, as in the paper, so no second
derivatives are taken.

Batch normalization uses batch statistics in every pass (the paper's and MAML's choice): the
support set's in the T updates and the query set's for the logits, also in evaluation and
serving, so a query's logits depend on the other queries of its episode (transductive). The
batch-norm moving statistics are never used.
"""

import keras
import tensorflow as tf

from keras_fewshot.layers import Conv4Embedding, ImagePreprocessing, MetaLearnerLSTM
from keras_fewshot.models.episodic import EpisodicClassifier, merge_leading


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MetaLSTMClassifier(EpisodicClassifier):
    """Exactly `ways` classes, any shots; the learner is adapted by T meta-learner updates.

    The learner's own variables hold c_0; the adapted parameters are tensors, so calling the
    model never changes a variable.
    """

    def __init__(self, ways=5, train_inner_steps=5, test_inner_steps=5, image_size=28,
                 filters=32, hidden_units=20, forget_bias=5.0, input_bias=-4.5, **kwargs):
        super().__init__(**kwargs)
        self.ways = int(ways)
        if self.ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}")
        self.fixed_ways = self.ways
        self.train_inner_steps = int(train_inner_steps)
        self.test_inner_steps = int(test_inner_steps)
        for name, steps in (("train_inner_steps", train_inner_steps),
                            ("test_inner_steps", test_inner_steps)):
            if int(steps) < 1:
                raise ValueError(f"{name} must be >= 1, got {steps}")
        self.image_size = int(image_size)
        self.filters = int(filters)
        self.preprocess = ImagePreprocessing(self.image_size, name="preprocess")
        self.learner = keras.Sequential([
            keras.Input((self.image_size, self.image_size, 1)),
            Conv4Embedding(self.filters, name="embedding"),
            keras.layers.Dense(self.ways, name="head")], name="learner")
        self.meta_learner = MetaLearnerLSTM(hidden_units, forget_bias=forget_bias,
                                            input_bias=input_bias, name="meta_learner")
        self.meta_learner.build()
        self.built = True

    def initial_parameters(self):
        """theta_0 = c_0, the learner's trainable variables, as one flat vector [P]."""
        return tf.concat([tf.reshape(v.value, [-1]) for v in self.learner.trainable_variables],
                         axis=0)

    def learner_logits(self, theta, images):
        """The learner with flat parameters theta [P] on images [M, s, s, 1] -> [M, ways]."""
        variables = self.learner.trainable_variables
        parts = tf.split(theta, [v.shape.num_elements() for v in variables])
        fixed = [v.value for v in self.learner.non_trainable_variables]
        logits, _ = self.learner.stateless_call(
            [tf.reshape(part, v.shape) for part, v in zip(parts, variables)], fixed, images,
            training=True)
        return logits

    def adapt(self, support_images, support_labels, steps):
        """theta_T after T = `steps` meta-learner updates on one preprocessed support set."""
        theta = self.initial_parameters()
        state = self.meta_learner.initial_state(theta)
        for _ in range(steps):
            # L_t and grad_t are constants to the meta-gradient (the layer stops them too);
            # taking them at stop_gradient(theta) keeps the support passes off the outer tape.
            current = tf.stop_gradient(theta)
            with tf.GradientTape() as tape:
                tape.watch(current)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    support_labels, self.learner_logits(current, support_images),
                    from_logits=True))
            theta, state = self.meta_learner(theta, tape.gradient(loss, current), loss, state)
        return theta

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        del num_classes  # validated to equal `ways`
        steps = self.train_inner_steps if training else self.test_inner_steps

        def preprocess(images):  # [B, M, H, W, C] -> [B, M, s, s, 1]
            x = self.preprocess(merge_leading(images))
            return tf.reshape(x, (tf.shape(images)[0], -1, *x.shape[1:]))

        def adapt_and_predict(episode):
            support, labels, query = episode
            return self.learner_logits(self.adapt(support, labels, steps), query)

        return tf.map_fn(adapt_and_predict,
                         (preprocess(support_images), support_labels, preprocess(query_images)),
                         fn_output_signature=tf.TensorSpec([None, self.ways], tf.float32))

    def get_config(self):
        return {**super().get_config(), "ways": self.ways,
                "train_inner_steps": self.train_inner_steps,
                "test_inner_steps": self.test_inner_steps,
                "image_size": self.image_size, "filters": self.filters,
                "hidden_units": self.meta_learner.hidden_units,
                "forget_bias": self.meta_learner.forget_bias_init,
                "input_bias": self.meta_learner.input_bias_init}
