"""The model card's result sections: the evaluation table (beside the base model's), perplexity on held-out texts,
and the healing record with its held-out texts and tasks."""

from .tasks.own import named_with_source, source_label

__all__ = ["OWN_QUESTIONS"]


def _cell(value) -> str:
    """`value` as the text of one Markdown table cell: a `|` in it (as in "KL(teacher || student)", or a name or path
    of the user's) would end the cell and shift the row's columns, a line break would end the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


OWN_QUESTIONS = (
    "the publisher's own multiple-choice questions (not a public benchmark), each choice scored after its question's "
    "context as lm-eval scores a task."
)


def _half_text(evaluation: dict) -> str:
    halves = {row.get("half") for row in evaluation["results"].values()}
    return f", on the {halves.pop()} half of each task's evaluation examples" if halves in ({"dev"}, {"test"}) else ""


def _difference_text(evaluation: dict, dense_evaluation: dict) -> str:
    """The headline average's difference to the dense model with its paired-bootstrap interval, where both
    evaluations kept their per-example answers (`return_predictions=True`); else nothing."""
    if "predictions" not in evaluation or "predictions" not in dense_evaluation:
        return ""
    from .evaluation import compare_evaluations

    comparison = compare_evaluations(evaluation, dense_evaluation)["average"]
    low, high = comparison["ci95"]
    return (
        f" Difference of the headline average: {comparison['difference']:+.4f}, paired-bootstrap 95% interval "
        f"[{low:+.4f}, {high:+.4f}] (2000 resamples of each task's examples)."
    )


def _eval_results(evaluation: dict) -> list:
    """The card metadata's `model-index` (huggingface_hub `EvalResult`s, which the Hub shows beside the model): each
    task's headline metric, the dataset named with how many of its examples were scored (and from which half)."""
    from huggingface_hub import EvalResult

    from .tasks import TASKS

    results = []
    for task, row in evaluation["results"].items():
        spec = None if row.get("own_questions") else TASKS.get(task)
        # your own questions read from a Hub dataset are named by it, so the Hub links the result to its page
        source = row.get("source") or {}
        hub = source if "dataset" in source else {}
        metric = row.get("headline_metric") or (spec.headline_metric if spec else "acc")
        if row.get(metric) is None:
            continue
        half = row.get("half")
        scored = f"{row['num_scored']} examples" + (f" of its {half} half" if half in ("dev", "test") else "")
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="zero-shot multiple choice, scored as lm-eval-harness 0.4 scores it"
                + (" with the chat template" if evaluation.get("apply_chat_template") else ""),
                dataset_type=spec.hub_path if spec else hub.get("dataset", task),
                dataset_name=f"{task} ({scored})",
                dataset_config=spec.hub_name if spec else hub.get("config"),
                dataset_split=spec.eval_split if spec else hub.get("split"),
                dataset_revision=hub.get("revision"),
                metric_type=metric,
                metric_name=metric,
                metric_value=round(float(row[metric]), 4),
            )
        )
    return results


def _evaluation_lines(evaluation: dict, dense_evaluation: dict | None, record: dict) -> list[str]:
    """The card's "Evaluation" section: each task's scores (beside the base model's on the same examples, with the
    average's paired difference, when `dense_evaluation` is given)."""
    lines = [
        "## Evaluation",
        "",
        "Zero-shot, scored as lm-eval-harness 0.4 scores it"
        + (
            " with the model's chat template (`--apply_chat_template`)"
            if evaluation.get("apply_chat_template")
            else ""
        )
        + _half_text(evaluation)
        + ".",
        "",
        "| task | examples | acc | acc_norm |",
        "|---|---|---|---|",
    ]
    if dense_evaluation:
        lines[-2:] = [
            f"| task | examples | metric | {_cell(record.get('base_model') or 'dense model')} | this model |",
            "|---|---|---|---|---|",
        ]
    for task, row in evaluation["results"].items():
        if dense_evaluation and task in dense_evaluation["results"]:
            metric = row.get("headline_metric", "acc")
            dense_value = dense_evaluation["results"][task][metric]
            lines.append(f"| {task} | {row['num_scored']} | {metric} | {dense_value:.4f} | {row[metric]:.4f} |")
            continue
        norm = "–" if row.get("acc_norm") is None else f"{row['acc_norm']:.4f}"
        lines.append(f"| {task} | {row['num_scored']} | {row['acc']:.4f} | {norm} |")
    if dense_evaluation:
        lines += [
            f"| headline average | | | {dense_evaluation['average']:.4f} | {evaluation['average']:.4f} |",
            "",
            "Both models scored on the same examples, each task in the metric its row names (lm-eval's headline "
            "metric for the registered tasks: acc for BoolQ, RTE, WinoGrande, acc_norm for the others)."
            + _difference_text(evaluation, dense_evaluation),
            "",
        ]
    else:
        lines += ["", f"Headline average: {evaluation['average']:.4f}", ""]
    own = [_cell(task) for task, row in evaluation["results"].items() if row.get("own_questions")]
    if own:
        lines += [f"{', '.join(own)}: {OWN_QUESTIONS}", ""]
    return lines


