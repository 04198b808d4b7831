"""keras_fewshot.data.sequence_dataset on synthetic data whose pixels are example indices,
and on real Omniglot at the paper's 20x20."""

import numpy as np
import pytest

from keras_fewshot.data import sequence_dataset

# 9 classes with arbitrary values and 2..12 examples each.
CLASS_VALUES = np.array([5, 17, 2, 40, 33, 8, 21, 11, 99])
CLASS_COUNTS = np.array([12, 4, 7, 5, 2, 9, 6, 10, 3])


@pytest.fixture(scope="module")
def data():
    """(images int32 [M, 1, 1, 1] holding each example's index, labels)."""
    labels = np.random.default_rng(7).permutation(np.repeat(CLASS_VALUES, CLASS_COUNTS))
    return np.arange(len(labels), dtype=np.int32).reshape(-1, 1, 1, 1), labels


def sequences(data, classes, instances, count, **kwargs):
    images, labels = data
    return list(sequence_dataset(images, labels, classes, instances, num_sequences=count,
                                 **kwargs).as_numpy_iterator())


def check_sequence(inputs, targets, labels, classes, instances):
    """Checks one sequence against the sampler's promises; returns {label: class value}."""
    index = inputs["images"][:, 0, 0, 0]
    assert index.shape == (classes * instances,) and inputs["labels"].dtype == np.int32
    np.testing.assert_array_equal(inputs["labels"], targets)  # the model does the shifting
    assert len(set(index)) == classes * instances  # distinct examples
    np.testing.assert_array_equal(np.bincount(targets, minlength=classes),
                                  [instances] * classes)  # every label `instances` times
    mapping = {}
    for k in range(classes):
        (value,) = set(labels[index[targets == k]])  # one class per label
        mapping[k] = value
    assert len(set(mapping.values())) == classes
    return mapping


@pytest.mark.parametrize("classes, instances", [(5, 3), (3, 5), (2, 1)])
def test_sequences_keep_the_sampler_promises(data, classes, instances):
    _, labels = data
    seen = set()
    for inputs, targets in sequences(data, classes, instances, 40):
        seen.update(check_sequence(inputs, targets, labels, classes, instances).values())
    assert seen == set(CLASS_VALUES[CLASS_COUNTS >= instances])


def test_labels_are_reassigned_and_steps_shuffled_in_every_sequence(data):
    """With exactly 3 classes of >= 9 examples, every sequence uses the same 3 classes: only
    the label map and the order change."""
    _, labels = data
    mappings, grouped = set(), 0
    for inputs, targets in sequences(data, 3, 9, 30, seed=2):
        mapping = check_sequence(inputs, targets, labels, 3, 9)
        mappings.add(tuple(mapping[k] for k in range(3)))
        grouped += bool(np.all(np.diff(targets) >= 0))
    assert len(mappings) >= 4 and grouped == 0
    # The k-th presentations of the classes are spread over the sequence, not in blocks.
    first_positions = [np.unique(t, return_index=True)[1].max() for _, t in
                       sequences(data, 3, 9, 30, seed=2)]
    assert len(set(first_positions)) > 3


def test_stream_is_a_function_of_seed_and_index(data):
    whole = sequences(data, 3, 2, 7, seed=4)
    tail = sequences(data, 3, 2, 3, seed=4, start=4)
    other = sequences(data, 3, 2, 7, seed=5)
    for (a, ta), (b, tb) in zip(whole[4:], tail):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(ta, tb)
    assert any(not np.array_equal(a["images"], c["images"]) for (a, _), (c, _) in
               zip(whole, other))
    assert not np.array_equal(whole[0][0]["images"], whole[1][0]["images"])


