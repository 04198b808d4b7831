"""Trains a model on episodes (pairs, sequences); resumes when re-run with the same --model_dir.

    keras-fewshot train --model=protonet --ways=60 --shots=5 --queries=5 \
        --episodes=10000 --model_dir=runs/protonet_omniglot --data_dir=../shared/data/omniglot
    keras-fewshot train --model=protonet --dataset=folder:my_images \
        --split=random:train=0.8,test=0.2 --ways=5 --shots=1 --model_dir=runs/mine

(`python tools/train.py ...` in a clone.) Writes config.json, checkpoints/, history.csv, logs/
(TensorBoard) and model.weights.h5 in --model_dir (see keras_fewshot.training).

MAML-family models (--model=maml, maml_regressor) take their meta-learning arguments from
--model_config or from the flags --inner_learning_rate, --inner_steps, --test_inner_steps and
--first_order, which are written into model_config (and so into config.json).

--strategy=mirrored trains on every local GPU, --strategy=multi_worker on every worker of the
cluster described by $TF_CONFIG (run the same command on each; --model_dir on a file system
they share); each step's --episodes_per_step episodes (sequences, tasks; --pairs pairs for
--model=siamese) are split over the replicas. Every --model trains this way.
"""

from absl import app, flags

from keras_fewshot import training
from keras_fewshot.cli import _flags
from keras_fewshot.data import datasets

# Meta-learning arguments of MAML-family models, merged into --model_config.
META_FLAGS = {"inner_learning_rate": "inner_learning_rate", "inner_steps": "train_inner_steps",
              "test_inner_steps": "test_inner_steps", "first_order": "first_order"}


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    d = training.TrainConfig()  # the defaults
    flags.DEFINE_string("model_dir", None, "Training directory (config, checkpoints, logs).",
                        required=True, **fv)
    _flags.require_directory_or_new("model_dir", flag_values)
    flags.DEFINE_string("data_dir", None, "Omniglot archives or folders (default "
                        "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS), or a TFDS data_dir.", **fv)
    flags.DEFINE_string("model", d.model, "Model name (keras_fewshot.models.MODELS).", **fv)
    _flags.define_json_object("model_config", "{}", "JSON constructor arguments of the model.",
                              flag_values, __name__)
    flags.DEFINE_string("dataset", d.dataset, "'omniglot', 'folder:PATH' (one sub-folder per "
                        "class), 'tfds:NAME[@SPLIT]' (keras_fewshot.data.datasets), or "
                        "'sinusoid' (regression tasks: --shots/--queries are K/Q points per "
                        "task).", **fv)
    flags.DEFINE_string("split", None, "Class split: vinyals or lake (Omniglot; default "
                        "vinyals); all, random:train=0.8,test=0.2[,seed=N] or lists:DIR (other "
                        "data; default all).", **fv)
    flags.DEFINE_string("subset", None, "Training subset of the split: train/val/trainval "
                        "(vinyals; default trainval), background (lake); train (default) or "
                        "another subset of yours.", **fv)
    flags.DEFINE_enum("channels", None, ["1", "3"], "Convert images of a folder or TFDS "
                      "dataset to 1 or 3 channels (default: as in the files, which must "
                      "agree).", **fv)
    flags.DEFINE_integer("ways", d.ways, "Classes per training episode (N); sequence models: "
                         "classes per sequence (their model_config's classes).", **fv)
    flags.DEFINE_integer("shots", d.shots, "Support examples per class (K).", **fv)
    flags.DEFINE_integer("queries", d.queries, "Query examples per class (Q).", **fv)
    flags.DEFINE_integer("instances", d.instances, "Sequence models (mann, sequence_lstm): "
                         "examples of each class per sequence.", **fv)
    flags.DEFINE_integer("episodes_per_step", d.episodes_per_step,
                         "Episodes (or sequences) per optimizer step (batched).", **fv)
    flags.DEFINE_integer("pairs", d.pairs, "Pair-trained models (siamese): pairs per step; "
                         "each step counts as one episode.", **fv)
    flags.DEFINE_bool("distort", d.distort, "Random distortions of the training images: pairs "
                      "get Koch et al.'s affine maps, sequences Santoro et al.'s rotations and "
                      "translations.", **fv)
    flags.DEFINE_integer("episodes", d.episodes, "Total training episodes.", **fv)
    flags.DEFINE_integer("episodes_per_epoch", d.episodes_per_epoch,
                         "Episodes between checkpoints and log lines.", **fv)
    flags.DEFINE_enum("optimizer", d.optimizer, sorted(training.OPTIMIZERS), "Outer optimizer "
                      "(sgd with learning rate epsilon is Reptile's update).", **fv)
    flags.DEFINE_float("learning_rate", d.learning_rate, "Initial learning rate.", **fv)
    flags.DEFINE_integer("lr_decay_every", d.lr_decay_every, "Multiply the learning rate by "
                         "--lr_decay_rate every this many episodes.", **fv)
    flags.DEFINE_float("lr_decay_rate", d.lr_decay_rate, "Learning-rate decay factor.", **fv)
    flags.DEFINE_integer("seed", d.seed, "Episode stream seed.", **fv)
    flags.DEFINE_string("init_from", d.init_from, "A training directory whose final weights "
                        "initialise this run (fine-tuning); the optimizer starts fresh.", **fv)
    flags.DEFINE_string("embedding_from", d.embedding_from, "A training directory (or "
                        "zoo/<name>) whose embedding weights start this run; other layers "
                        "fresh.", **fv)
    flags.DEFINE_bool("rotations", d.rotations, "Lake split: add each training character "
                      "rotated by 90/180/270 degrees as new classes.", **fv)
    flags.DEFINE_bool("within_alphabet", d.within_alphabet, "Draw each training episode's "
                      "classes (pair-trained: each negative pair) from a single alphabet (as "
                      "Lake's test episodes).", **fv)
    flags.DEFINE_bool("freeze_embedding", d.freeze_embedding, "Train every layer but the "
                      "embedding (e.g. a head on --embedding_from's features).", **fv)
    flags.DEFINE_float("inner_learning_rate", None, "MAML family: inner-loop learning rate "
                       "alpha.", **fv)
    flags.DEFINE_integer("inner_steps", None, "MAML family: inner steps while meta-training.",
                         **fv)
    flags.DEFINE_integer("test_inner_steps", None, "MAML family: inner steps at evaluation.",
                         **fv)
    flags.DEFINE_bool("first_order", None, "MAML: drop the second-order terms (first-order "
                      "MAML).", **fv)
    flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute "
                      "strategy: one device, every local GPU, or every worker of $TF_CONFIG.",
                      **fv)
    flags.DEFINE_enum("dtype_policy", d.dtype_policy, list(training.DTYPE_POLICIES),
                      "Compute precision while training: mixed_bfloat16 is Keras mixed "
                      "precision (bf16 compute, float32 weights; evaluation and export stay "
                      "float32).", **fv)
    flags.DEFINE_integer("verbose", 1, "Keras fit verbosity (1 progress bar, 2 one "
                         "line/epoch).", **fv)


