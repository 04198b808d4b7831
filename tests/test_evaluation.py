"""keras_fewshot.evaluation: confidence intervals, and accuracies checked against numpy."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_fewshot
from keras_fewshot import evaluation
from keras_fewshot.data import LabelledImages, episode_dataset, load_split
from keras_fewshot.data.distortions import koch_distort
from keras_fewshot.models import PrototypicalNetwork, build_model
from keras_fewshot.tasks import PAIRS, REGRESSION, SEQUENCES
from keras_fewshot.tasks.episodes import episode_accuracies, first_episode, mean_probabilities
from keras_fewshot.tasks.measures import mean_and_ci95

EPISODES, QUERIES, SEED = 4, 5, 21


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return PrototypicalNetwork(filters=8)


def numpy_accuracies(model, data, ways, shots, queries, episodes, seed, groups=None,
                     drawers=None):
    """Per-episode accuracy from eager, one-episode-at-a-time calls and numpy argmax."""
    stream = episode_dataset(data.images, data.labels, ways, shots, queries, groups=groups,
                             drawers=drawers, seed=seed, num_episodes=episodes)
    return np.array([np.mean(np.argmax(model(inputs).numpy(), axis=-1) == query_labels)
                     for inputs, query_labels in stream.as_numpy_iterator()])


@pytest.mark.parametrize("values", [[0.5, 0.75, 1.0, 0.25], [0.9] * 5, np.linspace(0, 1, 11)])
def test_mean_and_ci95_matches_numpy(values):
    values = np.asarray(values, np.float64)
    mean, ci95 = mean_and_ci95(values)
    assert mean == pytest.approx(values.mean(), abs=1e-12)
    expected = 1.96 * np.std(values, ddof=1) / math.sqrt(len(values))
    assert ci95 == pytest.approx(expected, abs=1e-12)


def test_mean_and_ci95_of_one_value():
    mean, ci95 = mean_and_ci95([0.4])
    assert mean == pytest.approx(0.4) and math.isnan(ci95)


def test_episode_accuracies_match_numpy(model, vinyals_test):
    expected = numpy_accuracies(model, vinyals_test, 5, 1, QUERIES, EPISODES, SEED)
    batched = episode_dataset(vinyals_test.images, vinyals_test.labels, 5, 1, QUERIES,
                              seed=SEED, num_episodes=EPISODES, batch_size=2)
    actual = episode_accuracies(model, batched, EPISODES, verbose=0)
    assert actual.shape == (EPISODES,)
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert len(set(expected.tolist())) > 1  # the comparison is not between constants



def test_progress_bar_shows_the_mean_accuracy_so_far(model, vinyals_test, capsys):
    batched = episode_dataset(vinyals_test.images, vinyals_test.labels, 5, 1, QUERIES,
                              seed=SEED, num_episodes=EPISODES, batch_size=2)
    accuracies = episode_accuracies(model, batched, EPISODES, verbose=2)
    shown = float(capsys.readouterr().out.rsplit("accuracy: ", 1)[1].split()[0])
    assert shown == pytest.approx(accuracies.mean(), abs=1e-4)

def test_evaluate_rows_match_numpy_and_are_deterministic(model, vinyals_test, omniglot_dir):
    kwargs = dict(protocol="vinyals", episodes=EPISODES, queries=QUERIES, seed=SEED,
                  data_source=omniglot_dir, settings=[(5, 1)], verbose=0)
    rows = evaluation.evaluate(model, **kwargs)
    assert rows == evaluation.evaluate(model, **kwargs)
    (row,) = rows
    assert {k: row[k] for k in ("protocol", "ways", "shots", "queries", "episodes")} == {
        "protocol": "vinyals", "ways": 5, "shots": 1, "queries": QUERIES, "episodes": EPISODES}
    expected = numpy_accuracies(model, vinyals_test, 5, 1, QUERIES, EPISODES, SEED)
    mean, ci95 = mean_and_ci95(expected)
    assert row["accuracy"] == pytest.approx(mean, abs=1e-6)
    assert row["ci95"] == pytest.approx(ci95, abs=1e-6)
    assert 0 <= row["accuracy"] <= 1 and row["ci95"] > 0
    # A mean of per-episode fractions k / (5 * QUERIES).
    hits = row["accuracy"] * EPISODES * 5 * QUERIES
    assert hits == pytest.approx(round(hits), abs=1e-3)


def test_lake_protocol_uses_within_alphabet_episodes(model, omniglot_dir):
    (row,) = evaluation.evaluate(model, "lake", episodes=2, queries=1, seed=SEED,
                                 data_source=omniglot_dir, verbose=0)
    assert (row["protocol"], row["ways"], row["shots"], row["episodes"]) == ("lake", 20, 1, 2)
    data = load_split("lake", "evaluation", source=omniglot_dir)
    within = numpy_accuracies(model, data, 20, 1, 1, 2, SEED, groups=data.groups)
    anywhere = numpy_accuracies(model, data, 20, 1, 1, 2, SEED)
    assert within.mean() != anywhere.mean()  # the check below can tell them apart
    assert row["accuracy"] == pytest.approx(within.mean(), abs=1e-6)


# --- Lake et al.'s one-shot runs -----------------------------------------------------------------

@pytest.fixture(scope="module")
def lake_runs_data(omniglot_dir):
    return load_split("lake", "evaluation", source=omniglot_dir, drawers=True)


def lake_runs(data, count, seed):
    """The first `count` episodes of the lake_runs protocol's stream, as numpy."""
    return list(episode_dataset(data.images, data.labels, 20, 1, 1, groups=data.groups,
                                drawers=data.drawers, seed=seed,
                                num_episodes=count).as_numpy_iterator())


