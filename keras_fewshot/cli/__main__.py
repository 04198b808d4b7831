"""`python -m keras_fewshot.cli <command> [--flags]`: the `keras-fewshot` command."""

from keras_fewshot.cli import main

main()
