"""`diet-hf eval`: accuracy on tasks, perplexity and last-word accuracy on your own texts, against a reference."""

import argparse
import json

from .common import EXIT_OK, _chat_renderer, _ChatRenderer, _dtype, _eval_tasks, _print_task_differences, _text_sources
from .parser import DTYPES, OWN_HEADLINE, TOKEN_HELP, _device_map, _positive_int


def _add_parser(commands, quiet_after: argparse.ArgumentParser) -> None:
    """The `eval` command's flags, on the subparsers `commands`."""
    from ..quantization import QUANTIZATIONS
    from ..tasks import HALVES, TASKS

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
        "gold choice's index; optional id) or NAME=DATASET[@REVISION][,CONFIG][:SPLIT] (a Hub dataset id, at a "
        "revision and with its config where it has several, or a save_to_disk directory, with those columns; default "
        "split test; a split may be sliced: test[:500]), scored like the registered tasks (acc and acc_norm; the "
        "headline --own-headline) (default: the paper's seven, or none when --texts, --last-word or --wikitext2 is "
        "given)",
    )
    evaluate.add_argument(
        "--texts",
        nargs="+",
        default=None,
        metavar="NAME=SOURCE",
        help="your own held-out texts, scored by perplexity (each read alone from BOS, as a prompt is read; not the "
        "texts you calibrated on): NAME=FILE (.jsonl with a text field, or conversations in a messages field, "
        "rendered by MODEL's chat template; or .txt, one text per line) or "
        "NAME=DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]] (a Hub dataset id, at a revision and with its config "
        "where it has several, or a save_to_disk directory; default split train, column text; a split may be "
        "sliced: train[:200]); with --reference, the perplexity ratio with its 95%% paired-bootstrap interval over "
        "the texts",
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
        "--wikitext2",
        action="store_true",
        help="WikiText-2 test perplexity, as pruning papers and diet-hf's benchmarks report it: the split's rows "
        "joined with blank lines, read in windows of the model's context (2048 tokens at most), each after BOS (from "
        "--data-dir, else the Hub's Salesforce/wikitext); with --reference the ratio with its 95%% paired-bootstrap "
        "interval over the windows",
    )
    evaluate.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="first N examples of each task (and texts of each source, and windows of --wikitext2)",
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
    evaluate.add_argument(
        "--data-dir",
        default=None,
        help="local data directory of the tasks and WikiText-2 (default: $DIET_DATA_DIR, else the Hub)",
    )
    evaluate.add_argument("--output", default=None, help="write the results as JSON here")
    evaluate.add_argument(
        "--reference",
        default=None,
        metavar="MODEL",
        help="a second model (e.g. the dense parent) scored on the same examples after MODEL; prints MODEL's "
        "difference to it per task and on the average, with 95%% paired-bootstrap intervals",
    )
    evaluate.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype to load the model in (default: float32; float16 overflows Gemma's activations: use bfloat16)",
    )
    evaluate.add_argument(
        "--device-map",
        type=_device_map,
        default=None,
        help='where MODEL and --reference run, e.g. "auto" or "cuda:0" (accelerate device map; default: the CPU)',
    )
    evaluate.add_argument(
        "--token", default=None, help=TOKEN_HELP.format(use="reading private models (MODEL and --reference)")
    )
    evaluate.add_argument("--revision", default=None, help="branch, tag or commit of MODEL on the Hub")
    evaluate.add_argument(
        "--reference-revision",
        default=None,
        help="branch, tag or commit of --reference on the Hub (two commits of one repository compare too)",
    )
    evaluate.add_argument(
        "--gguf-file",
        default=None,
        metavar="NAME",
        help="read MODEL from this GGUF file in it (a directory or Hub repository), as transformers' "
        "`from_pretrained(gguf_file=...)` does: weights dequantized to float, the tokenizer from the file (needs the "
        "gguf package)",
    )
    evaluate.add_argument(
        "--reference-gguf-file",
        default=None,
        metavar="NAME",
        help="read --reference from this GGUF file in it (e.g. the dense GGUF a model was pruned from)",
    )
    evaluate.add_argument(
        "--quantization",
        choices=tuple(QUANTIZATIONS),
        default=None,
        help="load MODEL (not --reference) quantized through transformers, to score what you deploy: "
        + "; ".join(f"{name}: {what}" for name, (*_, what) in QUANTIZATIONS.items())
        + " (optimum-quanto or torchao must be installed)",
    )
    evaluate.add_argument(
        "--apply-chat-template",
        action="store_true",
        help="score an instruction-tuned model as lm-eval's --apply_chat_template does (zero-shot): each prompt the "
        "user's message in MODEL's chat template, the model's turn opened after it, the choices with no delimiter "
        "(MODEL and --reference alike)",
    )
    evaluate.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow remote code (not needed for diet-hf models: diet-hf registers them)",
    )


