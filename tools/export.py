"""Exports a zoo model or a training directory as a SavedModel for TF Serving.

`keras-fewshot export` from a clone; its code, flags and examples are in
keras_fewshot/cli/export.py (`python tools/export.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("export")
