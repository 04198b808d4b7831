"""Algorithms that wrap any built Keras model: MAML (second and first order), Meta-SGD, Reptile,
and the LSTM meta-learner (Ravi & Larochelle 2017).

The functional pieces (`MAML.initial_weights`, `forward`, `adapt`) are what other
weight-updating meta-learners reuse: MetaLSTM replaces only `adapt`.
"""

from keras_fewshot.meta.maml import (MAML, TASK_LOSSES, MetaSGD, MetaTrainStep, Reptile,
                                     task_loss)
from keras_fewshot.meta.metalstm import MetaLSTM

ALGORITHMS = {"maml": MAML, "metasgd": MetaSGD, "reptile": Reptile, "metalstm": MetaLSTM}
