"""What a run trains on: its data set's classes at the model's resolution (`load_data`) and
the stream of episodes, pairs, label sequences or regression tasks built from them
(`training_dataset`), from any element on: element i depends only on (seed, i)."""

from keras_fewshot.data import (episode_dataset, load_dataset, pair_dataset, sequence_dataset,
                                sinusoid_tasks)
from keras_fewshot.data.datasets import SINUSOID
from keras_fewshot.training.config import TrainConfig


def load_data(config: TrainConfig, subset: str, source=None):
    """`subset` of the run's dataset and split at the model's resolution; the rotation
    augmentation applies to the training subset only. None for generated tasks (sinusoid)."""
    if config.dataset == SINUSOID:
        return None
    return load_dataset(config.dataset, config.split, subset, source=source,
                        image_size=config.image_size, channels=config.channels or None,
                        rotations=config.rotations and subset == config.subset)


def training_dataset(config: TrainConfig, model, data, start=0):
    """The stream `model` trains on from element `start`: episodes, same/different pairs,
    or batches of `episodes_per_step` label sequences (one sequence counts as an episode)."""
    remaining = config.episodes - start
    if (config.dataset == SINUSOID) != (model.training_task == "regression_tasks"):
        raise ValueError(f"{config.model} trains on {model.training_task}; dataset "
                         f"{config.dataset!r} does not provide them")
    if config.dataset == SINUSOID:
        return sinusoid_tasks(config.shots, config.queries, seed=config.seed, start=start,
                              num_tasks=remaining, batch_size=config.episodes_per_step)
    groups = data.groups if config.within_alphabet else None
    if model.training_task == "sequences":
        if config.ways != model.classes:
            raise ValueError(f"This {config.model} model classifies {model.classes} classes, but "
                             f"ways={config.ways} asks for sequences of {config.ways} classes; "
                             "set ways to the model's classes")
        return sequence_dataset(data.images, data.labels, config.ways, config.instances,
                                groups=groups, seed=config.seed, start=start,
                                num_sequences=remaining, batch_size=config.episodes_per_step,
                                distort=config.distort)
    if model.training_task == "pairs":
        if config.episodes_per_step != 1:
            raise ValueError("pair-trained models take one batch of pairs per step: set "
                             "episodes_per_step=1 and the batch size with pairs")
        return pair_dataset(data.images, data.labels, config.pairs, groups=groups,
                            seed=config.seed,
                            start=start, num_batches=remaining, distort=config.distort)
    return episode_dataset(data.images, data.labels, config.ways, config.shots,
                           config.queries, groups=groups, seed=config.seed, start=start,
                           num_episodes=remaining, batch_size=config.episodes_per_step)
