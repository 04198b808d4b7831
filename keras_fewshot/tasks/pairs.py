"""Same/different pairs: what the Siamese verifier trains on; it is measured, served and
pictured on episodes, as every classifier."""

from keras_fewshot.data import pair_dataset
from keras_fewshot.tasks.episodes import Episodes


class Pairs(Episodes):
    """One batch of `pairs` same/different pairs per step (each step counts as one episode),
    same-class labels as targets."""

    name = "pairs"
    trained_units = "pair batches"

    def check_config(self, config):
        if config.pairs < 2 or config.pairs % 2:
            raise ValueError(f"pairs must be an even number >= 2 (half same-class, half "
                             f"different-class pairs), got {config.pairs}")

    def training_stream(self, config, model, data, start=0):
        if data is None:
            self.refuse_dataset(config)
        if config.episodes_per_step != 1:
            raise ValueError("pair-trained models take one batch of pairs per step: set "
                             "episodes_per_step=1 and the batch size with pairs")
        return pair_dataset(data.images, data.labels, config.pairs,
                            groups=data.groups if config.within_alphabet else None,
                            seed=config.seed, start=start, num_batches=config.episodes - start,
                            distort=config.distort)

    def check_training_data(self, config, data):
        """Pairs need no N-way episodes of the training data."""

    def global_batch(self, config):
        return "pairs", config.pairs

    def step_input(self, config):
        return f"{config.pairs} pairs"

    def run_description(self, config):
        return f"{config.pairs} pairs per step"


PAIRS = Pairs()
