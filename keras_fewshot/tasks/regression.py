"""Sinusoid regression tasks (Finn et al. 2017, sec. 5.1): what MAMLRegressor trains on and
is measured by (mean-squared error after a few inner steps)."""

import math

import numpy as np
import tensorflow as tf

from keras_fewshot import plots
from keras_fewshot.data import sinusoid_tasks
from keras_fewshot.data.datasets import SINUSOID
from keras_fewshot.data.sinusoid import X_RANGE, sinusoid, sinusoid_parameters, sinusoid_task
from keras_fewshot.tasks.base import TaskKind
from keras_fewshot.tasks.measures import mean_and_ci95


def evaluate_sinusoid(model, tasks=1000, shots=5, queries=100, inner_steps=(1, 5, 10), seed=0,
                      tasks_per_batch=100):
    """Rows {"protocol", "shots", "queries", "tasks", "inner_steps", "mse", "ci95"}: the mean
    over test-stream tasks of the query mean-squared error after `inner_steps` steps of
    adaptation on the K = `shots` support points (`model(inputs, inner_steps=s)`)."""
    batch = math.gcd(tasks, tasks_per_batch)
    dataset = sinusoid_tasks(shots, queries, seed=seed, stream="test", num_tasks=tasks,
                             batch_size=batch)
    predict = tf.function(lambda inputs, steps: model(inputs, inner_steps=steps),
                          reduce_retracing=True)
    errors = {steps: [] for steps in inner_steps}
    for inputs, query_y in dataset:
        for steps in inner_steps:
            predictions = predict(inputs, steps)
            errors[steps].append(tf.reduce_mean(tf.square(predictions - query_y), [1, 2]))
    rows = []
    for steps in inner_steps:
        mse, ci95 = mean_and_ci95(np.concatenate(errors[steps]))
        rows.append({"protocol": SINUSOID, "shots": shots, "queries": queries,
                     "tasks": tasks, "inner_steps": steps, "mse": mse, "ci95": ci95})
    return rows


def sinusoid_curves(model, count=3, shots=5, inner_steps=(0, 1, 10), seed=0, points=200):
    """Adapted curves for a plot: test-stream tasks 0..count-1, numpy arrays
    {"x" [P], "truth" [count, P], "support_x"/"support_y" [count, K],
     "predictions" {steps: [count, P]}}."""
    x = np.linspace(*X_RANGE, points, dtype=np.float32)
    tasks = [sinusoid_task(seed, i, shots, 1, stream="test") for i in range(count)]
    inputs = {"support_x": tf.stack([t[0]["support_x"] for t in tasks]),
              "support_y": tf.stack([t[0]["support_y"] for t in tasks]),
              "query_x": tf.tile(x[None, :, None], [count, 1, 1])}
    truth = [sinusoid(x, *sinusoid_parameters(seed, i, "test")) for i in range(count)]
    return {"x": x, "truth": np.stack([t.numpy() for t in truth]),
            "support_x": inputs["support_x"].numpy()[..., 0],
            "support_y": inputs["support_y"].numpy()[..., 0],
            "predictions": {steps: model(inputs, inner_steps=steps).numpy()[..., 0]
                            for steps in inner_steps}}


class Regression(TaskKind):
    """Batches of `episodes_per_step` generated sinusoid tasks of K = `shots` support and
    `queries` query points, the query values as targets; not served."""

    name = "regression_tasks"
    trained_units = "tasks"
    dataset = SINUSOID
    # K = 5 support points, 100 query points; MSE after 1, 5 and 10 inner steps
    protocols = {SINUSOID: {"settings": ((5,),), "queries": 100, "inner_steps": (1, 5, 10)}}

    def training_stream(self, config, model, data, start=0):
        if config.dataset != self.dataset:
            self.refuse_dataset(config)
        return sinusoid_tasks(config.shots, config.queries, seed=config.seed, start=start,
                              num_tasks=config.episodes - start,
                              batch_size=config.episodes_per_step)

    def task_shape(self, config):
        return f"{config.shots} support + {config.queries} query points"

    def run_description(self, config):
        return f"{config.shots}-shot regression tasks"

    def evaluate(self, model, data, name, protocol, spec, settings=None, episodes=1000,
                 queries=15, seed=0, within_group=False, episodes_per_batch=10, verbose=1):
        """`evaluate_sinusoid`'s rows for each K of `settings` ((K,) tuples; default the
        protocol's), `episodes` tasks each."""
        if protocol not in self.protocols:
            raise ValueError(f"A regression model is measured by the {sorted(self.protocols)} "
                             f"protocols, not {protocol!r}")
        return [row for (shots,) in settings or spec["settings"]
                for row in evaluate_sinusoid(model, tasks=episodes, shots=shots,
                                             queries=queries, seed=seed,
                                             inner_steps=spec["inner_steps"])]

    def evaluation_figure(self, model, rows, label, data, name, queries=15, seed=0,
                          within_group=False):
        """A few test tasks' curves after 0, 1 and 10 inner steps, against the truth."""
        return plots.sinusoid_figure(sinusoid_curves(model, seed=seed))


REGRESSION = Regression()
