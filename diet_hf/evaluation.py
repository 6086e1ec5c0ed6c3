"""Zero-shot multiple-choice accuracy scored as lm-eval-harness 0.4 scores it, and WikiText-2 perplexity.

Any causal LM that transformers loads works. The LM head runs only at the scored positions (for Gemma models on the
gathered hidden states, for others through `logits_to_keep`): Gemma's vocabulary is 256k, so full logits at every
position would dominate time and memory.

For Gemma-family models (dense or pruned, `sdpa` or `eager` attention) the choices of one question are packed into one
row behind their shared context, with an attention mask that lets each choice see the context and itself only, and
position ids that continue the context for every choice: the same computation as scoring each pair on its own, with
the context run once and almost no padding. The scored hidden states of many rows then go through the LM head
together, one slice of the vocabulary at a time, with a running log-sum-exp.
"""

import inspect
import json
import logging
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._batching import pad_id, pad_rows
from .constants import FAMILIES
from .tasks import HALVES, PAPER_TASKS, get_task, load_examples, resolve_data_dir, split_half

__all__ = ["evaluate", "kl_divergence", "loglikelihoods", "next_token_logprobs", "perplexity"]

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    index: int
    context_ids: list[int]
    continuation_ids: list[int]


def _check_tokenizer(tokenizer, purpose: str) -> None:
    if tokenizer is None:
        raise ValueError(f"`tokenizer` is required {purpose}; pass the model's tokenizer.")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if special and len(tokenizer) <= len(special):
        # transformers 5 builds a tokenizer of special tokens only from a directory without tokenizer files.
        raise ValueError(
            f"`tokenizer` has no vocabulary: its {len(tokenizer)} tokens are all special tokens "
            f"({tokenizer.convert_ids_to_tokens(sorted(special))}). Is the model's tokenizer missing from "
            f"{getattr(tokenizer, 'name_or_path', '') or 'its directory'} (tokenizer.json, tokenizer.model)? "
            "Save it next to the model or pass the model's tokenizer."
        )


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


