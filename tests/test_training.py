"""keras_fewshot.training: a tiny run, its files, resuming, and rebuilding the model."""

import csv
import dataclasses
import json
import pathlib
import re
import shutil

import keras
import numpy as np
import pytest

from keras_fewshot import training
from keras_fewshot.training import loop
from keras_fewshot.models import PrototypicalNetwork, build_model

TINY = training.TrainConfig(model="protonet", model_config={"filters": 8}, split="vinyals",
                            subset="val", ways=5, shots=1, queries=1, episodes=4,
                            episodes_per_epoch=2, lr_decay_every=2, seed=3)
INIT_SEED = 42


def checkpoint_numbers(model_dir):
    """Step numbers of the complete checkpoints (TF `ckpt-N.index` or `ckpt-N.weights.h5`)."""
    return sorted(int(m.group(1)) for p in (pathlib.Path(model_dir) / "checkpoints").iterdir()
                  if (m := re.fullmatch(r"ckpt-(\d+)\.(index|weights\.h5)", p.name)))


def history_rows(model_dir):
    with open(pathlib.Path(model_dir) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def train(config, model_dir, omniglot_dir):
    keras.utils.set_random_seed(INIT_SEED)  # same initial weights for every fresh model
    return training.train(config, model_dir, data_source=omniglot_dir, verbose=0)


@pytest.fixture(scope="module")
def tiny_run(omniglot_dir, tmp_path_factory):
    """(model, model_dir) of TINY trained in one go (4 episodes, 2 epochs)."""
    model_dir = tmp_path_factory.mktemp("train") / "run"
    return train(TINY, model_dir, omniglot_dir), model_dir


@pytest.fixture(scope="module")
def episode(vinyals_test, sample_episodes):
    (inputs, _), = sample_episodes(vinyals_test, 5, 2, 3, 1, seed=9)
    return inputs


def test_run_writes_its_files(tiny_run):
    model, model_dir = tiny_run
    assert training.read_config(model_dir) == TINY
    assert json.loads((model_dir / "config.json").read_text())["ways"] == 5
    assert (model_dir / "model.weights.h5").is_file()
    assert not list(model_dir.rglob("tmp.*"))  # no half-written weights or checkpoints
    assert any((model_dir / "logs").rglob("events.out.tfevents.*"))
    assert checkpoint_numbers(model_dir) == [2, 4]  # one per epoch, numbered by step
    rows = history_rows(model_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert np.isfinite(float(row["loss"])) and 0 <= float(row["accuracy"]) <= 1
    assert int(model.optimizer.iterations.numpy()) == 4


def test_model_from_dir_rebuilds_the_model(tiny_run, episode):
    model, model_dir = tiny_run
    rebuilt = training.model_from_dir(model_dir)
    assert isinstance(rebuilt, PrototypicalNetwork) and rebuilt.filters == 8
    np.testing.assert_array_equal(rebuilt(episode).numpy(), model(episode).numpy())


def test_model_from_dir_falls_back_to_the_latest_checkpoint(tiny_run, episode, tmp_path):
    model, model_dir = tiny_run
    copy = shutil.copytree(model_dir, tmp_path / "run")
    (copy / "model.weights.h5").unlink()
    np.testing.assert_array_equal(training.model_from_dir(copy)(episode).numpy(),
                                  model(episode).numpy())
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(FileNotFoundError, match="neither"):
        training.model_from_dir(copy)


def test_resume_continues_the_run(tiny_run, omniglot_dir, tmp_path):
    _, model_dir = tiny_run
    copy = shutil.copytree(model_dir, tmp_path / "run")
    longer = dataclasses.replace(TINY, episodes=8)
    model = train(longer, copy, omniglot_dir)
    assert int(model.optimizer.iterations.numpy()) == 8
    assert checkpoint_numbers(copy) == [4, 6, 8]  # max_to_keep=3, numbering continues at 4
    assert [int(r["epoch"]) for r in history_rows(copy)] == [0, 1, 2, 3]
    assert training.read_config(copy) == longer
    # Budget already reached: nothing more is trained, the weights stay.
    again = train(longer, copy, omniglot_dir)
    assert int(again.optimizer.iterations.numpy()) == 8
    assert len(history_rows(copy)) == 4
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resumed_run_equals_an_uninterrupted_one(tiny_run, omniglot_dir, tmp_path):
    """2 episodes, then resumed to 4: the same weights as 4 in one go (same initial weights)."""
    uninterrupted, _ = tiny_run
    train(dataclasses.replace(TINY, episodes=2), tmp_path / "run", omniglot_dir)
    resumed = train(TINY, tmp_path / "run", omniglot_dir)
    assert checkpoint_numbers(tmp_path / "run") == [2, 4]
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_different_config_in_the_same_dir_is_refused(tiny_run, omniglot_dir):
    _, model_dir = tiny_run
    before = (model_dir / "config.json").read_text()
    with pytest.raises(ValueError, match="different config"):
        training.train(dataclasses.replace(TINY, ways=4), model_dir, data_source=omniglot_dir,
                       verbose=0)
    assert (model_dir / "config.json").read_text() == before
    assert checkpoint_numbers(model_dir) == [2, 4]


def test_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="multiple of episodes_per_epoch"):
        training.train(dataclasses.replace(TINY, episodes=5), tmp_path / "a", verbose=0)
    with pytest.raises(ValueError, match=r"Unknown training config keys \['wayz'\]"):
        training.TrainConfig.from_dict({"wayz": 5})
    with pytest.raises(FileNotFoundError, match="not a training directory"):
        training.read_config(tmp_path)
    with pytest.raises(ValueError, match="Unknown dataset"):
        training.load_data(dataclasses.replace(TINY, dataset="mnist"), "val")
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        training.train(dataclasses.replace(TINY, dtype_policy="float16"), tmp_path / "b",
                       verbose=0)
    assert not (tmp_path / "b").exists()


# Each case: changes to TINY that make no sense, and the error that names the problem.
NONSENSE = {
    "negative learning rate": (dict(learning_rate=-1.0), r"learning_rate must be a positive "
                               r"number, got -1\.0 \(a negative rate climbs the loss: gradient "
                               r"ascent\)"),
    "zero learning rate": (dict(learning_rate=0.0), r"learning_rate must be a positive number, "
                           r"got 0\.0$"),
    "nan learning rate": (dict(learning_rate=float("nan")), r"learning_rate must be a positive "
                          r"number, got nan"),
    "infinite learning rate": (dict(learning_rate=float("inf")), r"learning_rate must be a "
                               r"positive number, got inf"),
    "1-way episodes": (dict(ways=1), r"ways must be at least 2, got 1: a 1-way episode is "
                       r"solved by any model"),
    "1-way pair model": (dict(model="siamese", ways=1), r"ways must be at least 2, got 1"),
    "1-class sequences": (dict(model="mann", model_config={"classes": 2}, ways=1),
                          r"ways must be at least 2, got 1: a sequence of one class"),
    "0-way episodes": (dict(ways=0), r"ways must be at least 1, got 0"),
    "no shots": (dict(shots=0), r"shots must be at least 1, got 0"),
    "negative queries": (dict(queries=-3), r"queries must be at least 1, got -3"),
    "fractional shots": (dict(shots=1.5), r"shots must be a whole number, got 1\.5 \(float\)"),
    "ways as a string": (dict(ways="5"), r"ways must be a whole number, got '5' \(str\)"),
    "shots as a bool": (dict(shots=True), r"shots must be a whole number, got True \(bool\)"),
    "learning rate as a string": (dict(learning_rate="1e-3"), r"learning_rate must be a number, "
                                  r"got '1e-3'"),
    "zero decay rate": (dict(lr_decay_rate=0.0), r"lr_decay_rate must be in \(0, 1\], got 0\.0"),
    "negative decay rate": (dict(lr_decay_rate=-0.5), r"lr_decay_rate must be in \(0, 1\]"),
    "growing decay rate": (dict(lr_decay_rate=2.0), r"lr_decay_rate must be in \(0, 1\], got "
                           r"2\.0: .*more would grow it"),
    "odd pairs": (dict(model="siamese", pairs=3), r"pairs must be an even number >= 2 .*, got 3"),
    "no pairs": (dict(model="siamese", pairs=0), r"pairs must be an even number >= 2 .*, got 0"),
    "two channels": (dict(channels=2), r"channels must be 1 or 3 \(0: as in the files\), got 2"),
    "negative seed": (dict(seed=-1), r"seed must be in \[0, 2\*\*32\), got -1"),
    "model_config as a string": (dict(model_config="filters=8"), r"model_config must be a dict"),
    "rotations as a string": (dict(rotations="no"), r"rotations must be true or false"),
}


@pytest.mark.parametrize("case", sorted(NONSENSE))
def test_nonsense_settings_are_refused_naming_the_problem(case):
    changes, message = NONSENSE[case]
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **changes).validate()


