"""Training with `model.fit` on episodes, pairs or label sequences (whichever the model's
`training_task` names): config next to the checkpoints, automatic resume.

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
"""

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import numbers
import os
import pathlib
import shutil
import tempfile

import h5py
import keras
import numpy as np
import tensorflow as tf

from keras_fewshot import plots
from keras_fewshot.data import (episode_dataset, load_dataset, pair_dataset, sequence_dataset,
                                sinusoid_tasks)
from keras_fewshot.data.datasets import OMNIGLOT, SINUSOID
from keras_fewshot.models import MODELS, build_model

STRATEGIES = ("default", "mirrored", "multi_worker")
CONFIG_FILE = "config.json"
DTYPE_POLICIES = ("float32", "mixed_bfloat16")
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
WEIGHTS_FILE = "model.weights.h5"
MODEL_CLASS_ATTR = "keras_fewshot_model_class"  # weights files this module writes carry it
HASH_SUFFIX = ".sha256"  # checkpoints/ckpt-<step>.weights.h5.sha256: the checkpoint's sha256
DAMAGED_PREFIX = "damaged-"  # a damaged checkpoint is moved aside under this prefix

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (not where the data lives)."""
    model: str = "protonet"
    model_config: dict = dataclasses.field(default_factory=dict)
    dataset: str = "omniglot"  # or "sinusoid": regression tasks (shots/queries = K/Q points),
    # "folder:PATH", "tfds:NAME" (your images; keras_fewshot.data.datasets)
    channels: int = 0  # your images: convert every one to 1 or 3 channels; 0: as in the files
    split: str = "vinyals"
    subset: str = "trainval"
    rotations: bool = False  # Lake split: rotated characters as extra training classes
    ways: int = 60  # sequence-trained models: classes per sequence
    shots: int = 5
    queries: int = 5
    within_alphabet: bool = False  # episodes' classes (pairs: negatives) from one alphabet
    episodes_per_step: int = 1
    pairs: int = 128  # pair-trained models: pairs per step (one "episode" = one batch)
    instances: int = 10  # sequence-trained models: examples of each class per sequence
    distort: bool = False  # random distortions: Koch et al.'s affine maps for pairs,
    #                        Santoro et al.'s rotations and translations for sequences
    episodes: int = 10000
    episodes_per_epoch: int = 500
    optimizer: str = "adam"  # "adam", or "sgd" (Reptile's outer update with lr epsilon)
    learning_rate: float = 1e-3
    lr_decay_every: int = 2000
    lr_decay_rate: float = 0.5
    seed: int = 0
    init_from: str = ""  # a training directory whose final weights start this run
    embedding_from: str = ""  # a training directory whose embedding weights start this run
    freeze_embedding: bool = False  # train every layer but the embedding (kept in inference mode)
    dtype_policy: str = "float32"  # "mixed_bfloat16": Keras mixed precision while training
    #                                (bf16 compute, float32 weights); evaluation and export
    #                                rebuild the model in float32

    def validate(self):
        """Raises ValueError when the settings cannot make a run that trains its budget, or
        make one no user wants (gradient ascent, 1-way episodes, a growing learning rate)."""
        _check_field_types(self)
        for name in ("ways", "shots", "queries", "instances", "episodes_per_step", "episodes",
                     "episodes_per_epoch", "lr_decay_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        task = getattr(MODELS.get(self.model), "training_task", None)
        if self.dataset != SINUSOID and self.ways < 2:  # regression tasks have no classes
            raise ValueError(f"ways must be at least 2, got {self.ways}: "
                             + ("a sequence of one class teaches nothing (its label is always 0)"
                                if task == "sequences" else
                                "a 1-way episode is solved by any model (every query is class "
                                "0), so it trains to a loss of 0 and learns nothing"))
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}"
                             + (" (a negative rate climbs the loss: gradient ascent)"
                                if self.learning_rate < 0 else ""))
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"lr_decay_rate must be in (0, 1], got {self.lr_decay_rate}: the "
                             "rate is multiplied by it every lr_decay_every episodes (1 keeps "
                             "it constant, more would grow it, 0 or less stop or flip it)")
        if task == "pairs" and (self.pairs < 2 or self.pairs % 2):
            raise ValueError(f"pairs must be an even number >= 2 (half same-class, half "
                             f"different-class pairs), got {self.pairs}")
        if self.channels not in (0, 1, 3):
            raise ValueError(f"channels must be 1 or 3 (0: as in the files), got {self.channels}")
        if not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.episodes_per_epoch % self.episodes_per_step:
            raise ValueError("episodes_per_epoch must be a multiple of episodes_per_step")
        if self.episodes % self.episodes_per_epoch:
            raise ValueError("episodes must be a multiple of episodes_per_epoch")
        if self.lr_decay_every % self.episodes_per_step:
            raise ValueError("lr_decay_every must be a multiple of episodes_per_step")
        if self.dtype_policy not in DTYPE_POLICIES:
            raise ValueError(f"dtype_policy must be one of {list(DTYPE_POLICIES)}, got "
                             f"{self.dtype_policy!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got "
                             f"{self.optimizer!r}")
        if self.dataset not in (OMNIGLOT, SINUSOID) and (self.within_alphabet
                                                            or self.rotations):
            raise ValueError("within_alphabet and rotations need Omniglot's alphabets; "
                             f"{self.dataset} has none")
        if self.init_from and self.embedding_from:
            raise ValueError("init_from and embedding_from are exclusive: init_from already "
                             "starts every weight, the embedding's included")

    @property
    def image_size(self):
        """The model's input resolution: model_config's image_size, else the model's default
        (28, or 20 for the sequence models), so the data is cached at what the model sees."""
        if "image_size" in self.model_config:
            return int(self.model_config["image_size"])
        if self.model in MODELS:
            default = inspect.signature(MODELS[self.model]).parameters.get("image_size")
            if default is not None:
                return int(default.default)
        return 28

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """The TrainConfig of config.json's values, or ValueError naming what is wrong: not an
        object, an unknown key, a value of the wrong type, an unknown model, a bad image_size."""
        if not isinstance(values, dict):
            raise ValueError("A training config is a JSON object of settings, got a "
                             f"{type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training config keys {unknown}; known: {sorted(known)}")
        config = cls(**values)
        _check_field_types(config)
        if config.model not in MODELS:
            raise ValueError(f"Unknown model {config.model!r}; available: {sorted(MODELS)}")
        size = config.model_config.get("image_size", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError("model_config's image_size must be a positive whole number of "
                             f"pixels, got {size!r}")
        return config


def _check_field_types(config):
    """ValueError naming the first field whose value is not of its annotated type (a whole
    number for int fields, any real number for float ones; bool only for bool fields)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.type is bool:
            ok = isinstance(value, (bool, np.bool_))
        elif field.type is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        elif field.type is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        else:
            ok = isinstance(value, field.type)
        if not ok:
            raise ValueError(f"{field.name} must be {_TYPE_NAMES.get(field.type, field.type)}, "
                             f"got {value!r} ({type(value).__name__})")


