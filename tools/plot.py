"""Learning curves (training loss and accuracy against episodes) of training runs, as PNG.

    python tools/plot.py --log=runs/my_protonet --output=runs/my_protonet/curves.png
    python tools/plot.py --log=zoo/protonet_omniglot/pretrain_history.csv \
        --log=zoo/protonet_omniglot/history.csv --output=zoo/protonet_omniglot/curves.png

Each --log is a training directory (its history.csv and config.json) or a
<prefix>history.csv beside its <prefix>config.json; several are drawn one after another
(a fine-tuning run continuing the run it started from). Pictures of episodes with a model's
predictions: tools/evaluate.py --plot and tools/classify.py --plot.
"""

from absl import app, flags

from keras_fewshot import plots

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("log", None, "Training directory or <prefix>history.csv; repeat for "
                          "consecutive phases.", required=True)
flags.DEFINE_string("output", None, "PNG file to write.", required=True)
flags.DEFINE_string("title", None, "Figure title.")


def main(argv):
    del argv
    figure = plots.learning_curves([plots.read_history(log) for log in FLAGS.log], FLAGS.title)
    print(f"Learning curves written to {plots.save_png(figure, FLAGS.output)}")


if __name__ == "__main__":
    app.run(main)
