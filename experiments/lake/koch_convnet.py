"""Prints the --model_config of a ProtoNet whose embedding is Koch, Zemel & Salakhutdinov's
(2015, sec. 3.1 and fig. 4) convnet on 105x105 input: convolutions of 64 10x10, 128 7x7,
128 4x4 and 256 4x4 filters (ReLU, 2x2 max pooling after the first three), then a 4096-unit
sigmoid layer; 38.9 million parameters. Wrapped by keras_fewshot's ImageModelBackbone.

    python tools/train.py ... --model_config="$(python experiments/lake/koch_convnet.py)"
"""

import json

import keras

from keras_fewshot.backbones import ImageModelBackbone


def koch_convnet(image_size=105):
    layers = keras.layers
    return keras.Sequential([
        keras.Input((image_size, image_size, 1)),
        layers.Conv2D(64, 10, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(128, 7, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(128, 4, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(256, 4, activation="relu"), layers.Flatten(),
        layers.Dense(4096, activation="sigmoid")], name="koch_convnet")


def without_dtype_policies(config):
    """The serialised config without its layers' float32 policies, so that the training
    run's --dtype_policy (bf16 compute) applies to every layer."""
    if isinstance(config, dict):
        return {key: without_dtype_policies(value) for key, value in config.items()
                if not (key == "dtype" and isinstance(value, dict))}
    if isinstance(config, list):
        return [without_dtype_policies(value) for value in config]
    return config


if __name__ == "__main__":
    backbone = keras.saving.serialize_keras_object(ImageModelBackbone(koch_convnet()))
    print(json.dumps({"image_size": 105, "backbone": without_dtype_policies(backbone)}))