def _text_lines(results: dict, dense_results: dict | None, base: str) -> list[str]:
    """The card's section on held-out texts: perplexity per source, beside the base model's with the ratio."""
    from .evaluation import paired_bootstrap_perplexity

    lines = [
        "## Perplexity on held-out texts",
        "",
        "Each text read alone from BOS, as a prompt is read (`diet_hf.evaluation.texts_perplexity`)"
        + (
            "; the ratio to the base model on the same texts with its 95% paired-bootstrap interval over the texts."
            if dense_results
            else "."
        ),
        "",
    ]
    if dense_results:
        lines += [f"| texts | count | tokens | {base} | this model | ratio [95% CI] |", "|---|---|---|---|---|---|"]
    else:
        lines += ["| texts | count | tokens | perplexity |", "|---|---|---|---|"]
    for name, result in results.items():
        row = f"| {_cell(named_with_source(name, result.get('source')))} | {result['texts']} | {result['tokens']:,} |"
        if dense_results and name in dense_results:
            ratio = paired_bootstrap_perplexity(result, dense_results[name])
            low, high = ratio["ci95"]
            row += (
                f" {dense_results[name]['perplexity']:.3f} | {result['perplexity']:.3f} | {ratio['ratio']:.3f} "
                f"[{low:.3f}, {high:.3f}] |"
            )
        elif dense_results:
            row += f" – | {result['perplexity']:.3f} | – |"
        else:
            row += f" {result['perplexity']:.3f} |"
        lines.append(row)
    return [*lines, ""]


def _healing_lines(healing: dict | None) -> list[str]:
    """The card's "Healing" section: what distillation after pruning did, from `config.pruning["healing"]`."""
    if not healing:
        return []
    data = healing.get("data") or {}
    # each source with its split, or for your own texts where they were read (a local path is not recorded)
    where = {**(data.get("splits") or {}), **{n: source_label(s) for n, s in (data.get("own_sources") or {}).items()}}
    sources = ", ".join(f"{name} ({where[name]})" if name in where else name for name in data.get("sources") or [])
    if data.get("questions_in_chat_template"):
        sources += "; questions in the model's chat template"
    curve = healing.get("loss_curve") or []
    shown = curve if len(curve) <= 8 else [curve[round(i * (len(curve) - 1) / 7)] for i in range(8)]
    if not (healing.get("options") or {}).get("guard", True):
        verdict = "off: the weights after the last step"
    elif healing.get("rolled_back"):
        verdict = "rolled back: no evaluation beat the unhealed model, so these are the unhealed weights"
    else:
        verdict = f"kept the best evaluation (step {healing.get('best_step')})"
    return [
        "## Healing",
        "",
        "After pruning, the model was distilled from its dense parent (no evaluation examples were trained on).",
        "",
        "| | |",
        "|---|---|",
        f"| teacher | {_cell(healing.get('teacher'))} |",
        f"| data | {_cell(sources)} |",
        f"| objective | {_cell(healing.get('objective'))} |",
        f"| weights | {_cell(healing.get('adapter'))} |",
        f"| steps | {healing.get('steps')} ({healing.get('train_seconds')} s) |",
        f"| tokens seen | {healing.get('tokens_seen'):,} |",
        f"| validation KL to the teacher | {healing.get('validation_kl_before'):.4f} before, "
        f"{healing.get('validation_kl_after'):.4f} after |",
        f"| guard | {verdict} |",
        "",
        "Training loss: " + ", ".join(f"step {step}: {loss:.4f}" for step, loss in shown),
        "",
        *_held_out_lines(healing.get("held_out_texts")),
        *_held_out_task_lines(healing.get("held_out_tasks")),
    ]


def _held_out_lines(held_out: dict | None) -> list[str]:
    """The healing section's table of held-out texts: teacher, unhealed and healed perplexity with the ratios."""
    if not held_out:
        return []
    lines = [
        "Perplexity on held-out texts (not trained on; each text read alone from BOS), with 95% paired-bootstrap "
        'intervals over the texts; "gap closed": the share of the unhealed model\'s log-perplexity gap to the '
        "teacher that healing removed.",
        "",
        "| texts | count | tokens | teacher | unhealed | healed | healed / unhealed | healed / teacher | gap closed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in held_out.items():
        ratios = [row[key] for key in ("healed_over_unhealed", "healed_over_teacher")]
        closed = "–" if row.get("gap_closed") is None else f"{row['gap_closed']:.0%}"
        lines.append(
            f"| {_cell(name)} | {row['texts']} | {row['tokens']:,} | {row['teacher']:.3f} | {row['unhealed']:.3f} | "
            f"{row['healed']:.3f} | "
            + " | ".join(f"{r['ratio']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" for r in ratios)
            + f" | {closed} |"
        )
    return [*lines, ""]


def _held_out_task_lines(held_out: dict | None) -> list[str]:
    """The healing section's table of scored tasks: teacher, unhealed and healed scores with the differences."""
    if not held_out:
        return []
    lines = [
        "Zero-shot accuracy on tasks not trained on (scored as lm-eval-harness 0.4 scores them, the same examples for "
        "the three models), with 95% paired-bootstrap intervals over the examples.",
        "",
        "| task | examples | metric | teacher | unhealed | healed | healed − unhealed | healed − teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, row in held_out.items():
        differences = " | ".join(
            f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            for d in (row["healed_minus_unhealed"], row["healed_minus_teacher"])
        )
        name = "headline average" if task == "average" else _cell(task)
        lines.append(
            f"| {name} | {row.get('examples', '')} | {row.get('metric', '')} | {row['teacher']:.4f} | "
            f"{row['unhealed']:.4f} | {row['healed']:.4f} | {differences} |"
        )
    lines.append("")
    own = [_cell(task) for task, row in held_out.items() if row.get("own_questions")]
    if own:
        lines += [f"{', '.join(own)}: {OWN_QUESTIONS}", ""]
    return lines
