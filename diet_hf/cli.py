"""The `diet-hf` command: `prune`, `heal`, `eval`, `info`, `export onnx`. Parses arguments, calls the API, prints
results."""

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
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
    from .hub import check_repo_id

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


def _dataclass_values(args, options_class) -> dict:
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(options_class)}
    for name, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], tuple):  # NAME=NUMBER pairs
            values[name] = dict(value)
    return values


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

    from . import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("transformers", "torch", "huggingface_hub", "peft"))
    return f"diet-hf {__version__} ({libraries})"


TOKEN_HELP = "Hub token for {use} (default: HF_TOKEN, else the login `hf auth login` saved)"


# the headline metric of your own multiple-choice questions (`eval --own-headline`, `--eval-own-headline`)
OWN_HEADLINE = {"choices": ("acc", "acc_norm"), "default": "acc"}


def _add_task_evaluation_flags(parser: argparse.ArgumentParser, scored: str) -> None:
    """`--eval-tasks` and its options, for `prune` and `heal`; `scored` says which models are scored and where the
    scores go."""
    from .tasks import HALVES

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
    from .constants import ONNX_TASKS
    from .healing import HealingConfig
    from .methods import METHODS
    from .options import ProfileOptions, PruneOptions
    from .recipes import DEFAULT_RECIPE, RECIPES
    from .tasks import HALVES, PAPER_TASKS, TASKS

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


def _dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _quiet() -> None:
    os.environ["TQDM_DISABLE"] = "1"
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    # deprecation notices inside the libraries (e.g. PEFT reading transformers' `is_gradient_checkpointing`): nothing
    # the user of the command can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)(\.|$)")


