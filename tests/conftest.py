"""Shared fixtures: where the Omniglot data lives, episodes, subprocess runners.

Real Omniglot data is found via $KERAS_FEWSHOT_OMNIGLOT_DIR, else `<repo>/../shared/data/omniglot`;
tests that need it are skipped (with the path in the reason) when it is missing.
"""

import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OMNIGLOT_ENV = "KERAS_FEWSHOT_OMNIGLOT_DIR"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist with `--dist loadgroup` (`-n 2 --dist loadgroup`) the tests of a
    file that use any of its module-scoped fixtures (a training run, an exported model, a
    process started in the background) form one group: one worker runs them, in file order,
    and builds each such fixture once, as a serial run does. The other tests are spread one
    by one. The mark changes nothing in a serial run, and without pytest-xdist none is set."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # a test function's fixtures (pytest's)
        if info and any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.path.name))


def omniglot_path() -> pathlib.Path:
    """$KERAS_FEWSHOT_OMNIGLOT_DIR, else <repo>/../shared/data/omniglot."""
    env = os.environ.get(OMNIGLOT_ENV)
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "omniglot"


@pytest.fixture(scope="session")
def omniglot_dir() -> str:
    """The Omniglot archives' directory as a string (one spelling: load_split caches by it)."""
    path = omniglot_path()
    if not all((path / f"images_{part}.zip").is_file() for part in ("background", "evaluation")):
        pytest.skip(f"Omniglot archives not found in {path} (set {OMNIGLOT_ENV})")
    return str(path)


@pytest.fixture(scope="session")
def character_drawings(omniglot_dir):
    """character_drawings(part, "Alphabet/characterNN", image_size=28) -> {drawer: uint8
    [s, s, 1]}: one character's images read from its archive with zipfile and
    tf.io.decode_png (not the library's reader), at model resolution; drawer = the YY of
    XXXX_YY.png."""
    import zipfile

    import tensorflow as tf

    from keras_fewshot.layers import to_model_pixels

    archives, files = {}, {}  # each archive opened once; its files by character folder

    def read(part, character, image_size=28):
        if part not in archives:
            archives[part] = zipfile.ZipFile(pathlib.Path(omniglot_dir) / f"images_{part}.zip")
            for name in sorted(archives[part].namelist()):
                if name.endswith(".png"):
                    files.setdefault((part, name.split("/", 1)[1].rsplit("/", 1)[0]),
                                     []).append(name)
        names = files[part, character]
        raw = np.stack([tf.io.decode_png(archives[part].read(n), channels=3).numpy()
                        for n in names])
        pixels = to_model_pixels(raw, image_size).numpy()
        return {int(n[:-len(".png")].rsplit("_", 1)[1]): p for n, p in zip(names, pixels)}

    yield read
    for archive in archives.values():
        archive.close()


@pytest.fixture(scope="session")
def vinyals_test(omniglot_dir):
    from keras_fewshot.data import load_split
    return load_split("vinyals", "test", source=omniglot_dir)


@pytest.fixture(scope="session")
def vinyals_test_20(omniglot_dir):
    """The Vinyals test classes at the sequence models' 20x20."""
    from keras_fewshot.data import load_split
    return load_split("vinyals", "test", source=omniglot_dir, image_size=20)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _make_episode(ways, shots, queries, rng, *, image_size=28, channels=1, batch=None):
    """A random-pixel episode following the contract, and its query labels.

    shots: an int (same for every class) or one count per class (uneven shots).
    Support and query are in random order. With `batch`, every array gets a leading [B].
    """
    if batch is not None:
        episodes = [_make_episode(ways, shots, queries, rng, image_size=image_size,
                                  channels=channels) for _ in range(batch)]
        return ({k: np.stack([e[k] for e, _ in episodes]) for k in episodes[0][0]},
                np.stack([q for _, q in episodes]))
    shots = [shots] * ways if np.isscalar(shots) else list(shots)
    support_labels = rng.permutation(np.repeat(np.arange(ways, dtype=np.int32), shots))
    query_labels = rng.permutation(np.repeat(np.arange(ways, dtype=np.int32), queries))
    shape = (image_size, image_size, channels)
    episode = {
        "support_images": rng.integers(0, 256, (len(support_labels), *shape), dtype=np.uint8),
        "support_labels": support_labels,
        "query_images": rng.integers(0, 256, (len(query_labels), *shape), dtype=np.uint8),
    }
    return episode, query_labels


