"""The natural-image few-shot benchmarks: their class splits and evaluation protocols.

`PROTOCOLS` holds, per data set, what the literature runs, as data evaluation can read:
the class split and its subsets, the image size, the test episodes' queries per class and
settings (ways, shots), how many test episodes, and the confidence level reported.

The class lists ship in `splits/<dataset>/` with a SOURCE.md naming where they come from:
  mini_imagenet  Ravi & Larochelle's train/val/test.csv (filename,label; 64/16/20 classes)
  cifar_fs       Bertinetto et al. 2019: CIFAR-100 fine classes, 64/16/20
  fc100          Oreshkin et al. 2018: CIFAR-100 superclasses, 12/4/4 (60/20/20 classes)
  cub            Chen et al. 2019: CUB-200-2011 class folders, 100/50/50
"""

from __future__ import annotations

import csv
import pathlib

SPLITS_DIR = pathlib.Path(__file__).parent / "splits"
SUBSETS = ("train", "val", "test")


def _protocol(split, image_size, episodes):
    """Test episodes: 5-way 1- and 5-shot, 15 queries per class, a 95% confidence interval."""
    return {"split": split, "subsets": SUBSETS, "image_size": image_size, "channels": 3,
            "queries": 15, "settings": ((5, 1), (5, 5)), "episodes": episodes,
            "confidence": 0.95}


# Test episodes: 600 as Prototypical Networks and Chen et al. average over on mini-ImageNet
# and CUB; 1000 as MetaOptNet's test script runs (its CIFAR-FS and FC100 numbers).
PROTOCOLS = {
    "mini_imagenet": _protocol("ravi", 84, 600),
    "cifar_fs": _protocol("bertinetto", 32, 1000),
    "fc100": _protocol("oreshkin", 32, 1000),
    "cub": _protocol("chen", 84, 600),
}
SPLIT_NAMES = {spec["split"]: name for name, spec in PROTOCOLS.items()}


def check_subset(dataset: str, subset: str):
    """ValueError unless `subset` is one of the data set's subsets."""
    if subset not in PROTOCOLS[dataset]["subsets"]:
        raise ValueError(f"{dataset} has subsets {list(PROTOCOLS[dataset]['subsets'])}, not "
                         f"{subset!r}")


def read_list(dataset: str, subset: str) -> list:
    """The names a packaged list file splits/<dataset>/<subset>.txt holds, in file order:
    class names (cifar_fs, cub) or superclass names (fc100)."""
    check_subset(dataset, subset)
    path = SPLITS_DIR / dataset / f"{subset}.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_csv(path) -> list:
    """[(filename, label)] of a Ravi & Larochelle split file (header filename,label)."""
    path = pathlib.Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{path} is not a mini-ImageNet split file: the first line should "
                         f"be 'filename,label', got {','.join(rows[0]) if rows else 'nothing'!r}")
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path} line {number}: expected 'filename,label', got "
                             f"{','.join(row)!r}")
        pairs.append((row[0].strip(), row[1].strip()))
    if not pairs:
        raise ValueError(f"{path} lists no images")
    return pairs


def ordered_classes(labels) -> list:
    """The distinct labels in order of first appearance."""
    return list(dict.fromkeys(labels))


def missing_classes(wanted, present, what: str):
    """ValueError naming the classes of `wanted` that `present` lacks (a partial copy of a
    benchmark would silently change it)."""
    present = set(present)
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ValueError(f"{what} lacks {len(missing)} of the {len(wanted)} classes of the "
                         f"split: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
