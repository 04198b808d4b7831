"""tools/*.py (the front ends of the `keras-fewshot` command, keras_fewshot.cli) as a user
runs them, and their refusals of bad flags: named, before any model or data is loaded."""

import json
import pathlib
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from keras_fewshot import benchmark, cli, training
from keras_fewshot.backbones import ResNet12
from keras_fewshot.classify import sample_dir
from keras_fewshot.cli import benchmark as benchmark_command
from keras_fewshot.cli import classify as classify_command
from keras_fewshot.cli import evaluate as evaluate_command
from keras_fewshot.cli import train as train_command

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO_ROOT / "tools"

TRAIN_FLAGS = ("--model=protonet", '--model_config={"filters": 8}', "--split=vinyals",
               "--subset=val", "--ways=5", "--shots=1", "--queries=1", "--episodes=2",
               "--episodes_per_epoch=2", "--verbose=2")


@pytest.fixture(scope="module")
def trained_dir(run_python, omniglot_dir, tmp_path_factory):
    """A training directory written by tools/train.py; returns (dir, its output)."""
    model_dir = tmp_path_factory.mktemp("tools") / "run"
    proc = run_python(TOOLS_DIR / "train.py", f"--model_dir={model_dir}",
                      f"--data_dir={omniglot_dir}", *TRAIN_FLAGS)
    return model_dir, proc.stdout + proc.stderr


def test_train_tool_writes_a_training_directory(trained_dir):
    model_dir, output = trained_dir
    assert "Training protonet" in output and "episode 0 of 2" in output
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["ways"], config["episodes"], config["model_config"]) == (5, 2, {"filters": 8})
    assert (model_dir / "model.weights.h5").is_file()
    assert (model_dir / "history.csv").read_text().count("\n") == 2  # header + one epoch
    assert any((model_dir / "checkpoints").iterdir())


def test_evaluate_tool_prints_the_table(trained_dir, run_python, omniglot_dir, tmp_path):
    model_dir, _ = trained_dir
    proc = run_python(TOOLS_DIR / "evaluate.py", f"--model_dir={model_dir}",
                      f"--data_dir={omniglot_dir}", "--episodes=2", "--queries=3",
                      "--setting=5x1", f"--output_json={tmp_path / 'rows.json'}")
    assert "| protocol | setting | episodes | accuracy (%) | 95% CI |" in proc.stdout
    assert "| vinyals | 5-way 1-shot | 2 |" in proc.stdout
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert (row["ways"], row["shots"], row["queries"], row["episodes"]) == (5, 1, 3, 2)
    assert 0 <= row["accuracy"] <= 1
    assert f"| {100 * row['accuracy']:.2f} |" in proc.stdout


def test_export_tool_writes_a_saved_model(trained_dir, run_python, tmp_path):
    model_dir, _ = trained_dir
    output = tmp_path / "exported" / "1"
    proc = run_python(TOOLS_DIR / "export.py", f"--model_dir={model_dir}", f"--output={output}")
    assert "SavedModel written to" in proc.stdout and "serving_default" in proc.stdout
    assert (output / "saved_model.pb").is_file()
    before = sorted(p.name for p in output.rglob("*"))
    again = run_python(TOOLS_DIR / "export.py", f"--model_dir={model_dir}",
                       f"--output={output}", check=False)
    assert again.returncode != 0 and "FileExistsError" in again.stderr
    assert sorted(p.name for p in output.rglob("*")) == before


def test_export_tool_builds_the_model_in_the_dtype_policy(run_python, tmp_path):
    """--dtype_policy=mixed_bfloat16: the exported convolutions compute in bf16 (float32
    weights folded, then cast), and the request still answers in float32."""
    output = tmp_path / "bf16"
    run_python(TOOLS_DIR / "export.py", "--model=protonet_omniglot",
               "--dtype_policy=mixed_bfloat16", f"--output={output}")
    serve = tf.saved_model.load(str(output)).signatures["serving_default"]
    graph = serve.graph.as_graph_def()
    convs = [n for f in graph.library.function for n in f.node_def if n.op == "Conv2D"]
    assert len(convs) == 4 and all(n.attr["T"].type == tf.bfloat16.as_datatype_enum
                                   for n in convs)
    images = np.full((6, 28, 28, 1), 255, np.uint8)
    answer = serve(support_images=images[:5], support_labels=np.arange(5, dtype=np.int32),
                   query_images=images[5:])
    assert answer["probabilities"].dtype == tf.float32 and answer["classes"].shape == (1,)


