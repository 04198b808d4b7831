"""Training with `model.fit` on episodes, pairs, label sequences or regression tasks
(the stream of the model's `task_kind`): config next to the checkpoints, automatic resume.

A training directory holds:
  config.json          the TrainConfig: `evaluate` and `export` rebuild the exact model from it
  checkpoints/         model + optimizer state every `episodes_per_epoch` episodes
                       (ckpt-<step>.weights.h5, the newest three, each with its sha256 in
                       ckpt-<step>.weights.h5.sha256: a damaged one is never resumed from)
  history.csv, logs/   per-epoch metrics; TensorBoard scalars (loss, accuracy, learning
                       rate) and, in logs/episodes, a picture of one episode each epoch
  model.weights.h5     the final weights
Re-running with the same directory resumes from the last checkpoint, and the episode stream
continues where it stopped (episode i depends only on (seed, i)): a run killed at any moment
loses at most the unfinished epoch. Every file is written under a temporary name, flushed and
renamed into place. A nan or inf loss stops training with FloatingPointError naming the step,
before the broken weights reach a checkpoint.

The modules, along the seams of that job:
  config        TrainConfig (the one definition the train command's flags come from), its
                validation, config.json, the optimizers and dtype policies
  files         durable writes (renamed into place, flushed) and file sha256s
  checkpoints   checkpoints/ with their sha256 records; atomic weights files
  run_dir       what loading needs: model_from_dir, load_weights
  data          load_data, and the training stream (the model's task kind's)
  distribution  tf.distribute strategies, the chief, replicated fit
  callbacks     checkpoint each epoch, stop on a non-finite loss
  history       history.csv and config.json as learning-curve data: read_history
  command       the `tools/train.py` command line that trains a TrainConfig
  loop          train: build or resume, then fit (imported only when `train` is used, so
                loading a model never imports the fit loop)
"""

from keras_fewshot.training.checkpoints import Checkpoints, DamagedCheckpointError
from keras_fewshot.training.config import (CONFIG_FILE, DTYPE_POLICIES, OPTIMIZERS, TrainConfig,
                                           read_config, using_dtype_policy, write_config)
from keras_fewshot.training.data import load_data, training_dataset
from keras_fewshot.training.distribution import STRATEGIES, make_strategy
from keras_fewshot.training.history import read_history
from keras_fewshot.training.run_dir import WEIGHTS_FILE, load_weights, model_from_dir

__all__ = ["CONFIG_FILE", "Checkpoints", "DTYPE_POLICIES", "DamagedCheckpointError",
           "OPTIMIZERS", "STRATEGIES", "TrainConfig", "WEIGHTS_FILE", "load_data",
           "load_weights", "make_strategy", "model_from_dir", "read_config", "read_history",
           "train", "training_dataset", "using_dtype_policy", "write_config"]


def __getattr__(name):
    """`train` from the fit loop, imported on first use."""
    if name == "train":
        from keras_fewshot.training.loop import train
        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
