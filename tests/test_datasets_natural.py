"""mini-ImageNet, CIFAR-FS, FC100 and CUB-200-2011 from tiny synthetic copies in their real
on-disk formats (JPEG folders with CSVs, pickle caches, the CIFAR-100 python archive, the
CUB_200_2011 folder), the packaged split lists, and the restricted unpickler."""

import csv
import dataclasses
import functools
import json
import os
import pickle
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot import training
from keras_fewshot.backbones import Conv4Embedding, ResNet12
from keras_fewshot.data import benchmarks, cub, datasets, episode_dataset, load_dataset
from keras_fewshot.data import LabelledImages, mini_imagenet, safe_pickle, select_subset
from keras_fewshot.layers.preprocessing import RGBPreprocessing

SUBSETS = ("train", "val", "test")
# CIFAR-100's superclasses (coarse labels, in label order) and their fine classes.
CIFAR100 = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant",
                                       "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
FINE = sorted(c for classes in CIFAR100.values() for c in classes)  # CIFAR-100 label order
COARSE = list(CIFAR100)
SUPERCLASS_OF = {c: COARSE.index(s) for s, classes in CIFAR100.items() for c in classes}


def colour(k):
    """A distinct RGB colour for class k (JPEG keeps flat colours to a few levels)."""
    return np.asarray([(37 * k) % 256, (91 * k + 60) % 256, 255 - (53 * k) % 256], np.uint8)


def write_jpeg(path, rgb, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.broadcast_to(rgb, (size, size + 3, 3))  # not square: resized to square
    path.write_bytes(tf.io.encode_jpeg(np.ascontiguousarray(image), quality=95).numpy())


def class_colours(data: LabelledImages):
    """The mean colour of each class's images, [C, 3]."""
    return np.stack([data.images[data.labels == c].reshape(-1, 3).mean(0)
                     for c in range(data.num_classes)])


def sample_episode(data: LabelledImages, ways=2, shots=1, queries=1):
    (inputs, query_labels), = episode_dataset(data.images, data.labels, ways, shots, queries,
                                              num_episodes=1).as_numpy_iterator()
    size, channels = data.images.shape[1:3], data.images.shape[3]
    assert inputs["support_images"].shape == (ways * shots, *size, channels)
    assert inputs["query_images"].shape == (ways * queries, *size, channels)
    assert sorted(query_labels.tolist()) == sorted(list(range(ways)) * queries)


@functools.lru_cache(maxsize=None)
def packaged_rows(subset):
    return benchmarks.read_csv(mini_imagenet.packaged_csv(subset))


# --- the packaged split lists --------------------------------------------------------------

def test_packaged_split_lists_have_the_published_sizes():
    sizes = {"cifar_fs": (64, 16, 20), "fc100": (12, 4, 4), "cub": (100, 50, 50)}
    for name, expected in sizes.items():
        lists = [benchmarks.read_list(name, s) for s in SUBSETS]
        assert tuple(map(len, lists)) == expected, name
        assert len(set().union(*lists)) == sum(expected), f"{name}: subsets share a class"
    rows = {s: packaged_rows(s) for s in SUBSETS}
    assert [len(rows[s]) for s in SUBSETS] == [38400, 9600, 12000]
    classes = {s: benchmarks.ordered_classes(label for _, label in rows[s]) for s in SUBSETS}
    assert [len(classes[s]) for s in SUBSETS] == [64, 16, 20]
    assert len(set().union(*classes.values())) == 100
    for subset in SUBSETS:  # 600 images a class, named <wnid><8 digits>.jpg
        labels = [label for _, label in rows[subset]]
        assert set(np.unique(labels, return_counts=True)[1]) == {600}
        assert all(f.startswith(label) and f.endswith(".jpg") for f, label in rows[subset])
    # CIFAR-FS covers CIFAR-100; FC100's superclasses cover its 20 (60 / 20 / 20 classes).
    assert sorted(c for s in SUBSETS for c in benchmarks.read_list("cifar_fs", s)) == FINE
    fc100 = [benchmarks.read_list("fc100", s) for s in SUBSETS]
    assert sorted(sum(fc100, [])) == sorted(COARSE)
    assert [5 * len(s) for s in fc100] == [60, 20, 20]
    # CUB: Chen et al. assign the sorted class folders by 0-based index.
    names = cub.all_classes()
    assert [int(n[:3]) for n in names] == list(range(1, 201))
    rule = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1,
            "test": lambda i: i % 4 == 3}
    for subset, keep in rule.items():
        assert benchmarks.read_list("cub", subset) == [n for i, n in enumerate(names) if keep(i)]