_TYPE_NAMES = {int: "a whole number", float: "a number", bool: "true or false",
               str: "a string", dict: "a dict of the model's constructor arguments"}


@contextlib.contextmanager
def _dtype_policy(name):
    """Layers built inside compute with Keras dtype policy `name`; the global one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def read_config(model_dir) -> TrainConfig:
    path = pathlib.Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a training directory")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    try:
        return TrainConfig.from_dict(values)
    except ValueError as error:
        raise ValueError(f"{path} is not a valid training config: {error}") from error


def model_from_dir(model_dir) -> keras.Model:
    """The model a training directory describes, with its final (else newest intact
    checkpoint's) weights."""
    model_dir = pathlib.Path(model_dir)
    config = read_config(model_dir)
    model = build_model(config.model, config.model_config)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        weights = Checkpoints(model_dir / "checkpoints").restore_point()
        if weights is None:
            raise FileNotFoundError(f"{model_dir} has neither {WEIGHTS_FILE} nor a checkpoint")
    load_weights(model, weights, config)  # a checkpoint's optimizer state is not needed here
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


def load_data(config: TrainConfig, subset: str, source=None):
    """`subset` of the run's dataset and split at the model's resolution; the rotation
    augmentation applies to the training subset only. None for generated tasks (sinusoid)."""
    if config.dataset == "sinusoid":
        return None
    return load_dataset(config.dataset, config.split, subset, source=source,
                        image_size=config.image_size, channels=config.channels or None,
                        rotations=config.rotations and subset == config.subset)


class DamagedCheckpointError(ValueError):
    """A checkpoint whose bytes do not match its recorded sha256, or that cannot be read."""


class Checkpoints:
    """checkpoints/ckpt-<step>.weights.h5: model and optimizer state, newest `keep` kept.

    Each file is written under a temporary name and renamed into place, so a run killed
    mid-save leaves the previous checkpoint as the latest complete one. Its sha256 goes to
    ckpt-<step>.weights.h5.sha256 (`sha256sum -c` format), renamed into place before the
    checkpoint itself: a checkpoint whose bytes no longer match is refused, and a resume
    takes the newest one that does (`restore_point`), saying which it skipped. Checkpoints
    written before the hashes (no .sha256 beside them) still resume, with a notice that
    their integrity cannot be checked.
    """

    def __init__(self, directory, keep=3):
        self.directory = pathlib.Path(directory)
        self.keep = keep

    def steps(self):
        found = []
        for path in self.directory.glob("ckpt-*.weights.h5"):
            number = path.name[len("ckpt-"):-len(".weights.h5")]
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def path(self, step):
        return self.directory / f"ckpt-{step}.weights.h5"

    def latest(self):
        """The newest checkpoint file, not verified (see `restore_point`)."""
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    @staticmethod
    def verify(path):
        """True when `path` matches the sha256 recorded beside it, False when it has no
        recorded hash (written before checkpoints had one) but is a readable HDF5 file;
        DamagedCheckpointError naming the file and the problem otherwise."""
        path = pathlib.Path(path)
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as error:  # truncated, not HDF5, or moved aside meanwhile
            raise DamagedCheckpointError(f"{path} is not a readable weights file (truncated "
                                         f"or corrupted?): {error}") from error
        recorded = _recorded_sha256(path)
        if recorded is None:
            return False
        actual = _sha256(path)
        if actual != recorded:
            raise DamagedCheckpointError(f"{path} is damaged: its sha256 is {actual}, but "
                                         f"{_hash_path(path).name} records {recorded}")
        return True

    def restore_point(self, quarantine=False):
        """The newest checkpoint that passes `verify`, or None when there is no checkpoint.

        Each newer damaged one is named in a logged warning and, with `quarantine` (the
        process that writes the directory), moved aside to damaged-ckpt-<step>.weights.h5 so
        the run's next checkpoints replace it; a checkpoint without a recorded hash is taken
        with a notice. When every checkpoint is damaged, raises DamagedCheckpointError
        naming each and what is wrong with it, and moves nothing."""
        damaged = []
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                hashed = self.verify(path)
            except DamagedCheckpointError as error:
                damaged.append((path, error))
                continue
            for bad, error in damaged:
                moved = f"; moved to {self._quarantine(bad).name}" if quarantine else ""
                logger.warning("Skipping a damaged checkpoint: %s%s", error, moved)
            if damaged:
                logger.warning("Resuming from %s, the newest intact checkpoint, instead of the "
                               "damaged %s", path, ", ".join(p.name for p, _ in damaged))
            if not hashed:
                logger.warning("%s carries no sha256 (written before checkpoints had one): "
                               "resuming from it without an integrity check", path)
            return path
        if damaged:
            raise DamagedCheckpointError(
                f"Every checkpoint in {self.directory} is damaged "
                f"({', '.join(p.name for p, _ in damaged)}); nothing to resume from: "
                + "; ".join(str(error) for _, error in damaged)
                + ". Move the directory aside to train from the start.")
        return None

    def _quarantine(self, path):
        target = path.with_name(DAMAGED_PREFIX + path.name)
        path.replace(target)
        if _hash_path(path).exists():
            _hash_path(path).replace(_hash_path(target))
        return target

    def save(self, model, step):
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("tmp.*"):  # left by a run killed mid-save
            stale.unlink(missing_ok=True)
        _atomic_save_weights(model, self.path(step), record_hash=True)
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
            _hash_path(self.path(old)).unlink(missing_ok=True)
        for orphan in self.directory.glob("ckpt-*.weights.h5" + HASH_SUFFIX):
            if not orphan.with_suffix("").exists():  # a kill between the hash and its file
                orphan.unlink(missing_ok=True)


def _hash_path(path):
    return path.with_name(path.name + HASH_SUFFIX)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_sha256(path):
    """The hex sha256 recorded beside `path`, None when there is no record; a record that
    is not a sha256 makes the checkpoint damaged."""
    record = _hash_path(path)
    try:
        text = record.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    fields = text.split()
    if (len(fields) != 2 or fields[1] != path.name or len(fields[0]) != 64
            or any(c not in "0123456789abcdef" for c in fields[0])):
        raise DamagedCheckpointError(f"{record} is not a sha256 record of {path.name} "
                                     f"(expected '<64 hex digits>  {path.name}')")
    return fields[0]


class _CheckpointEachEpoch(keras.callbacks.Callback):
    def __init__(self, checkpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(self.model, int(self.model.optimizer.iterations.numpy()))


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises FloatingPointError naming the step once the loss is nan or inf, before the
    epoch's checkpoint could save the broken weights."""

    def __init__(self, checkpoints, episodes_per_step):
        super().__init__()
        self.checkpoints = checkpoints
        self.episodes_per_step = episodes_per_step

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))  # the epoch's running mean so far
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        latest = self.checkpoints.latest()
        kept = (f"the last good checkpoint {latest} is kept" if latest else
                "no checkpoint was written before it")
        raise FloatingPointError(
            f"The training loss became {loss} at step {step} (episodes "
            f"{(step - 1) * self.episodes_per_step + 1}-{step * self.episodes_per_step}); "
            f"training stopped and {kept}. Lower the learning rate or fix the model, then "
            "train again (a re-run with the same flags resumes from that checkpoint).")


