"""Evaluates a zoo model or a training directory on test episodes (95% confidence intervals).

    keras-fewshot evaluate --model=protonet_omniglot --data_dir=../shared/data/omniglot
    keras-fewshot evaluate --model=protonet_omniglot --dataset=folder:my_characters
    keras-fewshot evaluate --model=maml_sinusoid --plot=adaptation.png
    keras-fewshot evaluate --model_dir=runs/mine --step=2000 --episodes=200  # a checkpoint

(`python tools/evaluate.py ...` in a clone.) Omniglot models are measured by their protocol,
fixed-N models (MAML family) in their own N's settings by default; a model trained on a
folder or TFDS dataset by the test classes of its class split; --dataset measures on other
data (every class, unless --split/--subset say otherwise). Regression models (protocol
"sinusoid") give mean-squared errors after 1, 5 and 10 inner steps; sequence models accuracy
by instance. --plot pictures the first test episode (sinusoid: a few adapted curves;
sequence models: accuracy by instance). --test_distortions=N averages each query's
probabilities over the episode and N distorted copies of it (episodic classifiers).
"""

import json
import pathlib
import re
import sys

from absl import flags

from keras_fewshot import evaluation, plots
from keras_fewshot.cli import _flags


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    _flags.define_model_flags(flag_values)
    flags.DEFINE_string("data_dir", None, "Omniglot archives or folders (default "
                        "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS), or a TFDS data_dir.", **fv)
    flags.DEFINE_string("dataset", None, "'omniglot', 'folder:PATH' (one sub-folder per class), "
                        "'tfds:NAME', or a natural-image benchmark's local copy "
                        "('mini_imagenet:DIR', 'cifar_fs:DIR', 'fc100:DIR', 'cub:DIR', measured "
                        "by its own protocol); default: the model's own.", **fv)
    flags.DEFINE_string("split", None, "Class split of a folder or TFDS dataset: all, "
                        "random:train=0.8,test=0.2[,seed=N] or lists:DIR; default: the model's "
                        "own on its dataset, else all.", **fv)
    flags.DEFINE_string("subset", None, "Subset of that split; default: test (or all). With an "
                        "Omniglot protocol: another subset of the protocol's split to measure "
                        "its episodes on, e.g. trainval (vinyals) or background (lake) for the "
                        "training classes.", **fv)
    flags.DEFINE_enum("channels", None, ["1", "3"], "Convert images of a folder or TFDS "
                      "dataset to 1 or 3 channels (default: as the run did on its own dataset, "
                      "else as in the files, which must agree).", **fv)
    flags.DEFINE_enum("protocol", None, sorted(evaluation.PROTOCOLS), "Omniglot or sinusoid "
                      "evaluation protocol (lake: 20-way 1-shot within an alphabet, 15 queries "
                      "by any drawers; lake_runs: Lake et al.'s published runs, support by one "
                      "drawer and 1 query per class by another, from the local archives only: "
                      "--data_dir or $KERAS_FEWSHOT_OMNIGLOT_DIR); default: the model's own "
                      "(its zoo entry's, else its training split's).", **fv)
    flags.DEFINE_integer("episodes", None, "Test episodes (sinusoid: tasks) per setting; "
                         "default: the protocol's (600 for mini-ImageNet and CUB), else "
                         f"{evaluation.DEFAULT_EPISODES}.", **fv)
    flags.DEFINE_integer("queries", None, "Queries per class (default 15; lake_runs: 1, the "
                         "only number it takes; sinusoid: query points per task, default "
                         "100).", **fv)
    flags.DEFINE_integer("seed", 0, "Seed of the test episodes.", **fv)
    flags.DEFINE_integer("test_distortions", 0, "Episodic classifiers: classify each episode "
                         "also under N random Koch et al. (2015) affine distortions of every "
                         "image and average the N + 1 softmaxes per query (test-time "
                         "distortion averaging; report it beside the plain number).",
                         lower_bound=0, **fv)
    flags.DEFINE_multi_string("setting", None, "N-way K-shot settings as NxK (e.g. 5x1; "
                              "sinusoid: K, e.g. 10); default: the protocol's standard settings "
                              "that the model can do (and, for other data, that the data "
                              "fills).", **fv)
    flags.register_validator(
        "setting", lambda values: all(re.fullmatch(r"[1-9][0-9]*(x[1-9][0-9]*)?", v)
                                      for v in values or []),
        message="each --setting is NxK, N ways by K shots (e.g. 5x1), or for sinusoid K points "
                "(e.g. 10)", flag_values=flag_values)
    flags.DEFINE_string("output_json", None, "Also write the rows as JSON here.", **fv)
    flags.DEFINE_string("plot", None, "Also save a picture (PNG) of the first episode of the "
                        "first setting with the model's predictions (sinusoid: a few adapted "
                        "curves against the truth).", **fv)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    model = _flags.load_model()
    settings = [tuple(int(v) for v in s.split("x")) for s in FLAGS.setting or []] or None
    protocol = FLAGS.protocol or _flags.default_protocol()
    verbose = 1 if sys.stdout.isatty() else 2
    kind = model.task_kind
    if kind.dataset:  # generated tasks: no images to load
        data, name, within_group = None, protocol, False
    else:
        config = _flags.training_config()
        dataset = FLAGS.dataset or config.dataset
        data, name, within_group, protocol = evaluation.evaluation_data(
            dataset, protocol, FLAGS.split or (config.split if dataset == config.dataset
                                               else None),
            FLAGS.subset, FLAGS.data_dir, model.image_size,
            int(FLAGS.channels) if FLAGS.channels else (
                config.channels or None if dataset == config.dataset else None),
            keep_channels=evaluation.takes_colour(model))
    queries = FLAGS.queries or evaluation.PROTOCOLS.get(protocol, {}).get("queries", 15)
    episodes = FLAGS.episodes or evaluation.protocol_episodes(protocol)
    rows = evaluation.evaluate_data(model, data, name, settings, episodes, queries, FLAGS.seed,
                                    within_group, verbose=verbose, protocol=protocol,
                                    test_distortions=FLAGS.test_distortions)
    print(evaluation.markdown_table(rows))
    if FLAGS.output_json:
        pathlib.Path(FLAGS.output_json).write_text(json.dumps(rows, indent=2) + "\n")
    if FLAGS.plot:
        figure = kind.evaluation_figure(
            model, rows, FLAGS.model or pathlib.Path(FLAGS.model_dir).name, data, name,
            queries, FLAGS.seed, within_group)
        print(f"Picture written to {plots.save_png(figure, FLAGS.plot)}")