def test_benchmark_names_splits_and_protocols():
    assert datasets.parse_dataset("mini_imagenet:/a/b") == ("mini_imagenet", "/a/b")
    with pytest.raises(ValueError, match="'cub:DIR'"):
        datasets.parse_dataset("cub:")
    expected = {"mini_imagenet": "ravi", "cifar_fs": "bertinetto", "fc100": "oreshkin",
                "cub": "chen"}
    for name, split in expected.items():
        assert datasets.default_split(f"{name}:x") == (split, "train")
        assert datasets.subset_names(split) == list(SUBSETS)
        assert datasets.evaluation_subset(split) == "test"
    sizes = {name: spec["image_size"] for name, spec in benchmarks.PROTOCOLS.items()}
    assert sizes == {"mini_imagenet": 84, "cifar_fs": 32, "fc100": 32, "cub": 84}
    assert {spec["queries"] for spec in benchmarks.PROTOCOLS.values()} == {15}
    with pytest.raises(ValueError, match="own class split, 'chen'"):
        datasets.default_split("cub:x", "random:train=0.5,test=0.5")
    with pytest.raises(ValueError, match="own class split, 'ravi'"):
        load_dataset("mini_imagenet:x", "all", "all")
    with pytest.raises(ValueError, match="has subsets"):
        load_dataset("cub:x", "chen", "trainval")
    with pytest.raises(ValueError, match="is mini_imagenet's own"):
        select_subset(LabelledImages(np.zeros((2, 1, 1, 1), np.uint8), np.arange(2),
                                     ("a", "b"), np.zeros(2, np.int32)), "ravi", "train")
    with pytest.raises(ValueError, match="names its folder itself"):
        load_dataset("cifar_fs:x", None, "train", source="/data")
    with pytest.raises(ValueError, match="TFDS has no mini-ImageNet"):
        load_dataset("mini_imagenet:tfds", None, "train")


# --- mini-ImageNet: Ravi & Larochelle's folder ---------------------------------------------

PER_CLASS = 3


@pytest.fixture(scope="module")
def ravi_dir(tmp_path_factory):
    """images/ + train/val/test.csv with the first 2 real classes of each subset, 3 images
    of each (their real file names), class k of the CSV in colour(k)."""
    root = tmp_path_factory.mktemp("mini_imagenet")
    for subset in SUBSETS:
        rows, wanted = [], benchmarks.ordered_classes(l for _, l in packaged_rows(subset))[:2]
        for k, wnid in enumerate(wanted):
            rows += [r for r in packaged_rows(subset) if r[1] == wnid][:PER_CLASS]
            for filename, _ in rows[-PER_CLASS:]:
                write_jpeg(root / "images" / filename, colour(k))
        (root / f"{subset}.csv").write_text(
            "filename,label\n" + "".join(f"{f},{l}\n" for f, l in rows))
    return root


