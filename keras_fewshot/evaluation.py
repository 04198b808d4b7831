"""Few-shot accuracy over many test episodes, with 95% confidence intervals.

Protocols:
  "vinyals": N-way K-shot episodes over the Vinyals test classes (character x rotation),
             settings 5w1s, 5w5s, 20w1s, 20w5s, 15 queries per class.
  "lake":    20-way 1-shot within one alphabet of the 20 evaluation alphabets
             (Lake et al. 2015), 15 queries per class.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot.data import episode_dataset, load_split

PROTOCOLS = {
    "vinyals": {"split": "vinyals", "subset": "test", "within_group": False,
                "settings": ((5, 1), (5, 5), (20, 1), (20, 5))},
    "lake": {"split": "lake", "subset": "evaluation", "within_group": True,
             "settings": ((20, 1),)},
}


def mean_and_ci95(values):
    """Mean and half-width of the normal-approximation 95% confidence interval."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


def episode_accuracies(model, dataset, episodes, verbose=1):
    """Per-episode query accuracy of `model` over a dataset of batched episodes."""

    @tf.function(reduce_retracing=True)
    def accuracy(inputs, query_labels):
        logits = model(inputs, training=False)
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                        tf.cast(query_labels, tf.int32))
        return tf.reduce_mean(tf.cast(hits, tf.float32), axis=-1)

    progress = keras.utils.Progbar(episodes, verbose=verbose, unit_name="episode")
    values = []
    for inputs, query_labels in dataset:
        values.append(accuracy(inputs, query_labels).numpy())
        progress.add(len(values[-1]))
    return np.concatenate(values)


def evaluate(model, protocol="vinyals", episodes=1000, queries=15, seed=0, data_source=None,
             image_size=28, settings=None, episodes_per_batch=10, verbose=1):
    """Rows {"protocol", "ways", "shots", "queries", "episodes", "accuracy", "ci95"}.

    Accuracy and ci95 are fractions. Episodes are a function of `seed` alone, so the same
    call gives the same episodes on any machine.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    spec = PROTOCOLS[protocol]
    data = load_split(spec["split"], spec["subset"], source=data_source, image_size=image_size)
    rows = []
    for ways, shots in settings or spec["settings"]:
        batch = math.gcd(episodes, episodes_per_batch)
        dataset = episode_dataset(
            data.images, data.labels, ways, shots, queries,
            groups=data.groups if spec["within_group"] else None, seed=seed,
            num_episodes=episodes, batch_size=batch)
        if verbose:
            print(f"{protocol}: {ways}-way {shots}-shot, {episodes} episodes")
        accuracy, ci95 = mean_and_ci95(episode_accuracies(model, dataset, episodes, verbose))
        rows.append({"protocol": protocol, "ways": ways, "shots": shots, "queries": queries,
                     "episodes": episodes, "accuracy": accuracy, "ci95": ci95})
    return rows


def markdown_table(rows):
    """The accuracy table as Markdown (percent, 95% CI)."""
    lines = ["| protocol | setting | episodes | accuracy (%) | 95% CI |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['ways']}-way {r['shots']}-shot | {r['episodes']} "
                     f"| {100 * r['accuracy']:.2f} | ± {100 * r['ci95']:.2f} |")
    return "\n".join(lines)
