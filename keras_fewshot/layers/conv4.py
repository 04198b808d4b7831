"""Moved to keras_fewshot.backbones.conv4; this name stays importable."""

from keras_fewshot.backbones.conv4 import BatchNormalization, Conv4Embedding

__all__ = ["BatchNormalization", "Conv4Embedding"]