def test_mini_imagenet_folder(ravi_dir):
    loaded = {s: load_dataset(f"mini_imagenet:{ravi_dir}", "ravi", s, image_size=8)
              for s in SUBSETS}
    for subset, data in loaded.items():
        listed = set(l for _, l in packaged_rows(subset))
        assert data.images.shape == (2 * PER_CLASS, 8, 8, 3) and data.images.dtype == np.uint8
        assert set(data.class_names) <= listed and data.num_classes == 2
        np.testing.assert_allclose(class_colours(data), [colour(0), colour(1)], atol=3)
        sample_episode(data)
    names = [set(d.class_names) for d in loaded.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    default = load_dataset(f"mini_imagenet:{ravi_dir}", None, "val")  # the protocol's 84x84
    assert default.images.shape[1:] == (84, 84, 3)
    gray = load_dataset(f"mini_imagenet:{ravi_dir}", "ravi", "val", image_size=4, channels=1)
    np.testing.assert_allclose(gray.images[gray.labels == 0].mean(), colour(0).mean(), atol=3)


def test_mini_imagenet_folder_errors(ravi_dir, tmp_path):
    # No CSVs in DIR: the packaged ones are read, and they name 38,400 training images.
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"38400 of the 38400 images .*splits/"
                                                r"mini_imagenet/train\.csv lists are missing"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "train")
    rows = (ravi_dir / "train.csv").read_text()
    (tmp_path / "train.csv").write_text(rows)
    with pytest.raises(FileNotFoundError, match="has split files .* but no test.csv"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "test")
    (tmp_path / "test.csv").write_text(rows)
    with pytest.raises(ValueError, match="is in both train.csv and test.csv"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "test")
    (tmp_path / "test.csv").unlink()
    first = rows.splitlines()[1].split(",")[0]
    with pytest.raises(FileNotFoundError, match=rf"6 of the 6 images .*train\.csv lists are "
                                                rf"missing, e.g. \['.*{first}'"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "train")
    for line in rows.splitlines()[1:]:
        name = line.split(",")[0]
        (tmp_path / "images" / name).write_bytes((ravi_dir / "images" / name).read_bytes())
    bad = tmp_path / "images" / rows.splitlines()[4].split(",")[0]
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(ValueError, match=rf"Cannot read .*{bad.name} as an image"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "train")
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=rf"Cannot read .*{bad.name} as an image"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "train")
    (tmp_path / "train.csv").write_text("file,class\nx.jpg,n1\n")
    with pytest.raises(ValueError, match="first line should be 'filename,label'"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "train")
    with pytest.raises(FileNotFoundError, match="No mini-ImageNet in"):
        load_dataset(f"mini_imagenet:{tmp_path / 'images'}", "ravi", "train")


# --- mini-ImageNet: the pickle caches ------------------------------------------------------

