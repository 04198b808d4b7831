"""keras_fewshot.data.episode_dataset on synthetic data whose pixels are example indices."""

import numpy as np
import pytest

from keras_fewshot.data import episode_dataset

# 12 classes with arbitrary (non-contiguous) values and 3..11 examples each.
CLASS_VALUES = np.array([5, 17, 2, 40, 33, 8, 21, 11, 99, 64, 70, 3])
CLASS_COUNTS = np.array([11, 4, 7, 5, 3, 9, 6, 10, 4, 8, 5, 7])


def index_images(count):
    """int32 [M, 1, 1, 1] images whose one pixel is the example's index."""
    return np.arange(count, dtype=np.int32).reshape(count, 1, 1, 1)


def example_indices(images):
    return images[..., 0, 0, 0]


@pytest.fixture(scope="module")
def data():
    """(images, labels): shuffled examples of the 12 classes above."""
    labels = np.random.default_rng(7).permutation(np.repeat(CLASS_VALUES, CLASS_COUNTS))
    return index_images(len(labels)), labels


def episodes(data, ways, shots, queries, count, **kwargs):
    images, labels = data
    return list(episode_dataset(images, labels, ways, shots, queries, num_episodes=count,
                                **kwargs).as_numpy_iterator())


def label_to_class(episode, query_labels, labels, ways, shots, queries):
    """Checks one episode against the sampler's promises; returns {episode label: class}."""
    support = example_indices(episode["support_images"])
    query = example_indices(episode["query_images"])
    support_labels = episode["support_labels"]
    assert support.shape == (ways * shots,) and query.shape == (ways * queries,)
    assert len(set(support) | set(query)) == ways * (shots + queries)  # distinct, disjoint
    np.testing.assert_array_equal(np.sort(support_labels), np.repeat(np.arange(ways), shots))
    np.testing.assert_array_equal(np.sort(query_labels), np.repeat(np.arange(ways), queries))
    mapping = {}
    for k in range(ways):
        classes = set(labels[support[support_labels == k]]) | set(labels[query[query_labels == k]])
        assert len(classes) == 1, f"episode label {k} covers classes {classes}"
        mapping[k] = classes.pop()
    assert len(set(mapping.values())) == ways  # N distinct classes
    return mapping


@pytest.mark.parametrize("ways, shots, queries", [(3, 2, 3), (5, 1, 1), (2, 4, 5)])
def test_episodes_keep_the_sampler_promises(data, ways, shots, queries):
    _, labels = data
    eligible = set(CLASS_VALUES[CLASS_COUNTS >= shots + queries])
    seen = set()
    for episode, query_labels in episodes(data, ways, shots, queries, 40):
        assert episode["support_labels"].dtype == np.int32 and query_labels.dtype == np.int32
        mapping = label_to_class(episode, query_labels, labels, ways, shots, queries)
        seen.update(mapping.values())
    assert seen == eligible  # every class with enough examples is used, and only those


def test_labels_are_randomly_assigned_and_ordered(data):
    """With exactly N eligible classes, each episode is a fresh label permutation."""
    _, labels = data
    ways = int((CLASS_COUNTS >= 9).sum())  # classes with >= 9 examples: 3 of them
    assert ways == 3
    mappings, sorted_support = [], 0
    for episode, query_labels in episodes(data, ways, 4, 5, 40):
        mapping = label_to_class(episode, query_labels, labels, ways, 4, 5)
        mappings.append(tuple(mapping[k] for k in range(ways)))
        sorted_support += bool(np.all(np.diff(episode["support_labels"]) >= 0))
    assert len(set(mappings)) >= 4
    assert {m[0] for m in mappings} == set(CLASS_VALUES[CLASS_COUNTS >= 9])
    assert sorted_support < 5  # support order is shuffled, not grouped by class


def _assert_streams_equal(a, b):
    assert len(a) == len(b)
    for (ea, qa), (eb, qb) in zip(a, b):
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key])
        np.testing.assert_array_equal(qa, qb)


def _streams_differ(a, b):
    return any(not np.array_equal(ea["support_images"], eb["support_images"])
               for (ea, _), (eb, _) in zip(a, b))


def test_same_seed_same_stream_and_different_seed_differs(data):
    first = episodes(data, 3, 2, 2, 6, seed=11)
    _assert_streams_equal(first, episodes(data, 3, 2, 2, 6, seed=11))
    assert _streams_differ(first, episodes(data, 3, 2, 2, 6, seed=12))
    # Episodes within one stream differ from each other too.
    assert _streams_differ(first[:-1], first[1:])


def test_start_resumes_the_stream(data):
    whole = episodes(data, 3, 1, 2, 9, seed=3)
    _assert_streams_equal(episodes(data, 3, 1, 2, 5, seed=3, start=4), whole[4:])


def test_endless_stream_begins_like_a_finite_one(data):
    images, labels = data
    endless = episode_dataset(images, labels, 3, 1, 2, seed=3).take(4)
    _assert_streams_equal(list(endless.as_numpy_iterator()), episodes(data, 3, 1, 2, 4, seed=3))


