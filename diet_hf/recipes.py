"""Named pruning recipes: which importance scores and which plan options make a DIET variant.

A recipe is a set of `DietPruner.prune` options; explicit arguments of `prune` override it. `"paper"` is the method as
arXiv:2603.23985 describes it (raw activation magnitudes ranked globally across layers, majority vote).
`"uniform_mlp_mean_ls_bos"`, the default, keeps DIET's per-task activation profiles but merges them by the mean of the
per-task rank-normalized scores instead of the majority vote, takes the same fraction from every layer, takes the whole
budget from MLP width (every attention head stays), rounds every layer's MLP width to a multiple of 64 (the global
budget held; which layers get the extra multiple follows the merged ranking; on the 2-core CPU of the benchmarks
misaligned widths like 1758 cost up to about 1.2x more per kept channel than the dense 2048, docs/benchmark.md "Speed
and width alignment"), and then reconstructs every cut `down_proj` by least squares on the calibration tokens
(`reconstruct`, `diet_hf.reconstruction`: the kept columns carry what the removed channels wrote, with the removed
channels' mean output as a bias, which is FLAP's bias compensation generalized), the fit constrained to reproduce the
BOS token's output exactly (`anchor_bos`: BOS is the same input at the start of every prompt, and Gemma's attention
sink). `"uniform_mlp_mean_ls"` is the same without that constraint (the default before 2026-12-01 19:30);
`"uniform_mlp_mean"` the same without the reconstruction (the default before 2026-11-30 14:00; before 2026-11-30 11:00
it did not round the widths either; its measured rows say which). `"uniform_mlp"` (the default before those) is the
same with DIET's vote, without rounding or reconstruction; `"balanced"` (the default of diet-hf 0.1) that with heads
removed at the same fraction as MLP width. Chosen on the dev halves of the seven tasks on Gemma 3 270M
(`benchmarks/results/dev_sweep.md`) by the rule written before: highest average, the lowest KL among candidates within
one standard error of it; `uniform_mlp_mean` had the lowest KL in that band at 20% (0.47) and 40% (0.97) and keeps
BoolQ's answer prior (P(yes) 0.75 / 0.73, dense 0.73; the vote moved it to 0.44 at 20%); the reconstruction then cut
its dev KL to 0.19 at 20% at the same average within noise, and the BOS anchor to 0.16 (0.46 -> 0.40 at 40%), the
average again the same within noise. docs/choosing_the_default.md has the numbers and says which candidates were added
after a test-half row prompted them.
"""

import torch

from .constants import family_for_model_type
from .constants import head_dim as config_head_dim
from .importance import ImportanceScores

__all__ = ["DEFAULT_RECIPE", "RECIPES", "SCORE_KINDS", "output_weight_norms", "recipe_options", "weighted_scores"]

# `activation`: the paper's mean |activation| per MLP dimension and mean head-output norm per head.
# `contribution`: the same times the norm of the output weights the unit writes through (`down_proj` column,
# `o_proj` column block): the mean size of what the unit adds to the layer's output.
SCORE_KINDS = ("activation", "contribution")

RECIPES: dict[str, dict] = {
    "paper": {
        "score": "activation",
        "merge": "vote",
        "mlp_normalize": "none",
        "head_normalize": "layer",
        "allocation": "global",
        "layer_sparsity_cap": None,
        "attention_ratio": 1.0,
        "keep_layers": None,
        "bias_compensation": False,
        "reconstruct": False,
        "anchor_bos": False,
        "round_to": 1,
    },
    "balanced": {
        "score": "activation",
        "merge": "vote",
        "mlp_normalize": "none",
        "head_normalize": "layer",
        "allocation": "uniform",
        "layer_sparsity_cap": None,
        "attention_ratio": 1.0,
        "keep_layers": None,
        "bias_compensation": True,
        "reconstruct": False,
        "anchor_bos": False,
        "round_to": 1,
    },
}
RECIPES["uniform_mlp"] = {**RECIPES["balanced"], "attention_ratio": 0.0}
RECIPES["uniform_mlp_mean"] = {**RECIPES["uniform_mlp"], "merge": "mean", "round_to": 64}
RECIPES["uniform_mlp_mean_ls"] = {**RECIPES["uniform_mlp_mean"], "reconstruct": True}
RECIPES["uniform_mlp_mean_ls_bos"] = {**RECIPES["uniform_mlp_mean_ls"], "anchor_bos": True}
DEFAULT_RECIPE = "uniform_mlp_mean_ls_bos"


def recipe_options(recipe: str) -> dict:
    """The options of the named recipe (a copy); `ValueError` lists the known recipes."""
    if recipe not in RECIPES:
        raise ValueError(f"`recipe` must be one of {sorted(RECIPES)}, got {recipe!r}.")
    return dict(RECIPES[recipe])


@torch.no_grad()
def output_weight_norms(model) -> dict[str, torch.Tensor]:
    """L2 norm of each MLP dimension's `down_proj` column (`mlp`, `(layers, intermediate_size)`) and Frobenius norm
    of each query head's `o_proj` column block (`heads`, `(layers, num_attention_heads)`) of a dense Gemma model."""
    config = model.config
    heads = config.num_attention_heads
    head_dim = config_head_dim(config)
    mlp, head = [], []
    layout = family_for_model_type(config.model_type).layout
    for layer_idx in range(config.num_hidden_layers):
        mlp.append(model.get_submodule(layout.mlp_path(layer_idx, "down")).weight.float().norm(dim=0).cpu())
        o_proj = model.get_submodule(layout.attention_path(layer_idx, "output")).weight.float()
        head.append(o_proj.view(o_proj.shape[0], heads, head_dim).norm(dim=(0, 2)).cpu())
    return {"mlp": torch.stack(mlp), "heads": torch.stack(head)}


def weighted_scores(scores: ImportanceScores, norms: dict[str, torch.Tensor]) -> ImportanceScores:
    """Every task's scores times the output-weight norms of `output_weight_norms` (the `contribution` score)."""
    mlp = {task: values * norms["mlp"].to(values.dtype) for task, values in scores.mlp.items()}
    heads = {task: values * norms["heads"].to(values.dtype) for task, values in scores.heads.items()}
    provenance = {**scores.provenance, "score": "contribution"}
    return ImportanceScores(mlp, heads, provenance, scores.channel_stats)
