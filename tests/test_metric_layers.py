"""Matching, relation and Siamese pieces against numpy re-computations of their equations."""

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


def _numpy_lstm(x, kernel, recurrent, bias):
    """Keras LSTM (gates i, f, c, o) over x [B, T, D] -> hidden states [B, T, U]."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def test_support_context_embedding_is_bilstm_plus_skip(rng):
    support = rng.normal(size=(2, 5, 4)).astype(np.float32)
    layer = SupportContextEmbedding()
    out = layer(support).numpy()
    forward, backward = layer.bilstm.forward_layer, layer.bilstm.backward_layer
    fwd = _numpy_lstm(support, *(w.numpy() for w in forward.cell.weights))
    bwd = _numpy_lstm(support[:, ::-1], *(w.numpy() for w in backward.cell.weights))[:, ::-1]
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


def test_relation_network_scores_query_against_summed_class_maps(make_episode, rng):
    model = build_model("relation")
    episode, _ = make_episode(3, [1, 2, 3], 2, rng)  # uneven shots, 6 queries
    logits = model(episode).numpy()
    assert logits.shape == (6, 3)
    pixels = lambda x: model.preprocess(tf.constant(x))
    support_maps = model.embedding(pixels(episode["support_images"])).numpy()
    query_maps = model.embedding(pixels(episode["query_images"])).numpy()
    for n in range(3):
        class_map = support_maps[episode["support_labels"] == n].sum(axis=0)
        pairs = np.concatenate([query_maps, np.repeat(class_map[None], 6, 0)], axis=-1)
        np.testing.assert_allclose(logits[:, n], model.relation(pairs).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_relation_mse_loss_matches_numpy(rng):
    model = build_model("relation")
    labels, logits = np.array([0, 2, 1]), rng.normal(size=(3, 3)).astype(np.float32)
    expected = np.mean((_sigmoid(logits) - np.eye(3)[labels]) ** 2)
    assert float(model.training_loss()(labels, logits)) == pytest.approx(expected, rel=1e-5)


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
