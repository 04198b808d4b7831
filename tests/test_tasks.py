"""keras_fewshot.tasks: each model's task kind trains, describes, measures and serves it."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_fewshot import evaluation, export, training
from keras_fewshot.data import LabelledImages
from keras_fewshot.models import MODELS, build_model
from keras_fewshot.tasks import EPISODES, PAIRS, REGRESSION, SEQUENCES, TASK_KINDS

# One small model of each kind, and a run of it: (model name, model config, run settings).
RUNS = {
    EPISODES: ("protonet", {"filters": 4}, {"ways": 3, "shots": 2, "queries": 2,
                                            "episodes_per_step": 2}),
    PAIRS: ("siamese", {"filters": 4}, {"pairs": 6, "ways": 3, "shots": 2, "queries": 2}),
    SEQUENCES: ("sequence_lstm", {"classes": 3, "units": 8}, {"ways": 3, "instances": 2,
                                                             "episodes_per_step": 2}),
    REGRESSION: ("maml_regressor", {"hidden_units": [8]}, {"dataset": "sinusoid", "shots": 4,
                                                           "queries": 3,
                                                           "episodes_per_step": 2}),
}


def run_config(kind, **changes):
    name, model_config, settings = RUNS[kind]
    return training.TrainConfig(model=name, model_config=model_config, episodes=8,
                                episodes_per_epoch=4, lr_decay_every=4,
                                **{**settings, **changes})


def labelled_images(image_size, classes=6, per_class=10):
    """Random uint8 images of `classes` classes, as `training.load_data` gives them."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (classes * per_class, image_size, image_size, 1), np.uint8)
    return LabelledImages(images, np.repeat(np.arange(classes, dtype=np.int32), per_class),
                          tuple(f"class{c}" for c in range(classes)),
                          np.zeros(classes, np.int32))


def test_every_registered_model_trains_on_its_kind():
    kinds = {name: model.task_kind for name, model in MODELS.items()}
    assert set(kinds.values()) == set(TASK_KINDS)
    assert kinds["siamese"] is PAIRS and kinds["maml_regressor"] is REGRESSION
    assert kinds["mann"] is kinds["sequence_lstm"] is SEQUENCES
    assert {name for name, kind in kinds.items() if kind is EPISODES} == {
        "protonet", "matching", "relation", "maml", "metalstm", "metanet"}


