"""Log-likelihoods of (context, continuation) pairs, as lm-eval computes them, by one of three scoring strategies
behind one signature, `strategy.score(batch, queue)`:

- `PackedContexts` (Gemma-family models, `sdpa` or `eager` attention): one row per question, the context and then
  every choice, masked so each choice sees the context and itself only;
- `SharedContextCache` (other models): one context forward per question, its KV cache copied to every choice;
- `SeparatePairs`: one forward per pair (pairs longer than the window, `share_context=False`, models without a cache).

All three compute the same values (tested against each other and against lm-eval 0.4.13)."""

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._batching import pad_id
from ..loading import text_causal_lm
from .scorer import HeadQueue, Scorer, check_scorable, encode_pair, left_padded

__all__ = ["PackedContexts", "Request", "SeparatePairs", "SharedContextCache", "loglikelihoods"]


@dataclass
class Request:
    index: int
    context_ids: list[int]
    continuation_ids: list[int]


def _queue_states(queue: HeadQueue, states, rows, columns, targets, indices) -> None:
    """Queues the (row, column) states of a batch, each scored against its target for result `indices[i]`."""
    picked = states[torch.tensor(rows, device=states.device), torch.tensor(columns, device=states.device)]
    queue.add(picked, list(range(len(rows))), targets, indices)


class SeparatePairs:
    """One forward per (context + continuation); left padding puts every row's scored positions last.
    A batch is a list of `Request`s."""

    def __init__(self, scorer: Scorer, pad: int, max_length: int):
        self.scorer, self.pad, self.max_length = scorer, pad, max_length

    def score(self, batch: list[Request], queue: HeadQueue) -> None:
        inputs = [(r.context_ids + r.continuation_ids)[-(self.max_length + 1) :][:-1] for r in batch]
        # A continuation longer than the window keeps only the tokens the window can predict (its tail).
        counts = [min(len(r.continuation_ids), len(x)) for r, x in zip(batch, inputs)]
        keep = max(counts)
        states, _ = self.scorer.forward(*left_padded(inputs, self.pad), cache=False, keep=keep)  # (batch, keep, ...)
        rows, columns, targets = [], [], []
        for row, (request, count) in enumerate(zip(batch, counts)):
            rows += [row] * count
            columns += range(keep - count, keep)
            targets += request.continuation_ids[len(request.continuation_ids) - count :]
        _queue_states(queue, states, rows, columns, targets, [batch[row].index for row in rows])


class SharedContextCache:
    """One context forward per group (the choices of one question), its KV cache copied to every continuation:
    exact, and n times less work. A batch is a list of groups of `Request`s with identical context tokens; a model
    without a KV cache scores them as `SeparatePairs`."""

    def __init__(self, scorer: Scorer, pad: int, max_length: int):
        self.scorer, self.pad = scorer, pad
        self.fallback = SeparatePairs(scorer, pad, max_length)

    def score(self, batch: list[list[Request]], queue: HeadQueue) -> None:
        scorer, pad = self.scorer, self.pad
        input_ids, attention_mask, position_ids = left_padded([list(g[0].context_ids) for g in batch], pad)
        last, cache = scorer.forward(input_ids, attention_mask, position_ids, keep=1)  # (groups, 1, ...)
        requests = [request for group in batch for request in group]
        if cache is None:
            self.fallback.score(requests, queue)
            return
        owner = [g for g, group in enumerate(batch) for _ in group]
        # The first continuation token is predicted at the context's last position: one LM-head row per group,
        # shared by its choices.
        first_targets = torch.tensor([r.continuation_ids[0] for r in requests], device=last.device)
        first = scorer.logprobs(last[:, 0])[torch.tensor(owner, device=last.device), first_targets].tolist()
        for request, value in zip(requests, first):
            queue.results[request.index] += value
        cache.batch_select_indices(torch.tensor(owner, device=scorer.device))
        width = max(len(r.continuation_ids) for r in requests) - 1
        if width == 0:  # single-token continuations: nothing more to run
            return
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


class PackedContexts:
    """One row per group: the context, then every choice but its last token, each choice seeing the context and
    itself only, at the positions it has when scored alone. Right padding; a pad position sees only itself.
    A batch is a list of groups of `Request`s with identical context tokens."""

    def __init__(self, scorer: Scorer, pad: int, max_length: int):
        self.scorer = scorer

    def score(self, batch: list[list[Request]], queue: HeadQueue) -> None:
        rows, scored = [], []
        for group in batch:
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
        states = self.scorer.forward_packed(input_ids, position_ids, allowed)
        flat, owners, targets, indices = [], [], [], []
        for b, pairs in enumerate(scored):
            slots = {}
            for position, target, index in pairs:
                owners.append(slots.setdefault(b * width + position, len(flat) + len(slots)))
                targets.append(target)
                indices.append(index)
            flat += list(slots)
        picked = states.reshape(-1, states.shape[-1])[torch.tensor(flat, device=states.device)]
        queue.add(picked, owners, targets, indices)


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
    check_scorable(model, tokenizer, "to score text")
    model = text_causal_lm(model)  # an image-text Gemma 3 (dense or pruned): its text model scores text
    max_length = max_length or min(getattr(model.config, "max_position_embeddings", 2048), 2048)
    groups: dict[tuple[int, ...], list[Request]] = {}
    for index, (context, continuation) in enumerate(pairs):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise ValueError(f"Continuation {continuation!r} encodes to no tokens.")
        key = tuple(context_ids) if share_context else (index,)
        groups.setdefault(key, []).append(Request(index, context_ids, continuation_ids))
    too_long = lambda g: len(g[0].context_ids) + max(len(r.continuation_ids) for r in g) > max_length  # noqa: E731
    shared = [g for g in groups.values() if share_context and not too_long(g)]
    single = [r for g in groups.values() if not (share_context and not too_long(g)) for r in g]
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up at once.
    single.sort(key=lambda r: -(len(r.context_ids) + len(r.continuation_ids)))
    results = [0.0] * len(pairs)
    scorer = Scorer(model)
    pad = pad_id(tokenizer)
    if scorer.packed:
        packed = PackedContexts(scorer, pad, max_length)
        row_length = lambda g: len(g[0].context_ids) + sum(len(r.continuation_ids) - 1 for r in g)  # noqa: E731
        batches = [(packed, b) for b in _batches_of_rows(shared, row_length, batch_size)]
    else:
        cached = SharedContextCache(scorer, pad, max_length)
        shared.sort(key=lambda g: -len(g[0].context_ids))
        batches = [(cached, shared[i : i + batch_size]) for i in range(0, len(shared), batch_size)]
    separate = SeparatePairs(scorer, pad, max_length)
    batches += [(separate, single[i : i + batch_size]) for i in range(0, len(single), batch_size)]
    queue = HeadQueue(scorer, results)
    for strategy, batch in tqdm(batches, desc=description, disable=disable_progress):
        strategy.score(batch, queue)
    queue.flush()
    return results
