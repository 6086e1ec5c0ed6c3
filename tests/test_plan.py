"""Keep-masks, DIET's majority vote, GQA legalization, budgets and the plan file."""

import math

import pytest
import torch
from conftest import tiny_dense_model, tiny_gemma2_config

from diet_hf import ImportanceScores, PruningPlan, build_pruned_model
from diet_hf.plan import build_plan, merged_order, rank_normalize, select_global_top_k
from diet_hf.recipes import DEFAULT_RECIPE, recipe_options


def test_rank_normalize_orders_and_averages_ties():
    ranks = rank_normalize(torch.tensor([[3.0, 1.0], [1.0, 5.0]]))
    assert ranks.tolist() == [[2 / 3, 0.5 / 3], [0.5 / 3, 1.0]]


def test_global_top_k_with_floor():
    scores = torch.tensor([[9.0, 8.0, 7.0], [1.0, 0.5, 0.2]])
    assert select_global_top_k(scores, 3).tolist() == [[True, True, True], [False, False, False]]
    assert select_global_top_k(scores, 3, floor=1).tolist() == [[True, True, False], [True, False, False]]


def test_vote_keeps_majority_then_mean_rank_then_index():
    # 3 tasks over 1 layer x 5 units, keep k = 2
    masks = [torch.tensor([[1, 1, 0, 0, 0]]), torch.tensor([[1, 0, 1, 0, 0]]), torch.tensor([[0, 1, 1, 0, 0]])]
    masks = [m.bool() for m in masks]
    # every unit 0..2 has 2 votes; mean ranks decide: unit 2 best, then unit 0 and 1 tie -> lower index (0)
    scores = [
        torch.tensor([[3.0, 4.0, 5.0, 1.0, 0.0]]),
        torch.tensor([[4.0, 3.0, 5.0, 1.0, 0.0]]),
        torch.tensor([[4.0, 4.5, 3.5, 1.0, 0.0]]),
    ]
    # mean ranks: unit0 (2+3+3)/3, unit1 (3+2+4)/3, unit2 (4+4+2)/3 -> unit2 10/3, unit1 9/3, unit0 8/3
    assert merge_keep_masks(masks, scores, 2).tolist() == [[False, True, True, False, False]]
    # exact ties in votes and ranks fall back to (layer, index)
    same = [torch.tensor([[1.0, 1.0, 1.0]])] * 3
    all_kept = [torch.tensor([[True, True, True]])] * 3
    assert merge_keep_masks(all_kept, same, 2).tolist() == [[True, True, False]]


def test_vote_outranks_scores():
    # unit 3 has the best mean rank but only 1 of 5 votes; units with majority votes win
    masks = [
        torch.tensor([[1, 1, 0, 0]]),
        torch.tensor([[1, 1, 0, 0]]),
        torch.tensor([[1, 0, 1, 0]]),
        torch.tensor([[0, 1, 1, 0]]),
        torch.tensor([[0, 0, 0, 1]]),
    ]
    scores = [torch.tensor([[1.0, 2.0, 3.0, 100.0]])] * 5
    merged = merge_keep_masks([m.bool() for m in masks], scores, 2)
    assert merged.tolist() == [[True, True, False, False]]
    mean = merge_keep_masks([m.bool() for m in masks], scores, 2, merge="mean")
    assert mean.tolist() == [[False, False, True, True]]


def merge_keep_masks(masks, scores, k, merge="vote"):
    """The `k` units first in `merged_order`, as a keep-mask (global allocation, no floor)."""
    keep = torch.zeros(scores[0].numel(), dtype=torch.bool)
    keep[merged_order(masks, scores, merge=merge)[:k]] = True
    return keep.view(scores[0].shape)


def _scores(num_tasks=3, seed=0, config=None):
    config = config or tiny_gemma2_config()
    g = torch.Generator().manual_seed(seed)
    layers = config.num_hidden_layers
    mlp = {f"t{i}": torch.rand(layers, config.intermediate_size, generator=g) * (i + 1) for i in range(num_tasks)}
    heads = {f"t{i}": torch.rand(layers, config.num_attention_heads, generator=g) for i in range(num_tasks)}
    return ImportanceScores(mlp, heads, {"model_type": config.model_type})