def test_batches_stack_consecutive_episodes(data):
    single = episodes(data, 4, 2, 3, 6, seed=5)
    batched = episodes(data, 4, 2, 3, 7, seed=5, batch_size=3)  # remainder dropped
    assert len(batched) == 2
    for b, (episode, query_labels) in enumerate(batched):
        assert episode["support_images"].shape == (3, 8, 1, 1, 1)
        assert episode["support_labels"].shape == (3, 8)
        assert episode["query_images"].shape == (3, 12, 1, 1, 1)
        assert query_labels.shape == (3, 12)
        expected = single[3 * b:3 * b + 3]
        for key in episode:
            np.testing.assert_array_equal(episode[key], np.stack([e[key] for e, _ in expected]))
        np.testing.assert_array_equal(query_labels, np.stack([q for _, q in expected]))


def test_groups_keep_each_episode_within_one_group():
    # 16 classes 0..15 with 6 examples; groups of sizes 3, 5 and 8 (group ids 7, 1, 4).
    labels = np.repeat(np.arange(16), 6)
    groups = np.array([7] * 3 + [1] * 5 + [4] * 8)
    seen_groups = set()
    stream = episodes((index_images(len(labels)), labels), 5, 1, 2, 40, groups=groups)
    for episode, query_labels in stream:
        mapping = label_to_class(episode, query_labels, labels, 5, 1, 2)
        episode_groups = {groups[c] for c in mapping.values()}
        assert len(episode_groups) == 1
        seen_groups |= episode_groups
    assert seen_groups == {1, 4}  # group 7 has only 3 classes: never usable for 5-way


def test_too_few_classes_with_enough_examples(data):
    images, labels = data
    assert (CLASS_COUNTS >= 10).sum() == 2
    with pytest.raises(ValueError, match=r"need 3 classes with >= 10 examples; only 2 of 12"):
        episode_dataset(images, labels, 3, 5, 5)


def test_no_group_large_enough():
    labels = np.repeat(np.arange(16), 6)
    groups = np.array([0] * 8 + [1] * 8)
    with pytest.raises(ValueError, match="No group has 9 classes"):
        episode_dataset(index_images(len(labels)), labels, 9, 1, 1, groups=groups)


@pytest.mark.parametrize("kwargs, match", [
    ({"ways": 0}, "ways must be at least 1"),
    ({"shots": 0}, "shots must be at least 1"),
    ({"queries": -1}, "queries must be at least 1"),
])
def test_bad_sizes(data, kwargs, match):
    images, labels = data
    sizes = {"ways": 2, "shots": 1, "queries": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        episode_dataset(images, labels, **sizes)


def test_bad_arrays(data):
    images, labels = data
    with pytest.raises(ValueError, match="one label each"):
        episode_dataset(images[:-1], labels, 2, 1, 1)
    with pytest.raises(ValueError, match=r"\[M, H, W, C\]"):
        episode_dataset(images[..., 0], labels, 2, 1, 1)
    with pytest.raises(ValueError, match="integer"):
        episode_dataset(images, labels.astype(np.float32), 2, 1, 1)


def test_the_stream_is_the_one_sampled_before_drawers_and_distortions(data):
    """Episodes 4 and 5 of seed 11, as the sampler drew them before it took `drawers` and
    `distort` (commit 1ed0092): the zoo's measured episodes must not move."""
    groups = np.arange(100) % 3
    expected = {
        "plain": [([18, 63, 52, 73, 37, 76], [1, 2, 1, 0, 0, 2], [62, 0, 27], [2, 1, 0]),
                  ([78, 48, 6, 13, 55, 46], [0, 1, 2, 0, 1, 2], [7, 64, 59], [2, 1, 0])],
        "groups": [([16, 72, 33, 71, 41, 58], [1, 2, 1, 0, 0, 2], [45, 54, 22], [2, 1, 0]),
                   ([78, 48, 62, 13, 55, 63], [0, 1, 2, 0, 1, 2], [68, 64, 59], [2, 1, 0])],
    }
    for name, kwargs in (("plain", {}), ("groups", {"groups": groups})):
        for distort in (None, False):
            if distort is not None:
                kwargs = {**kwargs, "distort": distort}
            stream = episodes(data, 3, 2, 1, 2, seed=11, start=4, **kwargs)
            actual = [(example_indices(e["support_images"]).tolist(),
                       e["support_labels"].tolist(),
                       example_indices(e["query_images"]).tolist(), q.tolist())
                      for e, q in stream]
            assert actual == expected[name], (name, distort)


# --- Episodes by drawer (Lake et al.'s one-shot runs) -------------------------------------------

# 9 classes x 4 drawers (drawer names 3, 5, 8, 13), shuffled; groups of 4, 3 and 2 classes.
DRAWERS = np.array([3, 5, 8, 13])
DRAWER_GROUPS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])


@pytest.fixture(scope="module")
def drawn():
    """(images, labels, drawers): every class drawn once by each drawer, in random order."""
    order = np.random.default_rng(5).permutation(9 * len(DRAWERS))
    labels = np.repeat(np.arange(9), len(DRAWERS))[order]
    drawers = np.tile(DRAWERS, 9)[order]
    return index_images(len(labels)), labels, drawers