def _run_prune(args) -> int:
    from . import DietPruner
    from ._io import check_model_location, check_output_is_not_input
    from .evaluation import paired_bootstrap_perplexity
    from .evaluation.language_modeling import texts_perplexity_by_source
    from .hub import push_saved_model

    check_model_location(args.model)  # named as the command names it, before `from_pretrained`'s own check
    if args.sparsity is None and args.mlp_sparsity is None and args.attention_sparsity is None:
        raise ValueError("give `--sparsity` (or `--mlp-sparsity` / `--attention-sparsity`).")
    targets = args.sparsity or [None]
    outputs = [Path(args.output) if len(targets) == 1 else Path(f"{args.output}-{round(s * 100)}") for s in targets]
    for output in outputs:  # before profiling, not after
        check_output_is_not_input(output, "--output", {"model being pruned": args.model})
    kwargs = {"dtype": _dtype(args.dtype)}
    if args.device_map:
        kwargs["device_map"] = args.device_map
    if args.revision:
        kwargs["revision"] = args.revision
    if args.token:
        kwargs["token"] = args.token
    pruner = DietPruner.from_pretrained(args.model, text_only=args.text_only, **kwargs)
    # what every target's plan is built with, besides the target
    plan_args = {
        "mlp_sparsity": args.mlp_sparsity,
        "attention_sparsity": args.attention_sparsity,
        "recipe": args.recipe,
        "method": args.method,
        "options": args.prune_options,
    }
    for sparsity in targets:  # before profiling, not after the first sparsities are saved
        pruner.check_targets(sparsity=sparsity, **plan_args)
    dense_texts = texts_perplexity_by_source(  # before any cut
        pruner.model, pruner.tokenizer, args.eval_text_data, disable_progress=args.quiet
    )
    if args.scores:
        # the data: only for a reconstruction / steps > 1
        pruner.load_scores(
            args.scores,
            data_dir=args.data_dir,
            moments_memory_gib=args.moments_memory_gib,
            moments_dtype=args.moments_dtype,
        )
    else:
        pruner.profile(
            tasks=args.task_data, options=args.profile_options, data_dir=args.data_dir, disable_progress=args.quiet
        )
    if args.save_scores:
        pruner.save_scores(args.save_scores)
    scoring = {  # --eval-tasks: the dense model now, before any cut, each pruned model after; the same examples
        "limit": args.eval_limit,
        "half": args.eval_half,
        "exclude_ids": pruner.scores.provenance.get("excluded_eval_ids") or None,
        "data_dir": args.data_dir,
        "return_predictions": True,
        "disable_progress": args.quiet,
    }
    dense_tasks = None
    if args.eval_task_list:
        from .evaluation import evaluate

        dense_tasks = evaluate(pruner.model, pruner.tokenizer, args.eval_task_list, **scoring)
    for sparsity, output in zip(targets, outputs):
        model = pruner.prune(sparsity=sparsity, **plan_args, disable_progress=args.quiet, inplace=args.inplace)
        repo = None
        if args.push_to_hub:
            repo = args.push_to_hub if len(targets) == 1 else f"{args.push_to_hub}-{round(sparsity * 100)}"
        texts = texts_perplexity_by_source(model, pruner.tokenizer, args.eval_text_data, disable_progress=args.quiet)
        tasks = evaluate(model, pruner.tokenizer, args.eval_task_list, **scoring) if dense_tasks else None
        pruner.save_pretrained(
            output,
            repo_id=repo,
            evaluation=tasks,
            dense_evaluation=dense_tasks,
            text_evaluation=texts,
            dense_text_evaluation=dense_texts,
        )
        record = model.config.pruning
        print(
            f"saved {output}: {record['total_parameters']['dense']:,} -> {record['total_parameters']['pruned']:,} "
            f"parameters, decoder-block sparsity {record['achieved_block_sparsity']:.2%}"
        )
        for name, result in (texts or {}).items():
            ratio = paired_bootstrap_perplexity(result, dense_texts[name])
            print(
                f"  {name}: perplexity {result['perplexity']:.3f} against the dense model's "
                f"{dense_texts[name]['perplexity']:.3f}, ratio {ratio['ratio']:.3f} [{ratio['ci95'][0]:.3f}, "
                f"{ratio['ci95'][1]:.3f}] ({result['texts']} held-out texts)"
            )
        if tasks:
            _print_task_differences(str(output), "the dense model", tasks, dense_tasks)
        if repo:
            commit = push_saved_model(output, repo, private=args.private, token=args.token)
            print(f"pushed {output} to {repo} (commit {commit})")
        del model  # saved: freed before the next sparsity's surgery (two pruned models at once otherwise)
    return EXIT_OK


