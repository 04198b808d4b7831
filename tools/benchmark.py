"""Times every zoo model: training step, inference, serving, input pipeline.

`keras-fewshot benchmark` from a clone; its code, flags and examples are in
keras_fewshot/cli/benchmark.py (`python tools/benchmark.py --help` shows them).
"""

from keras_fewshot.cli import run

if __name__ == "__main__":
    run("benchmark")
