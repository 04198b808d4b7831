"""keras_fewshot.data.omniglot: local archives agree with TFDS; the standard splits."""

import io
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_fewshot.data import load_examples, load_split, omniglot
from keras_fewshot.layers import to_model_pixels

ALPHABET = "Blackfoot_(Canadian_Aboriginal_Syllabics)"  # the smallest one: 14 characters
ALPHABET_CHARACTERS = 14


def _zip_path(omniglot_dir, part):
    return pathlib.Path(omniglot_dir) / f"images_{part}.zip"


def _as_sorted_list(examples):
    """Examples (dicts of numpy values) in a canonical order, for multiset comparison."""
    return sorted(examples, key=lambda e: (int(e["label"]), e["image"].tobytes()))


def _assert_same_examples(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(_as_sorted_list(actual), _as_sorted_list(expected)):
        assert set(a) == {"image", "alphabet", "alphabet_char_id", "label"}
        for key in ("alphabet", "alphabet_char_id", "label"):
            assert int(a[key]) == int(e[key]), key
        assert a["image"].dtype == np.uint8 and a["image"].shape == (105, 105, 3)
        np.testing.assert_array_equal(a["image"], e["image"])


@pytest.fixture(scope="module")
def one_alphabet(omniglot_dir, tmp_path_factory):
    """One background alphabet as an extracted folder and as a (re-ordered) zip.

    Returns (folder_source, zip_source): directories to pass as `source`.
    """
    root = tmp_path_factory.mktemp("one_alphabet")
    folder_source, zip_source = root / "folder", root / "zip"
    zip_source.mkdir()
    with zipfile.ZipFile(_zip_path(omniglot_dir, "background")) as archive:
        members = [n for n in archive.namelist()
                   if n.startswith(f"images_background/{ALPHABET}/")]
        archive.extractall(folder_source, members)
        # Written in reverse order: the reader must not depend on the archive's order.
        with zipfile.ZipFile(zip_source / "images_background.zip", "w") as out:
            for name in reversed(members):
                out.writestr(name, archive.read(name))
    return folder_source, zip_source


@pytest.fixture(scope="module")
def library_examples(one_alphabet):
    folder_source, _ = one_alphabet
    return list(load_examples("background", source=str(folder_source)).as_numpy_iterator())


def _all_alphabet_names(omniglot_dir):
    """What TFDS's _split_generators uses for the alphabet ClassLabel: sorted folder names."""
    names = set()
    for part in omniglot.PARTS:
        with zipfile.ZipFile(_zip_path(omniglot_dir, part)) as archive:
            names.update(n.split("/")[1] for n in archive.namelist() if n.count("/") >= 2)
    return sorted(names)


def _tfds_examples(directory, alphabet_names, data_dir):
    """TFDS's own generator over `directory`, through its feature encoding and decoding."""
    from tensorflow_datasets.image_classification import omniglot as tfds_omniglot
    builder = tfds_omniglot.Omniglot(data_dir=str(data_dir))  # no download, no network
    features = builder.info.features
    features["alphabet"].names = alphabet_names
    out = []
    for _, record in builder._generate_examples(str(directory)):
        decoded = features.deserialize_example(features.serialize_example(record))
        example = {k: v.numpy() for k, v in decoded.items()}
        # TFDS decodes the PNG with 3 channels: the same as decoding the file directly.
        direct = tf.io.decode_png(pathlib.Path(record["image"]).read_bytes(), channels=3)
        np.testing.assert_array_equal(example["image"], direct.numpy())
        out.append(example)
    return out


def test_alphabets_are_the_tfds_class_names(omniglot_dir):
    names = _all_alphabet_names(omniglot_dir)
    assert len(names) == 50
    assert list(omniglot.ALPHABETS) == names


def test_local_folder_matches_tfds_generator(one_alphabet, library_examples, omniglot_dir,
                                             tmp_path):
    folder_source, _ = one_alphabet
    expected = _tfds_examples(folder_source, _all_alphabet_names(omniglot_dir), tmp_path)
    assert len(expected) == ALPHABET_CHARACTERS * 20
    _assert_same_examples(library_examples, expected)
    assert {int(e["alphabet"]) for e in library_examples} == {omniglot.ALPHABETS.index(ALPHABET)}
    assert ({int(e["alphabet_char_id"]) for e in library_examples}
            == set(range(ALPHABET_CHARACTERS)))


def test_zip_matches_folder(one_alphabet, library_examples):
    _, zip_source = one_alphabet
    from_zip = list(load_examples("background", source=str(zip_source)).as_numpy_iterator())
    _assert_same_examples(from_zip, library_examples)


def test_environment_variable_selects_the_source(one_alphabet, library_examples, monkeypatch):
    folder_source, _ = one_alphabet
    monkeypatch.setenv(omniglot.ENV_VAR, str(folder_source))
    _assert_same_examples(list(load_examples("background").as_numpy_iterator()),
                          library_examples)


def test_images_are_white_paper_dark_ink(library_examples):
    for example in library_examples:
        image = example["image"]
        assert set(np.unique(image).tolist()) <= {0, 255}  # 1-bit PNGs
        assert (image == 255).mean() > 0.8 and image.min() == 0
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_missing_source_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_examples("background", source=str(tmp_path / "nowhere"))


def test_missing_archive(tmp_path, one_alphabet):
    with pytest.raises(FileNotFoundError, match=r"images_background\.zip"):
        load_examples("background", source=str(tmp_path))
    folder_source, _ = one_alphabet  # holds only the background part
    with pytest.raises(FileNotFoundError, match=r"images_evaluation"):
        load_examples("evaluation", source=str(folder_source))


def test_unknown_part_and_split(tmp_path):
    with pytest.raises(ValueError, match="part"):
        load_examples("train", source=str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        load_split("nope", "test", source=str(tmp_path))
    with pytest.raises(ValueError, match="subset"):
        load_split("vinyals", "testing", source=str(tmp_path))


def test_packaged_vinyals_lists_match_the_shared_copy(omniglot_dir):
    shared = pathlib.Path(omniglot_dir) / "splits" / "vinyals"
    if not shared.is_dir():
        pytest.skip(f"no split lists in {shared}")
    for subset in omniglot.VINYALS_SUBSETS:
        packaged = (omniglot.SPLITS_DIR / "vinyals" / f"{subset}.txt").read_text().split()
        assert packaged == (shared / f"{subset}.txt").read_text().split(), subset


def test_vinyals_test_split(vinyals_test):
    data = vinyals_test
    assert data.num_classes == 1692
    assert data.images.dtype == np.uint8 and data.images.shape == (1692 * 20, 28, 28, 1)
    assert data.labels.shape == (1692 * 20,)
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=1692), np.full(1692, 20))
    expected_names = (omniglot.SPLITS_DIR / "vinyals" / "test.txt").read_text().split()
    assert list(data.class_names) == expected_names
    # Real characters at 28x28: mostly paper, some ink.
    assert 0.6 < (data.images == 255).mean() < 0.98


