"""CIFAR-FS and FC100: few-shot splits of CIFAR-100's classes, from a local copy.

  * CIFAR-FS (Bertinetto et al. 2019): 64 / 16 / 20 fine classes (splits/cifar_fs).
  * FC100 (Oreshkin et al. 2018): 12 / 4 / 4 superclasses (splits/fc100), each subset with
    every fine class of its superclasses: 60 / 20 / 20 classes, split by superclass so that
    test classes are far from the training ones.

Both use all 600 images of a class (CIFAR-100's train and test images together), read from:

  * the CIFAR-100 python archive: a folder holding cifar-100-python/{train,test,meta}, the
    cifar-100-python/ folder itself, or a folder holding cifar-100-python.tar.gz as
    downloaded. The pickles are read through the restricted unpickler (`safe_pickle`).
  * TFDS `cifar100` (source "tfds"), from an already prepared TFDS data_dir; this path
    never downloads either.

Classes carry their CIFAR-100 superclass as group (within-superclass episodes).
"""

from __future__ import annotations

import pathlib
import tarfile

import numpy as np

from keras_fewshot.data import benchmarks, photos, safe_pickle
from keras_fewshot.data.labelled import LabelledImages

ARCHIVE = "cifar-100-python"
PARTS = ("train", "test", "meta")
SUPERCLASSES = "fc100"  # data sets whose lists name superclasses
FINE_PER_SUPERCLASS = 5



def _archive_files(root: pathlib.Path):
    """{part: (bytes, description)} of the CIFAR-100 python archive in or at `root`."""
    for folder in (root / ARCHIVE, root):
        if all((folder / part).is_file() for part in PARTS):
            return {part: ((folder / part).read_bytes(), str(folder / part)) for part in PARTS}
    tar_path = root / f"{ARCHIVE}.tar.gz"
    if tar_path.is_file():
        try:
            with tarfile.open(tar_path, "r:gz") as tar:
                out = {}
                for part in PARTS:
                    member = tar.extractfile(f"{ARCHIVE}/{part}")
                    out[part] = (member.read(), f"{tar_path}:{ARCHIVE}/{part}")
                return out
        except (tarfile.TarError, KeyError, OSError, EOFError) as error:
            raise ValueError(f"{tar_path} is not a readable CIFAR-100 python archive: "
                             f"{error}") from None
    raise FileNotFoundError(
        f"No CIFAR-100 python archive in {root}: expected {ARCHIVE}/{{train,test,meta}}, "
        f"those three files in {root} itself, or {ARCHIVE}.tar.gz")


def _pickled_dict(blob, where, keys):
    data = safe_pickle.loads(blob, source=where)
    if not isinstance(data, dict):
        raise ValueError(f"{where} should hold a dict, got {type(data).__name__}")
    data = {safe_pickle.text(k): v for k, v in data.items()}
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{where} lacks {missing} (it has {sorted(map(str, data))}): not "
                         "the CIFAR-100 python archive")
    return data


def _names(values, count, where, key):
    names = ([safe_pickle.text(v) for v in values] if isinstance(values, (list, tuple))
             else None)
    if names is None or len(names) != count or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: {key!r} should list {count} names")
    return names


