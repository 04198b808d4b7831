"""Releases a training run as a zoo entry: its weights (model only), config, history and a
metadata.json with their sha256 and the command that trains exactly that config.

    keras-fewshot release --model_dir=campaign/metasgd_omniglot --step=5400 \\
        --output=zoo/metasgd_omniglot                      # re-release an entry
    keras-fewshot release --model_dir=runs/my_protonet --output=zoo/my_protonet \\
        --description="Prototypical Network, conv4, Omniglot Vinyals split, 60-way 5-shot."

(`python tools/release.py ...` in a clone.) --step releases that checkpoint (checked against
its sha256), its config saying the episodes trained up to it; without it, the finished run's
model.weights.h5. A new entry needs --description; re-releasing into an entry's folder keeps
its description, protocol and paper unless given. Nothing is written when the release is
refused (a step without a checkpoint, a damaged checkpoint, an entry of another model in
--output). Then write the card (README.md) and re-make its eval JSON with the command printed.
See keras_fewshot/release.py.
"""

import os

from absl import flags

from keras_fewshot import evaluation, release
from keras_fewshot.cli import _flags


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model_dir", None, "The training directory to release.",
                        required=True, **fv)
    flags.register_validator("model_dir", lambda path: path is None or os.path.isdir(path),
                             message="is not a directory (a training directory holding "
                             "config.json)", flag_values=flag_values)
    flags.DEFINE_string("output", None, "The zoo entry's folder, e.g. zoo/<name> (its name is "
                        "the entry's); created, or re-released into.", required=True, **fv)
    _flags.require_directory_or_new("output", flag_values)
    flags.DEFINE_integer("step", None, "The optimizer step whose checkpoint is released "
                         "(checkpoints/ckpt-<step>.weights.h5); default: the finished run's "
                         "model.weights.h5.", lower_bound=1, **fv)
    flags.DEFINE_string("description", None, "One line: method, backbone, data, settings it "
                        "serves; default: the existing entry's (required for a new one).", **fv)
    flags.DEFINE_enum("protocol", None, sorted(evaluation.PROTOCOLS), "How the entry is "
                      "measured; default: the existing entry's, else the run's split (or its "
                      "generated tasks').", **fv)
    flags.DEFINE_string("data_dir", release.OMNIGLOT_DATA_DIR, "The --data_dir the entry's "
                        "train command names (left out for generated tasks).", **fv)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    entry = release.release(FLAGS.model_dir, FLAGS.output, step=FLAGS.step,
                            description=FLAGS.description, protocol=FLAGS.protocol,
                            data_dir=FLAGS.data_dir)
    print(f"Released {FLAGS.model_dir}"
          + (f" at step {FLAGS.step}" if FLAGS.step else "") + f" as {entry.directory}:")
    for name, digest in entry.hashes.items():
        print(f"  {name}  sha256 {digest}")
    print(f"  trained by: {entry.train_command}")
    print(f"Next: write or update the card {entry.card_path} and re-make its eval JSON "
          f"(from the repository root, with the entry in zoo/):\n  {entry.evaluate_command}")
