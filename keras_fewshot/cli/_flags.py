"""Flags shared by the commands: JSON-object flags, flags made from a dataclass's fields (the
train command's from TrainConfig), and the --model / --model_dir pair of the commands that
read a trained model. Bad values are refused when the flags are parsed, naming the flag,
before any model or data is loaded."""

import dataclasses
import json
import os
import pathlib

from absl import flags

from keras_fewshot import evaluation, training, zoo


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


def define_dataclass_flags(config_class, flag_values, module_name):
    """One flag of `module_name` per field of the dataclass `config_class`, named as the
    field, of its type (bool, int, float, str; dict: a JSON object), with its default and
    the help text of its metadata; metadata "choices" makes an enum flag, "flag_default"
    the flag's default where it is not the field's (None: decided from other flags)."""
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        if "flag_default" in meta:
            default = meta["flag_default"]
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        kwargs = {"flag_values": flag_values, "module_name": module_name}
        if "choices" in meta:
            flags.DEFINE_enum(field.name, None if default is None else str(default),
                              [str(c) for c in meta["choices"]], meta["help"], **kwargs)
        elif field.type is dict:
            define_json_object(field.name, json.dumps(default), meta["help"], flag_values,
                               module_name)
        else:
            define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                      float: flags.DEFINE_float, str: flags.DEFINE_string}[field.type]
            define(field.name, default, meta["help"], **kwargs)


def dataclass_values(config_class, flag_values) -> dict:
    """{field: value} of the flags `define_dataclass_flags` made, each converted to its
    field's type; a flag left at None (decided from other flags) is left out."""
    values = {}
    for field in dataclasses.fields(config_class):
        value = flag_values[field.name].value
        if value is not None:
            values[field.name] = field.type(value)
    return values


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
    flags.DEFINE_enum("dtype_policy", "float32", list(training.DTYPE_POLICIES),
                      "Keras dtype policy the model is built with: mixed_bfloat16 computes "
                      "in bf16 with the float32 weights (faster where the CPU has bf16 "
                      "instructions; answers move by bf16 round-off: measure them).",
                      flag_values=flag_values)
    flags.register_validator(
        "model_dir", lambda path: path is None or os.path.isdir(path),
        message="is not a directory (a training directory holding config.json)",
        flag_values=flag_values)
    flags.DEFINE_integer("step", None, "With --model_dir: the weights of the checkpoint of this "
                         "optimizer step (sha256-checked; a run keeps its newest three) instead "
                         "of the final or newest ones, e.g. to read a run's learning curve.",
                         lower_bound=1, flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["step", "model_dir"], lambda values: values["step"] is None or values["model_dir"],
        message="--step goes with --model_dir: it picks a checkpoint of a training directory",
        flag_values=flag_values)


def load_model():
    """The model chosen by --model (zoo, hash-checked) or --model_dir (hash-checked when it
    holds a metadata.json; --step: that checkpoint, checked by its sha256), built with
    --dtype_policy."""
    with training.using_dtype_policy(flags.FLAGS.dtype_policy):
        if flags.FLAGS.model:
            return zoo.load(flags.FLAGS.model)
        if flags.FLAGS.step is not None:
            return training.model_from_dir(flags.FLAGS.model_dir, step=flags.FLAGS.step)
        return zoo.load(pathlib.Path(flags.FLAGS.model_dir))


def default_protocol():
    """The protocol the chosen model is measured by: its zoo entry's, else its split's."""
    if flags.FLAGS.model:
        return zoo.get_entry(flags.FLAGS.model).protocol
    return evaluation.config_protocol(training.read_config(flags.FLAGS.model_dir))


def training_config():
    """The TrainConfig of the chosen model (its zoo folder's or its training directory's)."""
    if flags.FLAGS.model:
        return training.read_config(zoo.get_entry(flags.FLAGS.model).directory)
    return training.read_config(flags.FLAGS.model_dir)
