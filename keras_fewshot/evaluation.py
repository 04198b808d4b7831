"""Few-shot accuracy over many test episodes (or sequences), with 95% confidence intervals.

Protocols:
  "vinyals": N-way K-shot episodes over the Vinyals test classes (character x rotation),
             settings 5w1s, 5w5s, 20w1s, 20w5s, 15 queries per class.
  "lake":    20-way 1-shot within one alphabet of the 20 evaluation alphabets
             (Lake et al. 2015), 15 queries per class.
  "mini_imagenet", "cifar_fs", "fc100", "cub": the natural-image benchmarks' own
             protocols (`data.benchmarks.PROTOCOLS`): 5-way 1- and 5-shot on the test
             classes of their split, 15 queries per class, 600 or 1000 episodes.
  "sinusoid": regression tasks of the test stream (Finn et al. 2017, sec. 5.1), K = 5
             support points, 100 query points; mean-squared error after 1, 5 and 10 inner
             steps (models that adapt, such as MAMLRegressor).
Sequence models (training_task "sequences") are measured on label sequences of the same
test classes instead: accuracy by instance, i.e. how often the k-th presentation of a class
in a sequence is labelled right (Santoro et al. 2016, table 1), for k = 1..instances.
Any other labelled images (`evaluate_data`; a folder or TFDS dataset by `evaluation_data`):
the Vinyals settings that the model can do and the data can fill, or the settings asked for
(sequence models: accuracy by instance on their classes).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot.data import (episode_dataset, load_dataset, load_split, sequence_dataset,
                                sinusoid_tasks)
from keras_fewshot.data import benchmarks
from keras_fewshot.data.datasets import (NATURAL, OMNIGLOT, benchmark_split,
                                         evaluation_subset, parse_dataset)
from keras_fewshot.data.labelled import LabelledImages
from keras_fewshot.data.sinusoid import X_RANGE, sinusoid, sinusoid_parameters, sinusoid_task

PROTOCOLS = {
    "vinyals": {"split": "vinyals", "subset": "test", "within_group": False,
                "settings": ((5, 1), (5, 5), (20, 1), (20, 5))},
    "lake": {"split": "lake", "subset": "evaluation", "within_group": True,
             "settings": ((20, 1),)},
    "sinusoid": {"settings": ((5,),), "queries": 100, "inner_steps": (1, 5, 10)},
    **{name: {"split": spec["split"], "subset": "test", "within_group": False,
              "settings": spec["settings"], "queries": spec["queries"],
              "episodes": spec["episodes"]}
       for name, spec in benchmarks.PROTOCOLS.items()},
}
DEFAULT_EPISODES = 1000  # test episodes per setting where the protocol names no number


def protocol_episodes(protocol):
    """How many test episodes per setting `protocol` runs (None: `DEFAULT_EPISODES`)."""
    return PROTOCOLS.get(protocol, {}).get("episodes", DEFAULT_EPISODES)
PAPER_INSTANCES = (1, 2, 3, 4, 5, 10)  # the presentations Santoro et al.'s table reports


def mean_and_ci95(values):
    """Mean and half-width of the normal-approximation 95% confidence interval."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


def _hits(logits, labels):
    """bool: where the highest-scoring class is the label."""
    return tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))


def episode_accuracies(model, dataset, episodes, verbose=1):
    """Per-episode query accuracy of `model` over a dataset of batched episodes."""

    @tf.function(reduce_retracing=True)
    def accuracy(inputs, query_labels):
        hits = _hits(model(inputs, training=False), query_labels)
        return tf.reduce_mean(tf.cast(hits, tf.float32), axis=-1)

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


def default_settings(model, protocol):
    """The protocol's settings the model can do: a fixed-N model only its own N, a model
    with a largest N (`max_ways`) those up to it."""
    settings = PROTOCOLS[protocol]["settings"]
    if protocol == "sinusoid":
        return settings
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


