"""Scores -> per-task keep-masks -> one merged `PruningPlan` (DIET's majority vote, or the mean rank the default recipe
uses), with GQA-valid head selection."""

import functools
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from ._io import atomic_write_text, is_local_location
from .constants import PLAN_FILE, block_parameters
from .constants import head_dim as config_head_dim
from .selection import (
    _legalize_heads,
    _normalize,
    _round_counts,
    _take_counts,
    _vote_except,
    merged_order,
    rank_normalize,
    select_global_top_k,
    width_multiple,
)

__all__ = [
    "PruningPlan",
    "build_plan",
    "check_sparsity_targets",
    "merged_order",
    "rank_normalize",
    "select_global_top_k",
]

logger = logging.getLogger(__name__)


MERGE_MODES = ("vote", "mean")


NORMALIZATIONS = ("none", "layer", "standardize")


ALLOCATIONS = ("global", "uniform")


@dataclass
class PruningPlan:
    """Kept indices per layer of a dense Gemma model (sorted int lists; query heads, KV heads, MLP dimensions).

    Args:
        model_type (`str`): `model_type` of the dense model.
        hidden_size, head_dim, intermediate_size, num_attention_heads, num_key_value_heads (`int`):
            Dense sizes the indices refer to.
        mlp_kept_indices (`list[list[int]]`): kept MLP intermediate dimensions of every layer.
        head_kept_indices (`list[list[int]]`): kept query heads of every layer.
        kv_head_kept_indices (`list[list[int]]`): kept KV heads of every layer; every kept KV head keeps the same
            number of query heads of its own group.
        provenance (`dict`, *optional*): how the plan was made (tasks, sparsity, merge rule, ...).
    """

    model_type: str
    hidden_size: int
    head_dim: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    mlp_kept_indices: list[list[int]]
    head_kept_indices: list[list[int]]
    kv_head_kept_indices: list[list[int]]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        lists = (self.mlp_kept_indices, self.head_kept_indices, self.kv_head_kept_indices)
        if len({len(values) for values in lists}) != 1:
            raise ValueError(f"Kept-index lists must have one entry per layer, got lengths {[len(v) for v in lists]}.")
        group_size = self.num_attention_heads // self.num_key_value_heads
        for layer_idx, (mlp, heads, kv_heads) in enumerate(zip(*lists)):
            _check_indices(mlp, self.intermediate_size, f"mlp_kept_indices[{layer_idx}]")
            _check_indices(heads, self.num_attention_heads, f"head_kept_indices[{layer_idx}]")
            _check_indices(kv_heads, self.num_key_value_heads, f"kv_head_kept_indices[{layer_idx}]")
            groups = [head // group_size for head in heads]
            counts = {kv: groups.count(kv) for kv in kv_heads}
            if sorted(set(groups)) != list(kv_heads) or len(set(counts.values())) > 1:
                raise ValueError(
                    f"Layer {layer_idx}: query heads {heads} do not split into equal groups over the kept KV heads "
                    f"{kv_heads} ({group_size} query heads per KV head); remove heads in equal numbers per group."
                )

    @property
    def num_hidden_layers(self) -> int:
        return len(self.mlp_kept_indices)

    @property
    def intermediate_size_per_layer(self) -> list[int]:
        return [len(v) for v in self.mlp_kept_indices]

    @property
    def num_attention_heads_per_layer(self) -> list[int]:
        return [len(v) for v in self.head_kept_indices]

    @property
    def num_key_value_heads_per_layer(self) -> list[int]:
        return [len(v) for v in self.kv_head_kept_indices]

    def cut_modules(self) -> list[tuple[str, int]]:
        """The `("attn" | "mlp", layer_idx)` sublayers the plan narrows but does not remove, in forward order: those
        whose output projection (`o_proj` / `down_proj`) the least-squares reconstruction refits."""
        return [
            (kind, layer)
            for layer in range(self.num_hidden_layers)
            for kind, kept, full in (
                ("attn", self.head_kept_indices[layer], self.num_attention_heads),
                ("mlp", self.mlp_kept_indices[layer], self.intermediate_size),
            )
            if 0 < len(kept) < full
        ]

    def block_parameters(self) -> tuple[int, int]:
        """Attention + MLP parameters of the decoder blocks: (kept, dense)."""
        h, d = self.hidden_size, self.head_dim
        kept = sum(
            block_parameters(h, d, w, q, kv)
            for w, q, kv in zip(
                self.intermediate_size_per_layer,
                self.num_attention_heads_per_layer,
                self.num_key_value_heads_per_layer,
            )
        )
        dense = block_parameters(h, d, self.intermediate_size, self.num_attention_heads, self.num_key_value_heads)
        return kept, dense * self.num_hidden_layers

    @property
    def sparsity(self) -> float:
        """Fraction of decoder-block attention and MLP parameters removed."""
        kept, dense = self.block_parameters()
        return 1.0 - kept / dense

    @classmethod
    def keep_all(cls, config) -> "PruningPlan":
        """The plan that removes nothing."""
        layers = config.num_hidden_layers
        return cls(
            model_type=config.model_type,
            hidden_size=config.hidden_size,
            head_dim=config_head_dim(config),
            intermediate_size=config.intermediate_size,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            mlp_kept_indices=[list(range(config.intermediate_size)) for _ in range(layers)],
            head_kept_indices=[list(range(config.num_attention_heads)) for _ in range(layers)],
            kv_head_kept_indices=[list(range(config.num_key_value_heads)) for _ in range(layers)],
        )

    def check_compatible(self, config) -> None:
        """Raises `ValueError` when the plan refers to a model of other sizes."""
        expected = (
            config.num_hidden_layers,
            config.intermediate_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.hidden_size,
        )
        found = (
            self.num_hidden_layers,
            self.intermediate_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.hidden_size,
        )
        if expected != found:
            raise ValueError(
                f"This plan was made for a model with (layers, intermediate_size, heads, KV heads, "
                f"hidden_size) = {found}; the model has {expected}."
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PruningPlan":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("Ignoring unknown keys in a pruning plan (written by a newer diet-hf?): %s", unknown)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Writes `diet_pruning.json` into `save_directory` (via a temporary file, so never half-written)."""
        atomic_write_text(Path(save_directory) / PLAN_FILE, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
    ) -> "PruningPlan":
        """The plan saved beside a pruned model (`diet_pruning.json`): from a local directory, or from a Hub
        repository at `revision` (default: its default branch). `FileNotFoundError` where there is none."""
        if is_local_location(model_id_or_path):  # a path that is not there is a missing plan, not a Hub id
            path = Path(os.fspath(model_id_or_path)).expanduser() / PLAN_FILE
            if not path.is_file():
                raise FileNotFoundError(f"No pruning plan in {model_id_or_path}: {PLAN_FILE} is missing.")
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = Path(hf_hub_download(str(model_id_or_path), PLAN_FILE, revision=revision, token=token))
            except EntryNotFoundError as error:
                at = f" at revision {revision}" if revision else ""
                raise FileNotFoundError(
                    f"No pruning plan in {model_id_or_path}{at}: {PLAN_FILE} is missing."
                ) from error
        return cls.from_dict(json.loads(path.read_text()))


def _check_indices(values, size, name):
    if list(values) != sorted(set(values)) or any(not 0 <= v < size for v in values):
        raise ValueError(f"`{name}` must be sorted unique indices in [0, {size}), got {list(values)[:8]}...")


def _capped_floor(cap: float | None, kept: int, shape: tuple[int, int]) -> int:
    """Units every layer keeps when no layer may lose more than `cap` times the global removed fraction, as far as
    `kept` units in all allow (a few heads per layer cannot always meet a fraction exactly)."""
    if cap is None:
        return 0
    layers, units = shape
    removed_fraction = 1 - kept / (layers * units)
    wanted = math.ceil((1 - min(1.0, cap * removed_fraction)) * units - 1e-9)
    return min(wanted, kept // layers)


def _out_of_reach(name: str, value: float, most: float, floors: str, protected: list[int]) -> None:
    """`ValueError`: the target `name` = `value` removes more than the options' floors leave, at most `most`."""
    kept = f"; layers {protected} are kept whole (`keep_layers`)" if protected else ""
    raise ValueError(
        f"`{name}`={value!r} is out of reach of these options: {floors}{kept}, so at most "
        f"{math.floor(most * 1000) / 1000:.3f} can be removed. Ask for at most that, or loosen the floors "
        "(`min_mlp_fraction`, `attention_ratio` > 0 to remove heads too, `allow_sublayer_removal=True`)."
    )


def _layer_indices(keep_layers, num_layers: int) -> list[int]:
    """`keep_layers` as sorted non-negative layer indices; `ValueError` naming the argument on anything else."""
    if keep_layers is None:
        return []
    if isinstance(keep_layers, (str, int)) or not all(
        isinstance(i, int) and not isinstance(i, bool) and -num_layers <= i < num_layers for i in keep_layers
    ):
        raise ValueError(
            f"`keep_layers` must be a list of layer indices in [-{num_layers}, {num_layers}), got {keep_layers!r}."
        )
    indices = sorted({i % num_layers for i in keep_layers})
    if len(indices) == num_layers:
        raise ValueError(f"`keep_layers` keeps all {num_layers} layers whole: nothing is left to prune.")
    return indices


def check_sparsity_targets(sparsity=None, mlp_sparsity=None, attention_sparsity=None) -> None:
    """Raises `ValueError` unless exactly one way of giving the target is used, with numbers in range."""
    _check_fraction("sparsity", sparsity, low_open=True)
    _check_fraction("mlp_sparsity", mlp_sparsity, low_open=False)
    _check_fraction("attention_sparsity", attention_sparsity, low_open=False)
    if sparsity is not None and (mlp_sparsity is not None or attention_sparsity is not None):
        raise ValueError("Pass either `sparsity` or `mlp_sparsity` / `attention_sparsity`, not both.")
    if sparsity is None and not (mlp_sparsity or attention_sparsity):
        raise ValueError("Nothing to prune: pass `sparsity` in (0, 1), or `mlp_sparsity` / `attention_sparsity` > 0.")


def _check_fraction(name, value, low_open):
    if value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not ((0 < value < 1) if low_open else (0 <= value < 1)):
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"`{name}` must be in {interval}, got {value!r}.")


@functools.cache
def _log_rounding_once(multiple: int, round_to: int, width: int) -> None:
    """Says once per process (not at every target checked and every plan built) that `round_to` was lowered."""
    logger.info(
        "MLP widths are rounded to multiples of %d (`round_to` %d is over 1/16 of %d).", multiple, round_to, width
    )


def task_weight_list(task_weights: dict[str, float], tasks: list[str]) -> list[float]:
    """`task_weights` as one weight per task of `tasks` (0 for a task it leaves out); `ValueError` where it names a
    task that is not among `tasks` (a misspelt name would otherwise weigh nothing, silently) or gives none of them a
    positive weight."""
    unknown = sorted(set(task_weights) - set(tasks))
    if unknown:
        raise ValueError(f"`task_weights` names {unknown}, not among the profile's tasks {tasks}.")
    weights = [float(task_weights.get(t, 0.0)) for t in tasks]
    if sum(weights) <= 0:
        raise ValueError(f"`task_weights` must give a positive weight to at least one of {tasks}, got {task_weights}.")
    return weights


def build_plan(
    scores,
    config,
    *,
    sparsity: float | None = None,
    mlp_sparsity: float | None = None,
    attention_sparsity: float | None = None,
    merge: str = "vote",
    task_weights: dict[str, float] | None = None,
    mlp_normalize: str = "none",
    head_normalize: str = "layer",
    allocation: str = "global",
    round_to: int = 1,
    min_mlp_fraction: float = 0.05,
    allow_sublayer_removal: bool = False,
    layer_sparsity_cap: float | None = None,
    attention_ratio: float = 1.0,
    keep_layers: list[int] | None = None,
) -> PruningPlan:
    """Merges per-task scores into one plan that removes `sparsity` of the decoder blocks' attention + MLP parameters.

    Each task keeps its global top-K MLP dimensions and top-K heads (across all layers); the per-task masks are merged
    by `merge`; heads are then made GQA-valid per layer, and the MLP budget absorbs the difference so the total
    removed fraction meets `sparsity`. `layer_sparsity_cap` (>= 1, or None) keeps every layer's removed fraction of
    MLP width and of heads at most that multiple of the global fraction (1 = uniform widths; raises the floors).
    `attention_ratio` (>= 0, with `sparsity`) removes that multiple of `sparsity` of the heads (1 = the same fraction
    as the MLP; 0 = keep every head and take the whole budget from the MLP width). `keep_layers` (layer indices,
    negative from the end) are left whole; the other layers pay the whole budget.
    See `DietPruner.prune` for the other arguments.
    """
    check_sparsity_targets(sparsity, mlp_sparsity, attention_sparsity)
    from .options import PruneOptions  # here: options.py imports this module's constants

    # the option arguments are validated where the options are defined, once
    PruneOptions(
        merge=merge,
        task_weights=task_weights,
        mlp_normalize=mlp_normalize,
        head_normalize=head_normalize,
        allocation=allocation,
        round_to=round_to,
        min_mlp_fraction=min_mlp_fraction,
        allow_sublayer_removal=allow_sublayer_removal,
        layer_sparsity_cap=layer_sparsity_cap,
        attention_ratio=attention_ratio,
        keep_layers=keep_layers,
    )
    if sparsity is not None and sparsity * attention_ratio >= 1:
        raise ValueError(
            f"`attention_ratio` * `sparsity` must stay below 1 (the fraction of heads removed), got "
            f"{attention_ratio!r} * {sparsity!r}."
        )
    scores.check_compatible(config)
    protected = _layer_indices(keep_layers, config.num_hidden_layers)
    tasks = scores.tasks
    weights = None if task_weights is None else task_weight_list(task_weights, tasks)
    plan = PruningPlan.keep_all(config)
    attn_share = sparsity * attention_ratio if sparsity is not None else (attention_sparsity or 0.0)

    heads_kept, kv_kept = _planned_heads(
        scores, plan, protected, attn_share, attention_sparsity, head_normalize, merge, weights, allocation,
        allow_sublayer_removal, layer_sparsity_cap,
    )  # fmt: skip
    mlp_kept, multiple = _planned_mlp(
        scores, plan, protected, heads_kept, kv_kept, sparsity, mlp_sparsity, mlp_normalize, merge, weights,
        allocation, round_to, min_mlp_fraction, allow_sublayer_removal, layer_sparsity_cap,
    )  # fmt: skip

    provenance = {
        "tasks": tasks,
        "sparsity": sparsity,
        "mlp_sparsity": mlp_sparsity,
        "attention_sparsity": attention_sparsity,
        "merge": merge,
        "task_weights": task_weights,
        "mlp_normalize": mlp_normalize,
        "head_normalize": head_normalize,
        "allocation": allocation,
        "round_to": round_to,
        "width_multiple": multiple,
        "min_mlp_fraction": min_mlp_fraction,
        "allow_sublayer_removal": allow_sublayer_removal,
        "layer_sparsity_cap": layer_sparsity_cap,
        "attention_ratio": attention_ratio,
        "keep_layers": None if keep_layers is None else list(keep_layers),
        "achieved_sparsity": None,
    }
    plan = replace(  # a new plan: its `__post_init__` checks the kept indices
        plan,
        mlp_kept_indices=mlp_kept,
        head_kept_indices=heads_kept,
        kv_head_kept_indices=kv_kept,
        provenance=provenance,
    )
    plan.provenance["achieved_sparsity"] = plan.sparsity
    return plan


def _planned_heads(
    scores, plan, protected, attn_share, attention_sparsity, head_normalize, merge, weights, allocation,
    allow_sublayer_removal, layer_sparsity_cap,
) -> tuple[list[list[int]], list[list[int]]]:  # fmt: skip
    """`build_plan`'s heads: per-task global top-K, merged, then made GQA-valid per layer; the kept query heads and
    KV heads of every layer."""
    tasks = scores.tasks
    head_scores = [_normalize(scores.heads[t].double(), head_normalize) for t in tasks]
    num_layers, num_heads = head_scores[0].shape
    k_heads = round((1 - attn_share) * num_layers * num_heads)
    head_floor = 0 if allow_sublayer_removal else 1
    head_floor = max(head_floor, _capped_floor(layer_sparsity_cap, k_heads, (num_layers, num_heads)))
    least_heads = head_floor * (num_layers - len(protected)) + num_heads * len(protected)
    if attention_sparsity is not None and k_heads < least_heads:
        _out_of_reach(
            "attention_sparsity",
            attention_sparsity,
            1 - least_heads / (num_layers * num_heads),
            f"every layer keeps at least {head_floor} of its {num_heads} heads",
            protected,
        )
    order, keep = _vote_except(head_scores, k_heads, head_floor, merge, weights, allocation, protected)
    goodness = torch.empty(order.numel(), dtype=torch.float64)
    goodness[order] = torch.arange(order.numel(), 0, -1, dtype=torch.float64)
    return _legalize_heads(keep, goodness.view(num_layers, num_heads), plan.num_key_value_heads)


def _planned_mlp(
    scores, plan, protected, heads_kept, kv_kept, sparsity, mlp_sparsity, mlp_normalize, merge, weights, allocation,
    round_to, min_mlp_fraction, allow_sublayer_removal, layer_sparsity_cap,
) -> tuple[list[list[int]], int]:  # fmt: skip
    """`build_plan`'s MLP channels: the budget is what the total target leaves after the heads' exact removal; the
    kept channels of every layer and the width multiple they were rounded to."""
    hidden, head_dim, width = plan.hidden_size, plan.head_dim, plan.intermediate_size
    mlp_scores = [_normalize(scores.mlp[t].double(), mlp_normalize) for t in scores.tasks]
    num_layers, num_heads = len(heads_kept), plan.num_attention_heads
    if sparsity is not None:
        dense_total = plan.block_parameters()[1]
        attn_removed = (
            2
            * hidden
            * head_dim
            * sum((num_heads + plan.num_key_value_heads) - (len(q) + len(kv)) for q, kv in zip(heads_kept, kv_kept))
        )
        mlp_removed_units = round((sparsity * dense_total - attn_removed) / (3 * hidden))
        k_mlp = num_layers * width - mlp_removed_units
    else:
        k_mlp = round((1 - (mlp_sparsity or 0.0)) * num_layers * width)
    multiple = width_multiple(round_to, width)
    if multiple != round_to:
        _log_rounding_once(multiple, round_to, width)
    mlp_floor = 0 if allow_sublayer_removal else max(multiple, math.ceil(min_mlp_fraction * width))
    # the fewest channels these options keep: rounding lifts the floor to a multiple; protected layers stay whole
    least_width = min(width, math.ceil(mlp_floor / multiple) * multiple)
    least_mlp = least_width * (num_layers - len(protected)) + width * len(protected)
    if least_mlp - k_mlp >= multiple:  # short by more than rounding: the floors, not the target, set the plan
        floor_text = (
            f"every layer keeps at least {least_width} of its {width} MLP channels (`min_mlp_fraction`="
            f"{min_mlp_fraction}" + (f", widths in multiples of {multiple})" if multiple > 1 else ")")
        )
        if sparsity is not None:
            most = (attn_removed + 3 * hidden * (num_layers * width - least_mlp)) / dense_total
            heads = (
                "every head is kept"
                if attn_removed == 0
                else f"the heads removed make {attn_removed / dense_total:.1%} of the decoder-block parameters"
            )
            _out_of_reach("sparsity", sparsity, most, f"{floor_text} and {heads}", protected)
        _out_of_reach("mlp_sparsity", mlp_sparsity, 1 - least_mlp / (num_layers * width), floor_text, protected)
    k_mlp = min(max(k_mlp, mlp_floor * num_layers), num_layers * width)
    mlp_floor = max(mlp_floor, _capped_floor(layer_sparsity_cap, k_mlp, (num_layers, width)))
    order, keep = _vote_except(mlp_scores, k_mlp, mlp_floor, merge, weights, allocation, protected)
    counts = _round_counts(keep.sum(dim=1).tolist(), multiple, mlp_floor, width, order)
    return _take_counts(order, (num_layers, width), counts), multiple
