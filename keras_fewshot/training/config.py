"""The training config: the one definition of a run's settings, the tools' flags included.

`TrainConfig`'s fields carry their help text (and, where a flag offers a fixed set, the
choices) in their metadata; `keras_fewshot.cli.train` makes its flags from them. config.json
is the TrainConfig as JSON: `read_config` / `write_config`.
"""

import contextlib
import dataclasses
import inspect
import json
import math
import numbers
import pathlib

import keras
import numpy as np

from keras_fewshot.data.datasets import GENERATED, OMNIGLOT
from keras_fewshot.models import MODELS
from keras_fewshot.tasks import EPISODES
from keras_fewshot.training.files import write_text_durably

CONFIG_FILE = "config.json"
DTYPE_POLICIES = ("float32", "mixed_bfloat16")
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
LR_SCHEDULES = ("step", "linear")


def setting(default=dataclasses.MISSING, *, help, choices=None, flag_default=dataclasses.MISSING,
            default_factory=dataclasses.MISSING):
    """A TrainConfig field with its `help` text and, for its flag, `choices` (an enum) and a
    `flag_default` when the flag's unset value differs from the field's default (None: decided
    from other flags)."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if flag_default is not dataclasses.MISSING:
        metadata["flag_default"] = flag_default
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (not where the data lives)."""
    model: str = setting("protonet", help="Model name (keras_fewshot.models.MODELS).")
    model_config: dict = setting(default_factory=dict,
                                 help="JSON constructor arguments of the model.")
    dataset: str = setting(
        "omniglot", help="'omniglot', 'folder:PATH' (one sub-folder per class), "
        "'tfds:NAME[@SPLIT]', a natural-image benchmark 'mini_imagenet:DIR', 'cifar_fs:DIR', "
        "'fc100:DIR', 'cub:DIR' (keras_fewshot.data.datasets), or 'sinusoid' (regression "
        "tasks: --shots/--queries are K/Q points per task).")
    channels: int = setting(
        0, choices=("1", "3"), flag_default=None,
        help="Convert images of a folder or TFDS dataset to 1 or 3 channels (default, 0 in "
        "config.json: as in the files, which must agree).")
    split: str = setting(
        "vinyals", flag_default=None,
        help="Class split: vinyals or lake (Omniglot; default vinyals); all, "
        "random:train=0.8,test=0.2[,seed=N] or lists:DIR (other data; default all).")
    subset: str = setting(
        "trainval", flag_default=None,
        help="Training subset of the split: train/val/trainval (vinyals; default trainval), "
        "background (lake); train (default) or another subset of yours.")
    rotations: bool = setting(False, help="Lake split: add each training character rotated by "
                              "90/180/270 degrees as new classes.")
    ways: int = setting(60, help="Classes per training episode (N); sequence models: classes "
                        "per sequence (their model_config's classes).")
    shots: int = setting(5, help="Support examples per class (K).")
    queries: int = setting(5, help="Query examples per class (Q).")
    within_alphabet: bool = setting(
        False, help="Draw each training episode's classes (pair-trained: each negative pair) "
        "from a single alphabet (as Lake's test episodes).")
    episodes_per_step: int = setting(
        1, help="Episodes (or sequences) per optimizer step (batched).")
    pairs: int = setting(128, help="Pair-trained models (siamese): pairs per step; each step "
                         "counts as one episode.")
    instances: int = setting(10, help="Sequence models (mann, sequence_lstm): examples of each "
                             "class per sequence.")
    distort: bool = setting(
        False, help="Random distortions of the training images: pairs and episodes (each "
        "support and query image) get Koch et al.'s affine maps, sequences Santoro et al.'s "
        "rotations and translations.")
    episodes: int = setting(10000, help="Total training episodes.")
    episodes_per_epoch: int = setting(500, help="Episodes between checkpoints and log lines.")
    optimizer: str = setting("adam", choices=sorted(OPTIMIZERS),
                             help="Outer optimizer (sgd with learning rate epsilon is Reptile's "
                             "update).")
    learning_rate: float = setting(1e-3, help="Initial learning rate.")
    lr_decay_every: int = setting(2000, help="Multiply the learning rate by --lr_decay_rate "
                                  "every this many episodes.")
    lr_decay_rate: float = setting(0.5, help="Learning-rate decay factor.")
    lr_schedule: str = setting(
        "step", choices=LR_SCHEDULES,
        help="step: the rate is multiplied by --lr_decay_rate every --lr_decay_every episodes; "
        "linear: it falls in a straight line from --learning_rate to 0 at the last step (Reptile's "
        "annealed outer step size, Nichol et al. 2018, sec. 6).")
    seed: int = setting(0, help="Episode stream seed.")
    init_from: str = setting("", help="A training directory whose final weights initialise "
                             "this run (fine-tuning); the optimizer starts fresh.")
    embedding_from: str = setting("", help="A training directory (or zoo/<name>) whose "
                                  "embedding weights start this run; other layers fresh.")
    freeze_embedding: bool = setting(
        False, help="Train every layer but the embedding (kept in inference mode), e.g. a head "
        "on --embedding_from's features.")
    dtype_policy: str = setting(
        "float32", choices=DTYPE_POLICIES,
        help="Compute precision while training: mixed_bfloat16 is Keras mixed precision (bf16 "
        "compute, float32 weights; evaluation and export rebuild the model in float32).")

    def validate(self):
        """Raises ValueError when the settings cannot make a run that trains its budget, or
        make one no user wants (gradient ascent, 1-way episodes, a growing learning rate)."""
        _check_field_types(self)
        for name in ("ways", "shots", "queries", "instances", "episodes_per_step", "episodes",
                     "episodes_per_epoch", "lr_decay_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        kind = getattr(MODELS.get(self.model), "task_kind", EPISODES)
        if self.dataset not in GENERATED and self.ways < 2:  # regression tasks have no classes
            raise ValueError(f"ways must be at least 2, got {self.ways}: {kind.one_way_problem}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}"
                             + (" (a negative rate climbs the loss: gradient ascent)"
                                if self.learning_rate < 0 else ""))
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"lr_decay_rate must be in (0, 1], got {self.lr_decay_rate}: the "
                             "rate is multiplied by it every lr_decay_every episodes (1 keeps "
                             "it constant, more would grow it, 0 or less stop or flip it)")
        kind.check_config(self)
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
        for field in dataclasses.fields(self):  # the enums: optimizer, schedule, precision
            choices, value = field.metadata.get("choices"), getattr(self, field.name)
            if isinstance(value, str) and choices and value not in choices:
                raise ValueError(f"{field.name} must be one of {list(choices)}, got {value!r}")
        if self.dataset not in (OMNIGLOT, *GENERATED) and (self.within_alphabet
                                                              or self.rotations):
            raise ValueError("within_alphabet and rotations need Omniglot's alphabets; "
                             f"{self.dataset} has none")
        if self.init_from and self.embedding_from:
            raise ValueError("init_from and embedding_from are exclusive: init_from already "
                             "starts every weight, the embedding's included")

    @property
    def steps(self):
        """The optimizer steps of the whole run: episodes / episodes_per_step."""
        return self.episodes // self.episodes_per_step

    @property
    def image_size(self):
        """The model's input resolution: model_config's image_size, else the model's default
        (28, or 20 for the sequence models), so the data is cached at what the model sees."""
        if "image_size" in self.model_config:
            return int(self.model_config["image_size"])
        return int(model_default(self.model, "image_size") or 28)

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


def model_default(model: str, argument: str):
    """The default of the constructor argument `argument` of the model named `model`, or
    None when there is no such model, argument or default."""
    parameter = (inspect.signature(MODELS[model]).parameters.get(argument)
                 if model in MODELS else None)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


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
def using_dtype_policy(name):
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


def write_config(model_dir, config: TrainConfig):
    """model_dir/config.json, written durably (complete or not at all)."""
    write_text_durably(pathlib.Path(model_dir) / CONFIG_FILE, config.to_json() + "\n")


def check_resumable(model_dir, config: TrainConfig):
    """A directory may be resumed with the same config; only the episode budget may grow."""
    model_dir = pathlib.Path(model_dir)
    if (model_dir / CONFIG_FILE).is_file():
        existing = read_config(model_dir)
        if dataclasses.replace(existing, episodes=config.episodes) != config:
            raise ValueError(f"{model_dir} holds a run with a different config; use a new "
                             f"model_dir or the same flags.\nthere: {existing}\nnow:   {config}")
