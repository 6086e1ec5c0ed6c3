"""The `diet-hf` command: `prune`, `heal`, `eval`, `info`, `export onnx`, `export stock`. Parses arguments, calls the
API, prints results. One module per command (`prepare`: the flags checked and your own data read before any model
loads; `run`: the work), the parser in `parser`, what they share in `common`."""

import contextlib
import logging
import sys

from . import evaluate, export, heal, info, prune
from .common import EXIT_FAILURE, EXIT_USAGE, _quiet
from .parser import _build_parser

__all__ = ["main"]

# command -> (its checks before any model loads, or None; its run)
COMMANDS = {
    "prune": (prune._prepare, prune._run_prune),
    "heal": (heal._prepare, heal._run_heal),
    "eval": (evaluate._prepare, evaluate._run_eval),
    "info": (None, info._run_info),
    "export": (None, export._run_export),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `diet-hf` console script; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors (with its message) and 0 for --help
        return int(exit_.code or 0)
    # diet-hf's own messages at INFO (WARNING with --quiet); the libraries' at WARNING (ERROR with --quiet): their INFO
    # lines (httpx's "HTTP Request: ..." for every Hub call) and import-time notices are nothing the user acts on
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(message)s")
    logging.getLogger("diet_hf").setLevel(logging.WARNING if args.quiet else logging.INFO)
    for library in ("huggingface_hub", "datasets"):  # they print through handlers of their own: not twice
        logging.getLogger(library).propagate = False
    prepare, run = COMMANDS[args.command]
    try:  # the options objects validate the flags they were generated from: a bad value is a usage error
        if prepare is not None:
            prepare(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"diet-hf {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    with _quiet() if args.quiet else contextlib.nullcontext():
        try:
            return run(args)
        except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, ImportError) as error:
            print(f"diet-hf {args.command}: error: {error}", file=sys.stderr)
            return EXIT_FAILURE
