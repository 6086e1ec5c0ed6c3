"""The selection steps `build_plan` composes: scores normalized and ranked, each task's top-K (global or per layer,
above a floor), the per-task masks merged (majority vote or mean rank), heads made GQA-valid, widths rounded to
multiples."""

import math

import torch

__all__ = ["merged_order", "rank_normalize", "select_global_top_k", "width_multiple"]


def rank_normalize(scores: torch.Tensor) -> torch.Tensor:
    """Ranks of all entries scaled to [0, 1] (1 = highest score); tied scores share their average rank."""
    flat = scores.flatten().double()
    values, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    average_rank = starts.double() + (counts.double() - 1) / 2
    return (average_rank[inverse] / max(flat.numel() - 1, 1)).view_as(scores)


def _priority_order(primary: torch.Tensor, secondary: torch.Tensor | None = None) -> torch.Tensor:
    """Flat indices sorted by descending `primary`, then descending `secondary`, then ascending (layer, index)."""
    order = torch.arange(primary.numel())
    if secondary is not None:
        order = order[torch.sort(-secondary.flatten().double()[order], stable=True).indices]
    return order[torch.sort(-primary.flatten().double()[order], stable=True).indices]


def _take(order: torch.Tensor, shape: tuple[int, int], k: int, floor: int) -> torch.Tensor:
    """Keep-mask of the first `k` units of `order`, after each layer's first `floor` units."""
    num_layers, units = shape
    keep = torch.zeros(num_layers * units, dtype=torch.bool)
    if floor > 0:
        taken = [0] * num_layers
        for index in order.tolist():
            layer = index // units
            if taken[layer] < floor:
                keep[index] = True
                taken[layer] += 1
    remaining = k - int(keep.sum())
    if remaining > 0:
        rest = order[~keep[order]]
        keep[rest[:remaining]] = True
    return keep.view(shape)


