"""Evaluates a zoo model or a training directory on test episodes (95% confidence intervals).

    python tools/evaluate.py --model=protonet_omniglot --data_dir=../shared/data/omniglot
"""

import json
import pathlib
import sys

from absl import app, flags

import _model_flags
from keras_fewshot import evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Omniglot archives or folders; default "
                    "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS.")
flags.DEFINE_enum("protocol", None, sorted(evaluation.PROTOCOLS), "Evaluation protocol; "
                  "default: the model's own (its zoo entry's, else its training split's).")
flags.DEFINE_integer("episodes", 1000, "Test episodes per setting.")
flags.DEFINE_integer("queries", 15, "Queries per class.")
flags.DEFINE_integer("seed", 0, "Seed of the test episodes.")
flags.DEFINE_multi_string("setting", None, "N-way K-shot settings as NxK (e.g. 5x1); "
                          "default: the protocol's standard settings.")
flags.DEFINE_string("output_json", None, "Also write the rows as JSON here.")


def main(argv):
    del argv
    model = _model_flags.load_model()
    settings = [tuple(int(v) for v in s.split("x")) for s in FLAGS.setting or []] or None
    protocol = FLAGS.protocol or _model_flags.default_protocol()
    rows = evaluation.evaluate(
        model, protocol, episodes=FLAGS.episodes, queries=FLAGS.queries, seed=FLAGS.seed,
        data_source=FLAGS.data_dir, image_size=model.image_size, settings=settings,
        verbose=1 if sys.stdout.isatty() else 2)
    print(evaluation.markdown_table(rows))
    if FLAGS.output_json:
        pathlib.Path(FLAGS.output_json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
