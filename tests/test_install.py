"""Install anywhere: the wheel, installed into a fresh virtualenv, used from another folder.

The one test here builds the wheel (`pip wheel`, no network: no build isolation, no
dependencies), installs it into a virtualenv that shares this interpreter's site-packages
(so TensorFlow is not installed again) and, from a folder outside the checkout, loads a zoo
model and runs the `keras-fewshot classify` console script on the packaged sample. About
15 s on an idle 2-core machine (building 5 s; two processes that import TensorFlow).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import keras_fewshot
from keras_fewshot import zoo

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ("setup.py", "pyproject.toml", "README.md", "keras_fewshot", "zoo")
LOAD_TIME_FILES = (*zoo.VERIFIED_FILES, zoo.METADATA_FILE)

# Run in the venv, from outside the checkout: where the package and the zoo are, a zoo model's
# logits on a fixed episode, and the refusal of a corrupted copy of it.
IN_THE_VENV = """
import json, os, pathlib, shutil, sys
import numpy as np
import keras_fewshot
from keras_fewshot import zoo
model = keras_fewshot.load("protonet_omniglot")
models = sorted(keras_fewshot.list_models())
rng = np.random.default_rng(0)
episode = {"support_images": rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8),
           "support_labels": np.arange(5, dtype=np.int32),
           "query_images": rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)}
copy = pathlib.Path(sys.argv[1]) / "protonet_omniglot"
shutil.copytree(zoo.get_entry("protonet_omniglot").directory, copy)
weights = copy / "model.weights.h5"
data = bytearray(weights.read_bytes())
data[len(data) // 2] ^= 0xFF
weights.write_bytes(bytes(data))
os.environ[zoo.ZOO_DIR_ENV] = sys.argv[1]
try:
    keras_fewshot.load("protonet_omniglot")
    refusal = None
except ValueError as error:
    refusal = str(error)
print(json.dumps({"package": keras_fewshot.__file__, "zoo": str(zoo.PACKAGED_ZOO),
                  "models": models, "refusal": refusal,
                  "logits": model(episode).numpy().tolist()}))
"""


def run(args, cwd, env, timeout=600):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode}\n--- stdout ---\n"
                    f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


def test_the_wheel_installs_and_serves_outside_the_checkout(tmp_path):
    pytest.importorskip("setuptools", minversion="64",  # the build backend, used in place
                        reason="building the wheel without network needs setuptools >= 64")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", zoo.ZOO_DIR_ENV, "PIP_REQUIRE_VIRTUALENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # build from a copy of the sources, so no build/ or egg-info lands in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", tmp_path / "dist", source], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("keras_fewshot-*.whl")

    # every zoo entry's load-time files are in it, and only those of the zoo
    names = set(zipfile.ZipFile(wheel).namelist())
    released = sorted(d.name for d in (REPO_ROOT / "zoo").iterdir()
                      if (d / zoo.METADATA_FILE).is_file())
    shipped = {n for n in names if n.startswith("keras_fewshot/zoo_data/")}
    assert shipped == {f"keras_fewshot/zoo_data/{name}/{f}" for name in released
                       for f in LOAD_TIME_FILES}
    # and every file of the package: its modules, the Omniglot sample, the class splits
    package_files = {path.relative_to(source).as_posix()
                     for path in (source / "keras_fewshot").rglob("*") if path.is_file()}
    assert package_files - names == set()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv],
        tmp_path, env)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "-q",
         wheel], tmp_path, env)
    site_packages = pathlib.Path(run([python, "-c", "import sysconfig; "
                                      "print(sysconfig.get_paths()['purelib'])"],
                                     tmp_path, env).stdout.strip())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    corrupted = tmp_path / "corrupted_zoo"
    corrupted.mkdir()
    result = json.loads(run([python, "-c", IN_THE_VENV, corrupted], elsewhere,
                            env).stdout.splitlines()[-1])
    package = site_packages.resolve() / "keras_fewshot"
    assert pathlib.Path(result["package"]).resolve() == package / "__init__.py"
    assert pathlib.Path(result["zoo"]).resolve() == package / "zoo_data"
    assert result["models"] == released
    # the packaged weights are the checkout's: the same logits on the same episode
    # (another model's logits differ by order 1; float32 round-off of another thread split
    # by about 1e-6 of their size)
    rng = np.random.default_rng(0)
    episode = {"support_images": rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8),
               "support_labels": np.arange(5, dtype=np.int32),
               "query_images": rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)}
    expected = keras_fewshot.load(REPO_ROOT / "zoo" / "protonet_omniglot")(episode).numpy()
    np.testing.assert_allclose(result["logits"], expected, rtol=0,
                               atol=1e-4 * np.abs(expected).max())
    weights = corrupted / "protonet_omniglot" / "model.weights.h5"
    assert result["refusal"].startswith(f"{weights} has sha256 ")

    # the README's main job through the console script: the packaged sample by default
    proc = run([venv / "bin" / "keras-fewshot", "classify", "--model=protonet_omniglot"],
               elsewhere, env)
    lines = proc.stdout.splitlines()
    sample = site_packages / "keras_fewshot" / "data" / "omniglot_sample" / "query"
    predictions = [line for line in lines if line.startswith(str(sample))]
    assert len(predictions) == 80
    right = sum(line.endswith("  right") for line in predictions)
    assert lines[-1] == f"20-way 1-shot: {right} of 80 queries right ({100 * right / 80:.1f}%)"
    assert right >= 64  # the card: 95% at 20-way 1-shot over 1000 episodes
