"""bf16 compute (`dtype_policy="mixed_bfloat16"`) for second-order MAML: is the meta-gradient's
change against float32 round-off?

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


def meta_gradients(weights, x, y, policy):
    """d(query cross-entropy after one inner step)/d(theta), as float64 numpy arrays, with
    the layers computing under Keras dtype policy `policy` (float32 weights either way)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model("maml", {"ways": 5, "algorithm": "maml"})
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(weights)
    with tf.GradientTape() as tape:
        support_x, support_y, query_x = model.meta_tasks(x)
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
                              num_episodes=8, batch_size=8).as_numpy_iterator()
    return x, y, zoo.load("maml_omniglot").get_weights()


def test_bf16_second_order_meta_gradient_differs_from_float32_by_round_off(
        episodes_and_weights):
    x, y, weights = episodes_and_weights
    exact = meta_gradients(weights, x, y, "float32")
    rounded_weights = meta_gradients([to_bfloat16_and_back(w) for w in weights], x, y,
                                     "float32")
    bf16 = meta_gradients(weights, x, y, "mixed_bfloat16")
    kernel_scale = max(np.linalg.norm(g) for path, g in exact.items() if "kernel" in path)
    for path, g in exact.items():
        if "conv" in path and path.endswith("bias"):
            # batch norm follows each conv, so its bias has no effect: the gradient is zero
            # in exact arithmetic and only round-off in either precision
            assert np.linalg.norm(g) < 1e-3 * kernel_scale, path
            continue
        floor = np.linalg.norm(rounded_weights[path] - g)
        change = np.linalg.norm(bf16[path] - g)
        assert change <= LEARNER_LAYERS * floor, (path, change, floor)
