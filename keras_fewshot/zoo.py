"""The zoo: trained models as data, one folder per model, verified whole before use.

A zoo entry is a folder `<zoo>/<name>/` (the folder's name is the model's name) holding

    config.json        the TrainConfig that builds the model (keras_fewshot.training)
    model.weights.h5   its weights
    metadata.json      what the entry is, and the sha256 of the two files above:

    {
      "metadata_version": 1,
      "description": "One line: method, backbone, data, settings it serves.",
      "protocol": "vinyals",          # how it is measured: keras_fewshot.evaluation.PROTOCOLS
      "sha256": {"config.json": "<64 hex>", "model.weights.h5": "<64 hex>"},
      "train_commands": ["python tools/train.py ...", ...],  # run in order; the last
                                                             # one's flags give config.json
      "paper": {"reference": "...", "results": {"5-way 1-shot": 98.8, ...}}   # optional
    }

In the repository `zoo/<name>/` also holds the model card (README.md), its pictures,
history.csv and eval_*.json; only the three files above are installed with the package
(setup.py ships them as `keras_fewshot/zoo_data/<name>/`).

Where the zoo is: $KERAS_FEWSHOT_ZOO_DIR when set (a folder of entries: a mirror, an
air-gapped copy, your own models), else the copy installed with the package, else the
checkout's `zoo/` (a clone, or `pip install -e .`). Nothing is fetched: no network.

`load(name)` hashes config.json and model.weights.h5 and refuses either (ValueError naming
the file) when its sha256 differs from metadata.json's, before building anything: the
weights and the config that builds them are one release. `load(directory)` loads a folder
of your own (config.json + model.weights.h5, e.g. a training directory), verified the same
way when it holds a metadata.json.

Releasing a model, or re-releasing one (e.g. new maml_omniglot weights), is writing data:
`keras-fewshot release --model_dir=<run> [--step=N] --output=zoo/<name>` (keras_fewshot.release)
writes the three files (and history.csv) from a training run or one of its checkpoints; then
re-make the card's numbers with `evaluate_command` and update the card. tests/test_zoo.py
checks every entry's hashes, and that the last training command's flags give exactly its
config.json.
A new entry is a new folder with the same three files: no code changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping

from keras_fewshot import training
from keras_fewshot.evaluation import PROTOCOLS
from keras_fewshot.models import MODELS, build_model
from keras_fewshot.training import CONFIG_FILE, WEIGHTS_FILE, model_from_dir, read_config

ZOO_DIR_ENV = "KERAS_FEWSHOT_ZOO_DIR"
METADATA_FILE = "metadata.json"
METADATA_VERSION = 1
VERIFIED_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # what an entry's "sha256" covers
PACKAGED_ZOO = pathlib.Path(__file__).resolve().parent / "zoo_data"  # in a wheel's install
CHECKOUT_ZOO = pathlib.Path(__file__).resolve().parent.parent / "zoo"  # clone, pip -e


def zoo_dir() -> pathlib.Path:
    """$KERAS_FEWSHOT_ZOO_DIR, else the zoo installed with the package, else the checkout's."""
    if os.environ.get(ZOO_DIR_ENV):
        return pathlib.Path(os.environ[ZOO_DIR_ENV])
    return PACKAGED_ZOO if PACKAGED_ZOO.is_dir() else CHECKOUT_ZOO


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One zoo folder's metadata.json, and where the folder is."""
    name: str
    directory: pathlib.Path
    description: str
    protocol: str
    hashes: Mapping  # {file name: sha256}, for each of VERIFIED_FILES
    train_commands: tuple
    paper: Mapping | None = None

    @property
    def sha256(self) -> str:
        """The weights' sha256."""
        return self.hashes[WEIGHTS_FILE]

    @property
    def train_command(self) -> str:
        """The training commands as one shell line."""
        return " && ".join(self.train_commands)

    @property
    def evaluate_command(self) -> str:
        """Re-makes the card's table (1000 episodes, or sinusoid tasks, per setting of the
        entry's protocol); a protocol of generated tasks (sinusoid), which reads no data,
        also re-draws the card's plot."""
        data = ("--data_dir=../shared/data/omniglot" if "split" in PROTOCOLS[self.protocol]
                else "--plot=zoo/{}/adaptation.png".format(self.name))
        return (f"python tools/evaluate.py --model={self.name} {data} "
                f"--protocol={self.protocol} --episodes=1000 "
                f"--output_json=zoo/{self.name}/eval_{self.protocol}.json")

    @property
    def config_path(self) -> pathlib.Path:
        return self.directory / CONFIG_FILE

    @property
    def weights_path(self) -> pathlib.Path:
        return self.directory / WEIGHTS_FILE

    @property
    def card_path(self) -> pathlib.Path:
        return self.directory / "README.md"  # in the repository only


