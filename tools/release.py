"""Releases a training run (finished, or at a checkpoint) as a zoo entry.

`keras-fewshot release` from a clone; its code, flags and examples are in
keras_fewshot/cli/release.py (`python tools/release.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("release")
