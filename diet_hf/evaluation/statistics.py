"""Comparing two models on the same scored examples: the paired bootstrap of their accuracy difference, and of their
perplexity ratio on the same texts."""

from collections.abc import Mapping, Sequence

import torch

__all__ = ["compare_evaluations", "correct_by_task", "paired_bootstrap", "paired_bootstrap_perplexity"]


def correct_by_task(result: dict) -> dict[str, list[int]]:
    """Per task, 1 (correct) or 0 for each scored example under the task's headline metric, in scoring order, from
    the result of `evaluate(..., return_predictions=True)`: what `paired_bootstrap` compares."""
    if "predictions" not in result:
        raise ValueError("`result` holds no per-example answers: call `evaluate(..., return_predictions=True)`.")
    return {
        task: [int(p[result["results"][task]["headline_metric"]] == p["label"]) for p in predictions]
        for task, predictions in result["predictions"].items()
    }


def compare_evaluations(result: dict, reference: dict) -> dict:
    """`result` minus `reference`, two `evaluate(..., return_predictions=True)` results: `paired_bootstrap` per task
    they share and on the average over those tasks (key `"average"`). Raises `ValueError` unless both scored the same
    examples, in the same order, of every shared task."""
    correct, reference_correct = correct_by_task(result), correct_by_task(reference)
    tasks = [task for task in correct if task in reference_correct]
    for task in tasks:
        if [p["id"] for p in result["predictions"][task]] != [p["id"] for p in reference["predictions"][task]]:
            raise ValueError(f"{task}: the two evaluations did not score the same examples.")
    comparison = {task: paired_bootstrap(correct[task], reference_correct[task]) for task in tasks}
    comparison["average"] = paired_bootstrap(
        {task: correct[task] for task in tasks}, {task: reference_correct[task] for task in tasks}
    )
    return comparison


def paired_bootstrap(
    after: Sequence[int] | Mapping[str, Sequence[int]],
    before: Sequence[int] | Mapping[str, Sequence[int]],
    *,
    resamples: int = 2000,
    generator: torch.Generator | None = None,
) -> dict:
    """Accuracy of `after` minus `before` over the same examples, with the 95% interval of a paired bootstrap.

    Each resample draws the examples with replacement and takes both models' results on the same draws, so what the
    two share (easy and hard examples) cancels. Given one list per task, each task's examples are drawn apart and the
    difference is the mean of the per-task differences: the change of an average over tasks, as `evaluate` reports it
    (`average`), with every task weighted equally whatever its size.

    Args:
        after, before: 1 (correct) or 0 per example in the same order, as one list, or as a `{task: list}` mapping
            with the same tasks in both (`correct_by_task` makes it from what `evaluate` returns).
        resamples (`int`, *optional*, defaults to 2000): bootstrap resamples.
        generator (`torch.Generator`, *optional*): the random draws (default: a new one seeded 0, so the interval is
            reproducible); pass one to draw several comparisons from one stream.

    Returns:
        `dict` with `difference` (float), `ci95` (`[low, high]`) and `num_examples` (per task for a mapping).
    """
    single = not isinstance(after, Mapping)
    if single != (not isinstance(before, Mapping)):
        raise TypeError("`after` and `before` must both be lists of 0/1 results or both be {task: list} mappings.")
    after_tasks = {"": after} if single else dict(after)
    before_tasks = {"": before} if single else dict(before)
    if set(after_tasks) != set(before_tasks):
        raise ValueError(
            f"`after` and `before` must score the same tasks; got {sorted(after_tasks)} and {sorted(before_tasks)}."
        )
    if not after_tasks:
        raise ValueError("`after` and `before` hold no tasks to compare.")
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 1:
        raise ValueError(f"`resamples` must be a positive int; got {resamples!r}.")
    differences = {}
    for task, results in after_tasks.items():
        a = torch.tensor(list(results), dtype=torch.float64)
        b = torch.tensor(list(before_tasks[task]), dtype=torch.float64)
        name = "the examples" if single else f"task {task!r}"
        if len(a) != len(b) or len(a) == 0:
            raise ValueError(
                f"`after` and `before` must hold results of the same, non-empty examples for {name}; "
                f"got {len(a)} and {len(b)}."
            )
        if not (((a == 0) | (a == 1)).all() and ((b == 0) | (b == 1)).all()):
            raise ValueError(f"Results must be 0 or 1 per example; {name} holds other values.")
        differences[task] = a - b
    result = _task_bootstrap(differences, resamples=resamples, generator=generator)
    return {**result, "num_examples": len(differences[""]) if single else {t: len(d) for t, d in differences.items()}}


def _task_bootstrap(
    per_example: Mapping[str, torch.Tensor], *, resamples: int = 2000, generator: torch.Generator | None = None
) -> dict:
    """The mean over tasks of each task's mean of `per_example` (one value per example, e.g. one model's result minus
    another's on it), with the 95% interval of a bootstrap that draws each task's examples apart: what
    `paired_bootstrap` computes on its differences, for any per-example values (a difference of differences, say).
    Returns `{"difference": float, "ci95": [low, high]}`."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    total = torch.zeros(resamples, dtype=torch.float64)
    for values in per_example.values():
        index = torch.randint(len(values), (resamples, len(values)), generator=generator)
        total += values[index].mean(1)
    total /= len(per_example)
    low, high = torch.quantile(total, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    point = sum(values.mean().item() for values in per_example.values()) / len(per_example)
    return {"difference": point, "ci95": [low, high]}


def paired_bootstrap_perplexity(
    after: Mapping, before: Mapping, *, resamples: int = 2000, generator: torch.Generator | None = None
) -> dict:
    """Perplexity of `after` over that of `before` on the same texts, with the 95% interval of a paired bootstrap over
    the texts (each resample draws texts with replacement and takes both models' summed log-likelihoods and token
    counts of the same draws, so the ratio stays token-weighted).

    Args:
        after, before: two `texts_perplexity` results over the same texts (their `nll` and `counts`).
        resamples (`int`, *optional*, defaults to 2000): bootstrap resamples.
        generator (`torch.Generator`, *optional*): the random draws (default: a new one seeded 0).

    Returns:
        `dict` with `ratio` (`after`'s perplexity over `before`'s), `ci95` (`[low, high]` of the ratio) and
        `num_texts`.
    """
    for name, result in (("after", after), ("before", before)):
        if not isinstance(result, Mapping) or "nll" not in result or "counts" not in result:
            raise ValueError(f"`{name}` must be a `texts_perplexity` result (with per-text `nll` and `counts`).")
    if list(after["counts"]) != list(before["counts"]):
        raise ValueError(
            "`after` and `before` must score the same texts with the same tokenizer (their per-text token counts "
            "differ)."
        )
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 1:
        raise ValueError(f"`resamples` must be a positive int; got {resamples!r}.")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    difference = torch.tensor(list(after["nll"]), dtype=torch.float64) - torch.tensor(
        list(before["nll"]), dtype=torch.float64
    )
    counts = torch.tensor(list(after["counts"]), dtype=torch.float64)
    index = torch.randint(len(counts), (resamples, len(counts)), generator=generator)
    ratios = (difference[index].sum(1) / counts[index].sum(1)).exp()
    low, high = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {
        "ratio": float((difference.sum() / counts.sum()).exp()),
        "ci95": [low, high],
        "num_texts": len(counts),
    }
