"""The `diet-hf` argument parser: every command's flags, the option objects' fields as flags, and the argument
types that check a value where it is read."""

import argparse

DTYPES = ("auto", "float32", "bfloat16", "float16")
SHARD_HELP = (
    "largest weight file of the saved model, as in transformers' save_pretrained: bytes or a size such as 2GB "
    "(default: transformers' default)"
)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from error
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _repo_id(text: str) -> str:
    """A Hub repository id, checked before any work (a bad one would otherwise fail only after pruning)."""
    from ..hub import check_repo_id

    try:
        check_repo_id(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a Hub repository id like you/model-name, got {text!r}") from error
    return text


def _shard_size(text: str) -> int | str:
    """`--max-shard-size`: bytes, or a size such as 2GB (transformers' `save_pretrained` units), checked before any
    work (a bad one would otherwise fail only at the save)."""
    from .._checks import check_shard_size

    value = int(text) if text.isdigit() else text
    try:
        check_shard_size("--max-shard-size", value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a number of bytes or a size such as 2GB, got {text!r}") from error
    return value


# accelerate's placement strategies, which transformers' `device_map` takes beside a device
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _device_map(text: str) -> str:
    """`--device-map`: one of accelerate's strategies, or a device this machine has (`cpu`, `cuda`, `cuda:1`, `mps`,
    ...). A device it lacks is a usage error here, not a torch assertion after the command has started."""
    import torch

    if text in DEVICE_MAP_STRATEGIES:
        return text
    expected = f"{', '.join(DEVICE_MAP_STRATEGIES)} or a device such as cpu or cuda:0"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from error
    if device.type == "cpu":
        return text
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        backend = torch.backends.mps
    if backend is None or not callable(getattr(backend, "is_available", None)) or not backend.is_available():
        raise argparse.ArgumentTypeError(
            f"this machine has no {device.type} device (torch {torch.__version__}), got {text!r}"
        )
    count = getattr(backend, "device_count", None)
    if device.index is not None and callable(count) and device.index >= count():
        raise argparse.ArgumentTypeError(f"this machine has {count()} {device.type} device(s), got {text!r}")
    return text


def _pairs(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from error


def _add_dataclass_flags(parser, options_class) -> None:
    """One flag per field of a frozen options dataclass (`PruneOptions`, `HealingConfig`), with its
    `metadata["help"]`, its choices and its default; values are validated by the dataclass itself."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(options_class)
    for option in dataclasses.fields(options_class):
        flag = "--" + option.name.replace("_", "-")
        kind, metadata = hints[option.name], option.metadata
        recipe = metadata.get("recipe")
        default = None if option.default is dataclasses.MISSING else option.default
        # argparse %-formats help strings ("62% of the weights" broke `diet-hf heal --help`)
        help_text = f"{metadata.get('help', '')} (default: {'the recipe' if recipe else default})".replace("%", "%%")
        args = typing.get_args(kind)
        base = next((t for t in args if t is not type(None)), kind)
        if kind is bool or (bool in args):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif metadata.get("cli") == "pairs":
            parser.add_argument(flag, type=_pairs, nargs="+", default=default, metavar="NAME=NUMBER", help=help_text)
        elif typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            parser.add_argument(flag, type=item, nargs="+", default=default, help=help_text)
        else:
            choices = metadata.get("choices")
            parser.add_argument(flag, type=base, choices=choices, default=default, help=help_text)


class _PrintVersion(argparse.Action):
    """`--version`, printed on one line (argparse's own version action wraps it at the terminal's width)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_line())
        parser.exit()


def _version_line() -> str:
    """diet-hf's version and those of the libraries it runs on (what a bug report needs)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("transformers", "torch", "huggingface_hub", "peft"))
    return f"diet-hf {__version__} ({libraries})"


TOKEN_HELP = "Hub token for {use} (default: HF_TOKEN, else the login `hf auth login` saved)"
CREATE_PR_HELP = (
    "with --push-to-hub: open a pull request against the repository's main branch instead of committing to it (a "
    "repository you cannot write to, or a review before publishing), as transformers' push_to_hub(create_pr=True)"
)


OWN_HEADLINE = {"choices": ("acc", "acc_norm"), "default": "acc"}


def _add_task_evaluation_flags(parser: argparse.ArgumentParser, scored: str) -> None:
    """`--eval-tasks` and its options, for `prune` and `heal`; `scored` says which models are scored and where the
    scores go."""
    from ..tasks import HALVES

    parser.add_argument(
        "--eval-tasks",
        nargs="+",
        default=None,
        metavar="TASK",
        help="tasks to score, as `eval --tasks` reads them (registered names, your own multiple-choice questions "
        "as NAME=FILE or NAME=DATASET[@REVISION][,CONFIG][:SPLIT]; not the questions you calibrate or heal on), "
        f"{scored}",
    )
    parser.add_argument("--eval-limit", type=_positive_int, default=None, help="first N examples of each task")
    parser.add_argument(
        "--eval-half", choices=HALVES, default=None, help="score only the dev or the test half of each task"
    )
    parser.add_argument(
        "--eval-own-headline",
        **OWN_HEADLINE,
        help="the headline metric of your own questions in --eval-tasks (as `eval --own-headline`; default acc)",
    )
    parser.add_argument(
        "--eval-apply-chat-template",
        action="store_true",
        help="score --eval-tasks with each prompt in the model's chat template, as `eval --apply-chat-template` "
        "(an instruction-tuned model)",
    )


def _build_parser() -> argparse.ArgumentParser:
    from . import evaluate, export, heal, info, prune  # each command adds its own flags

    parser = argparse.ArgumentParser(prog="diet-hf", description="DIET structured pruning for Gemma models.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log messages")
    parser.add_argument("--version", action=_PrintVersion, help="show diet-hf's and its libraries' versions and exit")
    # `--quiet` is also accepted after the subcommand (`diet-hf prune ... --quiet`); SUPPRESS keeps the top-level value
    quiet_after = argparse.ArgumentParser(add_help=False)
    quiet_after.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or log messages"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{prune,heal,eval,info,export}")
    for command in (prune, heal, evaluate, export, info):  # the order of `diet-hf --help`
        command._add_parser(commands, quiet_after)
    return parser