def cache_dict(subset, per_class=2, size=84):
    """{"image_data": uint8 [N, size, size, 3], "class_dict": {wnid: indices}} with every
    class of the subset, listed in reverse; class k of the packaged order in colour(k)."""
    wanted = benchmarks.ordered_classes(l for _, l in packaged_rows(subset))
    image_data = np.zeros((per_class * len(wanted), size, size, 3), np.uint8)
    order = np.random.default_rng(0).permutation(len(image_data))  # classes interleaved
    class_dict = {}
    for k, wnid in reversed(list(enumerate(wanted))):
        idx = order[k * per_class:(k + 1) * per_class]
        image_data[idx] = colour(k)
        class_dict[wnid] = idx
    return {"image_data": image_data, "class_dict": class_dict}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The three caches, as three kinds of pickle: protocol 2 with lists of ints (Python 2
    era files), 4 with numpy index arrays, 5 with lists of numpy integers."""
    root = tmp_path_factory.mktemp("mini_imagenet_cache")
    kinds = {"train": (2, lambda idx: [int(i) for i in idx]), "val": (4, lambda idx: idx),
             "test": (5, lambda idx: list(idx))}
    for subset, (protocol, indices) in kinds.items():
        data = cache_dict(subset)
        data["class_dict"] = {k: indices(v) for k, v in data["class_dict"].items()}
        (root / mini_imagenet.CACHE.format(subset=subset)).write_bytes(
            pickle.dumps(data, protocol=protocol))
    return root


def test_mini_imagenet_pickle_caches(cache_dir):
    for subset, ways in zip(SUBSETS, (64, 16, 20)):
        data = load_dataset(f"mini_imagenet:{cache_dir}", "ravi", subset)
        wanted = benchmarks.ordered_classes(l for _, l in packaged_rows(subset))
        assert data.class_names == tuple(wanted)  # the split file's order
        assert data.images.shape == (2 * ways, 84, 84, 3)
        np.testing.assert_array_equal(class_colours(data), [colour(k) for k in range(ways)])
        sample_episode(data, ways=5)
    small = load_dataset(f"mini_imagenet:{cache_dir}", "ravi", "val", image_size=16)
    assert small.images.shape == (32, 16, 16, 3)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(image_data=d["image_data"][..., 0]), r"uint8 RGB images \[N, H, W, 3\]"),
    (lambda d: d.update(image_data=d["image_data"].astype(np.float32)), "got float32"),
    (lambda d: d.pop("class_dict"), "expected a dict with 'image_data' and 'class_dict'"),
    (lambda d: d["class_dict"].popitem(), r"lacks 1 of the 16 classes"),
    (lambda d: d["class_dict"].update(n99999999=[0]), r"classes outside the val subset"),
    (lambda d: d["class_dict"].update({k: [0, 999] for k in list(d["class_dict"])[:1]}),
     r"indices outside \[0, 32\)"),
    (lambda d: d["class_dict"].update({k: [0, 1] for k in list(d["class_dict"])[:2]}),
     "listed twice"),
])
def test_mini_imagenet_bad_caches(tmp_path, change, match):
    data = cache_dict("val", size=8)
    change(data)
    (tmp_path / "mini-imagenet-cache-val.pkl").write_bytes(pickle.dumps(data, protocol=4))
    with pytest.raises(ValueError, match=match):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "val", image_size=8)


# --- the restricted unpickler --------------------------------------------------------------

class Payload:
    """Runs a shell command when unpickled by pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Evaluated:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_restricted_unpickler_refuses_code_and_reads_data(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = pickle.dumps({"image_data": np.zeros((1, 2, 2, 3), np.uint8),
                         "class_dict": {"n01": [0, Payload(marker)]}}, protocol=2)
    path = tmp_path / "mini-imagenet-cache-val.pkl"
    path.write_bytes(evil)
    with pytest.raises(safe_pickle.UnsafePickleError,
                       match=rf"{path.name} is refused: it names the global "
                             r"(posix|nt|os)\.system"):
        load_dataset(f"mini_imagenet:{tmp_path}", "ravi", "val")
    assert not marker.exists()
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"builtins\.eval"):
        safe_pickle.loads(pickle.dumps([Evaluated()]))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"collections\.OrderedDict"):
        safe_pickle.loads(pickle.dumps(__import__("collections").OrderedDict(a=1)))
    pickle.loads(evil)  # the same bytes do run code through pickle itself
    assert marker.exists()
    data = {"a": [1, 2.5, "x", b"y", None, True, (3,)], "b": np.arange(6).reshape(2, 3),
            "c": np.float32(1.5), "d": np.array(["ab", "c"])}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        back = safe_pickle.loads(pickle.dumps(data, protocol=protocol))
        assert back["a"] == data["a"] and back["c"] == data["c"]
        np.testing.assert_array_equal(back["b"], data["b"])
        np.testing.assert_array_equal(back["d"], data["d"])
    with pytest.raises(ValueError, match="is not a readable pickle"):
        safe_pickle.loads(b"\x80\x04garbage")


def short_str(text: bytes):
    """SHORT_BINSTRING: a Python 2 str, as cPickle writes it."""
    return b"U" + bytes([len(text)]) + text


