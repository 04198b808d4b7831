"""How exact second-order MAML's meta-gradient is on a conv4 learner: in float32 against a
float64 reference, and in bf16 compute (`dtype_policy="mixed_bfloat16"`) against float32.

The meta-gradient of a conv4 learner with batch norm is ill-conditioned: on real 5-way 1-shot
episodes, float32 round-off alone moves it by up to about 1% against float64, first order
too. Second order differentiates the same forward and backward values once more, so its
float32 error is held to twice the first-order one's (one more pass of the same round-off).
(The float64 reference is exact: batch norm's second derivative is checked against finite
differences in tests/test_maml_second_order.py.)

bf16 compute:
bfloat16 keeps 8 significant bits, so storing the learner's weights in it alone moves each by
up to 2^-9 of its value. The meta-gradient of a conv4 learner is ill-conditioned: that single
rounding of the weights (and nothing else, all arithmetic in float32) already changes it by
about 10% per tensor. bf16 compute rounds again at the output of every layer of the forward
pass, of the inner step and of both backward passes: with the learner's five layers (four conv
blocks and the head), worst-case accumulation of independent roundings each no larger than the
weights' own gives at most five times the weights-only change. The test holds bf16 compute to
that bound on real Omniglot episodes with the released MAML weights.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.models import build_model

LEARNER_LAYERS = 5  # conv blocks 0-3 and the dense head: outputs rounded to bf16 each


def meta_gradients(weights, x, y, policy, first_order=False):
    """d(query cross-entropy after one inner step)/d(theta), as float64 numpy arrays, with
    the layers computing under Keras dtype policy `policy` ("float64": every weight and
    input in float64, batch norm op by op)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model("maml", {"ways": 5, "algorithm": "maml",
                                     "first_order": first_order})
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(weights)
    with tf.GradientTape() as tape:
        support_x, support_y, query_x = (tf.cast(t, model.meta.learner.compute_dtype)
                                         if t.dtype.is_floating else t
                                         for t in model.meta_tasks(x))
        logits = model.meta(support_x, support_y, query_x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int32), logits=tf.cast(logits, tf.float32)))
    gradients = tape.gradient(loss, model.trainable_variables)
    return {v.path: g.numpy().astype(np.float64)
            for v, g in zip(model.trainable_variables, gradients)}


def to_bfloat16_and_back(array):
    return tf.cast(tf.cast(array, tf.bfloat16), tf.float32).numpy()


@pytest.fixture(scope="module")
def episodes_and_weights(vinyals_test):
    from keras_fewshot import zoo
    from keras_fewshot.data import episode_dataset
    (x, y), = episode_dataset(vinyals_test.images, vinyals_test.labels, 5, 1, 5, seed=3,
                              num_episodes=4, batch_size=4).as_numpy_iterator()
    return x, y, zoo.load("maml_omniglot").get_weights()


def relative_error(gradients, reference):
    """|g - g_ref| / |g_ref| over all tensors but the conv biases: batch norm follows each
    conv, so a conv bias has no effect and its gradient is zero but for round-off."""
    paths = [p for p in reference if not ("conv" in p and p.endswith("bias"))]
    difference = np.sqrt(sum(np.sum((gradients[p] - reference[p]) ** 2) for p in paths))
    return difference / np.sqrt(sum(np.sum(reference[p] ** 2) for p in paths))


def test_float32_second_order_meta_gradient_is_as_exact_as_first_order(
        episodes_and_weights):
    x, y, weights = episodes_and_weights
    first = relative_error(meta_gradients(weights, x, y, "float32", first_order=True),
                           meta_gradients(weights, x, y, "float64", first_order=True))
    second = relative_error(meta_gradients(weights, x, y, "float32"),
                            meta_gradients(weights, x, y, "float64"))
    assert second <= 2 * first, (second, first)


def test_bf16_second_order_meta_gradient_differs_from_float32_by_round_off(
        episodes_and_weights):
    x, y, weights = episodes_and_weights
    exact = meta_gradients(weights, x, y, "float32")
    rounded_weights = meta_gradients([to_bfloat16_and_back(w) for w in weights], x, y,
                                     "float32")
    bf16 = meta_gradients(weights, x, y, "mixed_bfloat16")
    for path, g in exact.items():
        if "conv" in path and path.endswith("bias"):
            continue  # no effect through the batch norm after it: its gradient is round-off
        floor = np.linalg.norm(rounded_weights[path] - g)
        change = np.linalg.norm(bf16[path] - g)
        assert change <= LEARNER_LAYERS * floor, (path, change, floor)
