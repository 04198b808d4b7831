"""keras_fewshot.layers.meta_lstm against a numpy re-computation of its equations."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.layers import MetaLearnerLSTM, preprocess_gradient


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_preprocess(x, p=10.0):
    """Andrychowicz et al. (2016), appendix A, one value at a time, in float64."""
    out = []
    for v in np.asarray(x, np.float64).ravel():
        out.append((math.log(abs(v)) / p, math.copysign(1.0, v)) if abs(v) >= math.exp(-p)
                   else (-1.0, math.exp(p) * v))
    return np.array(out).reshape(np.shape(x) + (2,))


def numpy_meta_learner(layer, theta, gradients, losses):
    """theta after len(gradients) updates, recomputed from the layer's weights in float64."""
    w = {v.path.split("/")[-1]: v.numpy().astype(np.float64) for v in layer.weights}
    units = layer.hidden_units
    theta = theta.astype(np.float64)
    h = np.zeros((theta.size, units))
    s = np.zeros((theta.size, units))
    f = np.zeros(theta.size)
    i = np.zeros(theta.size)
    for grad, loss in zip(gradients, losses):
        x = np.concatenate([numpy_preprocess(grad, layer.p),
                            np.tile(numpy_preprocess(loss, layer.p), (theta.size, 1))], -1)
        z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]  # Keras order i, f, c, o
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        s = sigmoid(zf) * s + sigmoid(zi) * np.tanh(zc)
        h = sigmoid(zo) * np.tanh(s)
        kf, ki = w["forget_kernel"], w["input_kernel"]
        f = sigmoid(h @ kf[:units] + kf[units] * theta + kf[units + 1] * f + w["forget_bias"])
        i = sigmoid(h @ ki[:units] + ki[units] * theta + ki[units + 1] * i + w["input_bias"])
        theta = f * theta - i * grad
    return theta


def run_layer(layer, theta, gradients, losses):
    theta = tf.constant(theta, tf.float32)
    state = layer.initial_state(theta)
    for grad, loss in zip(gradients, losses):
        theta, state = layer(theta, tf.constant(grad, tf.float32), tf.constant(loss), state)
    return theta, state


@pytest.fixture
def problem(rng):
    """Parameters and 3 steps of gradients spanning both preprocessing branches, and losses."""
    theta = rng.normal(0.0, 0.5, 12).astype(np.float32)
    gradients = [rng.normal(0.0, 1.0, 12).astype(np.float32) * 10.0 ** rng.integers(-7, 2, 12)
                 for _ in range(3)]
    gradients[0][:3] = [0.0, -2e-5, 3e-6]  # zero, and on both sides of e^-10 = 4.5e-5
    return theta, gradients, np.array([2.3, 1.1, 0.02], np.float32)


def perturbed_layer(seed, **config):
    """A built MetaLearnerLSTM with every weight moved off its start value (gates that vary)."""
    keras.utils.set_random_seed(seed)
    layer = MetaLearnerLSTM(**config)
    layer.build()
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(w.numpy() + rng.normal(0.0, 0.5, w.shape).astype(np.float32))
    return layer


def test_preprocess_gradient_matches_its_definition():
    values = np.array([0.0, 1e-9, -3e-5, 4.6e-5, -1e-3, 0.5, -7.0, 1e4], np.float32)
    out = preprocess_gradient(values).numpy()
    assert out.shape == (8, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, numpy_preprocess(values), rtol=1e-5, atol=1e-6)
    # the two branches nearly agree at the threshold |x| = e^-p: (-1, +-1)
    np.testing.assert_allclose(preprocess_gradient([math.exp(-10) * 0.9999]).numpy(),
                               [[-1.0, 0.9999]], atol=1e-4)
    assert preprocess_gradient(np.zeros((2, 3)), p=5.0).shape == (2, 3, 2)


@pytest.mark.parametrize("hidden_units, p", [(20, 10.0), (3, 5.0)])
def test_three_updates_match_numpy(problem, hidden_units, p):
    theta, gradients, losses = problem
    layer = perturbed_layer(0, hidden_units=hidden_units, p=p)
    actual, (h, s, f, i) = run_layer(layer, theta, gradients, losses)
    assert actual.shape == (12,) and h.shape == s.shape == (12, hidden_units)
    assert f.shape == i.shape == (12,)
    np.testing.assert_allclose(actual.numpy(), numpy_meta_learner(layer, theta, gradients,
                                                                  losses), rtol=1e-5, atol=1e-5)


def test_fixed_gates_reduce_to_gradient_descent(problem):
    """f = 1 and i = sigmoid(b_i) (kernels 0, b_f huge): theta_t = theta_{t-1} - alpha grad_t."""
    theta, gradients, losses = problem
    layer = MetaLearnerLSTM(forget_bias=50.0, input_bias=-1.0, gate_init_scale=0.0)
    actual, _ = run_layer(layer, theta, gradients, losses)
    expected = theta.astype(np.float64) - sigmoid(-1.0) * np.sum(gradients, axis=0)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_gates_start_as_the_paper_initialises_them(problem):
    theta, gradients, losses = problem
    layer = MetaLearnerLSTM()  # biases 5 and -4.5, kernels within +-0.01
    _, (_, _, f, i) = run_layer(layer, theta, gradients[:1], losses[:1])
    # |kernel . [h, theta, 0]| <= 0.01 * (20 + max|theta|)
    slack = 0.01 * (20 + np.abs(theta).max())
    assert np.all((f.numpy() >= sigmoid(5.0 - slack)) & (f.numpy() <= sigmoid(5.0 + slack)))
    assert np.all((i.numpy() >= sigmoid(-4.5 - slack)) & (i.numpy() <= sigmoid(-4.5 + slack)))


def test_gradients_reach_theta_and_every_weight(problem):
    """The layer itself stops nothing: keras_fewshot.meta.MetaLSTM decides what is constant."""
    theta, gradients, losses = problem
    layer = perturbed_layer(1)
    theta = tf.constant(theta)
    inputs = [tf.constant(g) for g in gradients[:2]]
    with tf.GradientTape() as tape:
        tape.watch([theta] + inputs)
        state = layer.initial_state(theta)
        out = theta
        for t in range(2):
            out, state = layer(out, inputs[t], losses[t], state)
        total = tf.reduce_sum(out)
    grads = tape.gradient(total, [theta] + inputs + layer.trainable_weights)
    for name, g in zip(["theta", "grad_1", "grad_2"] + [w.path for w in layer.trainable_weights],
                       grads):
        assert g is not None and np.abs(g.numpy()).max() > 0, name


def test_config_round_trip_gives_the_same_updates(problem):
    theta, gradients, losses = problem
    layer = perturbed_layer(2, hidden_units=4, p=8.0, forget_bias=3.0, input_bias=-2.0,
                            gate_init_scale=0.1)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is MetaLearnerLSTM and clone.get_config() == layer.get_config()
    assert clone.built  # from the serialized build config
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(run_layer(clone, theta, gradients, losses)[0].numpy(),
                                  run_layer(layer, theta, gradients, losses)[0].numpy())
