"""Loading refuses broken or mismatched files with a clear error and writes nothing.

Truncated or corrupted weights files, a config.json describing another model than its weights,
a corrupted checkpoint met on resume; no pickle or unsafe deserialisation in the package.
"""

import dataclasses
import logging
import pathlib
import re

import numpy as np
import pytest

from keras_fewshot import training
from keras_fewshot.models import build_model
from keras_fewshot.models.episodic import dummy_episode
from keras_fewshot.training import checkpoints

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent / "keras_fewshot"
CONFIG = training.TrainConfig(model="protonet", model_config={"filters": 8}, subset="val",
                              ways=5, shots=1, queries=1, episodes=4, episodes_per_epoch=2,
                              lr_decay_every=2, seed=3)


def snapshot(directory):
    """{relative path: bytes} of every file under `directory`."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(pathlib.Path(directory).rglob("*")) if p.is_file()}


def model_dir_holding(tmp_path, name, model_config, config=CONFIG, tagged=True):
    """A training directory with `config` and the final weights of build_model(name, ...);
    untagged weights are written by plain Keras (as the released zoo files were)."""
    model = build_model(name, model_config)
    model(dummy_episode())
    directory = tmp_path / "run"
    directory.mkdir()
    training.write_config(directory, config)
    if tagged:
        checkpoints.atomic_save_weights(model, directory / training.WEIGHTS_FILE)
    else:
        model.save_weights(directory / training.WEIGHTS_FILE)
    return directory, model


def test_intact_directory_loads_the_same_answers_and_names_its_weights(tmp_path, caplog):
    directory, model = model_dir_holding(tmp_path, "protonet", {"filters": 8})
    episode = dummy_episode(ways=3, shots=2, queries=2)
    with caplog.at_level(logging.INFO, logger="keras_fewshot.training.run_dir"):
        loaded = training.model_from_dir(directory)
    np.testing.assert_array_equal(loaded(episode).numpy(), model(episode).numpy())
    assert caplog.messages == [f"Weights of {directory}: {directory / training.WEIGHTS_FILE}"]


@pytest.mark.parametrize("damage", ["truncated", "garbage_header", "empty"])
def test_damaged_weights_file_is_refused_and_left_alone(tmp_path, damage):
    directory, _ = model_dir_holding(tmp_path, "protonet", {"filters": 8})
    weights = directory / training.WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[:len(data) // 2],
                         "garbage_header": b"\x00not hdf5\x00" * 64 + data[640:],
                         "empty": b""}[damage])
    before = snapshot(directory)
    with pytest.raises(ValueError, match=re.escape(str(weights)) + ".*not a readable weights "
                       "file"):
        training.model_from_dir(directory)
    assert snapshot(directory) == before


def test_config_of_another_model_type_is_refused(tmp_path):
    """config.json says matching, the (tagged) weights are a protonet's: the same variables,
    so only the tag can tell."""
    directory, _ = model_dir_holding(tmp_path, "protonet", {"filters": 8},
                                     config=dataclasses.replace(CONFIG, model="matching"))
    before = snapshot(directory)
    with pytest.raises(ValueError, match="holds the weights of a PrototypicalNetwork, but the "
                       "config describes a MatchingNetwork"):
        training.model_from_dir(directory)
    assert snapshot(directory) == before


@pytest.mark.parametrize("other,model_config", [("relation", {"filters": 8}),
                                                ("protonet", {"filters": 16})])
def test_untagged_weights_of_another_architecture_are_refused(tmp_path, other, model_config):
    directory, _ = model_dir_holding(
        tmp_path, "protonet", {"filters": 8}, tagged=False,
        config=dataclasses.replace(CONFIG, model=other, model_config=model_config))
    before = snapshot(directory)
    with pytest.raises(ValueError, match=f"does not load into the model the config describes "
                       rf"\({other} \{{'filters': {model_config['filters']}\}}\)"):
        training.model_from_dir(directory)
    assert snapshot(directory) == before


def test_resume_from_a_truncated_checkpoint_is_refused_and_changes_nothing(omniglot_dir,
                                                                           tmp_path):
    directory = tmp_path / "run"
    training.train(dataclasses.replace(CONFIG, episodes=2), directory,
                   data_source=omniglot_dir, verbose=0)
    checkpoint = directory / "checkpoints" / "ckpt-2.weights.h5"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    before = snapshot(directory)
    with pytest.raises(ValueError, match="ckpt-2.weights.h5 is not a readable weights file"):
        training.train(CONFIG, directory, data_source=omniglot_dir, verbose=0)
    assert snapshot(directory) == before  # not even config.json's episode budget


# The one module that reads pickles: through an unpickler that refuses every global but
# numpy's array reconstructors (tests/test_datasets_natural.py runs a malicious pickle on it).
RESTRICTED_UNPICKLER = pathlib.Path("data") / "safe_pickle.py"


def test_no_pickle_or_unsafe_deserialisation_in_the_package():
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.relative_to(PACKAGE_DIR) == RESTRICTED_UNPICKLER:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # pickle used, not named in prose; eval( and exec( as builtins, not methods (a
            # PyTorch module's .eval())
            if re.search(r"\bimport (c?pickle|dill|cloudpickle)\b|\bfrom (c?pickle|dill)\b|"
                         r"\bpickle\.\w|allow_pickle\s*=\s*True|safe_mode\s*=\s*False|"
                         r"enable_unsafe_deserialization|(?<![.\w])eval\(|(?<![.\w])exec\(|"
                         r"marshal", line):
                offenders.append(f"{path.relative_to(PACKAGE_DIR)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)

