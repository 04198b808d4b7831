"""mini-ImageNet (Vinyals et al. 2016) with Ravi & Larochelle's split, from a local copy.

Two layouts of a folder DIR are read, never downloaded:

  * Ravi & Larochelle's: DIR/images/ holding the JPEGs the split files name
    (n0153282900000005.jpg ...), and DIR/train.csv, val.csv, test.csv (filename,label).
    When DIR has no CSVs, the packaged ones (splits/mini_imagenet, the same files) are used;
    when it has some, it must have the subset's, and its subsets must not share a class.
  * The widely shared pickle caches DIR/mini-imagenet-cache-{train,val,test}.pkl: a dict
    {"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [indices into image_data]}},
    read through the restricted unpickler (`safe_pickle`: no code runs on load). A cache
    must hold exactly the classes of its subset.

When DIR has both, the images/ folder is read. Images come out RGB (or the channel mean for
channels=1) at image_size x image_size (area interpolation); classes in split-file order.
"""

from __future__ import annotations

import pathlib

import numpy as np

from keras_fewshot.data import benchmarks, photos, safe_pickle
from keras_fewshot.data.labelled import LabelledImages

NAME = "mini_imagenet"
CACHE = "mini-imagenet-cache-{subset}.pkl"


def packaged_csv(subset: str) -> pathlib.Path:
    """The packaged Ravi & Larochelle split file of `subset`."""
    benchmarks.check_subset(NAME, subset)
    return benchmarks.SPLITS_DIR / NAME / f"{subset}.csv"


def split_csv(root: pathlib.Path, subset: str) -> pathlib.Path:
    """root/<subset>.csv when root has split files (checked: subsets disjoint), else the
    packaged one."""
    benchmarks.check_subset(NAME, subset)
    own = {s: root / f"{s}.csv" for s in benchmarks.SUBSETS if (root / f"{s}.csv").is_file()}
    if not own:
        return packaged_csv(subset)
    if subset not in own:
        raise FileNotFoundError(f"{root} has split files {sorted(p.name for p in own.values())}"
                                f" but no {subset}.csv; give all three, or none to use the "
                                "packaged Ravi & Larochelle split")
    seen = {}
    for name, path in own.items():
        for label in benchmarks.ordered_classes(label for _, label in benchmarks.read_csv(path)):
            if label in seen:
                raise ValueError(f"Class {label} is in both {seen[label].name} and {path.name} "
                                 f"of {root}: the subsets of a split must not share classes")
            seen[label] = path
    return own[subset]


def read_folder(root, subset: str, image_size=84, channels=3) -> LabelledImages:
    """The subset's images from Ravi & Larochelle's layout (see the module)."""
    root = pathlib.Path(root).expanduser()
    csv_path = split_csv(root, subset)
    pairs = benchmarks.read_csv(csv_path)
    classes = benchmarks.ordered_classes(label for _, label in pairs)
    index = {name: i for i, name in enumerate(classes)}
    paths = [root / "images" / filename for filename, _ in pairs]
    photos.check_files(paths, str(csv_path))
    images = photos.read_photos(paths, image_size, channels)
    labels = np.asarray([index[label] for _, label in pairs], np.int32)
    return LabelledImages(images, labels, tuple(classes), np.zeros(len(classes), np.int32))



def read_cache(path, subset: str, image_size=84, channels=3) -> LabelledImages:
    """The images of a mini-imagenet-cache-<subset>.pkl (see the module), checked."""
    path = pathlib.Path(path)
    data = safe_pickle.load(path)
    if isinstance(data, dict):
        data = {safe_pickle.text(k): v for k, v in data.items()}
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a mini-ImageNet cache: expected a dict with "
                         f"'image_data' and 'class_dict', got {got}")
    image_data, class_dict = data["image_data"], data["class_dict"]
    if (not isinstance(image_data, np.ndarray) or image_data.dtype != np.uint8
            or image_data.ndim != 4 or image_data.shape[-1] != 3):
        got = (f"{image_data.dtype} {list(image_data.shape)}"
               if isinstance(image_data, np.ndarray) else type(image_data).__name__)
        raise ValueError(f"{path}: 'image_data' should be uint8 RGB images [N, H, W, 3], got "
                         f"{got}")
    if not isinstance(class_dict, dict):
        raise ValueError(f"{path}: 'class_dict' should map class names to image indices, got "
                         f"{type(class_dict).__name__}")
    class_dict = {safe_pickle.text(k): v for k, v in class_dict.items()}
    wanted = benchmarks.ordered_classes(label for _, label in
                                        benchmarks.read_csv(packaged_csv(subset)))
    benchmarks.missing_classes(wanted, class_dict, str(path))
    extra = sorted(set(class_dict) - set(wanted))
    if extra:
        raise ValueError(f"{path} holds classes outside the {subset} subset of the Ravi & "
                         f"Larochelle split: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    owner = np.full(len(image_data), -1)
    indices = []
    for label, name in enumerate(wanted):
        idx = np.asarray(class_dict[name])
        if idx.size == 0:
            raise ValueError(f"{path}: class {name} has no images")
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{path}: the indices of class {name} should be a list of "
                             f"integers, got {idx.dtype} {list(idx.shape)}")
        if idx.min() < 0 or idx.max() >= len(image_data):
            raise ValueError(f"{path}: class {name} has image indices outside "
                             f"[0, {len(image_data)})")
        if np.any(owner[idx] >= 0) or len(np.unique(idx)) != len(idx):
            raise ValueError(f"{path}: an image of class {name} is listed twice")
        owner[idx] = label
        indices.append(idx)
    labels = np.concatenate([np.full(len(i), c, np.int32) for c, i in enumerate(indices)])
    images = photos.resize_array(image_data[np.concatenate(indices)], image_size, channels,
                                 source=str(path))
    return LabelledImages(images, labels, tuple(wanted), np.zeros(len(wanted), np.int32))


def load(root, subset: str, image_size=84, channels=3) -> LabelledImages:
    """The `subset` ("train", "val" or "test") of a local mini-ImageNet copy in `root`."""
    benchmarks.check_subset(NAME, subset)
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"mini-ImageNet folder {root} does not exist")
    if (root / "images").is_dir():
        return read_folder(root, subset, image_size, channels)
    cache = root / CACHE.format(subset=subset)
    if cache.is_file():
        return read_cache(cache, subset, image_size, channels)
    raise FileNotFoundError(
        f"No mini-ImageNet in {root}: expected an images/ folder of the JPEGs the split files "
        f"name (with train.csv, val.csv, test.csv, or the packaged ones), or the cache "
        f"{cache.name}")
