"""Optimization-based meta-learning around any built Keras model: MAML, first-order MAML,
Meta-SGD and Reptile, sharing one functional "learner with fast weights".

Fast weights are tensors, never the learner's variables: `forward(params, x)` runs the learner
on them through `Model.stateless_call`, and `adapt` takes gradient steps on them with a
`tf.GradientTape` per step. Under an outer tape the inner gradients are themselves
differentiated (second-order MAML); `first_order=True` stops them (first-order MAML).

A batch of tasks is mapped with `tf.map_fn` (a while loop) or, with `vectorize_tasks=True`,
`tf.vectorized_map` (one batched graph: faster for dense learners, much slower for
convolutions, whose per-task weight gradients it cannot batch). Either way the traced graph
and the trace time do not grow with the number of tasks; the inner steps are unrolled (a
few, as in MAML).

Batch norm follows the MAML reference code: the learner is always called with
`training=True`, so batch norm uses the statistics of the batch it sees -- the support set in
the inner loop, the query set in the outer loop and at evaluation -- and its moving statistics
are neither updated nor used. Predictions for a query therefore depend on the other queries
of its task (transductive, as in the MAML paper's Omniglot numbers).
"""

import keras
import tensorflow as tf

from keras_fewshot.backbones import DropBlock

TASK_LOSSES = ("cross_entropy", "mse")
# Layers whose outputs are random in training mode (in which the learner always runs).
RANDOM_IN_TRAINING = (keras.layers.Dropout, keras.layers.AlphaDropout,
                      keras.layers.GaussianDropout, keras.layers.GaussianNoise, DropBlock)


def random_layers(learner):
    """Names of the learner's layers that would make its outputs random in training mode:
    dropout-like layers with a non-zero rate (or noise level)."""
    return [layer.name for layer in learner._flatten_layers()
            if isinstance(layer, RANDOM_IN_TRAINING)
            and getattr(layer, "rate", getattr(layer, "stddev", 0.0))]