def test_model_flags_are_required(run_python):
    proc = run_python(TOOLS_DIR / "evaluate.py", "--episodes=1", check=False)
    assert proc.returncode != 0
    assert "model" in proc.stderr and "model_dir" in proc.stderr


def test_benchmark_tool_prints_one_json_line_per_measurement(run_python, omniglot_dir):
    proc = run_python(TOOLS_DIR / "benchmark.py", "--model=protonet_omniglot", "--repeats=1",
                      f"--data_dir={omniglot_dir}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    measures = {row["measure"] for row in rows}
    assert {"environment", "pipeline_steps_per_s", "inference_ms_per_episode",
            "serving_ms_per_request", "train_ms_per_step", "peak_memory_mb"} <= measures
    for row in rows:
        if "ms_median" in row:
            assert row["ms_median"] > 0 and row["repeats"] >= 1
            assert 0 <= row["steal_percent"] <= 100  # Linux: /proc/stat is there
    threads, = [row for row in rows if row["measure"] == "serving_threads"]
    assert threads["threads"] == 8 and threads["requests"] >= 8  # each client's first one
    assert 0 < threads["p50_ms"] <= threads["p99_ms"] and threads["requests_per_s"] > 0


def test_steal_is_the_hypervisors_share_of_the_machines_cpu_time():
    from keras_fewshot.benchmark import _steal_percent
    # user nice system idle iowait irq softirq steal: 300 ticks spent, 60 of them stolen
    before, after = [100, 0, 10, 500, 0, 0, 0, 40], [250, 0, 40, 560, 0, 0, 0, 100]
    assert _steal_percent(before, after) == 20.0
    assert _steal_percent(None, after) is None


def test_meta_flags_train_and_evaluate_a_sinusoid_regressor(run_python, tmp_path):
    model_dir = tmp_path / "sinusoid"
    proc = run_python(TOOLS_DIR / "train.py", f"--model_dir={model_dir}",
                      "--model=maml_regressor", "--dataset=sinusoid", "--shots=5",
                      "--queries=5", "--episodes_per_step=4", "--episodes=8",
                      "--episodes_per_epoch=8", "--inner_learning_rate=0.02", "--inner_steps=2",
                      "--test_inner_steps=3", "--first_order", "--optimizer=sgd", "--verbose=2")
    assert "Training maml_regressor" in proc.stdout + proc.stderr
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_config"] == {"inner_learning_rate": 0.02, "train_inner_steps": 2,
                                      "test_inner_steps": 3, "first_order": True}
    assert (config["dataset"], config["optimizer"]) == ("sinusoid", "sgd")
    proc = run_python(TOOLS_DIR / "evaluate.py", f"--model_dir={model_dir}", "--episodes=10",
                      f"--output_json={tmp_path / 'rows.json'}", f"--plot={tmp_path / 'a.png'}")
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["protocol"], r["inner_steps"], r["tasks"]) for r in rows] == [
        ("sinusoid", 1, 10), ("sinusoid", 5, 10), ("sinusoid", 10, 10)]
    assert "| sinusoid | 5 | 10 | 10 |" in proc.stdout
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_tool_times_regression_zoo_models_by_their_meta_step(run_python):
    """Two models: each in a process of its own (each prints its environment line), which
    gets every flag of the tool."""
    proc = run_python(TOOLS_DIR / "benchmark.py", "--model=maml_sinusoid",
                      "--model=pretrained_sinusoid", "--repeats=1",
                      "--dtype_policy=mixed_bfloat16")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["measure"] for r in rows] == ["environment", "meta_step_ms"] * 2
    maml, pretrained = rows[1], rows[3]
    assert (maml["model"], maml["tasks"], pretrained["model"]) == (
        "maml_sinusoid", 25, "pretrained_sinusoid")
    assert maml["episode"] == "5 support + 10 query points"
    assert maml["ms_median"] > 0 and maml["peak_memory_mb"] > 0
    assert maml["repeats"] == pretrained["repeats"] == 1
    assert rows[0]["dtype_policy"] == rows[2]["dtype_policy"] == "mixed_bfloat16"


