"""Zero-shot multiple-choice accuracy scored as lm-eval-harness 0.4 scores it, and WikiText-2 perplexity.

Any causal LM that transformers loads works. The LM head runs only at the scored positions (`logits_to_keep`):
Gemma's vocabulary is 256k, so full logits at every position would dominate time and memory.
"""

import json
import logging
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .tasks import PAPER_TASKS, get_task, load_examples, resolve_data_dir

__all__ = ["evaluate", "loglikelihoods", "perplexity"]

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    index: int
    context_ids: list[int]
    continuation_ids: list[int]


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    # lm-eval 0.4 `_encode_pair`: trailing context spaces move to the continuation; the continuation's tokens are
    # the tail of the whole string's encoding. Special tokens (Gemma's BOS) are added as lm-eval adds them for Gemma.
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer(context + continuation)["input_ids"]
    context_ids = tokenizer(context)["input_ids"]
    return context_ids, whole[len(context_ids) :]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def loglikelihoods(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    disable_progress: bool = False,
    description: str = "scoring",
) -> list[float]:
    """Sum of continuation log-probabilities for each `(context, continuation)` pair, as lm-eval computes it."""
    if tokenizer is None:
        raise ValueError("`tokenizer` is required to score text; pass the model's tokenizer.")
    max_length = max_length or min(getattr(model.config, "max_position_embeddings", 2048), 2048)
    requests = []
    for index, (context, continuation) in enumerate(pairs):
        context_ids, continuation_ids = _encode_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise ValueError(f"Continuation {continuation!r} encodes to no tokens.")
        requests.append(_Request(index, context_ids, continuation_ids))
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up at once.
    requests.sort(key=lambda r: -(len(r.context_ids) + len(r.continuation_ids)))
    results = [0.0] * len(requests)
    device = _model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in tqdm(range(0, len(requests), batch_size), desc=description, disable=disable_progress):
        batch = requests[start : start + batch_size]
        inputs = [(r.context_ids + r.continuation_ids)[-(max_length + 1) :][:-1] for r in batch]
        width = max(len(x) for x in inputs)
        keep = max(len(r.continuation_ids) for r in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(inputs):  # left padding: every row's scored positions are the last ones
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            logits_to_keep=keep,
            use_cache=False,
        ).logits
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (batch, keep, vocab)
        for row, request in enumerate(batch):
            targets = torch.tensor(request.continuation_ids, device=logprobs.device)
            scored = logprobs[row, keep - len(targets) :]
            results[request.index] = float(scored.gather(-1, targets[:, None]).sum())
    return results


def evaluate(
    model,
    tokenizer,
    tasks: list[str] | tuple[str, ...] = PAPER_TASKS,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    exclude_ids: dict[str, list[str]] | None = None,
    data_dir: str | os.PathLike | None = None,
    return_predictions: bool = False,
    disable_progress: bool = False,
) -> dict:
    """Zero-shot multiple-choice accuracy per task (`acc`, `acc_norm`, standard error) and the headline average.

    Args:
        tasks (`list[str]`): registered task names.
        limit (`int`, *optional*): score only the first `limit` examples of each task (after exclusions).
        exclude_ids (`dict[str, list[str]]`, *optional*): per task, example ids not to score (calibration examples
            carved from the evaluation split; `DietPruner.scores.provenance["excluded_eval_ids"]`).
        return_predictions (`bool`, *optional*): add each example's chosen answers under `predictions`.

    Returns:
        `dict` with `results` (per task: `acc`, `acc_norm`, `acc_stderr`, `num_scored`, `excluded_ids`), `average`
        (headline: `acc` for BoolQ, RTE, WinoGrande, `acc_norm` for the others) and `tasks`.
    """
    if tokenizer is None:
        raise ValueError("`tokenizer` is required: evaluation scores text. Pass the model's tokenizer.")
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be >= 1, got {limit}.")
    specs = [get_task(name) for name in tasks]
    exclude_ids = exclude_ids or {}
    results, predictions = {}, {}
    for spec in specs:
        excluded = {str(i) for i in exclude_ids.get(spec.name, [])}
        docs = [d for d in load_examples(spec, spec.eval_split, data_dir=data_dir) if str(d["id"]) not in excluded]
        docs = docs[:limit] if limit is not None else docs
        if not docs:
            raise ValueError(f"No examples of task {spec.name!r} left to score after exclusions.")
        requests = [spec.build(d) for d in docs]
        pairs = [(ctx, r.delimiter + cont) for r in requests for ctx, cont in zip(r.contexts, r.continuations)]
        lls = loglikelihoods(
            model,
            tokenizer,
            pairs,
            batch_size=batch_size,
            disable_progress=disable_progress,
            description=f"eval {spec.name}",
        )
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
        has_norm = spec.name != "winogrande"  # lm-eval scores WinoGrande by `acc` only (shared continuation)
        results[spec.name] = {
            "acc": acc,
            "acc_norm": correct_norm / count if has_norm else None,
            "acc_stderr": math.sqrt(acc * (1 - acc) / max(count - 1, 1)),
            "num_scored": count,
            "excluded_ids": sorted(excluded),
            "headline_metric": spec.headline_metric,
        }
        predictions[spec.name] = chosen
    headline = [r[r["headline_metric"]] for r in results.values()]
    output = {"tasks": [s.name for s in specs], "results": results, "average": sum(headline) / len(headline)}
    if return_predictions:
        output["predictions"] = predictions
    return output


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, as numpy's argmax


@torch.inference_mode()
def perplexity(
    model,
    tokenizer,
    *,
    data_dir: str | os.PathLike | None = None,
    max_length: int | None = None,
    max_windows: int | None = None,
    disable_progress: bool = False,
) -> dict:
    """WikiText-2 test perplexity: rows joined with blank lines, non-overlapping windows, token-weighted.

    Each window of `max_length` tokens (the model's context, capped at 2048) is scored after a BOS token.
    """
    directory = resolve_data_dir(data_dir)
    if directory is None:
        raise ValueError("`perplexity` reads WikiText-2 from a data directory: pass `data_dir` or set DIET_DATA_DIR.")
    path = directory / "wikitext2" / "test.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"WikiText-2 test split not found at {path}.")
    with path.open(encoding="utf-8") as handle:
        text = "\n\n".join(json.loads(line)["text"] for line in handle if line.strip())
    max_length = max_length or min(getattr(model.config, "max_position_embeddings", 2048), 2048)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    window = max_length - (1 if bos is not None else 0)
    starts = list(range(0, len(ids), window))[: max_windows or None]
    device = _model_device(model)
    nll, count = 0.0, 0
    for start in tqdm(starts, desc="perplexity", disable=disable_progress):
        chunk = ([bos] if bos is not None else []) + ids[start : start + window]
        input_ids = torch.tensor([chunk], device=device)
        logits = model(input_ids=input_ids, use_cache=False).logits.float()
        targets = input_ids[0, 1:]
        nll -= float(F.log_softmax(logits[0, :-1], dim=-1).gather(-1, targets[:, None]).sum())
        count += len(targets)
    return {"perplexity": math.exp(nll / count), "tokens": count, "windows": len(starts), "max_length": max_length}
