"""What loading a training directory needs: its config, its final weights (else the newest
intact checkpoint's), and a check that the weights belong to the model the config describes.

A training directory holds config.json, checkpoints/, history.csv, logs/ and
model.weights.h5 (see `keras_fewshot.training`).
"""

import logging
import pathlib

import h5py
import keras

from keras_fewshot.models import build_model
from keras_fewshot.training.checkpoints import MODEL_CLASS_ATTR, Checkpoints
from keras_fewshot.training.config import TrainConfig, read_config

WEIGHTS_FILE = "model.weights.h5"
CHECKPOINTS_DIR = "checkpoints"

logger = logging.getLogger(__name__)


def checkpoints_of(model_dir) -> Checkpoints:
    """The checkpoints of the training directory `model_dir`."""
    return Checkpoints(pathlib.Path(model_dir) / CHECKPOINTS_DIR)


def model_from_dir(model_dir) -> keras.Model:
    """The model a training directory describes, with its final (else newest intact
    checkpoint's) weights; logs which file they came from (a run still training moves on)."""
    model_dir = pathlib.Path(model_dir)
    config = read_config(model_dir)
    model = build_model(config.model, config.model_config)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        weights = checkpoints_of(model_dir).restore_point()
        if weights is None:
            raise FileNotFoundError(f"{model_dir} has neither {WEIGHTS_FILE} nor a checkpoint")
    load_weights(model, weights, config)  # a checkpoint's optimizer state is not needed here
    logger.info("Weights of %s: %s", model_dir, weights)
    return model


def load_weights(model, path, config: TrainConfig):
    """model.load_weights(path), or ValueError naming the file and what is wrong with it: not
    a readable weights file (truncated, corrupted), or the weights of another model than
    `config` describes. Reads only; a partly loaded `model` is not to be used after an error.
    """
    try:
        with h5py.File(path, "r") as f:
            saved_class = f.attrs.get(MODEL_CLASS_ATTR)
    except OSError as error:
        raise ValueError(f"{path} is not a readable weights file (truncated or corrupted?): "
                         f"{error}") from error
    if saved_class is not None and saved_class != type(model).__name__:
        raise ValueError(f"{path} holds the weights of a {saved_class}, but the config "
                         f"describes a {type(model).__name__} ({config.model} "
                         f"{config.model_config}); was config.json copied from another run?")
    try:
        model.load_weights(path)
    except (ValueError, OSError, RuntimeError, KeyError) as error:
        raise ValueError(f"{path} does not load into the model the config describes "
                         f"({config.model} {config.model_config}); the file is corrupted or "
                         f"belongs to another model: {error}") from error