def test_benchmark_tool_times_a_training_step_on_synthetic_images(run_python):
    """--synthetic_data: the ResNet-12 ProtoNet's 5-way 5-shot 15-query RGB step without its
    data set (here a tiny ResNet-12 at 16x16, one repeat); the row names what it measured."""
    backbone = keras.saving.serialize_keras_object(ResNet12((2, 2, 2, 2), name="embedding"))
    config = {"model": "protonet", "ways": 5, "shots": 5, "queries": 15,
              "model_config": {"backbone": backbone, "preprocessor": "rgb", "image_size": 16}}
    proc = run_python(TOOLS_DIR / "benchmark.py", "--synthetic_data", "--repeats=1",
                      f"--meta_config={json.dumps(config)}", "--data_dir=/nonexistent")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["measure"] for r in rows] == ["environment", "meta_step_ms"]
    row = rows[1]
    assert (row["model"], row["episode"], row["tasks"], row["data"]) == (
        "protonet", "5w5s15q", 1, "synthetic")
    assert (row["preprocessor"], row["image_size"], row["backbone"]["class_name"]) == (
        "rgb", 16, "ResNet12")
    assert {"ms_median", "cpu_ms_median", "first_step_s", "peak_memory_mb"} <= set(row)
    assert row["repeats"] == 1
    # The images are what load_data would give that model: its resolution, its channels.
    rgb = training.TrainConfig.from_dict(config)
    data = benchmark.synthetic_data(rgb)
    assert data.images.shape == (5 * 20, 16, 16, 3) and data.num_classes == 5
    ink = benchmark.synthetic_data(training.TrainConfig(model="protonet", ways=3))
    assert ink.images.shape[1:] == (28, 28, 1) and ink.num_classes == 3


TINY_LSTM = {"classes": 3, "image_size": 8, "units": 8}


def test_tools_train_evaluate_and_plot_a_sequence_model(run_python, omniglot_dir, tmp_path):
    model_dir = tmp_path / "run"
    run_python(TOOLS_DIR / "train.py", f"--model_dir={model_dir}", f"--data_dir={omniglot_dir}",
               "--model=sequence_lstm", f"--model_config={json.dumps(TINY_LSTM)}",
               "--subset=val", "--ways=3", "--instances=2", "--episodes_per_step=2",
               "--episodes=2", "--episodes_per_epoch=2", "--verbose=2")
    proc = run_python(TOOLS_DIR / "evaluate.py", f"--model_dir={model_dir}",
                      f"--data_dir={omniglot_dir}", "--episodes=2",
                      f"--output_json={tmp_path / 'rows.json'}")
    assert "| protocol | classes | sequences | 1st | 2nd |" in proc.stdout
    assert "| vinyals | 3 | 2 |" in proc.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["instance"] for r in rows] == list(range(1, 11))
    run_python(TOOLS_DIR / "plot.py", f"--curve=LSTM={tmp_path / 'rows.json'}",
               f"--output={tmp_path / 'a.png'}")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
def png_shape(path):
    import tensorflow as tf
    return tuple(tf.io.decode_png(pathlib.Path(path).read_bytes()).shape)


def test_plot_tool_draws_learning_curves(trained_dir, run_python, tmp_path):
    model_dir, _ = trained_dir
    proc = run_python(TOOLS_DIR / "plot.py", f"--log={model_dir}", f"--log={model_dir}",
                      f"--output={tmp_path / 'curves.png'}", "--title=tiny")
    assert "Learning curves written to" in proc.stdout
    height, width, _ = png_shape(tmp_path / "curves.png")
    assert width > height > 100


def test_classify_tool_on_the_packaged_sample(run_python, tmp_path):
    """The README's main job: no data set needed."""
    sample = REPO_ROOT / "keras_fewshot" / "data" / "omniglot_sample"
    proc = run_python(TOOLS_DIR / "classify.py", "--model=protonet_omniglot",
                      f"--support={sample / 'support'}", f"--query={sample / 'query'}",
                      f"--plot={tmp_path / 'sample.png'}")
    lines = proc.stdout.splitlines()
    predictions = [line for line in lines if line.endswith("right") or "WRONG, is" in line]
    assert len(predictions) == 80
    right = sum(line.endswith("right") for line in predictions)
    assert f"20-way 1-shot: {right} of 80 queries right" in proc.stdout
    assert right >= 64  # the card: 95% at 20-way 1-shot over 1000 episodes
    first = predictions[0]  # "<path>: <class> (<probability>)  right"
    assert first.startswith(str(sample / "query")) and float(first.split("(")[1][:5]) <= 1
    assert png_shape(tmp_path / "sample.png")[1] > 1000  # 20 columns
    wrong = run_python(TOOLS_DIR / "classify.py", "--model=protonet_omniglot",
                       f"--support={sample / 'support' / 'ULOG_character09'}",
                       f"--query={sample / 'query'}", check=False)
    assert wrong.returncode != 0 and "no class sub-folders" in wrong.stderr