@pytest.mark.parametrize("sparsity", [0.1, 0.2, 0.3, 0.4, 0.5])
@pytest.mark.parametrize("kv_heads", [2, 4])
def test_budget_met_and_widths_uneven(sparsity, kv_heads):
    config = tiny_gemma2_config(
        num_hidden_layers=6,
        intermediate_size=256,
        hidden_size=64,
        num_key_value_heads=kv_heads,
        layer_types=["sliding_attention", "full_attention"] * 3,
    )
    g = torch.Generator().manual_seed(1)
    depth = torch.linspace(2.0, 0.2, 6)[:, None]  # scores fall with depth, as on Gemma 3
    mlp = {f"t{i}": torch.rand(6, 256, generator=g) * depth for i in range(3)}
    heads = {f"t{i}": torch.rand(6, 4, generator=g) * depth for i in range(3)}
    plan = build_plan(ImportanceScores(mlp, heads), config, sparsity=sparsity)
    assert abs(plan.sparsity - sparsity) <= 0.005
    assert len(set(plan.intermediate_size_per_layer)) > 1


def test_round_to_keeps_budget_within_one_unit_per_layer():
    config = tiny_gemma2_config(num_hidden_layers=4, intermediate_size=256, layer_types=["sliding_attention"] * 4)
    scores = _scores(config=config)
    plan = build_plan(scores, config, mlp_sparsity=0.3, round_to=16)
    assert all(w % 16 == 0 for w in plan.intermediate_size_per_layer)
    assert abs(sum(plan.intermediate_size_per_layer) - round(0.7 * 4 * 256)) <= 16 * 4


