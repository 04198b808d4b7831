"""keras_fewshot.data.sinusoid and the "sinusoid" evaluation protocol."""

import math

import keras
import numpy as np
import pytest

from keras_fewshot import evaluation
from keras_fewshot.data import sinusoid_tasks
from keras_fewshot.data.sinusoid import sinusoid_parameters
from keras_fewshot.models import MAMLRegressor
from keras_fewshot.tasks.measures import mean_and_ci95


def as_numpy(dataset):
    return list(dataset.as_numpy_iterator())


def test_tasks_follow_the_papers_distribution():
    tasks = as_numpy(sinusoid_tasks(5, 7, seed=3, num_tasks=400))
    assert len(tasks) == 400
    amplitudes, phases = [], []
    for i, (inputs, query_y) in enumerate(tasks):
        assert inputs["support_x"].shape == inputs["support_y"].shape == (5, 1)
        assert inputs["query_x"].shape == query_y.shape == (7, 1)
        amplitude, phase = (float(v) for v in sinusoid_parameters(3, i))
        amplitudes.append(amplitude)
        phases.append(phase)
        x = np.concatenate([inputs["support_x"], inputs["query_x"]])
        y = np.concatenate([inputs["support_y"], query_y])
        assert np.all((x >= -5) & (x <= 5))
        np.testing.assert_allclose(y, amplitude * np.sin(x - phase), atol=1e-5)
    assert 0.1 <= min(amplitudes) < 0.5 and 4.6 < max(amplitudes) <= 5.0
    assert 0.0 <= min(phases) < 0.2 and math.pi - 0.2 < max(phases) <= math.pi
    assert abs(np.mean(amplitudes) - 2.55) < 0.25  # U[0.1, 5]: mean 2.55, sd 1.41


def test_task_i_depends_only_on_seed_stream_and_index():
    whole = as_numpy(sinusoid_tasks(5, 3, seed=1, num_tasks=6))
    resumed = as_numpy(sinusoid_tasks(5, 3, seed=1, start=4, num_tasks=2))
    for (a, ya), (b, yb) in zip(whole[4:], resumed):
        np.testing.assert_array_equal(ya, yb)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_seed = as_numpy(sinusoid_tasks(5, 3, seed=2, num_tasks=6))
    test_stream = as_numpy(sinusoid_tasks(5, 3, seed=1, stream="test", num_tasks=6))
    for other in (other_seed, test_stream):
        for (a, _), (b, _) in zip(whole, other):
            assert not np.allclose(a["support_x"], b["support_x"])


def test_batched_tasks_and_bad_arguments():
    (inputs, query_y), = as_numpy(sinusoid_tasks(10, 4, num_tasks=3, batch_size=3))
    assert inputs["support_x"].shape == (3, 10, 1) and query_y.shape == (3, 4, 1)
    with pytest.raises(ValueError, match="shots must be at least 1"):
        sinusoid_tasks(0, 4)
    with pytest.raises(ValueError, match="stream must be one of"):
        sinusoid_tasks(5, 4, stream="validation")


def test_sinusoid_evaluation_reports_mse_per_inner_steps():
    """A learner that predicts 0 whatever it adapts (all weights 0, inner rate 0) has MSE
    mean(y^2) over the test tasks' query points, after any number of inner steps."""
    keras.utils.set_random_seed(0)
    model = MAMLRegressor(hidden_units=(), inner_learning_rate=0.0)
    for w in model.weights:
        w.assign(np.zeros(w.shape, np.float32))
    rows = evaluation.evaluate(model, "sinusoid", episodes=30, queries=20)
    assert [(r["inner_steps"], r["shots"], r["tasks"], r["queries"]) for r in rows] == [
        (1, 5, 30, 20), (5, 5, 30, 20), (10, 5, 30, 20)]
    per_task = [np.mean(y ** 2) for _, y in as_numpy(
        sinusoid_tasks(5, 20, stream="test", num_tasks=30))]
    expected = mean_and_ci95(per_task)
    for row in rows:
        np.testing.assert_allclose((row["mse"], row["ci95"]), expected, rtol=1e-5)
    table = evaluation.markdown_table(rows)
    assert "| sinusoid | 5 | 10 | 30 |" in table and "MSE" in table



def test_a_regression_task_as_python_lists_gives_what_arrays_give():
    model = MAMLRegressor(hidden_units=(4,))
    task = {"support_x": [[0.0], [1.0]], "support_y": [[0.0], [1.0]], "query_x": [[0.5]]}
    as_arrays = {k: np.asarray(v, np.float32) for k, v in task.items()}
    np.testing.assert_array_equal(np.asarray(model(task)), np.asarray(model(as_arrays)))
    with pytest.raises(ValueError, match="support_x must hold numbers only"):
        model({**task, "support_x": [[0.0], ["one"]]})
