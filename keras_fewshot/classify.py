"""Classify your own images with a few-shot model: a support folder, query folders or files.

    result = classify(model, "my_support", "my_queries")   # my_support/<class>/<images>
    result.class_names[result.predictions[0]], result.probabilities[0].max()

Queries are image files, a folder of images (truth unknown), or a folder with one
sub-folder per class named as in the support folder (truth known: `accuracy`). Images keep
their size and channels unless `image_size` / `channels` say otherwise (see
`keras_fewshot.data.images`); support and query may differ in size.

`sample_dir()` is a small sample of Omniglot test-split characters shipped in the package
(`support/` and `query/`, one sub-folder per character), so this works with no data set.
"""

from __future__ import annotations

import dataclasses
import pathlib

import keras
import numpy as np

from keras_fewshot.data.images import folder_classes, read_image_folder, read_images
from keras_fewshot.data.labelled import LabelledImages

SAMPLE_DIR = pathlib.Path(__file__).parent / "data" / "omniglot_sample"


def sample_dir() -> pathlib.Path:
    """The packaged Omniglot sample: support/ (1 drawing per character), query/ (4 more)."""
    return SAMPLE_DIR


def probabilities(model, episode) -> np.ndarray:
    """softmax over classes of the model's logits for an episode, as the serving signature."""
    logits = model(episode, training=False)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


@dataclasses.dataclass(frozen=True)
class Classification:
    """The support set, the queries and the model's class probabilities [Q, N] for them."""
    support: LabelledImages
    query_images: np.ndarray
    query_paths: tuple
    query_labels: np.ndarray | None  # the true classes, when the queries came in class folders
    probabilities: np.ndarray

    @property
    def class_names(self):
        return self.support.class_names

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(-1)

    @property
    def accuracy(self):
        if self.query_labels is None:
            return None
        return float((self.predictions == self.query_labels).mean())


def read_queries(query, class_names, image_size=None, channels=None):
    """(images, paths, true labels or None) of `query`: one path or a list of paths, each an
    image file or a folder (of images, or of class sub-folders named as in `class_names`)."""
    paths = [pathlib.Path(q) for q in ([query] if isinstance(query, (str, pathlib.Path))
                                       else query)]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if entries and all(p.is_dir() for p in entries):
            names, files = folder_classes(folder)
            unknown = [n for n in names if n not in class_names]
            if unknown:
                raise ValueError(f"Query classes {unknown} of {folder} are not in the support "
                                 f"set (its classes: {list(class_names)})")
            files_flat = [p for f in files for p in f]
            labels = np.repeat([class_names.index(n) for n in names], [len(f) for f in files])
            return read_images(files_flat, image_size, channels), tuple(files_flat), labels
        if any(p.is_dir() for p in entries):
            raise ValueError(f"{folder} mixes files and folders: give a folder of query images, "
                             "or one with a sub-folder per class (named as the support's)")
        if not entries:
            raise ValueError(f"Query folder {folder} is empty")
        paths = entries
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give query image files, or one folder")
    return read_images(paths, image_size, channels), tuple(paths), None


def classify(model, support_dir, query, image_size=None, channels=None) -> Classification:
    """The model's class probabilities for each query, given the support folder."""
    support = read_image_folder(support_dir, image_size=image_size, channels=channels)
    images, paths, labels = read_queries(query, support.class_names, image_size, channels)
    episode = {"support_images": support.images, "support_labels": support.labels,
               "query_images": images}
    return Classification(support, images, paths, labels, probabilities(model, episode))
