"""tools/train.py, tools/evaluate.py and tools/export.py as a user runs them."""

import json
import pathlib

import pytest

TOOLS_DIR = pathlib.Path(__file__).resolve().parent.parent / "tools"

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


def test_model_flags_are_required(run_python):
    proc = run_python(TOOLS_DIR / "evaluate.py", "--episodes=1", check=False)
    assert proc.returncode != 0
    assert "model" in proc.stderr and "model_dir" in proc.stderr


def test_benchmark_tool_prints_one_json_line_per_measurement(run_python, omniglot_dir):
    proc = run_python(TOOLS_DIR / "benchmark.py", "--model=protonet_omniglot", "--repeats=1",
                      f"--data_dir={omniglot_dir}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    measures = {row["measure"] for row in rows}
    assert {"environment", "pipeline_episodes_per_s", "inference_ms_per_episode",
            "serving_ms_per_request", "train_ms_per_episode", "peak_memory_mb"} <= measures
    for row in rows:
        if "ms_median" in row:
            assert row["ms_median"] > 0 and row["repeats"] >= 1


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


def test_benchmark_tool_times_a_regression_zoo_model_by_its_meta_step(run_python):
    proc = run_python(TOOLS_DIR / "benchmark.py", "--model=maml_sinusoid", "--repeats=1")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    (row,) = [r for r in rows if r["measure"] == "meta_step_ms"]
    assert (row["model"], row["tasks"]) == ("maml_sinusoid", 25)
    assert row["episode"] == "5 support + 10 query points"
    assert row["ms_median"] > 0 and row["peak_memory_mb"] > 0


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
    run_python(TOOLS_DIR / "plot_accuracy_by_instance.py", f"--curve=LSTM={tmp_path / 'rows.json'}",
               f"--output={tmp_path / 'a.png'}")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