class _Scorer:
    """Runs the decoder, then the LM head only at scored positions, for Gemma-family models.

    Other causal LMs run whole, with `logits_to_keep`, so any model-specific head transform is respected.
    """

    _VOCAB_CHUNK = 4096  # LM-head rows per matmul: the logits of a slice stay small and are reused
    _STATE_CHUNK = 512  # hidden states per LM-head pass

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        config = model.config
        model_type = getattr(config, "model_type", "")
        self.split_head = any(model_type in (f.dense_model_type, f.pruned_model_type) for f in FAMILIES)
        signature = inspect.signature(model.forward).parameters
        # transformers 5.x names the cache argument `cache`; 4.x `past_key_values`.
        self.cache_kwarg = "cache" if "cache" in signature else "past_key_values"
        # Packed rows need a 4D mask per layer type, which Gemma's decoders accept as a dict for these two kernels.
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        self.packed = self.split_head and self.attn_implementation in ("sdpa", "eager")
        self.layer_types = sorted(set(getattr(config, "layer_types", None) or ["full_attention"]))
        self.sliding_window = getattr(config, "sliding_window", None)

    def forward(self, input_ids, attention_mask, position_ids, *, cache=None, keep: int):
        """Hidden states (or, for other models, logits) of the last `keep` positions, and the KV cache."""
        kwargs = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "position_ids": position_ids.to(self.device),
            "use_cache": cache is not False,
        }
        if cache is not None and cache is not False:
            kwargs[self.cache_kwarg] = cache
        if self.split_head:
            out = self.model.get_decoder()(**kwargs)
            states = out.last_hidden_state[:, -keep:]
        else:
            out = self.model(**kwargs, logits_to_keep=keep)
            states = out.logits
        # 5.x returns the cache as `cache` (reading `past_key_values` warns there); 4.x as `past_key_values`.
        return states, getattr(out, self.cache_kwarg, None)

    def forward_packed(self, input_ids, position_ids, allowed):
        """Decoder hidden states of packed rows; `allowed` (batch, query, key): the keys each position may see."""
        distance = position_ids[:, :, None] - position_ids[:, None, :]
        dtype = self.model.get_input_embeddings().weight.dtype
        masks = {}
        for layer_type in self.layer_types:
            mask = allowed
            if layer_type == "sliding_attention" and self.sliding_window is not None:
                mask = allowed & (distance < self.sliding_window)  # transformers: key > query - window
            mask = mask[:, None].to(self.device)
            if self.attn_implementation == "eager":  # eager attention adds the mask to the scores
                mask = torch.where(mask, torch.tensor(0.0, dtype=dtype), torch.finfo(dtype).min).to(dtype)
            masks[layer_type] = mask
        out = self.model.get_decoder()(
            input_ids=input_ids.to(self.device),
            attention_mask=masks,
            position_ids=position_ids.to(self.device),
            use_cache=False,
        )
        return out.last_hidden_state

    def logprobs(self, states: torch.Tensor) -> torch.Tensor:
        """Full next-token log-probabilities (positions, vocab) at each of `states`, float32."""
        if not self.split_head:
            return F.log_softmax(states.float(), dim=-1)
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        logits = head(states).float()
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return F.log_softmax(logits, dim=-1)

    def target_logprobs(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) at each of `states` (positions, hidden or vocab) for `targets` (positions,)."""
        return self.pair_logprobs(states, torch.arange(states.shape[0], device=states.device), targets)

    def pair_logprobs(self, states: torch.Tensor, owners: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(`targets[i]`) at `states[owners[i]]`, float32; a state may be scored against several targets."""
        if not self.split_head:
            return F.log_softmax(states.float(), dim=-1)[owners, targets]
        values = torch.empty(len(targets), dtype=torch.float32, device=states.device)
        for start in range(0, states.shape[0], self._STATE_CHUNK):
            chunk = states[start : start + self._STATE_CHUNK]
            picked = (owners >= start) & (owners < start + chunk.shape[0])
            values[picked] = self._head_logprobs(chunk, owners[picked] - start, targets[picked])
        return values

    def _head_logprobs(self, states, owners, targets):
        # The vocabulary in slices: full logits of a few hundred states would take gigabytes, and writing them to
        # fresh memory slows the matmul by about a third; the slice's logits stay in one reused buffer.
        weight = self.model.get_output_embeddings().weight  # Gemma's LM head: tied, no bias
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        count, vocab = states.shape[0], weight.shape[0]
        buffer = torch.empty(count * self._VOCAB_CHUNK, dtype=states.dtype, device=states.device)
        normalizer = torch.full((count,), -math.inf, dtype=torch.float32, device=states.device)
        values = torch.empty(len(targets), dtype=torch.float32, device=states.device)
        for start in range(0, vocab, self._VOCAB_CHUNK):
            rows = weight[start : start + self._VOCAB_CHUNK]
            logits = torch.mm(states, rows.t(), out=buffer[: count * rows.shape[0]].view(count, rows.shape[0])).float()
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            normalizer = torch.logaddexp(normalizer, torch.logsumexp(logits, dim=-1))
            inside = (targets >= start) & (targets < start + rows.shape[0])
            values[inside] = logits[owners[inside], targets[inside] - start]
        return values - normalizer[owners]


class _HeadQueue:
    """Scored hidden states of many batches, put through the LM head together (an efficient matmul size), each
    log-probability added to its request's result."""

    def __init__(self, scorer, results):
        self.scorer, self.results = scorer, results
        self.states, self.owners, self.targets, self.indices = [], [], [], []
        self.count = 0

    def add(self, states, owners: list[int], targets: list[int], indices: list[int]) -> None:
        """`states` (n, hidden); pair i adds log p(`targets[i]` | `states[owners[i]]`) to result `indices[i]`."""
        self.states.append(states)
        self.owners += [self.count + o for o in owners]
        self.targets += targets
        self.indices += indices
        self.count += states.shape[0]
        # Other models hand over full-vocabulary log-probabilities already: nothing to gain from waiting.
        if self.count >= self.scorer._STATE_CHUNK or not self.scorer.split_head:
            self.flush()

    def flush(self) -> None:
        if not self.states:
            return
        device = self.states[0].device
        values = self.scorer.pair_logprobs(
            torch.cat(self.states),
            torch.tensor(self.owners, device=device),
            torch.tensor(self.targets, device=device),
        ).tolist()
        for index, value in zip(self.indices, values):
            self.results[index] += value
        self.states, self.owners, self.targets, self.indices = [], [], [], []
        self.count = 0


