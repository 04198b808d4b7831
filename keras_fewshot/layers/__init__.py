"""The papers' building blocks, each a serializable Keras layer."""

from keras_fewshot.backbones.conv4 import Conv4Embedding
from keras_fewshot.layers.matching import (CosineAttentionClassifier, QueryAttentionEmbedding,
                                           SupportContextEmbedding)
from keras_fewshot.layers.memory import LRUAMemoryCell, cosine_similarity
from keras_fewshot.layers.meta_lstm import MetaLearnerLSTM, preprocess_gradient
from keras_fewshot.layers.metanet import (AugmentedDense, FastWeightGenerator,
                                          FastWeightMemoryRead, TaskFastWeightLSTM,
                                          per_example_kernel_gradients)
from keras_fewshot.layers.preprocessing import (PREPROCESSORS, ImagePreprocessing,
                                                InkPreprocessing, RGBPreprocessing,
                                                get_preprocessor, to_model_pixels)
from keras_fewshot.layers.prototypical import PrototypicalHead, class_means
from keras_fewshot.layers.relation import RelationModule
from keras_fewshot.layers.siamese import NonPositive, SiameseL1Head
