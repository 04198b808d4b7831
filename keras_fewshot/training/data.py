"""What a run trains on: its data set's classes at the model's resolution and with the
channels its preprocessor takes (`load_data`), and the stream of episodes, pairs, label
sequences or regression tasks built from them (`training_dataset`), from any element on:
element i depends only on (seed, i). `data_preprocessor` names the preprocessor a data set's
images want (Omniglot's ink, or RGB for colour images)."""

from keras_fewshot.data import load_dataset
from keras_fewshot.data.datasets import GENERATED, NATURAL, OMNIGLOT, parse_dataset
from keras_fewshot.data.images import folder_classes, read_images
from keras_fewshot.training.config import TrainConfig, model_default

INK, RGB = "ink", "rgb"  # the preprocessors by name: Omniglot's ink, colour images


def data_preprocessor(dataset: str, channels=0, source=None):
    """The preprocessor `dataset`'s images want: "ink" for Omniglot's drawings, "rgb" for
    the natural-image benchmarks, and for folder or TFDS images with 3 channels (`channels`
    when it is 1 or 3, else as in the files: a folder's first image, the TFDS image
    feature); None for regression tasks (sinusoid), which have no images."""
    kind, argument = parse_dataset(dataset)
    if kind in GENERATED:
        return None
    if kind == OMNIGLOT:
        return INK
    if kind in NATURAL:
        return RGB
    if not channels:
        channels = _file_channels(kind, argument, source)
    return RGB if channels == 3 else INK


def _file_channels(kind, argument, source):
    """The channel count of a folder's first image, or of a TFDS dataset's image feature
    (None when TFDS does not fix it)."""
    if kind == "folder":
        _, files = folder_classes(argument)
        return int(read_images(files[0][:1]).shape[-1])
    import tensorflow_datasets as tfds  # imported lazily: only this source needs it
    builder = tfds.builder(argument.partition("@")[0], data_dir=source)
    image_key = (builder.info.supervised_keys or ("image", "label"))[0]
    return builder.info.features[image_key].shape[-1]


def run_preprocessor(config: TrainConfig):
    """The name of the preprocessor the run's model applies: model_config's, else the
    model's default ("ink" for a model without the argument); None for another spec."""
    spec = config.model_config.get("preprocessor", model_default(config.model, "preprocessor"))
    if spec is None:
        return INK
    if isinstance(spec, dict):  # a serialised layer
        return {"InkPreprocessing": INK, "RGBPreprocessing": RGB}.get(spec.get("class_name"))
    return spec if isinstance(spec, str) else None


def load_data(config: TrainConfig, subset: str, source=None):
    """`subset` of the run's dataset and split at the model's resolution; the rotation
    augmentation applies to the training subset only. Folder and TFDS images keep their
    colour for an RGB preprocessor (Omniglot's ink takes gray ones). None for generated
    tasks (sinusoid)."""
    if config.dataset in GENERATED:
        return None
    return load_dataset(config.dataset, config.split, subset, source=source,
                        image_size=config.image_size, channels=config.channels or None,
                        rotations=config.rotations and subset == config.subset,
                        keep_channels=run_preprocessor(config) == RGB)


def training_dataset(config: TrainConfig, model, data, start=0):
    """The stream `model` trains on from element `start`: its task kind's (episodes,
    same/different pairs, label sequences or regression tasks; see `keras_fewshot.tasks`)."""
    return model.task_kind.training_stream(config, model, data, start)