def test_nonsense_is_refused_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError, match="gradient ascent"):
        training.train(dataclasses.replace(TINY, learning_rate=-1.0), tmp_path / "run",
                       verbose=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes", [
    dict(model="maml_regressor", dataset="sinusoid", ways=1),  # regression: ways is unused
    dict(lr_decay_rate=1.0),  # a constant rate
    dict(learning_rate=1),  # an int is a number
    dict(ways=np.int64(5), learning_rate=np.float32(1e-3)),  # numpy numbers, e.g. from a sweep
    dict(pairs=3),  # pairs only matters to pair-trained models
    dict(model="siamese", pairs=2, channels=3, seed=2 ** 32 - 1),
])
def test_sensible_settings_pass(changes):
    dataclasses.replace(TINY, **changes).validate()


@pytest.mark.parametrize("schedule, expected", [
    # step: x0.5 every 8 episodes = 2 steps of 4 episodes; linear: 1 -> 0 over 40 / 4 steps
    ("step", {0: 1.0, 1: 1.0, 2: 0.5, 5: 0.25, 10: 0.03125}),
    ("linear", {0: 1.0, 1: 0.9, 5: 0.5, 9: 0.1, 10: 0.0}),
])
def test_learning_rate_schedules(schedule, expected):
    config = dataclasses.replace(TINY, learning_rate=1.0, episodes=40, episodes_per_step=4,
                                 episodes_per_epoch=4, lr_decay_every=8, lr_decay_rate=0.5,
                                 lr_schedule=schedule)
    config.validate()
    rate = loop.learning_rate_schedule(config)
    assert {step: float(rate(step)) for step in expected} == pytest.approx(expected, abs=1e-7)


