"""Exports a zoo model or a training directory as a SavedModel for TF Serving.

    keras-fewshot export --model=protonet_omniglot --output=exported/protonet_omniglot/1

(`python tools/export.py ...` in a clone.)
"""

from absl import flags

from keras_fewshot import export
from keras_fewshot.cli import _flags


def define_flags(flag_values):
    _flags.define_model_flags(flag_values)
    flags.DEFINE_string("output", None, "SavedModel directory to write.", required=True,
                        flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Replace an existing directory.",
                      flag_values=flag_values)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    path = export.export_saved_model(_flags.load_model(), FLAGS.output,
                                     overwrite=FLAGS.overwrite)
    print(f"SavedModel written to {path} (signature serving_default)")
