"""N-way K-shot Q-query episodes from any labelled images, on tf.data.

Episode i of a stream depends only on (seed, i): sampling uses stateless random ops, so the
stream is the same however the map is parallelised, and a resumed run that starts at
episode i sees exactly what an uninterrupted run would have seen.

Each episode: N distinct classes (optionally all from one group, e.g. one alphabet), K + Q
distinct examples per class, support and query disjoint, classes given labels 0..N-1 in
random order, support and query each in random order. Elements follow the episode contract:
({"support_images", "support_labels", "query_images"}, query_labels).

Given each image's drawer, episodes are Lake et al.'s (2015) one-shot runs instead: one
drawer's image of each class as support, another drawer's as query (1-shot, 1 query).
`distort=True` gives every image of an episode its own Koch et al. (2015) affine distortion
(training augmentation), drawn from (seed, i) as the rest of the episode; `views=N` gives
each episode together with N distorted views of it (test-time distortion averaging).
"""

import functools

import numpy as np
import tensorflow as tf

from keras_fewshot.data.distortions import koch_distort


class EpisodeSpec:
    """Validated sampling tables (classes sorted, offsets, counts) for N classes with K + Q
    examples each: episodes, pairs, sequences."""

    def __init__(self, labels, ways, shots, queries, groups=None):
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} "
                             f"{labels.shape}")
        for name, value, least in (("ways", ways, 1), ("shots", shots, 1),
                                   ("queries", queries, 0)):
            if int(value) < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.order = np.argsort(labels, kind="stable")
        classes, offsets, counts = np.unique(labels[self.order], return_index=True,
                                             return_counts=True)
        per_class = self.shots + self.queries
        eligible = counts >= per_class
        if eligible.sum() < self.ways:
            raise ValueError(f"{self.ways}-way episodes with {per_class} examples per class "
                             f"need {self.ways} classes with >= {per_class} examples; "
                             f"only {eligible.sum()} of {len(classes)} classes have that")
        self.offsets = offsets[eligible].astype(np.int64)
        self.counts = counts[eligible].astype(np.int64)
        self.max_count = int(self.counts.max())
        self.groups = None
        if groups is not None:
            groups = np.asarray(groups)[classes[eligible]]
            group_ids, group_sizes = np.unique(groups, return_counts=True)
            usable = group_ids[group_sizes >= self.ways]
            if len(usable) == 0:
                raise ValueError(f"No group has {self.ways} classes with >= {per_class} "
                                 "examples for within-group episodes")
            self.groups = groups.astype(np.int64)
            self.usable_groups = usable.astype(np.int64)


def check_images(images, labels) -> np.ndarray:
    """images as an array [M, H, W, C] with one label each, else ValueError."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images must be [M, H, W, C] with one label each; got images "
                         f"{images.shape} and {len(labels)} labels")
    return images


def drawer_table(spec: EpisodeSpec, labels, drawers) -> np.ndarray:
    """int64 [classes, D]: the example (index into the class-sorted order) of each of `spec`'s
    classes by each of the D drawers (sorted); ValueError unless every class has exactly one
    example by each drawer and there are at least two drawers."""
    drawers = np.asarray(drawers)
    if drawers.shape != np.shape(labels):
        raise ValueError(f"drawers must give one drawer per image: {drawers.shape} for "
                         f"{len(labels)} labels")
    drawers, labels = drawers[spec.order], np.asarray(labels)[spec.order]
    names = np.unique(drawers)
    if len(names) < 2:
        raise ValueError("Episodes by drawer take support and queries from two drawers; the "
                         f"images have {len(names)}")
    table = np.empty((len(spec.offsets), len(names)), np.int64)
    for row, (offset, count) in enumerate(zip(spec.offsets, spec.counts)):
        own = drawers[offset:offset + count]
        if count != len(names) or not np.array_equal(np.sort(own), names):
            raise ValueError(f"Episodes by drawer need one image of every class by each of the "
                             f"{len(names)} drawers; class {labels[offset]} has drawers "
                             f"{sorted(own.tolist())}")
        table[row] = offset + np.argsort(own)
    return table


def sample_classes(spec: EpisodeSpec, seeds):
    """[N] distinct classes (indices into `spec`'s classes) in random order, the order being
    their labels 0..N-1; all of one random usable group when `spec` has groups.

    seeds: stateless seeds, of which the first two are used.
    """
    num_classes = len(spec.offsets)
    scores = tf.random.stateless_uniform([num_classes], seeds[0])
    if spec.groups is not None:
        pick = tf.random.stateless_uniform([], seeds[1], maxval=len(spec.usable_groups),
                                           dtype=tf.int32)
        group = tf.gather(spec.usable_groups, pick)
        scores = tf.where(tf.constant(spec.groups) == group, scores, -1.0)
    return tf.math.top_k(scores, spec.ways).indices


def sample_class_examples(spec: EpisodeSpec, seeds):
    """[N, K + Q] example indices (into the class-sorted order): row n holds K + Q distinct
    examples of the class given label n, the N classes distinct and drawn in random order.

    seeds: stateless seeds, of which the first three are used.
    """
    classes = sample_classes(spec, seeds)
    counts = tf.gather(spec.counts, classes)
    per_class = spec.shots + spec.queries
    draws = tf.random.stateless_uniform([spec.ways, spec.max_count], seeds[2])
    draws = tf.where(tf.range(spec.max_count, dtype=tf.int64)[None] < counts[:, None],
                     draws, -1.0)
    within = tf.cast(tf.math.top_k(draws, per_class).indices, tf.int64)
    return tf.gather(spec.offsets, classes)[:, None] + within


def _shuffled(index, labels, seed):
    """Example indices and their labels, flattened, in one random order."""
    index, labels = tf.reshape(index, [-1]), tf.reshape(labels, [-1])
    perm = tf.argsort(tf.random.stateless_uniform(tf.shape(index), seed))
    return tf.gather(index, perm), tf.gather(labels, perm)


def _sample_indices(spec: EpisodeSpec, seed):
    """Example indices (into the class-sorted order) of one episode: support, query."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    index = sample_class_examples(spec, seeds)  # [N, K + Q]
    labels = tf.repeat(tf.range(spec.ways, dtype=tf.int32)[:, None], spec.shots + spec.queries,
                       axis=1)
    support = _shuffled(index[:, :spec.shots], labels[:, :spec.shots], seeds[3])
    query = _shuffled(index[:, spec.shots:], labels[:, spec.shots:], seeds[4])
    return support, query


def _sample_drawer_indices(spec: EpisodeSpec, seed, table):
    """Support and query indices of one run of Lake et al. (2015): N classes, two distinct
    random drawers, the first's image of each class as support, the second's as query."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    classes = sample_classes(spec, seeds)
    pair = tf.math.top_k(tf.random.stateless_uniform([table.shape[1]], seeds[2]), 2).indices
    index = tf.gather(tf.gather(tf.constant(table), classes), pair, axis=1)  # [N, 2]
    labels = tf.range(spec.ways, dtype=tf.int32)
    return _shuffled(index[:, 0], labels, seeds[3]), _shuffled(index[:, 1], labels, seeds[4])


def distorted_view(episode, episode_seed, view):
    """The episode's distortion `view` (1, 2, ...): every support and query image under its
    own random affine map of Koch, Zemel & Salakhutdinov (2015, sec. 4.1; `koch_distort`),
    drawn from stateless_fold_in(episode_seed, view), apart from the sampling's seeds.
    episode_seed: [seed, i] of episode i. Training's `distort` is view 1."""
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(episode_seed, view), 2)
    return {**episode, "support_images": koch_distort(episode["support_images"], seeds[0]),
            "query_images": koch_distort(episode["query_images"], seeds[1])}


