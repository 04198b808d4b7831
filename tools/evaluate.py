"""Evaluates a zoo model or a training directory on test episodes.

`keras-fewshot evaluate` from a clone; its code, flags and examples are in
keras_fewshot/cli/evaluate.py (`python tools/evaluate.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("evaluate")