def task_loss(kind, targets, outputs):
    """Mean loss of one task: "cross_entropy" (integer labels, logits) or "mse"."""
    if kind == "cross_entropy":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=outputs))
    return tf.reduce_mean(tf.square(outputs - tf.cast(targets, outputs.dtype)))


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MAML(keras.layers.Layer):
    """Model-agnostic meta-learning (Finn, Abbeel & Levine 2017) around a built `learner`.

    Inner loop (eq. 1, repeated `steps` times): theta' = theta - alpha * grad L_support(theta).
    Meta-objective (eq. 3): the query loss of f(theta'), differentiated through the inner loop
    (second order; `first_order=True` drops the inner gradients' own derivatives).

    Called on a batch of tasks, support_x [B, S, ...], support_y [B, S, ...], query_x
    [B, Q, ...], it adapts to each support set and returns the query outputs [B, Q, ...]:
    `train_inner_steps` steps when training, `test_inner_steps` otherwise (or `steps`).
    """

    interpolates = False  # Reptile's outer update is not the gradient of a query loss

    def __init__(self, learner, loss="cross_entropy", inner_learning_rate=0.4,
                 train_inner_steps=1, test_inner_steps=3, first_order=False,
                 vectorize_tasks=False, **kwargs):
        super().__init__(**kwargs)
        if not learner.built:
            raise ValueError("MAML wraps a built Keras model: build the learner (e.g. call it "
                             "once or give it an Input) before wrapping it")
        if loss not in TASK_LOSSES:
            raise ValueError(f"loss must be one of {TASK_LOSSES}, got {loss!r}")
        random = random_layers(learner)
        if random:
            raise ValueError(
                f"The learner has layers that are random in training mode ({', '.join(random)}): "
                "the MAML family always runs it in training mode (batch norm on batch "
                "statistics), so they would also drop or add noise at test time and make "
                "predictions random. Give them a rate of 0 (e.g. ResNet12(drop_rate=0)).")
        for name, steps in (("train_inner_steps", train_inner_steps),
                            ("test_inner_steps", test_inner_steps)):
            if int(steps) < 0:
                raise ValueError(f"{name} must be >= 0, got {steps}")
        self.learner = learner
        self.loss = loss
        self.inner_learning_rate = float(inner_learning_rate)
        self.train_inner_steps = int(train_inner_steps)
        self.test_inner_steps = int(test_inner_steps)
        self.first_order = bool(first_order)
        self.vectorize_tasks = bool(vectorize_tasks)
        self.built = True

    # --- the functional learner: reusable by any algorithm that updates weights itself ---

    def map_tasks(self, fn, tasks, output_signature):
        """fn over the leading (task) axis of `tasks`, in one graph whatever the count."""
        if self.vectorize_tasks:
            return tf.vectorized_map(fn, tasks)
        return tf.map_fn(fn, tasks, fn_output_signature=output_signature)

    def initial_weights(self):
        """theta: the learner's trainable variables read as tensors (recorded by a tape)."""
        return [tf.convert_to_tensor(v.value) for v in self.learner.trainable_variables]

    def forward(self, params, x):
        """The learner's outputs on x with fast weights `params` (batch-norm batch statistics)."""
        fixed = [tf.convert_to_tensor(v.value) for v in self.learner.non_trainable_variables]
        outputs, _ = self.learner.stateless_call(params, fixed, x, training=True)
        return outputs

    def inner_learning_rates(self):
        """alpha for each parameter tensor (MAML: one scalar; Meta-SGD: learned tensors)."""
        return [self.inner_learning_rate] * len(self.learner.trainable_variables)

    def adapt(self, params, x, y, steps, learning_rates=None):
        """`steps` gradient steps on the task loss of (x, y) from fast weights `params`.

        Returns the adapted weights and the learner's outputs on x at the start of the last
        step (None when steps == 0).
        """
        rates = self.inner_learning_rates() if learning_rates is None else learning_rates
        outputs = None
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(params)
                outputs = self.forward(params, x)
                loss = task_loss(self.loss, y, outputs)
            grads = tape.gradient(loss, params,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if self.first_order:
                grads = [tf.stop_gradient(g) for g in grads]
            params = [p - rate * g for p, rate, g in zip(params, rates, grads)]
        return params, outputs

    def call(self, support_x, support_y, query_x, training=False, steps=None):
        if steps is None:
            steps = self.train_inner_steps if training else self.test_inner_steps
        params, rates = self.initial_weights(), self.inner_learning_rates()

        def one_task(task):
            task_support_x, task_support_y, task_query_x = task
            adapted, _ = self.adapt(params, task_support_x, task_support_y, steps, rates)
            return self.forward(adapted, task_query_x)

        return self.map_tasks(one_task, (support_x, support_y, query_x),
                              tf.as_dtype(self.learner.compute_dtype))

    def get_config(self):
        return {**super().get_config(),
                "learner": keras.saving.serialize_keras_object(self.learner),
                "loss": self.loss, "inner_learning_rate": self.inner_learning_rate,
                "train_inner_steps": self.train_inner_steps,
                "test_inner_steps": self.test_inner_steps, "first_order": self.first_order,
                "vectorize_tasks": self.vectorize_tasks}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["learner"] = keras.saving.deserialize_keras_object(config["learner"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MetaSGD(MAML):
    """Meta-SGD (Li, Zhou, Chen & Li 2017, eq. 4): theta' = theta - alpha o grad L, with alpha a
    learned tensor of the parameters' shape (initialised to `inner_learning_rate`), meta-trained
    with theta on the same query loss."""

    def __init__(self, learner, **kwargs):
        super().__init__(learner, **kwargs)
        self.learning_rates = [
            self.add_weight(shape=v.shape, name=f"inner_lr_{i}",
                            initializer=keras.initializers.Constant(self.inner_learning_rate))
            for i, v in enumerate(self.learner.trainable_variables)]

    def inner_learning_rates(self):
        return [rate.value for rate in self.learning_rates]


@keras.saving.register_keras_serializable(package="keras_fewshot")
class Reptile(MAML):
    """Reptile (Nichol, Achiam & Schulman 2018, algorithm 2, batched): phi_i = k SGD steps on
    task i from theta, then theta <- theta + epsilon * mean_i(phi_i - theta).

    `meta_gradients` returns theta - mean_i(phi_i) for the outer optimizer: plain SGD with
    learning rate epsilon makes exactly the paper's update. At test time it adapts and
    predicts as MAML does.
    """

    interpolates = True

    def __init__(self, learner, **kwargs):
        super().__init__(learner, **kwargs)
        if self.train_inner_steps < 1:
            raise ValueError("Reptile needs train_inner_steps >= 1")

    def meta_gradients(self, x, y):
        """x [B, M, ...], y [B, M, ...]: each task's examples. Returns (theta - mean phi per
        trainable variable, the outputs [B, M, ...] at the start of the last inner step)."""
        params = self.initial_weights()

        def one_task(task):
            task_x, task_y = task
            return self.adapt(params, task_x, task_y, self.train_inner_steps)

        signature = ([tf.TensorSpec(p.shape, p.dtype) for p in params],
                     tf.as_dtype(self.learner.compute_dtype))
        adapted, outputs = self.map_tasks(one_task, (x, y), signature)
        return [p - tf.reduce_mean(phi, axis=0) for p, phi in zip(params, adapted)], outputs


class MetaTrainStep:
    """keras.Model mixin: `fit` on batches of tasks through a MAML-family layer.

    The model holds the layer as `self.meta` and maps its inputs to tasks with
    `self.meta_tasks(inputs) -> (support_x, support_y, query_x)` (batched); `fit`'s targets
    are the query targets. MAML and Meta-SGD take the gradient of the compiled loss on the
    adapted query outputs; Reptile adapts on each task's support and query examples together
    and hands the optimizer theta - mean(phi). Reported metrics are on the query outputs (for
    Reptile: at the start of the last inner step).
    """

    def train_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        support_x, support_y, query_x = self.meta_tasks(inputs)
        # Under a tf.distribute strategy each of the R replicas takes B / R of the tasks and
        # the optimizer sums their gradients: compute_loss divides its loss by R for that,
        # Reptile's difference is divided here, and the logged loss is multiplied back.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self.meta.interpolates:
            gradients, outputs = self.meta.meta_gradients(
                tf.concat([support_x, query_x], axis=1),
                tf.concat([tf.cast(support_y, targets.dtype), targets], axis=1))
            gradients = [g / replicas for g in gradients]
            predictions = outputs[:, tf.shape(support_x)[1]:]
            variables = self.meta.learner.trainable_variables
            loss = self.compute_loss(x=inputs, y=targets, y_pred=predictions)
        else:
            variables = self.trainable_variables
            with tf.GradientTape() as tape:
                predictions = self.meta(support_x, support_y, query_x, training=True)
                loss = self.compute_loss(x=inputs, y=targets, y_pred=predictions)
            gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(targets)[0])
        return self.compute_metrics(inputs, targets, predictions)
