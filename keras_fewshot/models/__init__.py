"""One file per method; each classifier honours the episode contract (see `episodic`), each
sequence model the sequence contract (see `sequence`)."""

from keras_fewshot.models.episodic import (EPISODE_KEYS, EpisodicClassifier, dummy_episode,
                                           validate_episode)
from keras_fewshot.models.maml import MAMLClassifier, MAMLRegressor
from keras_fewshot.models.mann import MemoryAugmentedNetwork, SequenceLSTM
from keras_fewshot.models.matching import MatchingNetwork
from keras_fewshot.models.metalstm import MetaLSTMClassifier
from keras_fewshot.models.metanet import MetaNetwork
from keras_fewshot.models.protonet import PrototypicalNetwork
from keras_fewshot.models.relation import RelationNetwork
from keras_fewshot.models.sequence import SEQUENCE_KEYS, SequenceClassifier, validate_sequence
from keras_fewshot.models.siamese import SiameseNetwork

MODELS = {"protonet": PrototypicalNetwork, "matching": MatchingNetwork,
          "relation": RelationNetwork, "siamese": SiameseNetwork, "maml": MAMLClassifier,
          "maml_regressor": MAMLRegressor, "metalstm": MetaLSTMClassifier,
          "metanet": MetaNetwork, "mann": MemoryAugmentedNetwork, "sequence_lstm": SequenceLSTM}


def build_model(name, config=None):
    """A model by its registry name ("protonet", ...) and constructor config."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](**(config or {}))
