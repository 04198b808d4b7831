"""The LSTM meta-learner (Ravi & Larochelle 2017) as a member of the MAML family: the same
fast weights, tasks and outer loop, with a learned LSTM in place of the gradient step.

    theta_0 = c_0 (the learner's variables, meta-learned)
    theta_t = MetaLearnerLSTM(theta_{t-1}, grad_t, L_t),  t = 1..T            (eq. 2)

with L_t and grad_t the learner's support loss and its gradient at theta_{t-1}; the outer
loss is the query loss of theta_T (Algorithm 1), minimised over c_0 and the LSTM's weights.
"""

import math

import keras
import tensorflow as tf

from keras_fewshot.layers import MetaLearnerLSTM
from keras_fewshot.meta.maml import MAML, task_loss


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MetaLSTM(MAML):
    """Ravi & Larochelle (2017) around any built `learner` (see the module docstring).

    `inner_learning_rate` is the learning rate the LSTM starts from: its input gate's bias
    starts at logit(rate) (the paper's b_i in (-5, -4): about 0.01). `first_order=True` (the
    paper's simplification) treats L_t and grad_t as constants, so no second derivatives are
    taken; False differentiates through them too. `hidden_units` and `forget_bias` are the
    MetaLearnerLSTM's (20 and 5 as in the paper). The input gate is the learning rate, so the
    rates MAML's `call` hands to `adapt` are not used.
    """

    def __init__(self, learner, inner_learning_rate=0.011, train_inner_steps=5,
                 test_inner_steps=5, first_order=True, hidden_units=20, forget_bias=5.0,
                 **kwargs):
        # float32 by default: theta, the LSTM's cell state, is the float32 weights (not bf16 casts)
        kwargs.setdefault("dtype", "float32")
        super().__init__(learner, inner_learning_rate=inner_learning_rate,
                         train_inner_steps=train_inner_steps, test_inner_steps=test_inner_steps,
                         first_order=first_order, **kwargs)
        if not 0.0 < self.inner_learning_rate < 1.0:
            raise ValueError("inner_learning_rate is the LSTM's starting input gate, so it must "
                             f"be in (0, 1); got {inner_learning_rate}")
        rate = self.inner_learning_rate
        self.update_rule = MetaLearnerLSTM(hidden_units, forget_bias=forget_bias,
                                           input_bias=math.log(rate / (1.0 - rate)),
                                           name="update_rule", dtype=self.dtype_policy)
        self.update_rule.build()

    def adapt(self, params, x, y, steps, learning_rates=None):
        """`steps` meta-learner updates of the fast weights `params` on the task loss of (x, y).

        Returns the adapted weights and the learner's outputs on x at the start of the last
        update (None when steps == 0), as MAML.adapt does.
        """
        del learning_rates  # the LSTM's input gate is the learning rate
        shapes = [p.shape for p in params]
        sizes = [s.num_elements() for s in shapes]

        def unflatten(theta):
            return [tf.reshape(part, s) for part, s in zip(tf.split(theta, sizes), shapes)]

        theta = tf.concat([tf.reshape(p, [-1]) for p in params], axis=0)
        state = self.update_rule.initial_state(theta)
        outputs = None
        for _ in range(steps):
            current = tf.stop_gradient(theta) if self.first_order else theta
            with tf.GradientTape() as tape:
                tape.watch(current)
                outputs = self.forward(unflatten(current), x)
                # a float32 loss (the LSTM's input) whatever the learner computes in
                loss = task_loss(self.loss, y, tf.cast(outputs, tf.float32))
            theta, state = self.update_rule(theta, tape.gradient(loss, current), loss, state)
        return unflatten(theta), outputs

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.update_rule.hidden_units,
                "forget_bias": self.update_rule.forget_bias_init}