def read_archive(root):
    """(images uint8 [60000, 32, 32, 3], fine labels, coarse labels, fine names, coarse
    names) of the CIFAR-100 python archive (train images, then test images)."""
    files = _archive_files(pathlib.Path(root).expanduser())
    meta_blob, meta_where = files["meta"]
    meta = _pickled_dict(meta_blob, meta_where, ("fine_label_names", "coarse_label_names"))
    fine_names = _names(meta["fine_label_names"], 100, meta_where, "fine_label_names")
    coarse_names = _names(meta["coarse_label_names"], 20, meta_where, "coarse_label_names")
    images, fine, coarse = [], [], []
    for part in ("train", "test"):
        blob, where = files[part]
        data = _pickled_dict(blob, where, ("data", "fine_labels", "coarse_labels"))
        pixels = data["data"]
        if (not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8
                or pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32):
            got = (f"{pixels.dtype} {list(pixels.shape)}" if isinstance(pixels, np.ndarray)
                   else type(pixels).__name__)
            raise ValueError(f"{where}: 'data' should be uint8 [N, 3072] (32x32 RGB, channel "
                             f"planes), got {got}")
        labels = [np.asarray(data[key]) for key in ("fine_labels", "coarse_labels")]
        for key, values, top in zip(("fine_labels", "coarse_labels"), labels, (100, 20)):
            if (values.shape != (len(pixels),) or not np.issubdtype(values.dtype, np.integer)
                    or (len(values) and (values.min() < 0 or values.max() >= top))):
                raise ValueError(f"{where}: {key!r} should hold one integer in [0, {top}) per "
                                 f"image ({len(pixels)}), got {values.dtype} "
                                 f"{list(values.shape)}")
        images.append(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        fine.append(labels[0])
        coarse.append(labels[1])
    return (np.concatenate(images), np.concatenate(fine), np.concatenate(coarse), fine_names,
            coarse_names)


def read_tfds(data_dir=None):
    """What `read_archive` returns, from TFDS `cifar100` prepared in `data_dir`."""
    import tensorflow_datasets as tfds  # imported lazily: only this source needs it

    builder = tfds.builder("cifar100", data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS cifar100 is not prepared in {builder.data_dir}; the few-shot loaders never "
            "download: prepare it with tfds (tfds.builder('cifar100').download_and_prepare()) "
            "or point to the CIFAR-100 python archive")
    ds = builder.as_dataset(split="train+test", shuffle_files=False).batch(4096)
    images, fine, coarse = [], [], []
    for example in ds.as_numpy_iterator():
        images.append(example["image"])
        fine.append(example["label"])
        coarse.append(example["coarse_label"])
    features = builder.info.features
    return (np.concatenate(images), np.concatenate(fine), np.concatenate(coarse),
            list(features["label"].names), list(features["coarse_label"].names))


def select(name, subset, images, fine, coarse, fine_names, coarse_names, where):
    """The classes `name`'s packaged list puts in `subset` (raw images, relabelled)."""
    listed = benchmarks.read_list(name, subset)
    if name == SUPERCLASSES:
        benchmarks.missing_classes(listed, coarse_names, f"{where} (superclasses)")
        classes = []
        for superclass in listed:
            members = np.unique(fine[coarse == coarse_names.index(superclass)])
            if len(members) != FINE_PER_SUPERCLASS:
                raise ValueError(f"{where}: superclass {superclass} has {len(members)} classes "
                                 f"with images, CIFAR-100 has {FINE_PER_SUPERCLASS}")
            classes.extend(members.tolist())
    else:
        benchmarks.missing_classes(listed, fine_names, f"{where} (class names)")
        classes = [fine_names.index(c) for c in listed]
        benchmarks.missing_classes([fine_names[c] for c in classes],
                                   [fine_names[c] for c in np.unique(fine)],
                                   f"{where} (images)")
    relabel = np.full(len(fine_names), -1, np.int64)
    relabel[classes] = np.arange(len(classes))
    keep = relabel[fine] >= 0
    groups = np.zeros(len(classes), np.int32)
    groups[relabel[fine[keep]]] = coarse[keep]
    return (images[keep], relabel[fine[keep]].astype(np.int32),
            tuple(fine_names[c] for c in classes), groups)


def load(name, root, subset, image_size=32, channels=3, data_dir=None) -> LabelledImages:
    """The `subset` of CIFAR-FS (name "cifar_fs") or FC100 ("fc100") from the CIFAR-100
    archive in `root`, or from TFDS when root is "tfds" (data_dir: its TFDS data_dir)."""
    if name not in ("cifar_fs", SUPERCLASSES):
        raise ValueError(f"Unknown CIFAR-100 few-shot split {name!r}; expected 'cifar_fs' or "
                         f"'{SUPERCLASSES}'")
    benchmarks.check_subset(name, subset)
    if str(root) == "tfds":
        raw, where = read_tfds(data_dir), "TFDS cifar100"
    else:
        raw, where = read_archive(root), f"the CIFAR-100 archive in {root}"
    images, labels, names, groups = select(name, subset, *raw, where)
    images = photos.resize_array(images, image_size, channels, source=where)
    return LabelledImages(images, labels, names, groups)