def test_lake_runs_are_20_characters_of_one_alphabet_by_two_drawers(lake_runs_data,
                                                                    character_drawings):
    """Checked against the archive's files: for each label, the support image is one drawer's
    drawing of a character, the query another drawer's drawing of the same character."""
    class_of = {}  # which character an image is: only to know which files to read
    for image, label in zip(lake_runs_data.images, lake_runs_data.labels):
        class_of.setdefault(image.tobytes(), set()).add(label)
    for inputs, query_labels in lake_runs(lake_runs_data, 3, SEED):
        support_labels = inputs["support_labels"]
        np.testing.assert_array_equal(np.sort(support_labels), np.arange(20))
        np.testing.assert_array_equal(np.sort(query_labels), np.arange(20))
        characters, support_drawers, query_drawers = [], [], []
        for label in range(20):
            support = inputs["support_images"][support_labels == label][0]
            query = inputs["query_images"][query_labels == label][0]
            (character,) = {lake_runs_data.class_names[c].rsplit("/", 1)[0]
                            for c in class_of[support.tobytes()]}
            files = character_drawings("evaluation", character)
            support_drawers.append({d for d, f in files.items() if np.array_equal(f, support)})
            query_drawers.append({d for d, f in files.items() if np.array_equal(f, query)})
            characters.append(character)
        assert len(set(characters)) == 20
        assert len({c.split("/")[0] for c in characters}) == 1
        (support_drawer,) = set.intersection(*support_drawers)  # one drawer for every class
        (query_drawer,) = set.intersection(*query_drawers)
        assert support_drawer != query_drawer