def _images_by_name(data):
    order = np.argsort(data.labels, kind="stable")
    images = data.images[order].reshape(data.num_classes, 20, *data.images.shape[1:])
    return dict(zip(data.class_names, images))


def test_vinyals_rotations_are_rot90_of_the_character(vinyals_test):
    by_name = _images_by_name(vinyals_test)
    characters = {name.rsplit("/", 1)[0] for name in by_name}
    assert len(characters) == 423
    for character in characters:
        upright = by_name[f"{character}/rot000"]
        for k, rotation in enumerate(("rot090", "rot180", "rot270"), start=1):
            np.testing.assert_array_equal(by_name[f"{character}/{rotation}"],
                                          np.rot90(upright, k, axes=(1, 2)))


def test_vinyals_rotation_is_counterclockwise_like_pil(vinyals_test, omniglot_dir):
    """rot090 = PIL's Image.rotate(90) of the raw PNG (Snell et al.'s loader), then resized."""
    character = vinyals_test.class_names[0].rsplit("/", 1)[0]  # e.g. Gurmukhi/character42
    raws = []
    for part in omniglot.PARTS:
        with zipfile.ZipFile(_zip_path(omniglot_dir, part)) as archive:
            raws += [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("L"))
                     for n in sorted(archive.namelist())
                     if n.startswith(f"images_{part}/{character}/") and n.endswith(".png")]
    assert len(raws) == 20
    by_name = _images_by_name(vinyals_test)
    for rotation in (0, 90, 270):
        rotated = np.stack([np.asarray(Image.fromarray(r).rotate(rotation)) for r in raws])
        expected = to_model_pixels(rotated[..., None], 28).numpy().astype(int)
        actual = by_name[f"{character}/rot{rotation:03d}"].astype(int)
        # Match each expected image to a distinct library image (order-free), within 1 level.
        distance = np.abs(expected[:, None] - actual[None]).max(axis=(2, 3, 4))
        assert distance.min(axis=1).max() <= 1, rotation
        assert sorted(distance.argmin(axis=1)) == list(range(20)), rotation
    assert not np.array_equal(by_name[f"{character}/rot090"], by_name[f"{character}/rot270"])


