"""A run's training log (history.csv and its config.json) as the learning curves take it."""

import csv
import dataclasses
import json
import pathlib

import numpy as np

from keras_fewshot.models import MODELS
from keras_fewshot.training.config import TrainConfig


def history_rows(path):
    """The columns of the history.csv `path` (empty for an empty file) and its rows by
    epoch; a resumed run may repeat an epoch, and its last row is kept."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = {int(row["epoch"]): row for row in reader}
        return list(reader.fieldnames or ()), rows


def read_history(path):
    """A training log (history.csv beside its config.json, or <prefix>history.csv beside
    <prefix>config.json) as (label, episodes at the end of each epoch, loss, accuracy or
    None for runs without an accuracy metric, such as regression; units: what the episodes
    count, the task kind's `trained_units`, e.g. "sequences")."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "history.csv"
    config_path = path.with_name(path.name.replace("history.csv", "config.json"))
    if not path.is_file() or not config_path.is_file():
        raise FileNotFoundError(f"Need a training log {path} and its config {config_path}")
    values = json.loads(config_path.read_text())
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in values.items() if k in fields})
    _, rows = history_rows(path)
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    epochs = sorted(rows)
    episodes = (np.asarray(epochs) + 1) * config.episodes_per_epoch
    loss = np.asarray([float(rows[e]["loss"]) for e in epochs])
    accuracy = (np.asarray([float(rows[e]["accuracy"]) for e in epochs])
                if "accuracy" in rows[epochs[0]] else None)
    kind = MODELS[config.model].task_kind
    shape = kind.run_description(config)
    if config.episodes_per_step > 1:
        shape += f", {config.episodes_per_step} per step"
    label = f"{path.parent.name}/{path.name}: {shape}, lr {config.learning_rate:g}"
    return label, episodes, loss, accuracy, kind.trained_units