def test_lake_runs_are_deterministic_and_vary(lake_runs_data):
    first = lake_runs(lake_runs_data, 20, SEED)
    again = lake_runs(lake_runs_data, 20, SEED)
    other = lake_runs(lake_runs_data, 20, SEED + 1)
    for (a, a_labels), (b, b_labels) in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a_labels, b_labels)
    assert any(not np.array_equal(a["support_images"], b["support_images"])
               for (a, _), (b, _) in zip(first, other))
    index_of = {image.tobytes(): i for i, image in enumerate(lake_runs_data.images)}
    runs = set()  # (alphabet, support drawer, query drawer) of each episode
    for inputs, _ in first:
        support = [index_of[image.tobytes()] for image in inputs["support_images"]]
        query = [index_of[image.tobytes()] for image in inputs["query_images"]]
        runs.add((lake_runs_data.groups[lake_runs_data.labels[support[0]]],
                  lake_runs_data.drawers[support[0]], lake_runs_data.drawers[query[0]]))
    assert len({run[0] for run in runs}) > 3 and len({run[1:] for run in runs}) > 3


def test_lake_runs_protocol_measures_the_runs(model, lake_runs_data, omniglot_dir):
    (row,) = evaluation.evaluate(model, "lake_runs", episodes=2, seed=SEED,
                                 data_source=omniglot_dir, verbose=0)
    assert {k: row[k] for k in ("protocol", "ways", "shots", "queries", "episodes")} == {
        "protocol": "lake_runs", "ways": 20, "shots": 1, "queries": 1, "episodes": 2}
    data = lake_runs_data
    runs = numpy_accuracies(model, data, 20, 1, 1, 2, SEED, data.groups, data.drawers)
    within = numpy_accuracies(model, data, 20, 1, 1, 2, SEED, data.groups)
    assert runs.tolist() != within.tolist()  # the check below can tell them apart
    assert row["accuracy"] == pytest.approx(runs.mean(), abs=1e-6)


@pytest.mark.parametrize("name", ["protonet_omniglot_lake", "siamese_omniglot_lake"])
def test_zoo_lake_models_run_the_lake_runs_protocol(name, omniglot_dir):
    (row,) = evaluation.evaluate(keras_fewshot.load(name), "lake_runs", episodes=5,
                                 data_source=omniglot_dir, verbose=0)
    assert (row["protocol"], row["ways"], row["shots"], row["queries"], row["episodes"]) == (
        "lake_runs", 20, 1, 1, 5)
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["ci95"] < 1
    assert row["accuracy"] * 100 == pytest.approx(round(row["accuracy"] * 100), abs=1e-3)


def test_lake_runs_refuse_tfds_and_models_that_cannot_run_them(model, omniglot_dir,
                                                                monkeypatch):
    monkeypatch.delenv("KERAS_FEWSHOT_OMNIGLOT_DIR", raising=False)
    for source in (None, "tfds"):
        with pytest.raises(ValueError, match=r"not in TFDS's omniglot.*local archives"):
            evaluation.evaluate(model, "lake_runs", episodes=1, data_source=source)
    with pytest.raises(ValueError, match="exactly 5 classes, and the lake_runs protocol has "
                                         "no 5-way setting"):
        evaluation.evaluate(keras_fewshot.load("maml_omniglot"), "lake_runs", episodes=1,
                            data_source=omniglot_dir, verbose=0)
    with pytest.raises(ValueError, match="one-shot runs by drawer do not apply to a sequence"):
        evaluation.evaluate(keras_fewshot.load("mann_omniglot"), "lake_runs", episodes=1,
                            data_source=omniglot_dir, verbose=0)


# --- Test-time distortion averaging (Koch et al. 2015, sec. 4.1) --------------------------------

VIEWS = 3  # distorted views per episode
AVERAGED = dict(settings=[(3, 1)], episodes=EPISODES, queries=2, seed=SEED, verbose=0)


@pytest.fixture(scope="module")
def noise():
    """LabelledImages: 6 classes x 4 random-pixel 28x28 images (an untrained model is unsure
    of them, so averaging views changes some of its answers)."""
    rng = np.random.default_rng(6)
    return LabelledImages(rng.integers(0, 256, (24, 28, 28, 1), np.uint8),
                          np.repeat(np.arange(6, dtype=np.int32), 4),
                          tuple(f"class{c}" for c in range(6)), np.zeros(6, np.int32))


