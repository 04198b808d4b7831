"""What every task kind's evaluation reports: hits of the highest score, and means with 95%
confidence intervals."""

import math

import numpy as np
import tensorflow as tf


def mean_and_ci95(values):
    """Mean and half-width of the normal-approximation 95% confidence interval."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


def hits(logits, labels):
    """bool: where the highest-scoring class is the label."""
    return tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
