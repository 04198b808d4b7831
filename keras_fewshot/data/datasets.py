"""Every data source by name, and class splits: what training and evaluation load.

Datasets:
  "omniglot"            Omniglot; splits "vinyals" and "lake" (see `omniglot`).
  "sinusoid"            generated regression tasks, no images (see `sinusoid`).
  "folder:PATH"         a folder with one sub-folder per class (see `images`).
  "tfds:NAME[@SPLIT]"   a TFDS image-classification dataset, e.g. "tfds:mnist"; SPLIT is the
                        TFDS split expression read (default "all"; "tfds:omniglot@train+test"
                        leaves out TFDS Omniglot's small1/small2, which repeat train images).

Natural-image benchmarks, each with its own class split (subsets train / val / test) and
protocol (`benchmarks.PROTOCOLS`), read from a local copy DIR and never downloaded:
  "mini_imagenet:DIR"   split "ravi": Ravi & Larochelle's layout (DIR/images/ + CSVs, or the
                        packaged CSVs) or the mini-imagenet-cache-*.pkl pickles.
  "cifar_fs:DIR"        split "bertinetto": CIFAR-FS, from the CIFAR-100 python archive.
  "fc100:DIR"           split "oreshkin": FC100, from the CIFAR-100 python archive.
  "cub:DIR"             split "chen": CUB-200-2011, from the CUB_200_2011/ folder.
  DIR "tfds" reads TFDS cifar100 / caltech_birds2011 instead, from an already prepared TFDS
  data_dir (the `source` argument).

Class splits of a folder or TFDS dataset (which classes make each subset):
  "all"                                  one subset, "all": every class.
  "random:train=0.7,val=0.1,test=0.2"    fractions of the classes (summing to 1), drawn at
                                         random with seed 0, or another: ",seed=3".
  "lists:DIR"                            DIR/<subset>.txt list class names, one per line.

`load_dataset` returns the chosen classes at model resolution (uint8 [M, s, s, 1], as
`load_split` does for Omniglot), so episodes can be cached; the natural-image benchmarks keep
their colour: uint8 [M, s, s, 3] (channels=1 for the channel mean).
"""

from __future__ import annotations

import pathlib

import numpy as np

from keras_fewshot.data import benchmarks, cifar_fewshot, cub, mini_imagenet
from keras_fewshot.data.images import read_image_folder, read_tfds
from keras_fewshot.data.labelled import LabelledImages
from keras_fewshot.data.omniglot import load_split
from keras_fewshot.layers.preprocessing import to_model_pixels

OMNIGLOT, SINUSOID = "omniglot", "sinusoid"
GENERATED = (SINUSOID,)  # data sets of generated tasks: no images to load
NATURAL = tuple(benchmarks.PROTOCOLS)  # mini_imagenet, cifar_fs, fc100, cub
KINDS = ("folder", "tfds") + NATURAL


def parse_dataset(dataset: str):
    """("omniglot" or "sinusoid", "") or (kind, argument) of "folder:PATH" /
    "tfds:NAME[@SPLIT]" / "<benchmark>:DIR"."""
    if dataset in (OMNIGLOT, SINUSOID):
        return dataset, ""
    kind, _, argument = dataset.partition(":")
    if kind not in KINDS or not argument:
        raise ValueError(f"Unknown dataset {dataset!r}; expected 'omniglot', 'folder:PATH' "
                         "(one sub-folder per class), 'tfds:NAME' (a TFDS image "
                         "classification dataset), 'sinusoid', or a natural-image benchmark "
                         "from a local copy: 'mini_imagenet:DIR', 'cifar_fs:DIR', "
                         "'fc100:DIR', 'cub:DIR'")
    return kind, argument


def default_split(dataset: str, split: str | None = None):
    """(split, subset) a training run uses when not told: Omniglot's Vinyals trainval (or
    Lake background) classes (unused by sinusoid tasks); a benchmark's own split and its
    "train" subset; every class of other data, or the "train" subset of `split`."""
    kind = parse_dataset(dataset)[0]
    if kind in (OMNIGLOT, SINUSOID):
        split = split or "vinyals"
        return split, {"lake": "background"}.get(split, "trainval")
    if kind in NATURAL:
        return benchmark_split(kind, split), "train"
    split = split or "all"
    return split, "all" if split == "all" else "train"


def benchmark_split(kind: str, split: str | None = None) -> str:
    """The class split of a natural-image benchmark: its own (`split` None or its name)."""
    own = benchmarks.PROTOCOLS[kind]["split"]
    if split not in (None, "", own):
        raise ValueError(f"{kind} comes with its own class split, {own!r} (subsets "
                         f"{', '.join(benchmarks.SUBSETS)}), not {split!r}")
    return own


def _parse_random(spec: str):
    fractions, seed = {}, 0
    for item in spec.split(","):
        key, _, value = item.partition("=")
        try:
            if key.strip() == "seed":
                seed = int(value)
            else:
                fractions[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"Bad item {item!r} in class split 'random:{spec}'; expected "
                             "name=fraction (e.g. train=0.8,test=0.2) or seed=N") from None
    if not fractions or min(fractions.values()) <= 0 or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"Class split 'random:{spec}' needs positive fractions summing to 1, "
                         f"got {fractions}")
    return fractions, seed


def subset_names(split: str):
    """The subsets a class split defines, in order."""
    if split == "all":
        return ["all"]
    if split in benchmarks.SPLIT_NAMES:
        return list(benchmarks.SUBSETS)
    kind, _, argument = split.partition(":")
    if kind == "random":
        return list(_parse_random(argument)[0])
    if kind == "lists":
        folder = pathlib.Path(argument)
        names = sorted(p.stem for p in folder.glob("*.txt"))
        if not names:
            raise FileNotFoundError(f"Class split {split!r}: no <subset>.txt files in {folder}")
        return names
    raise ValueError(f"Unknown class split {split!r}; expected 'all', "
                     "'random:train=0.8,test=0.2[,seed=N]' or 'lists:DIR'")


