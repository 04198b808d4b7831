"""Evaluates a zoo model or a training directory on test episodes (95% confidence intervals).

    python tools/evaluate.py --model=protonet_omniglot --data_dir=../shared/data/omniglot
    python tools/evaluate.py --model=maml_sinusoid --plot=zoo/maml_sinusoid/adaptation.png

Fixed-N models (MAML family) are evaluated in their own N's settings by default. Regression
models (protocol "sinusoid") give mean-squared errors after 1, 5 and 10 inner steps.
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
flags.DEFINE_integer("episodes", 1000, "Test episodes (sinusoid: tasks) per setting.")
flags.DEFINE_integer("queries", None, "Queries per class (default 15; sinusoid: query "
                     "points per task, default 100).")
flags.DEFINE_integer("seed", 0, "Seed of the test episodes.")
flags.DEFINE_multi_string("setting", None, "N-way K-shot settings as NxK (e.g. 5x1; "
                          "sinusoid: K, e.g. 10); default: the protocol's standard settings "
                          "that the model can do.")
flags.DEFINE_string("output_json", None, "Also write the rows as JSON here.")
flags.DEFINE_string("plot", None, "sinusoid: also draw a few adapted curves against the "
                    "truth as PNG here.")


def main(argv):
    del argv
    model = _model_flags.load_model()
    settings = [tuple(int(v) for v in s.split("x")) for s in FLAGS.setting or []] or None
    protocol = FLAGS.protocol or _model_flags.default_protocol()
    rows = evaluation.evaluate(
        model, protocol, episodes=FLAGS.episodes, queries=FLAGS.queries, seed=FLAGS.seed,
        data_source=FLAGS.data_dir, image_size=getattr(model, "image_size", None),
        settings=settings, verbose=1 if sys.stdout.isatty() else 2)
    print(evaluation.markdown_table(rows))
    if FLAGS.output_json:
        pathlib.Path(FLAGS.output_json).write_text(json.dumps(rows, indent=2) + "\n")
    if FLAGS.plot:
        if protocol != "sinusoid":
            raise app.UsageError("--plot draws sinusoid regression tasks only")
        plot_sinusoid_curves(evaluation.sinusoid_curves(model, seed=FLAGS.seed), FLAGS.plot)


def plot_sinusoid_curves(curves, path):
    """One panel per task: truth, support points, the model after 0 / 1 / 10 inner steps."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    count = len(curves["truth"])
    figure, axes = plt.subplots(1, count, figsize=(4 * count, 3.2), sharey=True)
    for i, ax in enumerate(axes):
        ax.plot(curves["x"], curves["truth"][i], "k-", lw=2, label="truth")
        for steps, predictions in curves["predictions"].items():
            ax.plot(curves["x"], predictions[i], "--",
                    label=f"{steps} inner step{'s' if steps != 1 else ''}")
        ax.plot(curves["support_x"][i], curves["support_y"][i], "r^", ms=8,
                label=f"K = {curves['support_x'].shape[1]} support points")
        ax.set_xlabel("x")
        ax.set_title(f"test task {i}")
    axes[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    app.run(main)
