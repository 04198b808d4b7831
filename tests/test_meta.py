"""keras_fewshot.meta: MAML (second and first order), Meta-SGD, Reptile and the LSTM
meta-learner against numpy.

The learner is a linear model y = x w + b (MAMLRegressor with no hidden layer), whose inner
update, meta-gradient and Reptile interpolation have closed forms; the meta-gradient of two
inner steps is also checked against finite differences of a numpy re-computation. The LSTM
meta-learner with its gates fixed (forget 1, input alpha) takes exactly MAML's steps, so the
same closed forms check it.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.meta import MAML, MetaLSTM, MetaSGD, Reptile
from keras_fewshot.models import MAMLClassifier, MAMLRegressor, MetaLSTMClassifier, build_model

ALPHA = 0.05
DIM = 3


def linear_tasks(rng, batch=3, shots=4, queries=5):
    """A batch of linear-regression tasks: inputs dict and query targets, float32."""
    w = rng.normal(size=(batch, DIM, 1))
    sx, qx = rng.normal(size=(batch, shots, DIM)), rng.normal(size=(batch, queries, DIM))
    inputs = {"support_x": sx, "support_y": sx @ w + 0.1 * rng.normal(size=(batch, shots, 1)),
              "query_x": qx}
    return ({k: v.astype(np.float32) for k, v in inputs.items()},
            (qx @ w).astype(np.float32))


def linear_model(algorithm="maml", steps=1, seed=0, **options):
    keras.utils.set_random_seed(seed)
    return MAMLRegressor(algorithm=algorithm, hidden_units=(), input_dim=DIM,
                         inner_learning_rate=ALPHA, train_inner_steps=steps,
                         test_inner_steps=steps, **options)


def weights(model):
    """(w [DIM, 1], b [1]) of the linear learner, float64."""
    kernel, bias = model.meta.learner.get_weights()
    return kernel.astype(np.float64), bias.astype(np.float64)


def mse_gradient(w, b, x, y):
    """Gradient of mean((x w + b - y)^2) with respect to (w, b)."""
    r = x @ w + b - y
    return 2 * x.T @ r / r.size, 2 * r.sum(0) / r.size


def numpy_adapt(w, b, x, y, steps, rate_w=ALPHA, rate_b=ALPHA):
    for _ in range(steps):
        gw, gb = mse_gradient(w, b, x, y)
        w, b = w - rate_w * gw, b - rate_b * gb
    return w, b


def numpy_meta_loss(theta, inputs, query_y, steps):
    """Mean over tasks of the query MSE after `steps` inner steps, theta = [w; b] flat."""
    w, b = theta[:DIM, None], theta[DIM:]
    losses = []
    for sx, sy, qx, qy in zip(inputs["support_x"], inputs["support_y"], inputs["query_x"],
                              query_y):
        aw, ab = numpy_adapt(w, b, sx.astype(np.float64), sy.astype(np.float64), steps)
        losses.append(np.mean((qx @ aw + ab - qy) ** 2))
    return np.mean(losses)


def meta_gradient(model, inputs, query_y):
    """d(query MSE after the inner loop)/d(learner weights) as the training step computes it."""
    support_x, support_y, query_x = model.meta_tasks(inputs)

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            predictions = model.meta(support_x, support_y, query_x, training=True)
            loss = tf.reduce_mean(tf.square(predictions - query_y))
        return tape.gradient(loss, model.trainable_variables)

    return [g.numpy().astype(np.float64) for g in gradients()]


def sgd_step(model, inputs, query_y, learning_rate):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=model.training_loss())
    model.train_on_batch(inputs, query_y)


@pytest.fixture
def tasks():
    return linear_tasks(np.random.default_rng(0))


@pytest.mark.parametrize("steps", [1, 2])
def test_inner_update_matches_numpy_gradient_descent(steps, tasks):
    inputs, _ = tasks
    model = linear_model(steps=steps)
    w, b = weights(model)
    params, outputs = model.meta.adapt(model.meta.initial_weights(),
                                       tf.constant(inputs["support_x"][0]),
                                       tf.constant(inputs["support_y"][0]), steps)
    expected = numpy_adapt(w, b, inputs["support_x"][0].astype(np.float64),
                           inputs["support_y"][0].astype(np.float64), steps)
    for actual, wanted in zip(params, expected):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-6)
    before_last = numpy_adapt(w, b, inputs["support_x"][0], inputs["support_y"][0], steps - 1)
    np.testing.assert_allclose(outputs.numpy(),
                               inputs["support_x"][0] @ before_last[0] + before_last[1],
                               rtol=1e-5, atol=1e-5)


def test_predictions_are_those_of_the_adapted_learner(tasks):
    inputs, _ = tasks
    model = linear_model(steps=2)
    w, b = weights(model)
    predictions = model(inputs).numpy()
    for i in range(len(predictions)):
        aw, ab = numpy_adapt(w, b, inputs["support_x"][i], inputs["support_y"][i], 2)
        np.testing.assert_allclose(predictions[i], inputs["query_x"][i] @ aw + ab, rtol=1e-4,
                                   atol=1e-5)


def test_second_order_meta_gradient_closed_form_one_step(tasks):
    """One step: d/dtheta L_q(theta') = (I - alpha H_s) grad L_q(theta'), H_s = 2/K Xa^T Xa."""
    inputs, query_y = tasks
    model = linear_model(steps=1)
    w, b = weights(model)
    expected_w, expected_b = np.zeros_like(w), np.zeros_like(b)
    for sx, sy, qx, qy in zip(inputs["support_x"], inputs["support_y"], inputs["query_x"],
                              query_y):
        aw, ab = numpy_adapt(w, b, sx, sy, 1)
        gq = np.concatenate([g.ravel() for g in mse_gradient(aw, ab, qx, qy)])
        xa = np.concatenate([sx, np.ones((len(sx), 1))], axis=1)
        meta = (np.eye(DIM + 1) - ALPHA * 2 * xa.T @ xa / len(sx)) @ gq
        expected_w += meta[:DIM, None] / len(query_y)
        expected_b += meta[DIM:] / len(query_y)
    gw, gb = meta_gradient(model, inputs, query_y)
    np.testing.assert_allclose(gw, expected_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, expected_b, rtol=1e-4, atol=1e-5)


def test_second_order_meta_gradient_two_steps_matches_finite_differences(tasks):
    inputs, query_y = tasks
    model = linear_model(steps=2)
    theta = np.concatenate([weights(model)[0].ravel(), weights(model)[1]])
    eps = 1e-5
    numeric = np.array([(numpy_meta_loss(theta + eps * e, inputs, query_y, 2)
                         - numpy_meta_loss(theta - eps * e, inputs, query_y, 2)) / (2 * eps)
                        for e in np.eye(DIM + 1)])
    gw, gb = meta_gradient(model, inputs, query_y)
    np.testing.assert_allclose(np.concatenate([gw.ravel(), gb]), numeric, rtol=1e-3, atol=1e-5)


def test_first_order_drops_exactly_the_hessian_term(tasks):
    """First order: the mean of grad L_q at the adapted weights; differs from second order."""
    inputs, query_y = tasks
    first = linear_model(steps=2, first_order=True)
    w, b = weights(first)
    expected = [np.zeros_like(w), np.zeros_like(b)]
    for sx, sy, qx, qy in zip(inputs["support_x"], inputs["support_y"], inputs["query_x"],
                              query_y):
        grads = mse_gradient(*numpy_adapt(w, b, sx, sy, 2), qx, qy)
        expected = [e + g / len(query_y) for e, g in zip(expected, grads)]
    actual = meta_gradient(first, inputs, query_y)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)
    second = meta_gradient(linear_model(steps=2), inputs, query_y)
    assert not np.allclose(actual[0], second[0], rtol=1e-3)


def test_training_step_applies_the_meta_gradient(tasks):
    inputs, query_y = tasks
    model = linear_model(steps=1)
    before = weights(model)
    gradient = meta_gradient(model, inputs, query_y)
    sgd_step(model, inputs, query_y, 0.1)
    for after, start, g in zip(weights(model), before, gradient):
        np.testing.assert_allclose(after, start - 0.1 * g, rtol=1e-4, atol=1e-6)


def test_meta_sgd_learns_its_per_parameter_learning_rates(tasks):
    """d L_q(theta - alpha o g_s) / d alpha = -g_s o grad L_q(theta'), applied by SGD."""
    inputs, query_y = tasks
    model = linear_model("metasgd", steps=1)
    rates = model.meta.learning_rates
    assert [tuple(r.shape) for r in rates] == [(DIM, 1), (1,)]
    assert all(any(r is v for v in model.trainable_variables) for r in rates)
    w, b = weights(model)
    expected = [np.zeros_like(w), np.zeros_like(b)]
    for sx, sy, qx, qy in zip(inputs["support_x"], inputs["support_y"], inputs["query_x"],
                              query_y):
        support_grads = mse_gradient(w, b, sx, sy)
        query_grads = mse_gradient(*numpy_adapt(w, b, sx, sy, 1), qx, qy)
        expected = [e - gs * gq / len(query_y)
                    for e, gs, gq in zip(expected, support_grads, query_grads)]
    sgd_step(model, inputs, query_y, 0.5)
    for rate, e in zip(rates, expected):
        np.testing.assert_allclose(rate.numpy(), ALPHA - 0.5 * e, rtol=1e-4, atol=1e-6)
    assert not np.allclose(rates[0].numpy(), ALPHA)


def test_meta_sgd_inner_update_uses_its_rates(tasks):
    inputs, _ = tasks
    model = linear_model("metasgd", steps=1)
    rate_w = np.linspace(0.01, 0.1, DIM)[:, None].astype(np.float32)
    model.meta.learning_rates[0].assign(rate_w)
    w, b = weights(model)
    params, _ = model.meta.adapt(model.meta.initial_weights(),
                                 tf.constant(inputs["support_x"][0]),
                                 tf.constant(inputs["support_y"][0]), 1)
    expected = numpy_adapt(w, b, inputs["support_x"][0], inputs["support_y"][0], 1,
                           rate_w=rate_w)
    np.testing.assert_allclose(params[0].numpy(), expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [1.0, 0.25])
def test_reptile_update_is_the_interpolation(epsilon, tasks):
    """theta <- theta + epsilon * mean_i(phi_i - theta), phi_i = 3 SGD steps on the task's
    support and query examples."""
    inputs, query_y = tasks
    model = linear_model("reptile", steps=3)
    w, b = weights(model)
    adapted = [numpy_adapt(w, b, np.concatenate([sx, qx]), np.concatenate([sy, qy]), 3)
               for sx, sy, qx, qy in zip(inputs["support_x"], inputs["support_y"],
                                         inputs["query_x"], query_y)]
    mean_w = np.mean([a[0] for a in adapted], axis=0)
    mean_b = np.mean([a[1] for a in adapted], axis=0)
    sgd_step(model, inputs, query_y, epsilon)
    after_w, after_b = weights(model)
    np.testing.assert_allclose(after_w, w + epsilon * (mean_w - w), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after_b, b + epsilon * (mean_b - b), rtol=1e-4, atol=1e-6)


def test_reptile_refuses_zero_inner_steps():
    with pytest.raises(ValueError, match="train_inner_steps >= 1"):
        linear_model("reptile", steps=0)


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="Unknown meta-learning algorithm 'anil'"):
        linear_model("anil")


