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

Image models take their backbone (--backbone=conv4|resnet12), input resolution
(--image_size) and preprocessor (--preprocessor=ink|rgb) from flags of their own too, also
written into model_config. The preprocessor follows the data unless --preprocessor says
otherwise: Omniglot's ink for omniglot, RGB (colour kept) for the natural-image benchmarks and
for folder or TFDS images with 3 channels (or --channels=3); a benchmark's images default to
its protocol's size (84 or 32):

    keras-fewshot train --model=protonet --backbone=resnet12 --dataset=folder:my_photos \
        --split=random:train=0.8,test=0.2 --ways=5 --shots=5 --image_size=84 \
        --model_dir=runs/my_photos

--strategy=mirrored trains on every local GPU, --strategy=multi_worker on every worker of the
cluster described by $TF_CONFIG (run the same command on each; --model_dir on a file system
they share); each step's --episodes_per_step episodes (sequences, tasks; --pairs pairs for
--model=siamese) are split over the replicas. Every --model trains this way.
"""

from absl import app, flags

from keras_fewshot import training
from keras_fewshot.backbones import BACKBONES
from keras_fewshot.cli import _flags
from keras_fewshot.data import benchmarks, datasets
from keras_fewshot.layers.preprocessing import PREPROCESSORS
from keras_fewshot.training.config import model_default
from keras_fewshot.training.data import data_preprocessor

# Model arguments with flags of their own, merged into --model_config: the MAML family's
# meta-learning arguments, and an image model's backbone, resolution and preprocessor.
META_FLAGS = {"inner_learning_rate": "inner_learning_rate", "inner_steps": "train_inner_steps",
              "test_inner_steps": "test_inner_steps", "first_order": "first_order"}
IMAGE_FLAGS = {"backbone": "backbone", "image_size": "image_size",
               "preprocessor": "preprocessor"}


def define_flags(flag_values):
    """The run's settings, one flag per TrainConfig field (name, type, default and help as
    the field defines them), and the flags that are not settings of the run."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model_dir", None, "Training directory (config, checkpoints, logs).",
                        required=True, **fv)
    _flags.require_directory_or_new("model_dir", flag_values)
    flags.DEFINE_string("data_dir", None, "Omniglot archives or folders (default "
                        "$KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS), or a TFDS data_dir.", **fv)
    _flags.define_dataclass_flags(training.TrainConfig, flag_values, __name__)
    flags.DEFINE_float("inner_learning_rate", None, "MAML family: inner-loop learning rate "
                       "alpha.", **fv)
    flags.DEFINE_integer("inner_steps", None, "MAML family: inner steps while meta-training.",
                         **fv)
    flags.DEFINE_integer("test_inner_steps", None, "MAML family: inner steps at evaluation.",
                         **fv)
    flags.DEFINE_bool("first_order", None, "MAML: drop the second-order terms (first-order "
                      "MAML).", **fv)
    flags.DEFINE_enum("backbone", None, sorted(BACKBONES), "Image models: the backbone "
                      "(default: the model's, conv4).", **fv)
    flags.DEFINE_integer("image_size", None, "Image models: the side in pixels images are "
                         "resized to (default: a benchmark's protocol size, else the model's: "
                         "28 for Omniglot).", lower_bound=1, **fv)
    flags.DEFINE_enum("preprocessor", None, sorted(PREPROCESSORS), "Image models: raw "
                      "pixels to model input, Omniglot's ink or rgb (resize, scale, "
                      "normalise per channel; colour kept). Default: follows the data (ink for "
                      "omniglot; rgb for the benchmarks and 3-channel folder or TFDS images).",
                      **fv)
    flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute "
                      "strategy: one device, every local GPU, or every worker of $TF_CONFIG.",
                      **fv)
    flags.DEFINE_integer("verbose", 1, "Keras fit verbosity (1 progress bar, 2 one "
                         "line/epoch).", **fv)


def config_from_flags(fv) -> training.TrainConfig:
    """The TrainConfig the parsed flags `fv` describe (what config.json will hold)."""
    values = _flags.dataclass_values(training.TrainConfig, fv)
    model_config = dict(fv.model_config)
    for flag, key in {**META_FLAGS, **IMAGE_FLAGS}.items():
        value = fv[flag].value
        if value is not None:
            if key in model_config and model_config[key] != value:
                raise app.UsageError(f"--{flag}={value} contradicts --model_config {key}")
            model_config[key] = value
    _image_defaults(model_config, fv)
    split, subset = datasets.default_split(fv.dataset, fv.split)
    values.update(model_config=model_config, split=split, subset=fv.subset or subset)
    return training.TrainConfig(**values)


def _image_defaults(model_config, fv):
    """An image model's arguments the data decides when neither --model_config nor a flag
    says: the preprocessor (`data_preprocessor`) and a benchmark's protocol image size. The
    --backbone, --image_size and --preprocessor values (given or decided) are written only
    where they are not the model's defaults, so that Omniglot runs' configs stay as before."""
    kind = datasets.parse_dataset(fv.dataset)[0]
    decided = {"image_size": benchmarks.PROTOCOLS.get(kind, {}).get("image_size")}
    if fv.preprocessor is None and model_default(fv.model, "preprocessor") is not None:
        decided["preprocessor"] = data_preprocessor(fv.dataset, int(fv.channels or 0),
                                                    fv.data_dir)
    for flag, key in IMAGE_FLAGS.items():
        default = model_default(fv.model, key)
        if key in fv.model_config or default is None:
            continue  # the user's JSON as given; a model without the argument refuses a flag
        value = model_config.get(key, decided.get(flag))
        model_config.pop(key, None)
        if value is not None and value != default:
            model_config[key] = value


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    strategy = training.make_strategy(FLAGS.strategy)  # before any other TensorFlow op
    config = config_from_flags(FLAGS)
    training.train(config, FLAGS.model_dir, data_source=FLAGS.data_dir, verbose=FLAGS.verbose,
                   strategy=strategy)
