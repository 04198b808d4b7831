"""What loading a training directory needs: its config, its final weights (else the newest
intact checkpoint's, or a chosen step's), and a check that the weights belong to the model
the config describes.

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


def checkpoint_of_step(model_dir, config: TrainConfig, step) -> pathlib.Path:
    """The checkpoint of optimizer step `step` of the run in `model_dir`, verified by its
    sha256: ValueError for a step outside the run's `config` or a damaged checkpoint,
    FileNotFoundError listing the steps there are (the newest three are kept)."""
    last = config.steps
    if not 0 < step <= last:
        raise ValueError(f"step {step} is outside the run in {model_dir}: its "
                         f"{config.episodes} episodes are steps 1 to {last}")
    checkpoints = checkpoints_of(model_dir)
    path = checkpoints.path(step)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint of step {step} in {checkpoints.directory} "
                                f"(checkpoints: {listed(checkpoints.steps())})")
    if not checkpoints.verify(path):  # DamagedCheckpointError (a ValueError) when damaged
        logger.warning("%s carries no sha256 (written before checkpoints had one): loaded "
                       "without an integrity check", path)
    return path


def listed(steps):
    """Checkpoint steps as a phrase for a message."""
    return ", ".join(map(str, steps)) or "none"


def model_from_dir(model_dir, step=None) -> keras.Model:
    """The model a training directory describes, with the weights of checkpoint `step`
    (verified) or, by default, its final (else newest intact checkpoint's) weights; logs which
    file they came from (a run still training moves on)."""
    model_dir = pathlib.Path(model_dir)
    config = read_config(model_dir)
    model = build_model(config.model, config.model_config)
    weights = model_dir / WEIGHTS_FILE
    if step is not None:
        weights = checkpoint_of_step(model_dir, config, step)
    elif not weights.is_file():
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
