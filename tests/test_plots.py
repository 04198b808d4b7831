"""keras_fewshot.plots: learning curves from training logs, episodes with predictions."""

import json

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import colors

from keras_fewshot import plots, training


def write_log(folder, prefix, rows, **config):
    """<prefix>config.json (a TrainConfig with `config`) and <prefix>history.csv (`rows`)."""
    folder.mkdir(parents=True, exist_ok=True)
    values = json.loads(training.TrainConfig(**config).to_json())
    (folder / f"{prefix}config.json").write_text(json.dumps(values))
    lines = ["epoch,accuracy,loss,val_accuracy,val_loss"]
    lines += [f"{e},{a},{l},NA,NA" for e, a, l in rows]
    (folder / f"{prefix}history.csv").write_text("\n".join(lines) + "\n")
    return folder / f"{prefix}history.csv"


def test_read_history_counts_episodes_and_keeps_the_last_of_a_repeated_epoch(tmp_path):
    path = write_log(tmp_path / "run", "", [(0, 0.5, 2.0), (1, 0.6, 1.5), (1, 0.7, 1.2),
                                            (2, 0.8, 1.0)],
                     ways=20, shots=5, queries=10, episodes_per_epoch=250, learning_rate=3e-4)
    label, episodes, loss, accuracy, units = training.read_history(tmp_path / "run")
    np.testing.assert_array_equal(episodes, [250, 500, 750])
    np.testing.assert_allclose(loss, [2.0, 1.2, 1.0])
    np.testing.assert_allclose(accuracy, [0.5, 0.7, 0.8])
    assert label == "run/history.csv: 20-way 5-shot 10-query, lr 0.0003" and units == "episodes"
    pairs = write_log(tmp_path / "pairs", "pretrain_", [(0, 0.5, 0.7)], model="siamese",
                      pairs=64, episodes_per_epoch=100)
    assert "64 pairs per step" in training.read_history(pairs)[0]
    with pytest.raises(FileNotFoundError, match="and its config"):
        training.read_history(tmp_path / "nowhere")


def test_learning_curves_draw_phases_one_after_another(tmp_path):
    first = write_log(tmp_path, "a_", [(0, 0.5, 2.0), (1, 0.6, 1.0)], episodes_per_epoch=500)
    second = write_log(tmp_path, "b_", [(0, 0.7, 0.9), (1, 0.8, 0.8), (2, 0.9, 0.7)],
                       episodes_per_epoch=100)
    figure = plots.learning_curves([training.read_history(first), training.read_history(second)],
                                   title="two phases")
    loss_axes, accuracy_axes = figure.axes
    assert loss_axes.get_xlabel() == accuracy_axes.get_xlabel() == "training episodes"
    a, b = [line for line in loss_axes.get_lines() if line.get_marker() == "o"]
    np.testing.assert_array_equal(a.get_xdata(), [500, 1000])
    np.testing.assert_array_equal(b.get_xdata(), [1100, 1200, 1300])  # continues at 1000
    np.testing.assert_allclose(accuracy_axes.get_lines()[1].get_ydata(), [70, 80, 90])
    png = tf.io.decode_png(plots.png_bytes(figure, dpi=50)).numpy()
    assert png.shape[2] == 4 and png.std() > 0


def frame_colours(figure):
    """{colour name: number of frames} of an episode figure."""
    named = {colors.to_hex(c): n for n, c in (("support", plots.SUPPORT), ("right", plots.RIGHT),
                                              ("wrong", plots.WRONG),
                                              ("unknown", plots.UNKNOWN))}
    found = {}
    for patch in figure.axes[0].patches:
        name = named[colors.to_hex(patch.get_edgecolor())]
        found[name] = found.get(name, 0) + 1
    return found


def test_episode_figure_frames_and_titles():
    rng = np.random.default_rng(0)
    support = rng.integers(0, 256, (3, 10, 10, 1), np.uint8)
    query = rng.integers(0, 256, (3, 16, 16, 3), np.uint8)  # another size and channels
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2]])
    figure = plots.episode_figure(support, [0, 1, 1], query, probabilities, [0, 1, 1],
                                  class_names=["alpha", "beta"], title="t")
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert {"alpha", "beta", "0.90", "0.70", "→ alpha\n0.80", "t"} <= set(texts)
    assert frame_colours(figure) == {"support": 3, "right": 2, "wrong": 1}
    images = figure.axes[0].get_images()
    np.testing.assert_array_equal(images[0].get_array(), support[0, ..., 0])  # class 0's shot
    unknown = plots.episode_figure(support, [0, 1, 1], query, probabilities)
    assert frame_colours(unknown) == {"support": 3, "unknown": 3}
    assert "→" not in "".join(t.get_text() for t in unknown.axes[0].texts)


def test_episode_title():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2]])
    assert plots.episode_title([0, 1, 1], [0, 1, 1], probabilities) == \
        "2-way 1-2-shot: 2 of 3 queries right"
    assert plots.episode_title([1, 0], None, probabilities) == "2-way 1-shot, 3 queries"


def test_learning_curves_of_a_regression_run_have_no_accuracy_panel(tmp_path):
    folder = tmp_path / "run"
    write_log(folder, "", [], model="maml_regressor", dataset="sinusoid", shots=10,
              episodes_per_step=25, episodes_per_epoch=50)
    (folder / "history.csv").write_text("epoch,loss,val_loss\n0,2.5,NA\n1,1.5,NA\n")
    label, episodes, loss, accuracy, units = training.read_history(folder)
    assert accuracy is None and label.endswith("10-shot regression tasks, 25 per step, lr 0.001")
    np.testing.assert_array_equal(episodes, [50, 100])
    (panel,) = plots.learning_curves([(label, episodes, loss, accuracy, units)]).axes
    np.testing.assert_allclose(panel.get_lines()[0].get_ydata(), [2.5, 1.5])
    assert panel.get_xlabel() == "training tasks"


@pytest.mark.parametrize("model, units", [("mann", "sequences"), ("siamese", "pair batches")])
def test_learning_curves_count_what_the_run_trains_on(tmp_path, model, units):
    """The x axis names what a run's `episodes` count: a sequence model's sequences, a pair
    model's batches of pairs; phases of two kinds (a Siamese head on a ProtoNet) both."""
    run = write_log(tmp_path / model, "", [(0, 0.5, 2.0)], model=model, ways=5)
    figure = plots.learning_curves([training.read_history(run)])
    assert {axes.get_xlabel() for axes in figure.axes} == {f"training {units}"}
    episodes = write_log(tmp_path / "protonet", "", [(0, 0.5, 2.0)])
    both = plots.learning_curves([training.read_history(episodes), training.read_history(run)])
    assert both.axes[0].get_xlabel() == f"training episodes / {units}"
