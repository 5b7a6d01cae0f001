"""The ``gancodec`` command: ``gancodec encode|decode|info|train|export ARGS…``.

A dispatcher only: each command is the ``main(argv)`` of a module that also runs as
``python -m MODULE`` (same arguments, same output, same exit status). The command's module is
imported only once the command is known, so ``gancodec decode`` and ``gancodec info`` import
numpy, Pillow and onnxruntime — never TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

#: command -> (module whose main(argv) runs it, one-line summary, needs TensorFlow)
COMMANDS = {
    "encode": ("runtime.encode", "compress images into latent.bin files (without TensorFlow: the base encoder)",
               False),
    "decode": ("runtime.decode", "decode latent.bin files to PNG (onnxruntime only)", False),
    "info": ("runtime.info", "show a latent.bin's header fields and model", False),
    "train": ("training.train", "train a model on a data set", True),
    "export": ("export.onnx", "export a training run as a model bundle", True),
}
TF_EXTRA = "pip install 'gancodec[train]'"


def version() -> str:
    from runtime import __version__

    return __version__


def parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    table = "\n".join(f"  {name.ljust(width)}  {summary}" + (" (needs the [train] extra)" if tf else "")
                      for name, (_, summary, tf) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="gancodec", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A learned image codec for small images of a known kind.",
        epilog=f"commands:\n{table}\n\n'gancodec COMMAND --help' shows a command's options.")
    p.add_argument("--version", action="version", version=f"gancodec {version()}")
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:  # the command's own parser sees everything after it
        name, rest = argv[0], argv[1:]
    else:  # --help, --version, or a usage error (exit 2)
        a = parser().parse_args(argv)
        name, rest = a.command, a.args
    module, _, needs_tf = COMMANDS[name]
    if needs_tf and not {"-h", "--help"} & set(rest) and importlib.util.find_spec("tensorflow") is None:
        print(f"error: gancodec {name} needs TensorFlow, which the base install leaves out: {TF_EXTRA}",
              file=sys.stderr)
        return 2
    return importlib.import_module(module).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