def _run_heal(args) -> int:

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ._io import check_model_location, check_output_is_not_input, check_tokenizer_files
    from .healing import check_parent, heal, healing_texts
    from .hub import push_saved_model, register_auto_classes
    from .loading import is_image_text, load_causal_lm, load_processor, text_config
    from .plan import PruningPlan
    from .tasks import TASKS

    config = args.healing_config
    check_model_location(args.model)
    check_model_location(args.teacher, "--teacher")
    check_output_is_not_input(args.output, "--output", {"pruned model": args.model, "teacher": args.teacher})
    check_tokenizer_files(args.model)
    register_auto_classes()
    load = {"dtype": _dtype(args.dtype), "device_map": args.device_map, "token": args.token}
    student = AutoModelForCausalLM.from_pretrained(args.model, **load)
    if not type(student).__name__.startswith("Pruned"):
        raise ValueError(
            f"`model` must be a pruned model saved by diet-hf; {args.model} is a {type(student).__name__}."
        )
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True, token=args.token)
    # a pruned image-text model's processor goes beside the healed one
    image_text = is_image_text(student.config)
    processor = load_processor(args.model, trust_remote_code=True, token=args.token) if image_text else None
    # the teacher is loaded by `heal` for its one pass over the data and freed before training
    teacher_config = AutoConfig.from_pretrained(args.teacher, token=args.token)
    check_parent(text_config(student.config), text_config(teacher_config))  # before any data
    calibration = (student.config.pruning or {}).get("tasks") or []
    own = [t for t in calibration if t not in TASKS and t not in args.own_data]
    if "tasks" in args.data and own:
        logger.warning(
            "`--data tasks` takes the registered calibration tasks only; the model was also calibrated on your own "
            "data (%s), which is not saved with it: pass it as --data NAME=FILE to heal on it too.",
            ", ".join(own),
        )
    data, splits = {}, {}
    for source in args.data:
        if "=" in source:  # your own texts, read before any model loaded
            name = source.split("=", 1)[0]
            data[name], splits[name] = args.own_data[name]
            continue
        # `tasks`: the model's calibration tasks that are registered and have a train split here; others are skipped
        for name in [t for t in calibration if t in TASKS] if source == "tasks" else [source]:
            if name in data:
                continue
            try:
                texts, split = healing_texts([name], data_dir=args.data_dir)
            except ValueError:
                if source == "tasks":
                    continue
                raise
            data[name], splits[name] = texts, split[name]
    if Path(args.model, "diet_pruning.json").is_file():
        student.diet_plan = PruningPlan.from_pretrained(args.model)
    healed = heal(
        student,
        args.teacher if config.top_k is not None else load_causal_lm(args.teacher, **load),
        tokenizer,
        data,
        config=config,
        output_dir=args.output,
        work_dir=args.work_dir,
        resume=args.resume,
        data_record={"sources": list(data), "splits": splits},
        repo_id=args.push_to_hub,
        disable_progress=args.quiet,
        processor=processor,
        eval_texts=args.eval_text_data or None,
        eval_tasks=args.eval_task_list or None,
        eval_options={"limit": args.eval_limit, "half": args.eval_half, "data_dir": args.data_dir}
        if args.eval_task_list
        else None,
        token=args.token,
    )
    record = healed.config.pruning["healing"]
    print(
        f"healed {args.model} -> {args.output}: {record['steps']} steps, {record['tokens_seen']:,} tokens, validation "
        f"KL {record['validation_kl_before']:.4f} -> {record['validation_kl_after']:.4f}"
        + (" (rolled back: healing did not help)" if record["rolled_back"] else "")
    )
    for name, row in (record.get("held_out_texts") or {}).items():
        ratio, low, high = row["healed_over_unhealed"]["ratio"], *row["healed_over_unhealed"]["ci95"]
        print(
            f"  {name}: perplexity {row['unhealed']:.3f} -> {row['healed']:.3f} (teacher {row['teacher']:.3f}), "
            f"healed / unhealed {ratio:.3f} [{low:.3f}, {high:.3f}] ({row['texts']} held-out texts)"
        )
    for task, row in (record.get("held_out_tasks") or {}).items():
        difference, (low, high) = row["healed_minus_unhealed"]["difference"], row["healed_minus_unhealed"]["ci95"]
        scored = f"{row['metric']}, {row['examples']} examples" if task != "average" else "headline average"
        print(
            f"  {task}: {row['unhealed']:.4f} -> {row['healed']:.4f} (teacher {row['teacher']:.4f}; {scored}), "
            f"healed - unhealed {difference:+.4f} [{low:+.4f}, {high:+.4f}]"
        )
    if args.push_to_hub:
        commit = push_saved_model(args.output, args.push_to_hub, private=args.private, token=args.token)
        print(f"pushed {args.output} to {args.push_to_hub} (commit {commit})")
    return EXIT_OK