def _is_sha256(value) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


def read_entry(directory) -> ZooEntry:
    """The ZooEntry of a folder holding a metadata.json, or ValueError naming the file and
    what is wrong with it (checks the metadata only; `verify` checks the files)."""
    directory = pathlib.Path(directory)
    path = directory / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a zoo entry")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    problems = []
    if meta.get("metadata_version") != METADATA_VERSION:
        problems.append(f"metadata_version must be {METADATA_VERSION}, got "
                        f"{meta.get('metadata_version')!r}")
    if not isinstance(meta.get("description"), str) or not meta["description"]:
        problems.append("description must be a non-empty string")
    if meta.get("protocol") not in PROTOCOLS:
        problems.append(f"protocol must be one of {sorted(PROTOCOLS)}, got "
                        f"{meta.get('protocol')!r}")
    hashes = meta.get("sha256")
    if (not isinstance(hashes, dict) or sorted(hashes) != sorted(VERIFIED_FILES)
            or not all(_is_sha256(v) for v in hashes.values())):
        problems.append(f"sha256 must map each of {list(VERIFIED_FILES)} to its lowercase hex "
                        f"sha256, got {hashes!r}")
    commands = meta.get("train_commands")
    if (not isinstance(commands, list) or not commands
            or not all(isinstance(c, str) and c for c in commands)):
        problems.append("train_commands must be a non-empty list of command lines")
    if not isinstance(meta.get("paper", {}), dict):
        problems.append("paper, when given, must be an object")
    unknown = sorted(set(meta) - {"metadata_version", "description", "protocol", "sha256",
                                  "train_commands", "paper"})
    if unknown:
        problems.append(f"unknown keys {unknown}")
    if problems:
        raise ValueError(f"{path} is not a valid zoo entry: {'; '.join(problems)}")
    return ZooEntry(name=directory.name, directory=directory, description=meta["description"],
                    protocol=meta["protocol"], hashes=dict(hashes),
                    train_commands=tuple(commands), paper=meta.get("paper"))


def _entry_dirs() -> dict:
    """{name: folder} of every entry (a folder with a metadata.json) in the zoo."""
    root = zoo_dir()
    if not root.is_dir():
        where = f"${ZOO_DIR_ENV}={root}" if os.environ.get(ZOO_DIR_ENV) else str(root)
        raise FileNotFoundError(f"The zoo folder {where} does not exist")
    return {d.name: d for d in sorted(root.iterdir())
            if not d.name.startswith(".") and (d / METADATA_FILE).is_file()}


def registry() -> dict:
    """{name: ZooEntry} of every entry, read now from the zoo folder's metadata files."""
    return {name: read_entry(folder) for name, folder in _entry_dirs().items()}


class _Registry(Mapping):
    """`REGISTRY`: a read-only view of `registry()`, re-read on each use."""

    def __getitem__(self, name):
        if name not in self:
            raise KeyError(name)
        return get_entry(name)

    def __iter__(self):
        return iter(_entry_dirs())

    def __len__(self):
        return len(_entry_dirs())

    def __contains__(self, name):
        return isinstance(name, str) and name in _entry_dirs()


