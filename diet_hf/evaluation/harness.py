"""The zero-shot multiple-choice harness: each task's examples (after exclusions, on a half, up to a limit), its
prompts and choices, the log-likelihoods of `strategies.loglikelihoods`, and the metrics the task defines."""

import math
import os

from .._checks import check_finite_outputs, check_positive_int, is_positive_int
from ..tasks import HALVES, PAPER_TASKS, Task, chat_request, check_chat_template, evaluation_examples, get_task
from .scorer import check_scorable
from .strategies import loglikelihoods

__all__ = ["evaluate"]


def evaluate(
    model,
    tokenizer,
    tasks: list[str | Task] | tuple[str | Task, ...] = PAPER_TASKS,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    exclude_ids: dict[str, list[str]] | None = None,
    half: str | None = None,
    data_dir: str | os.PathLike | None = None,
    return_predictions: bool = False,
    share_context: bool = True,
    apply_chat_template: bool = False,
    disable_progress: bool = False,
) -> dict:
    """Zero-shot multiple-choice accuracy per task (`acc`, `acc_norm`, standard error) and the headline average.

    Args:
        tasks (`list[str | Task]`): registered task names, or your own multiple-choice tasks
            (`diet_hf.tasks.multiple_choice_task`), mixed freely.
        limit (`int`, *optional*): score only the first `limit` examples of each task (after exclusions).
        exclude_ids (`dict[str, list[str]]`, *optional*): per task, example ids not to score (calibration examples
            carved from the evaluation split; `DietPruner.scores.provenance["excluded_eval_ids"]`, or for a saved
            pruned model `model.config.pruning["calibration_eval_ids"]`; pass the same to its dense reference).
        half (`str`, *optional*): `"dev"` or `"test"`: score only that half of each task's evaluation examples
            (`tasks.split_half`, a hash of the example id), after exclusions and before `limit`. Choose recipes on
            `"dev"`, report on `"test"`.
        return_predictions (`bool`, *optional*): add each example's chosen answers under `predictions`.
        share_context (`bool`, *optional*, defaults to `True`): run each question's context once for all choices.
        apply_chat_template (`bool`, *optional*): score an instruction-tuned model as lm-eval's `--apply_chat_template`
            does (zero-shot): each context is the user's message, rendered by the tokenizer's chat template with the
            model's turn opened after it, and each choice follows it with no delimiter.

    Returns:
        `dict` with `results` (per task: `acc`, `acc_norm` (None where the task has no such metric), `acc_stderr`,
        `num_scored`, `excluded_ids`, `headline_metric`, `own_questions`: a `multiple_choice_task` of yours, and
        `source`, where its questions were read, where known: `Task.data_source`),
        `average` (of each task's `Task.headline_metric`: `acc` for BoolQ, RTE, WinoGrande, `acc_norm` for the
        others) and `tasks` (and `apply_chat_template: True` where the chat template was applied).
    """
    check_scorable(model, tokenizer, "to score text")
    if apply_chat_template:
        check_chat_template(tokenizer, "apply_chat_template")
    if limit is not None and not is_positive_int(limit):
        raise ValueError(f"`limit` must be >= 1, got {limit!r}.")
    check_positive_int("batch_size", batch_size)
    tasks = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)  # one name, as `DietPruner.profile` takes it
    if not tasks:
        raise ValueError("`tasks` is empty: name at least one task (registered, or your own `multiple_choice_task`).")
    if half is not None and half not in HALVES:
        raise ValueError(f"`half` must be one of {HALVES} or None, got {half!r}.")
    specs = [task if isinstance(task, Task) else get_task(task) for task in tasks]
    names = [spec.name for spec in specs]
    if len(set(names)) < len(names):
        raise ValueError(f"`tasks` names a task twice: {names}.")
    exclude_ids = exclude_ids or {}
    results, predictions = {}, {}
    for spec in specs:
        excluded = {str(i) for i in exclude_ids.get(spec.name, [])}
        docs = evaluation_examples(spec, half=half, exclude_ids=excluded, limit=limit, data_dir=data_dir)
        if not docs:
            left = f"in its {half} half " if half else ""
            raise ValueError(
                f"No examples of task {spec.name!r} left to score {left}after exclusions ({len(excluded)} excluded)."
            )
        requests = [spec.build(d) for d in docs]
        if apply_chat_template:
            requests = [chat_request(tokenizer, r) for r in requests]
        pairs = [(ctx, r.delimiter + cont) for r in requests for ctx, cont in zip(r.contexts, r.continuations)]
        lls = loglikelihoods(
            model,
            tokenizer,
            pairs,
            batch_size=batch_size,
            share_context=share_context,
            disable_progress=disable_progress,
            description=f"eval {spec.name}",
        )
        results[spec.name], predictions[spec.name] = _task_result(spec, requests, lls, excluded, half)
    headline = [r[r["headline_metric"]] for r in results.values()]
    output = {"tasks": [s.name for s in specs], "results": results, "average": sum(headline) / len(headline)}
    if apply_chat_template:
        output["apply_chat_template"] = True
    if return_predictions:
        output["predictions"] = predictions
    return output


def _task_result(spec: Task, requests: list, lls: list[float], excluded: set, half: str | None) -> tuple[dict, list]:
    """One task's metrics from its choices' log-likelihoods (in request order), and the answer chosen per example."""
    check_finite_outputs(lls, f"task {spec.name!r}'s choice log-likelihoods")  # a NaN would pick an answer silently
    correct, correct_norm, chosen = 0, 0, []
    offset = 0
    for request in requests:
        n = len(request.continuations)
        scores = lls[offset : offset + n]
        offset += n
        # lm-eval 0.4.13 `acc_norm`: log-likelihood / length in characters of the choice, without the delimiter
        normed = [s / len(c) for s, c in zip(scores, request.continuations)]
        pick, pick_norm = _argmax(scores), _argmax(normed)
        correct += pick == request.label
        correct_norm += pick_norm == request.label
        chosen.append({"id": request.example_id, "label": request.label, "acc": pick, "acc_norm": pick_norm})
    count = len(requests)
    acc = correct / count
    result = {
        "acc": acc,
        "acc_norm": correct_norm / count if "acc_norm" in spec.metrics else None,  # the task says which it has
        "acc_stderr": math.sqrt(acc * (1 - acc) / max(count - 1, 1)),
        "num_scored": count,
        "excluded_ids": sorted(excluded),
        "half": half,
        "headline_metric": spec.headline_metric,
        "own_questions": spec.examples is not None,  # your own multiple-choice task, not a registered one
    }
    if spec.data_source:  # where your questions were read (`load_multiple_choice_source`): the card's model-index
        result["source"] = spec.data_source
    return result, chosen


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, as numpy's argmax