@pytest.fixture(scope="module")
def folder_run(run_python, tmp_path_factory, write_image_folder):
    """A training directory of tools/train.py on a generated folder (8 classes, half kept
    for testing): (model_dir, folder, output)."""
    root = tmp_path_factory.mktemp("own")
    write_image_folder(root / "images", {f"kind{c}": 6 for c in range(8)}, size=(30, 24))
    proc = run_python(TOOLS_DIR / "train.py", f"--model_dir={root / 'run'}",
                      f"--dataset=folder:{root / 'images'}",
                      "--split=random:train=0.5,test=0.5", '--model_config={"filters": 8}',
                      "--ways=3", "--shots=1", "--queries=2", "--episodes=2",
                      "--episodes_per_epoch=2", "--verbose=2")
    return root / "run", root / "images", proc.stdout + proc.stderr


def test_train_and_evaluate_tools_on_an_image_folder(folder_run, run_python, tmp_path):
    model_dir, images, output = folder_run
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["dataset"], config["split"], config["subset"]) == (
        f"folder:{images}", "random:train=0.5,test=0.5", "train")
    proc = run_python(TOOLS_DIR / "evaluate.py", f"--model_dir={model_dir}", "--episodes=2",
                      "--queries=2", "--setting=3x1", f"--plot={tmp_path / 'episode.png'}")
    # the run's 4 test classes (not its 4 training classes)
    name = f"folder:{images} random:train=0.5,test=0.5/test"
    assert f"| {name} | 3-way 1-shot | 2 |" in proc.stdout
    height, width, _ = png_shape(tmp_path / "episode.png")
    assert width > 150 and height > 150  # 3 columns, 1 support row + 2 query rows


def parse(command, *args):
    """The flags of `command` (a keras_fewshot.cli module) parsed from args, in a FlagValues of
    their own (as `keras-fewshot <command>` parses them, without running it)."""
    flag_values = flags.FlagValues()
    command.define_flags(flag_values)
    flag_values(["keras-fewshot", *args])
    return flag_values


