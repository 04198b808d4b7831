"""The sequence contract (MANN and its LSTM baseline): label offset, shapes, errors, and the
models' training, evaluation (accuracy by instance), export and plot."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot import evaluation, training
from keras_fewshot.data import sequence_dataset
from keras_fewshot.export import export_saved_model
from keras_fewshot.models import (MemoryAugmentedNetwork, SequenceClassifier, SequenceLSTM,
                                  build_model)
from keras_fewshot.models.sequence import shifted_labels
from keras_fewshot.tasks.sequences import evaluate_sequences, instance_numbers

TINY = {"mann": {"classes": 3, "image_size": 8, "units": 8, "memory_size": 6, "word_size": 4,
                 "read_heads": 2},
        "sequence_lstm": {"classes": 3, "image_size": 8, "units": 8}}


def random_sequence(rng, length=7, classes=3, size=8, channels=1, batch=None):
    lead = (length,) if batch is None else (batch, length)
    return {"images": rng.integers(0, 256, (*lead, size, size, channels), dtype=np.uint8),
            "labels": rng.integers(0, classes, lead).astype(np.int32)}


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    keras.utils.set_random_seed(0)
    return build_model(request.param, TINY[request.param])


def test_registry_builds_the_sequence_models():
    assert isinstance(build_model("mann"), MemoryAugmentedNetwork)
    assert isinstance(build_model("sequence_lstm"), SequenceLSTM)
    mann = build_model("mann")  # the paper's sizes by default
    assert (mann.classes, mann.image_size) == (5, 20)
    assert (mann.cell.units, mann.cell.memory_size, mann.cell.word_size,
            mann.cell.read_heads) == (200, 128, 40, 4)


def test_scores_at_step_t_see_the_labels_before_t_only(model, rng):
    sequence = random_sequence(rng, length=6, batch=2)
    base = model(sequence).numpy()
    assert base.shape == (2, 6, 3) and base.dtype == np.float32
    for t in range(6):
        changed = {**sequence, "labels": sequence["labels"].copy()}
        changed["labels"][:, t:] = (changed["labels"][:, t:] + 1) % 3
        out = model(changed).numpy()
        np.testing.assert_array_equal(out[:, :t + 1], base[:, :t + 1])  # up to t: unchanged
        if t + 1 < 6:  # step t + 1 is the first to see labels[t]
            assert not np.allclose(out[:, t + 1], base[:, t + 1])


def test_step_inputs_are_pixels_and_the_previous_label(rng):
    class Echo(SequenceClassifier):
        """Returns what each step would be given."""
        def steps(self, inputs, training=False):
            return inputs

    sequence = random_sequence(rng, length=5, classes=4, size=3, batch=2)
    out = Echo(classes=4, image_size=3)(sequence).numpy()
    pixels = 1.0 - sequence["images"].reshape(2, 5, 9) / 255.0
    previous = np.zeros((2, 5, 4))
    for b in range(2):
        for t in range(1, 5):
            previous[b, t, sequence["labels"][b, t - 1]] = 1.0
    np.testing.assert_allclose(out, np.concatenate([pixels, previous], -1), atol=1e-6)
    np.testing.assert_array_equal(shifted_labels(tf.constant(sequence["labels"]), 4).numpy(),
                                  previous)


def test_batched_agrees_with_unbatched_and_channels_do_not_matter(model, rng):
    sequence = random_sequence(rng, batch=3)
    batched = model(sequence).numpy()
    for b in range(3):
        single = model({k: v[b] for k, v in sequence.items()}).numpy()
        np.testing.assert_allclose(single, batched[b], atol=1e-6)
    rgb = {**sequence, "images": np.repeat(sequence["images"], 3, -1)}
    np.testing.assert_allclose(model(rgb).numpy(), batched, atol=1e-5)


def test_any_sequence_length(model, rng):
    for length in (1, 4, 30):
        assert model(random_sequence(rng, length=length)).shape == (length, 3)


BAD_SEQUENCES = {
    "rank 3 images": (lambda s: {**s, "images": s["images"][..., 0]}, "rank 4"),
    "labels of the wrong rank": (lambda s: {**s, "labels": s["labels"][:, None]},
                                 r"labels must have shape \[T\]"),
    "label >= N": (lambda s: {**s, "labels": np.where(s["labels"] == 1, 3, s["labels"])},
                   "label >= N = 3"),
    "negative label": (lambda s: {**s, "labels": np.where(s["labels"] == 1, -1, s["labels"])},
                       "label below 0"),
    "mismatched lengths": (lambda s: {**s, "labels": s["labels"][..., :-1]},
                           "different lengths"),
    "float images": (lambda s: {**s, "images": s["images"].astype(np.float32)}, "uint8"),
    "float labels": (lambda s: {**s, "labels": s["labels"].astype(np.float32)}, "integers"),
    "missing labels": (lambda s: {"images": s["images"]}, r"missing \['labels'\]"),
    "four channels": (lambda s: {**s, "images": np.repeat(s["images"], 4, -1)},
                      "1 or 3 channels"),
    "empty sequence": (lambda s: {k: v[:0] for k, v in s.items()}, "empty"),
    # Found by trying the contract as a hostile user would: each failed inside an op or
    # with another's message before.
    "zero-size images": (lambda s: {**s, "images": s["images"][..., :0, :0, :]},
                         r"images must be at least 1x1 pixel, got height or width 0"),
    "uint64 label above int64": (lambda s: {**s, "labels": np.where(
        s["labels"] == 1, np.uint64(2 ** 63), s["labels"].astype(np.uint64))},
        "label >= N = 3"),  # not "below 0"
    "labels None": (lambda s: {**s, "labels": None},
                    r"labels must be an array \(numpy, tensor or nested list\), got NoneType"),
    "misspelled key": (lambda s: {"image": s["images"], "labels": s["labels"]},
                       r"missing \['images'\]; expected keys .* got keys \['image', 'labels'\]"),
    "ragged image list": (lambda s: {**s, "images": [im.tolist() for im in s["images"]][:-1]
                                     + [[[0]]]}, "images is a ragged nested list"),
    "pixel list above 255": (lambda s: {**s, "images": (s["images"].astype(int) + 256).tolist()},
                             r"images must be raw pixels: whole numbers in \[0, 255\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_SEQUENCES))
def test_bad_sequence_names_the_problem(model, rng, case):
    corrupt, match = BAD_SEQUENCES[case]
    sequence = random_sequence(rng)
    sequence["labels"][:3] = [0, 1, 2]
    with pytest.raises(ValueError, match=match):
        model(corrupt(sequence))


def test_a_batch_of_no_sequences_names_the_problem(model, rng):
    sequence = random_sequence(rng, batch=2)
    with pytest.raises(ValueError, match="the batch holds no sequences"):
        model({k: v[:0] for k, v in sequence.items()})


def test_python_lists_give_what_arrays_give(model, rng):
    for batch in (None, 2):
        sequence = random_sequence(rng, batch=batch)
        expected = model(sequence).numpy()
        labels_listed = model({**sequence, "labels": sequence["labels"].tolist()}).numpy()
        all_listed = model({k: v.tolist() for k, v in sequence.items()}).numpy()
        np.testing.assert_array_equal(labels_listed, expected)
        np.testing.assert_array_equal(all_listed, expected)


def test_not_a_dict_is_a_type_error(model, rng):
    with pytest.raises(TypeError, match="dict with keys"):
        model(random_sequence(rng)["images"])


@pytest.fixture(scope="module")
def graph_model(model):
    return tf.function(lambda images, labels: model({"images": images, "labels": labels}),
                       input_signature=[tf.TensorSpec([None, None, None, None, None], tf.uint8),
                                        tf.TensorSpec([None, None], tf.int32)])


@pytest.mark.parametrize("case, match", [
    ("label >= N", "label >= N = 3"), ("mismatched lengths", "different lengths"),
    ("negative label", "label below 0"), ("four channels", "1 or 3 channels"),
    ("zero-size images", "at least 1x1 pixel")])
def test_bad_sequence_fails_the_same_way_in_a_graph(graph_model, rng, case, match):
    sequence = random_sequence(rng, batch=2)
    sequence["labels"][:, :3] = [0, 1, 2]
    corrupt, _ = BAD_SEQUENCES[case]
    bad = corrupt(sequence)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        graph_model(bad["images"], bad["labels"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="different numbers of sequences"):
        graph_model(sequence["images"], sequence["labels"][:1])


def test_instance_numbers_count_presentations():
    labels = np.random.default_rng(3).integers(0, 4, (5, 20))
    expected = np.array([[np.sum(row[:t + 1] == row[t]) for t in range(20)] for row in labels])
    np.testing.assert_array_equal(instance_numbers(tf.constant(labels)).numpy(),
                                  expected)


@pytest.fixture(scope="module")
def five_class_model():
    keras.utils.set_random_seed(1)
    return build_model("mann", {"units": 8, "memory_size": 6, "word_size": 4, "read_heads": 2})


def test_accuracy_by_instance_matches_numpy(five_class_model, vinyals_test_20):
    model, data = five_class_model, vinyals_test_20
    rows = evaluate_sequences(model, data, "vinyals", sequences=4, instances=3,
                                         seed=7, sequences_per_batch=2, verbose=0)
    assert [r["instance"] for r in rows] == [1, 2, 3]
    per_instance = {k: [] for k in (1, 2, 3)}
    for inputs, labels in sequence_dataset(data.images, data.labels, 5, 3, seed=7,
                                           num_sequences=4).as_numpy_iterator():
        hits = np.argmax(model(inputs).numpy(), -1) == labels
        for k in (1, 2, 3):
            kth = [t for t in range(15) if np.sum(labels[:t + 1] == labels[t]) == k]
            assert len(kth) == 5
            per_instance[k].append(hits[kth].mean())
    for row in rows:
        values = np.array(per_instance[row["instance"]])
        assert (row["classes"], row["instances"], row["sequences"]) == (5, 3, 4)
        assert row["accuracy"] == pytest.approx(values.mean(), abs=1e-9)
        assert row["ci95"] == pytest.approx(1.96 * values.std(ddof=1) / 2, abs=1e-9)


def test_evaluate_measures_sequence_models_by_instance(five_class_model, omniglot_dir):
    rows = evaluation.evaluate(five_class_model, "vinyals", episodes=2, seed=3,
                               data_source=omniglot_dir, image_size=20, verbose=0)
    assert [r["instance"] for r in rows] == list(range(1, 11))
    assert {(r["protocol"], r["classes"], r["sequences"]) for r in rows} == {("vinyals", 5, 2)}
    with pytest.raises(ValueError, match="settings do not apply to a sequence model"):
        evaluation.evaluate(five_class_model, "vinyals", episodes=2, settings=[(5, 1)],
                            data_source=omniglot_dir, image_size=20, verbose=0)


def test_sequence_markdown_table():
    rows = [{"protocol": "vinyals", "classes": 5, "instances": 10, "sequences": 1000,
             "instance": k, "accuracy": 0.1 * k, "ci95": 0.001 * k} for k in range(1, 11)]
    assert evaluation.markdown_table(rows).splitlines() == [
        "| protocol | classes | sequences | 1st | 2nd | 3rd | 4th | 5th | 10th |",
        "|---|---|---|---|---|---|---|---|---|",
        "| vinyals | 5 | 1000 | 10.00 ± 0.10 | 20.00 ± 0.20 | 30.00 ± 0.30 | 40.00 ± 0.40 "
        "| 50.00 ± 0.50 | 100.00 ± 1.00 |"]


def test_plot_accuracy_by_instance_writes_a_png(tmp_path):
    from keras_fewshot import plots
    rows = [{"protocol": "vinyals", "classes": 5, "instances": 10, "sequences": 10,
             "instance": k, "accuracy": 1 - 0.5 / k, "ci95": 0.02} for k in range(1, 11)]
    figure = plots.accuracy_by_instance_figure({"MANN": rows, "LSTM": rows[::-1]})
    data = plots.save_png(figure, tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


TINY_RUN = training.TrainConfig(model="mann", model_config=TINY["mann"], subset="val", ways=3,
                                instances=2, episodes_per_step=2, episodes=4,
                                episodes_per_epoch=2, lr_decay_every=2, distort=True, seed=3)


@pytest.fixture(scope="module")
def tiny_run(omniglot_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("mann") / "run"
    keras.utils.set_random_seed(0)
    return training.train(TINY_RUN, model_dir, data_source=omniglot_dir, verbose=0), model_dir


def test_training_on_sequences_writes_a_run(tiny_run, rng):
    model, model_dir = tiny_run
    assert int(model.optimizer.iterations.numpy()) == 2  # 4 sequences, 2 per step
    history = (model_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "accuracy" in history[0]
    rebuilt = training.model_from_dir(model_dir)
    sequence = random_sequence(rng)
    np.testing.assert_array_equal(rebuilt(sequence).numpy(), model(sequence).numpy())


def test_training_stream_resumes_by_sequence(omniglot_dir):
    data = training.load_data(TINY_RUN, "val", omniglot_dir)
    assert data.images.shape[1:] == (8, 8, 1)  # cached at the model's image_size
    model = build_model("mann", TINY["mann"])
    whole = list(training.training_dataset(TINY_RUN, model, data).as_numpy_iterator())
    resumed = list(training.training_dataset(TINY_RUN, model, data, start=2)
                   .as_numpy_iterator())
    assert len(whole) == 2 and len(resumed) == 1  # batches of 2 sequences
    np.testing.assert_array_equal(resumed[0][0]["images"], whole[1][0]["images"])
    np.testing.assert_array_equal(resumed[0][1], whole[1][1])


def test_image_size_defaults_to_the_models_own():
    assert training.TrainConfig(model="mann").image_size == 20
    assert training.TrainConfig(model="sequence_lstm").image_size == 20
    assert training.TrainConfig(model="protonet").image_size == 28
    assert training.TrainConfig(model="mann", model_config={"image_size": 28}).image_size == 28


def test_ways_must_match_the_models_classes(omniglot_dir, tmp_path):
    config = training.TrainConfig(model="mann", model_config=TINY["mann"], subset="val",
                                  ways=5, episodes=2, episodes_per_epoch=2)
    with pytest.raises(ValueError, match="classifies 3 classes, but ways=5"):
        training.train(config, tmp_path / "run", data_source=omniglot_dir, verbose=0)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    model, _ = tiny_run
    return model, export_saved_model(model, tmp_path_factory.mktemp("export") / "mann" / "1")


def test_fresh_process_serves_the_model_answers(exported, run_python, tmp_path, np_softmax):
    from test_export import SERVE_IN_FRESH_PROCESS
    model, path = exported
    sequence = random_sequence(np.random.default_rng(5), length=9, size=20)
    np.savez(tmp_path / "request.npz", **sequence)
    run_python("-c", SERVE_IN_FRESH_PROCESS, path, tmp_path / "request.npz",
               tmp_path / "response.npz")
    outputs = dict(np.load(tmp_path / "response.npz"))
    probabilities = np_softmax(model(sequence).numpy().astype(np.float64))
    assert outputs["probabilities"].shape == (9, 3) and outputs["classes"].dtype == np.int32
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], probabilities.argmax(-1))


def test_served_bad_request_names_the_problem(exported):
    _, path = exported
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    sequence = random_sequence(np.random.default_rng(6))
    good = serve(images=tf.constant(sequence["images"]),
                 labels=tf.constant(sequence["labels"]))["classes"].numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="label >= N = 3"):
        serve(images=tf.constant(sequence["images"]),
              labels=tf.constant(np.full(7, 3, np.int32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="different lengths"):
        serve(images=tf.constant(sequence["images"]),
              labels=tf.constant(sequence["labels"][:-1]))
    np.testing.assert_array_equal(serve(images=tf.constant(sequence["images"]),
                                        labels=tf.constant(sequence["labels"]))[
        "classes"].numpy(), good)