def _prepare(args) -> None:
    """Reads and checks your own texts and questions, before any model loads (`ValueError`: a usage error)."""
    from .._io import check_output_file
    from ..evaluation.language_modeling import split_last_words
    from ..quantization import check_quantization
    from ..tasks import PAPER_TASKS
    from ..tasks.data import wikitext2_text

    if args.reference_revision and not args.reference:
        raise ValueError("`--reference-revision` reads --reference at a revision; give --reference MODEL.")
    if args.reference_gguf_file and not args.reference:
        raise ValueError("`--reference-gguf-file` reads --reference from a GGUF file; give --reference MODEL.")
    if args.output:  # before any scoring, not when the results are written
        try:
            check_output_file(args.output, "--output")
        except OSError as error:
            raise ValueError(str(error)) from error
    if args.quantization:
        try:  # the quantizer's package, checked before any model loads
            check_quantization(args.quantization, "--quantization")
        except ImportError as error:
            raise ValueError(str(error)) from error
    # the user's texts are read and checked before any model loads
    render_chat = _chat_renderer(args)  # conversations in your texts: the model's chat template
    # each model's renderer, in the order they are scored: a tokenizer one has loaded is not loaded again
    args.chat_renderers = [render_chat]
    if args.reference:
        args.chat_renderers.append(
            _ChatRenderer(
                args.reference, revision=args.reference_revision, token=args.token, gguf_file=args.reference_gguf_file
            )
        )
    args.text_data = {
        name: texts[: args.limit]
        for name, texts in _text_sources(args.texts, "--texts", render_chat, args.token).items()
    }
    args.last_word_data = {
        name: texts[: args.limit]
        for name, texts in _text_sources(args.last_word, "--last-word", render_chat, args.token).items()
    }
    for name, texts in args.last_word_data.items():
        split_last_words(texts, f"`--last-word` {name}")
    # WikiText-2 read before any model loads too
    args.wikitext2_text = wikitext2_text("test", data_dir=args.data_dir) if args.wikitext2 else None
    if args.tasks is None:
        args.tasks = [] if args.text_data or args.last_word_data or args.wikitext2 else list(PAPER_TASKS)
    # your own questions are read and checked before any model loads
    args.tasks = _eval_tasks(args.tasks, args.own_headline, "--tasks", token=args.token)
    if args.apply_chat_template:  # every model scored has a chat template, checked before any model loads
        if not args.tasks:
            raise ValueError(
                "`--apply-chat-template` scores --tasks in the model's chat template; --texts, --last-word and "
                "--wikitext2 are read as they are: give --tasks, or leave the option out."
            )
        for renderer in args.chat_renderers:
            renderer.check_template("--apply-chat-template")


