"""The train command's flags come from TrainConfig's definition: one flag per field, with its
type, default and help; the campaign's command parses to its committed config.json."""

import dataclasses
import pathlib
import re
import shlex

import pytest
from absl import app, flags

from keras_fewshot import training
from keras_fewshot.cli import train as train_command
from keras_fewshot.training.config import model_default

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
CAMPAIGN = REPO_ROOT / "campaign"


def parse(args):
    """The parsed flag values of `keras-fewshot train <args>`."""
    flag_values = flags.FlagValues()
    train_command.define_flags(flag_values)
    flag_values(["train", *args])
    return flag_values


def campaign_commands():
    """[(run directory, the `python tools/train.py ...` command campaign/README.md gives)]."""
    readme = CAMPAIGN / "README.md"
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if line.strip().startswith("python tools/train.py"):
                words = shlex.split(line)
                model_dir = next(w.split("=", 1)[1] for w in words
                                 if w.startswith("--model_dir="))
                commands.append((model_dir, words))
    return commands


@pytest.mark.parametrize("model_dir, words", campaign_commands(),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_the_campaign_command_parses_to_its_committed_config(model_dir, words):
    """A later session continues each campaign run with its README command: the flags must
    give exactly the config.json the run was started with (train refuses any other)."""
    assert words[:2] == ["python", "tools/train.py"]
    if not (REPO_ROOT / model_dir / training.CONFIG_FILE).is_file():
        pytest.skip(f"{model_dir} has not started (no config.json committed yet)")
    config = train_command.config_from_flags(parse(words[2:]))
    assert config == training.read_config(REPO_ROOT / model_dir)


def test_the_campaign_readme_has_a_train_command():
    if not (CAMPAIGN / "README.md").is_file():
        pytest.skip("no campaign/ in this checkout")
    model_dirs = [model_dir for model_dir, _ in campaign_commands()]
    assert "campaign/maml_omniglot" in model_dirs, model_dirs


def test_every_config_field_is_a_flag_with_its_default_and_help():
    flag_values = parse(["--model_dir=run"])
    for field in dataclasses.fields(training.TrainConfig):
        flag = flag_values[field.name]
        assert flag.help.endswith(field.metadata["help"]), field.name  # enums: "<a|b>: "
    assert flag_values["optimizer"].parser.enum_values == sorted(training.OPTIMIZERS)
    assert flag_values["dtype_policy"].parser.enum_values == list(training.DTYPE_POLICIES)
    # no flags: the config's defaults (the split and subset decided from the dataset)
    assert train_command.config_from_flags(flag_values) == training.TrainConfig()
    assert train_command.config_from_flags(
        parse(["--model_dir=run", "--dataset=folder:x", "--channels=1"])) == \
        training.TrainConfig(dataset="folder:x", channels=1, split="all", subset="all")


def test_every_field_flag_reaches_the_config():
    args = ["--model_dir=run", "--model=maml", '--model_config={"ways": 5}', "--channels=1",
            "--dataset=folder:pictures", "--split=random:train=0.5,test=0.5", "--ways=5",
            "--shots=1", "--queries=2", "--within_alphabet", "--episodes_per_step=4",
            "--pairs=16", "--instances=3", "--distort", "--episodes=400",
            "--episodes_per_epoch=40", "--optimizer=sgd", "--learning_rate=0.5",
            "--lr_decay_every=8", "--lr_decay_rate=1", "--seed=7", "--init_from=a",
            "--embedding_from=b", "--freeze_embedding", "--dtype_policy=mixed_bfloat16",
            "--rotations", "--inner_steps=2", "--first_order"]
    config = train_command.config_from_flags(parse(args))
    assert config == training.TrainConfig(
        model="maml", model_config={"ways": 5, "train_inner_steps": 2, "first_order": True},
        dataset="folder:pictures", channels=1, split="random:train=0.5,test=0.5",
        subset="train", rotations=True, ways=5, shots=1, queries=2, within_alphabet=True,
        episodes_per_step=4, pairs=16, instances=3, distort=True, episodes=400,
        episodes_per_epoch=40, optimizer="sgd", learning_rate=0.5, lr_decay_every=8,
        lr_decay_rate=1.0, seed=7, init_from="a", embedding_from="b", freeze_embedding=True,
        dtype_policy="mixed_bfloat16")
    assert isinstance(config.channels, int) and isinstance(config.lr_decay_rate, float)


def test_bad_flag_values_are_refused_when_parsed():
    for bad in ("--channels=2", "--optimizer=rmsprop", "--dtype_policy=float16", "--ways=x",
                "--model_config=[1]"):
        with pytest.raises(flags.IllegalFlagValueError):
            parse(["--model_dir=run", bad])
    with pytest.raises(app.UsageError, match="--inner_steps=2 contradicts --model_config"):
        train_command.config_from_flags(
            parse(["--model_dir=run", '--model_config={"train_inner_steps": 1}',
                   "--inner_steps=2"]))


def image_args():
    """Whether the image models take backbone and preprocessor arguments yet."""
    return model_default("protonet", "preprocessor") is not None


needs_image_args = pytest.mark.skipif(not image_args(),
                                      reason="models without backbone/preprocessor arguments")


def model_config_of(*args):
    return train_command.config_from_flags(parse(["--model_dir=run", *args])).model_config


@needs_image_args
def test_backbone_flags_are_written_into_model_config_where_not_the_defaults():
    assert model_config_of("--backbone=resnet12", "--image_size=84", "--preprocessor=rgb") \
        == {"backbone": "resnet12", "image_size": 84, "preprocessor": "rgb"}
    # the defaults leave an Omniglot run's config as it was
    assert model_config_of("--backbone=conv4", "--image_size=28", "--preprocessor=ink") == {}
    assert model_config_of("--dataset=omniglot") == {}
    with pytest.raises(app.UsageError, match="--backbone=resnet12 contradicts"):
        model_config_of('--model_config={"backbone": "conv4"}', "--backbone=resnet12")
    with pytest.raises(flags.IllegalFlagValueError):
        parse(["--model_dir=run", "--backbone=vgg"])
    with pytest.raises(flags.IllegalFlagValueError):
        parse(["--model_dir=run", "--image_size=0"])


@needs_image_args
def test_the_preprocessor_follows_the_data(tmp_path, write_image_folder):
    write_image_folder(tmp_path / "rgb", {"a": 2, "b": 2}, channels=3)
    write_image_folder(tmp_path / "gray", {"a": 2, "b": 2}, channels=1)
    rgb, gray = f"--dataset=folder:{tmp_path / 'rgb'}", f"--dataset=folder:{tmp_path / 'gray'}"
    # the natural-image benchmarks: RGB at their protocol's size (no files read)
    assert model_config_of("--dataset=mini_imagenet:nowhere") == {"image_size": 84,
                                                                   "preprocessor": "rgb"}
    assert model_config_of("--dataset=cifar_fs:nowhere", "--model=maml") == \
        {"image_size": 32, "preprocessor": "rgb"}
    assert model_config_of("--dataset=cub:nowhere", "--preprocessor=ink", "--image_size=28") \
        == {}
    # your folders: as their images' channels, or --channels
    assert model_config_of(rgb) == {"preprocessor": "rgb"}
    assert model_config_of(gray) == {}
    assert model_config_of(gray, "--channels=3") == {"preprocessor": "rgb"}
    assert model_config_of(rgb, "--channels=1") == {}
    assert model_config_of(rgb, '--model_config={"preprocessor": "ink"}') == \
        {"preprocessor": "ink"}  # the user's JSON as given
    # models without images or without the argument get nothing
    assert model_config_of("--model=maml_regressor", "--dataset=sinusoid") == {}
    assert model_config_of("--model=mann", rgb) == {}
