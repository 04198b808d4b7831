"""The command line that trains a TrainConfig: the train command's flags are the config's
fields (`cli.train.define_flags` defines one per field), so a config maps back to them."""

import dataclasses
import json
import shlex

from keras_fewshot.data import datasets
from keras_fewshot.training.config import TrainConfig


def train_command(config: TrainConfig, model_dir, data_dir=None) -> str:
    """The `python tools/train.py ...` line whose flags give exactly `config`
    (`cli.train.config_from_flags`): --model_dir, --data_dir (when given and the data set is
    not of generated tasks), then a flag for each field that differs from TrainConfig's
    default, --model_config as one JSON object; --split and --subset always for data with
    classes (left out, the command decides them from --dataset). Values are quoted for the
    shell."""
    words = ["python", "tools/train.py", f"--model_dir={model_dir}"]
    has_classes = config.dataset not in datasets.GENERATED
    if data_dir and has_classes:
        words.append(f"--data_dir={data_dir}")
    default = TrainConfig()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value == getattr(default, field.name) and not (
                has_classes and field.name in ("split", "subset")):
            continue
        if isinstance(value, bool):
            words.append(f"--{'' if value else 'no'}{field.name}")
        else:
            words.append(f"--{field.name}="
                         + (json.dumps(value) if isinstance(value, dict) else str(value)))
    return " ".join(_shell_word(word) for word in words)


def _shell_word(word):
    """`word` quoted for a POSIX shell; a --flag=value's value only, as written by hand."""
    flag, equals, value = word.partition("=")
    if flag.startswith("--") and equals:
        return f"{flag}={shlex.quote(value)}"
    return shlex.quote(word)