def evaluate(model, protocol="vinyals", episodes=1000, queries=None, seed=0, data_source=None,
             image_size=28, settings=None, episodes_per_batch=10, verbose=1):
    """Rows {"protocol", "ways", "shots", "queries", "episodes", "accuracy", "ci95"}.

    Accuracy and ci95 are fractions. Episodes are a function of `seed` alone, so the same
    call gives the same episodes on any machine. Settings default to those of the protocol
    that the model can do; queries to 15 per class. The "sinusoid" protocol gives
    `evaluate_sinusoid`'s rows (settings are (K,) tuples, `episodes` counts tasks); a
    sequence model gives `evaluate_sequences`' rows on the protocol's classes (`episodes`
    counts sequences).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    spec = PROTOCOLS[protocol]
    if protocol == "sinusoid":
        return [row for (shots,) in settings or spec["settings"]
                for row in evaluate_sinusoid(model, tasks=episodes, shots=shots,
                                             queries=queries or spec["queries"], seed=seed,
                                             inner_steps=spec["inner_steps"])]
    data, name, within_group, protocol = evaluation_data(OMNIGLOT, protocol, source=data_source,
                                                         image_size=image_size)
    return evaluate_data(model, data, name, settings, episodes, queries or 15, seed,
                         within_group, episodes_per_batch, verbose, protocol)


def takes_colour(model):
    """Whether `model`'s preprocessor reads colour (RGB) images rather than gray ones."""
    return getattr(getattr(model, "preprocess", None), "channels", 1) == 3


def evaluation_data(dataset=OMNIGLOT, protocol="vinyals", split=None, subset=None, source=None,
                    image_size=28, channels=None, keep_channels=False):
    """(data, name, within_group, protocol) to test a model on: an Omniglot protocol's
    classes (and the protocol, whose settings are the default); or the `subset` of another
    dataset's class `split` (default: every class; subset default: its "test" classes, or
    all), protocol None. A natural-image benchmark is measured by its own protocol (its
    split, "test" classes unless `subset` says otherwise). `keep_channels`: folder and TFDS
    images keep their colour (for a model that `takes_colour`), else they become gray."""
    kind = parse_dataset(dataset)[0]
    if kind in NATURAL:
        split, subset = benchmark_split(kind, split), subset or PROTOCOLS[kind]["subset"]
        data = load_dataset(dataset, split, subset, source, image_size, channels)
        return data, f"{dataset} {split}/{subset}", False, kind
    if kind == OMNIGLOT:
        if protocol not in PROTOCOLS or protocol == "sinusoid":
            raise ValueError(f"Unknown Omniglot protocol {protocol!r}; expected 'vinyals' or "
                             "'lake'")
        spec = PROTOCOLS[protocol]
        data = load_split(spec["split"], spec["subset"], source=source, image_size=image_size)
        return data, protocol, spec["within_group"], protocol
    split = split or "all"
    subset = subset or evaluation_subset(split)
    data = load_dataset(dataset, split, subset, source, image_size, channels,
                        keep_channels=keep_channels)
    return data, f"{dataset} {split}/{subset}", False, None


def first_episode(data: LabelledImages, ways, shots, queries, seed=0, within_group=False):
    """The first episode (inputs, query labels; numpy) of the stream `evaluate_data` draws."""
    (inputs, query_labels), = episode_dataset(
        data.images, data.labels, ways, shots, queries,
        groups=data.groups if within_group else None, seed=seed,
        num_episodes=1).as_numpy_iterator()
    return inputs, query_labels


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