def _run_eval(args) -> int:
    from transformers import AutoConfig, AutoTokenizer

    from ._io import atomic_write_text, check_model_location, check_tokenizer_files
    from .evaluation import evaluate, last_word_accuracy
    from .evaluation.language_modeling import texts_perplexity_by_source
    from .loading import load_causal_lm

    names = [args.model] + ([args.reference] if args.reference else [])
    for name, argument in zip(names, ("model", "--reference")):  # both checked before either is scored
        check_model_location(name, argument)
        check_tokenizer_files(name, argument)
    # --revision is MODEL's; the reference is read at its default revision
    loading = {name: {"trust_remote_code": args.trust_remote_code, "token": args.token} for name in names}
    loading[args.model]["revision"] = args.revision
    # evaluation examples a pruned model's profile read (its provenance records them) are scored for neither model
    excluded: dict[str, set] = {}
    for name in names:
        recorded = (getattr(AutoConfig.from_pretrained(name, **loading[name]), "pruning", None) or {}).get(
            "calibration_eval_ids"
        )
        for task, ids in (recorded or {}).items():
            excluded.setdefault(task, set()).update(ids)
    task_names = {task if isinstance(task, str) else task.name for task in args.tasks}
    excluded = {task: sorted(ids) for task, ids in excluded.items() if task in task_names}
    if excluded and not args.quiet:
        counts = ", ".join(f"{len(ids)} of {task}" for task, ids in excluded.items())
        print(f"left out the evaluation examples the pruning profiled ({counts}; recorded in its config)")
    results, text_results, word_results = [], [], []
    for name in names:  # one model in memory at a time
        model = load_causal_lm(name, dtype=_dtype(args.dtype), **loading[name]).eval()  # image-text: its text model
        tokenizer = AutoTokenizer.from_pretrained(name, **loading[name])
        if args.tasks:
            results.append(
                evaluate(
                    model,
                    tokenizer,
                    args.tasks,
                    limit=args.limit,
                    half=args.half,
                    batch_size=args.batch_size,
                    exclude_ids=excluded or None,
                    data_dir=args.data_dir,
                    return_predictions=args.reference is not None,
                    disable_progress=args.quiet,
                )
            )
        text_results.append(
            texts_perplexity_by_source(
                model, tokenizer, args.text_data, batch_size=args.batch_size, disable_progress=args.quiet
            )
        )
        word_results.append(
            {
                source: last_word_accuracy(
                    model, tokenizer, texts, batch_size=args.batch_size, disable_progress=args.quiet
                )
                for source, texts in args.last_word_data.items()
            }
        )
        del model
    record = {"model": args.model}
    if args.tasks:
        record.update(_print_task_results(args, results))
    if args.text_data:
        record.update(_print_text_results(args, text_results))
    if args.last_word_data:
        record.update(_print_last_word_results(args, word_results))
    if args.output:
        atomic_write_text(args.output, json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.output}")
    return EXIT_OK


def _eval_tasks(words: list[str], headline_metric: str, flag: str, *, preload: bool = False, data_dir=None) -> list:
    """The tasks of `diet-hf eval --tasks` / `prune` and `heal --eval-tasks`: registered names as they are, your own
    multiple-choice questions (`NAME=SOURCE`, read and checked now) as `Task`s with `headline_metric`. With
    `preload` (prune, heal: the scores come after minutes of work) the registered tasks' data is loaded now too (from
    `data_dir`, else as `evaluate` would), so missing data fails before the model loads."""
    from .tasks import TASKS, evaluation_examples, load_multiple_choice_source

    tasks = []
    for word in words:
        if "=" in word:
            tasks.append(load_multiple_choice_source(word, flag=flag, headline_metric=headline_metric))
        elif word in TASKS:
            tasks.append(word)
        else:
            raise ValueError(
                f"`{flag}`: {word!r} is not a registered task ({', '.join(TASKS)}); give your own multiple-choice "
                "questions as NAME=FILE.jsonl or NAME=DATASET[:SPLIT]."
            )
    names = [task if isinstance(task, str) else task.name for task in tasks]
    if len(set(names)) < len(names):
        raise ValueError(f"`{flag}`: a task is named twice: {' '.join(names)}.")
    if preload:
        for task in tasks:
            if isinstance(task, str):
                evaluation_examples(task, data_dir=data_dir)
    return tasks