REGISTRY = _Registry()


def list_models() -> dict:
    """{name: one-line description} of every zoo model."""
    return {name: entry.description for name, entry in registry().items()}


def get_entry(name) -> ZooEntry:
    """The zoo entry `name`, or ValueError listing the available ones."""
    folders = _entry_dirs()
    if not isinstance(name, str) or name not in folders:
        raise ValueError(f"Unknown zoo model {name!r}; available: {', '.join(folders)}")
    return read_entry(folders[name])


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(entry, files=VERIFIED_FILES) -> pathlib.Path:
    """The folder of `entry` (a ZooEntry or a name), after the sha256 of each of `files`
    (its config.json and its weights) matched its metadata; else FileNotFoundError or
    ValueError naming the file.
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    for file_name in files:
        path = entry.directory / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{file_name} of {entry.name!r} not found at {path}")
        actual = file_sha256(path)
        if actual != entry.hashes[file_name]:
            raise ValueError(f"{path} has sha256 {actual}, but {entry.directory / METADATA_FILE}"
                             f" expects {entry.hashes[file_name]}: the file is corrupted or "
                             f"not the released one; refusing to load {entry.name!r}")
    return entry.directory


def _is_entry_name(name) -> bool:
    return (isinstance(name, str) and name and "/" not in name and os.sep not in name
            and not name.startswith(".") and (zoo_dir() / name / METADATA_FILE).is_file())


def _entry_or_directory(name):
    """(ZooEntry or None, folder) of a zoo name (first) or a local directory."""
    if _is_entry_name(name):
        entry = get_entry(name)
        return entry, entry.directory
    if isinstance(name, (str, os.PathLike)) and os.path.isdir(name):
        folder = pathlib.Path(name)
        return (read_entry(folder) if (folder / METADATA_FILE).is_file() else None), folder
    if isinstance(name, os.PathLike) or (isinstance(name, str) and ("/" in name or os.sep in name)):
        raise FileNotFoundError(f"{name} is not a directory (a zoo entry, or a folder holding "
                                f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    get_entry(name)  # raises: an unknown name (listing the available ones), or no zoo folder
    raise AssertionError(name)


def load(name, load_weights=True):
    """A zoo model by name, or the model a local directory holds (config.json and
    model.weights.h5, or a training directory's checkpoints), built from its config.

    A zoo entry, and a directory holding a metadata.json, is verified first (`verify`).
    With load_weights=False: the model its (verified) config builds, with fresh weights.
    """
    entry, folder = _entry_or_directory(name)
    if entry is not None:
        verify(entry, VERIFIED_FILES if load_weights else (CONFIG_FILE,))
    config = read_config(folder)
    try:
        model = build_model(config.model, config.model_config)
    except (TypeError, ValueError) as error:  # an argument the model does not take
        raise ValueError(f"{folder / CONFIG_FILE}: its model_config does not build the model: "
                         f"{error}") from error
    if not load_weights:
        return model
    if not (folder / WEIGHTS_FILE).is_file():
        return model_from_dir(folder)  # a training directory: from its checkpoints
    training.load_weights(model, folder / WEIGHTS_FILE, config)
    return model


def from_preset(cls, name, load_weights=True):
    """`load(name, load_weights)`, refusing (ValueError, before loading weights) a model that
    is not a `cls`: the keras-hub spelling as a function,
    e.g. `zoo.from_preset(PrototypicalNetwork, "protonet_omniglot")`."""
    entry, folder = _entry_or_directory(name)
    if entry is not None:
        verify(entry, (CONFIG_FILE,))
    model_class = MODELS[read_config(folder).model]
    if not issubclass(model_class, cls):
        raise ValueError(f"{name!r} is a {model_class.__name__}, not a {cls.__name__}")
    return load(name, load_weights)
