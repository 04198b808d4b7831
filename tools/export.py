"""Exports a zoo model or a training directory as a SavedModel for TF Serving.

    python tools/export.py --model=protonet_omniglot --output=exported/protonet_omniglot/1
"""

from absl import app, flags

import _model_flags
from keras_fewshot import export

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "SavedModel directory to write.", required=True)
flags.DEFINE_bool("overwrite", False, "Replace an existing directory.")


def main(argv):
    del argv
    path = export.export_saved_model(_model_flags.load_model(), FLAGS.output,
                                     overwrite=FLAGS.overwrite)
    print(f"SavedModel written to {path} (signature serving_default)")


if __name__ == "__main__":
    app.run(main)