def test_zero_train_steps_is_plain_regression_on_mixed_tasks(tasks):
    """The "pretrained on all tasks" baseline: train_inner_steps=0 fits the query points
    of the tasks directly."""
    inputs, query_y = tasks
    model = linear_model(steps=0)
    w, b = weights(model)
    x = inputs["query_x"].reshape(-1, DIM).astype(np.float64)
    gradient = mse_gradient(w, b, x, query_y.reshape(-1, 1))
    sgd_step(model, inputs, query_y, 0.1)
    for after, start, g in zip(weights(model), (w, b), gradient):
        np.testing.assert_allclose(after, start - 0.1 * g, rtol=1e-4, atol=1e-6)


def tiny_classifier(algorithm="maml", ways=3, **options):
    keras.utils.set_random_seed(0)
    return MAMLClassifier(ways=ways, algorithm=algorithm, filters=4, image_size=16,
                          inner_learning_rate=0.1, **{"test_inner_steps": 1, **options})


@pytest.mark.parametrize("algorithm", ["maml", "metalstm"])
def test_adaptation_leaves_the_learner_variables_untouched(algorithm, make_episode, rng):
    model = tiny_classifier(algorithm, train_inner_steps=2)
    for w in model.weights:  # batch-norm moving statistics away from their defaults too
        w.assign(w.numpy() + rng.normal(0, 0.1, w.shape).astype(np.float32))
    before = [w.numpy().copy() for w in model.weights]
    episode, _ = make_episode(3, 2, 2, rng, image_size=16, batch=2)
    for training in (False, True):
        logits = model(episode, training=training).numpy()
        assert logits.shape == (2, 6, 3) and np.isfinite(logits).all()
    for w, value in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), value, err_msg=w.path)


