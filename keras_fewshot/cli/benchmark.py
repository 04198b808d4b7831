"""Prints one JSON line per measurement for each zoo model (random weights, same architecture),
each model measured in a process of its own.

    keras-fewshot benchmark --data_dir=../shared/data/omniglot

(`python tools/benchmark.py ...` in a clone.) Measures ms per training step (on the model's
training element), ms per inference episode (5-way 1-shot and 20-way 5-shot, 15 queries), ms
per serving request through the exported SavedModel (5-way 1-shot with 5 queries, one per
class, and with one query; for the metric models one query against a stored support code;
for ProtoNet, when torch is importable, an eager PyTorch ProtoNet with the same weights doing
the same, timed alternately, as ratios), the training
input pipeline alone (steps' worth of input per second, as `fit` reads it), and peak memory.
--feature_branches=2 exports the metric models' SavedModel with their images embedded as two
branches (keras_fewshot.export), to measure with --intra_op_threads=1 --inter_op_threads=2.
Fixed-N models (MAML family) are measured on their own N instead of 20-way; regression
models (sinusoid) by one meta-step of their training configuration; sequence models (mann,
sequence_lstm) on their training batch of sequences and on one sequence of their training
shape (inference, serving request).

With --meta_config (a TrainConfig as JSON; one per process for a clean peak memory) it
measures one meta-step of that configuration instead, e.g. second-order MAML, 32 tasks of
5-way 1-shot 5-query:

    keras-fewshot benchmark --data_dir=../shared/data/omniglot --meta_config='{"model": \
        "maml", "model_config": {"train_inner_steps": 1}, "ways": 5, "shots": 1, \
        "queries": 5, "episodes_per_step": 32}'

With --synthetic_data, that step trains on random uint8 images at the model's resolution
instead of the data set's (the time does not depend on the pixels), e.g. the ResNet-12
ProtoNet on mini-ImageNet's 5-way 5-shot 15-query episodes at 84x84 RGB, without the data:

    keras-fewshot benchmark --synthetic_data --meta_config='{"model": "protonet", \
        "model_config": {"backbone": "resnet12", "preprocessor": "rgb", "image_size": 84}, \
        "ways": 5, "shots": 5, "queries": 15}'
"""

import json
import subprocess
import sys
import tempfile

import keras
import tensorflow as tf
from absl import app, flags

from keras_fewshot import benchmark, evaluation, export, training, zoo
from keras_fewshot.cli import _flags
from keras_fewshot.models import MODELS, build_model

MEASURES = ["pipeline", "inference", "serving", "train"]


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    flags.DEFINE_multi_string("model", None, "Zoo models to measure (default: all).", **fv)
    flags.DEFINE_string("data_dir", None, "Omniglot archives or folders; default "
                        "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS.", **fv)
    flags.DEFINE_integer("repeats", 10, "Timed repetitions per measurement.", **fv)
    _flags.define_json_object("meta_config", None, "Measure one meta-step of this TrainConfig "
                              "(JSON) instead of the zoo models.", flag_values, __name__)
    flags.DEFINE_bool("synthetic_data", False, "With --meta_config: random uint8 images at "
                      "the model's resolution (3 channels for an RGB preprocessor) instead "
                      "of the data set, which is then not read.", **fv)
    flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow threads within an op (0: TF's "
                         "default).", **fv)
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow ops run at once (0: TF's "
                         "default).", **fv)
    flags.DEFINE_integer("feature_branches", 1, "--measure=serving: export the metric models "
                         "(ProtoNet, Matching, Siamese, Relation) with their images embedded as "
                         "this many independent branches (keras_fewshot.export's "
                         "feature_branches); measure it with --intra_op_threads=1 "
                         "--inter_op_threads=2. The other models are exported as they are "
                         "(their serving rows say feature_branches 1).", lower_bound=1, **fv)
    flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA.", **fv)
    flags.DEFINE_enum("dtype_policy", "float32", list(training.DTYPE_POLICIES),
                      "Keras dtype policy of the models (mixed_bfloat16: bf16 compute).", **fv)
    flags.DEFINE_multi_enum("measure", MEASURES, MEASURES, "What to measure.", **fv)


