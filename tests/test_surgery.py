"""Surgery is exact: the pruned model computes the dense model with the removed dimensions zeroed."""

import pytest
import torch
from conftest import random_batch, tiny_dense_model

from diet_hf import ImportanceScores, build_pruned_model
from diet_hf.plan import build_plan


def _zeroed_dense(dense, plan):
    """The dense model with every removed MLP dimension and query head zeroed where it enters the residual."""
    zeroed = tiny_dense_model(
        dense.config.model_type,
        attn_logit_softcapping=dense.config.attn_logit_softcapping,
        num_key_value_heads=dense.config.num_key_value_heads,
    )
    zeroed.load_state_dict(dense.state_dict())
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


def test_surgery_refuses_a_pruned_model():
    dense = tiny_dense_model("gemma2")
    pruned = build_pruned_model(dense)
    with pytest.raises(ValueError, match="already a `pruned_gemma2` model"):
        build_pruned_model(pruned)
