"""Baseline importance scores in DIET's pipeline: same data, same plan and surgery code, only the scores differ.

Each baseline returns an `ImportanceScores` with one pseudo-task named after the method; `BASELINE_PRUNE_OPTIONS`
holds the plan options that reproduce the method's allocation rule.
"""

import torch

from .constants import family_for_model_type
from .constants import head_dim as config_head_dim
from .importance import ImportanceScores

__all__ = ["BASELINES", "BASELINE_PRUNE_OPTIONS", "baseline_scores"]

BASELINES = ("random", "magnitude", "wanda_sp", "flap")
# Plan options per baseline (everything else as DIET): magnitude and Wanda-sp prune every layer alike, as their
# structured variants do; FLAP standardizes scores per layer and applies one global threshold.
BASELINE_PRUNE_OPTIONS = {
    "random": {"allocation": "global", "head_normalize": "none"},
    "magnitude": {"allocation": "uniform", "head_normalize": "none"},
    "wanda_sp": {"allocation": "uniform", "head_normalize": "none"},
    "flap": {"mlp_normalize": "standardize", "head_normalize": "standardize"},
}


def baseline_scores(method: str, model, scores: ImportanceScores | None = None, *, seed: int = 0) -> ImportanceScores:
    """Scores of a baseline for every MLP dimension and query head of a dense Gemma model.

    Args:
        method (`str`): `random`; `magnitude` (L2 norms of the weights a unit owns); `wanda_sp` (|W| times the input
            channel's activation L2 norm, per input channel of `down_proj` / `o_proj`, summed per unit); `flap` (the
            fluctuation metric: input-channel variance times the squared norm of its `down_proj` / `o_proj` column).
        scores (`ImportanceScores`, *optional*): DIET's profile with channel statistics (Wanda-sp and FLAP).
    """
    if method not in BASELINES:
        raise ValueError(f"`method` must be one of {BASELINES}, got {method!r}.")
    config = model.config
    layers, width, heads = config.num_hidden_layers, config.intermediate_size, config.num_attention_heads
    head_dim = config_head_dim(config)
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        mlp, head = torch.rand(layers, width, generator=generator), torch.rand(layers, heads, generator=generator)
        return ImportanceScores({method: mlp}, {method: head}, {"method": method, "model_type": config.model_type})
    if method in ("wanda_sp", "flap"):
        if scores is None:
            raise ValueError(f"`{method}` needs DIET's profile with per-channel statistics as `scores`.")
        moments = scores.channel_moments()
        tokens = float(sum(stats["num_tokens"] for stats in scores.channel_stats.values()))
    mlp_rows, head_rows = [], []
    layout = family_for_model_type(config.model_type).layout
    with torch.no_grad():
        for layer_idx in range(layers):
            weights = {role: model.get_submodule(path).weight.float() for role, path in _paths(layout, layer_idx)}
            gate, up, down, o_proj = weights["gate"], weights["up"], weights["down"], weights["output"]
            query = weights["query"]
            if method == "magnitude":
                mlp_rows.append(gate.norm(dim=1) + up.norm(dim=1) + down.norm(dim=0))
                per_head = query.view(heads, head_dim, -1).flatten(1).norm(dim=1)
                head_rows.append(per_head + o_proj.view(-1, heads, head_dim).transpose(0, 1).flatten(1).norm(dim=1))
                continue
            # (2, channels): per-channel E[a] and E[a^2] over all calibration tokens (kept on the CPU by the
            # profile), on the weights' device
            mlp_moments = moments["mlp"][layer_idx].float().to(down.device)
            attn_moments = moments["attn"][layer_idx].float().to(o_proj.device)
            if method == "wanda_sp":  # |W| x ||X_j||_2
                mlp_rows.append(down.abs().sum(0) * (mlp_moments[1] * tokens).sqrt())
                channel = o_proj.abs().sum(0) * (attn_moments[1] * tokens).sqrt()
            else:  # FLAP fluctuation: Var(X_j) x ||W_:,j||^2
                mlp_rows.append((mlp_moments[1] - mlp_moments[0] ** 2).clamp_min(0) * down.pow(2).sum(0))
                channel = (attn_moments[1] - attn_moments[0] ** 2).clamp_min(0) * o_proj.pow(2).sum(0)
            head_rows.append(channel.view(heads, head_dim).sum(1))
    return ImportanceScores(
        {method: torch.stack(mlp_rows).cpu()},
        {method: torch.stack(head_rows).cpu()},
        {"method": method, "model_type": config.model_type},
    )


def _paths(layout, layer_idx: int):
    yield from ((role, layout.mlp_path(layer_idx, role)) for role in ("gate", "up", "down"))
    yield from ((role, layout.attention_path(layer_idx, role)) for role in ("query", "output"))
