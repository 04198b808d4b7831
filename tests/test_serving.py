"""Cached-support serving (encode_support / classify_encoded), TFLite export and serving from
many threads, each against the one-shot request.

Tolerances come from the computation: two float32 evaluations of the same model that order
their sums differently (another batch of images in a convolution, another runtime's
kernels) differ by at most twice a forward round-off bound of each. For the conv4
embedding the bound is propagated layer by layer in float64; it reaches the logits through
their first-order sensitivity (the Jacobian, taken with autodiff), doubled to cover the
higher-order terms (the relative perturbations are below 1e-4, so those are smaller still).
"""

import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.export import export_saved_model, export_tflite, load_serving
from keras_fewshot.backbones.conv4 import BatchNormalization
from keras_fewshot.models import build_model
from keras_fewshot.training.config import using_dtype_policy

U = 2.0 ** -24  # float32 unit round-off
FOLD_ULPS = 6   # the folded kernel and bias: rsqrt (<= 2 ulp), a sum and up to 3 products

METRIC_MODELS = {
    "protonet": {"filters": 8},
    "matching": {"filters": 8, "fce": True, "fce_steps": 2},
    "siamese": {"filters": 8, "dense_units": 8},
    "relation": {"filters": 8},
}
# The head's longest chain of sums in sequence, per model (backward error: a float32 head is
# the exact head of inputs each off by gamma_K relative): the distance / attention over
# D = 8 features and S = 5 examples; Matching's LSTM steps; Relation's two conv blocks
# (9 * 16 + 1 and 9 * 8 + 1 terms) and its two dense layers.
HEAD_CHAIN = {"protonet": 8 + 5, "matching": 3 * (3 * 8 + 5) + 8 + 5, "siamese": 8 + 8 + 5,
              "relation": 145 + 73 + 72 + 8}


def gamma(n):
    return n * U / (1 - n * U)


def _conv64(x, kernel):
    return tf.nn.conv2d(tf.constant(x, tf.float64), tf.constant(kernel, tf.float64), 1,
                        "SAME").numpy()


def conv4_error_bound(embedding, pixels):
    """Bound [M, ...] on |float32 conv4 inference features - exact| for the given float32
    pixels. A folded conv sums n = 9 C + 1 terms: its error is |W| (*) (error in) +
    (gamma_n + FOLD_ULPS u) (|W| (*) |x| + |b|); max pooling passes on the largest error of
    its window, ReLU no more than it gets."""
    x = tf.constant(pixels, tf.float32)
    error = np.zeros(pixels.shape)
    layers = iter(embedding.block_layers)
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            norm = next(layers)
            assert isinstance(norm, BatchNormalization)
            scale = norm.gamma.numpy() / np.sqrt(norm.moving_variance.numpy().astype(np.float64)
                                                 + norm.epsilon)
            kernel = np.abs(layer.kernel.numpy() * scale)
            bias = np.abs((layer.bias.numpy() - norm.moving_mean.numpy()) * scale
                          + norm.beta.numpy())
            terms = int(np.prod(kernel.shape[:3])) + 1
            magnitude = _conv64(np.abs(x.numpy()), kernel) + bias
            error = _conv64(error, kernel) + (gamma(terms) + FOLD_ULPS * U) * magnitude
            x = norm.folded_conv(layer, x)
        elif isinstance(layer, keras.layers.MaxPooling2D):
            x = layer(x)
            error = tf.nn.max_pool2d(error, 2, 2, "VALID").numpy()
        elif isinstance(layer, keras.layers.Flatten):
            x, error = layer(x), error.reshape(error.shape[0], -1)
        else:
            x = layer(x)
    return error