def test_batches_stack_consecutive_sequences(data):
    single = sequences(data, 2, 3, 4, seed=6)
    batched = sequences(data, 2, 3, 5, seed=6, batch_size=2)  # remainder dropped
    assert len(batched) == 2
    for b, (inputs, targets) in enumerate(batched):
        assert inputs["images"].shape == (2, 6, 1, 1, 1) and targets.shape == (2, 6)
        for key in inputs:
            np.testing.assert_array_equal(inputs[key], np.stack(
                [s[key] for s, _ in single[2 * b:2 * b + 2]]))


def test_groups_keep_each_sequence_within_one_group():
    labels = np.repeat(np.arange(12), 4)
    groups = np.array([3] * 2 + [1] * 4 + [0] * 6)
    images = np.arange(len(labels), dtype=np.int32).reshape(-1, 1, 1, 1)
    seen = set()
    for inputs, targets in sequences((images, labels), 4, 2, 30, groups=groups):
        values = set(check_sequence(inputs, targets, labels, 4, 2).values())
        (group,) = {groups[v] for v in values}
        seen.add(group)
    assert seen == {0, 1}  # group 3 has only 2 classes


def test_distortion_rotates_and_translates_but_keeps_labels_and_paper():
    labels = np.repeat(np.arange(3), 4)
    images = np.full((12, 20, 20, 1), 255, np.uint8)
    images[:, 6:14, 8:12] = 0  # a dark bar on white paper
    (plain, plain_targets), = sequences((images, labels), 3, 4, 1, seed=1)
    (warped, warped_targets), = sequences((images, labels), 3, 4, 1, seed=1, distort=True)
    np.testing.assert_array_equal(plain_targets, warped_targets)
    assert warped["images"].shape == plain["images"].shape
    assert warped["images"].dtype == np.uint8
    changed = (warped["images"] != plain["images"]).any(axis=(1, 2, 3))
    assert changed.mean() > 0.9  # every image moves (up to a rare near-identity draw)
    assert (warped["images"][:, :2, :2] == 255).all()  # corners stay white paper
    ink = (255 - warped["images"].astype(float)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(ink, 255 * 32, rtol=0.15)  # a moved bar, not a new drawing


def test_distorted_batches_stack_the_distorted_sequences(rng):
    """Distortions are drawn per sequence and applied per batch: batching changes nothing."""
    labels = np.repeat(np.arange(6), 4)
    images = rng.integers(0, 256, (24, 12, 12, 1), dtype=np.uint8)
    single = sequences((images, labels), 3, 2, 4, seed=2, distort=True)
    batched = sequences((images, labels), 3, 2, 4, seed=2, distort=True, batch_size=2)
    plain = sequences((images, labels), 3, 2, 4, seed=2)
    for b, (inputs, targets) in enumerate(batched):
        for key in inputs:
            np.testing.assert_array_equal(inputs[key], np.stack(
                [s[key] for s, _ in single[2 * b:2 * b + 2]]))
    assert all((s["images"] != p["images"]).any() for (s, _), (p, _) in zip(single, plain))


@pytest.mark.parametrize("kwargs, match", [
    ({"classes": 0}, "classes must be at least 1"),
    ({"instances": 0}, "instances must be at least 1"),
    ({"classes": 5, "instances": 10}, r"need 5 classes with >= 10 examples; only 2 of 9"),
])
def test_bad_sizes(data, kwargs, match):
    images, labels = data
    with pytest.raises(ValueError, match=match):
        sequence_dataset(images, labels, **kwargs)


def test_bad_arrays(data):
    images, labels = data
    with pytest.raises(ValueError, match="one label each"):
        sequence_dataset(images[:-1], labels, 2, 2)


def test_omniglot_sequences_at_20_pixels(vinyals_test_20):
    test = vinyals_test_20
    (inputs, targets), = sequences((test.images, test.labels), 5, 10, 1, seed=0,
                                   batch_size=1)
    assert inputs["images"].shape == (1, 50, 20, 20, 1) and targets.shape == (1, 50)
    assert inputs["images"].dtype == np.uint8
    assert np.array_equal(np.sort(targets[0]), np.repeat(np.arange(5), 10))
