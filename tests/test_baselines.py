"""Baselines produce the documented scores and run through the same plan and surgery code."""

import pytest
import torch
from conftest import on_second_device, random_batch, tiny_dense_model

from diet_hf import DietPruner, ImportanceScores, build_pruned_model
from diet_hf.baselines import BASELINE_PRUNE_OPTIONS, BASELINES, baseline_scores
from diet_hf.plan import build_plan


@pytest.fixture(scope="module")
def profiled():
    model = tiny_dense_model("gemma2")
    batches = [
        {"input_ids": random_batch(2, 9, seed=i), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
        for i in range(3)
    ]
    pruner = DietPruner(model).profile({"a": batches[:2], "b": batches[2:]}, channel_stats=True, disable_progress=True)
    return model, pruner.scores, batches


def test_channel_stats_are_sums_of_moments(profiled):
    model, scores, batches = profiled
    captured = []
    handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        for batch in batches[:2]:
            model(batch["input_ids"])
    handle.remove()
    acts = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).double()
    stats = scores.channel_stats["a"]
    assert int(stats["num_tokens"]) == acts.shape[0]
    torch.testing.assert_close(stats["mlp"][0, 0], acts.sum(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["mlp"][0, 1], (acts**2).sum(0), rtol=1e-5, atol=1e-6)


def test_channel_stats_taken_from_the_moments_equal_their_own_sums(profiled):
    """With `input_moments` (the default) the MLP's channel sums are read off the reconstruction's x x^T sums, which
    pool every task: each task's share must equal what hooks of its own sum, for every task, not only the first."""
    model, scores, batches = profiled
    own = DietPruner(model).profile(
        {"a": batches[:2], "b": batches[2:]}, channel_stats=True, input_moments=False, disable_progress=True
    )
    for task in ("a", "b"):
        for kind in ("mlp", "attn"):
            torch.testing.assert_close(
                scores.channel_stats[task][kind], own.scores.channel_stats[task][kind], rtol=1e-5, atol=1e-6
            )
        assert int(scores.channel_stats[task]["num_tokens"]) == int(own.scores.channel_stats[task]["num_tokens"])


def test_flap_and_wanda_formulas(profiled):
    model, scores, _ = profiled
    stats = scores.channel_stats
    tokens = float(stats["a"]["num_tokens"] + stats["b"]["num_tokens"])
    moments = (stats["a"]["mlp"][1] + stats["b"]["mlp"][1]).float() / tokens  # (2, width) of layer 1
    down = model.model.layers[1].mlp.down_proj.weight.float()
    flap = baseline_scores("flap", model, scores).mlp["flap"][1]
    torch.testing.assert_close(flap, (moments[1] - moments[0] ** 2).clamp_min(0) * down.pow(2).sum(0))
    wanda = baseline_scores("wanda_sp", model, scores).mlp["wanda_sp"][1]
    torch.testing.assert_close(wanda, down.abs().sum(0) * (moments[1] * tokens).sqrt())


@pytest.mark.parametrize("method", ["wanda_sp", "flap"])
def test_baseline_scores_of_a_model_on_another_device_than_its_profile(profiled, method):
    """The profile keeps its channel statistics on the CPU; the model may sit on a GPU. (Meta-device fake tensors
    stand in for the GPU: the same device-mismatch error, without one.)"""
    _, scores, _ = profiled
    baseline = baseline_scores(method, on_second_device(tiny_dense_model("gemma2")), scores)
    assert baseline.mlp[method].device.type == "cpu" and baseline.heads[method].device.type == "cpu"
    assert tuple(baseline.mlp[method].shape) == tuple(scores.mlp["a"].shape)


@pytest.mark.parametrize("method", BASELINES)
def test_baselines_prune_through_the_same_pipeline(profiled, method):
    model, scores, _ = profiled
    baseline = baseline_scores(method, model, scores)
    assert baseline.tasks == [method]
    plan = build_plan(baseline, model.config, sparsity=0.3, **BASELINE_PRUNE_OPTIONS[method])
    assert abs(plan.sparsity - 0.3) <= 0.01
    pruned = build_pruned_model(model, plan)
    assert torch.isfinite(pruned(random_batch()).logits).all()


def test_channel_stats_survive_save_load(profiled, tmp_path):
    _, scores, _ = profiled
    scores.save_pretrained(tmp_path)
    loaded = ImportanceScores.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.channel_stats["b"]["attn"], scores.channel_stats["b"]["attn"])


def test_baseline_errors(profiled):
    model, _, _ = profiled
    with pytest.raises(ValueError, match=r"`method` must be one of"):
        baseline_scores("obd", model)
    with pytest.raises(ValueError, match=r"profile with `channel_stats=True`"):
        baseline_scores("flap", model, ImportanceScores({"a": torch.ones(2, 64)}, {"a": torch.ones(2, 4)}))


def test_prune_with_bias_compensation(profiled):
    model, scores, batches = profiled
    pruner = DietPruner(model)
    pruner.scores = scores
    pruned = pruner.prune(sparsity=0.3, bias_compensation=True, reconstruct=False)  # the compensation alone
    assert pruned.config.pruning["options"]["bias_compensation"] is True
    assert pruned.config.pruning["total_parameters"]["pruned"] == sum(p.numel() for p in pruned.parameters())
    # the biases are the removed channels' pooled mean contribution
    means = scores.channel_moments()["mlp"][0, 0]
    removed = sorted(set(range(model.config.intermediate_size)) - set(pruner.plan.mlp_kept_indices[0]))
    expected = model.model.layers[0].mlp.down_proj.weight.double()[:, removed] @ means[removed]
    torch.testing.assert_close(pruned.model.layers[0].mlp.down_proj.bias.double(), expected, rtol=1e-5, atol=1e-6)
    pruner.scores = scores.select(["a"])  # select keeps the channel statistics (leave-one-task-out)
    assert pruner.prune(sparsity=0.3, bias_compensation=True, reconstruct=False).config.down_proj_bias
    pruner.scores = ImportanceScores(scores.mlp, scores.heads)
    with pytest.raises(ValueError, match=r"profile with `channel_stats=True`"):
        pruner.prune(sparsity=0.3, bias_compensation=True, reconstruct=False)
