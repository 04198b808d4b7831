"""Where examples come from (Omniglot; mini-ImageNet, CIFAR-FS, FC100 and CUB from local
copies; your own folders, TFDS, generated sinusoids) and how they become episodes, pairs or
label sequences."""

from keras_fewshot.data.episodes import episode_dataset
from keras_fewshot.data.pairs import pair_dataset
from keras_fewshot.data.sequences import sequence_dataset
from keras_fewshot.data.labelled import LabelledImages
from keras_fewshot.data.omniglot import load_examples, load_split
from keras_fewshot.data.images import read_image_folder, read_images, read_tfds
from keras_fewshot.data.datasets import load_dataset, select_subset
from keras_fewshot.data.sinusoid import sinusoid_tasks