def _run_eval(args) -> int:
    from .._io import atomic_write_text, check_model_location, check_tokenizer_files
    from ..loading import read_config

    models = [(args.model, args.revision, args.gguf_file, "model", "--gguf-file")]
    if args.reference:
        models.append(
            (args.reference, args.reference_revision, args.reference_gguf_file, "--reference", "--reference-gguf-file")
        )
    for name, _, gguf, argument, gguf_argument in models:  # both checked before either is scored
        check_model_location(name, argument, gguf_file=gguf, gguf_argument=gguf_argument)
        if gguf is None:  # a GGUF file holds its tokenizer
            check_tokenizer_files(name, argument)
    # one repository at two revisions is two models: each is read with its own
    loading = [
        (
            name,
            {
                "trust_remote_code": args.trust_remote_code,
                "token": args.token,
                "revision": revision,
                "gguf_file": gguf,
            },
        )
        for name, revision, gguf, *_ in models
    ]
    configs = [read_config(name, **hub) for name, hub in loading]
    excluded = _excluded_ids(args, configs)
    results, text_results, word_results, wikitext_results = [], [], [], []
    for index, (name, hub) in enumerate(loading):  # one model in memory at a time; MODEL first
        quantization = args.quantization if index == 0 else None
        tokenizer = args.chat_renderers[index].tokenizer
        result, texts, words, wikitext = _score(args, name, hub, excluded, quantization, configs[index], tokenizer)
        results += [result] if args.tasks else []
        text_results.append(texts)
        word_results.append(words)
        wikitext_results.append(wikitext)
    record = {
        "model": args.model,
        "revision": args.revision,
        "gguf_file": args.gguf_file,
        "quantization": args.quantization,
    }
    if args.tasks:
        record.update(_print_task_results(args, results))
    if args.text_data:
        record.update(_print_text_results(args, text_results))
    if args.last_word_data:
        record.update(_print_last_word_results(args, word_results))
    if args.wikitext2:
        record.update(_print_wikitext2_results(args, wikitext_results))
    if args.output:
        atomic_write_text(args.output, json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.output}")
    return EXIT_OK


def _excluded_ids(args, configs: list) -> dict[str, list]:
    """The evaluation examples a pruned model's profile read (its provenance records them), per task asked for: they
    are scored for neither model (`configs`: each model's config)."""
    excluded: dict[str, set] = {}
    for config in configs:
        recorded = (getattr(config, "pruning", None) or {}).get("calibration_eval_ids")
        for task, ids in (recorded or {}).items():
            excluded.setdefault(task, set()).update(ids)
    task_names = {task if isinstance(task, str) else task.name for task in args.tasks}
    excluded = {task: sorted(ids) for task, ids in excluded.items() if task in task_names}
    if excluded and not args.quiet:
        counts = ", ".join(f"{len(ids)} of {task}" for task, ids in excluded.items())
        print(f"left out the evaluation examples the pruning profiled ({counts}; recorded in its config)")
    return excluded


def _score(
    args, name: str, loading: dict, excluded: dict, quantization: str | None = None, config=None, tokenizer=None
) -> tuple[dict | None, dict, dict, dict | None]:
    """One model's task results (None without `--tasks`), its texts' perplexity, its last-word accuracy and its
    WikiText-2 perplexity (None without `--wikitext2`) (`quantization`: one of `diet_hf.quantization.QUANTIZATIONS` to
    load it with; `config`: its config, already read: a GGUF file's metadata is then not parsed again for it;
    `tokenizer`: its tokenizer where the chat renderer has loaded it)."""
    from ..evaluation import evaluate, last_word_accuracy, perplexity
    from ..evaluation.language_modeling import texts_perplexity_by_source
    from ..loading import load_causal_lm, load_tokenizer
    from ..quantization import quantization_config

    quantized = {"quantization_config": quantization_config(quantization)} if quantization else {}
    placed = {"device_map": args.device_map} if args.device_map else {}
    # an image-text checkpoint: its text model
    model = load_causal_lm(name, config, dtype=_dtype(args.dtype), **loading, **placed, **quantized).eval()
    tokenizer = tokenizer or load_tokenizer(name, config, **loading)
    result = None
    if args.tasks:
        result = evaluate(
            model,
            tokenizer,
            args.tasks,
            limit=args.limit,
            half=args.half,
            batch_size=args.batch_size,
            exclude_ids=excluded or None,
            data_dir=args.data_dir,
            return_predictions=args.reference is not None,
            apply_chat_template=args.apply_chat_template,
            disable_progress=args.quiet,
        )
    reading = {"batch_size": args.batch_size, "disable_progress": args.quiet}
    texts = texts_perplexity_by_source(model, tokenizer, args.text_data, **reading)
    words = {source: last_word_accuracy(model, tokenizer, t, **reading) for source, t in args.last_word_data.items()}
    wikitext = None
    if args.wikitext2_text is not None:
        wikitext = perplexity(
            model, tokenizer, text=args.wikitext2_text, max_windows=args.limit, disable_progress=args.quiet
        )
    return result, texts, words, wikitext