@pytest.mark.parametrize("layer_scale", [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
def test_uniform_widths_rounded_by_priority_not_layer_index(layer_scale):
    # 184 units per layer round to 192 (11.5 -> 12 multiples of 16); 32 too many in all: the two layers whose last
    # kept units rank last (the lowest-scored layers) give back one multiple each
    config = tiny_gemma2_config(num_hidden_layers=4, intermediate_size=256, layer_types=["sliding_attention"] * 4)
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor(layer_scale)[:, None]
    mlp = {f"t{i}": torch.rand(4, 256, generator=g) * scale for i in range(3)}
    heads = {f"t{i}": torch.rand(4, config.num_attention_heads, generator=g) for i in range(3)}
    scores = ImportanceScores(mlp, heads, {"model_type": config.model_type})
    options = {"mlp_sparsity": 1 - 736 / 1024, "allocation": "uniform", "merge": "mean"}
    assert build_plan(scores, config, **options).intermediate_size_per_layer == [184] * 4
    plan = build_plan(scores, config, round_to=16, **options)
    expected = [192 if s > 2 else 176 for s in layer_scale]
    assert plan.intermediate_size_per_layer == expected
    assert plan.provenance["width_multiple"] == 16


def test_round_to_is_capped_at_a_sixteenth_of_the_width():
    config = tiny_gemma2_config(num_hidden_layers=4, intermediate_size=256, layer_types=["sliding_attention"] * 4)
    plan = build_plan(_scores(config=config), config, mlp_sparsity=0.3, round_to=64)
    assert plan.provenance["round_to"] == 64 and plan.provenance["width_multiple"] == 16
    assert all(w % 16 == 0 for w in plan.intermediate_size_per_layer)
    assert abs(sum(plan.intermediate_size_per_layer) - round(0.7 * 4 * 256)) < 16


def test_default_recipe_rounds_widths_to_multiples_of_64():
    config = tiny_gemma2_config(
        num_hidden_layers=3, intermediate_size=2048, hidden_size=64, layer_types=["sliding_attention"] * 3
    )
    options = recipe_options(DEFAULT_RECIPE)
    assert options["round_to"] == 64 and recipe_options("paper")["round_to"] == 1
    plan_options = {k: options[k] for k in ("merge", "allocation", "round_to", "attention_ratio")}
    for sparsity in (0.1, 0.2, 0.3, 0.4):
        plan = build_plan(_scores(config=config), config, sparsity=sparsity, **plan_options)
        assert all(w % 64 == 0 for w in plan.intermediate_size_per_layer)
        assert abs(plan.sparsity - sparsity) < 64 * 3 * 64 / plan.block_parameters()[1]


def test_heads_are_gqa_valid_and_floors_hold():
    config = tiny_gemma2_config(num_hidden_layers=2)
    plan = build_plan(_scores(config=config), config, attention_sparsity=0.6)
    for heads, kv in zip(plan.head_kept_indices, plan.kv_head_kept_indices):
        assert len(heads) >= 1 and len(heads) % len(kv) == 0
        assert sorted({h // 2 for h in heads}) == kv
    assert plan.intermediate_size_per_layer == [64, 64]


@pytest.mark.parametrize("attention_sparsity, kept", [(0.2, 6), (0.3, 6), (0.45, 4)])  # of 8 heads: 6.4, 5.6, 4.4
def test_the_head_budget_is_the_nearest_whole_number_of_heads(attention_sparsity, kept):
    config = tiny_gemma2_config(num_hidden_layers=2, num_key_value_heads=4)  # no GQA: no legalization moves a head
    plan = build_plan(_scores(config=config), config, attention_sparsity=attention_sparsity)
    assert sum(plan.num_attention_heads_per_layer) == kept


def test_sublayer_removal_only_when_allowed():
    config = tiny_gemma2_config()
    mlp = {"a": torch.tensor([[1.0] * 64, [1e-6] * 64])}
    heads = {"a": torch.tensor([[1.0] * 4, [1e-6] * 4])}
    scores = ImportanceScores(mlp, heads)
    kept = build_plan(scores, config, mlp_sparsity=0.5, attention_sparsity=0.5, head_normalize="none")
    assert min(kept.intermediate_size_per_layer) > 0 and min(kept.num_attention_heads_per_layer) > 0
    removed = build_plan(
        scores, config, mlp_sparsity=0.5, attention_sparsity=0.5, head_normalize="none", allow_sublayer_removal=True
    )
    assert removed.intermediate_size_per_layer == [64, 0]
    assert removed.num_attention_heads_per_layer == [4, 0]


@pytest.mark.parametrize("cap", [1.0, 1.5, 2.0])
def test_layer_sparsity_cap_bounds_every_layer(cap):
    config = tiny_gemma2_config(
        num_hidden_layers=6, intermediate_size=256, hidden_size=64, layer_types=["sliding_attention"] * 6
    )
    g = torch.Generator().manual_seed(1)
    depth = torch.linspace(2.0, 0.2, 6)[:, None]  # scores fall with depth: uncapped, the last layers lose most
    mlp = {f"t{i}": torch.rand(6, 256, generator=g) * depth for i in range(3)}
    heads = {f"t{i}": torch.rand(6, 4, generator=g) * depth for i in range(3)}
    scores = ImportanceScores(mlp, heads)
    uncapped = build_plan(scores, config, mlp_sparsity=0.3, head_normalize="none")
    capped = build_plan(scores, config, mlp_sparsity=0.3, head_normalize="none", layer_sparsity_cap=cap)
    assert min(uncapped.intermediate_size_per_layer) < 256 * (1 - cap * 0.3)
    kept = sum(uncapped.intermediate_size_per_layer)
    # each layer keeps 1 - cap x 30% of its width, as far as the kept total allows (integer widths)
    assert min(capped.intermediate_size_per_layer) == min(math.ceil(256 * (1 - cap * 0.3) - 1e-9), kept // 6)
    assert sum(capped.intermediate_size_per_layer) == kept
    if cap == 1.0:
        assert max(capped.intermediate_size_per_layer) - min(capped.intermediate_size_per_layer) <= 1
    assert capped.provenance["layer_sparsity_cap"] == cap
    # heads: 4 per layer cannot lose exactly 20% each; the cap holds as far as the kept count allows
    total = build_plan(scores, config, sparsity=0.2, head_normalize="none", layer_sparsity_cap=1.0)
    assert abs(total.sparsity - 0.2) <= 0.005
    assert min(total.num_attention_heads_per_layer) >= 2


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0, 2.0])
def test_attention_ratio_moves_the_budget_between_heads_and_mlp(ratio):
    config = tiny_gemma2_config(
        num_hidden_layers=6,
        intermediate_size=256,
        hidden_size=64,
        num_key_value_heads=1,
        layer_types=["sliding_attention"] * 6,
    )
    scores = _scores(seed=5, config=config)
    plan = build_plan(scores, config, sparsity=0.25, attention_ratio=ratio, allocation="uniform")
    heads = sum(plan.num_attention_heads_per_layer)
    # heads removed: ratio x 25% of the 24 heads (one KV head: no GQA rounding); the MLP absorbs the rest
    assert 24 - heads == round(ratio * 0.25 * 24)
    if ratio == 0:
        assert heads == 24
    assert abs(plan.sparsity - 0.25) <= 0.01
    assert plan.provenance["attention_ratio"] == ratio
    default = build_plan(scores, config, sparsity=0.25, allocation="uniform")
    if ratio == 1.0:
        assert plan.to_dict()["mlp_kept_indices"] == default.to_dict()["mlp_kept_indices"]


@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_keep_layers_leaves_them_whole_and_meets_the_budget(allocation):
    config = tiny_gemma2_config(
        num_hidden_layers=4,
        intermediate_size=256,
        hidden_size=64,
        num_key_value_heads=1,
        layer_types=["sliding_attention"] * 4,
    )
    scores = _scores(seed=2, config=config)
    plan = build_plan(scores, config, sparsity=0.3, keep_layers=[-1, 0], allocation=allocation)
    assert plan.intermediate_size_per_layer[0] == plan.intermediate_size_per_layer[3] == 256
    assert plan.num_attention_heads_per_layer[0] == plan.num_attention_heads_per_layer[3] == 4
    assert max(plan.intermediate_size_per_layer[1:3]) < 256
    assert abs(plan.sparsity - 0.3) <= 0.01
    assert plan.provenance["keep_layers"] == [-1, 0]
    # the free layers are ranked among themselves exactly as a plan of those layers alone would rank them
    if allocation == "uniform":
        assert abs(plan.intermediate_size_per_layer[1] - plan.intermediate_size_per_layer[2]) <= 1


def test_plan_is_deterministic_and_round_trips(tmp_path):
    config = tiny_gemma2_config()
    first = build_plan(_scores(seed=3), config, sparsity=0.25)
    second = build_plan(_scores(seed=3), config, sparsity=0.25)
    assert first.to_dict() == second.to_dict()
    first.save_pretrained(tmp_path)
    assert PruningPlan.from_pretrained(tmp_path).to_dict() == first.to_dict()
    assert PruningPlan.from_dict({**first.to_dict(), "from_the_future": 1}).to_dict() == first.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity": 1.0}, r"`sparsity` must be in \(0, 1\), got 1.0"),
        ({"sparsity": 0.0}, r"`sparsity` must be in \(0, 1\), got 0.0"),
        ({"sparsity": -0.1}, r"`sparsity` must be in \(0, 1\)"),
        ({"mlp_sparsity": 1.2}, r"`mlp_sparsity` must be in \[0, 1\), got 1.2"),
        ({"sparsity": 0.2, "mlp_sparsity": 0.1}, r"either `sparsity` or"),
        ({}, r"Nothing to prune"),
        ({"sparsity": 0.2, "merge": "max"}, r"`merge` must be one of"),
        ({"sparsity": 0.2, "round_to": 0}, r"`round_to` must be a positive integer"),
        ({"sparsity": 0.2, "layer_sparsity_cap": 0.5}, r"`layer_sparsity_cap` must be a number >= 1, got 0.5"),
        ({"sparsity": 0.2, "attention_ratio": -1}, r"`attention_ratio` must be a number >= 0, got -1"),
        ({"sparsity": 0.5, "attention_ratio": 2}, r"`attention_ratio` \* `sparsity` must stay below 1"),
        (
            {"sparsity": 0.2, "keep_layers": [5]},
            r"`keep_layers` must be a list of layer indices in \[-2, 2\), got \[5\]",
        ),
        ({"sparsity": 0.2, "keep_layers": [0, 1]}, r"`keep_layers` keeps all 2 layers whole"),
        ({"sparsity": 0.2, "task_weights": {"zzz": 1.0}}, r"`task_weights` names \['zzz'\], not among the profile's"),
        ({"sparsity": 0.2, "task_weights": {"t0": 1.0, "zzz": 1.0}}, r"`task_weights` names \['zzz'\]"),
        ({"sparsity": 0.2, "task_weights": {"t0": 0.0}}, r"`task_weights` must give a positive weight"),
        ({"sparsity": 0.2, "task_weights": {"t0": -1.0, "t1": 2.0}}, r"a finite weight >= 0, got t0=-1.0"),
        ({"sparsity": 0.2, "task_weights": {"t0": float("inf")}}, r"a finite weight >= 0, got t0=inf"),
    ],
)
def test_build_plan_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_plan(_scores(), tiny_gemma2_config(), **kwargs)


def test_a_plan_for_other_sizes_or_none_at_all_is_refused_by_name(tmp_path):
    """A saved plan applied to another model (here a wider MLP) must not slice it; a directory without one says so."""
    plan = PruningPlan.keep_all(tiny_gemma2_config())
    with pytest.raises(
        ValueError,
        match=r"This plan was made for a model with \(layers, intermediate_size, heads, KV heads, hidden_size\) = "
        r"\(2, 64, 4, 2, 32\); the model has \(2, 96, 4, 2, 32\)\.",
    ):
        build_pruned_model(tiny_dense_model("gemma2", intermediate_size=96), plan)
    with pytest.raises(FileNotFoundError, match=r"No pruning plan in .*: diet_pruning.json is missing\."):
        PruningPlan.from_pretrained(tmp_path)
    # a path that is not there is a missing plan too, not a Hub repository id
    for absent in (tmp_path / "absent", str(tmp_path / "absent")):
        with pytest.raises(FileNotFoundError, match=r"No pruning plan in .*absent: diet_pruning.json is missing\."):
            PruningPlan.from_pretrained(absent)


def test_invalid_plan_errors():
    plan = PruningPlan.keep_all(tiny_gemma2_config())
    data = plan.to_dict()
    with pytest.raises(ValueError, match=r"Layer 0: query heads \[0, 1, 2\] do not split into equal groups"):
        PruningPlan.from_dict({**data, "head_kept_indices": [[0, 1, 2], [0, 1, 2, 3]]})
    with pytest.raises(ValueError, match=r"`mlp_kept_indices\[1\]` must be sorted unique indices in \[0, 64\)"):
        PruningPlan.from_dict({**data, "mlp_kept_indices": [[0], [5, 3]]})
    with pytest.raises(ValueError, match=r"`mlp_kept_indices\[0\]` must be sorted unique indices in \[0, 64\)"):
        PruningPlan.from_dict({**data, "mlp_kept_indices": [[0, 64], [0]]})  # one past the last channel
    with pytest.raises(ValueError, match=r"one entry per layer"):
        PruningPlan.from_dict({**data, "mlp_kept_indices": [[0]]})


def test_cut_modules_are_the_narrowed_sublayers_not_the_removed_or_whole_ones():
    plan = PruningPlan.keep_all(tiny_gemma2_config())  # 2 layers, 64 MLP channels, 4 heads on 2 KV heads
    plan.mlp_kept_indices = [list(range(10)), []]
    plan.head_kept_indices, plan.kv_head_kept_indices = [[0, 1, 2, 3], [0, 2]], [[0, 1], [0, 1]]
    plan.__post_init__()
    assert plan.cut_modules() == [("mlp", 0), ("attn", 1)]
    assert PruningPlan.keep_all(tiny_gemma2_config()).cut_modules() == []


def _layer_scores(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = config.num_hidden_layers
    mlp = {f"t{i}": torch.rand(layers, config.intermediate_size, generator=g) for i in range(3)}
    heads = {f"t{i}": torch.rand(layers, config.num_attention_heads, generator=g) for i in range(3)}
    return ImportanceScores(mlp, heads, {"model_type": config.model_type})


@pytest.mark.parametrize("merge", ["vote", "mean"])
def test_a_task_weight_counts_the_task_that_many_times(merge):
    """`task_weights`: a weight of 2 merges as the task given twice, and a weight of 0 as the task left out."""
    config = tiny_gemma2_config(num_hidden_layers=3, intermediate_size=64, layer_types=["sliding_attention"] * 3)
    scores = _layer_scores(config)  # tasks t0, t1, t2, which disagree
    options = {"sparsity": 0.3, "merge": merge, "round_to": 1}

    def subset(mlp_tasks: dict):
        heads = {name: scores.heads[source] for name, source in mlp_tasks.items()}
        return ImportanceScores({n: scores.mlp[s] for n, s in mlp_tasks.items()}, heads, dict(scores.provenance))

    twice = build_plan(subset({"t0": "t0", "t0 again": "t0", "t1": "t1", "t2": "t2"}), config, **options)
    weighted = build_plan(scores, config, task_weights={"t0": 2.0, "t1": 1.0, "t2": 1.0}, **options)
    assert weighted.mlp_kept_indices == twice.mlp_kept_indices
    assert weighted.mlp_kept_indices != build_plan(scores, config, **options).mlp_kept_indices
    alone = build_plan(subset({"t1": "t1"}), config, **options)
    assert build_plan(scores, config, task_weights={"t1": 1.0}, **options).mlp_kept_indices == alone.mlp_kept_indices


@pytest.mark.parametrize("mode", ["layer", "standardize"])
def test_mlp_normalization_removes_each_layers_scale(mode):
    """Under a global ranking, `mlp_normalize="layer"` gives the same plan when a layer's scores are all multiplied
    by one factor, and `"standardize"` (FLAP's z-scores) when they are also shifted; raw scores do not."""
    config = tiny_gemma2_config(num_hidden_layers=3, intermediate_size=64, layer_types=["sliding_attention"] * 3)
    scores = _layer_scores(config)
    scale = torch.tensor([[1.0], [7.0], [0.2]])
    shift = torch.tensor([[0.0], [3.0], [-0.1]]) if mode == "standardize" else 0.0
    moved = ImportanceScores(
        {t: s * scale + shift for t, s in scores.mlp.items()}, dict(scores.heads), dict(scores.provenance)
    )
    options = {"sparsity": 0.3, "allocation": "global", "round_to": 1}
    for normalize, same in ((mode, True), ("none", False)):
        plans = [build_plan(s, config, mlp_normalize=normalize, **options).mlp_kept_indices for s in (scores, moved)]
        assert (plans[0] == plans[1]) is same, normalize


@pytest.mark.parametrize("seed", range(4))
def test_rounding_moves_the_layer_whose_next_or_last_unit_the_order_ranks_first_or_last(seed):
    """When every layer's count rounds alike (uniform allocation), the total is mended one multiple at a time: the
    layer whose next unit comes first in the priority order gains one, or the layer whose last kept unit comes last
    loses one (`_round_counts`' docstring, re-derived here from the order itself)."""
    from diet_hf.selection import _round_counts

    layers, units, multiple = 3, 128, 32
    order = torch.randperm(layers * units, generator=torch.Generator().manual_seed(seed))
    positions = [[p for p, index in enumerate(order.tolist()) if index // units == layer] for layer in range(layers)]
    # 44 each rounds down to 32: 36 short of the total, so the layer whose 33rd unit comes first gains 32
    gains = min(range(layers), key=lambda layer: positions[layer][32])
    expected = [64 if layer == gains else 32 for layer in range(layers)]
    assert _round_counts([44] * layers, multiple, 0, units, order) == expected
    # 48 each rounds up to 64: 48 over, so the layer whose 64th unit comes last loses 32
    loses = max(range(layers), key=lambda layer: positions[layer][63])
    expected = [32 if layer == loses else 64 for layer in range(layers)]
    assert _round_counts([48] * layers, multiple, 0, units, order) == expected
    # counts that round unlike: the layer rounded furthest the other way moves first, before any tie-break; 47 went
    # down by 15, each 107 by 11 (224 of 261: one multiple short)
    assert _round_counts([47, 107, 107], multiple, 0, units, order) == [64, 96, 96]
    # and a layer may gain up to its whole width: 110 went down by 14 to 96, each 45 by 13 (160 of 200)
    assert _round_counts([110, 45, 45], multiple, 0, units, order) == [128, 32, 32]


def test_a_target_past_the_floors_is_refused_with_the_most_that_can_be_removed():
    # the default keeps every head and at least 128 of 2048 channels per layer (5%, rounded up to a multiple of 64)
    config = tiny_gemma2_config(
        num_hidden_layers=3, intermediate_size=2048, hidden_size=64, layer_types=["sliding_attention"] * 3
    )
    scores = _layer_scores(config)
    not_plan = ("score", "bias_compensation", "reconstruct", "anchor_bos")
    options = {k: v for k, v in recipe_options(DEFAULT_RECIPE).items() if k not in not_plan}
    dense = PruningPlan.keep_all(config).block_parameters()[1]
    most = 3 * (2048 - 128) * 3 * 64 / dense
    plan = build_plan(scores, config, sparsity=most - 0.001, **options)
    assert plan.intermediate_size_per_layer == [128] * 3
    assert abs(plan.sparsity - most) < 0.002
    with pytest.raises(
        ValueError,
        match=rf"`sparsity`=0.95 is out of reach .*128 of its 2048 .*every head is kept.* "
        rf"at most {math.floor(most * 1000) / 1000:.3f} can be removed",
    ):
        build_plan(scores, config, sparsity=0.95, **options)
    # floors loosened: reachable
    assert build_plan(scores, config, sparsity=0.95, **{**options, "min_mlp_fraction": 0.0}).sparsity > 0.94
    with pytest.raises(ValueError, match=r"`mlp_sparsity`=0.99 is out of reach.*at most 0.937"):
        build_plan(scores, config, mlp_sparsity=0.99, **options)
    assert build_plan(scores, config, mlp_sparsity=0.99, **{**options, "allow_sublayer_removal": True}).sparsity > 0


def test_kept_layers_and_the_one_head_floor_bound_a_target():
    config = tiny_gemma2_config(num_hidden_layers=4, intermediate_size=256, layer_types=["sliding_attention"] * 4)
    scores = _layer_scores(config)
    with pytest.raises(ValueError, match=r"`mlp_sparsity`=0.6 is out of reach.*layers \[0, 3\] are kept whole"):
        build_plan(scores, config, mlp_sparsity=0.6, keep_layers=[0, -1])
    plan = build_plan(scores, config, mlp_sparsity=0.45, keep_layers=[0, -1])
    assert plan.intermediate_size_per_layer[0] == plan.intermediate_size_per_layer[3] == 256
    heads = config.num_attention_heads
    most = 1 - 4 / (4 * heads)  # one head kept in each of the 4 layers
    with pytest.raises(
        ValueError, match=rf"`attention_sparsity`=0.9 is out of reach.*1 of its {heads} heads.* at most {most:.3f} "
    ):
        build_plan(scores, config, attention_sparsity=0.9)
    # exactly the most the floor leaves is within reach
    assert build_plan(scores, config, attention_sparsity=most).num_attention_heads_per_layer == [1] * 4
    assert build_plan(scores, config, attention_sparsity=0.9, allow_sublayer_removal=True).sparsity > 0


def test_importance_scores_are_checked_when_made_and_loaded(tmp_path):
    mlp, heads = torch.ones(2, 8), torch.ones(2, 4)
    with pytest.raises(ValueError, match=r"`mlp` and `heads` must cover the same tasks, got \['a'\] and \['b'\]"):
        ImportanceScores({"a": mlp}, {"b": heads})
    with pytest.raises(ValueError, match=r"`ImportanceScores` needs at least one task"):
        ImportanceScores({}, {})
    with pytest.raises(ValueError, match=r"All tasks must have equal score shapes, got MLP"):
        ImportanceScores({"a": mlp, "b": torch.ones(2, 6)}, {"a": heads, "b": heads})
    with pytest.raises(ValueError, match=r"All tasks must have equal score shapes, got MLP .* heads \{"):
        ImportanceScores({"a": mlp, "b": mlp}, {"a": heads, "b": torch.ones(2, 3)})  # the heads' alone
    with pytest.raises(ValueError, match=r"Scores of task 'a' must be \(num_layers, units\), got shape \(8,\)"):
        ImportanceScores({"a": torch.ones(8)}, {"a": heads})
    ImportanceScores({"a": mlp}, {"a": heads}).save_pretrained(tmp_path / "scores")
    loaded = ImportanceScores.from_pretrained(tmp_path / "scores")
    assert loaded.tasks == ["a"] and loaded.num_hidden_layers == 2
    (tmp_path / "scores" / "importance_scores.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"No importance scores in .*scores: importance_scores.safetensors is"):
        ImportanceScores.from_pretrained(tmp_path / "scores")


def test_the_lowered_rounding_is_said_once_not_at_every_plan(caplog):
    """`diet-hf prune --sparsity 0.2 0.4` builds four plans (each target checked, then pruned): one message."""
    import logging

    from diet_hf.plan import _log_rounding_once

    _log_rounding_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="diet_hf.plan"):
        for sparsity in (0.2, 0.2, 0.4):
            build_plan(_scores(), tiny_gemma2_config(), sparsity=sparsity, round_to=64)
    assert caplog.text.count("MLP widths are rounded to multiples of") == 1