def config_from_flags(fv) -> training.TrainConfig:
    """The TrainConfig the parsed flags `fv` describe (what config.json will hold)."""
    model_config = dict(fv.model_config)
    for flag, key in META_FLAGS.items():
        value = fv[flag].value
        if value is not None:
            if key in model_config and model_config[key] != value:
                raise app.UsageError(f"--{flag}={value} contradicts --model_config {key}")
            model_config[key] = value
    split, subset = datasets.default_split(fv.dataset, fv.split)
    return training.TrainConfig(
        model=fv.model, model_config=model_config, dataset=fv.dataset,
        channels=int(fv.channels or 0), split=split, subset=fv.subset or subset,
        rotations=fv.rotations, ways=fv.ways, shots=fv.shots, queries=fv.queries,
        within_alphabet=fv.within_alphabet, episodes_per_step=fv.episodes_per_step,
        instances=fv.instances, pairs=fv.pairs, distort=fv.distort, episodes=fv.episodes,
        episodes_per_epoch=fv.episodes_per_epoch, optimizer=fv.optimizer,
        learning_rate=fv.learning_rate, lr_decay_every=fv.lr_decay_every,
        lr_decay_rate=fv.lr_decay_rate, seed=fv.seed, init_from=fv.init_from,
        embedding_from=fv.embedding_from, freeze_embedding=fv.freeze_embedding,
        dtype_policy=fv.dtype_policy)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    strategy = training.make_strategy(FLAGS.strategy)  # before any other TensorFlow op
    config = config_from_flags(FLAGS)
    training.train(config, FLAGS.model_dir, data_source=FLAGS.data_dir, verbose=FLAGS.verbose,
                   strategy=strategy)
