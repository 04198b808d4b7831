"""Trains a model on episodes; resumes automatically when re-run with the same --model_dir.

    python tools/train.py --model=protonet --ways=60 --shots=5 --queries=5 \
        --episodes=10000 --model_dir=runs/protonet_omniglot --data_dir=../shared/data/omniglot

Writes config.json, checkpoints/, history.csv, logs/ (TensorBoard) and model.weights.h5 in
--model_dir (see keras_fewshot.training).
"""

import json

from absl import app, flags

from keras_fewshot import training

_DEFAULTS = training.TrainConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Training directory (config, checkpoints, logs).",
                    required=True)
flags.DEFINE_string("data_dir", None, "Omniglot archives or folders; default "
                    "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS.")
flags.DEFINE_string("model", _DEFAULTS.model, "Model name (keras_fewshot.models.MODELS).")
flags.DEFINE_string("model_config", "{}", "JSON constructor arguments of the model.")
flags.DEFINE_string("dataset", _DEFAULTS.dataset, "Dataset.")
flags.DEFINE_enum("split", _DEFAULTS.split, ["vinyals", "lake"], "Class split.")
flags.DEFINE_string("subset", _DEFAULTS.subset,
                    "Training subset: train/val/trainval (vinyals) or background (lake).")
flags.DEFINE_integer("ways", _DEFAULTS.ways, "Classes per training episode (N).")
flags.DEFINE_integer("shots", _DEFAULTS.shots, "Support examples per class (K).")
flags.DEFINE_integer("queries", _DEFAULTS.queries, "Query examples per class (Q).")
flags.DEFINE_integer("episodes_per_step", _DEFAULTS.episodes_per_step,
                     "Episodes per optimizer step (batched episodes).")
flags.DEFINE_integer("pairs", _DEFAULTS.pairs, "Pair-trained models (siamese): pairs per "
                     "step; each step counts as one episode.")
flags.DEFINE_bool("distort", _DEFAULTS.distort, "Pair-trained models: random affine "
                  "distortions (Koch et al.).")
flags.DEFINE_integer("episodes", _DEFAULTS.episodes, "Total training episodes.")
flags.DEFINE_integer("episodes_per_epoch", _DEFAULTS.episodes_per_epoch,
                     "Episodes between checkpoints and log lines.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Initial Adam learning rate.")
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
flags.DEFINE_integer("verbose", 1, "Keras fit verbosity (1 progress bar, 2 one line/epoch).")


def main(argv):
    del argv
    config = training.TrainConfig(
        model=FLAGS.model, model_config=json.loads(FLAGS.model_config),
        dataset=FLAGS.dataset, split=FLAGS.split, subset=FLAGS.subset,
        rotations=FLAGS.rotations, ways=FLAGS.ways, shots=FLAGS.shots, queries=FLAGS.queries,
        within_alphabet=FLAGS.within_alphabet, episodes_per_step=FLAGS.episodes_per_step,
        pairs=FLAGS.pairs, distort=FLAGS.distort,
        episodes=FLAGS.episodes, episodes_per_epoch=FLAGS.episodes_per_epoch,
        learning_rate=FLAGS.learning_rate, lr_decay_every=FLAGS.lr_decay_every,
        lr_decay_rate=FLAGS.lr_decay_rate, seed=FLAGS.seed, init_from=FLAGS.init_from,
        embedding_from=FLAGS.embedding_from, freeze_embedding=FLAGS.freeze_embedding)
    training.train(config, FLAGS.model_dir, data_source=FLAGS.data_dir, verbose=FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
