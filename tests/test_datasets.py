"""keras_fewshot.data.datasets: every source by name, class splits, TFDS without network."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_fewshot.data import LabelledImages, load_dataset, read_tfds, select_subset
from keras_fewshot.data import datasets

TINY_CLASSES = ("circle", "square", "star", "wave", "zigzag")


class KerasFewshotTinyImages(tfds.core.GeneratorBasedBuilder):
    """5 classes x 6 images of 8x8x1 in "train", 5 x 2 in "test"; pixel [0, 0] = index."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=TINY_CLASSES)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 30), "test": self._generate_examples(30, 10)}

    def _generate_examples(self, start, count):
        for index in range(start, start + count):
            image = np.full((8, 8, 1), 200, np.uint8)
            image[0, 0, 0] = index
            yield index, {"image": image, "label": index % 5}


class KerasFewshotTinyText(tfds.core.GeneratorBasedBuilder):
    """Not an image-classification dataset."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"text": "hello"}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data_dir with the tiny datasets prepared (no network involved)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    KerasFewshotTinyImages(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def labelled(num_classes, per_class=2):
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    return LabelledImages(np.zeros((len(labels), 1, 1, 1), np.uint8), labels,
                          tuple(f"class{c:02d}" for c in range(num_classes)),
                          np.zeros(num_classes, np.int32))


def test_dataset_names_and_their_defaults():
    assert datasets.parse_dataset("omniglot") == ("omniglot", "")
    assert datasets.parse_dataset("folder:/a/b:c") == ("folder", "/a/b:c")
    assert datasets.parse_dataset("tfds:mnist@train") == ("tfds", "mnist@train")
    for bad in ("mnist", "folder:", "zip:/x"):
        with pytest.raises(ValueError, match=r"Unknown dataset .*'folder:PATH'"):
            datasets.parse_dataset(bad)
    assert datasets.default_split("omniglot") == ("vinyals", "trainval")
    assert datasets.default_split("omniglot", "lake") == ("lake", "background")
    assert datasets.default_split("folder:x") == ("all", "all")
    assert datasets.default_split("tfds:x", "random:train=0.5,test=0.5") == (
        "random:train=0.5,test=0.5", "train")


def test_random_split_partitions_the_classes_by_fraction_and_seed():
    data = labelled(20)
    split = "random:train=0.6,val=0.15,test=0.25"
    parts = {s: select_subset(data, split, s) for s in ("train", "val", "test")}
    assert {s: p.num_classes for s, p in parts.items()} == {"train": 12, "val": 3, "test": 5}
    names = [set(p.class_names) for p in parts.values()]
    assert set.union(*names) == set(data.class_names) and sum(map(len, names)) == 20
    for part in parts.values():  # labels 0..C-1, each example with its own class's name
        np.testing.assert_array_equal(np.unique(part.labels), np.arange(part.num_classes))
    assert select_subset(data, split, "test").class_names == parts["test"].class_names
    reseeded = select_subset(data, split + ",seed=5", "test").class_names
    assert reseeded != parts["test"].class_names
    assert datasets.subset_names(split) == ["train", "val", "test"]
    assert datasets.evaluation_subset(split) == "test"
    assert select_subset(data, "all", "all") is data


@pytest.mark.parametrize("split, subset, match", [
    ("random:train=0.5,test=0.4", "train", r"positive fractions summing to 1"),
    ("random:train=half", "train", r"Bad item 'train=half'"),
    ("random:train=0.97,test=0.03", "test", r"leaves a subset empty"),
    ("random:train=0.5,test=0.5", "val", r"has subsets \['train', 'test'\], not 'val'"),
    ("all", "train", r"has subsets \['all'\], not 'train'"),
    ("thirds", "all", r"Unknown class split 'thirds'"),
])
def test_bad_class_splits(split, subset, match):
    with pytest.raises(ValueError, match=match):
        select_subset(labelled(10), split, subset)


def test_list_split(tmp_path):
    (tmp_path / "train.txt").write_text("class03\nclass00\n\nclass05\n")
    (tmp_path / "test.txt").write_text("class01\n")
    data = labelled(6)
    train = select_subset(data, f"lists:{tmp_path}", "train")
    assert train.class_names == ("class03", "class00", "class05")  # the file's order
    assert datasets.evaluation_subset(f"lists:{tmp_path}") == "test"
    (tmp_path / "test.txt").write_text("class01\nclass77\n")
    with pytest.raises(ValueError, match=r"test\.txt names classes the data does not have: "
                                         r"\['class77'\]"):
        select_subset(data, f"lists:{tmp_path}", "test")
    with pytest.raises(FileNotFoundError, match="no <subset>.txt files"):
        select_subset(data, f"lists:{tmp_path / 'nowhere'}", "test")


def test_folder_dataset_at_model_resolution(tmp_path):
    """Constant RGB images: at model resolution every pixel is the colour's channel mean."""
    colours = {"a": (30, 60, 90), "b": (255, 0, 0), "c": (10, 10, 10)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for i in range(3):
            image = np.broadcast_to(np.asarray(colour, np.uint8), (17 + i, 13, 3))  # sizes vary
            (tmp_path / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    data = load_dataset(f"folder:{tmp_path}", "all", "all", image_size=9)
    assert data.images.shape == (9, 9, 9, 1) and data.class_names == ("a", "b", "c")
    for label, colour in enumerate(colours.values()):
        np.testing.assert_array_equal(data.images[data.labels == label],
                                      np.full((3, 9, 9, 1), round(np.mean(colour))))
    with pytest.raises(ValueError, match="names its folder itself"):
        load_dataset(f"folder:{tmp_path}", "all", "all", source="/somewhere")
    with pytest.raises(ValueError, match="rotations apply to Omniglot's Lake split only"):
        load_dataset(f"folder:{tmp_path}", "all", "all", rotations=True)


def test_tfds_dataset_from_a_local_data_dir(tfds_dir):
    data = read_tfds("keras_fewshot_tiny_images", data_dir=tfds_dir, download=False)
    assert data.class_names == TINY_CLASSES and data.images.shape == (40, 8, 8, 1)
    index = data.images[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(np.sort(index), np.arange(40))  # both splits, each once
    np.testing.assert_array_equal(data.labels, index % 5)
    train = read_tfds("keras_fewshot_tiny_images", "train", data_dir=tfds_dir, download=False)
    assert np.all(train.images[:, 0, 0, 0] < 30)
    rgb = read_tfds("keras_fewshot_tiny_images", data_dir=tfds_dir, channels=3, image_size=4,
                    download=False)
    assert rgb.images.shape == (40, 4, 4, 3)


def test_tfds_dataset_through_load_dataset(tfds_dir):
    split = "random:train=0.6,test=0.4"
    test = load_dataset("tfds:keras_fewshot_tiny_images@test", split, "test", source=tfds_dir,
                        image_size=4)
    train = load_dataset("tfds:keras_fewshot_tiny_images@test", split, "train",
                         source=tfds_dir, image_size=4)
    assert (train.num_classes, test.num_classes) == (3, 2)
    assert not set(train.class_names) & set(test.class_names)
    assert test.images.shape == (4, 4, 4, 1)  # 2 classes x 2 test images, model resolution


def test_tfds_errors(tfds_dir, tmp_path):
    with pytest.raises(ValueError, match="not an image-classification dataset"):
        read_tfds("keras_fewshot_tiny_text", data_dir=str(tmp_path), download=False)
    with pytest.raises(Exception, match="could not find data"):  # TFDS's own message
        read_tfds("keras_fewshot_tiny_images", data_dir=str(tmp_path), download=False)