def _print_task_differences(model_name: str, reference_name: str, result: dict, reference: dict) -> dict:
    """Prints `result` minus `reference` per task (its headline metric) and on the average, with the paired 95%
    intervals (both made with `return_predictions=True`); returns the comparison."""
    from .evaluation import compare_evaluations

    comparison = compare_evaluations(result, reference)
    print(f"\n{model_name} minus {reference_name} (the same examples; paired bootstrap, 2000 resamples):")
    print(f"{'task':16}{'reference':>10}{'difference':>12}  95% interval")
    for task, row in comparison.items():
        scores = reference["results"].get(task)
        score = reference["average"] if task == "average" else scores[scores["headline_metric"]]
        low, high = row["ci95"]
        print(f"{task:16}{score:>10.4f}{row['difference']:>+12.4f}  [{low:+.4f}, {high:+.4f}]")
    return comparison


def _print_text_results(args, text_results: list[dict]) -> dict:
    """Prints the texts' perplexity (and with `--reference` the ratio and its interval); returns the JSON record's
    entries: per source the summary without the per-text values."""
    from .evaluation import paired_bootstrap_perplexity

    def summary(results):
        return {source: {k: v for k, v in r.items() if k not in ("nll", "counts")} for source, r in results.items()}

    print(f"\n{'texts':16}{'n':>7}{'tokens':>10}{'perplexity':>12}  (each text read alone from BOS)")
    for source, row in text_results[0].items():
        cut = f"  ({row['truncated']} cut at the context length)" if row["truncated"] else ""
        print(f"{source:16}{row['texts']:>7}{row['tokens']:>10}{row['perplexity']:>12.3f}{cut}")
    record = {"texts": summary(text_results[0])}
    if args.reference:
        print(f"\n{args.model} over {args.reference} (the same texts; paired bootstrap over texts, 2000 resamples):")
        print(f"{'texts':16}{'reference':>10}{'ratio':>9}  95% interval")
        ratios = {}
        for source, row in text_results[0].items():
            reference = text_results[1][source]
            ratios[source] = paired_bootstrap_perplexity(row, reference)
            low, high = ratios[source]["ci95"]
            print(
                f"{source:16}{reference['perplexity']:>10.3f}{ratios[source]['ratio']:>9.3f}  [{low:.3f}, {high:.3f}]"
            )
        record["reference_texts"] = summary(text_results[1])
        record["texts_ratio"] = ratios
    return record


def _print_last_word_results(args, word_results: list[dict]) -> dict:
    """Prints the last-word accuracy per source (and with `--reference` the difference and its interval); returns the
    JSON record's entries: per source the summary without the per-text values."""
    from .evaluation import paired_bootstrap

    def summary(results):
        return {s: {k: v for k, v in r.items() if k not in ("correct", "loglikelihood")} for s, r in results.items()}

    print(f"\n{'last word':16}{'n':>7}{'accuracy':>10}{'word ppl':>12}  (LAMBADA's measure)")
    for source, row in word_results[0].items():
        print(f"{source:16}{row['texts']:>7}{row['accuracy']:>10.3f}{row['perplexity']:>12.3f}")
    record = {"last_word": summary(word_results[0])}
    if args.reference:
        print(f"\n{args.model} minus {args.reference} (the same texts; paired bootstrap over texts, 2000 resamples):")
        print(f"{'last word':16}{'reference':>10}{'difference':>12}  95% interval")
        differences = {}
        for source, row in word_results[0].items():
            reference = word_results[1][source]
            differences[source] = paired_bootstrap(row["correct"], reference["correct"])
            low, high = differences[source]["ci95"]
            print(
                f"{source:16}{reference['accuracy']:>10.3f}{differences[source]['difference']:>+12.3f}  "
                f"[{low:+.3f}, {high:+.3f}]"
            )
        record["reference_last_word"] = summary(word_results[1])
        record["last_word_difference"] = differences
    return record