def test_restricted_unpickler_reads_python2_numpy_pickles():
    """{"data": uint8 [2, 3], "fine_labels": [1, 2]} in the bytes Python 2's cPickle and
    numpy 1.x write (the CIFAR-100 archive's form): numpy.core globals, str array data."""
    py2 = (b"\x80\x02}q\x00(" + short_str(b"data")
           + b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85"
           + short_str(b"b") + b"\x87R(K\x01K\x02K\x03\x86cnumpy\ndtype\n" + short_str(b"u1")
           + b"K\x00K\x01\x87R(K\x03" + short_str(b"|")
           + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + short_str(bytes(range(6)))
           + b"tb" + short_str(b"fine_labels") + b"]q\x03(K\x01K\x02eu.")
    data = safe_pickle.loads(py2)
    assert list(data) == ["data", "fine_labels"] and data["fine_labels"] == [1, 2]
    np.testing.assert_array_equal(data["data"], np.arange(6, dtype=np.uint8).reshape(2, 3))


# --- CIFAR-FS and FC100: the CIFAR-100 python archive -------------------------------------

def cifar_part(per_class, start):
    """A CIFAR-100 python pickle's dict: every fine class, `per_class` images each, whose
    pixels encode (fine label, coarse label, index)."""
    fine = np.repeat(np.arange(100), per_class)
    coarse = np.asarray([SUPERCLASS_OF[FINE[f]] for f in fine])
    images = np.zeros((len(fine), 32, 32, 3), np.uint8)
    images[..., 0], images[..., 1] = fine[:, None, None] * 2, coarse[:, None, None] * 10
    images[..., 2] = (start + np.arange(len(fine)))[:, None, None] % 256
    return {"batch_label": "synthetic", "filenames": [f"{i}.png" for i in range(len(fine))],
            "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist(),
            "data": images.transpose(0, 3, 1, 2).reshape(len(fine), -1)}  # channel planes


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-100-python"
    folder.mkdir()
    parts = {"train": cifar_part(4, 0), "test": cifar_part(1, 400),
             "meta": {"fine_label_names": FINE, "coarse_label_names": COARSE}}
    for name, content in parts.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return root


def check_cifar_subset(data, names, image_size=32):
    assert data.class_names == tuple(names)
    assert data.images.shape == (5 * len(names), image_size, image_size, 3)
    assert np.all(np.bincount(data.labels) == 5)
    for c, name in enumerate(names):  # each image under its own class, colour intact
        pixels = data.images[data.labels == c]
        if image_size == 32:
            assert np.all(pixels[..., 0] == 2 * FINE.index(name))
        assert data.groups[c] == SUPERCLASS_OF[name]
        assert np.all(pixels[..., 1] == 10 * SUPERCLASS_OF[name])


def test_cifar_fs_and_fc100_from_the_python_archive(cifar_dir, tmp_path):
    seen = {"cifar_fs": set(), "fc100": set()}
    for subset in SUBSETS:
        data = load_dataset(f"cifar_fs:{cifar_dir}", "bertinetto", subset)
        check_cifar_subset(data, benchmarks.read_list("cifar_fs", subset))
        sample_episode(data, ways=5, shots=2, queries=3)
        superclasses = benchmarks.read_list("fc100", subset)
        data = load_dataset(f"fc100:{cifar_dir}", "oreshkin", subset)
        check_cifar_subset(data, [c for s in superclasses for c in CIFAR100[s]])
        assert data.num_classes == 5 * len(superclasses)
        sample_episode(data, ways=5, shots=1, queries=4)
        seen["fc100"] |= set(data.class_names)
    assert len(seen["fc100"]) == 100
    # The archive file itself, and the cifar-100-python folder named directly.
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(cifar_dir / "cifar-100-python", arcname="cifar-100-python")
    for root in (tmp_path, cifar_dir / "cifar-100-python"):
        data = load_dataset(f"cifar_fs:{root}", None, "val", image_size=16)
        check_cifar_subset(data, benchmarks.read_list("cifar_fs", "val"), image_size=16)