def _replace_durably(tmp, path):
    """Renames the complete file `tmp` to `path`, flushed to disk before and after."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _atomic_save_weights(model, path, record_hash=False):
    """Writes `path` complete or not at all; with `record_hash`, its sha256 (of the bytes
    on disk) first to `path`.sha256, so a checkpoint in place always has its record."""
    tmp = path.with_name("tmp." + path.name)
    model.save_weights(tmp)
    with h5py.File(tmp, "a") as f:  # lets load_weights tell a config of another model
        f.attrs[MODEL_CLASS_ATTR] = type(model).__name__
    if record_hash:
        record = _hash_path(tmp)
        record.write_text(f"{_sha256(tmp)}  {path.name}\n", encoding="ascii")
        _replace_durably(record, _hash_path(path))
    _replace_durably(tmp, path)


def _copy_embedding(source, target, where):
    """Copies source.embedding's weights into target.embedding (same filters and blocks)."""
    shapes = [tuple(w.shape) for w in source.embedding.weights]
    wanted = [tuple(w.shape) for w in target.embedding.weights]
    if shapes != wanted:
        raise ValueError(f"The embedding in {where} does not fit this model's: weight shapes "
                         f"{shapes} vs {wanted}")
    target.embedding.set_weights(source.embedding.get_weights())