def test_classifier_refuses_another_number_of_classes(make_episode, rng):
    model = tiny_classifier(ways=3)
    episode, _ = make_episode(2, 1, 2, rng, image_size=16)
    with pytest.raises(ValueError, match="classifies exactly 3 classes"):
        model(episode)
    episode, _ = make_episode(3, 1, 2, rng, image_size=16)
    assert model(episode).shape == (6, 3)


def test_classifier_refuses_other_ways_in_a_graph(make_episode, rng):
    model = tiny_classifier(ways=3)
    episode, _ = make_episode(4, 1, 2, rng, image_size=16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="classifies exactly 3 classes"):
        tf.function(lambda e: model(e))(episode)


def test_wrapping_an_unbuilt_learner_is_refused():
    with pytest.raises(ValueError, match="built Keras model"):
        MAML(keras.Sequential([keras.layers.Dense(1)]))


def graph_nodes(function, *specs):
    """Nodes of a traced function's graph, the bodies of its loops and functions included."""
    graph = function.get_concrete_function(*specs).graph.as_graph_def()
    return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "reptile", "metalstm"])
def test_traced_graph_does_not_grow_with_the_number_of_tasks(algorithm):
    model = linear_model(algorithm, steps=2)

    @tf.function
    def step(support_x, support_y, query_x, query_y):
        if model.meta.interpolates:
            return model.meta.meta_gradients(tf.concat([support_x, query_x], 1),
                                             tf.concat([support_y, query_y], 1))[0]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(
                model.meta(support_x, support_y, query_x, training=True) - query_y))
        return tape.gradient(loss, model.trainable_variables)

    def specs(tasks):
        return [tf.TensorSpec((tasks, 4, d)) for d in (DIM, 1, DIM, 1)]

    assert graph_nodes(step, *specs(2)) == graph_nodes(step, *specs(32))