def feature_error_bound(model, images):
    """Bound on the float32 features of uint8 images [M, H, W, C] (one implementation
    against the exact computation from the same float32 pixels), and the features."""
    pixels = model.preprocess(images)
    features = model.features(pixels).numpy()
    error = conv4_error_bound(model.embedding, pixels.numpy())
    if getattr(model, "dense", None) is not None:  # sigmoid(W e + b): slope <= 1/4
        terms = error.shape[-1] + 1
        embedded = model.embedding(pixels).numpy()
        kernel = np.abs(model.dense.kernel.numpy().astype(np.float64))
        error = 0.25 * (error @ kernel + gamma(terms) * (np.abs(embedded) @ kernel
                                                         + np.abs(model.dense.bias.numpy())))
        error += 2 * U * np.abs(features)  # the sigmoid's own rounding
    return features, error


def logits_bound(model, name, episode, head_round_off):
    """Bound on the difference of two float32 evaluations' logits [Q, N] of `episode`: each
    is within the feature bound of exact features (plus, with `head_round_off`, the head's
    backward error gamma_K |f|), pushed through |d logits / d features|, doubled for both
    evaluations and again for higher-order terms."""
    support, e_s = feature_error_bound(model, episode["support_images"])
    query, e_q = feature_error_bound(model, episode["query_images"])
    if head_round_off:
        e_s = e_s + gamma(HEAD_CHAIN[name]) * np.abs(support)
        e_q = e_q + gamma(HEAD_CHAIN[name]) * np.abs(query)
    labels = tf.constant(episode["support_labels"][None])
    ways = int(episode["support_labels"].max()) + 1
    f_s, f_q = tf.constant(support[None]), tf.constant(query[None])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([f_s, f_q])
        logits = model.code_logits(model.support_code(f_s, labels, ways), f_q)[0]
    # a loop of gradients (pfor crashed on the LSTM of Matching's FCE)
    j_s, j_q = (np.abs(tape.jacobian(logits, f, experimental_use_pfor=False).numpy()[:, :, 0])
                for f in (f_s, f_q))
    spread = [(j * e).reshape(*j.shape[:2], -1).sum(-1) for j, e in ((j_s, e_s), (j_q, e_q))]
    return 2 * 2 * (spread[0] + spread[1])


def probability_bound(logit_bound):
    """|p_i(z + d) - p_i(z)| <= exp(2 max|d|) - 1: each p_i changes by a factor within
    exp(+-2 max|d|) (numerator and normaliser each by exp(+-max|d|))."""
    return np.expm1(2 * logit_bound.max())


@pytest.fixture(scope="module", params=sorted(METRIC_MODELS))
def metric_model(request):
    keras.utils.set_random_seed(0)
    return request.param, build_model(request.param, METRIC_MODELS[request.param])


@pytest.fixture(scope="module")
def episode():
    """5-way 1-shot with one query (the one-query request), raw 105x105 RGB pixels."""
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (6, 105, 105, 1), dtype=np.uint8)
    images = np.repeat(gray, 3, -1)
    return {"support_images": images[:5], "support_labels": np.array([3, 0, 4, 1, 2], np.int32),
            "query_images": images[5:]}


@pytest.fixture(scope="module")
def exported(metric_model, tmp_path_factory):
    name, model = metric_model
    return export_saved_model(model, tmp_path_factory.mktemp("serving") / name)


def _numpy(outputs):
    return {k: v.numpy() for k, v in outputs.items()}


def test_cached_support_gives_the_one_shot_probabilities(metric_model, episode, exported):
    name, model = metric_model
    bound = probability_bound(logits_bound(model, name, episode, head_round_off=False))
    one_shot = tf.nn.softmax(model(episode)).numpy()
    code = model.encode_support({k: episode[k] for k in ("support_images", "support_labels")})
    assert sorted(code) == sorted(model.code_ranks)
    cached = tf.nn.softmax(model.classify_encoded(code, episode["query_images"])).numpy()
    assert cached.shape == one_shot.shape == (1, 5)
    assert np.abs(cached - one_shot).max() <= bound, bound
    # The same through the SavedModel's signatures: the code goes from one to the other.
    served = tf.saved_model.load(str(exported)).signatures
    request = _numpy(served["serving_default"](**episode))
    code = served["encode_support"](support_images=episode["support_images"],
                                    support_labels=episode["support_labels"])
    assert sorted(code) == sorted(model.code_ranks)
    answer = _numpy(served["classify_encoded"](query_images=episode["query_images"], **code))
    assert np.abs(answer["probabilities"] - request["probabilities"]).max() <= bound
    assert np.abs(request["probabilities"] - one_shot).max() <= bound
    key = sorted(code)[0]  # a code tensor whose last size is the model's, cut short
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{key} must have shape"):
        served["classify_encoded"](query_images=episode["query_images"],
                                   **{**code, key: code[key][..., :-1]})


