"""keras_fewshot.classify: your own support and query images, and the packaged sample."""

import keras
import numpy as np
import pytest

from keras_fewshot import classify, zoo
from keras_fewshot.data import omniglot
from keras_fewshot.models import PrototypicalNetwork


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return PrototypicalNetwork(filters=8)


@pytest.fixture
def folders(tmp_path, write_image_folder):
    """support/ (3 classes: 2, 1 and 3 shots, RGB 14x12) and query/ (2 of those classes, in
    another order of creation, gray 20x20: support and query may differ)."""
    support = write_image_folder(tmp_path / "support", {"owl": 2, "cat": 1, "emu": 3},
                                 size=(14, 12))
    query = write_image_folder(tmp_path / "query", {"emu": 2, "cat": 1}, size=(20, 20),
                               channels=1, seed=1)
    return tmp_path, support, query


def test_classify_gives_the_models_softmax_and_the_truth_by_name(model, folders, np_softmax):
    root, support, query = folders
    result = classify.classify(model, root / "support", root / "query")
    assert result.class_names == ("cat", "emu", "owl")
    np.testing.assert_array_equal(result.query_labels, [0, 1, 1])  # cat, emu, emu
    assert [p.parent.name for p in result.query_paths] == ["cat", "emu", "emu"]
    episode = {"support_images": np.stack(support["cat"] + support["emu"] + support["owl"]),
               "support_labels": np.array([0, 1, 1, 1, 2, 2], np.int32),
               "query_images": np.stack(query["cat"] + query["emu"])}
    expected = np_softmax(model(episode).numpy().astype(np.float64))
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(result.predictions, expected.argmax(-1))
    assert result.accuracy == pytest.approx(np.mean(expected.argmax(-1) == [0, 1, 1]))


def test_queries_as_a_flat_folder_or_files(model, folders):
    root, _, _ = folders
    files = sorted((root / "query" / "emu").iterdir())
    by_folder = classify.classify(model, root / "support", root / "query" / "emu")
    by_files = classify.classify(model, root / "support", [str(f) for f in files])
    assert by_folder.query_labels is None and by_folder.accuracy is None
    assert list(by_folder.query_paths) == list(by_files.query_paths) == files
    np.testing.assert_allclose(by_folder.probabilities, by_files.probabilities)


def test_query_errors_name_the_problem(model, folders, write_image_folder):
    root, _, _ = folders
    write_image_folder(root / "query", {"yak": 1})
    with pytest.raises(ValueError, match=r"Query classes \['yak'\] .* are not in the support"):
        classify.classify(model, root / "support", root / "query")
    (root / "query" / "loose.png").write_bytes((root / "query" / "yak" / "000.png").read_bytes())
    with pytest.raises(ValueError, match="mixes files and folders"):
        classify.classify(model, root / "support", root / "query")
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="Query folder .*empty is empty"):
        classify.classify(model, root / "support", root / "empty")
    with pytest.raises(ValueError, match="is a folder; give query image files"):
        classify.classify(model, root / "support", [root / "query" / "yak", root / "empty"])


def test_the_packaged_sample_is_omniglot_test_characters():
    support, query = classify.sample_dir() / "support", classify.sample_dir() / "query"
    test_characters = {f"{a}_character{n:02d}" for a, n, _ in
                       omniglot.read_vinyals_classes("test")}
    names = sorted(p.name for p in support.iterdir())
    assert len(names) == 20 and set(names) <= test_characters
    assert sorted(p.name for p in query.iterdir()) == names
    for name in names:
        shots = [p.name for p in (support / name).iterdir()]
        queries = sorted(p.name for p in (query / name).iterdir())
        assert len(shots) == 1 and len(queries) == 4
        assert not set(shots) & set(queries)  # different drawings of the character


def test_zoo_model_classifies_the_sample(monkeypatch):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    if not zoo.get_entry("protonet_omniglot").weights_path.is_file():
        pytest.skip("protonet_omniglot weights not present")
    model = zoo.load("protonet_omniglot")
    result = classify.classify(model, classify.sample_dir() / "support",
                               classify.sample_dir() / "query")
    assert result.query_images.shape == (80, 105, 105, 1)
    assert result.accuracy > 0.8  # 20-way 1-shot; the card reports 95% over 1000 episodes
