"""keras_fewshot.release: a training run, at a checkpoint or finished, becomes a zoo entry
that loads verified, holds exactly that checkpoint's model weights and the config of the
episodes trained up to it, and whose train command gives that config back; a refused release
leaves the output folder as it was."""

import dataclasses
import json
import pathlib
import shlex
import shutil

import numpy as np
import pytest

import keras_fewshot
from keras_fewshot import release, training, zoo
from keras_fewshot.training.command import train_command
from keras_fewshot.models import build_model

# 6 steps of 2 episodes, a checkpoint every 2 steps (4 episodes): checkpoints 2, 4 and 6.
RUN = training.TrainConfig(model="protonet", model_config={"filters": 8}, subset="val", ways=5,
                           shots=1, queries=1, episodes_per_step=2, episodes=12,
                           episodes_per_epoch=4, lr_decay_every=4, seed=3)
STEP = 4  # released: 8 episodes, the first 2 epochs
NAME = "tiny_protonet"
RELEASE_TOOL = pathlib.Path(__file__).resolve().parent.parent / "tools" / "release.py"
# The flags of RUN's train commands at TrainConfig's defaults, which releases before the
# commands named every setting left out (--split and --subset they wrote).
LEFT_OUT = ("--model=protonet", "--dataset=omniglot", "--norotations", "--nowithin_alphabet",
            "--pairs=128", "--instances=10", "--nodistort", "--optimizer=adam",
            "--learning_rate=0.001", "--lr_decay_rate=0.5", "--lr_schedule=step",
            "--nofreeze_embedding", "--dtype_policy=float32")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, omniglot_dir):
    directory = tmp_path_factory.mktemp("release") / "run"
    training.train(RUN, directory, data_source=omniglot_dir, verbose=0)
    return directory


@pytest.fixture(scope="module")
def released(run_dir, tmp_path_factory):
    """The entry of `run_dir` at STEP, in <tmp>/zoo/NAME."""
    return release.release(run_dir, tmp_path_factory.mktemp("zoo") / NAME, step=STEP,
                           description="A tiny ProtoNet.")


def model_weights(weights_path):
    model = build_model(RUN.model, RUN.model_config)
    training.load_weights(model, weights_path, RUN)
    return model.get_weights()