def test_unknown_learning_rate_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        dataclasses.replace(TINY, lr_schedule="cosine").validate()


def test_mixed_bfloat16_trains_in_bfloat16_and_releases_a_float32_model(omniglot_dir,
                                                                        tmp_path, episode):
    config = dataclasses.replace(TINY, dtype_policy="mixed_bfloat16", episodes=2)
    model = train(config, tmp_path / "run", omniglot_dir)
    assert model.embedding.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    float32_model = train(dataclasses.replace(config, dtype_policy="float32"),
                          tmp_path / "fp32", omniglot_dir)
    weights = [w.numpy() for w in model.weights]
    trained = [np.abs(a - b).max() for a, b in zip(weights, float32_model.get_weights())]
    assert 0 < max(trained) < 0.05  # the same two steps, in another precision
    rebuilt = training.model_from_dir(tmp_path / "run")  # evaluation and export: float32
    assert rebuilt.embedding.compute_dtype == "float32"
    assert rebuilt(episode).dtype == "float32"


def test_config_json_round_trip():
    assert training.TrainConfig.from_dict(json.loads(TINY.to_json())) == TINY
    assert training.TrainConfig().image_size == 28
    assert dataclasses.replace(TINY, model_config={"image_size": 32}).image_size == 32


LOADING = """
import sys
import keras_fewshot
keras_fewshot.load("protonet_omniglot")
print(" ".join(sorted(m for m in sys.modules if m.startswith("keras_fewshot.training"))))
"""


