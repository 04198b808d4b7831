"""Meta Networks: each piece and the whole episode against numpy re-computations of
Algorithm 1 (Munkhdalai & Yu 2017), the contract, and gradients reaching every weight."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.export import export_saved_model
from keras_fewshot.layers import (AugmentedDense, FastWeightGenerator, FastWeightMemoryRead,
                                  TaskFastWeightLSTM, per_example_kernel_gradients)
from keras_fewshot.models import MetaNetwork

TINY = {"filters": 8, "key_units": 6, "hidden_units": 5, "max_ways": 4, "meta_units": 3}
CONTRACT_ERRORS = (ValueError, tf.errors.InvalidArgumentError)


def _relu(x):
    return np.maximum(x, 0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def randomized(layer, rng, scale=0.5):
    """`layer` with every weight drawn anew (the fast-weight read-outs start constant)."""
    for w in layer.weights:
        value = rng.normal(0.0, scale, w.shape)
        if "moving_variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value.astype(np.float32))
    return layer


def numpy_preprocess(g, p=7.0):
    """(log|g| / p, sign g) if |g| >= e^-p, else (-1, e^p g)."""
    g = np.asarray(g, np.float64)
    large = np.abs(g) >= np.exp(-p)
    with np.errstate(divide="ignore"):
        first = np.where(large, np.log(np.abs(g)) / p, -1.0)
    return np.stack([first, np.where(large, np.sign(g), np.exp(p) * g)], axis=-1)


def numpy_generator(layer, gradients):
    """G: the coordinate-wise MLP over preprocessed gradients, with the layer's weights."""
    x = numpy_preprocess(gradients)
    for i, dense in enumerate(layer.mlp):
        x = x @ dense.kernel.numpy() + dense.bias.numpy()
        if i < len(layer.mlp) - 1:
            x = _relu(x)
    return x[..., 0]


def numpy_task_lstm(layer, gradients, numpy_lstm):
    """F: each coordinate's T preprocessed gradients through the LSTM, last state read out.
    gradients [B, T, *kernel] -> [B, *kernel]."""
    batch, steps, kernel = gradients.shape[0], gradients.shape[1], gradients.shape[2:]
    sequences = numpy_preprocess(gradients.reshape(batch, steps, -1))      # [B, T, P, 2]
    sequences = sequences.transpose(0, 2, 1, 3).reshape(-1, steps, 2)      # [B * P, T, 2]
    last = numpy_lstm(sequences, *(w.numpy() for w in layer.lstm.cell.weights))[:, -1]
    fast = last @ layer.readout.kernel.numpy() + layer.readout.bias.numpy()
    return fast.reshape(batch, *kernel)


def numpy_memory_read(keys, values, query_keys):
    """phi+_j = softmax_i(cosine(r_j, R_i))^T M."""
    attention = _softmax(np.einsum("bqd,bsd->bqs", _unit(query_keys), _unit(keys)))
    return np.einsum("bqs,bsp->bqp", attention, values)


