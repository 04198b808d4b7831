"""Plots accuracy by instance (PNG) from tools/evaluate.py --output_json files of sequence models.

    python tools/plot_accuracy_by_instance.py \
        --curve=MANN=zoo/mann_omniglot/eval_vinyals.json \
        --curve=LSTM=runs/sequence_lstm/eval_vinyals.json \
        --output=zoo/mann_omniglot/accuracy_by_instance.png
"""

import json
import pathlib

from absl import app, flags

from keras_fewshot import plotting

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("curve", None, "LABEL=PATH of an evaluation JSON (sequence rows).",
                          required=True)
flags.DEFINE_string("output", None, "PNG to write.", required=True)
flags.DEFINE_bool("paper", True, "Also draw Santoro et al.'s 5-class numbers (dashed).")
flags.DEFINE_string("title", None, "Figure title (default: names the class count).")


def main(argv):
    del argv
    curves = {}
    for spec in FLAGS.curve:
        label, sep, path = spec.partition("=")
        if not sep:
            raise app.UsageError(f"--curve must be LABEL=PATH, got {spec!r}")
        curves[label] = json.loads(pathlib.Path(path).read_text())
    path = plotting.plot_accuracy_by_instance(curves, FLAGS.output, paper=FLAGS.paper,
                                              title=FLAGS.title)
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