def test_loading_a_model_does_not_import_the_fit_loop(run_python):
    """keras_fewshot.load needs the config and the run directory, not the loop (nor its
    callbacks); `training.train` imports the loop on first use."""
    loaded = run_python("-c", LOADING).stdout.split()
    assert "keras_fewshot.training.run_dir" in loaded, loaded
    assert "keras_fewshot.training.loop" not in loaded, loaded
    assert "keras_fewshot.training.callbacks" not in loaded, loaded
    from keras_fewshot.training import loop
    assert training.train is loop.train


def test_failed_start_does_not_block_the_corrected_retry(omniglot_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'protonte'"):
        training.train(dataclasses.replace(TINY, model="protonte"), tmp_path / "run",
                       data_source=omniglot_dir, verbose=0)
    model = train(dataclasses.replace(TINY, episodes=2), tmp_path / "run", omniglot_dir)
    assert int(model.optimizer.iterations.numpy()) == 2


def test_run_trains_its_whole_budget_or_refuses(omniglot_dir, tmp_path):
    config = dataclasses.replace(TINY, episodes=6, episodes_per_epoch=3, episodes_per_step=2)
    try:
        model = train(config, tmp_path / "run", omniglot_dir)
    except ValueError:
        return  # refusing the inconsistent config up front is a correct outcome too
    assert int(model.optimizer.iterations.numpy()) * config.episodes_per_step == config.episodes


# --- Lake split with rotations -----------------------------------------------------------------

def _rotate90(images, k):
    """Explicit index formula for a k x 90 degree counter-clockwise rotation of [M, H, W, C]:
    one step maps out[m, i, j] = in[m, j, W - 1 - i] (what np.rot90 does on axes (1, 2))."""
    for _ in range(k):
        images = images[:, :, ::-1].transpose(0, 2, 1, 3)
    return images


@pytest.fixture(scope="module")
def lake_background(omniglot_dir):
    from keras_fewshot.data import load_split
    return (load_split("lake", "background", source=omniglot_dir),
            load_split("lake", "background", source=omniglot_dir, rotations=True))


def test_lake_rotations_add_three_rotated_classes_per_character(lake_background):
    plain, rotated = lake_background
    assert plain.num_classes == 964 and rotated.num_classes == 4 * plain.num_classes
    assert len(rotated.images) == 4 * len(plain.images)
    assert rotated.images.dtype == np.uint8 and rotated.images.shape[1:] == (28, 28, 1)
    np.testing.assert_array_equal(np.unique(rotated.labels), np.arange(rotated.num_classes))
    np.testing.assert_array_equal(rotated.groups, np.repeat(plain.groups, 4))
    for c, name in enumerate(plain.class_names):
        assert name.endswith("/rot000")
        base = plain.images[plain.labels == c]
        for k in range(4):
            index = 4 * c + k
            assert rotated.class_names[index] == name.replace("/rot000", f"/rot{90 * k:03d}")
            assert rotated.groups[index] == plain.groups[c]  # same alphabet for all rotations
            np.testing.assert_array_equal(rotated.images[rotated.labels == index],
                                          _rotate90(base, k), err_msg=rotated.class_names[index])


def test_lake_rotated_classes_match_the_vinyals_classes_of_the_same_name(omniglot_dir,
                                                                         lake_background):
    from keras_fewshot.data import load_split
    _, rotated = lake_background
    vinyals = load_split("vinyals", "val", source=omniglot_dir)
    lake_index = {name: i for i, name in enumerate(rotated.class_names)}
    shared = [(i, lake_index[n]) for i, n in enumerate(vinyals.class_names) if n in lake_index]
    assert len(shared) > 100 and {vinyals.class_names[i][-6:] for i, _ in shared} == {
        "rot000", "rot090", "rot180", "rot270"}
    for v, lake in shared:
        np.testing.assert_array_equal(rotated.images[rotated.labels == lake],
                                      vinyals.images[vinyals.labels == v])


def test_rotations_are_for_the_lake_split_and_its_training_subset_only(omniglot_dir,
                                                                      lake_background):
    from keras_fewshot.data import load_split
    with pytest.raises(ValueError, match="Lake split only"):
        load_split("vinyals", "val", source=omniglot_dir, rotations=True)
    plain, rotated = lake_background
    config = dataclasses.replace(TINY, split="lake", subset="background", rotations=True)
    assert training.load_data(config, "background", omniglot_dir).num_classes == \
        rotated.num_classes
    evaluation = training.load_data(config, "evaluation", omniglot_dir)
    assert evaluation.num_classes == 659
    assert all(name.endswith("/rot000") for name in evaluation.class_names)
    unrotated = dataclasses.replace(config, rotations=False)
    assert training.load_data(unrotated, "background", omniglot_dir).num_classes == \
        plain.num_classes


# --- Within-alphabet training episodes ---------------------------------------------------------

def _index_images(count, size=28):
    """uint8 [count, size, size, 1] whose first two pixels spell the example's index."""
    images = np.full((count, size, size, 1), 255, np.uint8)
    images[:, 0, 0, 0] = np.arange(count) % 256
    images[:, 0, 1, 0] = np.arange(count) // 256
    return images


def _decode_index(images):
    return images[..., 0, 0, 0].astype(np.int64) + 256 * images[..., 0, 1, 0].astype(np.int64)


@pytest.fixture(scope="module")
def grouped_data():
    """Groups of 5, 7, 3 (too few for 5-way) and 6 classes, 4 examples per class, labels and
    examples shuffled so class order, example order and group order are unrelated."""
    from keras_fewshot.data import LabelledImages
    rng = np.random.default_rng(5)
    groups = rng.permutation(np.repeat(np.array([10, 11, 12, 13], np.int32), [5, 7, 3, 6]))
    labels = rng.permutation(np.repeat(np.arange(len(groups), dtype=np.int32), 4))
    return LabelledImages(_index_images(len(labels)), labels,
                          tuple(f"class{c}" for c in range(len(groups))), groups)


def _episode_groups(data, inputs, query_labels):
    """Checks an episode's labels against the true classes; returns the groups it drew from."""
    support_class = data.labels[_decode_index(inputs["support_images"])]
    query_class = data.labels[_decode_index(inputs["query_images"])]
    ways = int(inputs["support_labels"].max()) + 1
    for n in range(ways):  # each episode label is exactly one class, the same in the query
        (c,) = set(support_class[inputs["support_labels"] == n])
        assert set(query_class[query_labels == n]) == {c}
    assert len(set(support_class)) == ways
    return set(data.groups[support_class]) | set(data.groups[query_class])


@pytest.mark.parametrize("episodes_per_step", [1, 2])
def test_within_alphabet_episodes_take_all_classes_from_one_group(grouped_data,
                                                                  episodes_per_step):
    config = dataclasses.replace(TINY, ways=5, shots=1, queries=2, within_alphabet=True,
                                 episodes=40, episodes_per_epoch=40, lr_decay_every=40,
                                 episodes_per_step=episodes_per_step)
    model = PrototypicalNetwork(filters=8)
    seen = []
    for inputs, query_labels in training.training_dataset(config, model, grouped_data)\
            .as_numpy_iterator():
        # training_dataset always batches: [episodes_per_step, ...] per element
        assert inputs["support_images"].shape[:2] == (episodes_per_step, 5)
        for b in range(episodes_per_step):
            groups = _episode_groups(grouped_data, {k: v[b] for k, v in inputs.items()},
                                     query_labels[b])
            assert len(groups) == 1, groups
            seen += groups
    assert len(seen) == 40
    assert set(seen) == {10, 11, 13}  # every usable group is drawn, never the 3-class one
    # Without the option, classes mix groups (the same data and seed).
    mixed = dataclasses.replace(config, within_alphabet=False, episodes_per_step=1)
    spans = [len(_episode_groups(grouped_data, {k: v[0] for k, v in inputs.items()}, labels[0]))
             for inputs, labels in
             training.training_dataset(mixed, model, grouped_data).as_numpy_iterator()]
    assert max(spans) > 1


def test_within_alphabet_episodes_on_lake_with_rotations(lake_background):
    _, rotated = lake_background
    config = dataclasses.replace(TINY, split="lake", subset="background", rotations=True,
                                 within_alphabet=True, ways=20, shots=1, queries=1,
                                 episodes=6, episodes_per_epoch=6, lr_decay_every=6)
    lookup = {}  # image bytes -> alphabets having that exact image
    for image, label in zip(rotated.images, rotated.labels):
        lookup.setdefault(image.tobytes(), set()).add(int(rotated.groups[label]))
    alphabets = []
    for inputs, _ in training.training_dataset(config, PrototypicalNetwork(filters=8),
                                               rotated).as_numpy_iterator():
        images = np.concatenate([inputs["support_images"][0], inputs["query_images"][0]])
        common = set.intersection(*(lookup[x.tobytes()] for x in images))
        assert len(common) == 1, common
        alphabets += common
    assert len(set(alphabets)) > 1


# --- Transfer of the embedding (embedding_from) ------------------------------------------------

def _relation_config(source_dir, **changes):
    """A 2-episode relation run (filters 8, as TINY's protonet) starting from source_dir."""
    values = dict(model="relation", model_config={"filters": 8}, embedding_from=str(source_dir),
                  episodes=2, lr_decay_every=2)
    return dataclasses.replace(TINY, **{**values, **changes})


def test_copy_embedding_copies_the_embedding_and_nothing_else(tiny_run):
    _, model_dir = tiny_run
    source = training.model_from_dir(model_dir)
    target = build_model("relation", {"filters": 8})
    relation_before = [w.copy() for w in target.relation.get_weights()]
    assert not all(np.array_equal(a, b) for a, b in
                   zip(source.embedding.get_weights(), target.embedding.get_weights()))
    loop._copy_embedding(source, target, str(model_dir))
    assert len(target.embedding.weights) == 24  # 4 blocks x (conv kernel, bias, BN x 4)
    for a, b in zip(target.embedding.weights, source.embedding.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(target.relation.get_weights(), relation_before):
        np.testing.assert_array_equal(a, b)
    # The copied conv stack computes what the protonet's does on its first (pooled) blocks.
    pixels = source.preprocess(_index_images(3))
    x_source, x_target = pixels, pixels
    for layer in source.embedding.block_layers[:8]:  # blocks 0 and 1: conv, bn, pool, relu
        x_source = layer(x_source)
    for layer in target.embedding.block_layers[:8]:
        x_target = layer(x_target)
    np.testing.assert_array_equal(x_target.numpy(), x_source.numpy())


def test_copy_embedding_refuses_other_filters_naming_the_shapes(tiny_run):
    _, model_dir = tiny_run
    source = training.model_from_dir(model_dir)
    target = build_model("relation", {"filters": 16})
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match=r"weight shapes .*\(3, 3, 1, 8\).* vs .*\(3, 3, 1, 16\)"):
        loop._copy_embedding(source, target, str(model_dir))
    for a, b in zip(target.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_embedding_from_starts_a_relation_run_with_the_protonet_embedding(tiny_run,
                                                                          omniglot_dir,
                                                                          tmp_path,
                                                                          monkeypatch):
    source_dir = shutil.copytree(tiny_run[1], tmp_path / "source")
    source = training.model_from_dir(source_dir)
    config = _relation_config(source_dir)
    start = {}  # the weights the run starts training from, read as fit begins
    fit = loop._fit

    def recording_fit(config, model, *args, **kwargs):
        start["embedding"] = [w.numpy().copy() for w in model.embedding.trainable_weights]
        start["relation"] = [w.numpy().copy() for w in model.relation.trainable_weights]
        return fit(config, model, *args, **kwargs)

    monkeypatch.setattr(loop, "_fit", recording_fit)
    model = train(config, tmp_path / "run", omniglot_dir)
    assert training.read_config(tmp_path / "run") == config
    assert json.loads((tmp_path / "run" / "config.json").read_text())["embedding_from"] == \
        str(source_dir)
    assert int(model.optimizer.iterations.numpy()) == 2  # it did train
    for a, b in zip(start["embedding"], source.embedding.trainable_weights):
        np.testing.assert_array_equal(a, b.numpy(), err_msg=b.path)
    keras.utils.set_random_seed(config.seed)  # what train() does before building
    fresh = build_model("relation", {"filters": 8})
    for a, b in zip(start["relation"], fresh.relation.trainable_weights):
        np.testing.assert_array_equal(a, b.numpy(), err_msg=b.path)
    assert not np.array_equal(fresh.embedding.trainable_weights[0].numpy(),
                              source.embedding.trainable_weights[0].numpy())
    # Resuming starts from the checkpoint: the source directory is no longer needed.
    shutil.rmtree(source_dir)
    resumed = train(config, tmp_path / "run", omniglot_dir)
    assert int(resumed.optimizer.iterations.numpy()) == 2
    for a, b in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_embedding_from_with_other_filters_is_refused_and_the_retry_works(tiny_run,
                                                                          omniglot_dir,
                                                                          tmp_path):
    _, source_dir = tiny_run
    wrong = _relation_config(source_dir, model_config={"filters": 16})
    with pytest.raises(ValueError, match=r"weight shapes .*\(3, 3, 1, 8\).* vs .*\(3, 3, 1, 16\)"):
        train(wrong, tmp_path / "run", omniglot_dir)
    assert not (tmp_path / "run" / "config.json").exists()
    # A failed start must not block the corrected run in the same directory.
    model = train(_relation_config(source_dir), tmp_path / "run", omniglot_dir)
    assert int(model.optimizer.iterations.numpy()) == 2


def test_missing_init_from_is_refused_before_any_file_is_written(tiny_run, omniglot_dir,
                                                                  tmp_path):
    _, source_dir = tiny_run
    config = dataclasses.replace(TINY, episodes=2, init_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not a training directory"):
        train(config, tmp_path / "run", omniglot_dir)
    assert not (tmp_path / "run" / "config.json").exists()
    fixed = dataclasses.replace(config, init_from=str(source_dir))
    model = train(fixed, tmp_path / "run", omniglot_dir)
    assert int(model.optimizer.iterations.numpy()) == 2


def test_init_from_and_embedding_from_are_exclusive(tiny_run, tmp_path):
    _, source_dir = tiny_run
    both = _relation_config(source_dir, init_from=str(source_dir))
    with pytest.raises(ValueError, match="exclusive"):
        both.validate()
    with pytest.raises(ValueError, match="exclusive"):
        training.train(both, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()
    _relation_config(source_dir).validate()  # either one alone is fine
    dataclasses.replace(TINY, init_from=str(source_dir)).validate()


def test_freeze_embedding_trains_the_head_only(tiny_run, omniglot_dir, tmp_path):
    _, source_dir = tiny_run
    config = dataclasses.replace(_relation_config(source_dir), freeze_embedding=True,
                                 learning_rate=0.01)
    model = train(config, tmp_path / "run", omniglot_dir)
    source = training.model_from_dir(source_dir)
    for a, b in zip(model.embedding.weights, source.embedding.weights):  # BN stats too
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    keras.utils.set_random_seed(config.seed)
    fresh = build_model("relation", {"filters": 8})
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in
               zip(model.relation.trainable_weights, fresh.relation.trainable_weights))
    rebuilt = training.model_from_dir(tmp_path / "run")  # the release loads as usual
    for a, b in zip(rebuilt.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- TensorBoard ---------------------------------------------------------------------------------

def _events(directory):
    """{tag: [(step, value proto)]} of the TensorBoard event files under `directory`."""
    import tensorflow as tf
    found = {}
    for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def test_tensorboard_gets_the_learning_rate_and_episode_pictures(tiny_run):
    import tensorflow as tf
    _, model_dir = tiny_run
    scalars = _events(model_dir / "logs" / "train")
    rates = [(step, float(tf.make_ndarray(v.tensor))) for step, v in
             scalars["epoch_learning_rate"]]
    # lr 1e-3 halved every 2 episodes (staircase): after epoch 0 (2 steps) and 1 (4 steps)
    assert [s for s, _ in rates] == [0, 1]
    np.testing.assert_allclose([r for _, r in rates], [5e-4, 2.5e-4], rtol=1e-6)
    pictures = _events(model_dir / "logs" / "episodes")["episode"]
    assert [step for step, _ in pictures] == [0, 1]
    width, height, png = tf.make_ndarray(pictures[-1][1].tensor)  # image summary: w, h, PNG
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (int(height), int(width), 3) and image.std() > 0


# --- Your own data -------------------------------------------------------------------------------

@pytest.fixture
def image_folder(tmp_path, write_image_folder):
    """6 classes x 4 RGB images of 20x16 pixels."""
    write_image_folder(tmp_path / "images", {f"kind{c}": 4 for c in range(6)}, size=(20, 16))
    return tmp_path / "images"


def test_training_on_an_image_folder(image_folder, tmp_path):
    config = dataclasses.replace(TINY, dataset=f"folder:{image_folder}",
                                 split="random:train=0.5,test=0.5", subset="train", ways=3,
                                 shots=1, queries=3, episodes=2, lr_decay_every=2)
    model = train(config, tmp_path / "run", None)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert training.read_config(tmp_path / "run") == config
    train_classes = training.load_data(config, "train")
    test_classes = training.load_data(config, "test")
    assert train_classes.num_classes == test_classes.num_classes == 3
    assert not set(train_classes.class_names) & set(test_classes.class_names)
    assert test_classes.images.shape == (12, 28, 28, 1)  # model resolution


def test_load_data_gives_the_channels_the_preprocessor_takes(image_folder, write_image_folder,
                                                             tmp_path):
    """Ink takes gray images; an RGB preprocessor keeps a folder's colour (a gray folder
    stays gray: RGB repeats it), at the model's resolution."""
    config = dataclasses.replace(TINY, dataset=f"folder:{image_folder}", split="all",
                                 subset="all", model_config={"image_size": 12})
    ink = training.load_data(config, "all")
    rgb = training.load_data(dataclasses.replace(
        config, model_config={"image_size": 12, "preprocessor": "rgb"}), "all")
    assert ink.images.shape == (24, 12, 12, 1) and rgb.images.shape == (24, 12, 12, 3)
    np.testing.assert_array_equal(ink.labels, rgb.labels)
    gray_mean = np.round(rgb.images.astype(np.float32).mean(axis=-1, keepdims=True))
    assert np.abs(gray_mean - ink.images).max() <= 2  # the same pictures, up to round-off
    write_image_folder(tmp_path / "gray", {"a": 2, "b": 2}, channels=1)
    gray = dataclasses.replace(config, dataset=f"folder:{tmp_path / 'gray'}",
                               model_config={"image_size": 12, "preprocessor": "rgb"})
    assert training.load_data(gray, "all").images.shape == (4, 12, 12, 1)
    assert training.load_data(dataclasses.replace(gray, channels=3), "all").images.shape \
        == (4, 12, 12, 3)


def test_training_keeps_a_folders_colour_for_an_rgb_preprocessor(image_folder, tmp_path):
    config = dataclasses.replace(
        TINY, model_config={"filters": 8, "preprocessor": "rgb", "image_size": 16},
        dataset=f"folder:{image_folder}", split="all", subset="all", ways=3, shots=1,
        queries=1, episodes=2, lr_decay_every=2)
    model = train(config, tmp_path / "run", None)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert training.load_data(config, "all").images.shape[-1] == 3
    rebuilt = training.model_from_dir(tmp_path / "run")
    assert rebuilt.get_config()["preprocessor"] == "rgb"


def test_own_data_errors_name_the_problem_before_any_file(image_folder, tmp_path):
    base = dataclasses.replace(TINY, dataset=f"folder:{image_folder}", split="all",
                               subset="all", episodes=2, lr_decay_every=2)
    too_many_ways = dataclasses.replace(base, ways=7, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"has 6 classes; 7-way episodes need at least 7"):
        train(too_many_ways, tmp_path / "run", None)
    too_few_images = dataclasses.replace(base, ways=3, shots=2, queries=3)
    with pytest.raises(ValueError, match=r"2-shot 3-query episodes need 5 examples per class; "
                                         r"in folder:.* all/all, 'kind0' \(4\)"):
        train(too_few_images, tmp_path / "run", None)
    with pytest.raises(ValueError, match="within_alphabet and rotations need Omniglot"):
        train(dataclasses.replace(base, within_alphabet=True), tmp_path / "run", None)
    assert not (tmp_path / "run" / "config.json").exists()
