"""The `keras-fewshot` command: one sub-command per tool, the code behind tools/*.py.

    keras-fewshot classify --model=protonet_omniglot    # the sample shipped in the package
    keras-fewshot classify --model=protonet_omniglot --support=my_support --query=my_queries
    keras-fewshot train --model=protonet --model_dir=runs/mine --data_dir=omniglot
    keras-fewshot evaluate --model=protonet_omniglot --data_dir=omniglot
    keras-fewshot export --model=protonet_omniglot --output=exported/protonet_omniglot/1
    keras-fewshot release --model_dir=runs/mine --step=400 --output=zoo/mine --description="Mine."
    keras-fewshot plot --log=runs/mine --output=curves.png
    keras-fewshot benchmark --model=protonet_omniglot --data_dir=omniglot
    keras-fewshot <command> --help                     # the command's flags and examples

`python -m keras_fewshot.cli <command> ...` is the same; in a clone, `python tools/<command>.py
...` too. Each command is a module here with `define_flags(flag_values)` and an absl `main`;
only the command that runs defines its flags.
"""

import importlib
import os
import sys

COMMANDS = {
    "train": "train a model on episodes, pairs or sequences (resumes)",
    "evaluate": "accuracy on test episodes with 95% confidence intervals",
    "classify": "classify your images (or the packaged sample) from a support folder",
    "export": "export a model as a SavedModel for TF Serving",
    "release": "release a training run (or one of its checkpoints) as a zoo entry",
    "plot": "pictures of learning curves and sequence evaluations",
    "benchmark": "time training, inference, serving and the input pipeline",
}


def usage(program="keras-fewshot") -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {program} <command> [--flags]   ({program} <command> --help: its flags)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def run(command, argv=None):
    """Runs `command` (a name in COMMANDS) under absl: defines its flags, parses `argv`
    (sys.argv by default), shows its module docstring with --help, calls its main."""
    from absl import app, flags
    module = importlib.import_module(f"{__name__}.{command}")
    module.define_flags(flags.FLAGS)
    sys.modules["__main__"].__doc__ = module.__doc__  # absl's --help shows __main__'s doc
    app.run(module.main, argv=argv)


def main(argv=None):
    """The console entry point: `keras-fewshot <command> [--flags]`."""
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0]) if argv and argv[0] else "keras-fewshot"
    if program in ("__main__.py", "-c"):
        program = "python -m keras_fewshot.cli"
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage(program))
        sys.exit(0 if len(argv) >= 2 else 2)
    command = argv[1]
    if command not in COMMANDS:
        print(f"{program}: unknown command {command!r}\n\n{usage(program)}", file=sys.stderr)
        sys.exit(2)
    run(command, [f"{program} {command}", *argv[2:]])
