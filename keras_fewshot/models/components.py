"""The injected parts of every image model: its preprocessor and its backbone.

Each model takes `backbone=` ("conv4", "resnet12", a serialised backbone config or a Keras
layer / model) and `preprocessor=` ("ink", "rgb", a serialised config or a Keras layer),
beside `image_size`, and writes them back in `get_config`: a name as given, anything else
serialised, so `from_config(get_config())` and `.keras` files rebuild the same model. The
defaults ("conv4", "ink") build exactly the zoo's models, with the same weight paths
(`model.preprocess`, `model.embedding`).

A backbone named in `keras_fewshot.backbones.BACKBONES` is built by its class's `for_model`,
which turns what the model needs (vectors or maps, the Relation Network's embedding) into
its own arguments: no branch here knows a backbone. `filters` is the width of a named
backbone whose class `takes_model_filters` (conv4) and goes with no other: with any other
backbone it is refused, rather than one of the two silently ignored.
"""

import keras

from keras_fewshot.backbones import BACKBONES, ImageModelBackbone, get_backbone, layer_from_spec
from keras_fewshot.layers.preprocessing import get_preprocessor


def make_preprocessor(spec, image_size):
    """The preprocessor layer for `spec` (named "preprocess" when built from a name), checked
    to produce `image_size` x `image_size` pixels."""
    layer = get_preprocessor(spec, image_size, name="preprocess")
    size = getattr(layer, "image_size", None)
    if size is not None and int(size) != int(image_size):
        raise ValueError(f"The preprocessor makes {size}x{size} images but the model's "
                         f"image_size is {image_size}: pass image_size={size}")
    return layer


def preprocessor_channels(layer, image_size):
    """The channel count of the preprocessor's output (its `channels`, else from its output
    shape on 3-channel input)."""
    channels = getattr(layer, "channels", None)
    if channels is None:
        channels = layer.compute_output_shape((None, image_size, image_size, 3))[-1]
    return int(channels)


def backbone_filters(backbone, filters, default=64):
    """The width `filters` of a named backbone that takes it, `default` when None; None for
    another backbone, which `filters` may not go with (ValueError)."""
    sized = sorted(name for name, cls in BACKBONES.items()
                   if getattr(cls, "takes_model_filters", False))
    if isinstance(backbone, str) and backbone in sized:
        return default if filters is None else int(filters)
    if filters is not None:
        what = backbone if isinstance(backbone, str) else type(backbone).__name__
        raise ValueError(f"filters={filters} sets the {' or '.join(sized)} backbone's width, "
                         f"but the backbone is {what!r}: set its width in the backbone itself, "
                         f"or pass {' or '.join(f'backbone={name!r}' for name in sized)}")
    return None


def make_backbone(spec, input_shape, filters=None, feature_map=False, relation=False,
                  build=True, **options):
    """The backbone layer for `spec`, built on `input_shape` ([None, s, s, C]) unless
    `build=False` (a model that builds it itself, under its own name scope), and its output
    shape.

    From a name it is named "embedding" and built by its class's `for_model(feature_map,
    relation, **options)`: `feature_map` asks for maps [M, h, w, C] rather than vectors,
    `relation` for the Relation Network's embedding; `options` are the model's (batch norm's
    `synchronized`, `fused_training_batch_norm`), and `filters` when given. A layer or config
    is used as given, except that a Keras model (keras.applications, keras-hub) whose output
    is a map is wrapped in `ImageModelBackbone` to pool it when the model wants a vector.
    ValueError when the output is a vector where maps are needed, or the other way round.
    """
    if isinstance(spec, str):
        if filters is not None:
            options["filters"] = filters
        builders = {name: cls.for_model for name, cls in BACKBONES.items()}
        layer = layer_from_spec(spec, builders, "backbone", name="embedding",
                                feature_map=feature_map, relation=relation, **options)
    else:
        layer = get_backbone(spec)
    if build and not layer.built:
        layer.build(input_shape)
    shape = tuple(layer.compute_output_shape(input_shape))
    if (not feature_map and len(shape) == 4 and isinstance(layer, keras.Model)
            and not isinstance(layer, ImageModelBackbone)):
        layer = ImageModelBackbone(layer, name="embedding")
        if build:
            layer.build(input_shape)
        shape = tuple(layer.compute_output_shape(input_shape))
    wanted = 4 if feature_map else 2
    if len(shape) != wanted:
        raise ValueError(f"The backbone {type(layer).__name__} maps {tuple(input_shape)} to "
                         f"{shape}, but this model needs "
                         f"{'feature maps [M, h, w, C]' if feature_map else 'vectors [M, D]'}"
                         + ("; ResNet12(pooled=False) or Conv4Embedding(flatten=False) give maps"
                            if feature_map else
                            "; ImageModelBackbone(model) pools a model's maps"))
    return layer, shape


def spec_config(spec, layer):
    """What get_config writes for an injected part: the name it was built from, else the
    layer serialised."""
    return spec if isinstance(spec, str) else keras.saving.serialize_keras_object(layer)


class ImageModelMixin:
    """For models with an injected preprocessor and backbone: `set_preprocessor` makes
    `self.preprocess`, `image_parts_config` writes both parts' get_config entries."""

    def set_preprocessor(self, image_size, preprocessor, backbone, filters, default_filters=64):
        """Sets image_size, filters (a named backbone's width, else None), preprocess and
        channels, and remembers the specs given by name; returns the backbone's input shape
        [None, s, s, channels]."""
        self.image_size = int(image_size)
        self.filters = backbone_filters(backbone, filters, default_filters)
        self.preprocess = make_preprocessor(preprocessor, self.image_size)
        self.channels = preprocessor_channels(self.preprocess, self.image_size)
        self._preprocessor_name = preprocessor if isinstance(preprocessor, str) else None
        self._backbone_name = backbone if isinstance(backbone, str) else None
        return (None, self.image_size, self.image_size, self.channels)

    def image_parts_config(self, backbone_layer):
        """image_size, filters, backbone and preprocessor for get_config."""
        return {"image_size": self.image_size, "filters": self.filters,
                "backbone": spec_config(self._backbone_name, backbone_layer),
                "preprocessor": spec_config(self._preprocessor_name, self.preprocess)}
