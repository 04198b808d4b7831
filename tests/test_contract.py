"""The episode contract (models/episodic.py) as PrototypicalNetwork honours it."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.models import EPISODE_KEYS, PrototypicalNetwork, build_model, dummy_episode

CONTRACT_ERRORS = (ValueError, tf.errors.InvalidArgumentError)
UNBATCHED_SIGNATURE = {
    "support_images": tf.TensorSpec([None, None, None, None], tf.uint8),
    "support_labels": tf.TensorSpec([None], tf.int32),
    "query_images": tf.TensorSpec([None, None, None, None], tf.uint8),
}


@pytest.fixture(scope="module")
def model():
    """PrototypicalNetwork with the default config and random weights."""
    return PrototypicalNetwork()


@pytest.fixture(scope="module")
def graph_model(model):
    """The model traced once for any unbatched episode: errors come from graph assertions."""
    return tf.function(lambda episode: model(episode), input_signature=[UNBATCHED_SIGNATURE])


def embed(model, images):
    """The model's own embedding of uint8 images, as numpy."""
    return model.embedding(model.preprocess(images), training=False).numpy()


def reference_logits(model, episode, numpy_protonet):
    """Logits recomputed with numpy prototypes over the model's embeddings."""
    ways = int(episode["support_labels"].max()) + 1
    return numpy_protonet(embed(model, episode["support_images"]), episode["support_labels"],
                          embed(model, episode["query_images"]), ways)


def assert_logits_close(actual, expected):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("ways, shots, queries", [(3, 2, 4), (7, 1, 2)])
def test_any_ways(model, make_episode, rng, numpy_protonet, ways, shots, queries):
    episode, _ = make_episode(ways, shots, queries, rng)
    logits = model(episode)
    assert logits.dtype == tf.float32 and logits.shape == (ways * queries, ways)
    assert_logits_close(logits.numpy(), reference_logits(model, episode, numpy_protonet))


def test_uneven_shots(model, make_episode, rng, numpy_protonet):
    episode, _ = make_episode(2, [1, 3], 3, rng)
    assert sorted(episode["support_labels"].tolist()) == [0, 1, 1, 1]
    logits = model(episode).numpy()
    assert logits.shape == (6, 2)
    assert_logits_close(logits, reference_logits(model, episode, numpy_protonet))


def test_batched_agrees_with_unbatched(model, make_episode, rng):
    batch, _ = make_episode(4, 2, 3, rng, batch=3)
    logits = model(batch).numpy()
    assert logits.shape == (3, 12, 4) and logits.dtype == np.float32
    for b in range(3):
        single = model({k: v[b] for k, v in batch.items()}).numpy()
        assert_logits_close(logits[b], single)


def test_support_order_does_not_matter(model, make_episode, rng):
    episode, _ = make_episode(5, 3, 2, rng)
    perm = rng.permutation(len(episode["support_labels"]))
    shuffled = {**episode, "support_images": episode["support_images"][perm],
                "support_labels": episode["support_labels"][perm]}
    assert_logits_close(model(shuffled).numpy(), model(episode).numpy())


def test_query_logits_do_not_depend_on_other_queries(model, make_episode, rng):
    episode, _ = make_episode(3, 2, 4, rng)
    logits = model(episode).numpy()
    for i in (0, 5):
        alone = model({**episode, "query_images": episode["query_images"][i:i + 1]}).numpy()
        assert_logits_close(alone[0], logits[i])


def test_raw_omniglot_sized_input(model, make_episode, rng):
    episode, _ = make_episode(3, 2, 2, rng, image_size=105, channels=3)
    logits = model(episode)
    assert logits.shape == (6, 3) and logits.dtype == tf.float32
    assert np.isfinite(logits.numpy()).all()
    # (That raw and cached pixels give the same model input is checked in test_layers.)


def test_int64_and_uint8_label_dtypes(model, make_episode, rng):
    episode, _ = make_episode(3, 1, 2, rng)
    expected = model(episode).numpy()
    for dtype in (np.int64, np.uint8):
        labels = episode["support_labels"].astype(dtype)
        np.testing.assert_array_equal(model({**episode, "support_labels": labels}).numpy(),
                                      expected)


def test_dummy_episode_and_registry():
    episode = dummy_episode(ways=3, shots=2, queries=4)
    assert set(episode) == set(EPISODE_KEYS)
    model = build_model("protonet", {"filters": 8})
    assert isinstance(model, PrototypicalNetwork) and model.filters == 8
    assert model(episode).shape == (4, 3)
    with pytest.raises(ValueError, match="Unknown model 'nope'.*protonet"):
        build_model("nope")


# Each case: a change to a valid 3-way 2-shot 2-query episode, and the error message.
def _drop(key):
    return lambda e: {k: v for k, v in e.items() if k != key}