@pytest.fixture(scope="module")
def averaged_rows(model, noise):
    return evaluation.evaluate_data(model, noise, "noise", test_distortions=VIEWS, **AVERAGED)


def koch_views(episode, seed, index, views):
    """[the episode, its views 1..views]: view v distorted here with koch_distort, drawn from
    stateless_fold_in([seed, episode index], v) split in two (support, query)."""
    out = [episode]
    for view in range(1, views + 1):
        support_seed, query_seed = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(tf.constant([seed, index], tf.int64),
                                                     view), 2)
        out.append({**episode,
                    "support_images": koch_distort(episode["support_images"],
                                                   support_seed).numpy(),
                    "query_images": koch_distort(episode["query_images"], query_seed).numpy()})
    return out


def numpy_averaged(model, data, views, softmax, ways=3, shots=1, queries=2, episodes=EPISODES):
    """(per-episode accuracies, [episodes, Q, N] probabilities): each query's softmax averaged
    in numpy over one-episode model calls on its plain episode and `koch_views`."""
    stream = episode_dataset(data.images, data.labels, ways, shots, queries, seed=SEED,
                             num_episodes=episodes).as_numpy_iterator()
    accuracies, probabilities = [], []
    for index, (episode, query_labels) in enumerate(stream):
        mean = np.mean([softmax(model(view).numpy().astype(np.float64))
                        for view in koch_views(episode, SEED, index, views)], axis=0)
        accuracies.append(np.mean(mean.argmax(-1) == query_labels))
        probabilities.append(mean)
    return np.array(accuracies), np.stack(probabilities)


def test_no_test_distortions_is_the_plain_evaluation(model, noise):
    plain = evaluation.evaluate_data(model, noise, "noise", **AVERAGED)
    assert evaluation.evaluate_data(model, noise, "noise", test_distortions=0,
                                    **AVERAGED) == plain
    assert "test_distortions" not in plain[0]


def test_test_distortions_average_the_views_softmax_as_numpy_does(model, noise, averaged_rows,
                                                                  np_softmax):
    (row,) = averaged_rows
    (plain,) = evaluation.evaluate_data(model, noise, "noise", **AVERAGED)
    assert {k: v for k, v in row.items() if k not in ("accuracy", "ci95")} == {
        **{k: v for k, v in plain.items() if k not in ("accuracy", "ci95")},
        "test_distortions": VIEWS}
    expected, probabilities = numpy_averaged(model, noise, VIEWS, np_softmax)
    unaveraged, _ = numpy_averaged(model, noise, 0, np_softmax)
    assert expected.tolist() != unaveraged.tolist()  # the check below can tell them apart
    assert plain["accuracy"] == pytest.approx(unaveraged.mean(), abs=1e-6)
    mean, ci95 = mean_and_ci95(expected)
    assert row["accuracy"] == pytest.approx(mean, abs=1e-6)
    assert row["ci95"] == pytest.approx(ci95, abs=1e-6)
    # the averaged probabilities themselves, batched as evaluate takes them
    (views, _), = episode_dataset(noise.images, noise.labels, 3, 1, 2, seed=SEED,
                                  num_episodes=EPISODES, batch_size=EPISODES,
                                  views=VIEWS).as_numpy_iterator()
    np.testing.assert_allclose(mean_probabilities(model, views), probabilities, atol=1e-5)


def test_test_distortions_are_deterministic_and_really_distort(model, noise, averaged_rows):
    assert averaged_rows == evaluation.evaluate_data(model, noise, "noise",
                                                     test_distortions=VIEWS, **AVERAGED)
    stream = episode_dataset(noise.images, noise.labels, 3, 1, 2, seed=SEED, num_episodes=2,
                             views=VIEWS)
    for index, (views, _) in enumerate(stream.as_numpy_iterator()):
        plain, *distorted = views
        expected = koch_views(plain, SEED, index, VIEWS)
        for view, want in zip(views, expected):
            for key in want:
                np.testing.assert_array_equal(view[key], want[key])
        for one in distorted:
            np.testing.assert_array_equal(one["support_labels"], plain["support_labels"])
            for key in ("support_images", "query_images"):
                assert not np.array_equal(one[key], plain[key])
        assert not np.array_equal(distorted[0]["query_images"], distorted[1]["query_images"])


