"""Backbones (conv4, ResNet-12, any Keras image model) and their injection into the models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fewshot.backbones import (BACKBONES, Conv4Embedding, DropBlock, ImageModelBackbone,
                                     ResNet12, get_backbone)
from keras_fewshot.backbones.conv4 import BatchNormalization
from keras_fewshot.backbones.resnet12 import ResidualBlock
from keras_fewshot.layers import RGBPreprocessing
from keras_fewshot.models import (MAMLClassifier, MatchingNetwork, MetaLSTMClassifier,
                                  MetaNetwork, PrototypicalNetwork, RelationNetwork,
                                  SiameseNetwork)

# a serialised ResNet-12 a few filters wide, as a model's get_config writes it
SMALL = keras.saving.serialize_keras_object(ResNet12(filters=(4, 6, 6, 8), name="embedding"))
SMALL_MAPS = keras.saving.serialize_keras_object(ResNet12(filters=(4, 6, 6, 8), pooled=False,
                                                          name="embedding"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def rgb_episode(rng, ways=3, shots=2, queries=4, size=32):
    return {"support_images": rng.integers(0, 256, (ways * shots, size, size, 3), np.uint8),
            "support_labels": np.repeat(np.arange(ways), shots).astype(np.int32),
            "query_images": rng.integers(0, 256, (queries, size, size, 3), np.uint8)}


def resnet12_parameters(filters, channels):
    """Lee et al. (2019)'s ResNet-12 counted by hand: per block three 3x3 convs and a 1x1
    shortcut conv, none with a bias, and four batch norms of 4 values per channel (gamma,
    beta, moving mean and variance, 2 of them trained)."""
    convs = norms = 0
    for width in filters:
        convs += 9 * channels * width + 2 * 9 * width * width + channels * width
        norms += 4 * 4 * width
        channels = width
    return convs + norms, convs + norms // 2


def test_resnet12_at_84_pixels_gives_640_features_and_its_parameter_count(rng):
    layer = ResNet12()
    features = layer(rng.normal(size=(1, 84, 84, 3)).astype(np.float32))
    assert features.shape == (1, 640)
    total, trainable = resnet12_parameters((64, 160, 320, 640), 3)
    assert layer.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == trainable
    assert round(trainable / 1e6, 1) == 12.4  # the literature's "12.4M parameters"
    maps = ResNet12(pooled=False).compute_output_shape((None, 84, 84, 3))
    assert tuple(maps) == (None, 5, 5, 640)  # 84 -> 42 -> 21 -> 10 -> 5 (floor pooling)
    assert tuple(layer.compute_output_shape((None, 32, 32, 3))) == (None, 640)


def test_resnet12_block_is_the_papers_computation(rng):
    block = ResidualBlock(5, name="block")
    x = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    block(x)
    for norm in (block.bn1, block.bn2, block.bn3, block.shortcut_bn):  # non-trivial statistics
        norm.set_weights([rng.uniform(0.5, 1.5, 5), rng.normal(size=5), rng.normal(size=5),
                          rng.uniform(0.5, 2.0, 5)])

    def conv_bn(conv, norm, h):
        gamma, beta, mean, var = (w.numpy() for w in norm.weights)
        h = tf.nn.conv2d(h, conv.kernel, 1, "SAME").numpy()
        return gamma * (h - mean) / np.sqrt(var + norm.epsilon) + beta

    def leaky(h):
        return np.where(h > 0, h, 0.1 * h)

    h = leaky(conv_bn(block.conv1, block.bn1, x))
    h = leaky(conv_bn(block.conv2, block.bn2, h))
    h = leaky(conv_bn(block.conv3, block.bn3, h) + conv_bn(block.shortcut_conv,
                                                           block.shortcut_bn, x))
    expected = h[:, :6, :8].reshape(2, 3, 2, 4, 2, 5).max(axis=(2, 4))  # 2x2 pool, floor
    np.testing.assert_allclose(block(x, training=False).numpy(), expected, atol=1e-5)
    assert not block.conv1.use_bias and block.shortcut_conv.kernel.shape == (1, 1, 3, 5)


def test_dropblock_drops_whole_squares_about_rate_of_the_values_in_training_only():
    layer = DropBlock(0.3, block_size=3)
    x = np.ones((4, 20, 20, 8), np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    tf.random.set_seed(1)
    out = layer(x, training=True).numpy()
    dropped = out == 0
    assert 0.2 < dropped.mean() < 0.4
    kept = out[~dropped]
    np.testing.assert_allclose(kept, x.size / kept.size, rtol=1e-5)  # rescaled to mean 1
    # every dropped value lies in a 3x3 square of dropped values
    windows = np.lib.stride_tricks.sliding_window_view(dropped, (3, 3), axis=(1, 2))
    full = windows.all(axis=(-2, -1))                       # [4, 18, 18, 8]: square at (i, j)
    covered = np.zeros_like(dropped)
    for di in range(3):
        for dj in range(3):
            covered[:, di:di + 18, dj:dj + 18] |= full
    np.testing.assert_array_equal(covered, dropped)
    np.testing.assert_array_equal(DropBlock(0.0)(x, training=True).numpy(), x)


def test_resnet12_dropblock_is_off_by_default_and_in_the_last_two_blocks():
    assert all(b.dropblock.rate == 0 for b in ResNet12().residual_blocks)
    rates = [b.dropblock.rate for b in ResNet12(drop_rate=0.1).residual_blocks]
    assert rates == [0, 0, 0.1, 0.1]


def test_resnet12_round_trip(rng):
    layer = ResNet12(filters=(4, 6, 6, 8), pooled=False, drop_rate=0.1, dropblock_size=3,
                     fused_training_batch_norm=False)
    x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    layer(x)
    clone = get_backbone(keras.saving.serialize_keras_object(layer))
    assert type(clone) is ResNet12 and clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())
    assert clone(x).shape == (2, 1, 1, 8)
    with pytest.raises(ValueError, match="four blocks' widths"):
        ResNet12(filters=64)


def tiny_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(5, 1)(x), name="tiny")


def test_adapter_pools_a_models_maps_and_round_trips(rng):
    model = tiny_model()
    adapter = ImageModelBackbone(model)
    x = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(adapter(x).numpy(), model(x).numpy().mean(axis=(1, 2)),
                               atol=1e-6)
    assert tuple(adapter.compute_output_shape((None, 16, 16, 3))) == (None, 5)
    assert ImageModelBackbone(model, pooled=False)(x).shape == (3, 8, 8, 5)
    clone = get_backbone(keras.saving.serialize_keras_object(adapter))
    assert type(clone) is ImageModelBackbone and isinstance(clone.model, keras.Model)
    clone.set_weights(adapter.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), adapter(x).numpy())
    with pytest.raises(TypeError, match="wraps a Keras model"):
        ImageModelBackbone("mobilenet")


def test_a_keras_model_as_protonet_backbone_saves_and_loads(rng, tmp_path):
    model = PrototypicalNetwork(backbone=tiny_model(), preprocessor="rgb", image_size=16)
    assert isinstance(model.embedding, ImageModelBackbone)  # its maps pooled for us
    episode = rgb_episode(rng, size=20)
    logits = model(episode).numpy()
    assert logits.shape == (4, 3) and np.isfinite(logits).all()
    path = str(tmp_path / "tiny_protonet.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path)(episode).numpy(), logits)


def test_keras_applications_model_builds_as_a_backbone():
    """What the README's online use does with weights="imagenet", without the download."""
    trunk = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, minimalistic=True,
        include_preprocessing=False)
    backbone = ImageModelBackbone(trunk)
    assert tuple(backbone.compute_output_shape((None, 32, 32, 3))) == (None, 576)


