"""Surgery is exact: the pruned model computes the dense model with the removed dimensions zeroed."""

import copy

import pytest
import torch
from conftest import random_batch, tiny_dense_model

from diet_hf import ImportanceScores, build_pruned_model
from diet_hf.info import count_parameters
from diet_hf.plan import build_plan


def _zeroed_dense(dense, plan):
    """The dense model with every removed MLP dimension and query head zeroed where it enters the residual."""
    zeroed = copy.deepcopy(dense)  # its config too (e.g. `attention_bias`)
    d = plan.head_dim
    with torch.no_grad():
        for layer_idx, layer in enumerate(zeroed.model.layers):
            removed_mlp = sorted(set(range(plan.intermediate_size)) - set(plan.mlp_kept_indices[layer_idx]))
            layer.mlp.down_proj.weight[:, removed_mlp] = 0
            for head in set(range(plan.num_attention_heads)) - set(plan.head_kept_indices[layer_idx]):
                layer.self_attn.o_proj.weight[:, head * d : (head + 1) * d] = 0
    return zeroed


def _random_scores(config, seed):
    g = torch.Generator().manual_seed(seed)
    layers = config.num_hidden_layers
    return ImportanceScores(
        {f"t{i}": torch.rand(layers, config.intermediate_size, generator=g) for i in range(3)},
        {f"t{i}": torch.rand(layers, config.num_attention_heads, generator=g) for i in range(3)},
    )


TARGETS = {
    "mlp": {"mlp_sparsity": 0.4},
    "heads": {"attention_sparsity": 0.5},
    "both": {"sparsity": 0.35},
    "removed_sublayers": {
        "mlp_sparsity": 0.6,
        "attention_sparsity": 0.7,
        "allow_sublayer_removal": True,
        "head_normalize": "none",
    },
}


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_pruned_equals_zeroed_dense(family, kv_heads, target):
    dense = tiny_dense_model(family, num_key_value_heads=kv_heads)
    scores = _random_scores(dense.config, seed=kv_heads)
    if target == "removed_sublayers":  # make layer 1 unimportant so whole sublayers go
        scores.mlp["t0"][1] *= 1e-3
        scores.heads["t0"][1] *= 1e-3
        scores = ImportanceScores({"t0": scores.mlp["t0"]}, {"t0": scores.heads["t0"]})
    plan = build_plan(scores, dense.config, **TARGETS[target])
    pruned = build_pruned_model(dense, plan)
    ids = random_batch(2, 12)
    with torch.no_grad():
        expected = _zeroed_dense(dense, plan)(ids).logits
        got = pruned(ids).logits
    assert (expected - got).abs().max().item() <= 1e-5
    kept, _ = plan.block_parameters()
    block = sum(p.numel() for n, p in pruned.named_parameters() if ".mlp." in n or "_proj" in n and "self_attn" in n)
    assert block == kept  # physically smaller: exactly the plan's parameter count
    if target == "removed_sublayers":
        assert 0 in plan.intermediate_size_per_layer and 0 in plan.num_attention_heads_per_layer


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_fewer_query_heads_on_every_kv_head_equals_zeroed_dense(family):
    """A layer that keeps every KV head but fewer query heads on each (a plan GQA legalization allows, though its
    own choice of equal counts keeps fewer KV heads) is sliced and computes the dense layer with those heads zeroed."""
    from diet_hf.plan import PruningPlan

    dense = tiny_dense_model(family, num_key_value_heads=2)  # 4 query heads, 2 per KV head
    plan = PruningPlan.keep_all(dense.config)
    plan.head_kept_indices = [[0, 2], [1, 3]]  # one query head of each group
    plan.__post_init__()
    pruned = build_pruned_model(dense, plan)
    ids = random_batch(2, 12)
    with torch.no_grad():
        assert (_zeroed_dense(dense, plan)(ids).logits - pruned(ids).logits).abs().max().item() <= 1e-5
    kept, _ = plan.block_parameters()
    block = sum(p.numel() for n, p in pruned.named_parameters() if ".mlp." in n or "self_attn" in n and "_proj" in n)
    assert block == kept  # the query and output projections sliced: half their heads


def test_the_pruned_model_is_in_the_dense_models_mode():
    """Built from a model in eval mode (`from_pretrained`'s) the pruned model is in eval mode; from one in training
    mode (fine-tuned, say), in training mode: a model's mode does not change under surgery."""
    dense = tiny_dense_model("gemma2")
    assert build_pruned_model(dense.eval(), None).training is False
    assert build_pruned_model(dense.train(), None).training is True


