"""keras_fewshot.zoo: entries as data (metadata.json), verified whole, and the released
models' accuracy against their cards."""

import hashlib
import json
import pathlib
import re
import shutil

import keras
import numpy as np
import pytest

import keras_fewshot
from keras_fewshot import evaluation, training, zoo
from keras_fewshot.models import (EpisodicClassifier, MAMLClassifier, MAMLRegressor,
                                  PrototypicalNetwork, SequenceClassifier)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ZOO = REPO_ROOT / "zoo"
NAME = "protonet_omniglot"
RELEASED_WEIGHTS = ZOO / NAME / training.WEIGHTS_FILE
RELEASED = sorted(d.name for d in ZOO.iterdir() if (d / zoo.METADATA_FILE).is_file())


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def write_metadata(folder, **changes):
    """A metadata.json for `folder` with the true sha256 of its config and weights."""
    meta = {"metadata_version": 1, "description": "A tiny test model.", "protocol": "vinyals",
            "sha256": {f: sha256(folder / f) for f in zoo.VERIFIED_FILES},
            "train_commands": ["python tools/train.py --model_dir=runs/tiny"], **changes}
    (folder / zoo.METADATA_FILE).write_text(json.dumps(meta))
    return meta


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, make_episode, rng):
    """$KERAS_FEWSHOT_ZOO_DIR: a zoo whose only entry, NAME, is a tiny model.

    Returns (its folder, the original model, an episode).
    """
    keras.utils.set_random_seed(0)
    model = PrototypicalNetwork(filters=8)
    folder = tmp_path / "zoo" / NAME
    folder.mkdir(parents=True)
    config = training.TrainConfig(model_config={"filters": 8})
    (folder / training.CONFIG_FILE).write_text(config.to_json())
    model.save_weights(folder / training.WEIGHTS_FILE)
    write_metadata(folder)
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path / "zoo"))
    episode, _ = make_episode(4, 2, 3, rng)
    return folder, model, episode