def episode_dataset(images, labels, ways, shots, queries, *, groups=None, drawers=None,
                    seed=0, start=0, num_episodes=None, batch_size=None,
                    distort=False, views=0) -> tf.data.Dataset:
    """Episodes from labelled images already at model resolution (uint8 [M, H, W, C]).

    Args:
      images, labels: the examples and their integer classes (any values).
      ways, shots, queries: N, K, Q.
      groups: optional array mapping each class value to a group; every episode then takes
        its N classes from one group (Lake's within-alphabet protocol).
      drawers: optional drawer of each image, every class having one image by each drawer:
        then each episode is a one-shot run (shots = queries = 1), support by one random
        drawer, queries by another.
      seed: episode i is a function of (seed, i) alone.
      start: index of the first episode (resuming a stream).
      num_episodes: length of the stream; None for endless.
      batch_size: if given, stack this many episodes per element ([B, ...] tensors).
      distort: Koch et al.'s random affine distortion of every image (training only).
      views: N > 0: each element's inputs are a tuple of N + 1 episodes, the plain one and
        its `distorted_view`s 1..N (test-time distortion averaging; not with `distort`).
    """
    if distort and views:
        raise ValueError("distort warps the episodes themselves; views adds distorted views "
                         "of plain ones: give one of them")
    if int(queries) < 1:
        raise ValueError(f"queries must be at least 1, got {queries}")
    if drawers is not None and (int(shots), int(queries)) != (1, 1):
        raise ValueError(f"Episodes by drawer have one support and one query image per class "
                         f"(one drawer's and another's); got shots={shots}, queries={queries}")
    images = check_images(images, labels)
    spec = EpisodeSpec(labels, ways, shots, queries, groups)
    sample = _sample_indices if drawers is None else functools.partial(
        _sample_drawer_indices, table=drawer_table(spec, labels, drawers))
    sorted_images = tf.constant(images[spec.order])
    stop = None if num_episodes is None else start + num_episodes
    indices = tf.data.Dataset.counter(start) if stop is None else tf.data.Dataset.range(
        start, stop)

    def make(i):
        episode_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(i, tf.int64)])
        (s_idx, s_lab), (q_idx, q_lab) = sample(spec, episode_seed)
        episode = {"support_images": tf.gather(sorted_images, s_idx), "support_labels": s_lab,
                   "query_images": tf.gather(sorted_images, q_idx)}
        if distort:  # the classes and examples stay the same
            episode = distorted_view(episode, episode_seed, 1)
        if views:
            episode = (episode, *(distorted_view(episode, episode_seed, view)
                                  for view in range(1, views + 1)))
        return episode, q_lab

    ds = indices.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
