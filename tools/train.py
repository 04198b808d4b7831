"""Trains a model on episodes (pairs, sequences); resumes when re-run with the same --model_dir.

    python tools/train.py --model=protonet --ways=60 --shots=5 --queries=5 \
        --episodes=10000 --model_dir=runs/protonet_omniglot --data_dir=../shared/data/omniglot
    python tools/train.py --model=protonet --dataset=folder:my_images \
        --split=random:train=0.8,test=0.2 --ways=5 --shots=1 --model_dir=runs/mine

Writes config.json, checkpoints/, history.csv, logs/ (TensorBoard) and model.weights.h5 in
--model_dir (see keras_fewshot.training).

MAML-family models (--model=maml, maml_regressor) take their meta-learning arguments from
--model_config or from the flags --inner_learning_rate, --inner_steps, --test_inner_steps and
--first_order, which are written into model_config (and so into config.json).

--strategy=mirrored trains on every local GPU, --strategy=multi_worker on every worker of the
cluster described by $TF_CONFIG (run the same command on each; --model_dir on a file system
they share); each step's --episodes_per_step episodes (sequences, tasks; --pairs pairs for
--model=siamese) are split over the replicas. Every --model trains this way.
"""

import json

from absl import app, flags

from keras_fewshot import training
from keras_fewshot.data import datasets

_DEFAULTS = training.TrainConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Training directory (config, checkpoints, logs).",
                    required=True)
flags.DEFINE_string("data_dir", None, "Omniglot archives or folders (default "
                    "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS), or a TFDS data_dir.")
flags.DEFINE_string("model", _DEFAULTS.model, "Model name (keras_fewshot.models.MODELS).")
flags.DEFINE_string("model_config", "{}", "JSON constructor arguments of the model.")
flags.DEFINE_string("dataset", _DEFAULTS.dataset, "'omniglot', 'folder:PATH' (one sub-folder "
                    "per class), 'tfds:NAME[@SPLIT]' (keras_fewshot.data.datasets), or "
                    "'sinusoid' (regression tasks: --shots/--queries are K/Q points per task).")
flags.DEFINE_string("split", None, "Class split: vinyals or lake (Omniglot; default vinyals); "
                    "all, random:train=0.8,test=0.2[,seed=N] or lists:DIR (other data; "
                    "default all).")
flags.DEFINE_string("subset", None, "Training subset of the split: train/val/trainval "
                    "(vinyals; default trainval), background (lake); train (default) or "
                    "another subset of yours.")
flags.DEFINE_enum("channels", None, ["1", "3"], "Convert images of a folder or TFDS dataset "
                  "to 1 or 3 channels (default: as in the files, which must agree).")
flags.DEFINE_integer("ways", _DEFAULTS.ways, "Classes per training episode (N); sequence "
                     "models: classes per sequence (their model_config's classes).")
flags.DEFINE_integer("shots", _DEFAULTS.shots, "Support examples per class (K).")
flags.DEFINE_integer("queries", _DEFAULTS.queries, "Query examples per class (Q).")
flags.DEFINE_integer("instances", _DEFAULTS.instances, "Sequence models (mann, "
                     "sequence_lstm): examples of each class per sequence.")
flags.DEFINE_integer("episodes_per_step", _DEFAULTS.episodes_per_step,
                     "Episodes (or sequences) per optimizer step (batched).")
flags.DEFINE_integer("pairs", _DEFAULTS.pairs, "Pair-trained models (siamese): pairs per "
                     "step; each step counts as one episode.")
flags.DEFINE_bool("distort", _DEFAULTS.distort, "Random distortions of the training images: "
                  "pairs get Koch et al.'s affine maps, sequences Santoro et al.'s rotations "
                  "and translations.")
flags.DEFINE_integer("episodes", _DEFAULTS.episodes, "Total training episodes.")
flags.DEFINE_integer("episodes_per_epoch", _DEFAULTS.episodes_per_epoch,
                     "Episodes between checkpoints and log lines.")
flags.DEFINE_enum("optimizer", _DEFAULTS.optimizer, ["adam", "sgd"], "Outer optimizer (sgd "
                  "with learning rate epsilon is Reptile's update).")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Initial learning rate.")
