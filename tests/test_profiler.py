"""Hooks give exact statistics, ignore padding, and always leave."""

import pytest
import torch
from conftest import overflowing, random_batch, tiny_dense_model

from diet_hf.constants import FAMILIES
from diet_hf.profiler import ActivationStats, collect_activation_stats, record_activation_stats

GEMMA2 = FAMILIES[0]


def test_accumulate_exact_on_hand_values():
    stats = ActivationStats(num_layers=1, intermediate_size=3, num_heads=2, head_dim=2)
    stats.token_mask = torch.tensor([[True, True, False]])
    activation = torch.tensor([[[1.0, -2.0, 3.0], [-1.0, 0.0, 1.0], [100.0, 100.0, 100.0]]])
    stats.accumulate_mlp(0, activation)
    attn = torch.tensor([[[3.0, 4.0, 0.0, 1.0], [0.0, 0.0, 6.0, 8.0], [9.0, 9.0, 9.0, 9.0]]])
    stats.accumulate_heads(0, attn)
    stats.num_tokens = 2
    mlp, heads = stats.means()
    assert mlp.tolist() == [[1.0, 1.0, 2.0]]
    assert heads.tolist() == [[2.5, 5.5]]


def test_hooks_on_linear_inputs_and_removed_after_error():
    model = tiny_dense_model("gemma2")
    stats = ActivationStats(2, 64, 4, 8)
    with pytest.raises(RuntimeError, match="boom"), record_activation_stats(model, GEMMA2, stats):
        raise RuntimeError("boom")
    for layer in model.model.layers:
        assert not layer.mlp.down_proj._forward_pre_hooks and not layer.self_attn.o_proj._forward_pre_hooks


def test_scores_match_manual_computation():
    model = tiny_dense_model("gemma2")
    ids = random_batch(1, 9)
    captured = {}
    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(
        lambda m, args, out: captured.__setitem__("a", args[0].detach())
    )
    with torch.no_grad():
        model(ids)
    handle.remove()
    stats = collect_activation_stats(
        model, GEMMA2, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], disable_progress=True
    )
    mlp, _ = stats.means()
    torch.testing.assert_close(mlp[1], captured["a"][0].abs().mean(0), rtol=1e-6, atol=1e-7)


def test_batch_size_does_not_change_scores():
    model = tiny_dense_model("gemma3_text")
    lengths = [5, 9, 12, 3, 7, 12, 8, 4]
    rows = [random_batch(1, n, seed=i)[0] for i, n in enumerate(lengths)]

    def batches(size):
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            width = max(len(r) for r in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, r in enumerate(chunk):
                ids[i, : len(r)], mask[i, : len(r)] = r, 1
            yield {"input_ids": ids, "attention_mask": mask}

    one = collect_activation_stats(model, FAMILIES[1], batches(1), disable_progress=True)
    eight = collect_activation_stats(model, FAMILIES[1], batches(8), disable_progress=True)
    assert one.num_tokens == eight.num_tokens == sum(lengths)
    for a, b in zip(one.means(), eight.means()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_channel_sums_read_off_the_moments_in_a_hooks_block_of_its_own():
    """`record_activation_stats` alone (not only `collect_activation_stats`) fills the channel sums that `stats` reads
    off its moments, with the block's share of sums that already held another block's tokens."""
    from diet_hf.moments import MomentSums, moment_widths

    model = tiny_dense_model("gemma2")
    config = model.config
    shape = (config.num_hidden_layers, config.intermediate_size, config.num_attention_heads, config.head_dim)
    moments = MomentSums([("mlp", 0), ("mlp", 1)], moment_widths(config))
    batches = [random_batch(2, 7, seed=seed) for seed in (0, 1)]
    per_block = []
    for ids in batches:  # two blocks (two tasks) pool their moments
        pooled = ActivationStats(*shape, channel_stats=True, moments=moments)
        own = ActivationStats(*shape, channel_stats=True)
        for stats in (pooled, own):
            stats.token_mask = torch.ones(ids.shape, dtype=torch.bool)
            with torch.no_grad(), record_activation_stats(model, GEMMA2, stats):
                model(ids)
        per_block.append((pooled, own))
    for pooled, own in per_block:
        assert pooled.channels_from_moments == {("mlp", 0), ("mlp", 1)}
        for layer in range(config.num_hidden_layers):
            assert own.mlp_channel[layer].abs().sum() > 0
            torch.testing.assert_close(pooled.mlp_channel[layer], own.mlp_channel[layer], rtol=1e-5, atol=1e-6)


def test_a_profile_that_overflowed_its_dtype_is_an_error(caplog):
    """Gemma 3 270M in float16 overflows on ordinary text (its gated MLP products exceed float16's range; NaN from
    there on); so does this tiny Gemma with its first MLP scaled up. Scores of NaN would rank units arbitrarily and
    the reconstruction would write NaN weights: the profile stops, naming the layer and the fix."""
    import logging

    from diet_hf import DietPruner

    model = overflowing(tiny_dense_model("gemma2"))
    with caplog.at_level(logging.WARNING, logger="diet_hf.pruner"):
        pruner = DietPruner(model)
    assert "The model is in float16" in caplog.text
    batches = [{"input_ids": random_batch(2, 8), "attention_mask": torch.ones(2, 8, dtype=torch.long)}]
    with pytest.raises(ValueError, match=r"Profiling 'a': the `down_proj` inputs of layer 0 .*bfloat16 or float32"):
        pruner.profile({"a": batches}, disable_progress=True)
    assert pruner.scores is None
