"""The interface every task kind implements (`TaskKind`): what a model of that kind trains
on, how it is measured, served and pictured."""


class TaskKind:
    """One kind of task a model learns from; a model class names its own as `task_kind`.

    The trainer, evaluation, export, benchmark and tools ask the model's kind rather than
    branching on it, so a new kind is one new module. `config` arguments are TrainConfigs.
    """

    name = ""  # what the model trains on, as messages name it
    dataset = None  # the generated data set its tasks come from; None: labelled images
    protocols = {}  # {name: spec}: evaluation protocols on its own generated tasks
    serving_inputs = None  # serving_default's {input: (dtype, shape, shape as named)}
    unit = "episode"  # what one forward pass or serving request takes, as benchmarks name it
    trained_units = "episodes"  # what a config's `episodes` counts, as learning curves name it
    distortion_averaging = False  # whether `evaluate` takes test_distortions (> 0)
    # why fewer than 2 ways would teach nothing, as the config's check says
    one_way_problem = ("a 1-way episode is solved by any model (every query is class 0), so "
                       "it trains to a loss of 0 and learns nothing")

    def check_config(self, config):
        """Raises ValueError for settings of `config` this kind cannot train on."""

    def training_stream(self, config, model, data, start=0):
        """The tf.data stream `model.fit` takes from element `start` on (element i depends
        only on (seed, i)); ValueError when `config` or `data` cannot make it."""
        raise NotImplementedError

    def refuse_dataset(self, config):
        """Raises the ValueError of a data set that provides no tasks of this kind."""
        raise ValueError(f"{config.model} trains on {self.name}; dataset {config.dataset!r} "
                         "does not provide them")

    def check_training_data(self, config, data):
        """Refuses, before any file is written, data that cannot fill the training stream."""

    def global_batch(self, config):
        """(setting, count): the setting that fixes one optimizer step's global batch, which
        the replicas of a distributed run share."""
        return "episodes_per_step", config.episodes_per_step

    def task_shape(self, config) -> str:
        """One task's shape, e.g. "5w1s5q"."""
        return f"{config.ways}w{config.shots}s{config.queries}q"

    def step_input(self, config) -> str:
        """What one optimizer step trains on, e.g. "32 episodes of 5w1s5q"."""
        shape = self.task_shape(config)
        return (f"{config.episodes_per_step} episodes of {shape}"
                if config.episodes_per_step > 1 else shape)

    def run_description(self, config) -> str:
        """The tasks of a run, as learning curves label it: "5-way 1-shot 5-query" unless
        the kind says otherwise."""
        return f"{config.ways}-way {config.shots}-shot {config.queries}-query"

    def evaluate(self, model, data, name, protocol, spec, settings=None, episodes=1000,
                 queries=15, seed=0, within_group=False, episodes_per_batch=10, verbose=1):
        """Evaluation rows of `model` on `data` (test classes called `name`; None for
        generated tasks) by `protocol` (None: any labelled images) and its `spec`
        (`evaluation.PROTOCOLS`; the Vinyals one without a protocol). A kind with
        `distortion_averaging` takes test_distortions too: distorted views averaged per
        episode (`evaluation.evaluate_data` refuses them for the others)."""
        raise NotImplementedError

    def evaluation_figure(self, model, rows, label, data, name, queries=15, seed=0,
                          within_group=False):
        """A picture of `evaluate`'s rows: the model (called `label`) at work on the first
        test task, or its measured curve."""
        raise NotImplementedError

    def test_inputs(self, model, config, data):
        """[(shape, inputs)]: the test elements a benchmark times the forward pass on."""
        return []

    def request_inputs(self, model, config, data):
        """[(shape, inputs)]: the requests a benchmark sends the served model."""
        return []

    def training_pictures(self, config, model, data, log_dir):
        """Keras callbacks picturing the model's progress in TensorBoard (none by default)."""
        return []
