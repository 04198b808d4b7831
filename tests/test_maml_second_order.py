"""Second-order MAML (Finn et al. 2017, eq. 3) through ResNet-12 and conv4 learners, against
central differences of the meta-objective in float64.

The learner is MAMLClassifier's (the backbone and a dense head, batch norm per task), a few
filters wide, on 16x16 pixels: 2 tasks, 2-way 1-shot, 2 queries per class, one inner step.
With theta the learner's weights, L the mean query cross-entropy after the inner step, g its
meta-gradient and v a random unit direction, the central difference
D(h) = (L(theta + h v) - L(theta - h v)) / 2h is g.v + h^2 / 6 L'''(v, v, v) + O(h^4), plus
the loss's rounding over 2h. So:

* truncation: D(h) - D(h/2) is 3/4 of D(h)'s h^2 term, i.e. three times D(h/2)'s; allowing
  |D(h) - D(h/2)| covers D(h/2)'s with a factor of 3 to spare.
* rounding: an evaluation of L is a chain of fewer than CHAIN float64 operations (the inner
  step's forward and backward passes and the adapted forward pass, each a few thousand
  products and sums deep, batch norm's means included), so it is off by at most
  CHAIN * u * |L| with u = 2^-53; the quotient by at most that over h.

First-order MAML's meta-gradient misses D(h/2) by far more than that tolerance: the check
sees the second-order terms. TensorFlow's fused batch-norm kernel has no float64 version, so
float64 runs batch norm op by op; the fused kernel's second derivative is checked in float32
against the float64 meta-gradient, held to twice the op-by-op float32 error (the same
quantity, summed in another order).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.backbones import Conv4Embedding, ResNet12
from keras_fewshot.models import MAMLClassifier

SIZE, WAYS, QUERIES, TASKS = 16, 2, 2, 2
CHAIN = 10 ** 5  # bound on the float64 operations along one evaluation of L (see above)
UNIT_ROUNDOFF = 2.0 ** -53
STEP = 1e-4
BACKBONES = {
    "resnet12": lambda fused: ResNet12(filters=(4, 6, 6, 8), synchronized=False,
                                       fused_training_batch_norm=fused, name="embedding"),
    "conv4": lambda fused: Conv4Embedding(8, synchronized=False,
                                          fused_training_batch_norm=fused, name="embedding"),
}


def maml(backbone, policy="float64", first_order=False, fused=False):
    """MAMLClassifier (2-way, 1 inner step) on a narrow `backbone`, its layers in `policy`."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        return MAMLClassifier(ways=WAYS, backbone=BACKBONES[backbone](fused), image_size=SIZE,
                              first_order=first_order, train_inner_steps=1)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture(scope="module")
def tasks():
    """support x [B, N, s, s, 1], support y [B, N], query x [B, N Q, s, s, 1], query y."""
    rng = np.random.default_rng(0)
    support_y = np.stack([rng.permutation(WAYS) for _ in range(TASKS)])
    query_y = np.stack([rng.permutation(np.repeat(np.arange(WAYS), QUERIES))
                        for _ in range(TASKS)])
    return (rng.normal(size=(TASKS, WAYS, SIZE, SIZE, 1)), support_y,
            rng.normal(size=(TASKS, WAYS * QUERIES, SIZE, SIZE, 1)), query_y)


def meta_loss(model, tasks):
    """L: the mean query cross-entropy after the inner step, as the training step takes it."""
    dtype = model.meta.learner.compute_dtype
    support_x, support_y, query_x, query_y = tasks
    logits = model.meta(tf.constant(support_x, dtype), tf.constant(support_y),
                        tf.constant(query_x, dtype), training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.constant(query_y), logits=logits))


def meta_gradient(model, tasks):
    """(dL/dtheta per learner variable as float64 arrays, L)."""
    variables = model.meta.learner.trainable_variables
    with tf.GradientTape() as tape:
        loss = meta_loss(model, tasks)
    return [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)], float(loss)


def central_difference(model, direction, step, tasks):
    """(L(theta + step v) - L(theta - step v)) / (2 step), theta restored afterwards."""
    variables = model.meta.learner.trainable_variables
    theta = [v.numpy() for v in variables]
    losses = []
    for sign in (1.0, -1.0):
        for variable, value, d in zip(variables, theta, direction):
            variable.assign(value + sign * step * d)
        losses.append(float(meta_loss(model, tasks)))
    for variable, value in zip(variables, theta):
        variable.assign(value)
    return (losses[0] - losses[1]) / (2 * step)


def dot(a, b):
    return sum(np.sum(x * y) for x, y in zip(a, b))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_second_order_meta_gradient_matches_central_differences(backbone, tasks):
    model = maml(backbone)
    assert model.meta.learner.compute_dtype == "float64"
    gradients, loss = meta_gradient(model, tasks)
    assert all(np.isfinite(g).all() for g in gradients)

    rng = np.random.default_rng(1)
    direction = [rng.normal(size=g.shape) for g in gradients]
    direction = [d / np.sqrt(dot(direction, direction)) for d in direction]
    coarse = central_difference(model, direction, STEP, tasks)
    fine = central_difference(model, direction, STEP / 2, tasks)
    tolerance = abs(coarse - fine) + CHAIN * UNIT_ROUNDOFF * abs(loss) / (STEP / 2)
    assert abs(dot(gradients, direction) - fine) <= tolerance, (
        dot(gradients, direction), fine, coarse, tolerance)

    first_order = maml(backbone, first_order=True)
    first_order.set_weights(model.get_weights())
    first_gradients, _ = meta_gradient(first_order, tasks)
    assert abs(dot(first_gradients, direction) - fine) > 100 * tolerance


def test_fused_batch_norm_second_derivative_is_exact_to_float32_round_off(tasks):
    exact = maml("resnet12")
    reference, _ = meta_gradient(exact, tasks)
    weights = exact.get_weights()

    def float32_error(fused):
        model = maml("resnet12", "float32", fused=fused)
        model.set_weights([w.astype(np.float32) for w in weights])
        gradients, _ = meta_gradient(model, tasks)
        difference = [g - r for g, r in zip(gradients, reference)]
        return np.sqrt(dot(difference, difference) / dot(reference, reference))

    assert float32_error(fused=True) <= 2 * float32_error(fused=False)