def test_meta_layer_config_round_trip():
    learner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for cls in (MAML, MetaSGD, Reptile, MetaLSTM):
        layer = cls(learner, loss="mse", inner_learning_rate=0.3, train_inner_steps=2,
                    test_inner_steps=4, first_order=True)
        clone = cls.from_config(layer.get_config())
        assert type(clone) is cls
        assert {k: v for k, v in clone.get_config().items() if k != "learner"} == {
            k: v for k, v in layer.get_config().items() if k != "learner"}
        assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape)
                                                          for w in layer.weights]


def test_evaluation_defaults_to_the_settings_a_fixed_n_model_can_do():
    from keras_fewshot import evaluation
    from keras_fewshot.models import PrototypicalNetwork
    five_way = tiny_classifier(ways=5)
    assert evaluation.default_settings(five_way, "vinyals") == ((5, 1), (5, 5))
    assert evaluation.default_settings(PrototypicalNetwork(filters=4), "vinyals") == (
        evaluation.PROTOCOLS["vinyals"]["settings"])
    with pytest.raises(ValueError, match="exactly 5 classes.*no 5-way setting"):
        evaluation.default_settings(five_way, "lake")


def test_meta_step_benchmark_row():
    from keras_fewshot import benchmark, training
    config = training.TrainConfig(model="maml_regressor", dataset="sinusoid", shots=5,
                                  queries=5, episodes_per_step=4,
                                  model_config={"hidden_units": [8], "train_inner_steps": 2})
    row = benchmark.meta_step_ms(config, None, repeats=2)
    assert (row["measure"], row["tasks"], row["train_inner_steps"]) == ("meta_step_ms", 4, 2)
    assert row["first_step_s"] >= 0 and row["ms_median"] > 0 and row["peak_memory_mb"] > 0