def test_cifar_archive_errors(cifar_dir, tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes((cifar_dir / "cifar-100-python" / name).read_bytes())
    marker = tmp_path / "payload_ran"
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": Payload(marker)}, 2))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"meta is refused"):
        load_dataset(f"cifar_fs:{tmp_path}", None, "train")
    assert not marker.exists()
    (folder / "meta").write_bytes(pickle.dumps(
        {"fine_label_names": FINE[:99] + ["unicorn"], "coarse_label_names": COARSE}, 2))
    with pytest.raises(ValueError, match=r"lacks 1 of the 20 classes of the split: "
                                         r"\['worm'\]"):
        load_dataset(f"cifar_fs:{tmp_path}", None, "test")
    (folder / "meta").write_bytes((cifar_dir / "cifar-100-python" / "meta").read_bytes())
    part = cifar_part(1, 0)
    part["data"] = part["data"][:, :1024]
    (folder / "test").write_bytes(pickle.dumps(part, 2))
    with pytest.raises(ValueError, match=r"'data' should be uint8 \[N, 3072\]"):
        load_dataset(f"fc100:{tmp_path}", None, "train")
    part = cifar_part(1, 0)
    part["fine_labels"] = part["fine_labels"][:-1]
    (folder / "test").write_bytes(pickle.dumps(part, 2))
    with pytest.raises(ValueError, match=r"'fine_labels' should hold one integer"):
        load_dataset(f"fc100:{tmp_path}", None, "train")
    (folder / "test").unlink()
    with pytest.raises(FileNotFoundError, match="No CIFAR-100 python archive"):
        load_dataset(f"fc100:{tmp_path}", None, "train")


# --- CUB-200-2011 ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cub_dir(tmp_path_factory):
    """CUB_200_2011/ with all 200 class folders, 2 JPEGs each, images.txt and classes.txt;
    the class numbered n is in colour(n)."""
    root = tmp_path_factory.mktemp("cub")
    folder = root / "CUB_200_2011"
    lines, classes = [], []
    for number, name in enumerate(cub.all_classes(), start=1):
        classes.append(f"{number} {name}")
        for i in range(2):
            filename = f"{name.split('.')[1]}_{i:04d}_{number}.jpg"
            write_jpeg(folder / "images" / name / filename, colour(number), size=12)
            lines.append(f"{len(lines) + 1} {name}/{filename}")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_cub_from_the_folder(cub_dir):
    seen = []
    for subset, ways in zip(SUBSETS, (100, 50, 50)):
        data = load_dataset(f"cub:{cub_dir}", "chen", subset, image_size=8)
        assert data.class_names == tuple(benchmarks.read_list("cub", subset))
        assert data.images.shape == (2 * ways, 8, 8, 3)
        numbers = [int(name[:3]) for name in data.class_names]
        np.testing.assert_allclose(class_colours(data), [colour(n) for n in numbers], atol=3)
        sample_episode(data, ways=5)
        seen.append(set(data.class_names))
    assert sum(map(len, seen)) == len(set().union(*seen)) == 200
    # The CUB_200_2011 folder named directly, without images.txt: its class folders.
    folder = cub_dir / "CUB_200_2011"
    listed = load_dataset(f"cub:{folder}", None, "test", image_size=8)
    (folder / "images.txt").rename(folder / "images.txt.bak")
    try:
        scanned = load_dataset(f"cub:{folder}", None, "test", image_size=8)
    finally:
        (folder / "images.txt.bak").rename(folder / "images.txt")
    np.testing.assert_array_equal(scanned.images, listed.images)
    assert load_dataset(f"cub:{cub_dir}", None, "val").images.shape[1:] == (84, 84, 3)


def test_cub_errors(cub_dir, tmp_path):
    folder = tmp_path / "CUB_200_2011"
    source = cub_dir / "CUB_200_2011"
    (folder / "images").mkdir(parents=True)
    lines = (source / "images.txt").read_text().splitlines()
    test_classes = benchmarks.read_list("cub", "test")
    keep = [line for line in lines if line.split()[1].split("/")[0] in test_classes[1:]]
    (folder / "images.txt").write_text("\n".join(keep) + "\n")
    with pytest.raises(ValueError, match=r"lacks 1 of the 50 classes of the split: "
                                         r"\['004.Groove_billed_Ani'\]"):
        load_dataset(f"cub:{tmp_path}", None, "test")
    keep = [line for line in lines if line.split()[1].split("/")[0] in test_classes]
    (folder / "images.txt").write_text("\n".join(keep) + "\n")
    with pytest.raises(FileNotFoundError, match=r"100 of the 100 images .*images\.txt lists "
                                                r"are missing"):
        load_dataset(f"cub:{tmp_path}", None, "test")
    for line in keep:
        relative = line.split()[1]
        (folder / "images" / relative).parent.mkdir(exist_ok=True)
        (folder / "images" / relative).write_bytes((source / "images" / relative).read_bytes())
    bad = folder / "images" / keep[-1].split()[1]
    bad.write_bytes(b"GIF89a broken")
    with pytest.raises(ValueError, match=rf"Cannot read .*{bad.name} as an image"):
        load_dataset(f"cub:{tmp_path}", None, "test")
    (folder / "classes.txt").write_text("1 001.Black_footed_Albatross\n")
    with pytest.raises(ValueError, match="names class folders .*classes.txt does not list"):
        load_dataset(f"cub:{tmp_path}", None, "test")
    with pytest.raises(FileNotFoundError, match="No CUB-200-2011 in"):
        load_dataset(f"cub:{tmp_path / 'nothing'}", None, "test")


def test_tfds_sources_are_read_only_when_prepared(tmp_path):
    """DIR "tfds" reads an already prepared TFDS copy; nothing is downloaded."""
    for spec, name in (("cifar_fs:tfds", "cifar100"), ("fc100:tfds", "cifar100"),
                       ("cub:tfds", "caltech_birds2011")):
        with pytest.raises(FileNotFoundError, match=rf"TFDS {name} is not prepared in "
                                                    rf"{tmp_path}.*never download"):
            load_dataset(spec, None, "test", source=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_evaluation_measures_a_benchmark_by_its_own_protocol(ravi_dir):
    from keras_fewshot import evaluation
    from keras_fewshot.models import PrototypicalNetwork
    for name, spec in benchmarks.PROTOCOLS.items():
        assert evaluation.PROTOCOLS[name]["settings"] == spec["settings"] == ((5, 1), (5, 5))
        assert evaluation.protocol_episodes(name) == spec["episodes"]
    assert evaluation.protocol_episodes("vinyals") == evaluation.DEFAULT_EPISODES
    data, name, within_group, protocol = evaluation.evaluation_data(
        f"mini_imagenet:{ravi_dir}", image_size=16)  # no split: the benchmark's own
    assert (protocol, within_group) == ("mini_imagenet", False)
    assert name.endswith("ravi/test") and data.num_classes == 2
    assert set(data.class_names) <= set(l for _, l in packaged_rows("test"))
    with pytest.raises(ValueError, match="own class split"):
        evaluation.evaluation_data(f"mini_imagenet:{ravi_dir}", split="all", image_size=16)
    model = PrototypicalNetwork(image_size=16, filters=4)
    rows = evaluation.evaluate_data(model, data, name, [(2, 1)], episodes=2, queries=1,
                                    verbose=0, protocol=protocol)
    assert [(r["ways"], r["shots"], r["episodes"]) for r in rows] == [(2, 1, 2)]


# --- a few training steps on each source -------------------------------------------------

# (data set, fixture holding its copy): mini-ImageNet both as Ravi's folder and as the pickle
# caches. ways=2 throughout: some copies hold only 2 classes a subset.
SOURCES = [("mini_imagenet", "ravi_dir"), ("mini_imagenet", "cache_dir"),
           ("cifar_fs", "cifar_dir"), ("fc100", "cifar_dir"), ("cub", "cub_dir")]
TRAIN_SIZE = 16  # ResNet-12 and conv4 both pool 4 times: 16 -> 1


def tiny_resnet12():
    """A ResNet-12 of widths 4-4-8-8, serialised as a model_config's backbone spec."""
    return keras.saving.serialize_keras_object(ResNet12(filters=(4, 4, 8, 8), name="embedding"))


# MAML first-order with one test-time step: what differs between sources is the data, and
# the second-order meta-gradient doubles the run's cost (tests/test_meta.py checks it).
RUNS = {"protonet_resnet12": ("protonet", {"backbone": tiny_resnet12, "preprocessor": "rgb",
                                           "image_size": TRAIN_SIZE}),
        "maml_conv4": ("maml", {"ways": 2, "backbone": "conv4", "filters": 4,
                                "preprocessor": "rgb", "image_size": TRAIN_SIZE,
                                "first_order": True, "test_inner_steps": 1})}


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("dataset, fixture", SOURCES, ids=[f"{d}-{f}" for d, f in SOURCES])
def test_a_few_training_steps_on_each_source(request, tmp_path, dataset, fixture, run):
    """Two steps through the real training entry (ProtoNet with a tiny ResNet-12, MAML with
    conv4, both with the RGB preprocessor): the run keeps colour end to end, writes its
    files and reloads to the same logits."""
    spec = f"{dataset}:{request.getfixturevalue(fixture)}"
    model_name, model_config = RUNS[run]
    model_config = {k: v() if callable(v) else v for k, v in model_config.items()}
    split, subset = datasets.default_split(spec)
    config = training.TrainConfig(model=model_name, model_config=model_config, dataset=spec,
                                  split=split, subset=subset, ways=2, shots=1, queries=1,
                                  episodes=2, episodes_per_epoch=2, seed=1)
    model_dir = tmp_path / "run"
    model = training.train(config, model_dir, verbose=0)

    assert int(model.optimizer.iterations.numpy()) == 2
    written = json.loads((model_dir / "config.json").read_text())
    assert written["dataset"] == spec and written["model_config"]["preprocessor"] == "rgb"
    assert written["model_config"]["backbone"] == model_config["backbone"]
    assert training.read_config(model_dir) == config
    assert (model_dir / training.WEIGHTS_FILE).is_file()
    assert (model_dir / "checkpoints" / "ckpt-2.weights.h5").is_file()
    with open(model_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"]))

    # Colour kept: the training images have 3 channels that differ, the training stream
    # carries them, and the backbone's first convolution was built on (and trained with)
    # the RGB preprocessor's 3 channels.
    data = training.load_data(config, subset)
    assert data.images.shape[1:] == (TRAIN_SIZE, TRAIN_SIZE, 3)
    assert np.any(data.images[..., 0] != data.images[..., 1])
    (inputs, _), = training.training_dataset(
        dataclasses.replace(config, episodes=1), model, data).as_numpy_iterator()
    assert inputs["support_images"].shape[-3:] == (TRAIN_SIZE, TRAIN_SIZE, 3)
    assert isinstance(model.preprocess, RGBPreprocessing)
    backbone = model.embedding if model_name == "protonet" else model.meta.learner.layers[0]
    assert isinstance(backbone, ResNet12 if model_name == "protonet" else Conv4Embedding)
    first_kernel = next(w for w in backbone.weights if len(w.shape) == 4)
    assert first_kernel.shape[2] == 3

    # The released run rebuilds the same model: identical logits on a fixed test episode.
    test = training.load_data(config, "test")
    (episode, _), = episode_dataset(test.images, test.labels, 2, 1, 1, seed=5,
                                    num_episodes=1).as_numpy_iterator()
    reloaded = training.model_from_dir(model_dir)
    logits = model(episode, training=False).numpy()
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(reloaded(episode, training=False).numpy(), logits)