def evaluate_data(model, data: LabelledImages, name, settings=None, episodes=1000, queries=15,
                  seed=0, within_group=False, episodes_per_batch=10, verbose=1, protocol=None):
    """Rows as `evaluate`'s ("protocol": `name`) on episodes of any labelled images.

    settings: (ways, shots) pairs; every one must fit the data (else ValueError naming the
    problem). None: the settings of `protocol` that the model can do; without a protocol,
    the Vinyals settings that the model can do and the data can fill (at least one must).
    A sequence model gives `evaluate_sequences`' rows instead (`episodes` counts sequences).
    """
    if getattr(model, "training_task", None) == "sequences":
        if settings:
            raise ValueError("N-way K-shot settings do not apply to a sequence model: it is "
                             f"measured on sequences of its {model.classes} classes")
        return evaluate_sequences(model, data, name, sequences=episodes, seed=seed,
                                  groups=data.groups if within_group else None,
                                  sequences_per_batch=episodes_per_batch, verbose=verbose)
    if settings is None and protocol:
        settings = default_settings(model, protocol)
    if settings is None:
        standard = default_settings(model, "vinyals")
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
            groups=data.groups if within_group else None, seed=seed,
            num_episodes=episodes, batch_size=batch)
        if verbose:
            print(f"{name}: {ways}-way {shots}-shot, {episodes} episodes")
        accuracy, ci95 = mean_and_ci95(episode_accuracies(model, dataset, episodes, verbose))
        rows.append({"protocol": name, "ways": ways, "shots": shots, "queries": queries,
                     "episodes": episodes, "accuracy": accuracy, "ci95": ci95})
    return rows


def evaluate_sinusoid(model, tasks=1000, shots=5, queries=100, inner_steps=(1, 5, 10), seed=0,
                      tasks_per_batch=100):
    """Rows {"protocol", "shots", "queries", "tasks", "inner_steps", "mse", "ci95"}: the mean
    over test-stream tasks of the query mean-squared error after `inner_steps` steps of
    adaptation on the K = `shots` support points (`model(inputs, inner_steps=s)`)."""
    batch = math.gcd(tasks, tasks_per_batch)
    dataset = sinusoid_tasks(shots, queries, seed=seed, stream="test", num_tasks=tasks,
                             batch_size=batch)
    predict = tf.function(lambda inputs, steps: model(inputs, inner_steps=steps),
                          reduce_retracing=True)
    errors = {steps: [] for steps in inner_steps}
    for inputs, query_y in dataset:
        for steps in inner_steps:
            predictions = predict(inputs, steps)
            errors[steps].append(tf.reduce_mean(tf.square(predictions - query_y), [1, 2]))
    rows = []
    for steps in inner_steps:
        mse, ci95 = mean_and_ci95(np.concatenate(errors[steps]))
        rows.append({"protocol": "sinusoid", "shots": shots, "queries": queries,
                     "tasks": tasks, "inner_steps": steps, "mse": mse, "ci95": ci95})
    return rows


def sinusoid_curves(model, count=3, shots=5, inner_steps=(0, 1, 10), seed=0, points=200):
    """Adapted curves for a plot: test-stream tasks 0..count-1, numpy arrays
    {"x" [P], "truth" [count, P], "support_x"/"support_y" [count, K],
     "predictions" {steps: [count, P]}}."""
    x = np.linspace(*X_RANGE, points, dtype=np.float32)
    tasks = [sinusoid_task(seed, i, shots, 1, stream="test") for i in range(count)]
    inputs = {"support_x": tf.stack([t[0]["support_x"] for t in tasks]),
              "support_y": tf.stack([t[0]["support_y"] for t in tasks]),
              "query_x": tf.tile(x[None, :, None], [count, 1, 1])}
    truth = [sinusoid(x, *sinusoid_parameters(seed, i, "test")) for i in range(count)]
    return {"x": x, "truth": np.stack([t.numpy() for t in truth]),
            "support_x": inputs["support_x"].numpy()[..., 0],
            "support_y": inputs["support_y"].numpy()[..., 0],
            "predictions": {steps: model(inputs, inner_steps=steps).numpy()[..., 0]
                            for steps in inner_steps}}


def instance_numbers(labels):
    """int [B, T] -> [B, T]: labels[b, t] is the k-th presentation of its class (1-based)."""
    labels = tf.cast(labels, tf.int32)
    onehot = tf.one_hot(labels, tf.reduce_max(labels) + 1, dtype=tf.int32)
    return tf.reduce_sum(tf.cumsum(onehot, axis=1) * onehot, axis=-1)


