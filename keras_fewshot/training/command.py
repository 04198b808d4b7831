"""The command line that trains a TrainConfig: the train command's flags are the config's
fields (`cli.train.define_flags` defines one per field), so a config maps back to them."""

import dataclasses
import json
import shlex

from keras_fewshot.data import datasets
from keras_fewshot.training.config import TrainConfig

# Values that say a setting is not set rather than set to a default: no run to start from,
# images' channels as in the files (--channels has no 0).
UNSET = {"init_from": "", "embedding_from": "", "channels": 0}


def train_command(config: TrainConfig, model_dir, data_dir=None) -> str:
    """The `python tools/train.py ...` line whose flags give exactly `config`
    (`cli.train.config_from_flags`): --model_dir, --data_dir (when given and the data set is
    not of generated tasks), then a flag for each field in the order TrainConfig defines
    them, defaults included (the line must give the same run when a default changes), but
    for the `UNSET` ones; --model_config as one JSON object. Values are quoted for the
    shell."""
    words = ["python", "tools/train.py", f"--model_dir={model_dir}"]
    if data_dir and config.dataset not in datasets.GENERATED:
        words.append(f"--data_dir={data_dir}")
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in UNSET and value == UNSET[field.name]:
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