def next_token_logprobs(model, tokenizer, prompts: list[str], *, batch_size: int = 16) -> torch.Tensor:
    """Log-probabilities of the token after each prompt, `(len(prompts), vocab)` float32 on the CPU.

    Prompts are tokenized as the evaluator tokenizes contexts (Gemma's BOS included), batched by length with left
    padding; only the last position goes through the LM head."""
    _check_tokenizer(tokenizer, "to encode the prompts")
    if not prompts:
        raise ValueError("`prompts` is empty: pass at least one prompt.")
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pad = pad_id(tokenizer)
    scorer = _Scorer(model)
    result = [None] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            states, _ = scorer.forward(*_left_padded([encoded[i] for i in batch], pad), cache=False, keep=1)
            for i, row in zip(batch, scorer.logprobs(states[:, -1]).cpu()):
                result[i] = row
    return torch.stack(result)


def kl_divergence(reference_logprobs: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean over rows of KL(reference || model) in nats, from two `next_token_logprobs` results."""
    if reference_logprobs.shape != logprobs.shape:
        raise ValueError(
            f"`reference_logprobs` {tuple(reference_logprobs.shape)} and `logprobs` {tuple(logprobs.shape)} must "
            "have the same shape (same prompts, same vocabulary)."
        )
    reference = reference_logprobs.double()
    return float((reference.exp() * (reference - logprobs.double())).sum(-1).mean())


def _left_padded(rows: list[list[int]], pad: int):
    input_ids, attention_mask = pad_rows(rows, pad, side="left")
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids, attention_mask, position_ids


def _score_unshared(scorer, requests, queue, pad, max_length):
    """One forward per (context + continuation); left padding puts every row's scored positions last."""
    inputs = [(r.context_ids + r.continuation_ids)[-(max_length + 1) :][:-1] for r in requests]
    # A continuation longer than the window keeps only the tokens the window can predict (its tail).
    counts = [min(len(r.continuation_ids), len(x)) for r, x in zip(requests, inputs)]
    keep = max(counts)
    states, _ = scorer.forward(*_left_padded(inputs, pad), cache=False, keep=keep)  # (batch, keep, ...)
    rows, columns, targets = [], [], []
    for row, (request, count) in enumerate(zip(requests, counts)):
        rows += [row] * count
        columns += range(keep - count, keep)
        targets += request.continuation_ids[len(request.continuation_ids) - count :]
    _queue_states(queue, states, rows, columns, targets, [requests[row].index for row in rows])


def _queue_states(queue, states, rows, columns, targets, indices):
    """Queues the (row, column) states of a batch, each scored against its target for result `indices[i]`."""
    picked = states[torch.tensor(rows, device=states.device), torch.tensor(columns, device=states.device)]
    queue.add(picked, list(range(len(rows))), targets, indices)


def _score_shared(scorer, groups, queue, pad, max_length):
    """One context forward per group, its KV cache copied to every continuation: exact, and n times less work."""
    input_ids, attention_mask, position_ids = _left_padded([list(g[0].context_ids) for g in groups], pad)
    last, cache = scorer.forward(input_ids, attention_mask, position_ids, keep=1)  # (groups, 1, ...)
    requests = [request for group in groups for request in group]
    if cache is None:  # a model without a KV cache: score every pair on its own
        return _score_unshared(scorer, requests, queue, pad, max_length)
    owner = [g for g, group in enumerate(groups) for _ in group]
    # The first continuation token is predicted at the context's last position: one LM-head row per group, shared
    # by its choices.
    first_targets = torch.tensor([r.continuation_ids[0] for r in requests], device=last.device)
    first = scorer.logprobs(last[:, 0])[torch.tensor(owner, device=last.device), first_targets].tolist()
    for request, value in zip(requests, first):
        queue.results[request.index] += value
    cache.batch_select_indices(torch.tensor(owner, device=scorer.device))
    width = max(len(r.continuation_ids) for r in requests) - 1
    if width == 0:  # single-token continuations: nothing more to run
        return None
    continuation = torch.full((len(requests), width), pad, dtype=torch.long)
    continuation_mask = torch.zeros((len(requests), width), dtype=torch.long)
    for row, request in enumerate(requests):  # right padding: pads come after every scored token
        tokens = request.continuation_ids[:-1]
        continuation[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        continuation_mask[row, : len(tokens)] = 1
    lengths = attention_mask.sum(-1)[owner]
    positions = lengths[:, None] + torch.arange(width)[None]
    mask = torch.cat([attention_mask[owner], continuation_mask], dim=1)
    states, _ = scorer.forward(continuation, mask, positions, cache=cache, keep=width)  # (requests, width, ...)
    rows, columns, targets = [], [], []
    for row, request in enumerate(requests):
        rest = request.continuation_ids[1:]
        rows += [row] * len(rest)
        columns += range(len(rest))
        targets += rest
    _queue_states(queue, states, rows, columns, targets, [requests[row].index for row in rows])
    return None


def _score_packed(scorer, groups, queue):
    """One row per group: the context, then every choice but its last token, each choice seeing the context and
    itself only, at the positions it has when scored alone. Right padding; a pad position sees only itself."""
    rows, scored = [], []
    for group in groups:
        context = group[0].context_ids
        tokens, positions, segments = list(context), list(range(len(context))), [0] * len(context)
        # The first token of every choice is predicted at the context's last position: one state, many targets.
        pairs = [(len(context) - 1, r.continuation_ids[0], r.index) for r in group]
        for segment, request in enumerate(group, start=1):
            start, rest = len(tokens), request.continuation_ids[:-1]
            tokens += rest
            positions += range(len(context), len(context) + len(rest))
            segments += [segment] * len(rest)
            pairs += [(start + i, t, request.index) for i, t in enumerate(request.continuation_ids[1:])]
        rows.append((tokens, positions, segments))
        scored.append(pairs)
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), width), 0, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, (tokens, positions, segments) in enumerate(rows):
        input_ids[b, : len(tokens)] = torch.tensor(tokens)
        position_ids[b, : len(tokens)] = torch.tensor(positions)
        segment_ids[b, : len(tokens)] = torch.tensor(segments)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # pads attend to themselves: finite values, never read
    states = scorer.forward_packed(input_ids, position_ids, allowed)
    flat, owners, targets, indices = [], [], [], []
    for b, pairs in enumerate(scored):
        slots = {}
        for position, target, index in pairs:
            owners.append(slots.setdefault(b * width + position, len(flat) + len(slots)))
            targets.append(target)
            indices.append(index)
        flat += list(slots)
    queue.add(states.reshape(-1, states.shape[-1])[torch.tensor(flat, device=states.device)], owners, targets, indices)


