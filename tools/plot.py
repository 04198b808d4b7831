"""Pictures of training runs and sequence evaluations, as PNG.

`keras-fewshot plot` from a clone; its code, flags and examples are in
keras_fewshot/cli/plot.py (`python tools/plot.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("plot")