def test_bf16_compute_serves_float32_codes(episode, tmp_path):
    """Under mixed_bfloat16 the backbone computes in bf16 (folded batch norm included) and
    the code, distances and logits in float32, so the cached-support signatures keep their
    float32 code and the SavedModel answers both requests. (How far bf16 moves the answers
    is measured, not bounded here: a worst-case bf16 bound through four conv layers is
    vacuous. See docs/deploy.md for the zoo ProtoNet's accuracy in bf16.)"""
    with using_dtype_policy("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        model = build_model("protonet", METRIC_MODELS["protonet"])
        path = export_saved_model(model, tmp_path / "bf16")
    assert model.embedding.compute_dtype == "bfloat16"
    assert model.features(model.preprocess(episode["query_images"])).dtype == tf.bfloat16
    support = {k: episode[k] for k in ("support_images", "support_labels")}
    assert model.encode_support(support)["prototypes"].dtype == tf.float32
    served = tf.saved_model.load(str(path)).signatures
    code = served["encode_support"](**support)
    assert code["prototypes"].dtype == tf.float32 and code["prototypes"].shape == (5, 8)
    for answer in (served["serving_default"](**episode),
                   served["classify_encoded"](query_images=episode["query_images"], **code)):
        assert answer["probabilities"].dtype == tf.float32
        np.testing.assert_allclose(answer["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="TFLite export needs a float32 model"):
        export_tflite(model, tmp_path / "bf16.tflite")
    assert not (tmp_path / "bf16.tflite").exists()


def _graph_ops(signature):
    """Every op type of a loaded signature's graph and of the functions it calls."""
    graph = signature.graph.as_graph_def()
    return {n.op for n in graph.node} | {n.op for f in graph.library.function
                                         for n in f.node_def}


def test_signatures_hold_the_weights_as_constants(metric_model, episode, exported, tmp_path):
    """The metric models' signatures read no variable (the weights are constants of their
    graphs) and answer as the same model exported reading its variables, to round-off."""
    name, model = metric_model
    served = tf.saved_model.load(str(exported)).signatures
    for signature in ("serving_default", "encode_support", "classify_encoded"):
        ops = _graph_ops(served[signature])
        assert "Conv2D" in ops and "ReadVariableOp" not in ops, signature
    reading = tf.saved_model.load(str(export_saved_model(
        model, tmp_path / "variables", constant_weights=False))).signatures
    assert "ReadVariableOp" in _graph_ops(reading["serving_default"])
    bound = probability_bound(logits_bound(model, name, episode, head_round_off=False))
    for signature in ("serving_default", "classify_encoded"):
        inputs = episode if signature == "serving_default" else {
            "query_images": episode["query_images"],
            **served["encode_support"](support_images=episode["support_images"],
                                       support_labels=episode["support_labels"])}
        constant, variable = (_numpy(s[signature](**inputs))["probabilities"]
                              for s in (served, reading))
        assert np.abs(constant - variable).max() <= bound, signature


def _same_classes_where_decided(answer, expected, bound):
    """The two answers' classes agree on every query whose top two probabilities in
    `expected` are more than 2 * `bound` apart (closer ones may swap within round-off)."""
    top2 = np.sort(expected["probabilities"], axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * bound
    np.testing.assert_array_equal(answer["classes"][decided], expected["classes"][decided])


@pytest.fixture(scope="module")
def branched(metric_model, tmp_path_factory):
    """The metric model exported with its images embedded in two branches."""
    name, model = metric_model
    return export_saved_model(model, tmp_path_factory.mktemp("branched") / name,
                              feature_branches=2)


def test_feature_branches_serve_the_one_batch_answers(metric_model, episode, exported,
                                                      branched):
    """The SavedModel exported with feature_branches=2 answers as the one with 1: on the
    5-way 1-shot one-query request, on the smallest request the contract allows (2 classes,
    one support image each, one query: branches of 1 and 2 images), and through the cached
    pair (encode_support of 2 images, classify_encoded of 1 query image: fewer images than
    branches, one pass).

    Tolerance: per image, both graphs run the same operations on the same values (in
    inference every backbone layer computes each image on its own; batch norm uses its
    moving statistics, folded into the convolutions), and the head after the features is
    the same ops on tensors of the same shapes. What can differ is the convolutions' order
    of summation, since oneDNN may pick another kernel or blocking for a batch of 3 than for
    one of 6. That is two float32 evaluations of the features that differ by at most the
    sum of their forward round-off bounds, propagated to the logits: `logits_bound` without
    the head's round-off, as for constant against variable weights above (it is derived
    from the weights and pixels, not from a measured difference)."""
    name, model = metric_model
    one, two = (tf.saved_model.load(str(path)).signatures for path in (exported, branched))
    smallest = {"support_images": episode["support_images"][:2],
                "support_labels": np.array([1, 0], np.int32),
                "query_images": episode["query_images"]}
    for request in (episode, smallest):
        bound = probability_bound(logits_bound(model, name, request, head_round_off=False))
        expected, answer = (_numpy(s["serving_default"](**request)) for s in (one, two))
        assert answer["probabilities"].shape == expected["probabilities"].shape
        assert np.abs(answer["probabilities"] - expected["probabilities"]).max() <= bound
        _same_classes_where_decided(answer, expected, bound)
        support = {k: request[k] for k in ("support_images", "support_labels")}
        codes = [s["encode_support"](**support) for s in (one, two)]
        assert all(sorted(code) == sorted(model.code_ranks) for code in codes)
        cached = [_numpy(s["classify_encoded"](query_images=request["query_images"], **code))
                  for s, code in zip((one, two), codes)]
        assert np.abs(cached[1]["probabilities"] - cached[0]["probabilities"]).max() <= bound
        _same_classes_where_decided(cached[1], cached[0], bound)
    # The same in Keras, with more branches than images (empty chunks), then back to one.
    bound = logits_bound(model, name, smallest, head_round_off=False)
    support = {k: smallest[k] for k in ("support_images", "support_labels")}
    code = model.encode_support(support)
    with model.branched_features(4):
        logits = model(smallest).numpy()
        branched_code = model.encode_support(support)
        cached = model.classify_encoded(branched_code, smallest["query_images"]).numpy()
    assert model.feature_branches == 1
    assert (np.abs(logits - model(smallest).numpy()) <= bound).all()
    assert (np.abs(cached - model.classify_encoded(code, smallest["query_images"]).numpy())
            <= bound).all()


def test_feature_branches_refuse_training(metric_model, episode):
    """Batch norm in training normalises with the whole batch's statistics: branches are
    refused there (before any weight or statistic moves), and a count below 1 anywhere."""
    name, model = metric_model
    with model.branched_features(2):
        with pytest.raises(ValueError, match="feature_branches=2 is for inference only"):
            model(episode, training=True)
    assert model.feature_branches == 1
    for count in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="feature_branches must be a whole number >= 1"):
            with model.branched_features(count):
                pass


def test_cached_support_batched_and_several_queries(metric_model, rng, make_episode):
    name, model = metric_model
    batch, _ = make_episode(3, [1, 2, 1], 2, rng, batch=2)
    code = model.encode_support({k: batch[k] for k in ("support_images", "support_labels")})
    assert all(v.shape[0] == 2 for v in code.values())
    cached = model.classify_encoded(code, batch["query_images"]).numpy()
    one_shot = model(batch).numpy()
    assert cached.shape == one_shot.shape == (2, 6, 3)
    for b in range(2):
        single = {k: v[b] for k, v in batch.items()}
        bound = logits_bound(model, name, single, head_round_off=False)
        assert (np.abs(cached[b] - one_shot[b]) <= bound).all()


def test_classify_encoded_names_a_bad_code(metric_model, episode):
    name, model = metric_model
    code = model.encode_support({k: episode[k] for k in ("support_images", "support_labels")})
    with pytest.raises(ValueError, match="support code is a dict with keys"):
        model.classify_encoded({"nothing": 1.0}, episode["query_images"])
    key = sorted(code)[0]
    with pytest.raises(ValueError, match=f"{key} must have rank"):
        model.classify_encoded({**code, key: code[key][None]}, episode["query_images"])
    with pytest.raises(ValueError, match="query_images must have rank 4"):
        model.classify_encoded(code, episode["query_images"][0])
    with pytest.raises(ValueError, match="must be uint8"):
        model.classify_encoded(code, episode["query_images"].astype(np.float32))


def _run_tflite(runner, inputs):
    return runner(**{k: np.asarray(v) for k, v in inputs.items()})


def test_tflite_matches_the_saved_model(metric_model, episode, exported, tmp_path):
    name, model = metric_model
    path = export_tflite(model, tmp_path / f"{name}.tflite")
    interpreter = tf.lite.Interpreter(model_path=str(path))
    assert sorted(interpreter.get_signature_list()) == ["classify_encoded", "encode_support",
                                                       "serving_default"]
    served = load_serving(exported)
    expected = _numpy(served(**episode))
    bound = probability_bound(logits_bound(model, name, episode, head_round_off=True))
    answer = _run_tflite(interpreter.get_signature_runner("serving_default"), episode)
    assert answer["probabilities"].shape == (1, 5)
    assert np.abs(answer["probabilities"] - expected["probabilities"]).max() <= bound, bound
    code = _run_tflite(interpreter.get_signature_runner("encode_support"),
                       {k: episode[k] for k in ("support_images", "support_labels")})
    cached = _run_tflite(interpreter.get_signature_runner("classify_encoded"),
                         {**code, "query_images": episode["query_images"]})
    assert np.abs(cached["probabilities"] - expected["probabilities"]).max() <= 2 * bound
    # another size and number of images through the same file (dynamic shapes)
    small = {"support_images": episode["support_images"][:3, :28, :28, :1],
             "support_labels": np.array([0, 2, 1], np.int32),
             "query_images": episode["query_images"][:, :28, :28, :1]}
    answer = _run_tflite(interpreter.get_signature_runner("serving_default"), small)
    np.testing.assert_allclose(answer["probabilities"], _numpy(served(**small))["probabilities"],
                               rtol=0, atol=probability_bound(
                                   logits_bound(model, name, small, head_round_off=True)))


def test_export_tool_writes_tflite_with_the_cached_support_signatures(run_python, tmp_path):
    output = tmp_path / "protonet.tflite"
    proc = run_python("tools/export.py", "--model=protonet_omniglot", "--format=tflite",
                      f"--output={output}")
    assert "TFLite model written to" in proc.stdout and "classify_encoded" in proc.stdout
    interpreter = tf.lite.Interpreter(model_path=str(output))
    signatures = interpreter.get_signature_list()
    assert signatures["serving_default"]["inputs"] == ["query_images", "support_images",
                                                       "support_labels"]
    assert signatures["encode_support"]["outputs"] == ["prototypes"]
    assert sorted(signatures["classify_encoded"]["inputs"]) == ["prototypes", "query_images"]
    again = run_python("tools/export.py", "--model=protonet_omniglot", "--format=tflite",
                       f"--output={output}", check=False)
    assert again.returncode != 0 and "FileExistsError" in again.stderr