def test_per_example_kernel_gradients_are_each_rows_own_gradient(rng):
    x = tf.constant(rng.normal(size=(2, 3, 4)), tf.float32)
    kernel = tf.Variable(rng.normal(size=(4, 5)), dtype=tf.float32)
    targets = rng.normal(size=(2, 3, 5)).astype(np.float32)

    def row_losses(k):
        return tf.reduce_sum(tf.square(tf.tanh(tf.einsum("bmi,io->bmo", x, k)) - targets), -1)

    with tf.GradientTape() as tape:
        z = tf.einsum("bmi,io->bmo", x, kernel)
        loss = tf.reduce_sum(tf.square(tf.tanh(z) - targets))
    actual = per_example_kernel_gradients(x, tape.gradient(loss, z)).numpy()
    for b in range(2):
        for m in range(3):
            with tf.GradientTape() as tape:
                own = row_losses(kernel)[b, m]
            np.testing.assert_allclose(actual[b, m], tape.gradient(own, kernel).numpy(),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", None])
def test_layer_augmentation_matches_numpy(rng, activation):
    layer = AugmentedDense(4, activation)
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    task_fast = rng.normal(size=(2, 5, 4)).astype(np.float32)    # one per task
    row_fast = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)  # one per row
    act = _relu if activation == "relu" else (lambda z: z)
    kernel = None
    for fast, fast_pre in ((task_fast, np.einsum("bmi,bio->bmo", x, task_fast)),
                           (row_fast, np.einsum("bmi,bmio->bmo", x, row_fast))):
        out = layer(x, fast).numpy()
        kernel = layer.kernel.numpy()
        np.testing.assert_allclose(out, act(x @ kernel) + act(fast_pre), rtol=1e-5, atol=1e-5)
    # The first n output units: the slow kernel's first n columns, fast weights of width n.
    out = layer(x, row_fast[..., :2], active_units=2).numpy()
    expected = act(x @ kernel[:, :2]) + act(np.einsum("bmi,bmio->bmo", x, row_fast[..., :2]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fast_kernel must be"):
        layer(x, task_fast[0])


def test_fast_weight_generator_is_a_coordinatewise_mlp(rng):
    layer = FastWeightGenerator(hidden_units=4)
    layer.build()
    randomized(layer, rng)
    gradients = (rng.normal(size=(2, 3, 5, 4)) * 10.0 ** rng.integers(-5, 1, (2, 3, 5, 4)))
    out = layer(gradients.astype(np.float32)).numpy()
    assert out.shape == gradients.shape and np.abs(out).min() > 0
    np.testing.assert_allclose(out, numpy_generator(layer, gradients), rtol=1e-4, atol=1e-5)


def test_task_fast_weights_are_an_lstm_over_each_coordinates_gradients(rng, numpy_lstm):
    layer = TaskFastWeightLSTM(units=4)
    layer.build()
    randomized(layer, rng)
    gradients = rng.normal(size=(2, 5, 3, 4)) * 10.0 ** rng.integers(-5, 1, (2, 5, 3, 4))
    out = layer(gradients.astype(np.float32)).numpy()
    assert out.shape == (2, 3, 4) and np.abs(out).min() > 0
    np.testing.assert_allclose(out, numpy_task_lstm(layer, gradients, numpy_lstm),
                               rtol=1e-4, atol=1e-5)
    # Order matters (an LSTM reads the sequence): reversing the steps changes the weights.
    reversed_out = layer(gradients[:, ::-1].astype(np.float32)).numpy()
    assert not np.allclose(reversed_out, out, atol=1e-4)


def test_memory_read_is_cosine_softmax_attention_over_the_support(rng):
    keys = rng.normal(size=(2, 5, 6)).astype(np.float32)
    values = rng.normal(size=(2, 5, 7)).astype(np.float32)
    query_keys = rng.normal(size=(2, 3, 6)).astype(np.float32)
    read = FastWeightMemoryRead()(keys, values, query_keys).numpy()
    np.testing.assert_allclose(read, numpy_memory_read(keys, values, query_keys),
                               rtol=1e-5, atol=1e-6)
    # A query whose key is a stored key's direction weights that slot the most.
    read = FastWeightMemoryRead()(keys, np.eye(5, dtype=np.float32)[None].repeat(2, 0),
                                  3.0 * keys[:, 2:3]).numpy()
    assert (read[:, 0].argmax(-1) == 2).all()


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(5)
    return randomized(MetaNetwork(**TINY), np.random.default_rng(5))


@pytest.fixture
def sorted_episode(make_episode, rng):
    """3-way with shots 2, 1, 2 and the support sorted by label, so the verification pairs
    (t, t + 1) include same-class pairs; 6 queries."""
    episode, query_labels = make_episode(3, [2, 1, 2], 2, rng)
    order = np.argsort(episode["support_labels"], kind="stable")
    return {**episode, "support_images": episode["support_images"][order],
            "support_labels": episode["support_labels"][order]}, query_labels


def numpy_metanet(model, support, labels, query, numpy_lstm):
    """Algorithm 1 in numpy on features support [S, D], query [Q, D], with model's weights."""
    ways = labels.max() + 1
    # Task level: verification loss on the pairs (t, t + 1 mod S); its gradients -> F.
    key = model.key.kernel.numpy()
    w, c = model.verification.kernel.numpy(), model.verification.bias.numpy()
    partner, same = np.roll(support, -1, 0), labels == np.roll(labels, -1)
    z_first, z_second = support @ key, partner @ key
    diff = z_first - z_second                                    # u(x) = x Q, linear
    d_logit = _sigmoid(np.abs(diff) @ w + c) - same              # dL_t / d logit_t
    d_first = d_logit[:, None] * w * np.sign(diff)
    d_second = -d_first
    pair_gradients = (support[:, :, None] * d_first[:, None]
                      + partner[:, :, None] * d_second[:, None])   # [T, D, U]
    theta = numpy_task_lstm(model.task_meta, pair_gradients[None], numpy_lstm)[0]
    support_keys = support @ key + support @ theta
    query_keys = query @ key + query @ theta
    # Example level: each support example's softmax cross-entropy gradients -> G -> memory.
    w1, w2 = model.hidden.kernel.numpy(), model.output_layer.kernel.numpy()[:, :ways]
    z1 = support @ w1
    hidden = _relu(z1)
    d_logits = _softmax(hidden @ w2) - np.eye(ways)[labels]
    d_hidden = (d_logits @ w2.T) * (z1 > 0)
    hidden_fast = numpy_generator(model.hidden_meta, support[:, :, None] * d_hidden[:, None])
    output_fast = numpy_generator(model.output_meta, hidden[:, :, None] * d_logits[:, None])
    memory = np.concatenate([hidden_fast.reshape(len(labels), -1),
                             output_fast.reshape(len(labels), -1)], axis=-1)
    # Queries: read fast weights by attention, then the layer-augmented base learner.
    read = numpy_memory_read(support_keys[None], memory[None], query_keys[None])[0]
    split = hidden_fast[0].size
    query_hidden_fast = read[:, :split].reshape(len(query), *w1.shape)
    query_output_fast = read[:, split:].reshape(len(query), *w2.shape)
    h = _relu(query @ w1) + _relu(np.einsum("qi,qio->qo", query, query_hidden_fast))
    return h @ w2 + np.einsum("qi,qin->qn", h, query_output_fast)


def test_fast_weight_logits_follow_algorithm_1(model, rng, numpy_lstm):
    # Diverse, signed features, so that the attention (and with it F) moves the answer.
    dim = model.hidden.kernel.shape[0]
    support, query = 3.0 * rng.normal(size=(5, dim)), 3.0 * rng.normal(size=(6, dim))
    labels = np.array([0, 0, 1, 2, 2], np.int32)  # pairs (t, t + 1): same and different
    logits = model.fast_weight_logits(tf.constant(support[None], tf.float32), labels[None],
                                      tf.constant(query[None], tf.float32), 3)[0].numpy()
    assert logits.shape == (6, 3)
    np.testing.assert_allclose(logits, numpy_metanet(model, support, labels, query,
                                                     numpy_lstm), rtol=1e-3, atol=1e-4)


def test_classify_is_algorithm_1_on_the_conv4_features(model, sorted_episode):
    episode, _ = sorted_episode
    support, query = model.embed_episode(model.embedding, episode["support_images"][None],
                                         episode["query_images"][None])
    expected = model.fast_weight_logits(support, episode["support_labels"][None], query, 3)
    np.testing.assert_array_equal(model(episode).numpy(), expected[0].numpy())


def test_every_weight_learns_from_the_query_loss(model, sorted_episode):
    """Gradients flow through the meta information: the verification head, F and G train."""
    episode, query_labels = sorted_episode
    loss_fn = model.training_loss()
    with tf.GradientTape() as tape:
        loss = loss_fn(query_labels, model(episode, training=True))
    gradients = tape.gradient(loss, model.trainable_weights)
    silent = [w.path for w, g in zip(model.trainable_weights, gradients)
              if g is None or not np.any(g.numpy())]
    assert not silent


def test_every_weight_learns_from_its_initialisation(sorted_episode):
    """From the model's own initial weights (no randomisation), F, the verification head and
    the read-outs get a gradient at once and, after one step has moved G's read-out, every
    weight does: no ReLU branch starts dead (an all-zero fast kernel W+ makes relu(x W+)
    pass no gradient, for ever)."""
    keras.utils.set_random_seed(2)
    model = MetaNetwork(**TINY)
    episode, query_labels = sorted_episode
    loss_fn, optimizer = model.training_loss(), keras.optimizers.Adam(1e-3)

    def silent_weights():
        with tf.GradientTape() as tape:
            loss = loss_fn(query_labels, model(episode, training=True))
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return [w.path for w, g in zip(model.trainable_weights, gradients)
                if g is None or not np.any(g.numpy())]

    assert not [p for p in silent_weights() if not p.startswith(("hidden_meta/hidden",
                                                                 "output_meta/hidden"))]
    assert not silent_weights()


@pytest.mark.parametrize("ways, shots", [(2, 1), (2, 3), (4, 1)])
def test_any_ways_up_to_max_ways_batched_or_not(model, make_episode, rng, ways, shots):
    episodes, _ = make_episode(ways, shots, 2, rng, batch=2)
    batched = model(episodes).numpy()
    assert batched.shape == (2, 2 * ways, ways) and np.isfinite(batched).all()
    for b in range(2):
        single = model({k: v[b] for k, v in episodes.items()}).numpy()
        np.testing.assert_allclose(single, batched[b], rtol=1e-4, atol=1e-5)


def test_query_logits_do_not_depend_on_other_queries(model, make_episode, rng):
    episode, _ = make_episode(3, 2, 3, rng, image_size=105, channels=3)
    logits = model(episode).numpy()
    for i in (0, 4):
        alone = model({**episode, "query_images": episode["query_images"][i:i + 1]}).numpy()
        np.testing.assert_allclose(alone[0], logits[i], rtol=1e-4, atol=1e-5)


def test_more_ways_than_the_output_layer_names_the_problem(model, make_episode, rng):
    episode, _ = make_episode(5, 1, 1, rng)
    with pytest.raises(ValueError, match="at most 4 classes"):
        model(episode)
    signature = {"support_images": tf.TensorSpec([None, 28, 28, 1], tf.uint8),
                 "support_labels": tf.TensorSpec([None], tf.int32),
                 "query_images": tf.TensorSpec([None, 28, 28, 1], tf.uint8)}
    graph = tf.function(lambda e: model(e), input_signature=[signature])
    assert graph(make_episode(4, 1, 1, rng)[0]).shape == (4, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 4 classes"):
        graph(episode)


@pytest.mark.parametrize("change, message", [
    (lambda e: {**e, "support_labels": np.where(e["support_labels"] == 1, 2,
                                                e["support_labels"])},
     "has no support example"),
    (lambda e: {**e, "query_images": e["query_images"][..., 0]}, "query_images must have rank"),
    (lambda e: {**e, "support_labels": e["support_labels"][:-1]}, "different numbers of"),
])
def test_bad_episode_names_the_problem(model, make_episode, rng, change, message):
    episode, _ = make_episode(3, 1, 1, rng)
    with pytest.raises(CONTRACT_ERRORS, match=message):
        model(change(episode))


def test_saved_model_serves_the_model_answers(model, make_episode, rng, tmp_path, np_softmax):
    episode, _ = make_episode(4, 2, 3, rng, image_size=105, channels=3)
    path = export_saved_model(model, tmp_path / "metanet")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    outputs = serve(**{k: tf.constant(v) for k, v in episode.items()})
    probabilities = np_softmax(model(episode).numpy().astype(np.float64))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"].numpy(), probabilities.argmax(-1))
    assert probabilities.std() > 1e-3  # the randomized fast weights make a non-trivial answer
    five_way, _ = make_episode(5, 1, 1, rng)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 4 classes"):
        serve(**{k: tf.constant(v) for k, v in five_way.items()})


def test_fit_on_one_episode_lowers_its_loss(make_episode, rng):
    """model.fit (as training.train calls it) with the model's loss and metrics learns;
    measured in training mode (batch statistics), as fit sees the episode."""
    keras.utils.set_random_seed(1)
    model = MetaNetwork(**TINY)
    episode, query_labels = make_episode(3, 1, 2, rng, batch=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=model.training_loss(),
                  metrics=model.training_metrics())

    def loss():
        return float(model.training_loss()(query_labels, model(episode, training=True)))

    before = loss()
    # a Dataset keeps its own order: fit's default shuffle=True would only warn it is ignored
    model.fit(tf.data.Dataset.from_tensors((episode, query_labels)).repeat(20), verbose=0,
              shuffle=False)
    assert loss() < 0.5 * before


def test_evaluation_and_training_keep_to_max_ways(omniglot_dir, tmp_path):
    from keras_fewshot import evaluation, training
    five_way = MetaNetwork(**{**TINY, "max_ways": 5})
    assert evaluation.default_settings(five_way, "vinyals") == ((5, 1), (5, 5))
    with pytest.raises(ValueError, match="at most 5 classes.*no setting"):
        evaluation.default_settings(five_way, "lake")  # 20-way only
    config = training.TrainConfig(model="metanet", model_config={**TINY, "max_ways": 5},
                                  subset="val", ways=20, episodes=2, episodes_per_epoch=2)
    with pytest.raises(ValueError, match="at most 5 classes but the episodes are 20-way"):
        training.train(config, tmp_path / "run", data_source=omniglot_dir, verbose=0)
    assert not (tmp_path / "run").exists()