def _uniform_take(order: torch.Tensor, shape: tuple[int, int], k: int) -> torch.Tensor:
    num_layers, units = shape
    per_layer = [k // num_layers + (1 if i < k % num_layers else 0) for i in range(num_layers)]
    keep = torch.zeros(shape, dtype=torch.bool)
    taken = [0] * num_layers
    for index in order.tolist():
        layer, unit = divmod(index, units)
        if taken[layer] < per_layer[layer]:
            keep[layer, unit] = True
            taken[layer] += 1
    return keep


def select_global_top_k(scores: torch.Tensor, k: int, *, floor: int = 0) -> torch.Tensor:
    """Keep-mask of the `k` highest scores across all layers, each layer keeping at least `floor` units."""
    return _take(_priority_order(scores), tuple(scores.shape), k, floor)


def _allocate(order: torch.Tensor, shape: tuple[int, int], k: int, floor: int, allocation: str) -> torch.Tensor:
    """Keep-mask of `k` units in priority `order`: globally (each layer at least `floor`) or equally per layer."""
    return _uniform_take(order, shape, k) if allocation == "uniform" else _take(order, shape, k, floor)


def _vote(per_task: list[torch.Tensor], k: int, floor: int, merge: str, weights, allocation: str):
    """Per-task global top-`k` masks merged by `merge`: the merged priority order and the merged keep-mask."""
    masks = [select_global_top_k(s, k, floor=floor) for s in per_task]
    order = merged_order(masks, per_task, merge=merge, weights=weights)
    return order, _allocate(order, tuple(per_task[0].shape), k, floor, allocation)


def _vote_except(per_task, k, floor, merge, weights, allocation, protected: list[int]):
    """`_vote` with the `protected` layers kept whole: the other layers share what is left of `k`."""
    if not protected:
        return _vote(per_task, k, floor, merge, weights, allocation)
    layers, units = per_task[0].shape
    free = [i for i in range(layers) if i not in protected]
    k_free = max(k - len(protected) * units, floor * len(free))
    order_free, keep_free = _vote([s[free] for s in per_task], k_free, floor, merge, weights, allocation)
    mapped = torch.tensor(free)[order_free // units] * units + order_free % units
    first = torch.tensor([layer * units + unit for layer in protected for unit in range(units)], dtype=mapped.dtype)
    keep = torch.ones((layers, units), dtype=torch.bool)
    keep[free] = keep_free
    return torch.cat([first, mapped]), keep


def merged_order(masks, scores, *, merge: str = "vote", weights=None) -> torch.Tensor:
    """All units' flat indices, most important first. `merge="vote"` ranks units by (weighted votes of the per-task
    keep-`masks`, mean within-task rank-normalized score), then (layer, index), so units kept by a majority of tasks
    come first; `merge="mean"` ranks by the mean rank-normalized score alone."""
    weights = [1.0] * len(masks) if weights is None else list(weights)
    ranks = torch.stack([rank_normalize(s) * w for s, w in zip(scores, weights)]).sum(0) / sum(weights)
    votes = torch.stack([m.double() * w for m, w in zip(masks, weights)]).sum(0)
    return _priority_order(votes, ranks) if merge == "vote" else _priority_order(ranks)


def _normalize(scores: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "layer":
        return scores / scores.mean(dim=1, keepdim=True).clamp_min(1e-12)
    if mode == "standardize":  # FLAP: per-layer z-scores under one global threshold
        return (scores - scores.mean(dim=1, keepdim=True)) / scores.std(dim=1, keepdim=True).clamp_min(1e-12)
    return scores


def _legalize_heads(keep: torch.Tensor, goodness: torch.Tensor, num_kv_heads: int):
    """Per layer, the GQA-valid (query heads, KV heads) closest in count to the selection: equal groups per KV head."""
    num_heads = keep.shape[1]
    group_size = num_heads // num_kv_heads
    heads_kept, kv_kept = [], []
    for layer_idx in range(keep.shape[0]):
        wanted = int(keep[layer_idx].sum())
        if wanted == 0:
            heads_kept.append([])
            kv_kept.append([])
            continue
        # (num_kv, group_size): goodness of each group's heads, best first
        grouped = goodness[layer_idx].view(num_kv_heads, group_size).sort(dim=1, descending=True, stable=True)
        options = [
            (abs(kv * g - wanted), kv, g) for kv in range(1, num_kv_heads + 1) for g in range(1, group_size + 1)
        ]
        _, kv_count, per_group = min(options)
        group_value = grouped.values[:, :per_group].sum(dim=1)
        groups = sorted(torch.sort(-group_value, stable=True).indices[:kv_count].tolist())
        heads = sorted(g * group_size + int(i) for g in groups for i in grouped.indices[g, :per_group])
        heads_kept.append(heads)
        kv_kept.append(groups)
    return heads_kept, kv_kept


def width_multiple(round_to: int, width: int) -> int:
    """The multiple per-layer MLP widths are rounded to: `round_to`, at most 1/16 of the dense `width` (so a small
    model is not rounded to whole layers)."""
    return max(1, min(round_to, width // 16))


def _round_counts(counts: list[int], multiple: int, floor: int, maximum: int, order: torch.Tensor) -> list[int]:
    """Per-layer counts in multiples of `multiple` whose total stays within `multiple` of the original total.

    Each count goes to its nearest multiple (at least `floor`, rounded up to a multiple, at most `maximum`); while the
    total is off by a multiple or more, the layer whose count was rounded the furthest the other way moves by one
    multiple; among equal ones (uniform allocation: every layer alike) the layer whose next unit comes first in the
    priority `order` gains, or whose last kept unit comes last loses."""
    if multiple <= 1:
        return counts
    layers, units = len(counts), order.numel() // len(counts)
    floor = min(maximum, math.ceil(floor / multiple) * multiple)
    total = sum(counts)
    rounded = [min(max(round(c / multiple) * multiple, floor), maximum) for c in counts]
    remainders = [c - r for c, r in zip(counts, rounded)]
    positions = [[] for _ in range(layers)]  # positions[layer][i]: where the layer's i-th best unit is in `order`
    for position, index in enumerate(order.tolist()):
        positions[index // units].append(position)
    while abs(sum(rounded) - total) >= multiple:
        step = multiple if sum(rounded) < total else -multiple
        candidates = [i for i in range(layers) if floor <= rounded[i] + step <= maximum]
        if not candidates:
            break
        if step > 0:
            i = max(candidates, key=lambda j: (remainders[j], -positions[j][rounded[j]]))
        else:
            i = max(candidates, key=lambda j: (-remainders[j], positions[j][rounded[j] - 1]))
        rounded[i] += step
        remainders[i] -= step
    return rounded


def _take_counts(order: torch.Tensor, shape: tuple[int, int], counts: list[int]) -> list[list[int]]:
    units = shape[1]
    kept = [[] for _ in range(shape[0])]
    for index in order.tolist():
        layer, unit = divmod(index, units)
        if len(kept[layer]) < counts[layer]:
            kept[layer].append(unit)
    return [sorted(v) for v in kept]
