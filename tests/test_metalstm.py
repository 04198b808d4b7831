"""keras_fewshot.models.metalstm: adaptation and meta-gradient against plain SGD, the contract.

With the meta-learner's gates fixed (forget = 1, input = alpha) its T updates are T steps of
gradient descent with learning rate alpha, which an ordinary Keras model trained with
variables re-computes independently.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot import training
from keras_fewshot.layers import Conv4Embedding
from keras_fewshot.models import MetaLSTMClassifier, build_model

TINY = {"ways": 3, "train_inner_steps": 2, "test_inner_steps": 3, "filters": 8,
        "hidden_units": 4}
ALPHA = 0.4


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return MetaLSTMClassifier(**TINY)


@pytest.fixture(scope="module")
def sgd_model():
    """The TINY model with gates fixed at f = 1 (sigmoid(50) in float32), i = ALPHA."""
    keras.utils.set_random_seed(1)
    model = MetaLSTMClassifier(**TINY)
    meta = model.meta_learner
    meta.forget_kernel.assign(np.zeros(meta.forget_kernel.shape, np.float32))
    meta.input_kernel.assign(np.zeros(meta.input_kernel.shape, np.float32))
    meta.forget_bias.assign(50.0)
    meta.input_bias.assign(math.log(ALPHA / (1 - ALPHA)))
    return model


@pytest.fixture(scope="module")
def episode(make_episode):
    return make_episode(3, 2, 2, np.random.default_rng(5))


def sgd_reference(model, episode, query_labels, steps):
    """`steps` steps of SGD on an ordinary Keras copy of the learner (variables, batch
    statistics): (query logits, d query loss / d adapted weights, the sum of the gradients)."""
    learner = keras.Sequential([keras.Input((28, 28, 1)), Conv4Embedding(model.filters),
                                keras.layers.Dense(model.ways)])
    for v, c0 in zip(learner.trainable_variables, model.learner.trainable_variables):
        v.assign(c0)
    support = model.preprocess(episode["support_images"])
    query = model.preprocess(episode["query_images"])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    summed = [tf.zeros_like(v) for v in learner.trainable_variables]
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = ce(episode["support_labels"], learner(support, training=True))
        grads = tape.gradient(loss, learner.trainable_variables)
        for v, g in zip(learner.trainable_variables, grads):
            v.assign_sub(ALPHA * g)
        summed = [s + g for s, g in zip(summed, grads)]
    with tf.GradientTape() as tape:
        logits = learner(query, training=True)
        loss = ce(query_labels, logits)
    return logits, tape.gradient(loss, learner.trainable_variables), summed


def flat(tensors):
    return np.concatenate([np.ravel(t) for t in tensors])


def test_fixed_gates_adapt_by_gradient_descent(sgd_model, episode):
    inputs, query_labels = episode
    expected, _, _ = sgd_reference(sgd_model, inputs, query_labels, steps=3)  # test steps
    np.testing.assert_allclose(sgd_model(inputs).numpy(), expected.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_meta_gradient_treats_loss_and_gradient_as_constants(sgd_model, episode):
    """With L_t, grad_t constant, theta_T = c_0 - alpha sum_t grad_t: d loss / d c_0 is the
    query gradient at theta_T, and d loss / d b_i = -alpha(1 - alpha) <that, sum_t grad_t>."""
    inputs, query_labels = episode
    _, query_grad, summed = sgd_reference(sgd_model, inputs, query_labels, steps=2)
    meta = sgd_model.meta_learner
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            query_labels, sgd_model(inputs, training=True))
    c0_grad, bias_grad = tape.gradient(loss, [sgd_model.learner.trainable_variables,
                                              meta.input_bias])
    np.testing.assert_allclose(flat(c0_grad), flat(query_grad), rtol=1e-3, atol=1e-6)
    expected = -ALPHA * (1 - ALPHA) * np.dot(flat(query_grad), flat(summed))
    np.testing.assert_allclose(bias_grad.numpy(), expected, rtol=1e-3)


def test_every_trainable_weight_gets_a_meta_gradient(model, episode):
    inputs, query_labels = episode
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            query_labels, model(inputs, training=True))
    for w, g in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights)):
        assert g is not None and np.abs(g.numpy()).max() > 0, w.path


def test_calling_leaves_every_variable_untouched(model, episode):
    before = [w.numpy().copy() for w in model.weights]
    model(episode[0], training=True)
    for w, value in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), value, err_msg=w.path)


def test_batched_agrees_with_unbatched(model, make_episode, rng):
    batch, _ = make_episode(3, [1, 2, 1], 2, rng, batch=2)
    logits = model(batch).numpy()
    assert logits.shape == (2, 6, 3) and logits.dtype == np.float32
    for b in range(2):
        np.testing.assert_allclose(logits[b], model({k: v[b] for k, v in batch.items()}),
                                   rtol=1e-5, atol=1e-5)


def test_another_number_of_classes_names_the_problem(model, make_episode, rng):
    episode, _ = make_episode(4, 1, 1, rng)
    with pytest.raises(ValueError, match="classifies exactly 3 classes"):
        model(episode)
    graph = tf.function(lambda e: model(e))
    with pytest.raises(tf.errors.InvalidArgumentError, match="classifies exactly 3 classes"):
        graph(episode)


def test_bad_config_names_the_problem():
    with pytest.raises(ValueError, match="test_inner_steps must be >= 1"):
        build_model("metalstm", {"test_inner_steps": 0})
    with pytest.raises(ValueError, match="ways must be at least 2"):
        build_model("metalstm", {"ways": 1})


def test_trains_with_fit_and_rebuilds_from_its_directory(omniglot_dir, tmp_path, episode):
    config = training.TrainConfig(model="metalstm", model_config=TINY, subset="val", ways=3,
                                  shots=1, queries=2, episodes=2, episodes_per_epoch=2,
                                  lr_decay_every=2, seed=0)
    keras.utils.set_random_seed(0)
    trained = training.train(config, tmp_path / "run", data_source=omniglot_dir, verbose=0)
    keras.utils.set_random_seed(0)
    start = build_model("metalstm", TINY)  # the run's initial weights (same seed)
    for w, w0 in zip(trained.trainable_weights, start.trainable_weights):
        assert not np.array_equal(w.numpy(), w0.numpy()), w.path  # every weight trained
    rebuilt = training.model_from_dir(tmp_path / "run")
    assert isinstance(rebuilt, MetaLSTMClassifier) and rebuilt.test_inner_steps == 3
    np.testing.assert_array_equal(rebuilt(episode[0]).numpy(), trained(episode[0]).numpy())
