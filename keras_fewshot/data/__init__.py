"""Where examples come from (Omniglot via TFDS or local archives) and how they become
episodes, pairs or label sequences."""

from keras_fewshot.data.episodes import episode_dataset
from keras_fewshot.data.pairs import pair_dataset
from keras_fewshot.data.sequences import sequence_dataset
from keras_fewshot.data.omniglot import LabelledImages, load_examples, load_split
from keras_fewshot.data.sinusoid import sinusoid_tasks
