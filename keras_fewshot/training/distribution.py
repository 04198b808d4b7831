"""Training under a tf.distribute strategy: which strategy, which process writes the
training directory, how each step's batch splits over the replicas, and a `fit` that works
with several replicas (around two Keras 3 shortcomings)."""

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """The tf.distribute strategy `name` in STRATEGIES: "default" (one device), "mirrored"
    (every local GPU, else the CPU) or "multi_worker" (every worker of $TF_CONFIG; create it
    at program start, before any other TensorFlow op)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}")


def is_chief(strategy):
    """Whether this process writes the training directory: every process but the non-chief
    workers of a multi-worker cluster (the chief, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def check_divisible(config, model, replicas):
    """Each replica takes an equal share of the step's global batch (episodes, pairs, ...:
    the model's task kind says which)."""
    name, per_step = model.task_kind.global_batch(config)
    if per_step % replicas:
        raise ValueError(f"{name}={per_step} does not split evenly over {replicas} replicas: "
                         f"use a multiple of {replicas} (it is the global batch, kept as is)")


def prepare_replicated_fit(model, dataset):
    """Readies `model` (built under a multi-replica strategy) for `fit` in that strategy's
    scope, around two Keras 3 shortcomings (keras-team/keras#20585, #20329): its first fit
    averages one distributed batch to build the model (uint8 pixels become floats; dict
    inputs fail under MultiWorkerMirroredStrategy), and its step averages scalar logs along
    an axis they lack under MultiWorkerMirroredStrategy. Builds the compiled loss and metrics
    on one real element instead, and sets a train function that runs `train_step` on every
    replica and averages the logs over replicas."""
    strategy = model.distribute_strategy
    with strategy.scope():
        inputs, labels = next(iter(dataset))
        logits = model(inputs)
        model.compute_loss(x=inputs, y=labels, y_pred=logits)
        model.compute_metrics(inputs, labels, logits, sample_weight=None)

    @tf.function
    def train_function(iterator):
        logs = strategy.run(model.train_step, args=(iterator.get_next(),))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    model.train_function = train_function
    model._distribute_strategy = None  # fit then takes the strategy from the scope
    return strategy
