"""One file per method; each model honours the episode contract (see `episodic`)."""

from keras_fewshot.models.episodic import (EPISODE_KEYS, EpisodicClassifier, dummy_episode,
                                           validate_episode)
from keras_fewshot.models.maml import MAMLClassifier, MAMLRegressor
from keras_fewshot.models.matching import MatchingNetwork
from keras_fewshot.models.metalstm import MetaLSTMClassifier
from keras_fewshot.models.protonet import PrototypicalNetwork
from keras_fewshot.models.relation import RelationNetwork
from keras_fewshot.models.siamese import SiameseNetwork

MODELS = {"protonet": PrototypicalNetwork, "matching": MatchingNetwork,
          "relation": RelationNetwork, "siamese": SiameseNetwork, "maml": MAMLClassifier,
          "maml_regressor": MAMLRegressor, "metalstm": MetaLSTMClassifier}


def build_model(name, config=None):
    """A model by its registry name ("protonet", ...) and constructor config."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](**(config or {}))