def _batches_of_rows(items, length, batch_size):
    """Longest first, at most `batch_size` per batch; a row under 3/4 of its batch's longest starts a new batch, so
    one long outlier does not pad a whole batch to its length."""
    batches = []
    for item in sorted(items, key=lambda x: -length(x)):
        if batches and len(batches[-1]) < batch_size and 4 * length(item) >= 3 * length(batches[-1][0]):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


@torch.inference_mode()
def loglikelihoods(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    share_context: bool = True,
    disable_progress: bool = False,
    description: str = "scoring",
) -> list[float]:
    """Sum of continuation log-probabilities for each `(context, continuation)` pair, as lm-eval computes it.

    With `share_context`, pairs whose context tokens are identical (the choices of one question) run the context once:
    for Gemma-family models with `sdpa` or `eager` attention as one packed row (context, then each choice, masked to
    see the context and itself), for other models through the context's KV cache, copied per choice. `batch_size`
    then counts contexts. Pairs longer than `max_length` (the model's context, capped at 2048) are left-truncated as
    lm-eval does, without sharing.
    """
    _check_tokenizer(tokenizer, "to score text")
    max_length = max_length or min(getattr(model.config, "max_position_embeddings", 2048), 2048)
    groups: dict[tuple[int, ...], list[_Request]] = {}
    for index, (context, continuation) in enumerate(pairs):
        context_ids, continuation_ids = _encode_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise ValueError(f"Continuation {continuation!r} encodes to no tokens.")
        key = tuple(context_ids) if share_context else (index,)
        groups.setdefault(key, []).append(_Request(index, context_ids, continuation_ids))
    too_long = lambda g: len(g[0].context_ids) + max(len(r.continuation_ids) for r in g) > max_length  # noqa: E731
    shared = [g for g in groups.values() if share_context and not too_long(g)]
    single = [r for g in groups.values() if not (share_context and not too_long(g)) for r in g]
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up at once.
    single.sort(key=lambda r: -(len(r.context_ids) + len(r.continuation_ids)))
    results = [0.0] * len(pairs)
    scorer = _Scorer(model)
    pad = pad_id(tokenizer)
    if scorer.packed:
        row_length = lambda g: len(g[0].context_ids) + sum(len(r.continuation_ids) - 1 for r in g)  # noqa: E731
        batches = [("packed", b) for b in _batches_of_rows(shared, row_length, batch_size)]
    else:
        shared.sort(key=lambda g: -len(g[0].context_ids))
        batches = [("shared", shared[i : i + batch_size]) for i in range(0, len(shared), batch_size)]
    batches += [("single", single[i : i + batch_size]) for i in range(0, len(single), batch_size)]
    queue = _HeadQueue(scorer, results)
    for kind, batch in tqdm(batches, desc=description, disable=disable_progress):
        if kind == "packed":
            _score_packed(scorer, batch, queue)
        elif kind == "shared":
            _score_shared(scorer, batch, queue, pad, max_length)
        else:
            _score_unshared(scorer, batch, queue, pad, max_length)
    queue.flush()
    return results


