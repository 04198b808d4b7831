"""Your own labelled images: a folder with one sub-folder per class, or a TFDS dataset.

Both readers return `LabelledImages` of raw uint8 pixels [M, H, W, C]. The size and the
channels come from the data, or from the `image_size` and `channels` arguments:

  * channels=None: every image keeps its own channels, which must be 1 or 3 and the same
    for all (mixed counts are an error naming two files); channels=1 or 3 converts each
    image (grayscale is the channel mean, as the models compute it; an alpha channel is
    dropped).
  * image_size=None: every image keeps its size, which must be the same for all;
    image_size=s resizes each to s x s (area interpolation, as the models do).

A folder holds one sub-folder per class (the class name is the folder name, classes in
sorted order); every other file in a class folder must be an image TensorFlow decodes (PNG,
JPEG, GIF, BMP); hidden files are skipped and files beside the class folders are ignored.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf

from keras_fewshot.data.labelled import LabelledImages

CHANNELS = (1, 3)  # what the models take


def _convert(image, channels, image_size):
    """uint8 [H, W, c] (c known) -> uint8 [H', W', channels or c]."""
    c = image.shape[-1]
    if channels is not None and c != channels:
        if c in (2, 4):  # drop the alpha channel
            image, c = image[..., :c - 1], c - 1
        if channels == 1 and c == 3:
            image = tf.cast(tf.round(tf.reduce_mean(tf.cast(image, tf.float32), axis=-1,
                                                    keepdims=True)), tf.uint8)
        elif channels == 3 and c == 1:
            image = tf.tile(image, [1, 1, 3])
    if image_size:
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size),
                                method="area")
        image = tf.cast(tf.round(image), tf.uint8)
    return image


def _check_arguments(channels, image_size):
    if channels is not None and channels not in CHANNELS:
        raise ValueError(f"channels must be 1, 3 or None (as in the files), got {channels}")
    if image_size is not None and int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")


def _decode(path: pathlib.Path):
    try:
        image = tf.io.decode_image(path.read_bytes(), channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, OSError) as error:
        message = getattr(error, "message", str(error))
        raise ValueError(f"Cannot read {path} as an image (PNG, JPEG, GIF or BMP): "
                         f"{message.splitlines()[0] if message else 'unreadable'}") from None
    return image


def read_images(paths, image_size=None, channels=None) -> np.ndarray:
    """uint8 [M, H, W, C] of image files, checked and converted as the module describes."""
    _check_arguments(channels, image_size)
    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise ValueError("No image files given")
    images, first_channels, first_size = [], None, None  # (value, the file that had it)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"Image file {path} does not exist")
        image = _decode(path)
        c = int(image.shape[-1])
        if channels is None:
            if c not in CHANNELS:
                raise ValueError(f"{path} has {c} channels ({'gray' if c == 2 else 'RGB'} "
                                 "with alpha); the models take 1 or 3: pass channels=1 or 3 "
                                 "to convert every image")
            first_channels = first_channels or (c, path)
            if c != first_channels[0]:
                raise ValueError(f"Mixed channel counts: {first_channels[1]} has "
                                 f"{first_channels[0]}, {path} has {c}; pass channels=1 or 3 "
                                 "to convert every image")
        image = _convert(image, channels, image_size)
        if not image_size:
            size = tuple(image.shape[:2])
            first_size = first_size or (size, path)
            if size != first_size[0]:
                (h, w), other = first_size
                raise ValueError(f"Images differ in size: {other} is {h}x{w}, {path} is "
                                 f"{size[0]}x{size[1]}; pass image_size to resize every image")
        images.append(image.numpy())
    return np.stack(images)


def folder_classes(root):
    """(class names, [[image paths] per class]) of a folder with one sub-folder per class."""
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class sub-folders: the layout is "
                         f"{root}/<class name>/<image files>")
    names, files = [], []
    for folder in class_dirs:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        nested = [p for p in entries if p.is_dir()]
        if nested:
            raise ValueError(f"{nested[0]} is a folder inside the class folder {folder}; a "
                             "class folder holds image files only")
        if not entries:
            raise ValueError(f"Class folder {folder} has no images")
        names.append(folder.name)
        files.append(entries)
    return tuple(names), files


def read_image_folder(root, image_size=None, channels=None) -> LabelledImages:
    """Every image of a folder with one sub-folder per class, labelled by its folder."""
    _check_arguments(channels, image_size)
    names, files = folder_classes(root)
    labels = np.repeat(np.arange(len(names), dtype=np.int32), [len(f) for f in files])
    images = read_images([p for f in files for p in f], image_size, channels)
    return LabelledImages(images, labels, names, np.zeros(len(names), np.int32))


def read_tfds(name, split="all", data_dir=None, image_size=None, channels=None,
              download=True) -> LabelledImages:
    """Every example of a TFDS image-classification dataset (its supervised image and
    ClassLabel features; classes without examples in `split` left out).

    Args:
      name: the TFDS name, e.g. "mnist" or "cifar10:3.0.2".
      split: TFDS split expression; "all" reads every split.
      data_dir: TFDS data directory; a dataset prepared there is read without network.
      download: let TFDS download and prepare the dataset when it is not in data_dir.
    """
    _check_arguments(channels, image_size)
    import tensorflow_datasets as tfds  # imported lazily: only this source needs it

    builder = tfds.builder(name, data_dir=data_dir)
    image_key, label_key = (builder.info.supervised_keys or ("image", "label"))[:2]
    features = dict(builder.info.features.items())
    if not (isinstance(image_key, str) and isinstance(features.get(image_key),
                                                      tfds.features.Image)
            and isinstance(features.get(label_key), tfds.features.ClassLabel)):
        raise ValueError(f"tfds:{name} is not an image-classification dataset: expected an "
                         f"Image and a ClassLabel feature (supervised keys "
                         f"{builder.info.supervised_keys}, features {sorted(features.keys())})")
    height, width, c = features[image_key].shape
    if channels is None and c not in CHANNELS:
        raise ValueError(f"tfds:{name} images have {c} channels; the models take 1 or 3: "
                         "pass channels=1 or 3")
    if not image_size and (height is None or width is None):
        raise ValueError(f"tfds:{name} images differ in size (shape {height}x{width}); pass "
                         "image_size to resize every image")
    if download:
        builder.download_and_prepare()
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda e: (_convert(e[image_key], channels, image_size), e[label_key]),
                num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x), labels.append(y)
    if not images:
        raise ValueError(f"tfds:{name} split {split!r} has no examples")
    present, labels = np.unique(np.concatenate(labels), return_inverse=True)
    names = features[label_key].names
    return LabelledImages(np.concatenate(images), labels.astype(np.int32),
                          tuple(names[i] for i in present), np.zeros(len(present), np.int32))
