"""Flags shared by the commands: JSON-object flags, and the --model / --model_dir pair of the
commands that read a trained model. Bad values are refused when the flags are parsed,
naming the flag, before any model or data is loaded."""

import json
import os
import pathlib

from absl import flags

from keras_fewshot import training, zoo


class _JsonObjectParser(flags.ArgumentParser):
    syntactic_help = "a JSON object"

    def parse(self, argument):
        if isinstance(argument, dict):
            return argument
        try:
            value = json.loads(argument)
        except ValueError as error:
            raise ValueError(f"not valid JSON ({error}); quote it for the shell, e.g. "
                             """'{"filters": 8}'""") from error
        if not isinstance(value, dict):
            raise ValueError(f"must be a JSON object ({{...}}), got a {type(value).__name__}")
        return value

    def flag_type(self):
        return "JSON object"


class _JsonSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return json.dumps(value)


def define_json_object(name, default, help_text, flag_values, module_name):
    """A flag of `module_name` (the defining command's) whose value is a JSON object, parsed
    to a dict (None when unset)."""
    flags.DEFINE(_JsonObjectParser(), name, default, help_text, flag_values=flag_values,
                 serializer=_JsonSerializer(), module_name=module_name)


def require_directory_or_new(name, flag_values):
    """--name must not be an existing file (a directory is written there)."""
    flags.register_validator(
        name, lambda path: path is None or not os.path.exists(path) or os.path.isdir(path),
        message="is a file; give a directory (existing, or to be created)",
        flag_values=flag_values)


def define_model_flags(flag_values):
    """--model (a zoo name) and --model_dir (a training directory), exactly one required."""
    flags.DEFINE_string("model", None, "Zoo model name (keras_fewshot.list_models()).",
                        flag_values=flag_values)
    flags.DEFINE_string("model_dir", None, "A training directory (keras-fewshot train "
                        "--model_dir), or a folder holding config.json and model.weights.h5.",
                        flag_values=flag_values)
    flags.mark_flags_as_mutual_exclusive(["model", "model_dir"], required=True,
                                         flag_values=flag_values)
    flags.register_validator(
        "model_dir", lambda path: path is None or os.path.isdir(path),
        message="is not a directory (a training directory holding config.json)",
        flag_values=flag_values)


def load_model():
    """The model chosen by --model (zoo, hash-checked) or --model_dir (hash-checked when it
    holds a metadata.json)."""
    if flags.FLAGS.model:
        return zoo.load(flags.FLAGS.model)
    return zoo.load(pathlib.Path(flags.FLAGS.model_dir))


def default_protocol():
    """The protocol the chosen model is measured by: its zoo entry's, else its split's."""
    if flags.FLAGS.model:
        return zoo.get_entry(flags.FLAGS.model).protocol
    config = training.read_config(flags.FLAGS.model_dir)
    if config.dataset in ("omniglot", "sinusoid"):
        return "sinusoid" if config.dataset == "sinusoid" else config.split
    return "vinyals"  # the settings a model trained on other data is measured in by default


def training_config():
    """The TrainConfig of the chosen model (its zoo folder's or its training directory's)."""
    if flags.FLAGS.model:
        return training.read_config(zoo.get_entry(flags.FLAGS.model).directory)
    return training.read_config(flags.FLAGS.model_dir)