def test_get_backbone_by_name_config_or_layer():
    assert set(BACKBONES) == {"conv4", "resnet12"}
    conv4 = get_backbone("conv4", filters=8, name="embedding")
    assert type(conv4) is Conv4Embedding and conv4.filters == 8
    assert type(get_backbone("resnet12", pooled=False)) is ResNet12
    assert get_backbone(conv4) is conv4
    assert get_backbone(SMALL).filters == (4, 6, 6, 8)
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet18'.*'conv4', 'resnet12'"):
        get_backbone("resnet18")
    with pytest.raises(TypeError, match="backbone must be"):
        get_backbone(12)


def test_files_written_before_conv4_moved_still_load():
    """Keras finds a registered class by its registered name ("keras_fewshot>..."), not by
    the module a file records: configs naming the old keras_fewshot.layers.conv4 load."""
    for layer in (Conv4Embedding(8), BatchNormalization()):
        config = keras.saving.serialize_keras_object(layer)
        config["module"] = "keras_fewshot.layers.conv4"
        assert type(keras.saving.deserialize_keras_object(config)) is type(layer)


def test_protonet_resnet12_rgb_saves_and_loads_to_the_same_logits(rng, tmp_path):
    named = PrototypicalNetwork(backbone="resnet12", preprocessor="rgb", image_size=32)
    assert isinstance(named.embedding, ResNet12) and named.embedding.filters[-1] == 640
    assert named.filters is None and named.channels == 3
    config = named.get_config()
    assert (config["backbone"], config["preprocessor"], config["image_size"]) \
        == ("resnet12", "rgb", 32)
    # the same model a few filters wide, through a .keras file
    model = PrototypicalNetwork(backbone=SMALL, preprocessor="rgb", image_size=32)
    episode = rgb_episode(rng)
    logits = model(episode).numpy()
    assert logits.shape == (4, 3) and np.isfinite(logits).all()
    path = str(tmp_path / "protonet_resnet12.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.embedding, ResNet12) and isinstance(loaded.preprocess,
                                                                   RGBPreprocessing)
    np.testing.assert_array_equal(loaded(episode).numpy(), logits)


