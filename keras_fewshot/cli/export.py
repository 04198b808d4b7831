"""Exports a zoo model or a training directory as a SavedModel for TF Serving, or as a TFLite
(LiteRT) file for devices.

    keras-fewshot export --model=protonet_omniglot --output=exported/protonet_omniglot/1
    keras-fewshot export --model=protonet_omniglot --format=tflite \\
        --output=exported/protonet_omniglot.tflite

(`python tools/export.py ...` in a clone.) Metric models (ProtoNet, Matching, Siamese,
Relation) also get the cached-support signatures encode_support and classify_encoded; see
docs/deploy.md. `--feature_branches=2` (metric models, SavedModel) embeds a request's images
as two independent branches, for a server running one thread per op and two ops at once.
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
    flags.DEFINE_integer("feature_branches", 1, "Metric models (ProtoNet, Matching, Siamese, "
                         "Relation), SavedModel only: embed a request's images as this many "
                         "independent branches (contiguous chunks of the batch, concatenated "
                         "back), which TensorFlow can run on that many cores at once; same "
                         "answers to round-off. It pays only when each op runs on one thread: "
                         "serve with intra-op threads 1 and inter-op threads 2 (TF Serving: "
                         "--tensorflow_intra_op_parallelism=1 "
                         "--tensorflow_inter_op_parallelism=2; in Python "
                         "tf.config.threading.set_intra_op_parallelism_threads(1) and "
                         "set_inter_op_parallelism_threads(2) before loading); with the default "
                         "threads it is a little slower. 1: one batch.", lower_bound=1,
                         flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["format", "feature_branches"],
        lambda values: values["format"] != "tflite" or values["feature_branches"] == 1,
        "--feature_branches goes with --format=saved_model: the TFLite interpreter runs one op "
        "at a time, so branches cannot run at once there", flag_values=flag_values)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    model = _flags.load_model()
    options = ({"feature_branches": FLAGS.feature_branches} if FLAGS.format == "saved_model"
               else {})
    path = FORMATS[FLAGS.format](model, FLAGS.output, overwrite=FLAGS.overwrite, **options)
    names = ", ".join(export.serving_functions(model))
    print(f"{'TFLite model' if FLAGS.format == 'tflite' else 'SavedModel'} written to {path} "
          f"(signatures {names})")
