"""Algorithms that wrap any built Keras model: MAML (second and first order), Meta-SGD, Reptile.

The functional pieces (`MAML.initial_weights`, `forward`, `adapt`) are what other
weight-updating meta-learners reuse.
"""

from keras_fewshot.meta.maml import (ALGORITHMS, MAML, TASK_LOSSES, MetaSGD, MetaTrainStep,
                                     Reptile, task_loss)