def _check_resumable(model_dir: pathlib.Path, config: TrainConfig):
    """A directory may be resumed with the same config; only the episode budget may grow."""
    if (model_dir / CONFIG_FILE).is_file():
        existing = read_config(model_dir)
        if dataclasses.replace(existing, episodes=config.episodes) != config:
            raise ValueError(f"{model_dir} holds a run with a different config; use a new "
                             f"model_dir or the same flags.\nthere: {existing}\nnow:   {config}")


def _write_config(model_dir: pathlib.Path, config: TrainConfig):
    path = model_dir / CONFIG_FILE
    tmp = path.with_name("tmp." + CONFIG_FILE)
    tmp.write_text(config.to_json() + "\n")
    _replace_durably(tmp, path)


def training_dataset(config: TrainConfig, model, data, start=0):
    """The stream `model` trains on from element `start`: episodes, same/different pairs,
    or batches of `episodes_per_step` label sequences (one sequence counts as an episode)."""
    remaining = config.episodes - start
    if (config.dataset == "sinusoid") != (model.training_task == "regression_tasks"):
        raise ValueError(f"{config.model} trains on {model.training_task}; dataset "
                         f"{config.dataset!r} does not provide them")
    if config.dataset == "sinusoid":
        return sinusoid_tasks(config.shots, config.queries, seed=config.seed, start=start,
                              num_tasks=remaining, batch_size=config.episodes_per_step)
    groups = data.groups if config.within_alphabet else None
    if model.training_task == "sequences":
        if config.ways != model.classes:
            raise ValueError(f"This {config.model} model classifies {model.classes} classes, but "
                             f"ways={config.ways} asks for sequences of {config.ways} classes; "
                             "set ways to the model's classes")
        return sequence_dataset(data.images, data.labels, config.ways, config.instances,
                                groups=groups, seed=config.seed, start=start,
                                num_sequences=remaining, batch_size=config.episodes_per_step,
                                distort=config.distort)
    if model.training_task == "pairs":
        if config.episodes_per_step != 1:
            raise ValueError("pair-trained models take one batch of pairs per step: set "
                             "episodes_per_step=1 and the batch size with pairs")
        return pair_dataset(data.images, data.labels, config.pairs, groups=groups,
                            seed=config.seed,
                            start=start, num_batches=remaining, distort=config.distort)
    return episode_dataset(data.images, data.labels, config.ways, config.shots,
                           config.queries, groups=groups, seed=config.seed, start=start,
                           num_episodes=remaining, batch_size=config.episodes_per_step)