def child_commands(names, fv):
    """One command per model: this command with every flag of its (`fv`'s values) but
    --model, for that model alone. Each model runs in a process of its own: peak memory is a
    whole process's, and in one process later models came out slower (the ProtoNet 60w5s5q
    step: 1180 ms tenth in line, 637 ms alone minutes later)."""
    forwarded = [line for flag in fv.get_flags_for_module(__name__)
                 if flag.name != "model" for line in flag.serialize().splitlines() if line]
    return [[sys.executable, "-m", "keras_fewshot.cli", "benchmark", f"--model={name}",
             *forwarded] for name in names]


def measure_zoo_model(name):
    """Every measurement of one zoo model, as JSON lines."""
    FLAGS = flags.FLAGS
    entry = zoo.get_entry(name)
    config = training.read_config(entry.directory)
    kind = MODELS[config.model].task_kind
    if kind.dataset:  # generated tasks, no test images: one meta-step of its training config
        print(json.dumps({**benchmark.meta_step_ms(config, None, FLAGS.repeats),
                          "model": name}), flush=True)
        return
    data = training.load_data(config, evaluation.PROTOCOLS[entry.protocol]["subset"],
                              FLAGS.data_dir)  # the classes the model is tested on
    train_data = training.load_data(config, config.subset, FLAGS.data_dir)
    model = build_model(config.model, config.model_config)
    rows = []
    if "pipeline" in FLAGS.measure:
        rows.append(benchmark.pipeline_steps_per_s(model, config, train_data))
    if "inference" in FLAGS.measure:
        rows += [benchmark.inference_ms(model, kind.unit, shape, inputs, FLAGS.repeats)
                 for shape, inputs in kind.test_inputs(model, config, data)]
    if "serving" in FLAGS.measure:
        branches = (FLAGS.feature_branches if export.supports_feature_branches(model) else 1)
        with tempfile.TemporaryDirectory() as tmp:
            path = export.export_saved_model(model, f"{tmp}/model", feature_branches=branches)
            rows += [{**benchmark.serving_ms(path, kind.unit, shape, inputs, 5 * FLAGS.repeats),
                      "feature_branches": branches}
                     for shape, inputs in kind.request_inputs(model, config, data)]
            if set(export.SUPPORT_INPUTS) <= set(kind.serving_inputs):  # a support set served
                rows += benchmark.support_set_serving_rows(
                    model, path, data, 5 * FLAGS.repeats,
                    threads_seconds=min(10.0, FLAGS.repeats / 6), feature_branches=branches)
    if "train" in FLAGS.measure:
        rows.append(benchmark.train_step_ms(model, config, train_data, FLAGS.repeats,
                                            jit_compile=FLAGS.jit_compile))
    rows.append(benchmark.peak_memory_mb())
    for row in rows:
        print(json.dumps({"model": name, **row}), flush=True)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.synthetic_data and not FLAGS.meta_config:
        raise app.UsageError("--synthetic_data goes with --meta_config (the zoo models are "
                             "measured on their own data)")
    names = FLAGS.model or sorted(zoo.list_models())
    if not FLAGS.meta_config and len(names) > 1:
        for command in child_commands(names, FLAGS):
            subprocess.run(command, check=True)
        return
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    keras.config.set_dtype_policy(FLAGS.dtype_policy)
    print(json.dumps({**benchmark.environment(), "jit_compile": FLAGS.jit_compile,
                      "feature_branches": FLAGS.feature_branches}), flush=True)
    if FLAGS.meta_config:
        config = training.TrainConfig.from_dict(FLAGS.meta_config)
        data = (benchmark.synthetic_data(config, config.seed) if FLAGS.synthetic_data
                else training.load_data(config, config.subset, FLAGS.data_dir))
        row = benchmark.meta_step_ms(config, data, FLAGS.repeats)
        if FLAGS.synthetic_data:
            row["data"] = "synthetic"
        print(json.dumps(row), flush=True)
        return
    (name,) = names  # one model per process
    measure_zoo_model(name)
