"""The task kinds, one object each: what a model trains on and how it is measured, served
and pictured (`base.TaskKind`). A model class names its kind as `task_kind`."""

from keras_fewshot.tasks.base import TaskKind
from keras_fewshot.tasks.episodes import EPISODES
from keras_fewshot.tasks.pairs import PAIRS
from keras_fewshot.tasks.regression import REGRESSION
from keras_fewshot.tasks.sequences import SEQUENCES

TASK_KINDS = (EPISODES, PAIRS, SEQUENCES, REGRESSION)

__all__ = ["EPISODES", "PAIRS", "REGRESSION", "SEQUENCES", "TASK_KINDS", "TaskKind"]