def evaluate(
    model,
    tokenizer,
    tasks: list[str] | tuple[str, ...] = PAPER_TASKS,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    exclude_ids: dict[str, list[str]] | None = None,
    half: str | None = None,
    data_dir: str | os.PathLike | None = None,
    return_predictions: bool = False,
    share_context: bool = True,
    disable_progress: bool = False,
) -> dict:
    """Zero-shot multiple-choice accuracy per task (`acc`, `acc_norm`, standard error) and the headline average.

    Args:
        tasks (`list[str]`): registered task names.
        limit (`int`, *optional*): score only the first `limit` examples of each task (after exclusions).
        exclude_ids (`dict[str, list[str]]`, *optional*): per task, example ids not to score (calibration examples
            carved from the evaluation split; `DietPruner.scores.provenance["excluded_eval_ids"]`).
        half (`str`, *optional*): `"dev"` or `"test"`: score only that half of each task's evaluation examples
            (`tasks.split_half`, a hash of the example id), after exclusions and before `limit`. Choose recipes on
            `"dev"`, report on `"test"`.
        return_predictions (`bool`, *optional*): add each example's chosen answers under `predictions`.
        share_context (`bool`, *optional*, defaults to `True`): run each question's context once for all choices.

    Returns:
        `dict` with `results` (per task: `acc`, `acc_norm`, `acc_stderr`, `num_scored`, `excluded_ids`), `average`
        (headline: `acc` for BoolQ, RTE, WinoGrande, `acc_norm` for the others) and `tasks`.
    """
    _check_tokenizer(tokenizer, "to score text")
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be >= 1, got {limit}.")
    if half is not None and half not in HALVES:
        raise ValueError(f"`half` must be one of {HALVES} or None, got {half!r}.")
    specs = [get_task(name) for name in tasks]
    exclude_ids = exclude_ids or {}
    results, predictions = {}, {}
    for spec in specs:
        excluded = {str(i) for i in exclude_ids.get(spec.name, [])}
        docs = [d for d in load_examples(spec, spec.eval_split, data_dir=data_dir) if str(d["id"]) not in excluded]
        if half is not None:
            docs = [d for d in docs if split_half(spec.name, str(d["id"])) == half]
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
            share_context=share_context,
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
            "half": half,
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
    _check_tokenizer(tokenizer, "to encode WikiText-2")
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
    scorer = _Scorer(model)
    nll, count = 0.0, 0
    for start in tqdm(starts, desc="perplexity", disable=disable_progress):
        chunk = ([bos] if bos is not None else []) + ids[start : start + window]
        input_ids, attention_mask, position_ids = _left_padded([chunk[:-1]], 0)
        states, _ = scorer.forward(input_ids, attention_mask, position_ids, cache=False, keep=len(chunk) - 1)
        targets = torch.tensor(chunk[1:], device=states.device)
        nll -= float(scorer.target_logprobs(states[0], targets).sum())
        count += len(targets)
    return {"perplexity": math.exp(nll / count), "tokens": count, "windows": len(starts), "max_length": max_length}