def test_vinyals_subsets_are_disjoint(omniglot_dir, vinyals_test):
    subsets = {s: load_split("vinyals", s, source=omniglot_dir) for s in ("train", "val")}
    subsets["test"] = vinyals_test
    names = {s: set(d.class_names) for s, d in subsets.items()}
    assert {s: len(n) for s, n in names.items()} == {"train": 4112, "val": 688, "test": 1692}
    characters = {s: {n.rsplit("/", 1)[0] for n in v} for s, v in names.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not names[a] & names[b]
        assert not characters[a] & characters[b]
    trainval = omniglot.read_vinyals_classes("trainval")
    assert len(trainval) == 4800
    assert {f"{a}/character{n:02d}/rot{r:03d}" for a, n, r in trainval} == (
        names["train"] | names["val"])


@pytest.mark.parametrize("subset, classes, alphabets", [("background", 964, 30),
                                                         ("evaluation", 659, 20)])
def test_lake_split(omniglot_dir, subset, classes, alphabets):
    data = load_split("lake", subset, source=omniglot_dir)
    assert data.num_classes == classes
    np.testing.assert_array_equal(np.bincount(data.labels), np.full(classes, 20))
    assert data.groups.shape == (classes,)
    # Each class's group is the ALPHABETS index of the alphabet in its name.
    alphabet_of = [name.split("/")[0] for name in data.class_names]
    np.testing.assert_array_equal(data.groups, [omniglot.ALPHABETS.index(a) for a in alphabet_of])
    assert len(set(alphabet_of)) == alphabets
    assert all(name.endswith("/rot000") for name in data.class_names)
    with zipfile.ZipFile(_zip_path(omniglot_dir, subset)) as archive:
        in_archive = {n.split("/")[1] for n in archive.namelist() if n.count("/") >= 2}
    assert set(alphabet_of) == in_archive


def test_local_examples_give_their_drawer_on_request(one_alphabet, omniglot_dir):
    folder_source, _ = one_alphabet
    examples = load_examples("background", source=str(folder_source), drawers=True)
    pairs = {(int(e["label"]), int(e["drawer"])) for e in examples.as_numpy_iterator()}
    with zipfile.ZipFile(_zip_path(omniglot_dir, "background")) as archive:
        files = {n.rsplit("/", 1)[1][:-len(".png")] for n in archive.namelist()
                 if n.startswith(f"images_background/{ALPHABET}/") and n.endswith(".png")}
    assert pairs == {(int(f.split("_")[0]) - 1, int(f.split("_")[1])) for f in files}
    assert len(pairs) == ALPHABET_CHARACTERS * 20


def test_lake_split_carries_each_images_drawer(omniglot_dir, character_drawings):
    plain = load_split("lake", "evaluation", source=omniglot_dir)
    data = load_split("lake", "evaluation", source=omniglot_dir, drawers=True)
    assert plain.drawers is None and data.drawers.shape == data.labels.shape
    np.testing.assert_array_equal(data.images, plain.images)
    np.testing.assert_array_equal(data.labels, plain.labels)
    order = np.lexsort((data.drawers, data.labels))  # every class drawn once by each of 1..20
    np.testing.assert_array_equal(data.drawers[order].reshape(-1, 20),
                                  np.tile(np.arange(1, 21), (data.num_classes, 1)))
    for label in (0, 311, data.num_classes - 1):  # the archive's file of each image's drawer
        character = data.class_names[label].rsplit("/", 1)[0]
        files = character_drawings("evaluation", character)
        for index in np.flatnonzero(data.labels == label):
            np.testing.assert_array_equal(data.images[index], files[data.drawers[index]])


def test_drawers_are_refused_for_tfds_before_loading(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("data loaded before the source was checked")

    monkeypatch.setattr(omniglot, "_characters", load)
    monkeypatch.setattr(omniglot, "_local_examples", load)
    monkeypatch.delenv(omniglot.ENV_VAR, raising=False)
    for call in (lambda: load_split("lake", "evaluation", drawers=True),
                 lambda: load_split("vinyals", "test", source="tfds", drawers=True),
                 lambda: load_examples("evaluation", drawers=True)):
        with pytest.raises(ValueError, match=r"not in TFDS's omniglot.*local archives.*"
                                             r"KERAS_FEWSHOT_OMNIGLOT_DIR.*--data_dir"):
            call()


NO_NETWORK_SCRIPT = """
import socket, sys
def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from keras_fewshot.data import load_examples
ds = load_examples("evaluation", source=sys.argv[1])
first = next(iter(ds))
assert first["image"].shape == (105, 105, 3)
assert "tensorflow_datasets" not in sys.modules, "TFDS imported for a local source"
print("ok")
"""


def test_local_source_never_touches_the_network(run_python, omniglot_dir):
    result = run_python("-c", NO_NETWORK_SCRIPT, omniglot_dir)
    assert result.stdout.strip().endswith("ok")


def test_tfds_source_goes_through_tfds_load(monkeypatch):
    """With no local source, examples come from tfds.load("omniglot") (mocked: no network)."""
    import tensorflow_datasets as tfds
    monkeypatch.delenv("KERAS_FEWSHOT_OMNIGLOT_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        examples = list(load_examples("evaluation").as_numpy_iterator())
    assert len(examples) == 3
    for example in examples:
        assert example["image"].shape == (105, 105, 3) and example["image"].dtype == np.uint8
        assert {"alphabet", "alphabet_char_id", "label"} <= set(example)
