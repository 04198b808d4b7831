"""The --model / --model_dir pair shared by the tools that read a trained model."""

from absl import flags

import keras_fewshot
from keras_fewshot import training, zoo

flags.DEFINE_string("model", None, "Zoo model name (see keras_fewshot.list_models()).")
flags.DEFINE_string("model_dir", None, "A training directory (tools/train.py --model_dir).")
flags.mark_flags_as_mutual_exclusive(["model", "model_dir"], required=True)


def load_model():
    """The model chosen by --model (zoo, hash-checked) or --model_dir (training directory)."""
    if flags.FLAGS.model:
        return keras_fewshot.load(flags.FLAGS.model)
    return training.model_from_dir(flags.FLAGS.model_dir)


def default_protocol():
    """The protocol the chosen model is measured by: its zoo entry's, else its split's."""
    if flags.FLAGS.model:
        return zoo.get_entry(flags.FLAGS.model).protocol
    config = training.read_config(flags.FLAGS.model_dir)
    if config.dataset in ("omniglot", "sinusoid"):
        return "sinusoid" if config.dataset == "sinusoid" else config.split
    return "vinyals"  # the settings a model trained on other data is measured in by default


def training_config():
    """The TrainConfig of the chosen model (its zoo folder's or its training directory's)."""
    if flags.FLAGS.model:
        return training.read_config(zoo.get_entry(flags.FLAGS.model).directory)
    return training.read_config(flags.FLAGS.model_dir)