def assert_same_weights(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder` (None: no such folder)."""
    folder = pathlib.Path(folder)
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_released_checkpoint_loads_verified_with_exactly_its_weights(released, run_dir):
    assert released.name == NAME and released.description == "A tiny ProtoNet."
    assert released.protocol == "vinyals" and released.paper is None
    assert zoo.verify(released) == released.directory
    model = keras_fewshot.load(released.directory)  # the path form, hash-checked
    checkpoint = run_dir / "checkpoints" / f"ckpt-{STEP}.weights.h5"
    assert_same_weights(model.get_weights(), model_weights(checkpoint))
    assert training.read_config(released.directory) == dataclasses.replace(
        RUN, episodes=STEP * RUN.episodes_per_step)
    assert (f"--model={NAME}" in released.evaluate_command
            and "--protocol=vinyals" in released.evaluate_command)


def test_the_history_is_cut_at_the_released_step(released, run_dir):
    run_rows = (run_dir / "history.csv").read_text().splitlines()
    assert len(run_rows) == 1 + 3  # header, epochs 0-2
    epochs = STEP * RUN.episodes_per_step // RUN.episodes_per_epoch
    assert (released.directory / "history.csv").read_text().splitlines() == run_rows[:1 + epochs]


def test_the_train_command_gives_the_released_config(released, train_config_of):
    (command,) = released.train_commands
    assert command.startswith(f"python tools/train.py --model_dir=runs/{NAME} "
                              "--data_dir=../shared/data/omniglot ")
    assert "--episodes=8 " in command and "--verbose" not in command
    assert train_config_of(command) == training.read_config(released.directory)


@pytest.mark.parametrize("config", [
    training.TrainConfig(model="maml", model_config={"ways": 5, "algorithm": "metasgd",
                                                     "first_order": True},
                         ways=5, shots=1, episodes_per_step=32, episodes=6400,
                         episodes_per_epoch=3200, lr_decay_every=256000, lr_decay_rate=0.5),
    RUN,
    training.TrainConfig(model="siamese", model_config={"head_init": "distance"},
                         split="lake", subset="background", rotations=True,
                         within_alphabet=True, pairs=64, distort=True, episodes=500,
                         episodes_per_epoch=250, learning_rate=0.01, lr_decay_every=250,
                         embedding_from="zoo/protonet_omniglot", freeze_embedding=True),
    training.TrainConfig(shots=1, episodes=2000, learning_rate=1e-4, lr_decay_every=1000,
                         seed=1, init_from="runs/my protonet"),
    training.TrainConfig(model="protonet", model_config={"preprocessor": "rgb"},
                         dataset="folder:my photos", channels=3, split="lists:splits",
                         subset="val", optimizer="sgd", lr_schedule="linear",
                         dtype_policy="mixed_bfloat16"),
    training.TrainConfig(model="maml_regressor", model_config={"inner_learning_rate": 0.01},
                         dataset="sinusoid", queries=10, episodes_per_step=25),
], ids=["maml", "protonet", "siamese", "init_from", "folder", "sinusoid"])
def test_train_command_flags_give_back_the_config(config, train_config_of):
    """Every setting is named, defaults included (a changed default must not change the run
    the line trains), but a start or channels that are not set."""
    line = train_command(config, "runs/x", "../shared/data/omniglot")
    assert train_config_of(line) == config
    assert ("--data_dir=" in line) == (config.dataset != "sinusoid")
    flags = {word.split("=")[0] for word in shlex.split(line)[2:]}
    for field in dataclasses.fields(config):
        unset = field.name in ("init_from", "embedding_from", "channels") and not getattr(
            config, field.name)
        assert bool({f"--{field.name}", f"--no{field.name}"} & flags) != unset, field.name


def test_re_releasing_the_finished_run_keeps_the_entry_s_description_and_paper(
        run_dir, tmp_path, train_config_of):
    folder = tmp_path / NAME
    release.release(run_dir, folder, step=STEP, description="A tiny ProtoNet.")
    metadata = json.loads((folder / zoo.METADATA_FILE).read_text())
    paper = {"reference": "Snell et al. 2017", "results": {"5-way 1-shot": 98.8}}
    (folder / zoo.METADATA_FILE).write_text(json.dumps({**metadata, "paper": paper}))
    entry = release.release(run_dir, folder)  # step None: the final weights
    assert (entry.description, entry.paper, entry.protocol) == ("A tiny ProtoNet.", paper,
                                                                "vinyals")
    assert training.read_config(folder) == RUN
    assert_same_weights(keras_fewshot.load(folder).get_weights(),
                        model_weights(run_dir / training.WEIGHTS_FILE))
    assert len((folder / "history.csv").read_text().splitlines()) == 1 + 3
    assert train_config_of(entry.train_commands[-1]) == RUN


def test_re_releasing_a_fine_tuned_run_keeps_the_phase_it_starts_from(
        released, run_dir, tmp_path, train_config_of):
    """The released command trains into the entry's last --model_dir, after the earlier
    phases when the run starts from one of them (init_from or embedding_from); else it is
    the only command."""
    folder = shutil.copytree(released.directory, tmp_path / NAME)
    first = "python tools/train.py --model_dir=runs/phase1 --episodes=500"
    metadata = json.loads((folder / zoo.METADATA_FILE).read_text())
    (folder / zoo.METADATA_FILE).write_text(json.dumps(
        {**metadata, "train_commands": [first, "python tools/train.py --model_dir=runs/phase2"]}))
    entry = release.release(copy_run(run_dir, tmp_path, init_from="runs/phase1"), folder,
                            step=STEP)
    assert entry.train_commands[0] == first
    assert entry.train_commands[1].startswith("python tools/train.py --model_dir=runs/phase2 ")
    assert train_config_of(entry.train_commands[1]) == training.read_config(folder)
    assert training.read_config(folder).init_from == "runs/phase1"
    embedded = release.release(copy_run(run_dir, tmp_path / "embedding",
                                        embedding_from="runs/phase1"), folder, step=STEP)
    assert embedded.train_commands[0] == first
    assert train_config_of(embedded.train_commands[1]).embedding_from == "runs/phase1"
    (command,) = release.release(run_dir, folder, step=STEP).train_commands
    assert command.startswith("python tools/train.py --model_dir=runs/phase2 ")


def test_a_run_continuing_the_entry_through_another_run_is_released_as_a_chain(
        released, run_dir, tmp_path, train_config_of):
    """The entry (its command: phase 1) -> run A from the entry -> run B from A, released at a
    step: phase 1, then A and B as commands that run from scratch, each starting from the
    one before; re-releasing B replaces A's and B's commands only, also when the entry holds
    them as earlier releases wrote them (defaults left out); a run that starts from B
    follows it; an unfinished A is refused with nothing written."""
    folder = shutil.copytree(released.directory, tmp_path / "zoo" / NAME)
    (first,) = released.train_commands
    run_a = copy_run(run_dir, tmp_path / "a", init_from=str(folder), seed=4)
    changes_b = {"init_from": str(run_a), "seed": 5, "learning_rate": 1e-4}
    run_b = copy_run(run_dir, tmp_path / "b", **changes_b)

    (run_a / training.WEIGHTS_FILE).rename(tmp_path / "a_final")  # A unfinished
    before = snapshot(folder)
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        release.release(run_b, folder, step=STEP)
    assert snapshot(folder) == before
    (tmp_path / "a_final").rename(run_a / training.WEIGHTS_FILE)

    entry = release.release(run_b, folder, step=STEP)
    phase_1, a, b = entry.train_commands
    assert phase_1 == first and first.startswith(f"python tools/train.py --model_dir=runs/{NAME} ")
    assert a.startswith(f"python tools/train.py --model_dir=runs/{NAME}_2 ")
    assert train_config_of(a) == dataclasses.replace(RUN, init_from=f"runs/{NAME}", seed=4)
    assert b.startswith(f"python tools/train.py --model_dir=runs/{NAME}_3 ")
    assert train_config_of(b) == training.read_config(folder) == dataclasses.replace(
        RUN, **{**changes_b, "init_from": f"runs/{NAME}_2"},
        episodes=STEP * RUN.episodes_per_step)
    assert_same_weights(keras_fewshot.load(folder).get_weights(),
                        model_weights(run_b / "checkpoints" / f"ckpt-{STEP}.weights.h5"))

    metadata = json.loads((folder / zoo.METADATA_FILE).read_text())
    earlier_form = [" ".join(word for word in line.split(" ") if word not in LEFT_OUT)
                    for line in entry.train_commands]
    (folder / zoo.METADATA_FILE).write_text(json.dumps({**metadata,
                                                        "train_commands": earlier_form}))
    chain = release.release(run_b, folder).train_commands  # B finished: A's, B's replaced
    assert chain[:2] == (earlier_form[0], a) and len(chain) == 3
    assert "--episodes=12 " in chain[2]
    run_c = copy_run(run_dir, tmp_path / "c", init_from=str(folder), seed=6)
    *kept, c = release.release(run_c, folder).train_commands
    assert tuple(kept) == chain
    assert c.startswith(f"python tools/train.py --model_dir=runs/{NAME}_4 ")
    assert train_config_of(c) == dataclasses.replace(RUN, init_from=f"runs/{NAME}_3", seed=6)


def test_the_release_tool_writes_the_entry_and_names_the_author_s_next_steps(
        released, run_dir, run_python, tmp_path):
    folder = tmp_path / "zoo" / NAME
    proc = run_python(RELEASE_TOOL, f"--model_dir={run_dir}", f"--step={STEP}",
                      f"--output={folder}", "--description=A tiny ProtoNet.")
    entry = zoo.read_entry(folder)
    assert entry.hashes[training.CONFIG_FILE] == released.hashes[training.CONFIG_FILE]
    assert entry.train_commands == released.train_commands
    assert f"at step {STEP}" in proc.stdout and entry.evaluate_command in proc.stdout
    assert str(entry.card_path) in proc.stdout and "eval JSON" in proc.stdout


def test_a_corrupted_weights_byte_is_refused_by_load(released, tmp_path):
    folder = shutil.copytree(released.directory, tmp_path / NAME)
    data = bytearray((folder / training.WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / training.WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.weights.h5 has sha256 .* refusing to load"):
        keras_fewshot.load(folder)


def copy_run(run_dir, tmp_path, **config_changes):
    """A copy of the run in tmp_path/run, its config.json changed by `config_changes`."""
    copy = shutil.copytree(run_dir, tmp_path / "run")
    training.write_config(copy, dataclasses.replace(RUN, **config_changes))
    return copy


def damage_checkpoint(run_dir, tmp_path):
    copy = copy_run(run_dir, tmp_path)
    checkpoint = copy / "checkpoints" / f"ckpt-{STEP}.weights.h5"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    return copy


def entry_of_another_model(folder):
    config = json.loads((folder / training.CONFIG_FILE).read_text())
    (folder / training.CONFIG_FILE).write_text(json.dumps({**config, "model": "matching"}))


def test_a_run_loads_at_each_kept_checkpoint_verified(run_dir, tmp_path):
    """model_from_dir(step=...): what `--model_dir=... --step=N` evaluates, classifies or
    exports."""
    by_step = {step: training.model_from_dir(run_dir, step=step).get_weights()
               for step in (2, 4, 6)}
    for step, weights in by_step.items():
        assert_same_weights(weights, model_weights(run_dir / "checkpoints"
                                                   / f"ckpt-{step}.weights.h5"))
    assert not np.array_equal(by_step[2][0], by_step[6][0])  # trained between them
    with pytest.raises(FileNotFoundError, match="No checkpoint of step 3 .*checkpoints: 2, 4, 6"):
        training.model_from_dir(run_dir, step=3)
    with pytest.raises(ValueError, match=f"ckpt-{STEP}.weights.h5 is damaged"):
        training.model_from_dir(damage_checkpoint(run_dir, tmp_path), step=STEP)


# (id, release's arguments from (run_dir, tmp_path), a change to the existing entry, error)
REFUSALS = [
    ("no checkpoint", lambda run, tmp: (run, {"step": 3}), None,
     (FileNotFoundError, "No checkpoint of step 3 .*checkpoints: 2, 4, 6")),
    ("damaged checkpoint", lambda run, tmp: (damage_checkpoint(run, tmp), {"step": STEP}),
     None, (ValueError, f"ckpt-{STEP}.weights.h5 is damaged")),
    ("not a training directory", lambda run, tmp: (tmp, {"step": STEP}), None,
     (FileNotFoundError, "is not a training directory")),
    ("beyond the run", lambda run, tmp: (run, {"step": 8}), None,
     (ValueError, "step 8 is outside the run .* steps 1 to 6")),
    ("unfinished run", lambda run, tmp: (copy_run(run, tmp, episodes=24), {}), None,
     (FileNotFoundError, "has not finished: its newest checkpoint is at step 6 of 12")),
    ("linear schedule", lambda run, tmp: (copy_run(run, tmp, lr_schedule="linear"),
                                          {"step": STEP}), None,
     (ValueError, "anneals its learning rate to 0")),
    ("another model's entry", lambda run, tmp: (run, {"step": STEP}), entry_of_another_model,
     (ValueError, "holds a matching entry; refusing to replace it with a protonet")),
]


@pytest.mark.parametrize("make_args, change_entry, error",
                         [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
def test_a_refused_release_leaves_the_entry_as_it_was(released, run_dir, tmp_path, make_args,
                                                      change_entry, error):
    folder = shutil.copytree(released.directory, tmp_path / "zoo" / NAME)
    if change_entry:
        change_entry(folder)
    model_dir, kwargs = make_args(run_dir, tmp_path)
    before = snapshot(folder)
    with pytest.raises(error[0], match=error[1]):
        release.release(model_dir, folder, **kwargs)
    assert snapshot(folder) == before


def test_a_new_entry_needs_a_description_and_another_folder_than_the_run(run_dir, tmp_path):
    with pytest.raises(ValueError, match="holds no zoo entry yet: give its description"):
        release.release(run_dir, tmp_path / "new", step=STEP)
    assert not (tmp_path / "new").exists()
    before = snapshot(run_dir)
    with pytest.raises(ValueError, match="another folder than the training directory"):
        release.release(run_dir, run_dir, step=STEP, description="x")
    assert snapshot(run_dir) == before
