"""The Keras callbacks of a training run: a checkpoint each epoch, a stop on a nan or inf
loss before it reaches a checkpoint, and a picture of one episode each epoch."""

import math

import keras

from keras_fewshot import plots
from keras_fewshot.data import episode_dataset
from keras_fewshot.training.config import TrainConfig


class CheckpointEachEpoch(keras.callbacks.Callback):
    def __init__(self, checkpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(self.model, int(self.model.optimizer.iterations.numpy()))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises FloatingPointError naming the step once the loss is nan or inf, before the
    epoch's checkpoint could save the broken weights."""

    def __init__(self, checkpoints, episodes_per_step):
        super().__init__()
        self.checkpoints = checkpoints
        self.episodes_per_step = episodes_per_step

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))  # the epoch's running mean so far
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        latest = self.checkpoints.latest()
        kept = (f"the last good checkpoint {latest} is kept" if latest else
                "no checkpoint was written before it")
        raise FloatingPointError(
            f"The training loss became {loss} at step {step} (episodes "
            f"{(step - 1) * self.episodes_per_step + 1}-{step * self.episodes_per_step}); "
            f"training stopped and {kept}. Lower the learning rate or fix the model, then "
            "train again (a re-run with the same flags resumes from that checkpoint).")


def episode_pictures(config: TrainConfig, model, data, log_dir):
    """A TensorBoard callback picturing one small episode of the training classes with the
    model's predictions after each epoch (none for models that do not classify episodes, or
    when the data cannot fill that episode)."""
    if data is None or model.training_task not in ("episodes", "pairs"):
        return []
    ways = config.ways if getattr(model, "fixed_ways", None) else min(config.ways, 10)
    queries = min(config.queries, 3)
    try:
        data.check_episodes(ways, config.shots, queries)
    except ValueError:
        return []
    (episode, labels), = episode_dataset(data.images, data.labels, ways, config.shots, queries,
                                         seed=config.seed, num_episodes=1).as_numpy_iterator()
    return [plots.EpisodeImages(log_dir, episode, labels)]