def test_drawer_episodes_take_support_from_one_drawer_and_queries_from_another(drawn):
    images, labels, drawers = drawn
    pairs, seen_groups = set(), set()
    stream = episode_dataset(images, labels, 3, 1, 1, groups=DRAWER_GROUPS, drawers=drawers,
                             seed=2, num_episodes=40)
    for episode, query_labels in stream.as_numpy_iterator():
        mapping = label_to_class(episode, query_labels, labels, 3, 1, 1)
        support = example_indices(episode["support_images"])
        query = example_indices(episode["query_images"])
        (support_drawer,), (query_drawer,) = set(drawers[support]), set(drawers[query])
        assert support_drawer != query_drawer
        pairs.add((support_drawer, query_drawer))
        groups = {DRAWER_GROUPS[c] for c in mapping.values()}
        assert len(groups) == 1
        seen_groups |= groups
    assert seen_groups == {0, 1}  # group 2 has 2 classes: too few for 3-way
    assert len(pairs) > 5  # drawers vary, in both roles


def test_drawer_episodes_are_deterministic_and_resume(drawn):
    images, labels, drawers = drawn

    def stream(**kwargs):
        return list(episode_dataset(images, labels, 4, 1, 1, drawers=drawers,
                                    **kwargs).as_numpy_iterator())

    whole = stream(seed=4, num_episodes=6)
    _assert_streams_equal(whole, stream(seed=4, num_episodes=6))
    _assert_streams_equal(whole[2:], stream(seed=4, start=2, num_episodes=4))
    assert _streams_differ(whole, stream(seed=5, num_episodes=6))


def test_drawer_episodes_refuse_what_they_cannot_draw(drawn):
    images, labels, drawers = drawn
    with pytest.raises(ValueError, match="one support and one query.*shots=2, queries=1"):
        episode_dataset(images, labels, 3, 2, 1, drawers=drawers)
    missing = drawers.copy()
    missing[np.flatnonzero(labels == 6)[0]] = 5  # class 6: drawer 5 twice
    with pytest.raises(ValueError, match=r"each of the 4 drawers; class 6 has drawers"):
        episode_dataset(images, labels, 3, 1, 1, drawers=missing)
    with pytest.raises(ValueError, match="one drawer per image"):
        episode_dataset(images, labels, 3, 1, 1, drawers=drawers[:-1])


# --- Distorted training episodes (Koch et al. 2015) ---------------------------------------------

@pytest.fixture(scope="module")
def paper():
    """(images, labels): 6 classes x 4 uint8 28x28 images, a dark bar on white paper each."""
    images = np.full((24, 28, 28, 1), 255, np.uint8)
    for i in range(24):
        images[i, 6 + i // 4:20, 8 + i % 4:14 + i % 4] = 0
    return images, np.repeat(np.arange(6), 4)


def test_distorted_episodes_keep_classes_labels_and_shapes(paper):
    plain = episodes(paper, 3, 2, 1, 4, seed=7)
    warped = episodes(paper, 3, 2, 1, 4, seed=7, distort=True)
    for (p, p_labels), (w, w_labels) in zip(plain, warped):
        np.testing.assert_array_equal(w["support_labels"], p["support_labels"])
        np.testing.assert_array_equal(w_labels, p_labels)
        for key in ("support_images", "query_images"):
            assert w[key].shape == p[key].shape and w[key].dtype == np.uint8
    assert _streams_differ(plain, warped)
    assert any(not np.array_equal(p["query_images"], w["query_images"])
               for (p, _), (w, _) in zip(plain, warped))


def test_distorted_episodes_are_deterministic_and_resume(paper):
    whole = episodes(paper, 3, 1, 2, 5, seed=8, distort=True)
    _assert_streams_equal(whole, episodes(paper, 3, 1, 2, 5, seed=8, distort=True))
    _assert_streams_equal(whole[3:], episodes(paper, 3, 1, 2, 2, seed=8, start=3,
                                              distort=True))
    batched = episodes(paper, 3, 1, 2, 4, seed=8, distort=True, batch_size=2)
    np.testing.assert_array_equal(batched[1][0]["query_images"],
                                  np.stack([e["query_images"] for e, _ in whole[2:4]]))


def test_test_views_are_the_plain_episode_and_distortions_of_it(paper):
    """views=N: the plain episode, then its distorted views 1..N; view 1 is the training
    distortion (`distort=True`) of the same episode, so the training streams did not move."""
    views = episodes(paper, 3, 1, 2, 2, seed=8, views=2)
    plain = episodes(paper, 3, 1, 2, 2, seed=8)
    warped = episodes(paper, 3, 1, 2, 2, seed=8, distort=True)
    _assert_streams_equal([(v[0], q) for v, q in views], plain)
    _assert_streams_equal([(v[1], q) for v, q in views], warped)
    assert _streams_differ([(v[2], q) for v, q in views], warped)
    with pytest.raises(ValueError, match="give one of them"):
        episode_dataset(*paper, 3, 1, 2, distort=True, views=2)
