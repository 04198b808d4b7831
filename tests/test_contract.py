"""The episode contract (models/episodic.py) as PrototypicalNetwork honours it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.models import (EPISODE_KEYS, PrototypicalNetwork, build_model, dummy_episode,
                                  validate_episode)
from keras_fewshot.training import using_dtype_policy

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


def _uint64_with(labels, old, new):
    """Labels as uint64, `old` replaced by `new` (which int64 may not hold)."""
    labels = labels.astype(np.uint64)
    labels[labels == old] = np.uint64(new)
    assert labels.max() == new
    return labels


def _with_pixel(images, value):
    """uint8 images as nested Python lists of ints, with the first pixel set to `value`."""
    images = images.astype(int)
    images.flat[0] = value
    return images.tolist()


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
    # Found by trying the contract as a hostile user would: each failed inside an op or
    # with another's message before.
    "zero_size_query_images": (_set("query_images",
                                    lambda e: e["query_images"][..., :0, :0, :]),
                               r"query_images has images of height or width 0"),
    "zero_width_support_images": (_set("support_images",
                                       lambda e: e["support_images"][..., :0, :]),
                                  r"support_images has images of height or width 0"),
    "one_class": (_set("support_labels", lambda e: np.zeros_like(e["support_labels"])),
                  r"the support set has a single class \(every label is 0\): a classifier "
                  r"needs at least 2 classes"),
    "uint64_label_above_int64": (_set("support_labels", lambda e: _uint64_with(
        e["support_labels"], 2, 2 ** 63)),
        r"support_labels has a label >= the number of support examples"),  # not "below 0"
    "labels_none": (_set("support_labels", lambda e: None),
                    r"support_labels must be an array \(numpy, tensor or nested list\), got "
                    r"NoneType"),
    "misspelled_key": (lambda e: {"support_image" if k == "support_images" else k: v
                                  for k, v in e.items()},
                       r"missing \['support_images'\]; expected keys .* got keys "
                       r"\['query_images', 'support_image', 'support_labels'\]"),
    "ragged_label_list": (_set("support_labels", lambda e: [[0, 1], [2]]),
                          r"support_labels is a ragged nested list"),
    "pixel_list_above_255": (_set("query_images", lambda e: _with_pixel(e["query_images"], 256)),
                             r"query_images must be raw pixels: whole numbers in \[0, 255\] "
                             r"\(uint8\), got values from \d+ to 256"),
    "negative_pixel_list": (_set("support_images", lambda e: _with_pixel(e["support_images"], -1)),
                            r"support_images must be raw pixels: .* got values from -1 to \d+"),
    "float_pixel_list": (_set("support_images", lambda e: (e["support_images"] / 255).tolist()),
                         r"support_images must be raw pixels: .* got a list of float64 values"),
    "float_label_list": (_set("support_labels", lambda e: [float(x) for x in
                                                           e["support_labels"]]),
                         r"support_labels must be integers, got a list of float64 values"),
    "empty_lists": (lambda e: {**e, "support_images": [], "support_labels": []},
                    r"support_images must have rank 4"),
    "label_list_with_none": (_set("support_labels", lambda e: [0, None, 1, 1, 2, 2]),
                             r"support_labels must hold numbers only, got a list of "
                             r"\['NoneType', 'int'\]"),
    "label_list_of_names": (_set("support_labels", lambda e: ["a", "a", "b", "b", "c", "c"]),
                            r"support_labels must hold numbers only, got a list of \['str'\]"),
}

BATCHED_BAD_EPISODES = {
    "query_batch_size": (lambda e: {**e, "query_images": e["query_images"][:2]},
                         r"support_images and query_images have different numbers of episodes"),
    "labels_batch_size": (lambda e: {**e, "support_labels": e["support_labels"][:2]},
                          r"support_images and support_labels have different numbers of "
                          r"episodes"),
    "unbatched_labels": (lambda e: {**e, "support_labels": e["support_labels"][0]},
                         r"support_labels must have shape \[B, S\]"),
    "no_episodes": (lambda e: {k: v[:0] for k, v in e.items()}, r"the batch holds no episodes"),
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
                                  "empty_support", "labels_too_short", "one_class",
                                  "zero_size_query_images", "zero_width_support_images"])
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


def test_uint64_labels_in_range_are_fine(model, make_episode, rng):
    episode, _ = make_episode(3, 2, 2, rng)
    expected = model(episode).numpy()
    labels = episode["support_labels"].astype(np.uint64)
    np.testing.assert_array_equal(model({**episode, "support_labels": labels}).numpy(), expected)


# --- Python lists in the episode dict ------------------------------------------------------------

# Every episodic classifier of the registry, small, with random weights (the MAML family's
# `ways` fixed to the episodes' 3).
SMALL_MODELS = {"protonet": {"filters": 8}, "matching": {"filters": 8, "fce": True},
                "relation": {"filters": 8}, "siamese": {"filters": 8},
                "metanet": {"filters": 8, "key_units": 8, "hidden_units": 8, "max_ways": 4,
                            "meta_units": 4},
                "maml": {"filters": 8, "ways": 3},
                "metalstm": {"filters": 8, "ways": 3, "test_inner_steps": 1}}


@pytest.fixture(scope="module", params=sorted(SMALL_MODELS))
def small_model(request):
    keras.utils.set_random_seed(0)
    return build_model(request.param, SMALL_MODELS[request.param])


def test_python_lists_give_what_arrays_give(small_model, make_episode, rng):
    episode, _ = make_episode(3, 2, 2, rng)
    expected = small_model(episode).numpy()
    assert expected.shape == (6, 3) and np.isfinite(expected).all()
    variants = {
        "labels as a list": {**episode, "support_labels": episode["support_labels"].tolist()},
        "labels as a tuple": {**episode, "support_labels": tuple(episode["support_labels"])},
        "everything as nested lists": {k: v.tolist() for k, v in episode.items()},
    }
    for what, variant in variants.items():
        np.testing.assert_array_equal(small_model(variant).numpy(), expected, err_msg=what)


def test_python_lists_of_a_batch_give_what_arrays_give(small_model, make_episode, rng):
    batch, _ = make_episode(3, 1, 1, rng, batch=2)
    expected = small_model(batch).numpy()
    assert expected.shape == (2, 3, 3)
    lists = {k: v.tolist() for k, v in batch.items()}
    np.testing.assert_array_equal(small_model(lists).numpy(), expected)


def test_the_issue_example_support_labels_list(model):
    """The report's request: "support_labels": [0, 1, 2, 3, 4] in a 5-way 1-shot episode."""
    episode = dummy_episode(ways=5, shots=1, queries=2)
    expected = model(episode).numpy()
    listed = model({**episode, "support_labels": [0, 1, 2, 3, 4]}).numpy()
    np.testing.assert_array_equal(listed, expected)
    assert listed.shape == (2, 5)


