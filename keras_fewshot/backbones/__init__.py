"""Feature extractors: float32 model pixels [M, H, W, C] -> features [M, D] or maps
[M, h, w, C]. conv4 (Vinyals et al. 2016 / Snell et al. 2017; the zoo's), ResNet-12
(Lee et al. 2019) and an adapter for any Keras image model.

    get_backbone("resnet12", pooled=False)        # by name, with constructor arguments
    get_backbone(keras.saving.serialize_keras_object(layer))   # a serialised backbone
    get_backbone(layer)                           # a Keras layer or model: as is

A named backbone is one file here and its entry in BACKBONES. Its class builds itself for a
model with the classmethod `for_model(feature_map=False, relation=False, **options)`:
vectors [M, D], or maps [M, h, w, C] when `feature_map`; `relation` for the Relation
Network's embedding; `options` the batch-norm settings `synchronized` and
`fused_training_batch_norm`, and `filters` for a class whose `takes_model_filters` is True
(its width is a model's `filters` argument). keras_fewshot.models.components builds it.
"""

import keras

from keras_fewshot.backbones.adapter import ImageModelBackbone
from keras_fewshot.backbones.conv4 import BatchNormalization, Conv4Embedding
from keras_fewshot.backbones.resnet12 import DropBlock, ResidualBlock, ResNet12

BACKBONES = {"conv4": Conv4Embedding, "resnet12": ResNet12}


def layer_from_spec(spec, choices, what, **arguments):
    """A layer from `spec`: a name in `choices` (a dict of classes or other callables, called
    with `arguments`), a serialised config dict (keras.saving.serialize_keras_object), or a
    Keras layer or model, returned as is. ValueError naming the choices for an unknown name,
    TypeError for anything else; `what` names the part in the messages."""
    if isinstance(spec, str):
        if spec not in choices:
            raise ValueError(f"Unknown {what} {spec!r}; choices: {sorted(choices)}, a "
                             f"serialised {what} config, or a Keras layer")
        return choices[spec](**arguments)
    if isinstance(spec, dict):
        layer = keras.saving.deserialize_keras_object(spec)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"The {what} config deserialises to {type(layer).__name__}, not "
                            "a Keras layer")
        return layer
    if isinstance(spec, keras.layers.Layer):
        return spec
    raise TypeError(f"{what} must be one of {sorted(choices)}, a serialised {what} config "
                    f"(dict) or a Keras layer or model; got {type(spec).__name__}")


def get_backbone(spec, **defaults):
    """A backbone layer from `spec`: a name in BACKBONES (built with `defaults` as constructor
    arguments), a serialised config dict, or a Keras layer or model (as is)."""
    return layer_from_spec(spec, BACKBONES, "backbone", **defaults)


__all__ = ["BACKBONES", "BatchNormalization", "Conv4Embedding", "DropBlock",
           "ImageModelBackbone", "ResNet12", "ResidualBlock", "get_backbone", "layer_from_spec"]
