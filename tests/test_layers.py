"""keras_fewshot.layers against numpy re-computations, and serialization round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.layers import (Conv4Embedding, InkPreprocessing, PrototypicalHead,
                                  class_means, to_model_pixels)
from keras_fewshot.layers.preprocessing import area_resize, area_weights
from keras_fewshot.backbones.conv4 import BatchNormalization as FusedBatchNormalization
from keras_fewshot.models import PrototypicalNetwork

PIXEL_TOLERANCE = 0.5 / 255 + 1e-6


@pytest.fixture
def uneven_batch(rng):
    """Two episodes of 3 classes with uneven shots (and different ones per episode)."""
    shots = ([1, 3, 2], [4, 1, 1])
    labels = np.stack([rng.permutation(np.repeat(np.arange(3), s)) for s in shots])
    support = rng.normal(size=(2, 6, 5)).astype(np.float32)
    query = rng.normal(size=(2, 4, 5)).astype(np.float32)
    return support, labels.astype(np.int32), query


def test_class_means_with_uneven_shots(uneven_batch):
    support, labels, _ = uneven_batch
    means = class_means(tf.constant(support), tf.constant(labels), 3).numpy()
    assert means.shape == (2, 3, 5)
    for b in range(2):
        for k in range(3):
            np.testing.assert_allclose(means[b, k], support[b][labels[b] == k].mean(0),
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("distance, scale", [("squared_euclidean", None), ("cosine", 10.0),
                                             ("cosine", 3.5)])
def test_prototypical_head_matches_numpy(uneven_batch, numpy_protonet, distance, scale):
    support, labels, query = uneven_batch
    head = PrototypicalHead(distance, **({} if scale is None else {"cosine_scale": scale}))
    logits = head(tf.constant(support), tf.constant(labels), tf.constant(query),
                  num_classes=3).numpy()
    assert logits.shape == (2, 4, 3) and logits.dtype == np.float32
    for b in range(2):
        expected = numpy_protonet(support[b], labels[b], query[b], 3, distance,
                                  10.0 if scale is None else scale)
        np.testing.assert_allclose(logits[b], expected, rtol=1e-5, atol=1e-5)


def test_prototypical_head_rejects_unknown_distance():
    with pytest.raises(ValueError, match="Unknown distance 'manhattan'"):
        PrototypicalHead("manhattan")


def _raw_images(rng, count, size=105, equal_channels=True):
    gray = rng.integers(0, 256, (count, size, size, 1), dtype=np.uint8)
    if equal_channels:
        return np.repeat(gray, 3, axis=-1)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("equal_channels", [True, False])
def test_cached_pixels_give_the_same_model_input(rng, equal_channels):
    raw = _raw_images(rng, 4, equal_channels=equal_channels)
    cached = to_model_pixels(raw, 28)
    assert cached.dtype == tf.uint8 and cached.shape == (4, 28, 28, 1)
    layer = InkPreprocessing(28)
    from_raw, from_cached = layer(raw).numpy(), layer(cached).numpy()
    assert from_raw.shape == (4, 28, 28, 1) and from_raw.dtype == np.float32
    assert np.abs(from_raw - from_cached).max() <= PIXEL_TOLERANCE


def test_real_omniglot_pixels_give_the_same_model_input(omniglot_dir):
    from keras_fewshot.data import load_examples
    raw = np.stack([e["image"] for e in load_examples("evaluation", source=omniglot_dir)
                    .take(8).as_numpy_iterator()])
    layer = InkPreprocessing(28)
    assert np.abs(layer(raw).numpy() - layer(to_model_pixels(raw, 28)).numpy()).max() \
        <= PIXEL_TOLERANCE


def test_preprocessing_at_model_size_is_one_minus_x_over_255(rng):
    x = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    out = InkPreprocessing(28)(x).numpy()
    np.testing.assert_allclose(out, 1.0 - x.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
    assert InkPreprocessing(28)(np.full((1, 28, 28, 1), 255, np.uint8)).numpy().max() == 0.0
    assert InkPreprocessing(28)(np.zeros((1, 28, 28, 1), np.uint8)).numpy().min() == 1.0


def test_preprocessing_downsamples_by_area(rng):
    """56 -> 28 by area is the mean of each 2x2 block (an exact, independent reference)."""
    x = rng.integers(0, 256, (2, 56, 56, 1), dtype=np.uint8)
    blocks = x.astype(np.float64).reshape(2, 28, 2, 28, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(InkPreprocessing(28)(x).numpy(), 1 - blocks / 255, atol=1e-6)
    assert np.abs(to_model_pixels(x, 28).numpy() - blocks).max() <= 0.5


def test_one_and_three_equal_channels_agree(rng):
    gray = rng.integers(0, 256, (3, 105, 105, 1), dtype=np.uint8)
    layer = InkPreprocessing(28)
    np.testing.assert_array_equal(layer(gray).numpy(), layer(np.repeat(gray, 3, -1)).numpy())
    np.testing.assert_array_equal(to_model_pixels(gray, 28).numpy(),
                                  to_model_pixels(np.repeat(gray, 3, -1), 28).numpy())


FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24


def _exact_area_weights(in_size, out_size):
    """The area weights in exact rational arithmetic: the length of [k, k + 1) inside output
    pixel i's footprint [i r, (i + 1) r), r = in / out, divided by r."""
    from fractions import Fraction
    r = Fraction(in_size, out_size)
    return np.array([[float(max(Fraction(0), min(k + 1, (i + 1) * r) - max(k, i * r)) / r)
                      for k in range(in_size)] for i in range(out_size)])


