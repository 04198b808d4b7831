"""Exports a zoo model or a training directory as a SavedModel for TF Serving, or as a TFLite
(LiteRT) file for devices.

    keras-fewshot export --model=protonet_omniglot --output=exported/protonet_omniglot/1
    keras-fewshot export --model=protonet_omniglot --format=tflite \\
        --output=exported/protonet_omniglot.tflite

(`python tools/export.py ...` in a clone.) Metric models (ProtoNet, Matching, Siamese,
Relation) also get the cached-support signatures encode_support and classify_encoded; see
docs/deploy.md.
"""

from absl import flags

from keras_fewshot import export
from keras_fewshot.cli import _flags

FORMATS = {"saved_model": export.export_saved_model, "tflite": export.export_tflite}


def define_flags(flag_values):
    _flags.define_model_flags(flag_values)
    flags.DEFINE_string("output", None, "SavedModel directory (or .tflite file) to write.",
                        required=True, flag_values=flag_values)
    flags.DEFINE_enum("format", "saved_model", sorted(FORMATS),
                      "saved_model: a TF Serving SavedModel directory; tflite: one TFLite "
                      "(LiteRT) flatbuffer with the same signatures.", flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Replace an existing directory or file.",
                      flag_values=flag_values)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    model = _flags.load_model()
    path = FORMATS[FLAGS.format](model, FLAGS.output, overwrite=FLAGS.overwrite)
    names = ", ".join(export.serving_functions(model))
    print(f"{'TFLite model' if FLAGS.format == 'tflite' else 'SavedModel'} written to {path} "
          f"(signatures {names})")
