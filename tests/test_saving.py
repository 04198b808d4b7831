"""Save/load round trips of every model family: the .keras file and the weights file.

Each model gets every variable moved off its initial value (batch-norm moving statistics and
LSTM weights included), so a loader that skipped any variable would change the answers.
"""

import keras
import numpy as np
import pytest

from keras_fewshot.models import MODELS, build_model
from keras_fewshot.tasks import PAIRS, REGRESSION, SEQUENCES

TINY = {"filters": 8}
FAMILIES = {
    "protonet": ("protonet", TINY),
    "protonet_cosine": ("protonet", {**TINY, "distance": "cosine"}),
    "matching": ("matching", TINY),
    "matching_fce": ("matching", {**TINY, "fce": True, "fce_steps": 2}),
    "metalstm": ("metalstm", {**TINY, "ways": 3, "train_inner_steps": 1,
                              "test_inner_steps": 2}),
    "relation": ("relation", {**TINY, "hidden_units": 4}),
    "siamese": ("siamese", TINY),
    "siamese_dense": ("siamese", {**TINY, "dense_units": 8}),
    "maml": ("maml", {**TINY, "ways": 3, "test_inner_steps": 1}),
    "maml_metasgd": ("maml", {**TINY, "ways": 3, "algorithm": "metasgd",
                              "test_inner_steps": 1}),
    "maml_regressor": ("maml_regressor", {"hidden_units": [8, 8], "algorithm": "metasgd"}),
    "metanet": ("metanet", {**TINY, "key_units": 6, "hidden_units": 5, "max_ways": 4,
                            "meta_units": 3}),
    "mann": ("mann", {"classes": 3, "units": 8, "memory_size": 6, "word_size": 4,
                      "read_heads": 2}),
    "sequence_lstm": ("sequence_lstm", {"classes": 3, "units": 8}),
}


def test_every_registered_family_is_covered():
    assert {name for name, _ in FAMILIES.values()} == set(MODELS)


def perturbed_model(name, config, seed):
    """build_model(name, config) with every variable moved randomly off its start value."""
    keras.utils.set_random_seed(seed)
    model = build_model(name, config)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = w.numpy() + rng.normal(0.0, 0.1, w.shape).astype(np.float32)
        if "moving_variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value)
    return model


@pytest.fixture(scope="module")
def episodes(make_episode):
    """Inputs of both contracts: {"episodes": [single, batched], "sequences": [...]}."""
    rng = np.random.default_rng(11)
    single, _ = make_episode(3, [1, 2, 3], 2, rng)  # uneven shots, 6 queries
    batched, _ = make_episode(3, 2, 2, rng, batch=2)
    sequences = [{"images": rng.integers(0, 256, (*lead, 20, 20, 1), dtype=np.uint8),
                  "labels": rng.integers(0, 3, lead).astype(np.int32)}
                 for lead in ((7,), (2, 5))]
    return {"episodes": [single, batched], "sequences": sequences}


def regression_tasks():
    rng = np.random.default_rng(12)
    return [{k: rng.normal(size=(2, 4, 1)).astype(np.float32)
             for k in ("support_x", "support_y", "query_x")}]


def answers(model, inputs):
    if model.task_kind is REGRESSION:
        return [model(task).numpy() for task in regression_tasks()]
    episodes = inputs["sequences" if model.task_kind is SEQUENCES else "episodes"]
    out = [model(e).numpy() for e in episodes]
    if model.task_kind is PAIRS:  # the Siamese pair scorer is a second entry point
        images = episodes[0]["query_images"]
        out.append(model({"first_images": images, "second_images": images[::-1]}).numpy())
    return out


def assert_same_answers(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_array_equal(a, e)


def assert_same_weights(actual, expected):
    # In order and shape; not by path: Keras numbers auto-named inner layers per process
    # (the FCE's "forward_lstm" loads as "forward_lstm_1"), which the files do not depend on.
    assert [tuple(w.shape) for w in actual.weights] == [tuple(w.shape) for w in expected.weights]
    for a, e in zip(actual.weights, expected.weights):
        np.testing.assert_array_equal(a.numpy(), e.numpy(), err_msg=a.path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keras_file_round_trip(family, episodes, tmp_path):
    name, config = FAMILIES[family]
    model = perturbed_model(name, config, seed=1)
    expected = answers(model, episodes)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is MODELS[name]
    assert loaded.get_config() == model.get_config()
    assert_same_weights(loaded, model)
    assert_same_answers(answers(loaded, episodes), expected)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_weights_file_round_trip_into_a_fresh_model(family, episodes, tmp_path):
    name, config = FAMILIES[family]
    model = perturbed_model(name, config, seed=1)
    expected = answers(model, episodes)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    fresh = perturbed_model(name, config, seed=2)
    assert not np.allclose(answers(fresh, episodes)[0], expected[0])  # differs before loading
    fresh.load_weights(path)
    assert_same_weights(fresh, model)
    assert_same_answers(answers(fresh, episodes), expected)