def test_bad_json_flags_are_named(run_python, tmp_path):
    for value, problem in (("{bad", "not valid JSON"), ("[1, 2]", "must be a JSON object")):
        with pytest.raises(flags.IllegalFlagValueError,
                           match=rf"flag --model_config={re.escape(value)}: {problem}"):
            parse(train_command, f"--model_dir={tmp_path}", f"--model_config={value}")
    with pytest.raises(flags.IllegalFlagValueError, match="flag --meta_config=.*not valid JSON"):
        parse(benchmark_command, "--meta_config={'model': 'maml'}")
    # as the user sees it: absl's one-line error, no traceback, nothing trained
    proc = run_python(TOOLS_DIR / "train.py", f"--model_dir={tmp_path / 'run'}",
                      "--model_config={bad", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "flag --model_config={bad: not valid JSON" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_model_dir_that_is_a_file_is_refused_before_loading(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    with pytest.raises(flags.IllegalFlagValueError, match=r"--model_dir=.*notes.txt: is a file"):
        parse(train_command, f"--model_dir={a_file}")
    for command in (evaluate_command, classify_command):
        with pytest.raises(flags.IllegalFlagValueError,
                           match=r"--model_dir=.*notes.txt: is not a directory"):
            parse(command, f"--model_dir={a_file}")


def test_a_checkpoint_step_goes_with_a_training_directory(tmp_path):
    for command in (evaluate_command, classify_command):
        with pytest.raises(flags.IllegalFlagValueError, match="--step goes with --model_dir"):
            parse(command, "--model=protonet_omniglot", "--step=400")
        assert parse(command, f"--model_dir={tmp_path}", "--step=400").step == 400
    with pytest.raises(flags.IllegalFlagValueError, match="--step=0"):
        parse(evaluate_command, f"--model_dir={tmp_path}", "--step=0")


def test_evaluate_refuses_a_malformed_setting():
    for setting in ("5x", "x1", "5x0", "five"):
        with pytest.raises(flags.IllegalFlagValueError, match="each --setting is NxK"):
            parse(evaluate_command, "--model=protonet_omniglot", f"--setting={setting}")
    assert parse(evaluate_command, "--model=m", "--setting=5x1", "--setting=10").setting == [
        "5x1", "10"]


def test_evaluate_takes_a_count_of_test_distortions():
    assert parse(evaluate_command, "--model=m").test_distortions == 0
    assert parse(evaluate_command, "--model=m", "--test_distortions=8").test_distortions == 8
    with pytest.raises(flags.IllegalFlagValueError, match="--test_distortions=-1"):
        parse(evaluate_command, "--model=m", "--test_distortions=-1")


def test_classify_refuses_an_absurd_image_size():
    for size in (100000, 0):
        with pytest.raises(flags.IllegalFlagValueError,
                           match=rf"--image_size={size}: must be 1 to 1024 pixels"):
            parse(classify_command, "--model=protonet_omniglot", f"--image_size={size}")
    assert parse(classify_command, "--model=protonet_omniglot", "--image_size=84").image_size == 84


def test_classify_refuses_a_support_of_one_class(tmp_path, write_image_folder):
    write_image_folder(tmp_path / "support", {"owl": 2})
    write_image_folder(tmp_path / "query", {"owl": 1})
    with pytest.raises(flags.IllegalFlagValueError,
                       match=r"--support=.*: has one class \('owl'\); .* at least 2 classes"):
        parse(classify_command, "--model=protonet_omniglot", f"--support={tmp_path / 'support'}",
              f"--query={tmp_path / 'query'}")
    write_image_folder(tmp_path / "support", {"emu": 1})
    parse(classify_command, "--model=protonet_omniglot", f"--support={tmp_path / 'support'}",
          f"--query={tmp_path / 'query'}")


def test_classify_defaults_to_the_packaged_sample(tmp_path):
    sample = sample_dir()
    assert classify_command.support_and_query(parse(classify_command, "--model=x")) == (
        sample / "support", [sample / "query"])
    with pytest.raises(flags.IllegalFlagValueError, match="--query is needed with your own "
                                                          "--support"):
        parse(classify_command, "--model=x", f"--support={sample / 'support'}")


def test_benchmark_runs_each_model_in_its_own_process_with_every_flag():
    """The commands it would run (running them is the benchmark's own test)."""
    parsed = parse(benchmark_command, "--model=a", "--model=b", "--repeats=1",
                   "--dtype_policy=mixed_bfloat16", "--measure=serving")
    first, second = benchmark_command.child_commands(["a", "b"], parsed)
    assert first[:5] == [sys.executable, "-m", "keras_fewshot.cli", "benchmark", "--model=a"]
    assert second[4] == "--model=b" and first[5:] == second[5:]
    assert {"--repeats=1", "--dtype_policy=mixed_bfloat16", "--measure=serving"} <= set(first)
    assert not any(arg.startswith("--model=") for arg in first[5:])


def test_the_command_lists_its_sub_commands(capsys):
    for argv, code in ((["keras-fewshot"], 2), (["keras-fewshot", "--help"], 0)):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == code
        out = capsys.readouterr().out
        assert out.startswith("usage: keras-fewshot <command>")
        assert all(f"  {name} " in out for name in cli.COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["keras-fewshot", "clasify"])
    assert exit_.value.code == 2 and "unknown command 'clasify'" in capsys.readouterr().err
    assert set(cli.COMMANDS) == {p.stem for p in TOOLS_DIR.glob("*.py")}


def test_evaluate_converts_channels_as_the_run_did(run_python, write_image_folder, tmp_path):
    """A folder of gray and colour files needs --channels; evaluate takes the run's."""
    images = tmp_path / "images"
    write_image_folder(images, {f"colour{c}": 4 for c in range(3)}, size=(16, 16))
    write_image_folder(images, {f"gray{c}": 4 for c in range(3)}, size=(16, 16), channels=1)
    run_python(TOOLS_DIR / "train.py", f"--model_dir={tmp_path / 'run'}",
               f"--dataset=folder:{images}", "--split=random:train=0.5,test=0.5",
               "--channels=3", "--image_size=16", '--model_config={"filters": 4}', "--ways=2",
               "--shots=1", "--queries=1", "--episodes=2", "--episodes_per_epoch=2",
               "--verbose=2")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["channels"] == 3 and config["model_config"]["preprocessor"] == "rgb"
    proc = run_python(TOOLS_DIR / "evaluate.py", f"--model_dir={tmp_path / 'run'}",
                      "--episodes=1", "--queries=1", "--setting=2x1")
    assert "| 2-way 1-shot | 1 |" in proc.stdout