def _print_text_results(args, text_results: list[dict]) -> dict:
    """Prints the texts' perplexity (and with `--reference` the ratio and its interval); returns the JSON record's
    entries: per source the summary without the per-text values."""
    from ..evaluation import paired_bootstrap_perplexity, perplexity_summary

    def summary(results):
        return {source: perplexity_summary(result) for source, result in results.items()}

    print(f"\n{'texts':16}{'n':>7}{'tokens':>10}{'perplexity':>12}  (each text read alone from BOS)")
    for source, row in text_results[0].items():
        cut = f"  ({row['truncated']} cut at the context length)" if row["truncated"] else ""
        print(f"{source:16}{row['texts']:>7}{row['tokens']:>10}{row['perplexity']:>12.3f}{cut}")
    record = {"texts": summary(text_results[0])}
    if args.reference:
        print(
            f"\n{_label(args)} over {_label(args, True)} "
            "(the same texts; paired bootstrap over texts, 2000 resamples):"
        )
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


def _print_wikitext2_results(args, results: list[dict]) -> dict:
    """Prints the WikiText-2 test perplexity (and with `--reference` the ratio and its interval over the windows);
    returns the JSON record's entries, each result without its per-window values."""
    from ..evaluation import paired_bootstrap_perplexity, perplexity_summary

    row = results[0]
    heading = f"{'WikiText-2':16}{'windows':>7}{'tokens':>10}{'perplexity':>12}"
    print(f"\n{heading}  (test split, {row['max_length']}-token windows)")
    print(f"{'test':16}{row['windows']:>7}{row['tokens']:>10}{row['perplexity']:>12.3f}")
    record = {"wikitext2": perplexity_summary(row)}
    if args.reference:
        reference = results[1]
        ratio = paired_bootstrap_perplexity(row, reference)
        low, high = ratio["ci95"]
        print(
            f"\n{_label(args)} over {_label(args, True)} "
            "(the same windows; paired bootstrap over windows, 2000 resamples):"
        )
        print(f"{'WikiText-2':16}{'reference':>10}{'ratio':>9}  95% interval")
        print(f"{'test':16}{reference['perplexity']:>10.3f}{ratio['ratio']:>9.3f}  [{low:.3f}, {high:.3f}]")
        record["reference_wikitext2"] = perplexity_summary(reference)
        record["wikitext2_ratio"] = ratio
    return record


def _print_last_word_results(args, word_results: list[dict]) -> dict:
    """Prints the last-word accuracy per source (and with `--reference` the difference and its interval); returns the
    JSON record's entries: per source the summary without the per-text values."""
    from ..evaluation import paired_bootstrap

    def summary(results):
        return {s: {k: v for k, v in r.items() if k not in ("correct", "loglikelihood")} for s, r in results.items()}

    print(f"\n{'last word':16}{'n':>7}{'accuracy':>10}{'word ppl':>12}  (LAMBADA's measure)")
    for source, row in word_results[0].items():
        print(f"{source:16}{row['texts']:>7}{row['accuracy']:>10.3f}{row['perplexity']:>12.3f}")
    record = {"last_word": summary(word_results[0])}
    if args.reference:
        print(
            f"\n{_label(args)} minus {_label(args, True)} "
            "(the same texts; paired bootstrap over texts, 2000 resamples):"
        )
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
    if result.get("apply_chat_template"):
        print("(each prompt in the model's chat template, as lm-eval's --apply_chat_template)")
    record = dict(result)
    if args.reference:
        reference = results[1]
        comparison = _print_task_differences(_label(args), _label(args, True), result, reference)
        for entry in (result, reference):
            entry.pop("predictions")
        reference_record = {
            "model": args.reference,
            "revision": args.reference_revision,
            "gguf_file": args.reference_gguf_file,
            **reference,
        }
        record = {**result, "reference": reference_record, "difference": comparison}
    return record


def _label(args, reference: bool = False) -> str:
    """MODEL's or --reference's name as printed, `NAME@REVISION` where a revision was given, `/FILE` read from a GGUF
    file (`_io.source_name`)."""
    from .._io import source_name

    if reference:
        label = source_name(args.reference, args.reference_revision, args.reference_gguf_file)
    else:
        label = source_name(args.model, args.revision, args.gguf_file)
    return f"{label} ({args.quantization})" if args.quantization and not reference else label
