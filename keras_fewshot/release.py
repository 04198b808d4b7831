"""Releasing a training run as a zoo entry: a training directory, at its end or at one of its
checkpoints, becomes a zoo folder (see `keras_fewshot.zoo` for the format).

`release(model_dir, output_dir, step=...)` writes into output_dir

    model.weights.h5   the weights of checkpoint `step` (or the run's final weights), model
                       only: no optimizer state
    config.json        the run's config with the episodes actually trained
                       (step x episodes_per_step)
    history.csv        the run's history.csv up to that step
    metadata.json      description, protocol, the sha256 of config.json and the weights, and
                       the commands that train exactly this config, in order: a run that
                       starts from another run (--init_from) follows that run's command(s)
                       (`_train_commands`)

and returns the entry (`zoo.read_entry`). Everything is checked before the first file is
written: a release that is refused (ValueError or FileNotFoundError naming the problem)
leaves output_dir as it was. Each file is renamed into place complete, metadata.json last, so
an interrupted release leaves hashes that refuse the new files rather than vouch for them.

Re-releasing into an entry's own folder keeps its description, protocol and paper unless
given; the card (README.md) and the eval_*.json beside it are the author's to re-make.
"""

import csv
import dataclasses
import io
import json
import pathlib
import shlex

from keras_fewshot import training, zoo
from keras_fewshot.evaluation import PROTOCOLS, config_protocol
from keras_fewshot.models import build_model
from keras_fewshot.training.checkpoints import atomic_save_weights
from keras_fewshot.training.command import train_command
from keras_fewshot.training.files import write_text_durably
from keras_fewshot.training.history import history_rows
from keras_fewshot.training.run_dir import checkpoint_of_step, checkpoints_of, listed

HISTORY_FILE = "history.csv"
OMNIGLOT_DATA_DIR = "../shared/data/omniglot"  # the --data_dir of the zoo's train commands


def release(model_dir, output_dir, *, step=None, description=None, protocol=None,
            data_dir=OMNIGLOT_DATA_DIR) -> zoo.ZooEntry:
    """Writes the zoo entry of the training directory `model_dir` into `output_dir` (its
    name is the entry's) and returns it.

    step: the optimizer step whose checkpoint is released (checked against its sha256);
        None: the finished run's model.weights.h5.
    description, protocol: the entry's; by default an existing entry's, else (protocol
        only) the one `config_protocol` gives the run's config. A new entry needs a
        description.
    data_dir: the --data_dir the released train command names.
    """
    model_dir, output_dir = pathlib.Path(model_dir), pathlib.Path(output_dir)
    if output_dir.resolve() == model_dir.resolve():
        raise ValueError(f"Release into another folder than the training directory {model_dir}")
    config = training.read_config(model_dir)
    existing = _existing_entry(output_dir, config)
    description = description or (existing.description if existing else None)
    if not description:
        raise ValueError(f"{output_dir} holds no zoo entry yet: give its description")
    protocol = protocol or (existing.protocol if existing else config_protocol(config))
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; available: {sorted(PROTOCOLS)}")
    if step is None:
        weights, released = _final_weights(model_dir, config), config
    else:
        weights = _checkpoint(model_dir, config, step)
        released = dataclasses.replace(config, episodes=step * config.episodes_per_step)
    model = build_model(config.model, config.model_config)
    training.load_weights(model, weights, config)  # ValueError: not this model's weights
    history = _history_until(model_dir / HISTORY_FILE,
                             released.episodes // config.episodes_per_epoch)
    commands, released = _train_commands(released, output_dir, existing, data_dir)

    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_weights(model, output_dir / training.WEIGHTS_FILE)
    training.write_config(output_dir, released)
    if history is not None:
        write_text_durably(output_dir / HISTORY_FILE, history)
    metadata = {"metadata_version": zoo.METADATA_VERSION, "description": description,
                "protocol": protocol,
                "sha256": {name: zoo.file_sha256(output_dir / name)
                           for name in zoo.VERIFIED_FILES},
                "train_commands": commands}
    if existing and existing.paper is not None:
        metadata["paper"] = existing.paper
    write_text_durably(output_dir / zoo.METADATA_FILE,
                       json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    return zoo.read_entry(output_dir)


def _existing_entry(output_dir, config):
    """The zoo entry output_dir already holds (None: none yet); ValueError when its
    config.json is of another model than `config`'s, or its metadata.json is invalid."""
    if (output_dir / training.CONFIG_FILE).is_file():
        there = training.read_config(output_dir).model
        if there != config.model:
            raise ValueError(f"{output_dir} holds a {there} entry; refusing to replace it "
                             f"with a {config.model} (release into a new folder)")
    if not (output_dir / zoo.METADATA_FILE).is_file():
        return None
    return zoo.read_entry(output_dir)


def _final_weights(model_dir, config):
    """model_dir's model.weights.h5, or FileNotFoundError when the run has not finished
    its episode budget (then the file, if any, is an earlier budget's end)."""
    steps = checkpoints_of(model_dir).steps()
    last = config.steps
    if steps and steps[-1] < last:
        raise FileNotFoundError(f"{model_dir} has not finished: its newest checkpoint is at "
                                f"step {steps[-1]} of {last}; release a step "
                                f"(checkpoints: {listed(steps)})")
    path = model_dir / training.WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} holds no finished run; "
                                f"release a step (checkpoints: {listed(steps)})")
    return path


