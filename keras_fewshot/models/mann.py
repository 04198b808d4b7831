"""Memory-augmented neural network and its LSTM baseline (Santoro et al. 2016).

Both read a label sequence step by step (the sequence contract, `sequence.py`): the input of
step t is the image x_t (downsized, 20x20 in the paper) with the one-hot label y_{t-1}, and
the output is a score per class, trained by cross-entropy at every step.
  * MemoryAugmentedNetwork: the LRUA memory cell (LSTM controller, 128 x 40 memory, 4 read
    heads in the paper), scores = W_o [h_t; r_t] + b_o (sec. 3.1).
  * SequenceLSTM: the paper's LSTM baseline: an LSTM, scores = W_o h_t + b_o.
"""

import keras

from keras_fewshot.layers import LRUAMemoryCell
from keras_fewshot.models.sequence import SequenceClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MemoryAugmentedNetwork(SequenceClassifier):
    """N classes (fixed), any sequence length; memory and heads as in the paper;
    `key_strength` adds the NTM's learned read sharpness (see LRUAMemoryCell)."""

    def __init__(self, classes=5, image_size=20, units=200, memory_size=128, word_size=40,
                 read_heads=4, gamma=0.95, key_strength=False, **kwargs):
        super().__init__(classes, image_size, **kwargs)
        self.cell = LRUAMemoryCell(units, memory_size, word_size, read_heads, gamma,
                                   key_strength, name="memory_cell")
        self.recurrent = keras.layers.RNN(self.cell, return_sequences=True, name="recurrent")
        self.scores = keras.layers.Dense(self.classes, name="scores")
        self.recurrent.build((None, None, self.input_size))
        self.scores.build((None, None, self.cell.output_size))
        self.built = True

    def steps(self, inputs, training=False):
        return self.scores(self.recurrent(inputs, training=training))

    def get_config(self):
        return {**super().get_config(), "units": self.cell.units,
                "memory_size": self.cell.memory_size, "word_size": self.cell.word_size,
                "read_heads": self.cell.read_heads, "gamma": self.cell.gamma,
                "key_strength": self.cell.key_strength}


@keras.saving.register_keras_serializable(package="keras_fewshot")
class SequenceLSTM(SequenceClassifier):
    """The LSTM baseline: the same inputs and outputs, no external memory."""

    def __init__(self, classes=5, image_size=20, units=200, **kwargs):
        super().__init__(classes, image_size, **kwargs)
        self.units = int(units)
        self.recurrent = keras.layers.LSTM(self.units, return_sequences=True, name="recurrent")
        self.scores = keras.layers.Dense(self.classes, name="scores")
        self.recurrent.build((None, None, self.input_size))
        self.scores.build((None, None, self.units))
        self.built = True

    def steps(self, inputs, training=False):
        return self.scores(self.recurrent(inputs, training=training))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