def _weight_error_bound(out_size):
    """How far float32 area weights can be from the exact ones. The footprint bounds i r and
    i r + r are computed from r = in / out rounded to float32 (relative error u) by a
    product and a sum, each rounded: an absolute error below 3 u in (in = out r, u = 2^-24).
    A weight is a difference of two such bounds (or of one and an exact integer), divided by
    r: at most (2 * 3 u in + u r) / r + u = 6 u out + 2 u."""
    return FLOAT32_UNIT_ROUNDOFF * (6 * out_size + 2)


@pytest.mark.parametrize("in_size, out_size", [(105, 28), (28, 28), (56, 28), (13, 28),
                                               (1, 28), (200, 5), (37, 28)])
def test_area_weights_are_the_exact_footprint_fractions(in_size, out_size):
    weights = area_weights(in_size, out_size).numpy()
    assert weights.shape == (out_size, in_size) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, _exact_area_weights(in_size, out_size), rtol=0,
                               atol=_weight_error_bound(out_size))


def _area_resize_error_bound(height, width, size):
    """How far a float32 area resize of values in [0, 1] can be from the exact map: each
    output sums at most k_h * k_w weighted pixels (k = ceil(in / out) + 1 inputs per output
    row or column), so weight errors add up to k_h e_h + k_w e_w, and the rounding of the
    two sums and their products to gamma = (k_h + k_w + 2) u / (1 - (k_h + k_w + 2) u)."""
    k_h, k_w = (int(np.ceil(n / size)) + 1 for n in (height, width))
    n = k_h + k_w + 2
    gamma = n * FLOAT32_UNIT_ROUNDOFF / (1 - n * FLOAT32_UNIT_ROUNDOFF)
    return (k_h + k_w) * _weight_error_bound(size) + gamma


@pytest.mark.parametrize("height, width, size", [(105, 105, 28), (28, 28, 28), (56, 56, 28),
                                                 (13, 17, 28), (100, 37, 28), (1, 1, 28),
                                                 (200, 3, 5)])
def test_area_resize_is_tensorflows_area_resize(rng, height, width, size):
    """Against `tf.image.resize(method="area")` (ResizeArea), which computes its footprints
    in float32 the same way: on pixels in [0, 255], each is within 255 times the bound
    above of the exact map (checked in float64 from the exact weights), so the two differ
    by at most twice that."""
    x = rng.integers(0, 256, (3, height, width)).astype(np.float32)
    ours = area_resize(tf.constant(x), size, size).numpy()
    theirs = tf.image.resize(x[..., None], (size, size), method="area").numpy()[..., 0]
    bound = 2 * 255 * _area_resize_error_bound(height, width, size)
    assert ours.shape == theirs.shape == (3, size, size)
    assert np.abs(ours - theirs).max() <= bound
    exact = np.einsum("ih,mhw,jw->mij", _exact_area_weights(height, size), x.astype(np.float64),
                      _exact_area_weights(width, size))
    assert np.abs(ours - exact).max() <= bound / 2


