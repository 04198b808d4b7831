"""Label sequences (Santoro et al. 2016): what the sequence models train on, are measured
by (accuracy by instance) and serve."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_fewshot import plots
from keras_fewshot.data import sequence_dataset
from keras_fewshot.tasks.base import TaskKind
from keras_fewshot.tasks.measures import hits, mean_and_ci95

# {input: (dtype, shape (None: any size), the shape as the messages name it)}
SEQUENCE_INPUTS = {"images": (tf.uint8, [None] * 4, "[T, H, W, C]"),
                   "labels": (tf.int32, [None], "[T]")}


def first_sequence(data, classes, instances):
    """The first label sequence (inputs; numpy) of a stream of `data`'s classes."""
    (inputs, _), = sequence_dataset(data.images, data.labels, classes, instances, seed=0,
                                    num_sequences=1).as_numpy_iterator()
    return inputs


def instance_numbers(labels):
    """int [B, T] -> [B, T]: labels[b, t] is the k-th presentation of its class (1-based)."""
    labels = tf.cast(labels, tf.int32)
    onehot = tf.one_hot(labels, tf.reduce_max(labels) + 1, dtype=tf.int32)
    return tf.reduce_sum(tf.cumsum(onehot, axis=1) * onehot, axis=-1)


def sequence_hits(model, dataset, sequences, verbose=1):
    """(hits bool [M, T], instance numbers int [M, T]) of `model` over batched sequences."""

    @tf.function(reduce_retracing=True)
    def predict(inputs, labels):
        return hits(model(inputs, training=False), labels), instance_numbers(labels)

    progress = keras.utils.Progbar(sequences, verbose=verbose, unit_name="sequence")
    right, instances = [], []
    for inputs, labels in dataset:
        h, k = predict(inputs, labels)
        right.append(h.numpy())
        instances.append(k.numpy())
        progress.add(len(right[-1]))
    return np.concatenate(right), np.concatenate(instances)


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
    right, numbers = sequence_hits(model, dataset, sequences, verbose)
    rows = []
    for k in range(1, instances + 1):
        per_sequence = np.array([h[n == k].mean() for h, n in zip(right, numbers)])
        accuracy, ci95 = mean_and_ci95(per_sequence)
        rows.append({"protocol": protocol, "classes": model.classes, "instances": instances,
                     "sequences": sequences, "instance": k, "accuracy": accuracy,
                     "ci95": ci95})
    return rows


class Sequences(TaskKind):
    """Batches of `episodes_per_step` label sequences of the model's classes, `instances`
    examples each (a sequence counts as an episode), every step's label as target."""

    name = "sequences"
    serving_inputs = SEQUENCE_INPUTS
    unit = "sequence"
    trained_units = "sequences"
    one_way_problem = "a sequence of one class teaches nothing (its label is always 0)"

    def training_stream(self, config, model, data, start=0):
        if data is None:
            self.refuse_dataset(config)
        if config.ways != model.classes:
            raise ValueError(f"This {config.model} model classifies {model.classes} classes, but "
                             f"ways={config.ways} asks for sequences of {config.ways} classes; "
                             "set ways to the model's classes")
        return sequence_dataset(data.images, data.labels, config.ways, config.instances,
                                groups=data.groups if config.within_alphabet else None,
                                seed=config.seed, start=start,
                                num_sequences=config.episodes - start,
                                batch_size=config.episodes_per_step, distort=config.distort)

    def step_input(self, config):
        return f"{config.episodes_per_step} sequences of {config.ways}x{config.instances}"

    def run_description(self, config):
        return f"sequences of {config.ways} classes x {config.instances} instances"

    def evaluate(self, model, data, name, protocol, spec, settings=None, episodes=1000,
                 queries=15, seed=0, within_group=False, episodes_per_batch=10, verbose=1):
        """`evaluate_sequences`' rows on sequences of the model's classes (`episodes` counts
        sequences); N-way K-shot settings are refused."""
        if settings:
            raise ValueError("N-way K-shot settings do not apply to a sequence model: it is "
                             f"measured on sequences of its {model.classes} classes")
        if data.drawers is not None:
            raise ValueError(f"{name}: one-shot runs by drawer do not apply to a sequence "
                             f"model: it is measured on sequences of its {model.classes} "
                             "classes")
        return evaluate_sequences(model, data, name, sequences=episodes, seed=seed,
                                  groups=data.groups if within_group else None,
                                  sequences_per_batch=episodes_per_batch, verbose=verbose)

    def test_inputs(self, model, config, data):
        """One sequence of the training shape: ways (the model's classes) x instances."""
        return [(f"{config.ways}x{config.instances}",
                 first_sequence(data, config.ways, config.instances))]

    def request_inputs(self, model, config, data):
        """One whole sequence, as `test_inputs`."""
        return self.test_inputs(model, config, data)

    def evaluation_figure(self, model, rows, label, data, name, queries=15, seed=0,
                          within_group=False):
        """Accuracy by instance, against the paper's."""
        return plots.accuracy_by_instance_figure({label: rows})


SEQUENCES = Sequences()
