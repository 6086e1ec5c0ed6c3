"""`diet-hf prune`: profile a dense model and prune it, per sparsity, with optional scoring before and after."""

import argparse
from pathlib import Path

from .common import (
    EXIT_OK,
    _chat_renderer,
    _check_create_pr,
    _dtype,
    _named_as_flags,
    _options_from_flags,
    _print_task_differences,
    _pushed_as,
    _read_held_out_flags,
)
from .parser import (
    CREATE_PR_HELP,
    DTYPES,
    SHARD_HELP,
    TOKEN_HELP,
    _add_dataclass_flags,
    _add_task_evaluation_flags,
    _device_map,
    _fraction,
    _repo_id,
    _shard_size,
)


def _add_parser(commands, quiet_after: argparse.ArgumentParser) -> None:
    """The `prune` command's flags, on the subparsers `commands`."""
    from ..methods import METHODS
    from ..options import ProfileOptions, PruneOptions
    from ..recipes import DEFAULT_RECIPE, RECIPES
    from ..tasks import PAPER_TASKS, TASKS

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
        "--tasks` reads them, each calibrating on its context and one of its choices, as --calibration-answer "
        "says; or conversations in a messages field, rendered by MODEL's chat template; or .txt, one text per line) "
        "or NAME=DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]] (a Hub dataset id, at a revision and with its config "
        "where it has several, or a save_to_disk directory; default split train, column text; a split may be "
        "sliced: train[:200]), mixed freely",
    )
    _add_dataclass_flags(prune, ProfileOptions)  # every calibration option, with its help text
    prune.add_argument("--data-dir", default=None, help="local data directory (default: $DIET_DATA_DIR, else Hub)")
    prune.add_argument(
        "--scores",
        default=None,
        help="reuse a saved profile, a directory (--save-scores) or a Hub repository (--push-scores-to-hub), or the "
        "one a pruned model was saved with (--include-profile): no profiling pass; a reconstruction reads your own "
        "tasks' texts, saved with it, and draws the registered tasks' examples again",
    )
    prune.add_argument("--scores-revision", default=None, help="branch, tag or commit of --scores on the Hub")
    prune.add_argument("--save-scores", default=None, help="save the profile here for later pruning")
    prune.add_argument(
        "--push-scores-to-hub",
        type=_repo_id,
        default=None,
        metavar="REPO_ID",
        help="also upload the profile, with a card, to this Hub repository (after --save-scores, if given), so that "
        "`prune --scores REPO_ID` prunes from it anywhere with no profiling pass (the texts of your own --tasks go "
        "with it)",
    )
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
        "--dtype",
        choices=DTYPES,
        default="float32",
        help=(
            "dtype to load the dense model in (default: float32; float16 overflows Gemma's activations, Gemma 3 "
            "270M's on ordinary text, and the profile then stops with an error: use bfloat16)"
        ),
    )
    prune.add_argument(
        "--device-map", type=_device_map, default=None, help='e.g. "auto", "cpu" or "cuda:0" (accelerate device map)'
    )
    prune.add_argument("--revision", default=None, help="branch, tag or commit of the dense model on the Hub")
    prune.add_argument(
        "--gguf-file",
        default=None,
        metavar="NAME",
        help="read the dense model from this GGUF file in MODEL (a directory or Hub repository), as transformers' "
        "`from_pretrained(gguf_file=...)` does: its weights dequantized to float, its tokenizer from the file (needs "
        "the gguf package); the pruned model is an ordinary checkpoint",
    )
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
    prune.add_argument("--max-shard-size", type=_shard_size, default=None, metavar="SIZE", help=SHARD_HELP)
    prune.add_argument(
        "--include-profile",
        action="store_true",
        help="save the profile each model was pruned from in its folder diet_profile/ (and upload it with "
        "--push-to-hub), so that `prune MODEL --scores OUTPUT` prunes MODEL again at another sparsity with no "
        "profiling pass; the card says how. It holds the texts of your own --tasks: include it only where they may "
        "be published",
    )
    prune.add_argument(
        "--push-to-hub", type=_repo_id, default=None, metavar="REPO_ID", help="also upload to this Hub repository"
    )
    prune.add_argument(
        "--private",
        action="store_true",
        help="create the Hub repositories (--push-to-hub, --push-scores-to-hub) as private",
    )
    prune.add_argument("--create-pr", action="store_true", help=CREATE_PR_HELP)
    prune.add_argument(
        "--token", default=None, help=TOKEN_HELP.format(use="downloading MODEL and --scores and for the uploads")
    )