def test_area_resize_converts_to_tflite_builtins_and_compiles_under_xla(rng):
    """105 -> 28 under XLA and in the TFLite interpreter (builtin ops only) against the
    graph. Each computes the weights and sums in its own order: each is within the area
    resize bound (on values / 255 in [0, 1]) plus 2 u for the division and the subtraction
    from 1 of the exact preprocessing, so they differ by at most twice that."""
    x = rng.integers(0, 256, (2, 105, 105, 3), dtype=np.uint8)
    expected = InkPreprocessing(28)(x).numpy()
    bound = 2 * (_area_resize_error_bound(105, 105, 28) + 2 * FLOAT32_UNIT_ROUNDOFF)
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8)
    fn = tf.function(lambda images: InkPreprocessing(28)(images), input_signature=[spec])
    xla = tf.function(lambda images: InkPreprocessing(28)(images), jit_compile=True)
    np.testing.assert_allclose(xla(x).numpy(), expected, rtol=0, atol=bound)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()],
                                                                fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no select ops
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, expected, rtol=0, atol=bound)


@pytest.mark.parametrize("size, features", [(28, 64), (84, 5 * 5 * 64)])
def test_conv4_output_shape(rng, size, features):
    layer = Conv4Embedding()
    x = rng.random((2, size, size, 1)).astype(np.float32)
    out = layer(x)
    assert out.shape == (2, features)
    assert layer.compute_output_shape((None, size, size, 1)) == (None, features)
    assert len(layer.trainable_weights) == 4 * 4  # conv kernel+bias, bn gamma+beta per block


def _round_trips(layer):
    """The layer rebuilt via get_config/from_config and via keras serialize/deserialize."""
    config = layer.get_config()
    from_config = type(layer).from_config(config)
    deserialized = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    for clone in (from_config, deserialized):
        assert type(clone) is type(layer)
        assert clone.get_config() == config
    return from_config, deserialized


@pytest.mark.parametrize("layer", [InkPreprocessing(32, name="pre"),
                                   PrototypicalHead("cosine", cosine_scale=4.0, name="h"),
                                   PrototypicalHead("squared_euclidean")],
                         ids=["preprocessing", "cosine_head", "euclidean_head"])
def test_weightless_layer_round_trip(layer, rng, uneven_batch):
    if isinstance(layer, InkPreprocessing):
        args, kwargs = (_raw_images(rng, 2, size=64),), {}
    else:
        args, kwargs = tuple(map(tf.constant, uneven_batch)), {"num_classes": 3}
    expected = layer(*args, **kwargs).numpy()
    for clone in _round_trips(layer):
        np.testing.assert_array_equal(clone(*args, **kwargs).numpy(), expected)


def _batch_norms(rng, shape):
    """conv4's fused batch norm and Keras's, with the same random weights."""
    layers = [FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)]
    weights = [rng.normal(size=shape[-1:]).astype(np.float32) for _ in range(3)]
    weights.append(rng.uniform(0.5, 2.0, shape[-1:]).astype(np.float32))
    for layer in layers:
        layer.build(shape)
        layer.set_weights(weights)  # gamma, beta, moving mean, moving variance
    return layers, weights


@pytest.mark.parametrize("shape", [(6, 5, 5, 4), (3, 1, 1, 2), (1, 1, 1, 3)])
def test_fused_batch_norm_is_algorithm_1(rng, shape):
    (fused, _), (gamma, beta, moving_mean, moving_var) = _batch_norms(rng, shape)
    x = rng.normal(2.0, 3.0, shape).astype(np.float32)
    np.testing.assert_allclose(  # inference: the moving statistics
        fused(x, training=False).numpy(),
        gamma * (x - moving_mean) / np.sqrt(moving_var + fused.epsilon) + beta,
        rtol=1e-5, atol=1e-5)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Ioffe & Szegedy
    np.testing.assert_allclose(fused(x, training=True).numpy(),
                               gamma * (x - mean) / np.sqrt(var + fused.epsilon) + beta,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.9 * moving_mean + 0.1 * mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 * moving_var + 0.1 * var,
                               rtol=1e-5, atol=1e-6)


