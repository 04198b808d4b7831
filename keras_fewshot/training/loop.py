"""The fit loop: builds (or restores) a run's model and fits it over the rest of its
episode budget, writing the training directory (see `keras_fewshot.training`)."""

import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_fewshot.models import build_model
from keras_fewshot.training.callbacks import CheckpointEachEpoch, StopOnNonFiniteLoss
from keras_fewshot.training.checkpoints import Checkpoints, atomic_save_weights
from keras_fewshot.training.config import (OPTIMIZERS, TrainConfig, check_resumable,
                                           using_dtype_policy, write_config)
from keras_fewshot.training.data import load_data, training_dataset
from keras_fewshot.training.distribution import (check_divisible, is_chief,
                                                 prepare_replicated_fit)
from keras_fewshot.training.run_dir import (CHECKPOINTS_DIR, WEIGHTS_FILE, load_weights,
                                            model_from_dir)


def train(config: TrainConfig, model_dir, data_source=None, verbose=1,
          strategy=None) -> keras.Model:
    """Trains (or resumes) the run `config` in `model_dir`; returns the trained model.

    Under a tf.distribute `strategy`, each step's `episodes_per_step` episodes (sequences,
    tasks; pairs for a pair-trained model) are split over the replicas and batch norm takes
    its statistics over all of them (the MAML family's over each task's own set, as on one
    device), so the run follows the one-device run. In a multi-worker cluster every
    worker resumes from `model_dir` (a shared file system) and only the chief writes it.
    """
    config.validate()
    model_dir = pathlib.Path(model_dir)
    strategy = strategy or tf.distribute.get_strategy()
    check_resumable(model_dir, config)
    data = load_data(config, config.subset, data_source)
    checkpoints = Checkpoints(model_dir / CHECKPOINTS_DIR)
    # The newest intact checkpoint; damaged newer ones are named (and moved aside by the
    # process that writes the directory), never resumed from.
    restore = checkpoints.restore_point(quarantine=is_chief(strategy))
    with strategy.scope():
        keras.utils.set_random_seed(config.seed)  # initial weights
        with using_dtype_policy(config.dtype_policy):
            model = build_model(config.model, config.model_config)
        if getattr(model, "fixed_ways", None) not in (None, config.ways):
            raise ValueError(f"{config.model} classifies exactly {model.fixed_ways} classes "
                             f"but the episodes are {config.ways}-way: set ways in "
                             "--model_config too")
        if config.ways > (getattr(model, "max_ways", None) or config.ways):
            raise ValueError(f"{config.model} classifies at most {model.max_ways} classes but "
                             f"the episodes are {config.ways}-way: raise max_ways in "
                             "--model_config")
        check_divisible(config, model, strategy.num_replicas_in_sync)
        if restore is None:  # a fresh run's start weights, checked before any file
            if config.init_from:  # fine-tuning: weights only, a fresh optimizer and schedule
                model.set_weights(model_from_dir(config.init_from).get_weights())
            elif config.embedding_from:  # transfer: the embedding only, other layers fresh
                _copy_embedding(model_from_dir(config.embedding_from), model,
                                config.embedding_from)
        if config.freeze_embedding:
            if not hasattr(model, "embedding"):
                raise ValueError(f"freeze_embedding: {config.model} has no embedding layer")
            model.embedding.trainable = False
        optimizer = OPTIMIZERS[config.optimizer](learning_rate_schedule(config))
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer,
                      loss=model.training_loss(), metrics=model.training_metrics())
        if restore is not None:
            load_weights(model, restore, config)
    model.task_kind.check_training_data(config, data)  # refused before any file
    if is_chief(strategy):
        model_dir.mkdir(parents=True, exist_ok=True)
        write_config(model_dir, config)  # only once the model, data and start weights work
        return _fit(config, model, data, checkpoints, model_dir, verbose)
    # A non-chief worker saves as the chief does (saving may read replicated variables
    # collectively) into a scratch directory that is then thrown away.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="keras_fewshot_worker_"))
    try:
        return _fit(config, model, data, Checkpoints(scratch / CHECKPOINTS_DIR), scratch, 0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def learning_rate_schedule(config: TrainConfig):
    """The outer learning rate by optimizer step: `config.lr_schedule` "step" (multiplied by
    lr_decay_rate every lr_decay_every episodes) or "linear" (learning_rate to 0 over the
    run's steps, as Reptile's outer step size, Nichol et al. 2018)."""
    if config.lr_schedule == "linear":
        return keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, decay_steps=config.steps,
            end_learning_rate=0.0, power=1.0)
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=config.lr_decay_every // config.episodes_per_step,
        decay_rate=config.lr_decay_rate, staircase=True)


def _copy_embedding(source, target, where):
    """Copies source.embedding's weights into target.embedding (same filters and blocks)."""
    shapes = [tuple(w.shape) for w in source.embedding.weights]
    wanted = [tuple(w.shape) for w in target.embedding.weights]
    if shapes != wanted:
        raise ValueError(f"The embedding in {where} does not fit this model's: weight shapes "
                         f"{shapes} vs {wanted}")
    target.embedding.set_weights(source.embedding.get_weights())


def _fit(config: TrainConfig, model, data, checkpoints, model_dir, verbose):
    """Fits `model` (compiled, restored) over the rest of the run, writing into model_dir."""
    optimizer = model.optimizer
    step = int(optimizer.iterations.numpy())
    done = step * config.episodes_per_step
    steps_per_epoch = config.episodes_per_epoch // config.episodes_per_step
    epochs = config.episodes // config.episodes_per_epoch
    if done < config.episodes:
        if verbose:
            print(f"Training {config.model} in {model_dir}: episode {done} of "
                  f"{config.episodes}" + (" (resumed)" if done else ""))
        dataset = training_dataset(config, model, data, start=done)
        options = tf.data.Options()  # replicas share each step's batch (no files to shard)
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        strategy = model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            prepare_replicated_fit(model, dataset)
        with strategy.scope():
            model.fit(dataset.with_options(options), epochs=epochs, shuffle=False,
                      initial_epoch=done // config.episodes_per_epoch,
                      steps_per_epoch=steps_per_epoch, verbose=verbose,
                      callbacks=[StopOnNonFiniteLoss(checkpoints, config.episodes_per_step),
                                 CheckpointEachEpoch(checkpoints),
                                 keras.callbacks.CSVLogger(str(model_dir / "history.csv"),
                                                           append=True),
                                 keras.callbacks.TensorBoard(str(model_dir / "logs")),
                                 *model.task_kind.training_pictures(
                                     config, model, data, model_dir / "logs" / "episodes")])
    # The released weights carry no optimizer state: copy into an uncompiled twin.
    release = build_model(config.model, config.model_config)
    release.set_weights(model.get_weights())
    atomic_save_weights(release, model_dir / WEIGHTS_FILE)
    return model