def _episode_pictures(config: TrainConfig, model, data, log_dir):
    """A TensorBoard callback picturing one small episode of the training classes with the
    model's predictions after each epoch (none for models that do not classify episodes, or
    when the data cannot fill that episode)."""
    if data is None or model.training_task not in ("episodes", "pairs"):
        return []
    ways = config.ways if getattr(model, "fixed_ways", None) else min(config.ways, 10)
    queries = min(config.queries, 3)
    try:
        data.check_episodes(ways, config.shots, queries)
    except ValueError:
        return []
    (episode, labels), = episode_dataset(data.images, data.labels, ways, config.shots, queries,
                                         seed=config.seed, num_episodes=1).as_numpy_iterator()
    return [plots.EpisodeImages(log_dir, episode, labels)]


def make_strategy(name):
    """The tf.distribute strategy `name` in STRATEGIES: "default" (one device), "mirrored"
    (every local GPU, else the CPU) or "multi_worker" (every worker of $TF_CONFIG; create it
    at program start, before any other TensorFlow op)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}")


def _is_chief(strategy):
    """Whether this process writes the training directory: every process but the non-chief
    workers of a multi-worker cluster (the chief, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def _check_divisible(config: TrainConfig, model, replicas):
    """Each replica takes an equal share of the step's episodes (or pairs)."""
    name, per_step = (("pairs", config.pairs) if model.training_task == "pairs"
                      else ("episodes_per_step", config.episodes_per_step))
    if per_step % replicas:
        raise ValueError(f"{name}={per_step} does not split evenly over {replicas} replicas: "
                         f"use a multiple of {replicas} (it is the global batch, kept as is)")


def train(config: TrainConfig, model_dir, data_source=None, verbose=1,
          strategy=None) -> keras.Model:
    """Trains (or resumes) the run `config` in `model_dir`; returns the trained model.

    Under a tf.distribute `strategy`, each step's `episodes_per_step` episodes (sequences,
    tasks; pairs for a pair-trained model) are split over the replicas and batch norm takes
    its statistics over all of them (the MAML family's over each task's own set, as on one
    device), so the run follows the one-device run. In a multi-worker cluster every
    worker resumes from `model_dir` (a shared file system) and only the chief writes it.
    """
    config.validate()
    model_dir = pathlib.Path(model_dir)
    strategy = strategy or tf.distribute.get_strategy()
    _check_resumable(model_dir, config)
    data = load_data(config, config.subset, data_source)
    checkpoints = Checkpoints(model_dir / "checkpoints")
    # The newest intact checkpoint; damaged newer ones are named (and moved aside by the
    # process that writes the directory), never resumed from.
    restore = checkpoints.restore_point(quarantine=_is_chief(strategy))
    with strategy.scope():
        keras.utils.set_random_seed(config.seed)  # initial weights
        with _dtype_policy(config.dtype_policy):
            model = build_model(config.model, config.model_config)
        if getattr(model, "fixed_ways", None) not in (None, config.ways):
            raise ValueError(f"{config.model} classifies exactly {model.fixed_ways} classes "
                             f"but the episodes are {config.ways}-way: set ways in "
                             "--model_config too")
        if config.ways > (getattr(model, "max_ways", None) or config.ways):
            raise ValueError(f"{config.model} classifies at most {model.max_ways} classes but "
                             f"the episodes are {config.ways}-way: raise max_ways in "
                             "--model_config")
        _check_divisible(config, model, strategy.num_replicas_in_sync)
        if restore is None:  # a fresh run's start weights, checked before any file
            if config.init_from:  # fine-tuning: weights only, a fresh optimizer and schedule
                model.set_weights(model_from_dir(config.init_from).get_weights())
            elif config.embedding_from:  # transfer: the embedding only, other layers fresh
                _copy_embedding(model_from_dir(config.embedding_from), model,
                                config.embedding_from)
        if config.freeze_embedding:
            if not hasattr(model, "embedding"):
                raise ValueError(f"freeze_embedding: {config.model} has no embedding layer")
            model.embedding.trainable = False
        schedule = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=config.lr_decay_every // config.episodes_per_step,
            decay_rate=config.lr_decay_rate, staircase=True)
        optimizer = OPTIMIZERS[config.optimizer](schedule)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer,
                      loss=model.training_loss(), metrics=model.training_metrics())
        if restore is not None:
            load_weights(model, restore, config)
    if model.training_task == "episodes" and data is not None:  # refused before any file
        data.check_episodes(config.ways, config.shots, config.queries,
                            what=f"{config.dataset} {config.split}/{config.subset}")
    if _is_chief(strategy):
        model_dir.mkdir(parents=True, exist_ok=True)
        _write_config(model_dir, config)  # only once the model, data and start weights work
        return _fit(config, model, data, checkpoints, model_dir, verbose)
    # A non-chief worker saves as the chief does (saving may read replicated variables
    # collectively) into a scratch directory that is then thrown away.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="keras_fewshot_worker_"))
    try:
        return _fit(config, model, data, Checkpoints(scratch / "checkpoints"), scratch, 0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _prepare_replicated_fit(model, dataset):
    """Readies `model` (built under a multi-replica strategy) for `fit` in that strategy's
    scope, around two Keras 3 shortcomings (keras-team/keras#20585, #20329): its first fit
    averages one distributed batch to build the model (uint8 pixels become floats; dict
    inputs fail under MultiWorkerMirroredStrategy), and its step averages scalar logs along
    an axis they lack under MultiWorkerMirroredStrategy. Builds the compiled loss and metrics
    on one real element instead, and sets a train function that runs `train_step` on every
    replica and averages the logs over replicas."""
    strategy = model.distribute_strategy
    with strategy.scope():
        inputs, labels = next(iter(dataset))
        logits = model(inputs)
        model.compute_loss(x=inputs, y=labels, y_pred=logits)
        model.compute_metrics(inputs, labels, logits, sample_weight=None)

    @tf.function
    def train_function(iterator):
        logs = strategy.run(model.train_step, args=(iterator.get_next(),))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    model.train_function = train_function
    model._distribute_strategy = None  # fit then takes the strategy from the scope
    return strategy


def _fit(config: TrainConfig, model, data, checkpoints, model_dir, verbose):
    """Fits `model` (compiled, restored) over the rest of the run, writing into model_dir."""
    optimizer = model.optimizer
    step = int(optimizer.iterations.numpy())
    done = step * config.episodes_per_step
    steps_per_epoch = config.episodes_per_epoch // config.episodes_per_step
    epochs = config.episodes // config.episodes_per_epoch
    if done < config.episodes:
        if verbose:
            print(f"Training {config.model} in {model_dir}: episode {done} of "
                  f"{config.episodes}" + (" (resumed)" if done else ""))
        dataset = training_dataset(config, model, data, start=done)
        options = tf.data.Options()  # replicas share each step's batch (no files to shard)
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        strategy = model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            _prepare_replicated_fit(model, dataset)
        with strategy.scope():
            model.fit(dataset.with_options(options), epochs=epochs, shuffle=False,
                      initial_epoch=done // config.episodes_per_epoch,
                      steps_per_epoch=steps_per_epoch, verbose=verbose,
                      callbacks=[_StopOnNonFiniteLoss(checkpoints, config.episodes_per_step),
                                 _CheckpointEachEpoch(checkpoints),
                                 keras.callbacks.CSVLogger(str(model_dir / "history.csv"),
                                                           append=True),
                                 keras.callbacks.TensorBoard(str(model_dir / "logs")),
                                 *_episode_pictures(config, model, data,
                                                    model_dir / "logs" / "episodes")])
    # The released weights carry no optimizer state: copy into an uncompiled twin.
    release = build_model(config.model, config.model_config)
    release.set_weights(model.get_weights())
    _atomic_save_weights(release, model_dir / WEIGHTS_FILE)
    return model