def _prepare(args) -> None:
    """Checks the flags and reads your own task data, texts and questions, before any model loads (`ValueError`: a
    usage error)."""
    from ..options import ProfileOptions, PruneOptions
    from ..tasks import load_task_source

    if args.inplace and len(args.sparsity or []) > 1:
        raise ValueError(
            f"`--inplace` consumes the dense model, so it takes one --sparsity; got {len(args.sparsity)}: "
            "prune the others from the saved profile (`--save-scores`, then `--scores`) in runs of their own."
        )
    _check_create_pr(args)
    if args.push_scores_to_hub and args.push_to_hub:
        models = {args.push_to_hub} | {_per_target(args.push_to_hub, s, several=True) for s in args.sparsity or []}
        if args.push_scores_to_hub in models:
            raise ValueError(
                f"`--push-scores-to-hub` {args.push_scores_to_hub} is where --push-to-hub uploads a pruned model; the "
                "profile's card would replace the model's: give the profile a repository of its own."
            )
    if args.scores_revision and not args.scores:
        raise ValueError(
            "`--scores-revision` reads --scores at a revision of its Hub repository; give --scores REPO_ID."
        )
    args.prune_options = _options_from_flags(args, PruneOptions)
    args.profile_options = _options_from_flags(args, ProfileOptions)
    # the user's own task data is read and checked before any model loads
    answer = args.profile_options.calibration_answer  # your questions end in an answer as registered tasks' do
    render_chat = args.render_chat = _chat_renderer(args)  # conversations: the dense model's chat template
    # your questions' prompts in it too, with --calibration-chat-template (the registered tasks' at profiling)
    render_question = None
    if args.profile_options.calibration_chat_template:
        render_chat.check_template("--calibration-chat-template")  # before any model loads
        render_question = render_chat.question
    args.task_data = (
        None
        if args.scores
        else dict(
            load_task_source(
                word, answer=answer, render_chat=render_chat, render_question=render_question, token=args.token
            )
            for word in args.tasks
        )
    )
    _read_held_out_flags(args, render_chat)
    _check_targets(args)
    if args.task_data is not None and args.prune_options.task_weights is not None:
        from ..plan import task_weight_list

        try:  # a misspelt task is a usage error before the model loads, not after profiling
            task_weight_list(args.prune_options.task_weights, list(args.task_data))
        except ValueError as error:
            raise ValueError(_named_as_flags(str(error), ["task_weights"])) from error


def _per_target(name: str, sparsity: float | None, *, several: bool) -> str:
    """--output's or --push-to-hub's name for one of the targets: as given for one, `NAME-20` for 20% of several."""
    return f"{name}-{round(sparsity * 100)}" if several else name


def _check_targets(args) -> None:
    """The pruning targets' own checks (`plan.check_sparsity_targets`), their errors naming the flags."""
    from ..plan import check_sparsity_targets

    names = ("sparsity", "mlp_sparsity", "attention_sparsity")
    for sparsity in args.sparsity or [None]:
        try:
            check_sparsity_targets(sparsity, args.mlp_sparsity, args.attention_sparsity)
        except ValueError as error:
            raise ValueError(_named_as_flags(str(error), names)) from error


