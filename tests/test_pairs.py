"""Same/different pair batches and the Siamese network's two uses (pairs, episodes)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.data import pair_dataset
from keras_fewshot.models import build_model


def _indexed_images(labels):
    """Image m holds the value m at pixel (0, 0) (m < 256 * 256 via two pixels)."""
    images = np.full((len(labels), 4, 4, 1), 255, np.uint8)
    index = np.arange(len(labels))
    images[:, 0, 0, 0], images[:, 0, 1, 0] = index // 256, index % 256
    return images


def _index(images):
    return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0].astype(int)


def test_pairs_are_half_same_half_different_with_true_targets():
    labels = np.repeat(np.arange(30), [2 + (c % 4) for c in range(30)])
    images = _indexed_images(labels)
    for inputs, same in pair_dataset(images, labels, 16, seed=5, num_batches=20):
        first, second = _index(inputs["first_images"].numpy()), _index(
            inputs["second_images"].numpy())
        same = same.numpy()
        assert same.sum() == 8 and set(same) == {0.0, 1.0}
        np.testing.assert_array_equal(labels[first] == labels[second], same == 1.0)
        assert (first != second).all()  # same-class pairs use two distinct examples


def test_pair_stream_is_a_function_of_seed_and_index():
    labels = np.repeat(np.arange(10), 3)
    images = _indexed_images(labels)
    whole = list(pair_dataset(images, labels, 8, seed=1, num_batches=6).as_numpy_iterator())
    tail = list(pair_dataset(images, labels, 8, seed=1, start=4,
                             num_batches=2).as_numpy_iterator())
    other = list(pair_dataset(images, labels, 8, seed=2, num_batches=6).as_numpy_iterator())
    for a, b in zip(whole[4:], tail):
        np.testing.assert_array_equal(a[0]["first_images"], b[0]["first_images"])
        np.testing.assert_array_equal(a[1], b[1])
    assert any((a[0]["first_images"] != c[0]["first_images"]).any()
               for a, c in zip(whole, other))


def test_distortion_moves_ink_but_keeps_shape_and_paper(rng):
    labels = np.repeat(np.arange(4), 2)
    images = np.full((8, 28, 28, 1), 255, np.uint8)
    images[:, 10:18, 12:16] = 0  # a dark bar on white paper
    plain = next(iter(pair_dataset(images, labels, 8, seed=0)))[0]["first_images"].numpy()
    warped = next(iter(pair_dataset(images, labels, 8, seed=0, distort=True)))[0][
        "first_images"].numpy()
    assert warped.shape == plain.shape and warped.dtype == np.uint8
    assert (warped != plain).any()
    assert (warped[:, :3, :3] == 255).all()  # corners stay white paper


def test_odd_pair_count_is_rejected():
    with pytest.raises(ValueError, match="even"):
        pair_dataset(np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 0, 1, 1]), 3)


def test_siamese_pair_scorer_and_episode_scores_agree(make_episode, rng):
    model = build_model("siamese", {"dense_units": 16})
    episode, _ = make_episode(3, [1, 2, 3], 2, rng)
    logits = model(episode).numpy()
    s_x, s_y, q_x = (episode[k] for k in ("support_images", "support_labels", "query_images"))
    for q in range(len(q_x)):
        pair = {"first_images": np.repeat(q_x[q:q + 1], len(s_x), 0), "second_images": s_x}
        p = tf.sigmoid(model(pair)).numpy()
        expected = [np.log(p[s_y == n].mean()) for n in range(3)]  # mean score over shots
        np.testing.assert_allclose(logits[q], expected, rtol=1e-4, atol=1e-5)



def test_siamese_pairs_of_two_sizes_and_mismatched_counts(rng):
    model = build_model("siamese", {"dense_units": 16})
    small = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    large = tf.image.resize(small, (56, 56), method="nearest").numpy()  # each pixel 2x2
    np.testing.assert_array_equal(
        model({"first_images": small, "second_images": large}).numpy(),
        model({"first_images": small, "second_images": small}).numpy())  # area resize: same
    with pytest.raises(ValueError, match="same number of images"):
        model({"first_images": small, "second_images": small[:2]})

def test_within_group_negatives_pair_two_classes_of_one_group():
    labels = np.repeat(np.arange(12), 3)
    groups = np.array([0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 4, 5])  # classes 7, 10, 11 alone
    images = _indexed_images(labels)
    seen = set()
    for inputs, same in pair_dataset(images, labels, 16, groups=groups, seed=4,
                                     num_batches=30):
        first = labels[_index(inputs["first_images"].numpy())]
        second = labels[_index(inputs["second_images"].numpy())]
        different = same.numpy() == 0.0
        assert (first[different] != second[different]).all()
        np.testing.assert_array_equal(groups[first[different]], groups[second[different]])
        seen |= set(first[different]) | set(second[different])
    assert seen == {0, 1, 2, 3, 4, 5, 6, 8, 9}  # every class of a group of >= 2 is used


def test_siamese_distance_head_starts_as_a_scaled_negative_l1_distance(rng):
    model = build_model("siamese", {"head_init": "distance"})
    a, b = (rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8) for _ in range(2))
    logits = model({"first_images": a, "second_images": b}).numpy()
    fa, fb = (model.features(model.preprocess(x)).numpy() for x in (a, b))
    np.testing.assert_allclose(logits, -0.1 * np.abs(fa - fb).sum(-1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head_init"):
        build_model("siamese", {"head_init": "zeros"})