def _print_task_results(args, results: list[dict]) -> dict:
    """Prints the tasks' accuracy (and with `--reference` the differences); returns the JSON record's entries."""
    result = results[0]
    print(f"{'task':16}{'n':>7}{'acc':>8}{'acc_norm':>10}  headline")
    for task, row in result["results"].items():
        norm = "-" if row["acc_norm"] is None else f"{row['acc_norm']:.4f}"
        print(f"{task:16}{row['num_scored']:>7}{row['acc']:>8.4f}{norm:>10}  {row['headline_metric']}")
    print(f"{'average':16}{'':>7}{result['average']:>8.4f}  (of each task's headline metric)")
    record = dict(result)
    if args.reference:
        reference = results[1]
        comparison = _print_task_differences(args.model, args.reference, result, reference)
        for entry in (result, reference):
            entry.pop("predictions")
        record = {**result, "reference": {"model": args.reference, **reference}, "difference": comparison}
    return record


def _run_export(args) -> int:
    from .info import check_pruned_checkpoint

    check_pruned_checkpoint(args.model)  # clear errors before importing optimum (slow, and an optional extra)
    from .constants import ONNX_TASKS
    from .onnx import default_task, export_onnx

    task = args.task or default_task(args.model)
    output = export_onnx(
        args.model, args.output, task=task, opset=args.opset, validate=not args.no_validation, atol=args.atol
    )
    loader = ONNX_TASKS[task]
    print(f"exported {args.model} ({task}) to {output / 'model.onnx'}; load it with {loader}.from_pretrained")
    return EXIT_OK


def _run_info(args) -> int:
    from .info import describe_checkpoint

    description = describe_checkpoint(args.model, revision=args.revision, token=args.token)
    if args.json:
        print(json.dumps(description, indent=1))
        return EXIT_OK
    fmt = f", format {description['format']}" if description.get("format") else ""
    print(f"{args.model}: model_type {description['model_type']}{fmt}, {description['num_hidden_layers']} layers")
    if description.get("text_decoder_of"):
        print(f"(the text decoder of this {description['text_decoder_of']}; its vision tower is not counted)")
    print(f"{'layer':>5}  {'type':18}{'mlp width':>10}{'heads':>7}{'kv heads':>9}")
    for row in description["layers"]:
        print(
            f"{row['layer']:>5}  {row['type']:18}{row['intermediate_size']:>10}{row['num_attention_heads']:>7}"
            f"{row['num_key_value_heads']:>9}"
        )
    params = description["parameters"]
    print(
        f"parameters: {params['total']:,} total, {params['decoder_blocks']:,} in decoder-block attention + MLP "
        f"(base model {params['base_total']:,} / {params['base_decoder_blocks']:,})"
    )
    if description.get("pruning"):
        print("provenance (`--json` prints all of it):")
        print("\n".join(_provenance_lines(description["pruning"])))
    return EXIT_OK


def _provenance_lines(record: dict, indent: int = 2, width: int = 100) -> list[str]:
    """`config.pruning` for reading: one key per line, sorted; a dict too long for one line opens its own indented
    block; a long list shows its length and first items (the calibration ids, the loss curve)."""
    lines = []
    for key in sorted(record):
        value = record[key]
        text = json.dumps(value, sort_keys=True)
        if isinstance(value, dict) and value and len(text) > width:
            lines += [f"{' ' * indent}{key}:", *_provenance_lines(value, indent + 2, width)]
            continue
        if isinstance(value, list) and len(text) > width:
            shown = ", ".join(json.dumps(item, sort_keys=True) for item in value[:3])
            text = f"[{len(value)} items: {shown}, ...]"
        lines.append(f"{' ' * indent}{key}: {text if len(text) <= width else text[: width - 3] + '...'}")
    return lines


