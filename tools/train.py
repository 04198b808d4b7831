"""Trains a model on episodes, pairs or sequences; resumes when re-run.

`keras-fewshot train` from a clone; its code, flags and examples are in
keras_fewshot/cli/train.py (`python tools/train.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("train")
