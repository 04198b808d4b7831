"""keras_fewshot.export: the SavedModel serves the Keras model's answers, in a fresh process."""

import pathlib
import re
import shutil
import sys
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.export import export_saved_model, load_serving
from keras_fewshot.models import PrototypicalNetwork

SIGNATURE = "serving_default"
INPUT_KEYS = ("support_images", "support_labels", "query_images")

# Loads the SavedModel with TensorFlow alone (no keras_fewshot import) and serves one request.
SERVE_IN_FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf
saved_model, request, response = sys.argv[1:]
serve = tf.saved_model.load(saved_model).signatures["serving_default"]
inputs = dict(np.load(request))
outputs = serve(**{k: tf.constant(v) for k, v in inputs.items()})
np.savez(response, **{k: v.numpy() for k, v in outputs.items()})
assert "keras_fewshot" not in sys.modules
"""


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return PrototypicalNetwork(filters=8)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_saved_model(model, tmp_path_factory.mktemp("export") / "protonet" / "1")


@pytest.fixture(scope="module")
def request_episode(vinyals_test, sample_episodes):
    """A real 5-way 2-shot 3-query Omniglot episode, int32 labels as the signature wants."""
    (inputs, _), = sample_episodes(vinyals_test, 5, 2, 3, 1, seed=4)
    return {k: v.astype(np.int32) if k == "support_labels" else v for k, v in inputs.items()}


@pytest.fixture(scope="module")
def expected(model, request_episode, np_softmax):
    probabilities = np_softmax(model(request_episode).numpy().astype(np.float64))
    return probabilities, probabilities.argmax(-1)


@pytest.fixture(scope="module")
def served(exported):
    return load_serving(exported)


def serve(signature, episode):
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v)
                                                  for k, v in episode.items()}).items()}


def assert_answers(outputs, expected):
    probabilities, classes = expected
    assert outputs["probabilities"].dtype == np.float32 and outputs["classes"].dtype == np.int32
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], classes)


def saved_model_cli(run_python, *args, check=True):
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    if cli.is_file():  # the console script, as a user would run it
        return run_python(cli, *args, check=check)
    return run_python("-m", "tensorflow.python.tools.saved_model_cli", *args, check=check)


def test_fresh_process_serves_the_model_answers(exported, request_episode, expected,
                                                run_python, tmp_path):
    np.savez(tmp_path / "request.npz", **request_episode)
    run_python("-c", SERVE_IN_FRESH_PROCESS, exported, tmp_path / "request.npz",
               tmp_path / "response.npz")
    outputs = dict(np.load(tmp_path / "response.npz"))
    assert set(outputs) == {"probabilities", "classes"}
    assert outputs["probabilities"].shape == (15, 5)
    np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1, atol=1e-5)
    assert_answers(outputs, expected)


def test_saved_model_cli_show_lists_the_signature(exported, run_python):
    out = saved_model_cli(run_python, "show", "--dir", exported, "--tag_set", "serve",
                          "--signature_def", SIGNATURE).stdout
    inputs, outputs = out.split("outputs")[0], out.split("outputs")[1]
    for key, dtype in (("support_images", "DT_UINT8"), ("support_labels", "DT_INT32"),
                       ("query_images", "DT_UINT8")):
        assert f"inputs['{key}']" in inputs
        assert dtype in inputs.split(f"inputs['{key}']")[1].split("inputs[")[0]
    assert inputs.count("inputs['") == 3
    assert "outputs['probabilities']" in out and "outputs['classes']" in out
    assert out.count("outputs['") == 2


def test_saved_model_cli_run_serves_the_model_answers(exported, request_episode, expected,
                                                      run_python, tmp_path):
    for key in INPUT_KEYS:
        np.save(tmp_path / f"{key}.npy", request_episode[key])
    inputs = ";".join(f"{key}={tmp_path / key}.npy" for key in INPUT_KEYS)
    out = saved_model_cli(run_python, "run", "--dir", exported, "--tag_set", "serve",
                          "--signature_def", SIGNATURE, "--inputs", inputs,
                          "--outdir", tmp_path / "out").stdout
    assert "Result for output key probabilities" in out
    assert "Result for output key classes" in out
    assert_answers({k: np.load(tmp_path / "out" / f"{k}.npy")
                    for k in ("probabilities", "classes")}, expected)


def _bad_requests(episode):
    """(what is wrong, request, the error's message) for malformed requests of `episode`."""
    labels = episode["support_labels"]
    return [
        ("a class without support", {**episode, "support_labels": np.where(labels == 1, 2, labels)},
         "has no support example"),
        ("label out of range", {**episode, "support_labels": np.where(labels == 1, 99, labels)},
         "label >= the number of support examples"),
        ("negative label", {**episode, "support_labels": np.where(labels == 1, -1, labels)},
         "label below 0"),
        ("empty support", {**episode, "support_images": episode["support_images"][:0],
                           "support_labels": labels[:0]}, "the support set is empty"),
        ("empty query", {**episode, "query_images": episode["query_images"][:0]},
         "the query set is empty"),
        ("labels and images disagree", {**episode, "support_labels": labels[:-1]},
         "different numbers of examples"),
    ]


def test_bad_requests_fail_and_the_next_one_works(served, request_episode, expected):
    assert_answers(serve(served, request_episode), expected)
    for problem, request, message in _bad_requests(request_episode):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(served, request)
        assert_answers(serve(served, request_episode), expected)  # still serving


@pytest.mark.parametrize("problem", ["float images", "int64 labels"])
def test_request_of_the_wrong_dtype_is_refused_and_the_next_one_works(
        served, request_episode, expected, problem):
    bad = dict(request_episode)
    if problem == "float images":
        bad["query_images"] = bad["query_images"].astype(np.float32)
    else:
        bad["support_labels"] = bad["support_labels"].astype(np.int64)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serve(served, bad)
    assert_answers(serve(served, request_episode), expected)


def _misshapen_requests(episode):
    """(what is wrong, request, the error's message): inputs of the wrong rank or empty
    images, each named with its shape."""
    images, labels = episode["support_images"], episode["support_labels"]
    return [
        ("rank-5 images", {**episode, "support_images": images[None]},
         r"support_images must have rank 4 \[S, H, W, C\]; got shape\] \[1 10 28"),
        ("[5, 105, 105] images", {**episode, "query_images": np.zeros((5, 105, 105), np.uint8)},
         r"query_images must have rank 4 \[Q, H, W, C\]; got shape\] \[5 105 105\]"),
        ("[1, 5] labels", {**episode, "support_labels": labels[None]},
         r"support_labels must have rank 1 \[S\]; got shape\] \[1 10\]"),
        ("a scalar label", {**episode, "support_labels": labels[0]},
         r"support_labels must have rank 1 \[S\]; got shape\] \[\]"),
        ("0x0 images", {**episode, "query_images": np.zeros((3, 0, 0, 1), np.uint8)},
         r"query_images has images of height or width 0; got shape\] \[3 0 0 1\]"),
        ("0-wide images", {**episode, "support_images": images[:, :, :0]},
         r"support_images has images of height or width 0; got shape\] \[10 28 0 1\]"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_misshapen_request_is_refused_naming_the_input_and_the_next_one_works(
        served, request_episode, expected, case):
    problem, request, message = _misshapen_requests(request_episode)[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(served, request)
    assert_answers(serve(served, request_episode), expected)


def test_eight_client_threads_share_one_loaded_model(served, request_episode, expected):
    """8 threads send good and malformed requests for a bounded time: every good answer
    equals the single-threaded one exactly, every bad one fails with its own error."""
    single = serve(served, request_episode)
    bad = _bad_requests(request_episode) + _misshapen_requests(request_episode)
    results, failures = [], []
    deadline = time.monotonic() + 2.0

    def client(index):
        count = 0
        while time.monotonic() < deadline or count < 4:
            if (count + index) % 3:
                out = serve(served, request_episode)
                if not all(np.array_equal(out[k], single[k]) for k in single):
                    failures.append(("good", index, count))
            else:
                problem, request, message = bad[(count * 8 + index) % len(bad)]
                try:
                    serve(served, request)
                    failures.append((problem, "answered"))
                except tf.errors.InvalidArgumentError as error:
                    if not re.search(message, str(error)):
                        failures.append((problem, str(error)[:200]))
            count += 1
        results.append(count)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == 8 and min(results) >= 4
    assert failures == []
    assert_answers(serve(served, request_episode), expected)


@pytest.mark.parametrize("removed,named", [
    ("variables", "variables/variables.index"), ("variables/variables.index", None),
    ("variables/variables.data-00000-of-00001", "variables/variables.data-"),
    ("saved_model.pb", None)])
def test_incomplete_saved_model_is_refused_naming_what_is_missing(exported, tmp_path, removed,
                                                                  named):
    copy = shutil.copytree(exported, tmp_path / "1")
    target = copy / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    before = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    with pytest.raises(FileNotFoundError, match="not a complete SavedModel: missing .*"
                       + re.escape(named or removed)):
        load_serving(copy)
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == before
    with pytest.raises(FileNotFoundError, match="No SavedModel directory"):
        load_serving(tmp_path / "nowhere")


def test_corrupted_variables_are_refused(exported, tmp_path):
    copy = shutil.copytree(exported, tmp_path / "1")
    (copy / "variables" / "variables.index").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a readable SavedModel"):
        load_serving(copy)


def test_serving_accepts_raw_105_pixel_rgb_images(served, model, request_episode, np_softmax):
    rgb = {k: np.repeat(np.kron(v, np.ones((1, 4, 4, 1), np.uint8))[:, :105, :105], 3, -1)
           if k != "support_labels" else v for k, v in request_episode.items()}
    assert rgb["query_images"].shape[1:] == (105, 105, 3)
    outputs = serve(served, rgb)
    np.testing.assert_allclose(outputs["probabilities"], np_softmax(model(rgb).numpy()),
                               atol=1e-5)


def test_four_channel_request_is_rejected(served, request_episode):
    rgba = {k: np.repeat(v, 4, -1) if k != "support_labels" else v
            for k, v in request_episode.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="1 or 3 channels"):
        serve(served, rgba)


def test_existing_path_is_not_overwritten(model, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_saved_model(model, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind


def test_overwrite_replaces_the_directory(model, tmp_path, request_episode, expected):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export_saved_model(model, target, overwrite=True)
    assert not (target / "stale.txt").exists() and (target / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert_answers(serve(tf.saved_model.load(str(target)).signatures[SIGNATURE],
                         request_episode), expected)


@pytest.mark.parametrize("name,config", [
    ("matching", {"filters": 8, "fce": True, "fce_steps": 2}), ("relation", {"filters": 8}),
    ("siamese", {"filters": 8, "dense_units": 8}),
    ("maml", {"filters": 8, "ways": 5, "algorithm": "metasgd", "test_inner_steps": 2}),
    ("metalstm", {"filters": 8, "inner_learning_rate": 0.5, "test_inner_steps": 2})])
def test_every_model_family_serves_its_keras_answers(name, config, request_episode, tmp_path,
                                                     np_softmax):
    """For the MAML family the signature adapts and predicts: its inner loop runs inside."""
    from keras_fewshot.models import build_model
    keras.utils.set_random_seed(0)
    family = build_model(name, config)
    path = export_saved_model(family, tmp_path / name)
    outputs = serve(tf.saved_model.load(str(path)).signatures[SIGNATURE], request_episode)
    probabilities = np_softmax(family(request_episode).numpy().astype(np.float64))
    assert_answers(outputs, (probabilities, probabilities.argmax(-1)))


def test_feature_branches_are_for_metric_models_and_at_least_one(model, tmp_path):
    """Only a metric model embeds its images in branches; a count below 1 is refused. Both
    before anything is traced or written."""
    from keras_fewshot.export import serving_functions
    from keras_fewshot.models import build_model
    maml = build_model("maml", {"filters": 8, "ways": 5})
    for export in (lambda: export_saved_model(maml, tmp_path / "maml", feature_branches=2),
                   lambda: serving_functions(maml, feature_branches=2)):
        with pytest.raises(ValueError, match="feature_branches=2: only the metric models "
                           r"\(ProtoNet, .*MAMLClassifier is not one"):
            export()
    for count in (0, 2.0):
        with pytest.raises(ValueError, match="feature_branches must be a whole number >= 1"):
            export_saved_model(model, tmp_path / "protonet", feature_branches=count)
    assert list(tmp_path.iterdir()) == []


def _parse(command, *args):
    """The flags of `command` (a keras_fewshot.cli module) parsed from args, without running
    it."""
    from absl import flags
    flag_values = flags.FlagValues()
    command.define_flags(flag_values)
    flag_values(["keras-fewshot", *args])
    return flag_values


def test_export_and_benchmark_commands_take_feature_branches():
    """--feature_branches: 1 by default; at least 1; SavedModel only; forwarded to each
    benchmark process (which exports the metric models with it and prints it)."""
    from absl import flags
    from keras_fewshot.cli import benchmark as benchmark_command
    from keras_fewshot.cli import export as export_command
    base = ("--model=protonet_omniglot", "--output=unused")
    assert _parse(export_command, *base).feature_branches == 1
    assert _parse(export_command, *base, "--feature_branches=2").feature_branches == 2
    assert "--tensorflow_inter_op_parallelism=2" in _parse(export_command, *base)[
        "feature_branches"].help
    with pytest.raises(flags.IllegalFlagValueError, match="feature_branches"):
        _parse(export_command, *base, "--feature_branches=0")
    with pytest.raises(flags.IllegalFlagValueError, match="goes with --format=saved_model"):
        _parse(export_command, *base, "--format=tflite", "--feature_branches=2")
    assert _parse(benchmark_command).feature_branches == 1
    parsed = _parse(benchmark_command, "--model=a", "--model=b", "--measure=serving",
                    "--intra_op_threads=1", "--inter_op_threads=2", "--feature_branches=2")
    for command in benchmark_command.child_commands(["a", "b"], parsed):
        assert "--feature_branches=2" in command