def test_test_distortions_refuse_a_negative_count_and_other_kinds(model, noise):
    with pytest.raises(ValueError, match="test_distortions must be 0 or more.*got -1"):
        evaluation.evaluate_data(model, noise, "noise", test_distortions=-1, **AVERAGED)
    sequence_model = build_model("sequence_lstm", {"classes": 3, "units": 8})
    with pytest.raises(ValueError, match="test_distortions=2: test-time distortions apply to "
                                         "episodic classifiers; .* measured on sequences"):
        evaluation.evaluate_data(sequence_model, noise, "noise", episodes=1, verbose=0,
                                 test_distortions=2)
    with pytest.raises(ValueError, match="apply to episodic classifiers; .* measured on "
                                         "regression_tasks"):
        evaluation.evaluate(build_model("maml_regressor", {"hidden_units": [8]}), "sinusoid",
                            episodes=1, test_distortions=2)
    for kind in (SEQUENCES, REGRESSION):  # nor do their kinds take the option, to ignore it
        with pytest.raises(TypeError, match="unexpected keyword argument 'test_distortions'"):
            kind.evaluate(sequence_model, noise, "noise", None, {}, test_distortions=2)
    assert PAIRS.distortion_averaging  # the Siamese verifier classifies episodes too


def test_unknown_protocol(model):
    with pytest.raises(ValueError, match="Unknown protocol 'imagenet'"):
        evaluation.evaluate(model, "imagenet", episodes=1)


def test_markdown_table():
    rows = [{"protocol": "vinyals", "ways": 5, "shots": 1, "queries": 15, "episodes": 4,
             "accuracy": 0.5, "ci95": 0.01234},
            {"protocol": "lake", "ways": 20, "shots": 1, "queries": 15, "episodes": 1000,
             "accuracy": 0.98765, "ci95": 0.001}]
    assert evaluation.markdown_table(rows).splitlines() == [
        "| protocol | setting | episodes | accuracy (%) | 95% CI |",
        "|---|---|---|---|---|",
        "| vinyals | 5-way 1-shot | 4 | 50.00 | ± 1.23 |",
        "| lake | 20-way 1-shot | 1000 | 98.77 | ± 0.10 |",
    ]
    averaged = {**rows[1], "protocol": "lake_runs", "test_distortions": 8}
    assert evaluation.markdown_table([averaged]).splitlines()[-1] == (
        "| lake_runs, 8 test distortions averaged | 20-way 1-shot | 1000 | 98.77 | ± 0.10 |")


