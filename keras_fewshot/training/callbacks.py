"""The Keras callbacks of a training run: a checkpoint each epoch and a stop on a nan or inf
loss before it reaches a checkpoint (the pictures are the task kind's)."""

import math

import keras


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