def test_validate_episode_takes_lists_as_uint8_images_and_integer_labels(make_episode, rng):
    episode, _ = make_episode(2, 1, 1, rng)
    checked = validate_episode({k: v.tolist() for k, v in episode.items()})
    assert checked.support_images.dtype == tf.uint8 and checked.query_images.dtype == tf.uint8
    np.testing.assert_array_equal(checked.support_images.numpy()[0], episode["support_images"])
    np.testing.assert_array_equal(checked.support_labels.numpy()[0], episode["support_labels"])
    assert int(checked.num_classes) == 2 and not checked.batched


def test_a_list_of_scalar_tensors_in_a_traced_function(model, make_episode, rng):
    episode, _ = make_episode(3, 1, 2, rng)
    expected = model(episode).numpy()
    traced = tf.function(lambda *labels: model({**episode, "support_labels": list(labels)}))
    labels = [tf.constant(int(y)) for y in episode["support_labels"]]
    np.testing.assert_array_equal(traced(*labels).numpy(), expected)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_bf16_compute_gives_float32_logits(name, make_episode, rng):
    """Built under mixed_bfloat16 (training's --dtype_policy), every classifier answers an
    episode with float32 logits, and the Siamese network its pairs too (a bf16 head once
    met the float32 one-hot of the support and failed)."""
    with using_dtype_policy("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        model = build_model(name, SMALL_MODELS[name])
    episode, _ = make_episode(3, 2, 2, rng)
    logits = model(episode)
    assert logits.dtype == tf.float32 and logits.shape == (6, 3)
    assert np.isfinite(logits.numpy()).all()
    if name == "siamese":
        pairs = model({"first_images": episode["query_images"],
                       "second_images": episode["query_images"][::-1]})
        assert pairs.dtype == tf.float32 and pairs.shape == (6,)
