"""Matching, relation and Siamese pieces against numpy re-computations of their equations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.layers import (CosineAttentionClassifier, QueryAttentionEmbedding,
                                  SiameseL1Head, SupportContextEmbedding)
from keras_fewshot.models import build_model


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_cosine_attention_is_the_papers_attention_sum(rng, scale):
    query, support = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 5, 6))
    labels = np.array([[0, 1, 2, 0, 0], [2, 2, 1, 0, 1]], np.int32)
    logits = CosineAttentionClassifier(scale)(query, support, labels, num_classes=3).numpy()
    attention = _softmax(scale * np.einsum("bqd,bsd->bqs", _unit(query), _unit(support)))
    expected = np.einsum("bqs,bsn->bqn", attention, np.eye(3)[labels])  # sum_i a(x, x_i) y_i
    np.testing.assert_allclose(_softmax(logits), expected, rtol=1e-5, atol=1e-6)


def test_support_context_embedding_is_bilstm_plus_skip(rng, numpy_lstm):
    support = rng.normal(size=(2, 5, 4)).astype(np.float32)
    layer = SupportContextEmbedding()
    out = layer(support).numpy()
    forward, backward = layer.bilstm.forward_layer, layer.bilstm.backward_layer
    fwd = numpy_lstm(support, *(w.numpy() for w in forward.cell.weights))
    bwd = numpy_lstm(support[:, ::-1], *(w.numpy() for w in backward.cell.weights))[:, ::-1]
    np.testing.assert_allclose(out, fwd + bwd + support, rtol=1e-4, atol=1e-5)


def test_query_attention_embedding_follows_the_read_equations(rng):
    query = rng.normal(size=(2, 3, 4)).astype(np.float32)
    support = rng.normal(size=(2, 5, 4)).astype(np.float32)
    layer = QueryAttentionEmbedding(steps=3)
    out = layer(query, support).numpy()
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    h, c = np.zeros_like(query), np.zeros_like(query)
    for _ in range(3):
        r = np.einsum("bqs,bsd->bqd", _softmax(np.einsum("bqd,bsd->bqs", h, support)), support)
        i, f, g, o = np.split(np.concatenate([query, h, r], -1) @ kernel + bias, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c) + query  # h_t = h^_t + f'(x)
    np.testing.assert_allclose(out, h, rtol=1e-4, atol=1e-5)


def test_siamese_l1_head_is_weighted_l1_distance(rng):
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    layer = SiameseL1Head()
    logits = layer(a, b).numpy()
    expected = np.abs(a - b) @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, layer(b, a).numpy(), rtol=1e-6)  # symmetric


@pytest.mark.parametrize("bias", [0.0, -300.0])
def test_siamese_class_score_is_log_mean_pair_probability(make_episode, rng, bias):
    """Koch's few-shot rule with K shots: a class scores the mean p(query, shot) of its shots.

    bias -300 makes every p underflow float32 (e^-300): the ranking must survive in log space.
    """
    model = build_model("siamese", {"filters": 8})
    model.head.bias.assign(bias)
    episode, _ = make_episode(3, [1, 2, 3], 2, rng)  # uneven shots, 6 queries
    scores = model(episode).numpy()
    features = lambda x: model.features(model.preprocess(tf.constant(x))).numpy()
    support, query = features(episode["support_images"]), features(episode["query_images"])
    logit = (np.abs(query[:, None] - support[None]) @ model.head.kernel.numpy()
             + bias).astype(np.float64)                             # [Q, S]
    log_p = -np.logaddexp(0.0, -logit)                              # log sigmoid, exact
    for n in range(3):
        shots = log_p[:, episode["support_labels"] == n]
        expected = np.logaddexp.reduce(shots, axis=1) - np.log(shots.shape[1])
        np.testing.assert_allclose(scores[:, n], expected, rtol=1e-4, atol=1e-3)
    assert np.isfinite(scores).all()


def relation_of_built_pairs(model, pairs, training):
    """g_phi on explicitly concatenated [query; class] maps [M, h, w, 2C] (the paper's form)."""
    module = model.relation
    features = module.convs(tf.constant(pairs), training=training)
    return tf.squeeze(module.score(module.hidden(features)), -1).numpy()


@pytest.mark.parametrize("training", [False, True])
def test_relation_network_scores_query_against_summed_class_maps(make_episode, rng, training):
    """Against the pairs built and concatenated: in training mode batch norm sees all Q * N
    pairs of the episode at once, as it would the concatenated ones."""
    model = build_model("relation")
    for w in model.weights:  # off the initial weights: biases and moving statistics count
        value = w.numpy() + rng.normal(0, 0.1, w.shape)
        w.assign((np.abs(value) if "variance" in w.path else value).astype(np.float32))
    episode, _ = make_episode(3, [1, 2, 3], 2, rng)  # uneven shots, 6 queries
    logits = model(episode, training=training).numpy()
    assert logits.shape == (6, 3)
    support_maps, query_maps = (m[0].numpy() for m in model.embed_episode(
        model.embedding, episode["support_images"][None], episode["query_images"][None],
        training))
    class_maps = [support_maps[episode["support_labels"] == n].sum(axis=0) for n in range(3)]
    pairs = np.stack([np.concatenate([q, c], axis=-1) for q in query_maps for c in class_maps])
    np.testing.assert_allclose(logits, relation_of_built_pairs(model, pairs, training)
                               .reshape(6, 3), rtol=1e-4, atol=1e-4)


def test_relation_mse_loss_matches_numpy(rng):
    model = build_model("relation")
    labels, logits = np.array([0, 2, 1]), rng.normal(size=(3, 3)).astype(np.float32)
    expected = np.mean((_sigmoid(logits) - np.eye(3)[labels]) ** 2)
    assert float(model.training_loss()(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_pair_loss_is_per_pair_binary_cross_entropy(rng):
    loss = build_model("siamese", {"filters": 4}).training_loss()
    labels, logits = np.array([1, 0, 0, 1]), rng.normal(size=4).astype(np.float32) * 3
    p = _sigmoid(logits.astype(np.float64))
    per_pair = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    np.testing.assert_allclose(loss.call(labels, logits).numpy(), per_pair, rtol=1e-5)
    assert float(loss(labels, logits)) == pytest.approx(per_pair.mean(), rel=1e-5)


@pytest.mark.parametrize("name,config", [("matching", {}), ("matching", {"fce": True}),
                                         ("relation", {}), ("siamese", {"dense_units": 8})])
def test_metric_models_honour_the_contract(name, config, make_episode, rng):
    model = build_model(name, config)
    episodes, _ = make_episode(4, 2, 3, rng, batch=2)
    batched = model(episodes).numpy()
    assert batched.shape == (2, 12, 4) and batched.dtype == np.float32
    for b in range(2):
        single = {k: v[b] for k, v in episodes.items()}
        np.testing.assert_allclose(model(single).numpy(), batched[b], rtol=1e-4, atol=1e-5)
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(episodes).numpy(), batched, rtol=1e-5, atol=1e-6)


# --- Full context embeddings: shapes, context dependence, permutations ------------------------
# Contract (layers/matching.py): SupportContextEmbedding g: [B, S, D] -> [B, S, D];
# QueryAttentionEmbedding f: (f'(x) [B, Q, D], g(S) [B, S, D]) -> [B, Q, D].

FCE_DIM = 6
EPISODE_SIZES = [(2, 1), (5, 1), (5, 5), (20, 2)]  # (N, K): S = N * K support items


def _variables(layer):
    """(id, value) of every variable: the same objects and values mean no rebuild happened."""
    return [(id(w), w.numpy().copy()) for w in layer.weights]


def _assert_same_variables(before, after):
    assert [i for i, _ in before] == [i for i, _ in after]
    for (_, a), (_, b) in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_fce_layers_keep_shapes_for_any_episode_size_without_rebuilding(rng):
    g_layer, f_layer = SupportContextEmbedding(), QueryAttentionEmbedding(steps=2)
    first_s = rng.normal(size=(1, 3, FCE_DIM)).astype(np.float32)
    first_q = rng.normal(size=(1, 4, FCE_DIM)).astype(np.float32)
    first_g = g_layer(first_s).numpy()
    first_f = f_layer(first_q, first_g).numpy()
    g_vars, f_vars = _variables(g_layer), _variables(f_layer)
    assert len(g_vars) == 6 and len(f_vars) == 2  # 2 LSTMs x (kernel, recurrent, bias); W, b
    for batch, (ways, shots) in zip((1, 2, 1, 3), EPISODE_SIZES):
        queries = 3 * ways
        support = rng.normal(size=(batch, ways * shots, FCE_DIM)).astype(np.float32)
        query = rng.normal(size=(batch, queries, FCE_DIM)).astype(np.float32)
        g = g_layer(support)
        f = f_layer(query, g)
        assert g.shape == (batch, ways * shots, FCE_DIM) and g.dtype == tf.float32
        assert f.shape == (batch, queries, FCE_DIM) and f.dtype == tf.float32
        assert np.isfinite(g.numpy()).all() and np.isfinite(f.numpy()).all()
    _assert_same_variables(g_vars, _variables(g_layer))
    _assert_same_variables(f_vars, _variables(f_layer))
    # The first episode still gives its first answer after all the other sizes.
    np.testing.assert_allclose(g_layer(first_s).numpy(), first_g, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f_layer(first_q, first_g).numpy(), first_f, rtol=1e-6, atol=1e-6)


def test_fce_model_keeps_shapes_for_any_episode_size(make_episode, rng):
    model = build_model("matching", {"filters": 8, "fce": True, "fce_steps": 2})
    variables = _variables(model)
    for ways, shots in EPISODE_SIZES:
        episode, _ = make_episode(ways, shots, 1, rng)
        logits = model(episode).numpy()
        assert logits.shape == (ways, ways) and logits.dtype == np.float32
        assert np.isfinite(logits).all()
    _assert_same_variables(variables, _variables(model))


def test_support_context_reads_the_whole_support_set(rng):
    """Changing support item j changes g of every other item i (before and after j: the
    LSTM is bidirectional), unlike a per-item map; the skip connection alone is per-item."""
    layer = SupportContextEmbedding()
    support = rng.normal(size=(1, 5, FCE_DIM)).astype(np.float32)
    changed = support.copy()
    changed[0, 2] += rng.normal(size=FCE_DIM).astype(np.float32)
    g, g_changed = layer(support).numpy(), layer(changed).numpy()
    for i in (0, 1, 3, 4):  # items on both sides of the changed one
        assert np.abs(g_changed[0, i] - g[0, i]).max() > 1e-3, i
        np.testing.assert_array_equal(changed[0, i], support[0, i])  # their own input is equal
    # The bidirectional LSTM part alone carries the context: g - x differs at the other items.
    context, context_changed = g - support, g_changed - changed
    assert np.abs(context_changed[0, [0, 1, 3, 4]] - context[0, [0, 1, 3, 4]]).max() > 1e-3


def test_query_attention_reads_the_whole_support_set_but_not_other_queries(rng):
    layer = QueryAttentionEmbedding(steps=3)
    query = rng.normal(size=(1, 4, FCE_DIM)).astype(np.float32)
    support = rng.normal(size=(1, 5, FCE_DIM)).astype(np.float32)
    f = layer(query, support).numpy()
    changed = support.copy()
    changed[0, 3] += rng.normal(size=FCE_DIM).astype(np.float32)
    f_changed = layer(query, changed).numpy()
    assert (np.abs(f_changed - f).max(axis=-1) > 1e-4).all()  # every query's f moves
    # Queries are read independently: changing query 0 leaves the others' f as they were.
    other = query.copy()
    other[0, 0] += 1.0
    f_other = layer(other, support).numpy()
    assert np.abs(f_other[0, 0] - f[0, 0]).max() > 1e-3
    np.testing.assert_allclose(f_other[0, 1:], f[0, 1:], rtol=1e-5, atol=1e-6)


def _change_support_item(episode, label, rng):
    """The episode with the first support image of class `label` replaced by fresh noise."""
    j = int(np.flatnonzero(episode["support_labels"] == label)[0])
    images = episode["support_images"].copy()
    images[j] = rng.integers(0, 256, images[j].shape, dtype=np.uint8)
    return {**episode, "support_images": images}


def test_fce_logits_of_other_classes_depend_on_each_support_item(make_episode, rng):
    """Without FCE, class n's logit reads only class n's support embeddings, so replacing a
    class-0 support image leaves the other classes' logits exactly as they were; with FCE,
    g of every support item (and f of every query) depends on it, so they all move."""
    episode, _ = make_episode(4, 2, 2, rng)
    changed = _change_support_item(episode, 0, rng)
    keras_seed = 7
    keras.utils.set_random_seed(keras_seed)
    plain = build_model("matching", {"filters": 8})
    before, after = plain(episode).numpy(), plain(changed).numpy()
    assert np.abs(after[:, 0] - before[:, 0]).max() > 1e-4
    np.testing.assert_allclose(after[:, 1:], before[:, 1:], rtol=1e-5, atol=1e-6)

    keras.utils.set_random_seed(keras_seed)
    fce = build_model("matching", {"filters": 8, "fce": True, "fce_steps": 2})
    before, after = fce(episode).numpy(), fce(changed).numpy()
    assert (np.abs(after[:, 1:] - before[:, 1:]).max(axis=0) > 1e-6).all()


def _permuted_support(episode, perm):
    return {**episode, "support_images": episode["support_images"][perm],
            "support_labels": episode["support_labels"][perm]}


def test_query_attention_is_a_set_read_of_the_support(rng):
    """f(x, S) reads S only through softmax attention sums: invariant to the support order;
    queries are read independently: permuting them permutes the outputs."""
    layer = QueryAttentionEmbedding(steps=4)
    query = rng.normal(size=(2, 5, FCE_DIM)).astype(np.float32)
    support = rng.normal(size=(2, 7, FCE_DIM)).astype(np.float32)
    f = layer(query, support).numpy()
    support_perm, query_perm = rng.permutation(7), rng.permutation(5)
    assert (support_perm != np.arange(7)).any() and (query_perm != np.arange(5)).any()
    np.testing.assert_allclose(layer(query, support[:, support_perm]).numpy(), f,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(query[:, query_perm], support).numpy(), f[:, query_perm],
                               rtol=1e-5, atol=1e-6)


def test_support_context_is_order_dependent_except_for_what_its_structure_fixes(rng):
    """The BiLSTM reads the support set in the order given, so g is NOT permutation-
    equivariant in general. What the structure does guarantee, and is asserted here:
      * the skip connection: g(S) - bilstm(S) = S item by item, for any order;
      * with tied forward/backward weights, reversing the order reverses the output
        (g_i = fwd_i + bwd_i, and reversal swaps what the two directions read)."""
    layer = SupportContextEmbedding()
    support = rng.normal(size=(1, 6, FCE_DIM)).astype(np.float32)
    g = layer(support).numpy()
    perm = np.array([3, 0, 5, 1, 4, 2])
    g_perm = layer(support[:, perm]).numpy()
    assert np.abs(g_perm - g[:, perm]).max() > 1e-3  # order dependent (untied random weights)
    # Skip connection: what is left after the BiLSTM is exactly the input, in either order.
    for s, out in ((support, g), (support[:, perm], g_perm)):
        np.testing.assert_allclose(out - layer.bilstm(s).numpy(), s, rtol=1e-6, atol=1e-6)
    # Reversal with untied weights is not equivariant ...
    reverse = np.arange(6)[::-1]
    assert np.abs(layer(support[:, reverse]).numpy() - g[:, reverse]).max() > 1e-3
    # ... with tied weights it is.
    forward, backward = layer.bilstm.forward_layer, layer.bilstm.backward_layer
    backward.set_weights(forward.get_weights())
    g = layer(support).numpy()
    np.testing.assert_allclose(layer(support[:, reverse]).numpy(), g[:, reverse],
                               rtol=1e-5, atol=1e-5)


def test_matching_network_without_fce_is_a_set_function_of_the_support(make_episode, rng,
                                                                       np_softmax):
    model = build_model("matching", {"filters": 8})
    episode, _ = make_episode(5, [1, 2, 3, 1, 2], 3, rng)  # uneven shots, 15 queries
    probabilities = np_softmax(model(episode).numpy().astype(np.float64))
    support_perm = rng.permutation(len(episode["support_labels"]))
    shuffled = np_softmax(model(_permuted_support(episode, support_perm)).numpy()
                          .astype(np.float64))
    np.testing.assert_allclose(shuffled, probabilities, rtol=1e-5, atol=1e-6)
    query_perm = rng.permutation(15)
    requeried = np_softmax(model({**episode, "query_images": episode["query_images"][query_perm]})
                           .numpy().astype(np.float64))
    np.testing.assert_allclose(requeried, probabilities[query_perm], rtol=1e-5, atol=1e-6)
    # Renaming the classes (label k -> sigma(k)) permutes the probability columns.
    sigma = np.array([2, 4, 0, 1, 3], np.int32)
    renamed = np_softmax(model({**episode, "support_labels": sigma[episode["support_labels"]]})
                         .numpy().astype(np.float64))
    np.testing.assert_allclose(renamed[:, sigma], probabilities, rtol=1e-5, atol=1e-6)


def test_matching_network_with_fce_permutes_query_rows_but_reads_the_support_order(
        make_episode, rng):
    model = build_model("matching", {"filters": 8, "fce": True, "fce_steps": 2})
    episode, _ = make_episode(4, 2, 2, rng)
    logits = model(episode).numpy()
    query_perm = rng.permutation(8)
    requeried = model({**episode, "query_images": episode["query_images"][query_perm]}).numpy()
    np.testing.assert_allclose(requeried, logits[query_perm], rtol=1e-5, atol=1e-5)
    alone = model({**episode, "query_images": episode["query_images"][3:4]}).numpy()
    np.testing.assert_allclose(alone[0], logits[3], rtol=1e-5, atol=1e-5)
    # The support order is read by the BiLSTM (documented in MatchingNetwork's docstring).
    support_perm = np.roll(np.arange(8), 3)
    assert np.abs(model(_permuted_support(episode, support_perm)).numpy() - logits).max() > 1e-6