def test_surgery_refuses_a_pruned_model():
    dense = tiny_dense_model("gemma2")
    pruned = build_pruned_model(dense)
    with pytest.raises(ValueError, match="already a `pruned_gemma2` model"):
        build_pruned_model(pruned)


def _mean_filled_dense(dense, plan, means):
    """The dense model whose removed input channels of `down_proj` / `o_proj` read their mean instead."""
    filled = copy.deepcopy(dense)  # its config too (e.g. `attention_bias`)
    d = plan.head_dim

    def fill(removed, values):
        def hook(module, args):
            x = args[0].clone()
            x[..., removed] = values[removed].to(x.dtype)
            return (x,)

        return hook

    for layer_idx, layer in enumerate(filled.model.layers):
        removed_mlp = torch.ones(plan.intermediate_size, dtype=torch.bool)
        removed_mlp[plan.mlp_kept_indices[layer_idx]] = False
        removed_attn = torch.ones(plan.num_attention_heads * d, dtype=torch.bool)
        removed_attn[[h * d + i for h in plan.head_kept_indices[layer_idx] for i in range(d)]] = False
        layer.mlp.down_proj.register_forward_pre_hook(fill(removed_mlp, means["mlp"][layer_idx]))
        layer.self_attn.o_proj.register_forward_pre_hook(fill(removed_attn, means["attn"][layer_idx]))
    return filled


def _plan_and_means(dense, target, seed):
    """A plan of `TARGETS[target]` from random scores (layer 1 made unimportant for "removed_sublayers"), and random
    channel means for bias compensation."""
    scores = _random_scores(dense.config, seed=seed)
    if target == "removed_sublayers":
        scores.mlp["t0"][1] *= 1e-3
        scores.heads["t0"][1] *= 1e-3
        scores = ImportanceScores({"t0": scores.mlp["t0"]}, {"t0": scores.heads["t0"]})
    plan = build_plan(scores, dense.config, **TARGETS[target])
    g = torch.Generator().manual_seed(seed - 3)
    width = dense.config.num_attention_heads * plan.head_dim
    layers = dense.config.num_hidden_layers
    means = {
        "mlp": torch.randn(layers, dense.config.intermediate_size, generator=g),
        "attn": torch.randn(layers, width, generator=g),
    }
    return plan, means


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("target", ["both", "removed_sublayers"])
def test_bias_compensation_equals_mean_filled_dense(family, target):
    dense = tiny_dense_model(family, num_key_value_heads=2)
    plan, means = _plan_and_means(dense, target, seed=3)
    layers = dense.config.num_hidden_layers
    pruned = build_pruned_model(dense, plan, channel_means=means)
    assert pruned.config.o_proj_bias and pruned.config.down_proj_bias
    ids = random_batch(2, 12)
    with torch.no_grad():
        expected = _mean_filled_dense(dense, plan, means)(ids).logits
        got = pruned(ids).logits
        plain_model = build_pruned_model(dense, plan)
        plain = plain_model(ids).logits
    assert (expected - got).abs().max().item() <= 1e-5
    assert (plain - got).abs().max().item() > 1e-3  # the biases do change the output
    biases = sum(p.numel() for n, p in pruned.named_parameters() if n.endswith("bias"))
    assert biases == 2 * layers * dense.config.hidden_size  # one per layer and sublayer, also on removed ones
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in plain_model.parameters()) + biases
    assert count_parameters(pruned.config)["total"] == sum(p.numel() for p in pruned.parameters())


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("target", ["heads", "removed_sublayers"])
def test_a_dense_o_proj_bias_stays_with_and_without_compensation(family, target):
    """A dense model with `attention_bias=True` (a config option of both families; no released Gemma sets it): every
    layer keeps its `o_proj` bias, a wholly removed attention too (on its stand-in), and bias compensation adds the
    removed heads' mean output to it, not in place of it."""
    dense = tiny_dense_model(family, num_key_value_heads=2, attention_bias=True)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # transformers initializes biases to zero: make them matter
        for name, param in dense.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=g))
    plan, means = _plan_and_means(dense, target, seed=7)
    zeroed = _zeroed_dense(dense, plan)  # the removed heads' columns of `o_proj` zeroed, its bias kept
    ids = random_batch(2, 12)
    plain = build_pruned_model(dense, plan)
    compensated = build_pruned_model(dense, plan, channel_means=means)
    # the stock `o_proj` has its bias with `attention_bias`; the format's flag adds one where no `o_proj` is left
    assert plain.config.o_proj_bias == (0 in plan.num_attention_heads_per_layer) and not plain.config.down_proj_bias
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, zeroed(ids).logits, rtol=0, atol=1e-5)
        filled = _mean_filled_dense(dense, plan, means)(ids).logits
        torch.testing.assert_close(compensated(ids).logits, filled, rtol=0, atol=1e-5)
        without = copy.deepcopy(dense)  # the dense `o_proj` biases matter: without them the output is another
        for layer in without.model.layers:
            layer.self_attn.o_proj.bias.zero_()
        assert (_mean_filled_dense(without, plan, means)(ids).logits - filled).abs().max() > 1e-3
    if target == "removed_sublayers":
        assert 0 in plan.num_attention_heads_per_layer
    # `diet-hf info`, the card and the main job's table count every parameter, the projections' biases included
    for model in (dense, plain, compensated):
        assert count_parameters(model)["total"] == sum(p.numel() for p in model.parameters())
    assert count_parameters(compensated, dense=True)["total"] == sum(p.numel() for p in dense.parameters())