flags.DEFINE_integer("lr_decay_every", _DEFAULTS.lr_decay_every,
                     "Multiply the learning rate by --lr_decay_rate every this many episodes.")
flags.DEFINE_float("lr_decay_rate", _DEFAULTS.lr_decay_rate, "Learning-rate decay factor.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Episode stream seed.")
flags.DEFINE_string("init_from", _DEFAULTS.init_from, "A training directory whose final "
                    "weights initialise this run (fine-tuning); the optimizer starts fresh.")
flags.DEFINE_string("embedding_from", _DEFAULTS.embedding_from, "A training directory (or "
                    "zoo/<name>) whose embedding weights start this run; other layers fresh.")
flags.DEFINE_bool("rotations", _DEFAULTS.rotations, "Lake split: add each training character "
                  "rotated by 90/180/270 degrees as new classes.")
flags.DEFINE_bool("within_alphabet", _DEFAULTS.within_alphabet, "Draw each training "
                  "episode's classes (pair-trained: each negative pair) from a single alphabet "
                  "(as Lake's test episodes).")
flags.DEFINE_bool("freeze_embedding", _DEFAULTS.freeze_embedding, "Train every layer but "
                  "the embedding (e.g. a head on --embedding_from's features).")
# Meta-learning arguments of MAML-family models, merged into --model_config.
META_FLAGS = {"inner_learning_rate": "inner_learning_rate", "inner_steps": "train_inner_steps",
              "test_inner_steps": "test_inner_steps", "first_order": "first_order"}
flags.DEFINE_float("inner_learning_rate", None, "MAML family: inner-loop learning rate alpha.")
flags.DEFINE_integer("inner_steps", None, "MAML family: inner steps while meta-training.")
flags.DEFINE_integer("test_inner_steps", None, "MAML family: inner steps at evaluation.")
flags.DEFINE_bool("first_order", None, "MAML: drop the second-order terms (first-order MAML).")
flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute strategy: "
                  "one device, every local GPU, or every worker of $TF_CONFIG.")
flags.DEFINE_enum("dtype_policy", _DEFAULTS.dtype_policy, list(training.DTYPE_POLICIES),
                  "Compute precision while training: mixed_bfloat16 is Keras mixed precision "
                  "(bf16 compute, float32 weights; evaluation and export stay float32).")
flags.DEFINE_integer("verbose", 1, "Keras fit verbosity (1 progress bar, 2 one line/epoch).")


def main(argv):
    del argv
    strategy = training.make_strategy(FLAGS.strategy)  # before any other TensorFlow op
    model_config = json.loads(FLAGS.model_config)
    split, subset = datasets.default_split(FLAGS.dataset, FLAGS.split)
    for flag, key in META_FLAGS.items():
        value = getattr(FLAGS, flag)
        if value is not None:
            if key in model_config and model_config[key] != value:
                raise app.UsageError(f"--{flag}={value} contradicts --model_config {key}")
            model_config[key] = value
    config = training.TrainConfig(
        model=FLAGS.model, model_config=model_config,
        dataset=FLAGS.dataset, channels=int(FLAGS.channels or 0), split=split,
        subset=FLAGS.subset or subset,
        rotations=FLAGS.rotations, ways=FLAGS.ways, shots=FLAGS.shots, queries=FLAGS.queries,
        within_alphabet=FLAGS.within_alphabet, episodes_per_step=FLAGS.episodes_per_step,
        instances=FLAGS.instances, pairs=FLAGS.pairs, distort=FLAGS.distort,
        episodes=FLAGS.episodes, episodes_per_epoch=FLAGS.episodes_per_epoch,
        optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
        lr_decay_every=FLAGS.lr_decay_every,
        lr_decay_rate=FLAGS.lr_decay_rate, seed=FLAGS.seed, init_from=FLAGS.init_from,
        embedding_from=FLAGS.embedding_from, freeze_embedding=FLAGS.freeze_embedding,
        dtype_policy=FLAGS.dtype_policy)
    training.train(config, FLAGS.model_dir, data_source=FLAGS.data_dir, verbose=FLAGS.verbose,
                   strategy=strategy)


if __name__ == "__main__":
    app.run(main)
