"""Checkpoints and weights files: written atomically, each checkpoint with its sha256.

checkpoints/ckpt-<step>.weights.h5 holds model and optimizer state (the newest three kept),
ckpt-<step>.weights.h5.sha256 its sha256 (`sha256sum -c` format): a damaged checkpoint is
never resumed from (`Checkpoints.restore_point`) and, by the process that writes the
directory, moved aside as damaged-ckpt-<step>.weights.h5. Every weights file this module
writes carries its model's class name, so that `run_dir.load_weights` can tell a config of
another model.
"""

import logging
import pathlib

import h5py

from keras_fewshot.training.files import replace_durably, sha256

MODEL_CLASS_ATTR = "keras_fewshot_model_class"  # weights files this module writes carry it
HASH_SUFFIX = ".sha256"  # checkpoints/ckpt-<step>.weights.h5.sha256: the checkpoint's sha256
DAMAGED_PREFIX = "damaged-"  # a damaged checkpoint is moved aside under this prefix

logger = logging.getLogger(__name__)


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
        actual = sha256(path)
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
        atomic_save_weights(model, self.path(step), record_hash=True)
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
            _hash_path(self.path(old)).unlink(missing_ok=True)
        for orphan in self.directory.glob("ckpt-*.weights.h5" + HASH_SUFFIX):
            if not orphan.with_suffix("").exists():  # a kill between the hash and its file
                orphan.unlink(missing_ok=True)


def _hash_path(path):
    return path.with_name(path.name + HASH_SUFFIX)


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


def atomic_save_weights(model, path, record_hash=False):
    """Writes `path` complete or not at all; with `record_hash`, its sha256 (of the bytes
    on disk) first to `path`.sha256, so a checkpoint in place always has its record."""
    path = pathlib.Path(path)
    tmp = path.with_name("tmp." + path.name)
    model.save_weights(tmp)
    with h5py.File(tmp, "a") as f:  # lets load_weights tell a config of another model
        f.attrs[MODEL_CLASS_ATTR] = type(model).__name__
    if record_hash:
        record = _hash_path(tmp)
        record.write_text(f"{sha256(tmp)}  {path.name}\n", encoding="ascii")
        replace_durably(record, _hash_path(path))
    replace_durably(tmp, path)