@pytest.fixture(scope="session")
def make_episode():
    """make_episode(ways, shots, queries, rng, image_size=28, channels=1, batch=None).

    shots and queries are per class (N-way K-shot Q-query): ways * queries query images.
    """
    return _make_episode


def _sample_episodes(data, ways, shots, queries, count, seed=0, groups=None):
    """The first `count` episodes of `episode_dataset` over LabelledImages, as numpy."""
    from keras_fewshot.data import episode_dataset
    ds = episode_dataset(data.images, data.labels, ways, shots, queries, groups=groups,
                         seed=seed, num_episodes=count)
    return list(ds.as_numpy_iterator())


@pytest.fixture(scope="session")
def sample_episodes():
    """sample_episodes(data, ways, shots, queries, count, seed=0, groups=None)."""
    return _sample_episodes


def _write_image_folder(root, classes, size=(12, 10), channels=3, seed=0):
    """Writes root/<name>/<i>.png (random pixels) for each {name: count}; returns
    {name: [uint8 [H, W, C] arrays in file order]}."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        folder = pathlib.Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for i in range(count):
            image = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
            (folder / f"{i:03d}.png").write_bytes(tf.io.encode_png(image).numpy())
            written[name].append(image)
    return written


@pytest.fixture(scope="session")
def write_image_folder():
    """write_image_folder(root, {class name: count}, size=(12, 10), channels=3, seed=0)."""
    return _write_image_folder


def _run_python(*args, cwd=None, timeout=300, check=True):
    """Runs `python *args` in a fresh process; returns the CompletedProcess (text output)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd or REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"python {' '.join(map(str, args))} exited {proc.returncode}\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


def _train_config_of(command):
    """The TrainConfig `python tools/train.py <flags>` trains, from its flags alone."""
    import shlex
    from absl import flags
    from keras_fewshot.cli import train as train_command
    words = shlex.split(command)
    assert words[:2] == ["python", "tools/train.py"], command
    flag_values = flags.FlagValues()
    train_command.define_flags(flag_values)
    flag_values(["train", *words[2:]])
    return train_command.config_from_flags(flag_values)


@pytest.fixture(scope="session")
def train_config_of():
    """train_config_of(command) -> the TrainConfig a `python tools/train.py ...` line trains."""
    return _train_config_of


@pytest.fixture(scope="session")
def run_python():
    """run_python(*args, cwd=None, timeout=300, check=True) -> CompletedProcess."""
    return _run_python


def softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="session")
def np_softmax():
    return softmax


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm(x, kernel, recurrent, bias):
    """Keras LSTM (gates i, f, c, o) over x [B, T, D] -> hidden states [B, T, U]."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


@pytest.fixture(scope="session")
def numpy_lstm():
    """numpy_lstm(x [B, T, D], kernel, recurrent_kernel, bias) -> hidden states [B, T, U]."""
    return _lstm


def squared_distances(queries, prototypes):
    """[Q, D], [N, D] -> [Q, N] squared Euclidean distances, in float64."""
    diff = queries.astype(np.float64)[:, None, :] - prototypes.astype(np.float64)[None]
    return (diff ** 2).sum(-1)


def numpy_prototypes(embeddings, labels, ways):
    """[S, D], [S] -> [N, D] class means, in float64."""
    return np.stack([embeddings[labels == k].astype(np.float64).mean(0) for k in range(ways)])


@pytest.fixture(scope="session")
def numpy_protonet():
    """numpy_protonet(support_emb, support_labels, query_emb, ways, distance, cosine_scale)."""
    def logits(support, labels, query, ways, distance="squared_euclidean", cosine_scale=10.0):
        prototypes = numpy_prototypes(support, labels, ways)
        if distance == "cosine":
            q = query / np.linalg.norm(query, axis=-1, keepdims=True)
            p = prototypes / np.linalg.norm(prototypes, axis=-1, keepdims=True)
            return cosine_scale * q @ p.T
        return -squared_distances(query, prototypes)
    return logits