def test_bias_compensation_rejects_wrong_means():
    dense = tiny_dense_model("gemma2")
    plan = build_plan(_random_scores(dense.config, 0), dense.config, sparsity=0.3)
    with pytest.raises(ValueError, match=r"`channel_means\['mlp'\]` must be a tensor of shape \(2, 64\), got shape"):
        build_pruned_model(dense, plan, channel_means={"mlp": torch.zeros(2, 3), "attn": torch.zeros(2, 32)})
    with pytest.raises(ValueError, match=r"`channel_means\['attn'\]` .* got missing"):
        build_pruned_model(dense, plan, channel_means={"mlp": torch.zeros(2, 64)})


def test_every_module_path_diet_uses_comes_from_the_family_layout():
    from diet_hf.constants import FAMILIES

    dense = tiny_dense_model("gemma3_text")
    layout = FAMILIES[1].layout
    names = {name for name, _ in dense.named_modules()}
    for layer_idx in range(dense.config.num_hidden_layers):
        for role in ("gate", "up", "down"):
            assert layout.mlp_path(layer_idx, role) in names
        for role in ("query", "key", "value", "output"):
            assert layout.attention_path(layer_idx, role) in names
        for norm in layout.qk_norms:
            assert f"{layout.attention_path(layer_idx, '')}.{norm}" in names
    assert FAMILIES[1].mlp_down_proj.format(layer_idx=1) == layout.mlp_path(1, "down")
    assert set(layout.projection_names) == {n.rsplit(".", 1)[-1] for n in names if n.endswith("_proj")}


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("target", ["both", "removed_sublayers"])
def test_inplace_surgery_builds_the_same_model_from_the_dense_weights_themselves(family, target):
    import weakref

    dense = tiny_dense_model(family, num_key_value_heads=2)
    plan, means = _plan_and_means(dense, target, seed=5)
    ids = random_batch(2, 12)
    copied = build_pruned_model(dense, plan, channel_means=means)
    with torch.no_grad():
        expected = copied(ids).logits
    del copied
    cut = [layer.mlp.up_proj.weight for layer in dense.model.layers]  # every layer's MLP is cut
    watched = [weakref.ref(weight) for weight in cut]
    del cut
    embedding = dense.model.embed_tokens.weight
    pruned = build_pruned_model(dense, plan, channel_means=means, inplace=True)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, expected, rtol=0, atol=0)
    assert all(ref() is None for ref in watched)  # the dense tensors were freed, not kept beside the cut ones
    assert pruned.model.embed_tokens.weight.data_ptr() == embedding.data_ptr()  # untouched weights: the same memory
    for layer_idx, layer in enumerate(dense.model.layers):  # the dense modules hold the cut tensors (or nothing)
        width = len(plan.mlp_kept_indices[layer_idx])
        assert layer.mlp.up_proj.weight.shape[0] == width if width else layer.mlp.up_proj.weight.numel() == 0
    with pytest.raises(ValueError, match="`inplace` must be a bool, got 1"):
        build_pruned_model(tiny_dense_model(family), plan, inplace=1)
