"""The `diet-hf` argument parser: every command's flags, the option objects' fields as flags, and the argument
types that check a value where it is read."""

import argparse

DTYPES = ("auto", "float32", "bfloat16", "float16")


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
        help="tasks to score, as `eval --tasks` reads them (registered names, your own multiple-choice questions as "
        f"NAME=FILE or NAME=DATASET[:SPLIT]; not the questions you calibrate or heal on), {scored}",
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


def _build_parser() -> argparse.ArgumentParser:
    from ..constants import ONNX_TASKS
    from ..healing import HealingConfig
    from ..methods import METHODS
    from ..options import ProfileOptions, PruneOptions
    from ..recipes import DEFAULT_RECIPE, RECIPES
    from ..tasks import HALVES, PAPER_TASKS, TASKS

    parser = argparse.ArgumentParser(prog="diet-hf", description="DIET structured pruning for Gemma models.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log messages")
    parser.add_argument("--version", action=_PrintVersion, help="show diet-hf's and its libraries' versions and exit")
    # `--quiet` is also accepted after the subcommand (`diet-hf prune ... --quiet`); SUPPRESS keeps the top-level value
    quiet_after = argparse.ArgumentParser(add_help=False)
    quiet_after.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="as before the command")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{prune,heal,eval,info,export}")

    prune = commands.add_parser(
        "prune", parents=[quiet_after], help="profile a dense Gemma model on tasks and prune it with DIET"
    )
    prune.add_argument(
        "model",
        help="Hub id or local directory of a dense Gemma-2 / Gemma 3 model (image-text Gemma 3: its text decoder)",
    )
    prune.add_argument(
        "--output",
        required=True,
        help="output directory; with several --sparsity values, one directory OUTPUT-<percent> each",
    )
    prune.add_argument(
        "--sparsity",
        type=_fraction,
        nargs="+",
        default=None,
        help="fraction(s) of decoder-block attention + MLP parameters to remove, e.g. 0.2 0.3",
    )
    prune.add_argument(
        "--mlp-sparsity",
        type=float,
        default=None,
        help="fraction in [0, 1) of all layers' MLP intermediate channels to remove, set apart from the heads' "
        "(instead of --sparsity)",
    )
    prune.add_argument(
        "--attention-sparsity",
        type=float,
        default=None,
        help="fraction in [0, 1) of all layers' attention heads to remove, set apart from the MLP's (instead of "
        "--sparsity)",
    )
    prune.add_argument(
        "--tasks",
        nargs="+",
        default=list(PAPER_TASKS),
        metavar="TASK",
        help=f"calibration tasks (default: the paper's seven): registered names ({', '.join(TASKS)}) and your own "
        "data as NAME=FILE (.jsonl with a text field, or questions with context, choices and label, as `eval "
        "--tasks` reads them, each calibrating on its context and gold choice; or .txt, one text per line) or "
        "NAME=DATASET[:SPLIT[:COLUMN]] "
        "(a Hub dataset id or a save_to_disk directory; default split train, column text), mixed freely",
    )
    _add_dataclass_flags(prune, ProfileOptions)  # every calibration option, with its help text
    prune.add_argument("--data-dir", default=None, help="local data directory (default: $DIET_DATA_DIR, else Hub)")
    prune.add_argument(
        "--scores",
        default=None,
        help="reuse a saved profile (no profiling pass; a reconstruction reads your own tasks' texts, saved with it, "
        "and draws the registered tasks' examples again)",
    )
    prune.add_argument("--save-scores", default=None, help="save the profile here for later pruning")
    prune.add_argument(
        "--eval-texts",
        nargs="+",
        default=None,
        metavar="NAME=SOURCE",
        help="your own held-out texts (not the ones you calibrate on; sources as --tasks reads them): their "
        "perplexity, the dense model's and the ratio with its 95%% paired-bootstrap interval go into each saved "
        "model's card and are printed",
    )
    _add_task_evaluation_flags(
        prune,
        "on the dense model after profiling and on each pruned model (the evaluation examples the profile read left "
        "out): both models' scores and the differences with their 95%% paired-bootstrap intervals go into each saved "
        "model's card and are printed",
    )
    prune.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=DEFAULT_RECIPE,
        help=f"named set of the scoring and allocation options below (default {DEFAULT_RECIPE!r}; 'paper' is the "
        "method as published); options given explicitly override it",
    )
    prune.add_argument(
        "--method",
        choices=sorted(METHODS),  # the registry as it is when the command runs: methods registered later count
        default="diet",
        help="DIET (default) or a baseline's scores and allocation in the same pipeline; the card names it",
    )
    _add_dataclass_flags(prune, PruneOptions)  # every pruning option, with its help text
    prune.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="dtype to load the dense model in (default: float32)"
    )
    prune.add_argument("--device-map", default=None, help='e.g. "auto" or "cpu"')
    prune.add_argument("--revision", default=None, help="branch, tag or commit of the dense model on the Hub")
    prune.add_argument(
        "--inplace",
        action="store_true",
        help="build the pruned model out of the dense model's own weights, freeing each dense layer once it is cut "
        "(the pruned model is never held beside the whole dense model; the dense one is consumed); one --sparsity "
        "only",
    )
    prune.add_argument(
        "--text-only",
        action="store_true",
        help="of an image-text Gemma 3 (4B and up): save the pruned text model alone, without the vision tower "
        "(by default it is kept, unchanged)",
    )
    prune.add_argument(
        "--push-to-hub", type=_repo_id, default=None, metavar="REPO_ID", help="also upload to this Hub repository"
    )
    prune.add_argument("--private", action="store_true", help="create the Hub repository as private")
    prune.add_argument("--token", default=None, help=TOKEN_HELP.format(use="downloading MODEL and for --push-to-hub"))

    heal = commands.add_parser(
        "heal",
        parents=[quiet_after],
        help="distill a pruned model from its dense parent (LoRA by default, merged into the weights)",
    )
    heal.add_argument("model", help="local directory (or Hub id) of a pruned model saved by diet-hf")
    heal.add_argument(
        "--teacher", required=True, help="Hub id or local directory of the dense model it was pruned from"
    )
    heal.add_argument("--output", required=True, help="new directory for the healed model (written atomically)")
    heal.add_argument(
        "--data",
        nargs="+",
        default=["wikitext2", "tasks"],
        metavar="SOURCE",
        help="training text: wikitext2 (its validation split), task names (their train split), `tasks` (the "
        "calibration tasks the model was pruned on that have a train split), or your own texts as NAME=FILE (.jsonl "
        "with a text field, or .txt, one text per line) or NAME=DATASET[:SPLIT[:COLUMN]]; each source gets an equal "
        "share",
    )
    heal.add_argument(
        "--eval-texts",
        nargs="+",
        default=None,
        metavar="NAME=SOURCE",
        help="your own held-out texts (not in --data; sources as `prune --tasks` reads them): their perplexity on the "
        "teacher and the unhealed model before training and on the healed model after, with the healed model's "
        "ratios to both and their 95%% paired-bootstrap intervals, is printed and written into the card",
    )
    _add_task_evaluation_flags(
        heal,
        "on the teacher and the unhealed model before training and on the healed model after (the evaluation "
        "examples the pruning profiled left out): the scores and the healed model's differences to both, with their "
        "95%% paired-bootstrap intervals, are printed and written into the card",
    )
    heal.add_argument("--data-dir", default=None, help="directory of the benchmark data (default: DIET_DATA_DIR)")
    heal.add_argument("--work-dir", default=None, help="checkpoints for --resume (default: OUTPUT.healing)")
    heal.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    heal.add_argument(
        "--push-to-hub",
        type=_repo_id,
        default=None,
        metavar="REPO_ID",
        help="also upload the healed model to this Hub repository",
    )
    heal.add_argument("--private", action="store_true", help="create the Hub repository as private")
    heal.add_argument(
        "--token", default=None, help=TOKEN_HELP.format(use="reading MODEL and --teacher and for --push-to-hub")
    )
    heal.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype to load the student and the teacher in (default: float32; bf16 autocast is a separate option)",
    )
    heal.add_argument("--device-map", default=None, help='e.g. "auto" or "cuda:0" (accelerate device map)')
    _add_dataclass_flags(heal, HealingConfig)

    evaluate = commands.add_parser(
        "eval",
        parents=[quiet_after],
        help="zero-shot accuracy (lm-eval-harness scoring) of a causal LM, and the perplexity of your own texts",
    )
    evaluate.add_argument("model", help="Hub id or local directory (dense or pruned)")
    evaluate.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK",
        help=f"tasks to score, of {', '.join(TASKS)}, and your own multiple-choice questions as NAME=FILE (.jsonl, "
        "one question per line: context, the prompt as scored; choices, each scored after it and a space; label, the "
        "gold choice's index; optional id) or NAME=DATASET[:SPLIT] (a Hub dataset id or a save_to_disk directory "
        "with those columns; default split test), scored like the registered tasks (acc and acc_norm; the headline "
        "--own-headline) (default: the paper's seven, or none when --texts or --last-word is given)",
    )
    evaluate.add_argument(
        "--texts",
        nargs="+",
        default=None,
        metavar="NAME=SOURCE",
        help="your own held-out texts, scored by perplexity (each read alone from BOS, as a prompt is read; not the "
        "texts you calibrated on): NAME=FILE (.jsonl with a text field, or .txt, one text per line) or "
        "NAME=DATASET[:SPLIT[:COLUMN]] (a Hub dataset id or a save_to_disk directory; default split train, column "
        "text); with --reference, the perplexity ratio with its 95%% paired-bootstrap interval over the texts",
    )
    evaluate.add_argument(
        "--last-word",
        nargs="+",
        default=None,
        metavar="NAME=SOURCE",
        help="texts scored by LAMBADA's measure: each text's last space-separated word greedily predicted from the "
        "text before it, as lm-eval's lambada_openai scores it (sources as --texts; e.g. "
        "lambada=EleutherAI/lambada_openai:test where the Hub is reachable); accuracy and word perplexity, with "
        "--reference the accuracy difference with its 95%% paired-bootstrap interval over the texts",
    )
    evaluate.add_argument(
        "--limit", type=_positive_int, default=None, help="first N examples of each task (and texts of each source)"
    )
    evaluate.add_argument(
        "--own-headline",
        **OWN_HEADLINE,
        help="the headline metric of your own multiple-choice questions (--tasks NAME=SOURCE), the one averaged and "
        "compared: acc (default), or acc_norm (per character: for choices of very different lengths)",
    )
    evaluate.add_argument(
        "--half",
        choices=HALVES,
        default=None,
        help="score only the dev or the test half of each task (a hash of the example id; choose on dev)",
    )
    evaluate.add_argument(
        "--batch-size", type=_positive_int, default=16, help="scored sequences per forward pass (default: 16)"
    )
    evaluate.add_argument("--data-dir", default=None, help="directory of the benchmark data (default: DIET_DATA_DIR)")
    evaluate.add_argument("--output", default=None, help="write the results as JSON here")
    evaluate.add_argument(
        "--reference",
        default=None,
        metavar="MODEL",
        help="a second model (e.g. the dense parent) scored on the same examples after MODEL; prints MODEL's "
        "difference to it per task and on the average, with 95%% paired-bootstrap intervals",
    )
    evaluate.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="dtype to load the model in (default: float32)"
    )
    evaluate.add_argument(
        "--token", default=None, help=TOKEN_HELP.format(use="reading private models (MODEL and --reference)")
    )
    evaluate.add_argument(
        "--revision",
        default=None,
        help="branch, tag or commit of MODEL on the Hub (the --reference is read at its default)",
    )
    evaluate.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow remote code (not needed for diet-hf models: diet-hf registers them)",
    )

    export = commands.add_parser("export", help="export a pruned model for deployment")
    formats = export.add_subparsers(dest="format", required=True, metavar="{onnx}")
    onnx = formats.add_parser(
        "onnx",
        parents=[quiet_after],
        help='ONNX through optimum (needs `pip install "diet-hf[onnx]"`); ONNX Runtime loads the result with '
        "ORTModelForCausalLM (or the ORTModel class of --task)",
    )
    onnx.add_argument("model", help="local directory of a pruned model saved by diet-hf")
    onnx.add_argument("output", help="new directory for model.onnx, config.json and the tokenizer")
    onnx.add_argument(
        "--task",
        choices=tuple(ONNX_TASKS),
        default=None,
        help="optimum's export task (default: the saved class's: text-classification for a sequence classifier, "
        "token-classification for a token classifier, feature-extraction for a base model, else "
        "text-generation-with-past, with the KV cache as inputs and outputs)",
    )
    onnx.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: optimum's for Gemma)")
    onnx.add_argument("--atol", type=float, default=1e-4, help="validation tolerance against PyTorch")
    onnx.add_argument("--no-validation", action="store_true", help="skip optimum's output check")

    info = commands.add_parser(
        "info", parents=[quiet_after], help="per-layer structure, parameter counts and provenance of a checkpoint"
    )
    info.add_argument("model", help="Hub id or local directory")
    info.add_argument("--revision", default=None, help="branch, tag or commit of the checkpoint on the Hub")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--token", default=None, help=TOKEN_HELP.format(use="reading a private checkpoint"))
    return parser