@pytest.mark.parametrize("cls,options", [
    (PrototypicalNetwork, {}), (MatchingNetwork, {"fce": True}), (SiameseNetwork, {}),
    (MetaNetwork, {}), (RelationNetwork, {}),
    (MAMLClassifier, {"ways": 3, "test_inner_steps": 1}),
    (MetaLSTMClassifier, {"ways": 3, "test_inner_steps": 1})])
def test_every_model_takes_a_backbone_config_and_rgb(rng, cls, options):
    relation = cls is RelationNetwork  # 84 pixels: 5x5 maps, which its module pools twice
    size = 84 if relation else 32
    model = cls(backbone=SMALL_MAPS if relation else SMALL, preprocessor="rgb",
                image_size=size, **options)
    episode = rgb_episode(rng, queries=2, size=size)
    logits = model(episode).numpy()
    assert logits.shape == (2, 3) and np.isfinite(logits).all()
    config = model.get_config()
    assert config["preprocessor"] == "rgb" and config["filters"] is None
    assert config["backbone"]["registered_name"] == "keras_fewshot>ResNet12"
    clone = cls.from_config(config)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(episode).numpy(), logits, rtol=1e-5, atol=1e-5)


def batch_norms(layer):
    return [l for l in layer._flatten_layers() if isinstance(l, BatchNormalization)]


def test_maml_rgb_and_the_second_order_batch_norm_rule(rng):
    model = MAMLClassifier(ways=3, preprocessor="rgb", image_size=28)
    assert model.meta.learner.input_shape == (None, 28, 28, 3)
    assert model(rgb_episode(rng, size=40)).shape == (4, 3)
    norms = batch_norms(model.meta.learner)
    assert norms and not any(n.fused_training or n.synchronized for n in norms)
    resnet = MAMLClassifier(ways=3, backbone=SMALL, image_size=16)  # a config: as given
    assert all(n.fused_training for n in batch_norms(resnet.meta.learner))
    named = MAMLClassifier(ways=3, backbone="resnet12", image_size=16)
    assert not any(n.fused_training for n in batch_norms(named.meta.learner))
    first = MAMLClassifier(ways=3, backbone="resnet12", image_size=16, first_order=True)
    assert all(n.fused_training for n in batch_norms(first.meta.learner))


def test_filters_and_backbone_conflicts_are_refused():
    with pytest.raises(ValueError, match="filters=32 sets the conv4 backbone's width"):
        PrototypicalNetwork(filters=32, backbone="resnet12")
    with pytest.raises(ValueError, match="filters=8 sets the conv4"):
        MAMLClassifier(filters=8, backbone=SMALL)
    assert PrototypicalNetwork(filters=8).embedding.filters == 8
    assert MetaLSTMClassifier(backbone=SMALL, image_size=16).filters is None  # 32: conv4's


def test_bad_backbones_and_preprocessors_are_named():
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet50'"):
        PrototypicalNetwork(backbone="resnet50")
    with pytest.raises(ValueError, match=r"Unknown preprocessor 'gray'"):
        MatchingNetwork(preprocessor="gray")
    with pytest.raises(ValueError, match="needs feature maps"):
        RelationNetwork(backbone=SMALL, image_size=16)  # SMALL pools to vectors
    with pytest.raises(ValueError, match="needs vectors"):
        PrototypicalNetwork(backbone=Conv4Embedding(8, flatten=False))
    with pytest.raises(ValueError, match="needs feature maps of at least 4x4"):
        RelationNetwork(backbone=SMALL_MAPS, image_size=32)  # 2x2 maps
    with pytest.raises(ValueError, match="pass image_size=84"):
        PrototypicalNetwork(preprocessor=RGBPreprocessing(84))


def test_relation_network_with_resnet12_maps(rng):
    model = RelationNetwork(backbone="resnet12", preprocessor="rgb", image_size=84)
    assert model.embedding.pooled is False
    assert model.relation.convs.block_layers[0].kernel.shape == (3, 3, 1280, 64)