# --- The LSTM meta-learner (Ravi & Larochelle 2017) ---

def metalstm_as_gradient_descent(steps, first_order):
    """The linear model with the "metalstm" algorithm, its LSTM's gates fixed at f = 1
    (sigmoid(50) in float32) and i = sigmoid(logit(ALPHA)) = ALPHA: MAML's inner steps."""
    model = linear_model("metalstm", steps=steps, first_order=first_order)
    rule = model.meta.update_rule
    for kernel in (rule.forget_kernel, rule.input_kernel):
        kernel.assign(np.zeros(kernel.shape, np.float32))
    rule.forget_bias.assign(50.0)
    np.testing.assert_allclose(1 / (1 + np.exp(-rule.input_bias.numpy())), ALPHA, rtol=1e-6)
    return model


def test_metalstm_with_fixed_gates_takes_gradient_steps(tasks):
    inputs, _ = tasks
    model = metalstm_as_gradient_descent(steps=2, first_order=True)
    w, b = weights(model)
    params, outputs = model.meta.adapt(model.meta.initial_weights(),
                                       tf.constant(inputs["support_x"][0]),
                                       tf.constant(inputs["support_y"][0]), 2)
    for actual, wanted in zip(params, numpy_adapt(w, b, inputs["support_x"][0],
                                                  inputs["support_y"][0], 2)):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-6)
    before_last = numpy_adapt(w, b, inputs["support_x"][0], inputs["support_y"][0], 1)
    np.testing.assert_allclose(outputs.numpy(),
                               inputs["support_x"][0] @ before_last[0] + before_last[1],
                               rtol=1e-5, atol=1e-5)
    predictions = model(inputs).numpy()
    for i in range(len(predictions)):
        aw, ab = numpy_adapt(w, b, inputs["support_x"][i], inputs["support_y"][i], 2)
        np.testing.assert_allclose(predictions[i], inputs["query_x"][i] @ aw + ab, rtol=1e-4,
                                   atol=1e-5)


def test_metalstm_first_order_treats_loss_and_gradient_as_constants(tasks):
    """theta_T = theta - sigmoid(b_i) sum_t g_t with the g_t constant: d L_q / d theta is
    grad L_q(theta_T) (first-order MAML's) and d L_q / d b_i = -alpha (1 - alpha)
    <grad L_q(theta_T), sum_t g_t>, averaged over tasks."""
    inputs, query_y = tasks
    model = metalstm_as_gradient_descent(steps=2, first_order=True)
    w, b = weights(model)
    expected = [np.zeros_like(w), np.zeros_like(b)]
    expected_bias = 0.0
    for sx, sy, qx, qy in zip(inputs["support_x"], inputs["support_y"], inputs["query_x"],
                              query_y):
        grads = mse_gradient(*numpy_adapt(w, b, sx, sy, 2), qx, qy)
        expected = [e + g / len(query_y) for e, g in zip(expected, grads)]
        steps = [mse_gradient(*numpy_adapt(w, b, sx, sy, t), sx, sy) for t in range(2)]
        expected_bias -= ALPHA * (1 - ALPHA) * sum(
            np.sum(g * (s0 + s1)) for g, s0, s1 in zip(grads, *steps)) / len(query_y)
    gradients = meta_gradient(model, inputs, query_y)
    np.testing.assert_allclose(gradients[0], expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gradients[1], expected[1], rtol=1e-4, atol=1e-5)
    rule = model.meta.update_rule
    bias = [i for i, v in enumerate(model.trainable_variables) if v is rule.input_bias]
    np.testing.assert_allclose(gradients[bias[0]], expected_bias, rtol=1e-3)