# --- Your own data -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """'folder:PATH' of 7 classes x 4 gray 16x16 images with class-dependent strokes."""
    import tensorflow as tf
    root = tmp_path_factory.mktemp("own") / "images"
    rng = np.random.default_rng(3)
    for c in range(7):
        (root / f"kind{c}").mkdir(parents=True)
        for i in range(4):
            image = np.full((16, 16, 1), 255, np.uint8)
            image[2 * c:2 * c + 3, :] = rng.integers(0, 60)  # a dark band per class
            image[rng.integers(0, 16), rng.integers(0, 16)] = 0
            (root / f"kind{c}" / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return f"folder:{root}"


def test_evaluate_data_on_a_folder_runs_the_settings_that_fit(model, folder_dataset):
    data, name, within_group, settings = evaluation.evaluation_data(folder_dataset)
    assert (data.num_classes, name, within_group, settings) == (
        7, f"{folder_dataset} all/all", False, None)
    rows = evaluation.evaluate_data(model, data, name, settings, episodes=EPISODES, queries=2,
                                    seed=SEED, verbose=0)
    # 7 classes of 4: only 5-way 1-shot 2-query fits among the Vinyals settings
    assert [(r["ways"], r["shots"], r["protocol"]) for r in rows] == [(5, 1, name)]
    expected = numpy_accuracies(model, data, 5, 1, 2, EPISODES, SEED)
    assert rows[0]["accuracy"] == pytest.approx(expected.mean(), abs=1e-6)
    with pytest.raises(ValueError, match=r"1-shot 5-query episodes need 6 examples per class; "
                                         r"in folder:.*'kind0' \(4\)"):
        evaluation.evaluate_data(model, data, name, [(5, 1)], queries=5, verbose=0)


def test_evaluation_data_of_a_class_split(folder_dataset):
    split = "random:train=0.5,test=0.5"
    data, name, _, _ = evaluation.evaluation_data(folder_dataset, split=split, image_size=14)
    assert name == f"{folder_dataset} {split}/test" and data.images.shape[1:] == (14, 14, 1)
    train, _, _, _ = evaluation.evaluation_data(folder_dataset, split=split, subset="train")
    assert data.num_classes + train.num_classes == 7


def test_an_omniglot_protocol_measures_another_subset_of_its_split(omniglot_dir):
    """--subset with an Omniglot protocol: the same protocol on that subset's classes (e.g. the
    training classes), named apart from the protocol's own; an unknown subset is refused."""
    test, name, within_group, protocol = evaluation.evaluation_data(
        "omniglot", "vinyals", source=omniglot_dir)
    assert (name, within_group, protocol) == ("vinyals", False, "vinyals")
    train, name, _, protocol = evaluation.evaluation_data(
        "omniglot", "vinyals", subset="trainval", source=omniglot_dir)
    assert (name, protocol) == ("vinyals trainval", "vinyals")
    # Vinyals et al.: 1200 training and 423 test characters, each in 4 rotations
    assert (train.num_classes, test.num_classes) == (4 * 1200, 4 * 423)
    background, name, within_group, _ = evaluation.evaluation_data(
        "omniglot", "lake", subset="background", source=omniglot_dir)
    assert (name, within_group) == ("lake background", True)
    assert background.num_classes == 964  # Lake et al.'s 30 background alphabets' characters
    with pytest.raises(ValueError, match="Unknown Vinyals subset 'training'"):
        evaluation.evaluation_data("omniglot", "vinyals", subset="training",
                                   source=omniglot_dir)


def test_first_episode_is_the_first_of_the_evaluated_stream(vinyals_test, sample_episodes):
    inputs, query_labels = first_episode(vinyals_test, 5, 2, 3, seed=SEED)
    (expected, expected_labels), = sample_episodes(vinyals_test, 5, 2, 3, 1, seed=SEED)
    for key in expected:
        np.testing.assert_array_equal(inputs[key], expected[key])
    np.testing.assert_array_equal(query_labels, expected_labels)


def test_a_colour_model_is_evaluated_on_a_folders_colour(write_image_folder, tmp_path):
    write_image_folder(tmp_path / "images", {f"kind{c}": 3 for c in range(3)}, size=(12, 10))
    rgb = PrototypicalNetwork(image_size=16, filters=4, preprocessor="rgb")
    ink = PrototypicalNetwork(image_size=16, filters=4)
    assert evaluation.takes_colour(rgb) and not evaluation.takes_colour(ink)
    shapes = {}
    for model in (rgb, ink):
        data, _, _, _ = evaluation.evaluation_data(
            f"folder:{tmp_path / 'images'}", image_size=16,
            keep_channels=evaluation.takes_colour(model))
        shapes[evaluation.takes_colour(model)] = data.images.shape
        rows = evaluation.evaluate_data(model, data, "folder", [(3, 1)], episodes=1,
                                        queries=1, verbose=0)
        assert rows[0]["episodes"] == 1
    assert shapes == {True: (9, 16, 16, 3), False: (9, 16, 16, 1)}
