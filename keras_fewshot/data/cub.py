"""CUB-200-2011 birds (Wah et al. 2011) with the class split of Chen et al. 2019, locally.

The split ("A Closer Look at Few-shot Classification"): of the 200 class folders in sorted
order, those at even 0-based index train (100), index 1 mod 4 validate (50) and index 3 mod 4
test (50); the lists ship in splits/cub. Every image of a class is used.

Read, never downloaded, from:
  * the CUB_200_2011/ folder as the archive extracts it: images.txt ("<id> <class
    folder>/<file>.jpg" per line) with images/<class folder>/<file>.jpg and classes.txt
    ("<id> <class folder>"). `root` is that folder or the folder holding it; without
    images.txt, the files of images/<class folder>/ are read.
  * TFDS `caltech_birds2011` (root "tfds"), already prepared in a TFDS data_dir: its label
    is the class number - 1. (Not covered by the tests: no TFDS copy exists here.)

Images are resized to image_size x image_size as a whole (no crop; the aspect ratio is not
kept), RGB (grayscale photos repeated) or the channel mean for channels=1.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf

from keras_fewshot.data import benchmarks, photos
from keras_fewshot.data.labelled import LabelledImages

NAME = "cub"
FOLDER = "CUB_200_2011"


def all_classes():
    """The 200 class folder names, sorted (001.Black_footed_Albatross ...)."""
    return sorted(c for s in benchmarks.SUBSETS for c in benchmarks.read_list(NAME, s))


def _data_folder(root: pathlib.Path) -> pathlib.Path:
    for folder in (root / FOLDER, root):
        if (folder / "images.txt").is_file() or (folder / "images").is_dir():
            return folder
    raise FileNotFoundError(f"No CUB-200-2011 in {root}: expected {FOLDER}/ (images.txt, "
                            "classes.txt, images/<class>/<file>.jpg) in it, or that folder "
                            "itself")


def _numbered_lines(path: pathlib.Path):
    """[(id, value)] of a CUB '<id> <value>' text file."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path} line {number}: expected '<id> <value>', got {line!r}")
        out.append((parts[0], parts[1].strip()))
    return out


def image_files(folder: pathlib.Path):
    """[(class folder, path)] of every image of a CUB_200_2011 folder, and what lists them."""
    listing = folder / "images.txt"
    if listing.is_file():
        files = []
        for _, relative in _numbered_lines(listing):
            parts = pathlib.PurePosixPath(relative).parts
            if len(parts) != 2:
                raise ValueError(f"{listing}: {relative!r} is not '<class folder>/<file>'")
            files.append((parts[0], folder / "images" / parts[0] / parts[1]))
        classes_txt = folder / "classes.txt"
        if classes_txt.is_file():
            known = {name for _, name in _numbered_lines(classes_txt)}
            unknown = sorted({c for c, _ in files} - known)
            if unknown:
                raise ValueError(f"{listing} names class folders {classes_txt} does not list: "
                                 f"{unknown[:5]}")
        return files, str(listing)
    images = folder / "images"
    files = [(d.name, p) for d in sorted(images.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return files, f"the class folders of {images}"


def read_folder(root, subset, image_size=84, channels=3) -> LabelledImages:
    """The subset's images from a CUB_200_2011 folder (see the module)."""
    folder = _data_folder(pathlib.Path(root).expanduser())
    files, listed_in = image_files(folder)
    wanted = benchmarks.read_list(NAME, subset)
    benchmarks.missing_classes(wanted, {c for c, _ in files}, f"CUB-200-2011 in {folder}")
    index = {name: i for i, name in enumerate(wanted)}
    chosen = sorted(((index[c], str(p)) for c, p in files if c in index))
    paths = [p for _, p in chosen]
    photos.check_files(paths, listed_in)
    images = photos.read_photos(paths, image_size, channels)
    labels = np.asarray([c for c, _ in chosen], np.int32)
    return LabelledImages(images, labels, tuple(wanted), np.zeros(len(wanted), np.int32))


def read_tfds(subset, image_size=84, channels=3, data_dir=None) -> LabelledImages:
    """The subset's images from TFDS caltech_birds2011 prepared in `data_dir`."""
    import tensorflow_datasets as tfds  # imported lazily: only this source needs it

    builder = tfds.builder("caltech_birds2011", data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS caltech_birds2011 is not prepared in {builder.data_dir}; the few-shot "
            "loaders never download: prepare it with tfds or point to the CUB_200_2011 folder")
    names = all_classes()
    wanted = benchmarks.read_list(NAME, subset)
    relabel = np.full(len(names), -1, np.int64)
    relabel[[names.index(c) for c in wanted]] = np.arange(len(wanted))
    table = tf.constant(relabel)
    ds = builder.as_dataset(split="train+test", shuffle_files=False)
    ds = ds.filter(lambda e: tf.gather(table, e["label"]) >= 0).map(
        lambda e: (photos.convert(e["image"], image_size, channels),
                   tf.gather(table, e["label"])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x), labels.append(y)
    if not labels:
        raise ValueError(f"TFDS caltech_birds2011 has no images of the {subset} classes")
    labels = np.concatenate(labels).astype(np.int32)
    order = np.argsort(labels, kind="stable")
    benchmarks.missing_classes(wanted, [wanted[i] for i in np.unique(labels)],
                               "TFDS caltech_birds2011")
    return LabelledImages(np.concatenate(images)[order], labels[order], tuple(wanted),
                          np.zeros(len(wanted), np.int32))


def load(root, subset, image_size=84, channels=3, data_dir=None) -> LabelledImages:
    """The `subset` ("train", "val", "test") of CUB-200-2011 with Chen et al.'s split."""
    benchmarks.check_subset(NAME, subset)
    if str(root) == "tfds":
        return read_tfds(subset, image_size, channels, data_dir)
    return read_folder(root, subset, image_size, channels)