def _run_prune(args) -> int:
    """Loads the dense model, profiles it (or reads its scores), prunes it at every target, scores and saves (and
    pushes) each pruned model."""
    from .._io import check_model_location, check_not_a_file, check_output_is_not_input
    from ..evaluation.language_modeling import texts_perplexity_by_source
    from ..hub import push_saved_model

    # named as the command names them, before `from_pretrained`'s own check
    check_model_location(args.model, gguf_file=args.gguf_file, gguf_argument="--gguf-file")
    targets = args.sparsity or [None]
    outputs = [Path(_per_target(args.output, s, several=len(targets) > 1)) for s in targets]
    for output in outputs:  # before profiling, not after
        check_not_a_file(output, "--output")
        check_output_is_not_input(output, "--output", {"model being pruned": args.model})
    if args.save_scores:
        check_not_a_file(args.save_scores, "--save-scores")
    pruner = _load_pruner(args)
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
    _profile(args, pruner)
    scoring = {  # --eval-tasks: the dense model now, before any cut, each pruned model after; the same examples
        "limit": args.eval_limit,
        "half": args.eval_half,
        "exclude_ids": pruner.scores.provenance.get("excluded_eval_ids") or None,
        "data_dir": args.data_dir,
        "return_predictions": True,
        "apply_chat_template": args.eval_apply_chat_template,
        "disable_progress": args.quiet,
    }
    dense_tasks = None
    if args.eval_task_list:
        from ..evaluation import evaluate

        dense_tasks = evaluate(pruner.model, pruner.tokenizer, args.eval_task_list, **scoring)
    for sparsity, output in zip(targets, outputs):
        model = pruner.prune(sparsity=sparsity, **plan_args, disable_progress=args.quiet, inplace=args.inplace)
        repo = None
        if args.push_to_hub:
            repo = _per_target(args.push_to_hub, sparsity, several=len(targets) > 1)
        texts = texts_perplexity_by_source(model, pruner.tokenizer, args.eval_text_data, disable_progress=args.quiet)
        tasks = evaluate(model, pruner.tokenizer, args.eval_task_list, **scoring) if dense_tasks else None
        pruner.save_pretrained(
            output,
            repo_id=repo,
            evaluation=tasks,
            dense_evaluation=dense_tasks,
            text_evaluation=texts,
            dense_text_evaluation=dense_texts,
            max_shard_size=args.max_shard_size,
            save_profile=args.include_profile,
        )
        _print_saved(output, model.config.pruning, texts, dense_texts)
        if tasks:
            _print_task_differences(str(output), "the dense model", tasks, dense_tasks)
        if repo:
            pushed = push_saved_model(output, repo, private=args.private, token=args.token, create_pr=args.create_pr)
            print(f"pushed {output} to {repo} ({_pushed_as(pushed, args.create_pr)})")
        del model  # saved: freed before the next sparsity's surgery (two pruned models at once otherwise)
    return EXIT_OK


def _load_pruner(args):
    """`DietPruner.from_pretrained` with the command's dtype, device map, revision, GGUF file and token."""
    from .. import DietPruner

    kwargs = {"dtype": _dtype(args.dtype)}
    if args.device_map:
        kwargs["device_map"] = args.device_map
    if args.revision:
        kwargs["revision"] = args.revision
    if args.gguf_file:
        kwargs["gguf_file"] = args.gguf_file
    if args.token:
        kwargs["token"] = args.token
    # the tokenizer that rendered your data in the chat template, if one did: not loaded twice (a GGUF file's is a
    # parse of its metadata, 20 s on the 270M)
    tokenizer = args.render_chat.tokenizer
    return DietPruner.from_pretrained(args.model, text_only=args.text_only, tokenizer=tokenizer, **kwargs)


def _profile(args, pruner) -> None:
    """Profiles the calibration data, or reads `--scores` instead; saves the scores where `--save-scores` says."""
    if args.scores:
        # the data: only for a reconstruction / steps > 1
        pruner.load_scores(
            args.scores,
            data_dir=args.data_dir,
            moments_memory_gib=args.moments_memory_gib,
            moments_dtype=args.moments_dtype,
            revision=args.scores_revision,
            token=args.token,
        )
    else:
        pruner.profile(
            tasks=args.task_data, options=args.profile_options, data_dir=args.data_dir, disable_progress=args.quiet
        )
    if args.save_scores:
        pruner.save_scores(args.save_scores)
    if args.push_scores_to_hub:
        pushed = pruner.push_scores_to_hub(args.push_scores_to_hub, private=args.private, token=args.token)
        print(f"pushed the profile to {args.push_scores_to_hub} (commit {pushed})")


def _print_saved(output, record: dict, texts: dict | None, dense_texts: dict | None) -> None:
    """What a saved pruned model is: its parameters and sparsity, and its held-out texts' perplexity ratios."""
    from ..evaluation import paired_bootstrap_perplexity

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