def _checkpoint(model_dir, config, step):
    """The checkpoint of `step` (`checkpoint_of_step`), refused for a run whose learning rate
    anneals over all its steps (a shorter train command would not give these weights)."""
    last = config.steps
    if 0 < step < last and config.lr_schedule == "linear":
        raise ValueError(f"{model_dir} anneals its learning rate to 0 over all {last} steps: "
                         f"a train command of {step} steps would anneal faster and not give "
                         "these weights; release the finished run")
    return checkpoint_of_step(model_dir, config, step)


def _history_until(path, epochs):
    """The text of the history.csv `path` with its first `epochs` epochs (a resumed run's
    repeated epoch: the last row of it), or None when there is no such file or it is
    empty."""
    columns, rows = history_rows(path) if path.is_file() else ((), {})
    if not columns:
        return None
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[epoch] for epoch in sorted(rows) if epoch < epochs)
    return text.getvalue()


def _train_commands(config, output_dir, existing, data_dir):
    """(the entry's train_commands, `config` with the start they give it).

    Going back along the runs' starts (--init_from, or --embedding_from) from `config`: a
    start in the entry's own folder (the release being replaced) or in an existing command's
    --model_dir ends the walk after those existing commands; a training directory that is
    not a zoo entry is a run of its own, finished (`_final_weights`: the start read its final
    weights), and the walk goes on from its start; anything else (another zoo entry, a
    folder not here) is left as written.

    A walk through a training directory or the entry itself is a chain to run from scratch:
    its runs train into runs/<entry>_<command number>, each starting from the command before
    (its start rewritten to that one's --model_dir); re-releasing such a chain (the same
    commands by `_run_flags`: but for the last one's --episodes) replaces it. Otherwise the
    one run trains into the existing last command's --model_dir (re-releasing), else
    runs/<entry>, else runs/<entry>_<command number>: the first that no earlier command
    writes.
    """
    name = output_dir.resolve().name
    commands = list(existing.train_commands) if existing else []
    written = [_model_dir_of(command) for command in commands]
    runs, visited, earlier, chained = [config], [], [], False
    while start := _start_of(runs[-1])[1]:
        if pathlib.Path(start).resolve() == output_dir.resolve():
            earlier, chained = commands, True
            break
        if start in written:
            earlier = commands[:written.index(start) + 1]
            break
        if not _is_training_directory(start):
            break
        if (where := pathlib.Path(start).resolve()) in visited:
            raise ValueError(f"The runs' starts (--init_from, --embedding_from) go round in a "
                             f"circle through {start}")
        visited.append(where)
        start_config = training.read_config(start)
        _final_weights(pathlib.Path(start), start_config)
        runs.append(start_config)
        chained = True
    runs.reverse()
    if not chained:
        used = written[:len(earlier)]
        model_dir = next(candidate for candidate in (
            *written[-1:], f"runs/{name}", f"runs/{name}_{len(used) + 1}") if candidate not in used)
        return [*earlier, train_command(config, model_dir, data_dir)], config

    def chain_after(before):
        lines, previous = [], _model_dir_of(before[-1]) if before else None
        for run in runs:
            model_dir = f"runs/{name}_{len(before) + len(lines) + 1}"
            if previous:
                run = dataclasses.replace(run, **{_start_of(run)[0]: previous})
            lines.append(train_command(run, model_dir, data_dir))
            previous = model_dir
        return lines, run

    before = len(commands) - len(runs)
    if earlier is commands and before > 0:  # from the entry: is it a release of this chain?
        lines = chain_after(commands[:before])[0]
        if [_run_flags(line) for line in lines] == [
                _run_flags(line) for line in commands[before:]]:
            earlier = commands[:before]
    lines, released = chain_after(earlier)
    return [*earlier, *lines], released


def _start_of(config):
    """(field, value) of the run a config starts from: init_from or embedding_from (they are
    exclusive), else ("init_from", "")."""
    field = "embedding_from" if config.embedding_from else "init_from"
    return field, getattr(config, field)


def _is_training_directory(path):
    path = pathlib.Path(path)
    return ((path / training.CONFIG_FILE).is_file()
            and not (path / zoo.METADATA_FILE).is_file())


def _run_flags(command):
    """The words of a train command that tell its run from another: all but its --episodes (a
    re-release may be at another step) and its flags at TrainConfig's defaults (the commands
    of earlier releases left those out)."""
    defaults = shlex.split(train_command(training.TrainConfig(), model_dir=""))
    return [word for word in shlex.split(command)
            if word not in defaults and not word.startswith("--episodes=")]


def _model_dir_of(command):
    """The --model_dir of a `python tools/train.py ...` line (None: it names none)."""
    return next((word.split("=", 1)[1] for word in shlex.split(command)
                 if word.startswith("--model_dir=")), None)