@pytest.mark.parametrize("kind", TASK_KINDS, ids=lambda kind: kind.name)
def test_the_training_stream_is_what_fit_takes(kind):
    config = run_config(kind)
    config.validate()
    keras.utils.set_random_seed(0)
    model = build_model(config.model, config.model_config)
    data = None if kind.dataset else labelled_images(config.image_size)  # sinusoid: none
    stream = training.training_dataset(config, model, data)
    assert stream.cardinality() == config.episodes // (1 if kind is PAIRS
                                                       else config.episodes_per_step)
    inputs, targets = next(iter(stream))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.training_loss())
    loss = model.train_on_batch(inputs, targets)
    assert np.isfinite(loss)
    # a resumed run's stream continues with the element it stopped at
    resumed, = training.training_dataset(config, model, data, start=4).take(1)
    expected, = stream.skip(4 // (1 if kind is PAIRS else config.episodes_per_step)).take(1)
    for got, want in zip(keras.tree.flatten(resumed), keras.tree.flatten(expected)):
        np.testing.assert_array_equal(got, want)


def test_distort_warps_the_training_episodes_and_keeps_them_resumable():
    """--distort on an episode stream: the same episodes, each image under its own Koch et
    al. map, and a resumed run continues the distorted stream."""
    data, model = labelled_images(28), build_model("protonet", {"filters": 4})
    plain, warped = (list(EPISODES.training_stream(run_config(EPISODES, distort=distort),
                                                   model, data).as_numpy_iterator())
                     for distort in (False, True))
    for (p, p_labels), (w, w_labels) in zip(plain, warped):
        np.testing.assert_array_equal(w["support_labels"], p["support_labels"])
        np.testing.assert_array_equal(w_labels, p_labels)
        assert w["support_images"].shape == p["support_images"].shape
        assert not np.array_equal(w["support_images"], p["support_images"])
    resumed = EPISODES.training_stream(run_config(EPISODES, distort=True), model, data, start=4)
    for got, want in zip(keras.tree.flatten(next(resumed.as_numpy_iterator())),
                         keras.tree.flatten(warped[2])):  # 2 episodes per step
        np.testing.assert_array_equal(got, want)


def test_a_kind_refuses_settings_and_data_that_cannot_make_its_stream():
    data = labelled_images(28)
    protonet = build_model("protonet", {"filters": 4})
    with pytest.raises(ValueError, match="protonet trains on episodes; dataset 'sinusoid' "
                                         "does not provide them"):
        training.training_dataset(run_config(EPISODES, dataset="sinusoid"), protonet, None)
    with pytest.raises(ValueError, match="maml_regressor trains on regression_tasks; dataset "
                                         "'omniglot' does not provide them"):
        training.training_dataset(run_config(REGRESSION, dataset="omniglot"),
                                  build_model("maml_regressor"), data)
    with pytest.raises(ValueError, match="set episodes_per_step=1"):
        training.training_dataset(run_config(PAIRS, episodes_per_step=2),
                                  build_model("siamese", {"filters": 4}), data)
    with pytest.raises(ValueError, match="set ways to the model's classes"):
        training.training_dataset(run_config(SEQUENCES, ways=4),
                                  build_model("sequence_lstm", {"classes": 3, "units": 8}), data)
    with pytest.raises(ValueError, match="pairs must be an even number"):
        run_config(PAIRS, pairs=7).validate()
    with pytest.raises(ValueError, match="a sequence of one class teaches nothing"):
        run_config(SEQUENCES, ways=1).validate()
    with pytest.raises(ValueError, match="a 1-way episode is solved by any model"):
        run_config(EPISODES, ways=1).validate()
    run_config(REGRESSION, ways=1).validate()  # regression tasks have no classes
    with pytest.raises(ValueError, match="3 classes; 5-way episodes need at least 5"):
        EPISODES.check_training_data(run_config(EPISODES, ways=5), labelled_images(28, 3))


def test_each_kind_describes_a_step_and_its_global_batch():
    assert EPISODES.step_input(run_config(EPISODES)) == "2 episodes of 3w2s2q"
    assert EPISODES.step_input(run_config(EPISODES, episodes_per_step=1)) == "3w2s2q"
    assert PAIRS.step_input(run_config(PAIRS)) == "6 pairs"
    assert SEQUENCES.step_input(run_config(SEQUENCES)) == "2 sequences of 3x2"
    assert REGRESSION.task_shape(run_config(REGRESSION)) == "4 support + 3 query points"
    assert [kind.run_description(run_config(kind)) for kind in TASK_KINDS] == [
        "3-way 2-shot 2-query", "6 pairs per step", "sequences of 3 classes x 2 instances",
        "4-shot regression tasks"]
    assert PAIRS.global_batch(run_config(PAIRS)) == ("pairs", 6)
    assert EPISODES.global_batch(run_config(EPISODES)) == ("episodes_per_step", 2)


def test_a_model_serves_its_kinds_signatures():
    def signatures(name, config):
        functions = export.serving_functions(build_model(name, config))
        return {signature: sorted(specs) for signature, (_, specs) in functions.items()}

    episode = sorted(EPISODES.serving_inputs)
    assert signatures("protonet", {"filters": 4}) == {
        "serving_default": episode, "encode_support": ["support_images", "support_labels"],
        "classify_encoded": ["prototypes", "query_images"]}
    assert signatures("maml", {"filters": 4}) == {"serving_default": episode}
    assert signatures("sequence_lstm", {"units": 8}) == {"serving_default": ["images", "labels"]}
    with pytest.raises(ValueError, match="regression_tasks, which have no serving signature"):
        export.serving_functions(build_model("maml_regressor"))


def test_a_kind_measures_by_its_own_protocols():
    assert evaluation.PROTOCOLS["sinusoid"] is REGRESSION.protocols["sinusoid"]
    model = build_model("maml_regressor", {"hidden_units": [8]})
    rows = evaluation.evaluate(model, "sinusoid", episodes=2, settings=[(3,)])
    assert [(r["protocol"], r["shots"], r["queries"], r["tasks"], r["inner_steps"])
            for r in rows] == [("sinusoid", 3, 100, 2, steps) for steps in (1, 5, 10)]
    with pytest.raises(ValueError, match="measured by the \\['sinusoid'\\] protocols, not "
                                         "'vinyals'"):
        evaluation.evaluate(model, "vinyals", episodes=2)
    sequence_model = build_model("sequence_lstm", {"classes": 3, "units": 8})
    data = labelled_images(20)
    rows = evaluation.evaluate_data(sequence_model, data, "synthetic", episodes=2, verbose=0)
    assert [r["instance"] for r in rows] == list(range(1, 11))
    with pytest.raises(ValueError, match="settings do not apply to a sequence model"):
        evaluation.evaluate_data(sequence_model, data, "synthetic", [(3, 1)], verbose=0)


def test_episode_kinds_picture_training_and_others_do_not(tmp_path):
    data = labelled_images(28)
    for kind in (EPISODES, PAIRS):
        name, model_config, _ = RUNS[kind]
        pictures = kind.training_pictures(run_config(kind), build_model(name, model_config),
                                          data, tmp_path)
        assert [type(p).__name__ for p in pictures] == ["EpisodeImages"]
    assert SEQUENCES.training_pictures(run_config(SEQUENCES), None, data, tmp_path) == []
    too_few = dataclasses.replace(run_config(EPISODES), shots=9)  # 9 + 2 > 10 examples
    assert EPISODES.training_pictures(too_few, build_model("protonet", {"filters": 4}), data,
                                      tmp_path) == []