def corrupt(path):
    """Flips one byte in the middle of `path`; returns the corrupted bytes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def copy_entry(name, zoo_root):
    """Copies the released entry `name` (its load-time files) into `zoo_root`/name."""
    (zoo_root / name).mkdir(parents=True)
    for file_name in (*zoo.VERIFIED_FILES, zoo.METADATA_FILE):
        shutil.copy(ZOO / name / file_name, zoo_root / name / file_name)
    return zoo_root / name


def test_list_models(monkeypatch):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    models = keras_fewshot.list_models()
    assert NAME in models
    assert isinstance(models[NAME], str) and len(models[NAME]) > 10
    assert sorted(models) == sorted(zoo.REGISTRY) == RELEASED
    assert zoo.REGISTRY[NAME].name == NAME and zoo.REGISTRY.get("nope") is None
    # every folder of zoo/ is an entry: none was left without its metadata.json
    assert RELEASED == sorted(d.name for d in ZOO.iterdir() if d.is_dir())


def test_registry_entries_are_complete(monkeypatch):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    for name, entry in zoo.registry().items():
        assert entry.name == name and entry.directory == ZOO / name
        assert entry.protocol in evaluation.PROTOCOLS
        assert all(c.startswith("python tools/train.py ") for c in entry.train_commands)
        assert f"--model={name}" in entry.evaluate_command
        assert entry.card_path.is_file()


@pytest.mark.parametrize("name", RELEASED)
def test_every_released_entry_is_verified_whole(name, monkeypatch):
    """The sha256 in metadata.json are those of the files: the config and the weights."""
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    entry = zoo.get_entry(name)
    assert zoo.verify(entry) == ZOO / name
    for file_name in zoo.VERIFIED_FILES:
        assert entry.hashes[file_name] == sha256(ZOO / name / file_name)


@pytest.mark.parametrize("name", RELEASED)
def test_training_commands_give_the_released_config(name, monkeypatch, train_config_of):
    """The last training command's flags give exactly the entry's config.json; a first phase
    gives the pretrain_config.json kept beside it; every zoo entry a command starts from
    (--init_from, --embedding_from) is in the zoo."""
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    entry = zoo.get_entry(name)
    assert train_config_of(entry.train_commands[-1]) == training.read_config(entry.directory)
    if len(entry.train_commands) > 1 and (entry.directory / "pretrain_config.json").is_file():
        pretrain = training.TrainConfig.from_dict(
            json.loads((entry.directory / "pretrain_config.json").read_text()))
        assert train_config_of(entry.train_commands[-2]) == pretrain
    for command in entry.train_commands:
        config = train_config_of(command)
        for start in (config.init_from, config.embedding_from):
            if start.startswith("zoo/"):
                assert start.removeprefix("zoo/") in RELEASED, (name, start)


def test_unknown_name_lists_the_available_models():
    with pytest.raises(ValueError, match=rf"Unknown zoo model 'nope'.*available:.*{NAME}"):
        keras_fewshot.load("nope")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        keras_fewshot.load("no/such/folder")


def test_zoo_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    assert zoo.zoo_dir() == ZOO  # a checkout (or pip install -e .): no packaged copy
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path))
    assert zoo.zoo_dir() == tmp_path and keras_fewshot.list_models() == {}
    copy_entry(NAME, tmp_path)
    assert list(keras_fewshot.list_models()) == [NAME]
    assert zoo.get_entry(NAME).weights_path == tmp_path / NAME / training.WEIGHTS_FILE
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=rf"{zoo.ZOO_DIR_ENV}=.*missing does not exist"):
        keras_fewshot.list_models()


def test_load_verified_weights(tiny_zoo):
    _, model, episode = tiny_zoo
    loaded = keras_fewshot.load(NAME)
    assert isinstance(loaded, PrototypicalNetwork) and loaded.filters == 8
    np.testing.assert_array_equal(loaded(episode).numpy(), model(episode).numpy())


def test_load_a_directory(tiny_zoo, tmp_path):
    """A folder of one's own (config.json + model.weights.h5, no metadata.json) loads as it
    is; the same folder with a metadata.json is verified first."""
    folder, model, episode = tiny_zoo
    mine = tmp_path / "mine"
    mine.mkdir()
    for file_name in zoo.VERIFIED_FILES:
        shutil.copy(folder / file_name, mine / file_name)
    for spelling in (mine, str(mine)):
        np.testing.assert_array_equal(keras_fewshot.load(spelling)(episode).numpy(),
                                      model(episode).numpy())
    shutil.copy(folder / zoo.METADATA_FILE, mine / zoo.METADATA_FILE)
    corrupt(mine / training.WEIGHTS_FILE)
    with pytest.raises(ValueError, match="sha256"):
        keras_fewshot.load(mine)


def test_load_without_weights_builds_the_architecture(tiny_zoo):
    _, model, episode = tiny_zoo
    fresh = zoo.load(NAME, load_weights=False)
    assert isinstance(fresh, PrototypicalNetwork) and fresh.filters == 8
    assert not np.array_equal(fresh(episode).numpy(), model(episode).numpy())


def test_from_preset_refuses_a_model_of_another_class(tiny_zoo):
    assert isinstance(zoo.from_preset(PrototypicalNetwork, NAME), PrototypicalNetwork)
    with pytest.raises(ValueError, match=f"'{NAME}' is a PrototypicalNetwork, not a "
                                         "MAMLClassifier"):
        zoo.from_preset(MAMLClassifier, NAME)


def test_from_preset_on_the_model_classes(tiny_zoo):
    _, model, episode = tiny_zoo
    loaded = PrototypicalNetwork.from_preset(NAME)
    np.testing.assert_array_equal(loaded(episode).numpy(), model(episode).numpy())
    assert isinstance(EpisodicClassifier.from_preset(NAME), PrototypicalNetwork)
    for other in (MAMLClassifier, SequenceClassifier, MAMLRegressor):
        with pytest.raises(ValueError, match=f"is a PrototypicalNetwork, not a {other.__name__}"):
            other.from_preset(NAME)


def test_corrupted_weights_are_refused_and_left_alone(tiny_zoo):
    folder, _, _ = tiny_zoo
    weights = folder / training.WEIGHTS_FILE
    corrupted = corrupt(weights)
    with pytest.raises(ValueError, match=re.escape(str(weights)) + " has sha256 .*refusing"):
        keras_fewshot.load(NAME)
    assert weights.read_bytes() == corrupted


def test_missing_weights(tiny_zoo):
    folder, _, _ = tiny_zoo
    (folder / training.WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="model.weights.h5 of 'protonet_omniglot' not "
                                                "found"):
        keras_fewshot.load(NAME)


def test_an_edited_config_is_refused(tmp_path, monkeypatch):
    """The issue's case: maml_omniglot's inner_learning_rate set to 50 loaded silently."""
    folder = copy_entry("maml_omniglot", tmp_path)
    config = json.loads((folder / training.CONFIG_FILE).read_text())
    config["model_config"]["inner_learning_rate"] = 50
    (folder / training.CONFIG_FILE).write_text(json.dumps(config))
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=re.escape(str(folder / training.CONFIG_FILE))
                       + " has sha256 .* expects"):
        keras_fewshot.load("maml_omniglot")
    with pytest.raises(ValueError, match="config.json has sha256"):
        keras_fewshot.load("maml_omniglot", load_weights=False)


@pytest.mark.parametrize("text, problem", [
    ("{bad", "is not valid JSON"),
    ("[1, 2]", "a JSON object of settings, got a list"),
    ('{"model_config": "filters=8"}', "model_config must be a dict .*, got 'filters=8'"),
    ('{"model_config": {"image_size": "big"}}', "image_size must be a positive whole number "
                                                "of pixels, got 'big'"),
    ('{"model_config": {"image_size": 0}}', "image_size must be a positive whole number"),
    ('{"episodes": 2.5}', "episodes must be a whole number, got 2.5"),
    ('{"model": "nonet"}', "Unknown model 'nonet'"),
    ('{"modle": "protonet"}', r"Unknown training config keys \['modle'\]"),
    ('{"model_config": {"filterz": 8}}', "its model_config does not build the model"),
])
def test_a_broken_config_is_named_with_its_problem(tiny_zoo, tmp_path, text, problem):
    folder, _, _ = tiny_zoo
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(folder / training.WEIGHTS_FILE, mine / training.WEIGHTS_FILE)
    (mine / training.CONFIG_FILE).write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(mine / training.CONFIG_FILE))
                       + ".*" + problem):
        keras_fewshot.load(mine)


@pytest.mark.parametrize("change, problem", [
    ({"sha256": {"model.weights.h5": "0" * 64}}, "sha256 must map each of"),
    ({"protocol": "imagenet"}, "protocol must be one of"),
    ({"train_commands": "python tools/train.py"}, "train_commands must be a non-empty list"),
    ({"metadata_version": 2}, "metadata_version must be 1"),
    ({"descripton": "typo"}, r"unknown keys \['descripton'\]"),
])
def test_a_broken_metadata_file_is_named_with_its_problem(tiny_zoo, change, problem):
    folder, _, _ = tiny_zoo
    write_metadata(folder, **change)
    with pytest.raises(ValueError, match=re.escape(str(folder / zoo.METADATA_FILE))
                       + " is not a valid zoo entry: .*" + problem):
        keras_fewshot.load(NAME)
    (folder / zoo.METADATA_FILE).write_text("{")
    with pytest.raises(ValueError, match="metadata.json is not valid JSON"):
        keras_fewshot.load(NAME)


@pytest.fixture
def released_weights():
    """Skips (before any data is loaded) while the released weights do not exist."""
    if not RELEASED_WEIGHTS.is_file():
        pytest.skip(f"{RELEASED_WEIGHTS} does not exist yet (the zoo model is being trained)")
    return RELEASED_WEIGHTS


def test_corrupted_copy_of_the_released_model_is_refused(released_weights, tmp_path,
                                                         monkeypatch):
    folder = copy_entry(NAME, tmp_path)
    corrupted = corrupt(folder / training.WEIGHTS_FILE)
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=re.escape(str(folder / training.WEIGHTS_FILE))
                       + " has sha256"):
        keras_fewshot.load(NAME)
    assert (folder / training.WEIGHTS_FILE).read_bytes() == corrupted


@pytest.mark.parametrize("name", RELEASED)
def test_released_model_matches_its_card(name, omniglot_dir, monkeypatch):
    """Every zoo model on 10 fresh episodes of its protocol's first setting (seed 7, not the
    card's seed 0) lands within 6 points of the accuracy its card reports over 1000
    (regression: 200 fresh tasks within 0.1 + 25% of the reported MSE; sequence models: 20
    fresh sequences, accuracy averaged over the instances)."""
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    entry = zoo.get_entry(name)
    if not entry.weights_path.is_file():
        pytest.skip(f"{entry.weights_path} does not exist yet (the zoo model is being trained)")
    reported = json.loads((entry.directory / f"eval_{entry.protocol}.json").read_text())
    model = keras_fewshot.load(name)
    if entry.protocol == "sinusoid":  # 200 fresh tasks (seed 7): MSE after the most steps
        row = evaluation.evaluate(model, "sinusoid", episodes=200, seed=7)[-1]
        assert row["inner_steps"] == reported[-1]["inner_steps"]
        assert abs(row["mse"] - reported[-1]["mse"]) < 0.1 + 0.25 * reported[-1]["mse"], (
            row, reported[-1])
        return
    if "instance" in reported[0]:  # a sequence model: 20 fresh sequences, mean over instances
        rows = evaluation.evaluate(model, entry.protocol, episodes=20, seed=7,
                                   data_source=omniglot_dir, image_size=model.image_size,
                                   verbose=0)
        mean = np.mean([r["accuracy"] for r in rows])
        assert abs(mean - np.mean([r["accuracy"] for r in reported])) < 0.06, (rows, reported)
        return
    reported = reported[0]
    setting = (reported["ways"], reported["shots"])
    [row] = evaluation.evaluate(model, entry.protocol, episodes=10, seed=7,
                                data_source=omniglot_dir, image_size=model.image_size,
                                settings=[setting], verbose=0)
    assert abs(row["accuracy"] - reported["accuracy"]) < 0.06, (row, reported)