def test_metalstm_second_order_matches_finite_differences(tasks):
    inputs, query_y = tasks
    model = metalstm_as_gradient_descent(steps=2, first_order=False)
    theta = np.concatenate([weights(model)[0].ravel(), weights(model)[1]])
    eps = 1e-5
    numeric = np.array([(numpy_meta_loss(theta + eps * e, inputs, query_y, 2)
                         - numpy_meta_loss(theta - eps * e, inputs, query_y, 2)) / (2 * eps)
                        for e in np.eye(DIM + 1)])
    gw, gb = meta_gradient(model, inputs, query_y)[:2]
    np.testing.assert_allclose(np.concatenate([gw.ravel(), gb]), numeric, rtol=1e-3, atol=1e-5)


def test_metalstm_meta_gradient_reaches_every_weight(tasks):
    inputs, query_y = tasks
    model = linear_model("metalstm", steps=2, first_order=True)
    for v, g in zip(model.trainable_variables, meta_gradient(model, inputs, query_y)):
        assert np.isfinite(g).all() and np.abs(g).max() > 0, v.path


def test_metalstm_refuses_a_starting_rate_outside_0_1():
    with pytest.raises(ValueError, match=r"inner_learning_rate .* must be in \(0, 1\)"):
        MAMLRegressor(algorithm="metalstm", hidden_units=(), inner_learning_rate=1.5)


def test_metalstm_classifier_has_the_papers_defaults():
    model = build_model("metalstm", {"filters": 4, "image_size": 16})
    assert isinstance(model, MetaLSTMClassifier) and isinstance(model.meta, MetaLSTM)
    config = model.get_config()
    assert (config["train_inner_steps"], config["test_inner_steps"], config["first_order"],
            config["inner_learning_rate"]) == (5, 5, True, 0.011)
    assert MetaLSTMClassifier().filters == 32 and model.meta.update_rule.hidden_units == 20
    np.testing.assert_allclose(model.meta.update_rule.input_bias.numpy(), -4.5, atol=0.01)
    with pytest.raises(ValueError, match="algorithm is 'metalstm'.*--model=maml"):
        MetaLSTMClassifier(algorithm="maml")


@pytest.mark.parametrize("random_layer", [
    lambda: keras.layers.Dropout(0.2),
    lambda: keras.layers.GaussianNoise(0.1),
])
def test_a_learner_that_is_random_in_training_mode_is_refused(random_layer):
    """The MAML family runs its learner in training mode at test too (batch statistics), so
    dropout would randomise every prediction."""
    learner = keras.Sequential([keras.Input((DIM,)), keras.layers.Dense(4), random_layer(),
                                keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="random in training mode"):
        MAML(learner, loss="mse")


def test_resnet12_with_dropblock_is_refused_and_without_it_accepted():
    from keras_fewshot.backbones import ResNet12
    with pytest.raises(ValueError, match="dropblock.*rate of 0"):
        MAMLClassifier(ways=2, image_size=16,
                       backbone=ResNet12(filters=(4, 4, 4, 4), drop_rate=0.1))
    MAMLClassifier(ways=2, image_size=16, backbone=ResNet12(filters=(4, 4, 4, 4)))
    MAML(keras.Sequential([keras.Input((DIM,)), keras.layers.Dropout(0.0),  # the identity
                           keras.layers.Dense(1)]), loss="mse")
