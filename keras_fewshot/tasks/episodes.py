"""N-way K-shot episodes (the episode contract): what every classifier trains on, is
measured by (accuracy with 95% CIs) and serves."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot import classify, plots
from keras_fewshot.data import episode_dataset
from keras_fewshot.data.labelled import LabelledImages
from keras_fewshot.tasks.base import TaskKind
from keras_fewshot.tasks.measures import hits, mean_and_ci95

# {input: (dtype, shape (None: any size), the shape as the messages name it)}
EPISODE_INPUTS = {"support_images": (tf.uint8, [None] * 4, "[S, H, W, C]"),
                  "support_labels": (tf.int32, [None], "[S]"),
                  "query_images": (tf.uint8, [None] * 4, "[Q, H, W, C]")}


def mean_probabilities(model, views):
    """[..., Q, N]: each query's softmax class probabilities averaged over the views of its
    episode (a tuple of batched episodes, `episode_dataset(..., views=N)`'s), each view
    classified on its own in inference mode."""
    return tf.add_n([tf.nn.softmax(tf.cast(model(view, training=False), tf.float32))
                     for view in views]) / len(views)


def averaged_name(name, test_distortions=0):
    """`name` of rows measured with `test_distortions` views averaged, as tables show it:
    e.g. "lake_runs, 8 test distortions averaged" (`name` itself for 0)."""
    return f"{name}, {test_distortions} test distortions averaged" if test_distortions else name


def episode_accuracies(model, dataset, episodes, verbose=1):
    """Per-episode query accuracy of `model` over a dataset of batched episodes, or of
    tuples of views of them (scored by `mean_probabilities`)."""

    @tf.function(reduce_retracing=True)
    def accuracy(inputs, query_labels):
        scores = (mean_probabilities(model, inputs) if isinstance(inputs, tuple)
                  else model(inputs, training=False))
        right = hits(scores, query_labels)
        return tf.reduce_mean(tf.cast(right, tf.float32), axis=-1)

    # The mean so far is passed as a stateful value: Progbar's own averaging of per-batch
    # values does not weight them by the batch (it showed 95.9% for a 94.4% run).
    progress = keras.utils.Progbar(episodes, verbose=verbose, unit_name="episode",
                                   stateful_metrics=["accuracy"])
    values, total, count = [], 0.0, 0
    for inputs, query_labels in dataset:
        values.append(accuracy(inputs, query_labels).numpy())
        total, count = total + float(values[-1].sum()), count + len(values[-1])
        progress.add(len(values[-1]), [("accuracy", total / count)])
    return np.concatenate(values)


def own_settings(model, settings, protocol):
    """The (ways, shots) of `protocol`'s `settings` the model can do: a fixed-N model only
    its own N, a model with a largest N (`max_ways`) those up to it."""
    ways = getattr(model, "fixed_ways", None)
    if ways is not None:
        own = tuple(s for s in settings if s[0] == ways)
        if not own:
            raise ValueError(f"The model classifies exactly {ways} classes, and the {protocol} "
                             f"protocol has no {ways}-way setting; give settings explicitly")
        return own
    most = getattr(model, "max_ways", None)
    own = tuple(s for s in settings if most is None or s[0] <= most)
    if not own:
        raise ValueError(f"The model classifies at most {most} classes, and the {protocol} "
                         "protocol has no setting that small; give settings explicitly")
    return own


def fitting_settings(data: LabelledImages, settings, queries):
    """The (ways, shots) of `settings` whose episodes `data` can fill."""
    fitting = []
    for ways, shots in settings:
        try:
            data.check_episodes(ways, shots, queries)
            fitting.append((ways, shots))
        except ValueError:
            pass
    return fitting


def first_episode(data: LabelledImages, ways, shots, queries, seed=0, within_group=False):
    """The first episode (inputs, query labels; numpy) of the stream `evaluate` draws."""
    (inputs, query_labels), = episode_dataset(
        data.images, data.labels, ways, shots, queries,
        groups=data.groups if within_group else None, drawers=data.drawers, seed=seed,
        num_episodes=1).as_numpy_iterator()
    return inputs, query_labels


class Episodes(TaskKind):
    """Batches of `episodes_per_step` N-way K-shot Q-query episodes, query labels as
    targets (distorted as Koch et al. 2015 with `distort`); measured by query accuracy, on
    Lake et al.'s one-shot runs when the data carries drawers; served by the episode
    signatures."""

    name = "episodes"
    serving_inputs = EPISODE_INPUTS
    distortion_averaging = True

    def training_stream(self, config, model, data, start=0):
        if data is None:
            self.refuse_dataset(config)
        return episode_dataset(data.images, data.labels, config.ways, config.shots,
                               config.queries,
                               groups=data.groups if config.within_alphabet else None,
                               seed=config.seed, start=start,
                               num_episodes=config.episodes - start,
                               batch_size=config.episodes_per_step, distort=config.distort)

    def check_training_data(self, config, data):
        if data is not None:
            data.check_episodes(config.ways, config.shots, config.queries,
                                what=f"{config.dataset} {config.split}/{config.subset}")

    def evaluate(self, model, data, name, protocol, spec, settings=None, episodes=1000,
                 queries=15, seed=0, within_group=False, episodes_per_batch=10, verbose=1,
                 test_distortions=0):
        """Rows {"protocol": `name`, "ways", "shots", "queries", "episodes", "accuracy",
        "ci95"} (fractions). settings: (ways, shots) pairs, each of which must fit the data
        (else ValueError naming the problem); None: those of the protocol the model can do,
        or without a protocol, the Vinyals ones it can do and the data can fill. Data with
        drawers (the lake_runs protocol's) gives one-shot runs: support by one drawer,
        queries by another.

        test_distortions: N > 0 classifies each episode as is and in N distorted views
        (`data.episodes.distorted_view`: Koch et al. 2015, sec. 4.1), each query by its mean
        softmax over the N + 1 (`mean_probabilities`); rows then also say
        "test_distortions": N. Not transductive: each view is classified as the plain
        episode is (inference mode, from its own support set) and the averaging is per
        query, so it makes a query's class depend on no other query (beyond what the
        model's plain scores already do, e.g. MAML's batch norm, meta/maml.py)."""
        if settings is None:
            settings = own_settings(model, spec["settings"], protocol or "vinyals")
            if not protocol:
                standard = settings
                settings = fitting_settings(data, standard, queries) or standard[:1]
                if verbose and len(settings) < len(standard):
                    print(f"{name}: {data.num_classes} classes, at least "
                          f"{np.bincount(data.labels).min()} examples each; evaluating "
                          f"{', '.join(f'{w}-way {k}-shot' for w, k in settings)} only")
        for ways, shots in settings:
            data.check_episodes(ways, shots, queries, what=name)
        rows = []
        for ways, shots in settings:
            batch = math.gcd(episodes, episodes_per_batch)
            dataset = episode_dataset(
                data.images, data.labels, ways, shots, queries,
                groups=data.groups if within_group else None, drawers=data.drawers,
                seed=seed, num_episodes=episodes, batch_size=batch, views=test_distortions)
            averaged = {"test_distortions": test_distortions} if test_distortions else {}
            if verbose:
                print(f"{averaged_name(name, test_distortions)}: {ways}-way {shots}-shot, "
                      f"{episodes} episodes")
            accuracy, ci95 = mean_and_ci95(episode_accuracies(model, dataset, episodes,
                                                              verbose))
            rows.append({"protocol": name, "ways": ways, "shots": shots, "queries": queries,
                         "episodes": episodes, "accuracy": accuracy, "ci95": ci95,
                         **averaged})
        return rows

    def evaluation_figure(self, model, rows, label, data, name, queries=15, seed=0,
                          within_group=False):
        """The first test episode of the first row's setting with the model's predictions."""
        episode, labels = first_episode(data, rows[0]["ways"], rows[0]["shots"], queries, seed,
                                        within_group)
        probabilities = classify.probabilities(model, episode)
        title = plots.episode_title(episode["support_labels"], labels, probabilities)
        return plots.episode_figure(episode["support_images"], episode["support_labels"],
                                    episode["query_images"], probabilities, labels,
                                    title=f"{name}, first test episode: {title}")

    def test_inputs(self, model, config, data):
        """5-way 1-shot and N-way 5-shot episodes, 15 queries per class (N: 20, or the
        model's fixed N)."""
        ways = getattr(model, "fixed_ways", None) or 20
        return [(f"{w}w{k}s15q", first_episode(data, w, k, 15)[0])
                for w, k in ((5, 1), (ways, 5))]

    def request_inputs(self, model, config, data):
        """A 5-way 1-shot support set with 5 queries, one per class."""
        return [("5w1s1q", first_episode(data, 5, 1, 1)[0])]

    def training_pictures(self, config, model, data, log_dir):
        """One small episode of the training classes with the model's predictions after each
        epoch (none when the data cannot fill that episode)."""
        if data is None:
            return []
        ways = config.ways if getattr(model, "fixed_ways", None) else min(config.ways, 10)
        queries = min(config.queries, 3)
        try:
            data.check_episodes(ways, config.shots, queries)
        except ValueError:
            return []
        (episode, labels), = episode_dataset(data.images, data.labels, ways, config.shots,
                                             queries, seed=config.seed,
                                             num_episodes=1).as_numpy_iterator()
        return [plots.EpisodeImages(log_dir, episode, labels)]


EPISODES = Episodes()
