"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): examples and standard splits.

Examples come either from `tfds.load("omniglot")` or from a local copy of the two original
archives (`images_background.zip`, `images_evaluation.zip`) or their extracted folders. Both
paths yield the same TFDS-shaped examples:

    {"image": uint8 [105, 105, 3] (white background, dark ink),
     "alphabet": int64 index into ALPHABETS,
     "alphabet_char_id": int64 (0-based character number within the alphabet),
     "label": int64 global character id (0..1622)}

A local source can also give each example's "drawer" (int64 1..20, the YY of XXXX_YY.png):
Lake et al.'s one-shot runs need it, and TFDS's omniglot has no such field.

The source is chosen by the `source` argument, else the environment variable
KERAS_FEWSHOT_OMNIGLOT_DIR, else TFDS. A local source never touches the network.

Splits turn examples into labelled classes at model resolution:
  * "vinyals": Vinyals et al. (2016) character lists with 4 rotations per character
    (subsets train / val / trainval / test; lists shipped in `splits/vinyals`, MIT).
  * "lake": Lake et al. (2015): "background" (30 alphabets) to train, "evaluation"
    (20 alphabets) to test within one alphabet at a time (classes carry alphabet groups).
Either split can carry each image's drawer (`drawers=True`, local archives only).
"""

from __future__ import annotations

import functools
import os
import pathlib
import zipfile

import numpy as np
import tensorflow as tf

from keras_fewshot.data.labelled import LabelledImages
from keras_fewshot.layers.preprocessing import to_model_pixels

ENV_VAR = "KERAS_FEWSHOT_OMNIGLOT_DIR"
PARTS = ("background", "evaluation")  # TFDS splits "train" and "test"
TFDS_SPLIT = {"background": "train", "evaluation": "test"}
IMAGE_SHAPE = (105, 105, 3)

# TFDS's "alphabet" ClassLabel: the sorted names of the 50 alphabets of both archives.
ALPHABETS = tuple(sorted([
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian",
    "Asomtavruli_(Georgian)", "Balinese", "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Braille", "Burmese_(Myanmar)", "Cyrillic", "Early_Aramaic", "Futurama", "Grantha", "Greek",
    "Gujarati", "Hebrew", "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)",
    "Japanese_(katakana)", "Korean", "Latin", "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)",
    "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit", "Syriac_(Estrangelo)",
    "Tagalog", "Tifinagh",
    "Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta", "Ge_ez", "Glagolitic",
    "Gurmukhi", "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)", "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan",
    "ULOG",
]))
_ALPHABET_INDEX = {name: i for i, name in enumerate(ALPHABETS)}
SPLITS_DIR = pathlib.Path(__file__).parent / "splits"
VINYALS_SUBSETS = ("train", "val", "trainval", "test")
ROTATIONS = (0, 90, 180, 270)


def resolve_source(source: str | None = None) -> str:
    """`source` if given, else $KERAS_FEWSHOT_OMNIGLOT_DIR, else "tfds"."""
    if source:
        return str(source)
    return os.environ.get(ENV_VAR) or "tfds"


def _local_files(root: pathlib.Path, part: str):
    """Yields (relative path 'Alphabet/characterNN/XXXX_YY.png', png bytes) of one archive."""
    name = f"images_{part}"
    archive, folder = root / f"{name}.zip", root / name
    if folder.is_dir():
        for path in sorted(folder.glob("*/character*/*.png")):
            yield path.relative_to(folder).as_posix(), path.read_bytes()
    elif archive.is_file():
        with zipfile.ZipFile(archive) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.filename.endswith(".png"):
                    yield info.filename.split("/", 1)[1], zf.read(info)
    else:
        raise FileNotFoundError(
            f"Omniglot {part!r} not found under {root}: expected {archive.name} or a folder "
            f"{folder.name}/ (layout images_{part}/<Alphabet>/characterNN/XXXX_YY.png)")


def _local_examples(root: pathlib.Path, part: str, drawers: bool = False) -> tf.data.Dataset:
    paths, blobs = [], []
    for rel, blob in _local_files(root, part):
        paths.append(rel)
        blobs.append(blob)
    if not paths:
        raise FileNotFoundError(f"No PNG images in Omniglot {part!r} under {root}")
    alphabets, char_ids, labels, drawn_by = [], [], [], []
    for rel in paths:
        alphabet, character, filename = rel.split("/")
        if alphabet not in _ALPHABET_INDEX:
            raise ValueError(f"Unknown Omniglot alphabet {alphabet!r} in {rel}")
        alphabets.append(_ALPHABET_INDEX[alphabet])
        char_ids.append(int(character[len("character"):]) - 1)
        labels.append(int(filename.split("_")[0]) - 1)
        drawn_by.append(int(filename[:-len(".png")].split("_")[1]))
    columns = {
        "png": tf.constant(blobs, tf.string),
        "alphabet": tf.constant(alphabets, tf.int64),
        "alphabet_char_id": tf.constant(char_ids, tf.int64),
        "label": tf.constant(labels, tf.int64),
    }
    if drawers:
        columns["drawer"] = tf.constant(drawn_by, tf.int64)
    meta = tf.data.Dataset.from_tensor_slices(columns)

    def decode(example):
        image = tf.io.decode_png(example.pop("png"), channels=3)
        example["image"] = tf.ensure_shape(image, IMAGE_SHAPE)
        return example

    return meta.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def check_drawers_source(source: str | None = None):
    """Raises ValueError unless `source` (resolved) is local: only the archives' file names
    say who drew each image."""
    if resolve_source(source) == "tfds":
        raise ValueError(
            "Omniglot drawers (the YY of XXXX_YY.png, which Lake et al.'s one-shot runs need) "
            "are not in TFDS's omniglot, which has no drawer field: use the local archives "
            f"(images_background.zip, images_evaluation.zip) by setting ${ENV_VAR} or passing "
            "their directory as the source (--data_dir)")


def load_examples(part: str, source: str | None = None, tfds_data_dir: str | None = None,
                  drawers: bool = False) -> tf.data.Dataset:
    """TFDS-shaped Omniglot examples of one archive ("background" or "evaluation").

    Args:
      part: "background" (TFDS "train", 30 alphabets) or "evaluation" (TFDS "test").
      source: "tfds", or a directory holding the archives or their extracted folders.
        Defaults to $KERAS_FEWSHOT_OMNIGLOT_DIR, then "tfds".
      tfds_data_dir: `data_dir` passed to `tfds.load` (TFDS source only).
      drawers: also give each example's "drawer" (1..20); a local source only (else
        ValueError).
    """
    if part not in PARTS:
        raise ValueError(f"Unknown Omniglot part {part!r}; expected one of {PARTS}")
    source = resolve_source(source)
    if drawers:
        check_drawers_source(source)
    if source == "tfds":
        import tensorflow_datasets as tfds  # imported lazily: only this path needs it
        return tfds.load("omniglot", split=TFDS_SPLIT[part], data_dir=tfds_data_dir,
                         shuffle_files=False)
    root = pathlib.Path(source).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Omniglot source directory {root} does not exist")
    return _local_examples(root, part, drawers)


@functools.lru_cache(maxsize=8)
def _characters(part: str, source: str, image_size: int, tfds_data_dir: str | None):
    """({(alphabet name, 1-based character number): uint8 [20, s, s, 1]}, preprocessed once;
    the same keys to each image's drawer int32 [20], or None for the TFDS source)."""
    local = source != "tfds"
    ds = load_examples(part, source, tfds_data_dir, drawers=local)

    def prepare(example):
        pixels = to_model_pixels(example["image"][None], image_size)[0]
        drawer = example["drawer"] if local else tf.constant(0, tf.int64)
        return pixels, example["alphabet"], example["alphabet_char_id"], drawer

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    images, alphabets, char_ids, drawn_by = [], [], [], []
    for x, a, c, d in ds.as_numpy_iterator():
        images.append(x), alphabets.append(a), char_ids.append(c), drawn_by.append(d)
    images, alphabets, char_ids, drawn_by = (
        np.concatenate(v) for v in (images, alphabets, char_ids, drawn_by))
    out, drawers = {}, {}
    for key in sorted(set(zip(alphabets.tolist(), char_ids.tolist()))):
        mask = (alphabets == key[0]) & (char_ids == key[1])
        out[(ALPHABETS[key[0]], key[1] + 1)] = images[mask]
        drawers[(ALPHABETS[key[0]], key[1] + 1)] = drawn_by[mask].astype(np.int32)
    return out, drawers if local else None


def _assemble(classes, characters, drawers=None) -> LabelledImages:
    """classes: list of (alphabet, character number, rotation degrees); drawers: None, or
    each character's drawers (then the result carries them)."""
    images, labels, names, groups = [], [], [], []
    for index, (alphabet, number, rotation) in enumerate(classes):
        key = (alphabet, number)
        if key not in characters:
            raise KeyError(f"Character {alphabet}/character{number:02d} is not in the data")
        images.append(np.rot90(characters[key], k=rotation // 90, axes=(1, 2)))
        labels.append(np.full(len(characters[key]), index, np.int32))
        names.append(f"{alphabet}/character{number:02d}/rot{rotation:03d}")
        groups.append(_ALPHABET_INDEX[alphabet])
    drawn_by = None if drawers is None else np.concatenate([drawers[a, n] for a, n, _ in classes])
    return LabelledImages(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels),
                          tuple(names), np.asarray(groups, np.int32), drawn_by)


def read_vinyals_classes(subset: str):
    """[(alphabet, character number, rotation)] of a Vinyals split subset, in file order."""
    if subset not in VINYALS_SUBSETS:
        raise ValueError(f"Unknown Vinyals subset {subset!r}; expected one of {VINYALS_SUBSETS}")
    classes = []
    for line in (SPLITS_DIR / "vinyals" / f"{subset}.txt").read_text().split():
        alphabet, character, rotation = line.split("/")
        classes.append((alphabet, int(character[len("character"):]), int(rotation[len("rot"):])))
    return classes


def load_split(split: str, subset: str, source: str | None = None, image_size: int = 28,
               tfds_data_dir: str | None = None, rotations: bool = False,
               drawers: bool = False) -> LabelledImages:
    """Labelled classes of a standard split at model resolution.

    split="vinyals", subset in train / val / trainval / test: character x rotation classes.
    split="lake", subset in background / evaluation: characters grouped by alphabet for
    within-alphabet episodes; rotations=True adds each character rotated by 90, 180 and 270
    degrees as three more classes of its alphabet (training augmentation, as in Vinyals).
    drawers=True: the result also holds who drew each image (`LabelledImages.drawers`,
    1..20), for Lake et al.'s one-shot runs; local archives only (else ValueError, raised
    before anything is loaded).
    """
    source = resolve_source(source)
    if drawers:
        check_drawers_source(source)
    if split == "vinyals":
        if rotations:
            raise ValueError("The Vinyals split already lists its rotated classes; "
                             "rotations=True applies to the Lake split only")
        wanted = read_vinyals_classes(subset)
        characters, drawn_by = {}, {}
        for part in PARTS:
            images, part_drawers = _characters(part, source, image_size, tfds_data_dir)
            characters.update(images)
            drawn_by.update(part_drawers or {})
        return _assemble(wanted, characters, drawn_by if drawers else None)
    if split == "lake":
        if subset not in PARTS:
            raise ValueError(f"Unknown Lake subset {subset!r}; expected one of {PARTS}")
        characters, drawn_by = _characters(subset, source, image_size, tfds_data_dir)
        angles = (0, 90, 180, 270) if rotations else (0,)
        return _assemble([(a, n, r) for a, n in sorted(characters) for r in angles], characters,
                         drawn_by if drawers else None)
    raise ValueError(f"Unknown Omniglot split {split!r}; expected 'vinyals' or 'lake'")
