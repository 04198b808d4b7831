"""Pictures of training runs and sequence evaluations, as PNG.

Learning curves (training loss and accuracy against episodes, or the run's sequences, tasks
or pair batches):

    keras-fewshot plot --log=runs/my_protonet --output=runs/my_protonet/curves.png
    keras-fewshot plot --log=zoo/protonet_omniglot/pretrain_history.csv \
        --log=zoo/protonet_omniglot/history.csv --output=zoo/protonet_omniglot/curves.png

Each --log is a training directory (its history.csv and config.json) or a
<prefix>history.csv beside its <prefix>config.json; several are drawn one after another
(a fine-tuning run continuing the run it started from).

Accuracy by instance of sequence models (keras-fewshot evaluate --output_json files):

    keras-fewshot plot --curve=MANN=zoo/mann_omniglot/eval_vinyals.json \
        --curve=LSTM=zoo/sequence_lstm_omniglot/eval_vinyals.json \
        --output=zoo/mann_omniglot/accuracy_by_instance.png

(`python tools/plot.py ...` in a clone.) Pictures of episodes with a model's predictions:
keras-fewshot evaluate --plot and keras-fewshot classify --plot.
"""

import json
import pathlib

from absl import app, flags

from keras_fewshot import plots, training


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    flags.DEFINE_multi_string("log", None, "Training directory or <prefix>history.csv; repeat "
                              "for consecutive phases.", **fv)
    flags.DEFINE_multi_string("curve", None, "LABEL=PATH of a sequence model's evaluation "
                              "JSON; repeat to compare models (accuracy by instance).", **fv)
    flags.DEFINE_bool("paper", True, "With --curve: also draw Santoro et al.'s 5-class "
                      "numbers.", **fv)
    flags.DEFINE_string("output", None, "PNG file to write.", required=True, **fv)
    flags.DEFINE_string("title", None, "Figure title.", **fv)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if bool(FLAGS.log) == bool(FLAGS.curve):
        raise app.UsageError("Give either --log (learning curves) or --curve (accuracy by "
                             "instance)")
    if FLAGS.log:
        figure = plots.learning_curves([training.read_history(log) for log in FLAGS.log],
                                       FLAGS.title)
        print(f"Learning curves written to {plots.save_png(figure, FLAGS.output)}")
        return
    curves = {}
    for spec in FLAGS.curve:
        label, sep, path = spec.partition("=")
        if not sep:
            raise app.UsageError(f"--curve must be LABEL=PATH, got {spec!r}")
        curves[label] = json.loads(pathlib.Path(path).read_text())
    figure = plots.accuracy_by_instance_figure(curves, FLAGS.paper, FLAGS.title)
    print(f"Accuracy by instance written to {plots.save_png(figure, FLAGS.output, dpi=120)}")