def _text_sources(words: list[str] | None, flag: str) -> dict[str, list[str]]:
    """`NAME=SOURCE` words of `flag` read as `prune --tasks` reads them (`ValueError` naming the flag), each name
    once."""
    from .tasks import load_task_source

    sources = [load_task_source(word, flag=flag, registered=False) for word in words or []]
    names = [name for name, _ in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"`{flag}`: each NAME once; repeated: {', '.join(repeated)}.")
    return dict(sources)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `diet-hf` console script; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors (with its message) and 0 for --help
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:  # the options objects validate the flags they were generated from: a bad value is a usage error
        if args.command == "prune":
            from .options import ProfileOptions, PruneOptions
            from .tasks import load_task_source

            if args.inplace and len(args.sparsity or []) > 1:
                raise ValueError(
                    f"`--inplace` consumes the dense model, so it takes one --sparsity; got {len(args.sparsity)}: "
                    "prune the others from the saved profile (`--save-scores`, then `--scores`) in runs of their own."
                )
            args.prune_options = PruneOptions(**_dataclass_values(args, PruneOptions))
            args.profile_options = ProfileOptions(**_dataclass_values(args, ProfileOptions))
            # the user's own task data is read and checked before any model loads
            args.task_data = None if args.scores else dict(load_task_source(word) for word in args.tasks)
            args.eval_text_data = _text_sources(args.eval_texts, "--eval-texts")
            args.eval_task_list = _eval_tasks(
                args.eval_tasks or [], args.eval_own_headline, "--eval-tasks", preload=True, data_dir=args.data_dir
            )
        elif args.command == "eval":
            from .evaluation.language_modeling import split_last_words
            from .tasks import PAPER_TASKS

            # the user's texts are read and checked before any model loads
            args.text_data = {
                name: texts[: args.limit] for name, texts in _text_sources(args.texts, "--texts").items()
            }
            args.last_word_data = {
                name: texts[: args.limit] for name, texts in _text_sources(args.last_word, "--last-word").items()
            }
            for name, texts in args.last_word_data.items():
                split_last_words(texts, f"`--last-word` {name}")
            if args.tasks is None:
                args.tasks = [] if args.text_data or args.last_word_data else list(PAPER_TASKS)
            # your own questions are read and checked before any model loads
            args.tasks = _eval_tasks(args.tasks, args.own_headline, "--tasks")
        elif args.command == "heal":
            from .healing import HealingConfig
            from .tasks import TASKS, load_task_source

            # the data is named and your own texts read before any model loads
            args.own_data = {}
            for word in args.data:
                if "=" in word:
                    name, texts = load_task_source(word, flag="--data", registered=False)
                    if name in ("wikitext2", "tasks", *TASKS) or name in args.own_data:
                        raise ValueError(f"`--data` {name}: the name is taken; give your texts another name.")
                    args.own_data[name] = (texts, word.split("=", 1)[1])
                elif word not in ("wikitext2", "tasks", *TASKS):
                    raise ValueError(
                        f"`--data`: {word!r} is not wikitext2, tasks, a registered task ({', '.join(TASKS)}) or "
                        "NAME=SOURCE (your own texts)."
                    )
            if "wikitext2" in args.data and args.data_dir is None and not os.environ.get("DIET_DATA_DIR"):
                raise ValueError(
                    "`--data` wikitext2 is read from a data directory: pass --data-dir or set DIET_DATA_DIR."
                )
            args.eval_text_data = _text_sources(args.eval_texts, "--eval-texts")
            args.eval_task_list = _eval_tasks(
                args.eval_tasks or [], args.eval_own_headline, "--eval-tasks", preload=True, data_dir=args.data_dir
            )
            values = _dataclass_values(args, HealingConfig)
            values["top_k"] = values["top_k"] or None  # --top-k 0: the full vocabulary
            args.healing_config = HealingConfig(**values)
    except (ValueError, FileNotFoundError) as error:
        print(f"diet-hf {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.quiet:
        _quiet()
    runner = {"prune": _run_prune, "heal": _run_heal, "eval": _run_eval, "info": _run_info, "export": _run_export}[
        args.command
    ]
    try:
        return runner(args)
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, ImportError) as error:
        print(f"diet-hf {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
