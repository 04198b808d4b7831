"""Preprocessors: raw uint8 pixels -> model input, checked against numpy recomputations."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.layers import (PREPROCESSORS, ImagePreprocessing, InkPreprocessing,
                                  RGBPreprocessing, get_preprocessor)

MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet's, as torchvision's models document them
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_rgb_at_its_own_size_is_per_channel_normalisation(rng):
    images = rng.integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    out = RGBPreprocessing(12)(images).numpy()
    assert out.shape == (3, 12, 12, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, (images / 255.0 - MEAN) / STD, atol=1e-5)


def test_rgb_resize_is_the_area_mean_of_each_channel(rng):
    images = rng.integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    out = RGBPreprocessing(2, mean=(0, 0, 0), std=(1, 1, 1))(images).numpy()
    # 8 x 6 -> 2 x 2: output pixel (i, j) is the mean of a 4 x 3 block, channel by channel
    blocks = images.reshape(2, 2, 4, 2, 3, 3).mean(axis=(2, 4)) / 255.0
    np.testing.assert_allclose(out, blocks, atol=1e-6)
    assert np.abs(out[..., 0] - out[..., 1]).max() > 0.01  # colour kept, not grayed


def test_rgb_repeats_one_channel_into_three(rng):
    gray = rng.integers(0, 256, (2, 10, 10, 1), dtype=np.uint8)
    out = RGBPreprocessing(10)(gray).numpy()
    assert out.shape == (2, 10, 10, 3)
    np.testing.assert_allclose(out, (gray / 255.0 - MEAN) / STD, atol=1e-5)
    np.testing.assert_allclose(out, RGBPreprocessing(10)(np.repeat(gray, 3, -1)).numpy(),
                               atol=1e-6)


def test_rgb_traces_for_any_size_and_keeps_its_static_output_shape(rng):
    layer = RGBPreprocessing(16)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)])
    concrete = fn.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, 16, 16, 3]
    for shape in ((1, 40, 30, 3), (2, 16, 16, 1)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_allclose(fn(images).numpy(), layer(images).numpy(), atol=1e-6)


@pytest.mark.parametrize("layer,channels", [(RGBPreprocessing(14), 3), (InkPreprocessing(14), 1)])
def test_cached_pixels_give_the_same_model_input(rng, layer, channels):
    images = rng.integers(0, 256, (2, 45, 31, 3), dtype=np.uint8)
    cached = layer.cache_pixels(images)
    assert cached.dtype == tf.uint8 and cached.shape == (2, 14, 14, channels)
    bound = 0.5 / 255 / (STD.min() if channels == 3 else 1) + 1e-5  # half a grey level
    assert np.abs(layer(cached).numpy() - layer(images).numpy()).max() <= bound


def test_rgb_refuses_bad_statistics():
    with pytest.raises(ValueError, match="3 channel means"):
        RGBPreprocessing(8, mean=(0.5,))
    with pytest.raises(ValueError, match="positive"):
        RGBPreprocessing(8, std=(0.2, 0.0, 0.2))


@pytest.mark.parametrize("layer", [RGBPreprocessing(20, mean=(0.5, 0.4, 0.3),
                                                    std=(0.2, 0.3, 0.4), name="rgb"),
                                   InkPreprocessing(24, name="ink")])
def test_round_trip(rng, layer):
    images = rng.integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(images).numpy(), layer(images).numpy())
    assert get_preprocessor(keras.saving.serialize_keras_object(layer), 99).get_config() \
        == layer.get_config()  # a config keeps its own size


def test_get_preprocessor_by_name_and_as_is():
    assert set(PREPROCESSORS) == {"ink", "rgb"}
    ink, rgb = get_preprocessor("ink", 28), get_preprocessor("rgb", 84, name="pre")
    assert type(ink) is InkPreprocessing and (ink.image_size, ink.channels) == (28, 1)
    assert type(rgb) is RGBPreprocessing and (rgb.image_size, rgb.channels, rgb.name) \
        == (84, 3, "pre")
    assert ImagePreprocessing is InkPreprocessing  # the old name still imports
    config = keras.saving.serialize_keras_object(InkPreprocessing(20))
    config["class_name"], config["registered_name"] = "ImagePreprocessing", \
        "keras_fewshot>ImagePreprocessing"  # as a .keras file written before the rename
    layer = keras.saving.deserialize_keras_object(config)
    assert isinstance(layer, InkPreprocessing) and layer.image_size == 20
    layer = RGBPreprocessing(32)
    assert get_preprocessor(layer, 28) is layer


def test_get_preprocessor_refuses_unknown_specs():
    with pytest.raises(ValueError, match=r"Unknown preprocessor 'grey'.*'ink', 'rgb'"):
        get_preprocessor("grey", 28)
    with pytest.raises(TypeError, match="preprocessor must be"):
        get_preprocessor(3, 28)