def test_fused_batch_norm_has_the_keras_layers_first_and_second_derivatives(rng):
    """Second order as MAML takes it: the gradient of a loss of the gradient."""
    shape = (4, 3, 3, 5)
    layers, _ = _batch_norms(rng, shape)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    target = tf.constant(rng.normal(size=shape).astype(np.float32))
    results = []
    for layer in layers:
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x, training=True) - target))
            grads = inner.gradient(loss, [x, layer.gamma, layer.beta])
            grad_norm = sum(tf.reduce_sum(tf.square(g)) for g in grads)
        results.append([g.numpy() for g in grads]
                       + [g.numpy() for g in outer.gradient(grad_norm, [x, layer.gamma])])
    for fused_result, keras_result in zip(*results):
        np.testing.assert_allclose(fused_result, keras_result, rtol=1e-3, atol=1e-3)


def test_fused_batch_norm_under_mixed_bfloat16_outputs_bfloat16(rng):
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    x = tf.constant(rng.normal(size=(4, 3, 3, 2)), tf.bfloat16)
    for training in (True, False):
        out = layer(x, training=training)
        assert out.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32"


def test_conv4_inference_folds_batch_norm_into_the_convolution(rng):
    layer = Conv4Embedding(filters=8, blocks=3, pooled_blocks=2)
    layer.build((None, 16, 16, 1))
    layer.set_weights([np.abs(rng.normal(size=w.shape)) + 0.5 if "variance" in w.path
                       else rng.normal(size=w.shape) for w in layer.weights])
    x = rng.random((4, 16, 16, 1)).astype(np.float32)
    expected = x
    for block_layer in layer.block_layers:  # conv, then batch norm with moving statistics
        expected = block_layer(expected, training=False)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected.numpy(),
                               rtol=1e-4, atol=1e-4 * np.abs(expected.numpy()).max())
    assert not np.allclose(layer(x, training=True).numpy(), expected.numpy(), atol=1e-2)


def test_conv4_pooled_block_order_is_conv_bn_pool_relu():
    names = [layer.name for layer in Conv4Embedding(4, blocks=2, pooled_blocks=1).block_layers]
    assert names == ["conv0", "bn0", "pool0", "relu0", "conv1", "bn1", "relu1", "flatten"]


def test_conv4_round_trip(rng):
    layer = Conv4Embedding(filters=8, blocks=3, name="emb")
    x = rng.random((3, 16, 16, 1)).astype(np.float32)
    expected = layer(x).numpy()
    for clone in _round_trips(layer):
        assert clone.filters == 8 and clone.blocks == 3
        clone(x)  # builds the clone unless deserialization already did
        clone.set_weights(layer.get_weights())
        np.testing.assert_array_equal(clone(x).numpy(), expected)


def test_conv4_batch_norm_synchronises_over_replicas_unless_told_not_to():
    def synchronised(layer):
        return [bn.synchronized for bn in layer.block_layers
                if isinstance(bn, keras.layers.BatchNormalization)]

    assert synchronised(Conv4Embedding(4)) == [False] * 4  # one replica: nothing to sync
    assert synchronised(Conv4Embedding(4, synchronized=True)) == [True] * 4
    for setting in (None, False, True):
        layer = Conv4Embedding(4, synchronized=setting)
        assert [clone.synchronized for clone in _round_trips(layer)] == [setting] * 2
    from keras_fewshot.models import MAMLClassifier  # batch statistics per task, never synced
    assert MAMLClassifier(filters=4).meta.learner.get_layer("embedding").synchronized is False


def test_prototypical_network_round_trip(make_episode, rng, tmp_path):
    model = PrototypicalNetwork(image_size=28, filters=8, distance="cosine", name="pn")
    episode, _ = make_episode(3, 2, 4, rng)
    expected = model(episode).numpy()
    for clone in _round_trips(model):
        assert (clone.image_size, clone.filters, clone.distance) == (28, 8, "cosine")
        clone.set_weights(model.get_weights())
        np.testing.assert_array_equal(clone(episode).numpy(), expected)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is PrototypicalNetwork
    np.testing.assert_array_equal(loaded(episode).numpy(), expected)