def sequence_hits(model, dataset, sequences, verbose=1):
    """(hits bool [M, T], instance numbers int [M, T]) of `model` over batched sequences."""

    @tf.function(reduce_retracing=True)
    def predict(inputs, labels):
        return _hits(model(inputs, training=False), labels), instance_numbers(labels)

    progress = keras.utils.Progbar(sequences, verbose=verbose, unit_name="sequence")
    hits, instances = [], []
    for inputs, labels in dataset:
        h, k = predict(inputs, labels)
        hits.append(h.numpy())
        instances.append(k.numpy())
        progress.add(len(hits[-1]))
    return np.concatenate(hits), np.concatenate(instances)


def evaluate_sequences(model, data, protocol, sequences=1000, instances=10, seed=0,
                       groups=None, sequences_per_batch=10, verbose=1):
    """Rows {"protocol", "classes", "instances", "sequences", "instance", "accuracy", "ci95"},
    one per instance k = 1..instances: the accuracy of the k-th presentations (fractions;
    the interval is over sequences, each scored by the mean over its classes)."""
    batch = math.gcd(sequences, sequences_per_batch)
    dataset = sequence_dataset(data.images, data.labels, model.classes, instances,
                               groups=groups, seed=seed, num_sequences=sequences,
                               batch_size=batch)
    if verbose:
        print(f"{protocol}: {sequences} sequences of {model.classes} classes x {instances} "
              "instances")
    hits, numbers = sequence_hits(model, dataset, sequences, verbose)
    rows = []
    for k in range(1, instances + 1):
        per_sequence = np.array([h[n == k].mean() for h, n in zip(hits, numbers)])
        accuracy, ci95 = mean_and_ci95(per_sequence)
        rows.append({"protocol": protocol, "classes": model.classes, "instances": instances,
                     "sequences": sequences, "instance": k, "accuracy": accuracy,
                     "ci95": ci95})
    return rows


def _ordinal(k):
    """The English ordinal of k: 1st, 2nd, 3rd, 4th, ..., 11th, ..., 21st."""
    suffixes = {1: "st", 2: "nd", 3: "rd"}
    return str(k) + ("th" if 10 <= k % 100 < 20 else suffixes.get(k % 10, "th"))


def sequence_markdown_table(rows, instances=PAPER_INSTANCES):
    """Accuracy by instance as Markdown: one line per protocol and class count, a column per
    reported presentation (percent ± 95% CI)."""
    keys = sorted({(r["protocol"], r["classes"], r["sequences"]) for r in rows},
                  key=lambda key: (key[0], key[1]))
    shown = [k for k in instances if any(r["instance"] == k for r in rows)]
    lines = ["| protocol | classes | sequences | " + " | ".join(map(_ordinal, shown)) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    for protocol, classes, count in keys:
        cells = {r["instance"]: f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
                 for r in rows if (r["protocol"], r["classes"], r["sequences"])
                 == (protocol, classes, count)}
        lines.append(f"| {protocol} | {classes} | {count} | "
                     + " | ".join(cells.get(k, "") for k in shown) + " |")
    return "\n".join(lines)


def markdown_table(rows):
    """The accuracy (or, for regression rows, mean-squared error) table as Markdown;
    sequence rows give accuracy by instance (`sequence_markdown_table`)."""
    if rows and "instance" in rows[0]:
        return sequence_markdown_table(rows)
    if rows and "mse" in rows[0]:
        lines = ["| protocol | K | inner steps | tasks | MSE | 95% CI |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['protocol']} | {r['shots']} | {r['inner_steps']} | {r['tasks']} "
                  f"| {r['mse']:.3f} | ± {r['ci95']:.3f} |" for r in rows]
        return "\n".join(lines)
    lines = ["| protocol | setting | episodes | accuracy (%) | 95% CI |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['ways']}-way {r['shots']}-shot | {r['episodes']} "
                     f"| {100 * r['accuracy']:.2f} | ± {100 * r['ci95']:.2f} |")
    return "\n".join(lines)