def _set(key, fn):
    return lambda e: {**e, key: fn(e)}


def _relabel(old, new, first_only=False):
    """Support labels `old` -> `new` (all of them, or only the first)."""
    def change(e):
        labels = e["support_labels"].copy()
        where = np.flatnonzero(labels == old)
        labels[where[:1] if first_only else where] = new
        return {**e, "support_labels": labels}
    return change


BAD_EPISODES = {
    "rank_3_images": (_set("support_images", lambda e: e["support_images"][..., 0]),
                      r"support_images must have rank 4"),
    "rank_6_images": (_set("query_images", lambda e: e["query_images"][None, None]),
                      r"query_images must have rank 4"),
    "float_images": (_set("support_images", lambda e: e["support_images"].astype(np.float32)),
                     r"support_images must be uint8"),
    "two_channels": (_set("query_images", lambda e: np.repeat(e["query_images"], 2, -1)),
                     r"query_images must have 1 or 3 channels"),
    "four_channels": (_set("support_images", lambda e: np.repeat(e["support_images"], 4, -1)),
                      r"support_images must have 1 or 3 channels"),
    "float_labels": (_set("support_labels", lambda e: e["support_labels"].astype(np.float32)),
                     r"support_labels must be integers"),
    "labels_too_short": (_set("support_labels", lambda e: e["support_labels"][:-1]),
                         r"support_images and support_labels have different numbers of "
                         r"examples"),
    # Every class keeps a support example: the negative label is the only problem.
    "negative_label": (_relabel(0, -1, first_only=True), r"support_labels has a label below 0"),
    "missing_class": (_relabel(1, 2), r"a class in \[0, N\) has no support example"),
    "empty_query": (_set("query_images", lambda e: e["query_images"][:0]),
                    r"the query set is empty"),
    "empty_support": (lambda e: {**e, "support_images": e["support_images"][:0],
                                 "support_labels": e["support_labels"][:0]},
                      r"the support set is empty"),
    "missing_key": (_drop("query_images"), r"missing \['query_images'\]"),
    "batched_query_only": (_set("query_images", lambda e: e["query_images"][None]),
                           r"must both be batched \(rank 5\) or both unbatched"),
}

BATCHED_BAD_EPISODES = {
    "query_batch_size": (lambda e: {**e, "query_images": e["query_images"][:2]},
                         r"support_images and query_images have different numbers of episodes"),
    "labels_batch_size": (lambda e: {**e, "support_labels": e["support_labels"][:2]},
                          r"support_images and support_labels have different numbers of "
                          r"episodes"),
    "unbatched_labels": (lambda e: {**e, "support_labels": e["support_labels"][0]},
                         r"support_labels must have shape \[B, S\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_EPISODES))
def test_bad_episode_names_the_problem(model, make_episode, rng, case):
    change, message = BAD_EPISODES[case]
    episode, _ = make_episode(3, 2, 2, rng)
    with pytest.raises(CONTRACT_ERRORS, match=message):
        model(change(episode))


@pytest.mark.parametrize("case", sorted(BATCHED_BAD_EPISODES))
def test_bad_batched_episode_names_the_problem(model, make_episode, rng, case):
    change, message = BATCHED_BAD_EPISODES[case]
    episode, _ = make_episode(3, 2, 2, rng, batch=3)
    with pytest.raises(CONTRACT_ERRORS, match=message):
        model(change(episode))


@pytest.mark.parametrize("case", ["missing_class", "negative_label", "empty_query",
                                  "empty_support", "labels_too_short"])
def test_bad_episode_fails_the_same_way_in_a_graph(graph_model, make_episode, rng, case):
    change, message = BAD_EPISODES[case]
    episode, _ = make_episode(3, 2, 2, rng)
    assert graph_model(episode).shape == (6, 3)  # the traced function works on good input
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        graph_model(change(episode))


def test_four_channels_fail_in_a_graph(graph_model, make_episode, rng):
    episode, _ = make_episode(3, 2, 2, rng, channels=4)
    with pytest.raises(CONTRACT_ERRORS, match="1 or 3 channels"):
        graph_model(episode)


def test_huge_label_names_the_problem(model, make_episode, rng):
    episode, _ = make_episode(2, 1, 1, rng)
    episode["support_labels"] = np.array([0, 2 ** 31 - 1], np.int32)
    with pytest.raises(CONTRACT_ERRORS, match="no support example"):
        model(episode)


def test_int64_labels_out_of_int32_range_are_rejected(model, make_episode, rng):
    episode, _ = make_episode(2, [1, 2], 1, rng)
    episode["support_labels"] = np.array([0, 1, 2 ** 32 + 1], np.int64)
    with pytest.raises(CONTRACT_ERRORS):
        model(episode)