def evaluation_subset(split: str):
    """The subset a run's model is tested on by default: "test", or "all" for split "all"."""
    names = subset_names(split)
    if "test" in names:
        return "test"
    if names == ["all"]:
        return "all"
    raise ValueError(f"Class split {split!r} has no 'test' subset (it has {names}); name the "
                     "subset to evaluate on")


def select_subset(data: LabelledImages, split: str, subset: str) -> LabelledImages:
    """The classes of `data` that `split` puts in `subset`, relabelled 0..C-1."""
    names = subset_names(split)
    if subset not in names:
        raise ValueError(f"Class split {split!r} has subsets {names}, not {subset!r}")
    if split in benchmarks.SPLIT_NAMES:
        raise ValueError(f"Class split {split!r} is {benchmarks.SPLIT_NAMES[split]}'s own: "
                         f"load_dataset('{benchmarks.SPLIT_NAMES[split]}:DIR', {split!r}, "
                         f"{subset!r}) reads it")
    kind, _, argument = split.partition(":")
    if kind == "all":
        return data
    if kind == "random":
        fractions, seed = _parse_random(argument)
        order = np.random.default_rng(seed).permutation(data.num_classes)
        ends = np.round(np.cumsum(list(fractions.values())) * data.num_classes).astype(int)
        chunks = dict(zip(fractions, np.split(order, ends[:-1])))
        if any(len(c) == 0 for c in chunks.values()):
            raise ValueError(f"Class split {split!r} of {data.num_classes} classes leaves a "
                             f"subset empty: sizes { {k: len(v) for k, v in chunks.items()} }")
        return data.select_classes(np.sort(chunks[subset]))
    path = pathlib.Path(argument) / f"{subset}.txt"
    wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(data.class_names)}
    unknown = [name for name in wanted if name not in index]
    if unknown:
        raise ValueError(f"{path} names classes the data does not have: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    return data.select_classes([index[name] for name in wanted])


def load_natural(kind: str, argument: str, split, subset: str, source=None, image_size=None,
                 channels=None) -> LabelledImages:
    """`subset` of a natural-image benchmark (`kind`) read from its local copy `argument`
    (or TFDS when it is "tfds", from the data_dir `source`): uint8 [M, s, s, 3] (s: the
    protocol's image size unless given; channels=1 for the channel mean)."""
    benchmark_split(kind, split)
    benchmarks.check_subset(kind, subset)
    if source and argument != "tfds":
        raise ValueError(f"{kind}:{argument} names its folder itself; a data directory "
                         f"({source}) is for Omniglot and TFDS datasets ({kind}:tfds)")
    image_size = image_size or benchmarks.PROTOCOLS[kind]["image_size"]
    channels = channels or 3
    if kind == "mini_imagenet":
        if argument == "tfds":
            raise ValueError("TFDS has no mini-ImageNet: give the folder of a local copy, "
                             "mini_imagenet:DIR")
        return mini_imagenet.load(argument, subset, image_size, channels)
    if kind == "cub":
        return cub.load(argument, subset, image_size, channels, data_dir=source)
    return cifar_fewshot.load(kind, argument, subset, image_size, channels, data_dir=source)


def load_dataset(dataset: str, split: str, subset: str, source=None, image_size=None,
                 channels=None, rotations=False, keep_channels=False) -> LabelledImages:
    """The classes of `subset` at model resolution (uint8 [M, image_size, image_size, 1];
    [M, image_size, image_size, 3] for the natural-image benchmarks).

    Args:
      dataset, split, subset: as the module describes.
      source: where the data lives: Omniglot's archives (default $KERAS_FEWSHOT_OMNIGLOT_DIR,
        else TFDS) or the TFDS data_dir; a folder dataset names its path itself.
      image_size: default 28, or a benchmark's protocol size (84 or 32).
      channels: 1 or 3 to convert images with other channel counts (own data and the
        benchmarks, which are RGB unless channels=1).
      rotations: Omniglot's Lake split only (see `load_split`).
      keep_channels: folder and TFDS images keep their channels (or `channels`'s) instead
        of becoming gray [M, s, s, 1]: what an RGB preprocessor takes.
    """
    kind, argument = parse_dataset(dataset)
    if kind == SINUSOID:
        raise ValueError("sinusoid tasks are generated, not loaded: keras_fewshot.data."
                         "sinusoid_tasks")
    if kind in NATURAL:
        if rotations:
            raise ValueError("rotations apply to Omniglot's Lake split only")
        return load_natural(kind, argument, split, subset, source, image_size, channels)
    image_size = image_size or 28
    if kind == OMNIGLOT:
        return load_split(split, subset, source=source, image_size=image_size,
                          rotations=rotations)
    if rotations:
        raise ValueError("rotations apply to Omniglot's Lake split only")
    if kind == "folder":
        if source:
            raise ValueError(f"{dataset} names its folder itself; a data directory "
                             f"({source}) is for Omniglot and TFDS datasets")
        data = read_image_folder(argument, image_size=image_size, channels=channels)
    else:
        name, _, tfds_split = argument.partition("@")
        data = read_tfds(name, tfds_split or "all", data_dir=source, image_size=image_size,
                         channels=channels)
    data = select_subset(data, split, subset)
    if keep_channels:  # read at image_size already
        return data
    pixels = [to_model_pixels(data.images[i:i + 4096], image_size).numpy()
              for i in range(0, len(data.images), 4096)]  # in chunks: bounded float memory
    return LabelledImages(np.concatenate(pixels), data.labels, data.class_names, data.groups)
