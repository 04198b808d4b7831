"""Classifies query images given a support folder (default: the packaged sample).

`keras-fewshot classify` from a clone; its code, flags and examples are in
keras_fewshot/cli/classify.py (`python tools/classify.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("classify")
