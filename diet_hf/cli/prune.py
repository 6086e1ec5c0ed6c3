"""`diet-hf prune`: profile a dense model and prune it, per sparsity, with optional scoring before and after."""

from pathlib import Path

from .common import EXIT_OK, _dataclass_values, _dtype, _eval_tasks, _print_task_differences, _text_sources


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
    args.prune_options = PruneOptions(**_dataclass_values(args, PruneOptions))
    args.profile_options = ProfileOptions(**_dataclass_values(args, ProfileOptions))
    # the user's own task data is read and checked before any model loads
    args.task_data = None if args.scores else dict(load_task_source(word) for word in args.tasks)
    args.eval_text_data = _text_sources(args.eval_texts, "--eval-texts")
    args.eval_task_list = _eval_tasks(
        args.eval_tasks or [], args.eval_own_headline, "--eval-tasks", preload=True, data_dir=args.data_dir
    )


def _run_prune(args) -> int:
    from .. import DietPruner
    from .._io import check_model_location, check_output_is_not_input
    from ..evaluation import paired_bootstrap_perplexity
    from ..evaluation.language_modeling import texts_perplexity_by_source
    from ..hub import push_saved_model

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
        from ..evaluation import evaluate

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
