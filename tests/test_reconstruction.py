"""Least-squares reconstruction: the math against a brute-force solve, the moments against hooks, and the pruner."""

import contextlib
import json

import pytest
import torch
from conftest import random_batch, tiny_dense_model

from diet_hf import DietPruner, build_pruned_model
from diet_hf._devices import float64_device, to_float64
from diet_hf.constants import family_for_model_type
from diet_hf.moments import MomentSums, _input_module, collect_input_moments, first_token_inputs, moment_widths
from diet_hf.plan import PruningPlan, build_plan
from diet_hf.reconstruction import least_squares_update


def _correlated_inputs(n=400, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 5, generator=g, dtype=torch.float64)
    mixing = torch.randn(5, d, generator=g, dtype=torch.float64)
    return base @ mixing + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5


@pytest.mark.parametrize("centered", [True, False])
def test_update_is_the_least_squares_fit_of_the_removed_channels(centered):
    x = _correlated_inputs()
    weight = torch.randn(7, x.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kept = torch.tensor([0, 2, 3, 7, 8, 11])
    mean, second = x.mean(0), x.T @ x / len(x)
    kept_weight, bias = least_squares_update(weight, kept, mean, second, centered=centered, damping=0.0)
    # brute force: regress the dense output on the kept channels (and a constant when centered)
    design = torch.cat([x[:, kept], torch.ones(len(x), 1, dtype=x.dtype)], 1) if centered else x[:, kept]
    solution = torch.linalg.lstsq(design, x @ weight.T).solution
    torch.testing.assert_close(kept_weight, solution[: len(kept)].T)
    if centered:
        torch.testing.assert_close(bias, solution[-1])
    else:
        assert bias is None
    # it is at least as good as slicing with FLAP's mean compensation, and strictly better on correlated inputs
    removed = [i for i in range(x.shape[1]) if i not in kept.tolist()]
    predicted = x[:, kept] @ kept_weight.T + (bias if centered else 0)
    flap = x[:, kept] @ weight[:, kept].T + weight[:, removed] @ mean[removed]
    error, flap_error = ((x @ weight.T - predicted) ** 2).mean(), ((x @ weight.T - flap) ** 2).mean()
    assert error < 0.5 * flap_error


@pytest.mark.parametrize("centered", [True, False])
def test_damping_is_a_ridge_toward_the_dense_columns_scaled_by_the_mean_variance(centered):
    """`damping` as documented: the ridge lambda = damping x the mean diagonal of the kept channels' covariance (second
    moment without centering), pulling the kept columns toward the dense ones; brute force by augmented rows."""
    x = _correlated_inputs()
    weight = torch.randn(7, x.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kept = torch.tensor([1, 2, 5, 6, 9])
    removed = [i for i in range(x.shape[1]) if i not in kept.tolist()]
    mean, second = x.mean(0), x.T @ x / len(x)
    damping = 0.3
    kept_weight, bias = least_squares_update(weight, kept, mean, second, centered=centered, damping=damping)
    inputs = x - mean if centered else x
    lam = damping * (inputs[:, kept] ** 2).mean(0).mean()
    # minimise mean ||W_R x_R - D x_K||^2 + lam ||D||^2 over D, the change of the kept columns
    design = torch.cat([inputs[:, kept], (len(x) * lam).sqrt() * torch.eye(len(kept), dtype=x.dtype)])
    target = torch.cat([inputs[:, removed] @ weight[:, removed].T, torch.zeros(len(kept), 7, dtype=x.dtype)])
    change = torch.linalg.lstsq(design, target).solution.T
    torch.testing.assert_close(kept_weight, weight[:, kept] + change)
    if centered:
        torch.testing.assert_close(bias, weight[:, removed] @ mean[removed] - change @ mean[kept])
    undamped, _ = least_squares_update(weight, kept, mean, second, centered=centered, damping=0.0)
    assert (undamped - kept_weight).abs().max() > 1e-3  # the ridge does move the fit here


def test_update_edge_cases():
    x = _correlated_inputs(d=6)
    weight = torch.randn(3, 6, dtype=torch.float32)
    mean, second = x.mean(0), x.T @ x / len(x)
    # nothing removed: the weight unchanged, no compensation
    kept_weight, bias = least_squares_update(weight, torch.arange(6), mean, second, centered=True)
    assert kept_weight.dtype == torch.float32 and torch.equal(kept_weight, weight)
    assert torch.allclose(bias, torch.zeros(3, dtype=torch.float64))
    # a huge ridge leaves only FLAP's mean compensation
    kept_weight, bias = least_squares_update(weight, torch.tensor([1, 4]), mean, second, centered=True, damping=1e12)
    torch.testing.assert_close(kept_weight, weight[:, [1, 4]])
    torch.testing.assert_close(bias, weight.double()[:, [0, 2, 3, 5]] @ mean[[0, 2, 3, 5]], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"`damping` must be >= 0, got -1"):
        least_squares_update(weight, torch.tensor([1]), mean, second, centered=True, damping=-1)


def _batches():
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0  # padding must not count
    return [{"input_ids": random_batch(2, 9, seed=i), "attention_mask": mask} for i in range(3)]


@contextlib.contextmanager
def _hooked_inputs(dense, family, targets, record):
    """Calls `record(key, x)` with the input x of each target module (`moments._input_module`) on every forward pass
    in the block (under `torch.no_grad()`); the hooks leave on every path."""

    def hook(key):
        def call(module, args):
            record(key, args[0])  # returns nothing: a pre-hook's return value would replace the input

        return call

    handles = [_input_module(dense, family, key).register_forward_pre_hook(hook(key)) for key in targets]
    try:
        with torch.no_grad():
            yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("max_bytes", [2**40, 1], ids=["one_pass", "one_pass_per_module"])
def test_input_moments_equal_the_hooked_inputs(max_bytes):
    dense = tiny_dense_model("gemma3_text")
    family = family_for_model_type("gemma3_text")
    seen, current = {}, {}
    targets = [("mlp", 0), ("attn", 1), ("mlp", 1)]
    with _hooked_inputs(dense, family, targets, lambda key, x: seen.setdefault(key, []).append(x[current["mask"]])):
        for batch in _batches():
            current["mask"] = batch["attention_mask"].bool()
            dense(**batch)
    seen = {key: [x.double() for x in xs] for key, xs in seen.items()}
    moments = collect_input_moments(dense, family, _batches, targets, max_bytes=max_bytes, disable_progress=True)
    assert moments.num_tokens == 3 * (9 + 6)
    assert ("attn", 0) not in moments
    for key in targets:
        x = torch.cat(seen[key])
        mean, second = moments.get(*key)
        torch.testing.assert_close(mean.double(), x.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(second.double(), x.T @ x / len(x), rtol=1e-5, atol=1e-6)


def test_float64_steps_run_on_the_cpu_for_a_device_without_float64():
    """Apple's MPS has no float64: bias compensation and the reconstruction's solves run on the CPU there, and on the
    model's own device everywhere else."""
    cpu = torch.device("cpu")
    assert float64_device("mps") == cpu and float64_device(torch.device("mps", 0)) == cpu
    assert float64_device("cuda:1") == torch.device("cuda:1") and float64_device("cpu") == cpu
    x = torch.randn(4)
    assert to_float64(x).dtype == torch.float64 and torch.equal(to_float64(x), x.double())


def test_moment_sums_take_inputs_from_another_device():
    """A model split across GPUs (`device_map="auto"`) runs later layers on other devices than the first, where the
    sums are held. (The meta device stands in for the first GPU: the products of its rows with a CPU tensor raise as
    two GPUs' tensors do.)"""
    sums = MomentSums([("mlp", 0)], {"mlp": 8}, torch.device("meta"))
    sums.add(("mlp", 0), torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool))
    assert sums.sums[("mlp", 0)][0].device.type == "meta"


@pytest.mark.parametrize("channels", [100, 1030])
def test_moment_sums_of_wide_inputs_equal_the_full_products(channels):
    """`MomentSums` on its own: real tokens only, modules it does not hold ignored, wide inputs summed exactly."""
    g = torch.Generator().manual_seed(channels)
    sums = MomentSums([("mlp", 0)], {"mlp": channels})
    xs = []
    for seq_len in (7, 4):
        x = torch.randn(3, seq_len, channels, generator=g) + 0.2
        mask = torch.rand(3, seq_len, generator=g) > 0.3
        sums.add(("mlp", 0), x, mask)
        sums.add(("attn", 0), x, mask)  # a module it does not hold: ignored
        xs.append(x[mask].double())
    sums.num_tokens = sum(len(x) for x in xs)
    moments = sums.moments()
    x = torch.cat(xs)
    assert ("attn", 0) not in moments
    mean, second = moments.get("mlp", 0)
    torch.testing.assert_close(mean.double(), x.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second.double(), x.T @ x / len(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(second, second.T)
    # only the upper block rows are held: about half of the full matrix once there are several blocks
    upper = [256 * 1030, 256 * 774, 256 * 518, 256 * 262, 6 * 6] if channels == 1030 else [channels**2]
    assert MomentSums.nbytes_for([("mlp", 0)], {"mlp": channels}) == 4 * (sum(upper) + channels)
    assert moments.nbytes == MomentSums.nbytes_for([("mlp", 0)], {"mlp": channels})
    # the sums became the moments (divided in place, no copy): using them again is an error, not a wrong result
    with pytest.raises(RuntimeError, match="turned into moments"):
        sums.moments()
    with pytest.raises(RuntimeError, match="turned into moments"):
        sums.add(("mlp", 0), x[None].float(), torch.ones(1, len(x), dtype=torch.bool))


def _profiled(family):
    dense = tiny_dense_model(family)
    batches = _batches()
    return DietPruner(dense).profile({"a": batches, "b": batches[:1]}), batches


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("bias", [True, False])
def test_prune_with_reconstruction(family, bias, tmp_path):
    pruner, batches = _profiled(family)
    dense_state = {k: v.clone() for k, v in pruner.model.state_dict().items()}
    plain = pruner.prune(sparsity=0.4, recipe="paper", bias_compensation=bias)
    plan = pruner.plan
    pruned = pruner.prune(sparsity=0.4, recipe="paper", bias_compensation=bias, reconstruct=True)
    assert pruner.plan.mlp_kept_indices == plan.mlp_kept_indices  # the same plan, other weights
    assert pruned.config.pruning["options"]["reconstruct"] is True
    assert plain.config.pruning["options"]["reconstruct"] is False
    assert pruned.config.down_proj_bias == bias
    # every cut down_proj / o_proj is the least-squares fit on the moments of both tasks' calibration tokens
    family_spec = family_for_model_type(family)
    targets = [("mlp", layer) for layer in range(plan.num_hidden_layers)] + [
        ("attn", layer) for layer in range(plan.num_hidden_layers)
    ]
    moments = collect_input_moments(
        pruner.model, family_spec, lambda: [*batches, *batches[:1]], targets, disable_progress=True
    )
    cut = 0
    for layer in range(plan.num_hidden_layers):
        kept = plan.mlp_kept_indices[layer]
        if len(kept) < plan.intermediate_size:
            cut += 1
            dense_down = pruner.model.get_submodule(family_spec.mlp_down_proj.format(layer_idx=layer))
            weight, compensation = least_squares_update(
                dense_down.weight, torch.tensor(kept), *moments.get("mlp", layer), centered=bias
            )
            down = pruned.get_submodule(family_spec.mlp_down_proj.format(layer_idx=layer))
            torch.testing.assert_close(down.weight, weight, rtol=1e-4, atol=1e-5)
            assert (down.bias is not None) == bias
            if bias:
                torch.testing.assert_close(down.bias, compensation.float(), rtol=1e-4, atol=1e-5)
        heads = plan.head_kept_indices[layer]
        if 0 < len(heads) < plan.num_attention_heads:
            cut += 1
            o_proj = pruned.get_submodule(family_spec.attn_o_proj.format(layer_idx=layer))
            dense_o = pruner.model.get_submodule(family_spec.attn_o_proj.format(layer_idx=layer))
            channels = torch.tensor([h * plan.head_dim + i for h in heads for i in range(plan.head_dim)])
            weight, _ = least_squares_update(dense_o.weight, channels, *moments.get("attn", layer), centered=bias)
            torch.testing.assert_close(o_proj.weight, weight, rtol=1e-4, atol=1e-5)
    assert cut >= 2
    # the dense model is untouched, and the reconstruction brings the pruned model closer to it on the calibration data
    for key, value in pruner.model.state_dict().items():
        assert torch.equal(value, dense_state[key]), key
    with torch.no_grad():
        target = torch.log_softmax(pruner.model(**batches[0]).logits, -1)

        def kl(model):
            logprobs = torch.log_softmax(model(**batches[0]).logits, -1)
            return (target.exp() * (target - logprobs)).sum(-1)[batches[0]["attention_mask"].bool()].mean()

        assert kl(pruned) < kl(plain)
        # saved and reloaded, the reconstructed weights come back
        pruner.save_pretrained(tmp_path / "pruned")
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
        torch.testing.assert_close(reloaded(**batches[0]).logits, pruned(**batches[0]).logits)


def test_reconstruction_of_a_plan_that_keeps_everything_changes_nothing():
    pruner, batches = _profiled("gemma2")
    keep_all = PruningPlan.keep_all(pruner.model.config)
    assert pruner._input_moments(keep_all, ["a"]) is None
    dense = build_pruned_model(pruner.model, keep_all)
    plan = build_plan(pruner.scores, pruner.model.config, mlp_sparsity=0.3)
    moments = pruner._input_moments(plan, ["a"])
    with torch.no_grad():
        same = build_pruned_model(pruner.model, keep_all, input_moments=moments)
        torch.testing.assert_close(same(**batches[0]).logits, dense(**batches[0]).logits, rtol=0, atol=0)


def test_reconstruction_needs_the_calibration_data(tmp_path):
    pruner, _ = _profiled("gemma2")
    pruner.save_scores(tmp_path / "scores")
    loaded = DietPruner(pruner.model).load_scores(tmp_path / "scores")
    with pytest.raises(ValueError, match=r"`reconstruct=True` fits .* not profiled in this session \(`load_scores`\)"):
        loaded.prune(sparsity=0.2, reconstruct=True)
    with pytest.raises(ValueError, match=r"`reconstruct` must be True or False, got 'yes'"):
        pruner.prune(sparsity=0.2, reconstruct="yes")
    loaded.prune(sparsity=0.2, reconstruct=False)  # without it, loaded scores prune as before


def test_moments_are_collected_once_per_profile_and_task_set(monkeypatch):
    import diet_hf.profiling

    pruner, batches = _profiled("gemma2")  # the profile summed every down_proj's moments in its own pass
    calls = []
    original = diet_hf.profiling.collect_input_moments

    def spy(model, family, batches, targets, **kwargs):
        calls.append(list(targets))
        return original(model, family, batches, targets, **kwargs)

    monkeypatch.setattr(diet_hf.profiling, "collect_input_moments", spy)
    first = pruner.prune(mlp_sparsity=0.2, recipe="paper", reconstruct=True)
    weights = {k: v.clone() for k, v in first.state_dict().items()}
    assert calls == []  # no forward pass after the profile's
    # heads cut too: the profile summed no o_proj moments, so they get one pass of their own, then stay
    pruner.prune(sparsity=0.5, recipe="paper", reconstruct=True)
    assert len(calls) == 1 and calls[0] and all(kind == "attn" for kind, _ in calls[0])
    pruner.prune(sparsity=0.5, recipe="paper", reconstruct=True)
    again = pruner.prune(mlp_sparsity=0.2, recipe="paper", reconstruct=True)
    assert len(calls) == 1
    for key, value in again.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    pruner.prune(mlp_sparsity=0.2, recipe="paper", reconstruct=True, tasks=["a"])  # another task set: one pass
    assert len(calls) == 2 and all(kind == "mlp" for kind, _ in calls[1])
    pruner.prune(mlp_sparsity=0.2, recipe="paper", reconstruct=True, tasks=["a"])
    assert len(calls) == 2
    pruner.prune(sparsity=0.5, recipe="paper", reconstruct=True, tasks=["a"])  # only the heads' moments are new
    assert len(calls) == 3 and calls[2] and all(kind == "attn" for kind, _ in calls[2])
    pruner.profile({"a": batches}, input_moments=False)  # a new profile forgets them and, told so, sums none
    pruner.prune(mlp_sparsity=0.2, recipe="paper", reconstruct=True)
    assert len(calls) == 4


def test_profile_time_moments_equal_a_pass_of_their_own(monkeypatch):
    """Summed while profiling (one pass per task) or by prune's own pass (skipped above the memory budget): the
    same moments, so the same reconstructed model."""

    family_spec = family_for_model_type("gemma3_text")
    pruner, batches = _profiled("gemma3_text")
    targets = [("mlp", layer) for layer in range(pruner.model.config.num_hidden_layers)]
    assert set(pruner._moments[1].moments) == set(targets)  # the profile sums the down_proj inputs' only
    separate = collect_input_moments(
        pruner.model, family_spec, lambda: [*batches, *batches[:1]], targets, disable_progress=True
    )
    profiled = pruner._moments[1]
    assert pruner._moments[0] == frozenset({"a", "b"}) and profiled.num_tokens == separate.num_tokens
    for key in targets:
        for got, expected in zip(profiled.get(*key), separate.get(*key)):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    fused = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True)
    pruner.profile({"a": batches, "b": batches[:1]}, moments_memory_gib=1000 / 2**30)  # too big now: none summed
    assert pruner._moments is None
    own_pass = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True)
    with torch.no_grad():
        torch.testing.assert_close(own_pass(**batches[0]).logits, fused(**batches[0]).logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"`input_moments` must be True or False, got 1"):
        pruner.profile({"a": batches}, input_moments=1)
    for bad in (0, -1.0, "2GiB"):
        with pytest.raises(ValueError, match=r"`moments_memory_gib` must be a number"):
            pruner.profile({"a": batches}, moments_memory_gib=bad)


def test_moments_too_big_to_keep_are_read_one_pass_at_a_time(monkeypatch):
    """Above the budget (Gemma 3 1B's MLP moments take 2.6 GB, Gemma-2 9B's 17.6 GB) the reconstruction sums them in
    passes of at most the budget each and surgery drops each group before the next pass: the same model, one
    group in memory at a time, none kept."""
    import gc
    import weakref

    import diet_hf.profiling

    pruner, batches = _profiled("gemma3_text")
    reference = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True, anchor_bos=True)
    one_layer = MomentSums.nbytes_for([("mlp", 0)], moment_widths(pruner.model.config))
    pruner.profile({"a": batches, "b": batches[:1]}, moments_memory_gib=one_layer / 2**30)
    original, groups, alive = diet_hf.profiling.iter_input_moments, [], []

    def watched(*args, **kwargs):
        for moments in original(*args, **kwargs):
            gc.collect()
            alive.append(sum(ref() is not None for ref in groups))  # earlier groups still held when this one came
            groups.append(weakref.ref(moments))
            yield moments

    monkeypatch.setattr(diet_hf.profiling, "iter_input_moments", watched)
    streamed = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True, anchor_bos=True)
    assert len(groups) == 4 and alive == [0, 0, 0, 0]  # attention and MLP of both layers, one pass each
    assert pruner._moments is None
    with torch.no_grad():
        torch.testing.assert_close(streamed(**batches[0]).logits, reference(**batches[0]).logits, rtol=1e-4, atol=1e-5)


def test_an_inplace_prune_reads_the_moments_deepest_first_and_frees_each_layer_once_no_pass_needs_it(monkeypatch):
    """In place, the streamed passes come deepest first, so a layer whose modules are solved is cut (its dense
    tensors freed) before the passes of the layers above it, which stop below it: the same model as all at once."""
    import gc
    import weakref

    import diet_hf.profiling

    pruner, batches = _profiled("gemma3_text")
    options = dict(sparsity=0.4, recipe="paper", reconstruct=True, anchor_bos=True)
    reference = pruner.prune(**options)
    one_layer = MomentSums.nbytes_for([("mlp", 0)], moment_widths(pruner.model.config))
    pruner.profile({"a": batches, "b": batches[:1]}, moments_memory_gib=one_layer / 2**30)
    dense = [weakref.ref(layer.mlp.up_proj.weight) for layer in pruner.model.model.layers]
    original, order, alive = diet_hf.profiling.iter_input_moments, [], []

    def watched(*args, **kwargs):
        for moments in original(*args, **kwargs):
            gc.collect()
            order.append(sorted(moments.moments))
            alive.append([ref() is not None for ref in dense])  # each layer's dense weights, after this pass
            yield moments

    monkeypatch.setattr(diet_hf.profiling, "iter_input_moments", watched)
    pruned = pruner.prune(**options, inplace=True)
    assert order == [[("mlp", 1)], [("attn", 1)], [("mlp", 0)], [("attn", 0)]]
    # layer 1 is cut once both its modules are solved, before the passes that stop in layer 0
    assert alive == [[True, True], [True, True], [True, False], [True, False]]
    gc.collect()
    assert [ref() is None for ref in dense] == [True, True]
    with torch.no_grad():
        torch.testing.assert_close(pruned(**batches[0]).logits, reference(**batches[0]).logits, rtol=1e-4, atol=1e-5)


def test_loaded_scores_draw_the_calibration_data_again(tmp_path, data_dir, tiny_tokenizer):
    import shutil

    dense = tiny_dense_model("gemma3_text")
    pruner = DietPruner(dense, tiny_tokenizer).profile(
        tasks=["rte", "boolq"], num_samples=4, batch_size=3, data_dir=data_dir, disable_progress=True
    )
    first = pruner.prune(sparsity=0.3, reconstruct=True)
    pruner.save_scores(tmp_path / "scores")
    loaded = DietPruner(dense, tiny_tokenizer).load_scores(tmp_path / "scores", data_dir=data_dir)
    again = loaded.prune(sparsity=0.3, reconstruct=True)
    assert loaded.plan.to_dict() == pruner.plan.to_dict()
    ids = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, first(ids).logits, rtol=1e-4, atol=1e-5)
    # a budget of one layer's moments: the same model from one pass per cut module, none kept
    one_layer = MomentSums.nbytes_for([("mlp", 0)], moment_widths(dense.config))
    small = DietPruner(dense, tiny_tokenizer)
    small.load_scores(tmp_path / "scores", data_dir=data_dir, moments_memory_gib=one_layer / 2**30)
    streamed = small.prune(sparsity=0.3, reconstruct=True)
    assert small._moments is None and loaded._moments is not None
    with torch.no_grad():
        torch.testing.assert_close(streamed(ids).logits, first(ids).logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"`moments_memory_gib` must be a number > 0, got 0"):
        small.load_scores(tmp_path / "scores", moments_memory_gib=0)
    # the data changed since the profile: the examples drawn again differ, and the error says so
    changed = tmp_path / "data"
    for task in ("rte", "boolq"):
        shutil.copytree(data_dir / task, changed / task, ignore=shutil.ignore_patterns("raw"))
    rows = (changed / "rte" / "train.jsonl").read_text().splitlines()
    (changed / "rte" / "train.jsonl").write_text("\n".join(rows[1:]) + "\n")
    stale = DietPruner(dense, tiny_tokenizer).load_scores(tmp_path / "scores", data_dir=changed)
    with pytest.raises(ValueError, match=r"examples of task 'rte' drawn again differ .* pass `reconstruct=False`"):
        stale.prune(sparsity=0.3, reconstruct=True)


@pytest.mark.parametrize("answer", ["any", "gold", None])  # None: a profile saved before the option
def test_loaded_scores_end_the_texts_drawn_again_in_the_profiles_answers(answer, tmp_path, data_dir, tiny_tokenizer):
    """`calibration_answer` is part of the profile's record: a loaded profile draws the same examples again and ends
    them in the same answers (the gold ones for a profile saved before the option), so it reconstructs the same
    model; the pruned model's record names the answer."""
    from diet_hf.constants import SCORES_META_FILE

    dense = tiny_dense_model("gemma3_text")
    pruner = DietPruner(dense, tiny_tokenizer).profile(
        tasks=["rte", "boolq"],
        num_samples=4,
        batch_size=3,
        data_dir=data_dir,
        disable_progress=True,
        calibration_answer=answer or "gold",
    )
    assert pruner.scores.provenance["calibration_answer"] == (answer or "gold")
    texts = {task: data.texts for task, data in pruner._calibration["data"].items()}
    first = pruner.prune(sparsity=0.3, reconstruct=True)
    pruner.save_scores(tmp_path / "scores")
    if answer is None:
        meta = json.loads((tmp_path / "scores" / SCORES_META_FILE).read_text())
        del meta["provenance"]["calibration_answer"]
        (tmp_path / "scores" / SCORES_META_FILE).write_text(json.dumps(meta))
    loaded = DietPruner(dense, tiny_tokenizer).load_scores(tmp_path / "scores", data_dir=data_dir)
    again = loaded.prune(sparsity=0.3, reconstruct=True)
    assert {task: data.texts for task, data in loaded._calibration["data"].items()} == texts
    with torch.no_grad():
        ids = random_batch()
        torch.testing.assert_close(again(ids).logits, first(ids).logits, rtol=1e-4, atol=1e-5)
    recorded = {model.config.pruning["calibration_answer"] for model in (first, again)}
    assert recorded == {answer or "gold"}
    if answer == "any":  # the option reaches the texts: some end in another choice than the gold one
        gold = DietPruner(dense, tiny_tokenizer).profile(
            tasks=["rte", "boolq"], num_samples=4, data_dir=data_dir, disable_progress=True, calibration_answer="gold"
        )
        assert {task: data.texts for task, data in gold._calibration["data"].items()} != texts
        with pytest.raises(ValueError, match=r"`calibration_answer` must be one of \('any', 'gold'\), got 'all'"):
            gold.profile(tasks=["rte"], num_samples=4, data_dir=data_dir, calibration_answer="all")


@pytest.mark.parametrize("centered", [True, False])
def test_anchor_is_reproduced_exactly_and_is_the_limit_of_weighting_it(centered):
    """`anchor`: the fit's output at the anchor equals the dense output there, and the constrained fit is the plain
    fit on moments that count the anchor ever more often (the weighted least squares it is the limit of)."""
    x = _correlated_inputs()
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(7, x.shape[1], generator=g, dtype=torch.float64)
    anchor = 4 * torch.randn(x.shape[1], generator=g, dtype=torch.float64)  # far from the data, as BOS is
    kept = torch.tensor([0, 2, 3, 7, 8, 11])
    mean, second = x.mean(0), x.T @ x / len(x)
    plain, plain_bias = least_squares_update(weight, kept, mean, second, centered=centered, damping=0.0)
    anchored, bias = least_squares_update(weight, kept, mean, second, centered=centered, damping=0.0, anchor=anchor)
    offset = bias if centered else 0
    torch.testing.assert_close(anchor[kept] @ anchored.T + offset, weight @ anchor, rtol=1e-10, atol=1e-10)
    plain_error = (anchor[kept] @ plain.T + (plain_bias if centered else 0) - weight @ anchor).abs().max()
    assert plain_error > 0.1  # the plain fit misses it
    share = 1 - 1e-6  # the anchor's share of the weighted tokens: weight / (weight + 1), weight = 1e6
    heavy_mean = (1 - share) * mean + share * anchor
    heavy_second = (1 - share) * second + share * torch.outer(anchor, anchor)
    limit, limit_bias = least_squares_update(weight, kept, heavy_mean, heavy_second, centered=centered, damping=0.0)
    torch.testing.assert_close(anchored, limit, rtol=1e-6, atol=1e-6)  # the plain fit is 1.5 away
    if centered:
        torch.testing.assert_close(bias, limit_bias, rtol=1e-6, atol=1e-6)
    # the data are fitted as closely as the constraint allows: worse than the plain fit, better than slicing
    data_error = ((x[:, kept] @ anchored.T + offset - x @ weight.T) ** 2).mean()
    plain_data_error = ((x[:, kept] @ plain.T + (plain_bias if centered else 0) - x @ weight.T) ** 2).mean()
    sliced_error = ((x[:, kept] @ weight[:, kept].T - x @ weight.T) ** 2).mean()
    assert plain_data_error <= data_error < sliced_error
    with pytest.raises(ValueError, match=r"`anchor` must have shape \(12,\), got \(11,\)"):
        least_squares_update(weight, kept, mean, second, centered=centered, anchor=anchor[:11])
    # an anchor that is zero on every kept channel: no change of the kept columns can move its output, so the fit is
    # the plain one (finite; without the bias, its removed channels' output cannot be reproduced)
    silent = anchor.clone()
    silent[kept] = 0
    unmoved, unmoved_bias = least_squares_update(weight, kept, mean, second, centered=False, anchor=silent)
    reference, _ = least_squares_update(weight, kept, mean, second, centered=False)
    assert unmoved_bias is None and torch.equal(unmoved, reference)


def test_the_update_of_a_parameter_tracks_no_gradient():
    """Surgery passes the dense model's `nn.Parameter` weights: the fit keeps no autograd graph (which would hold its
    float64 copies alive as long as the new weights)."""
    x = _correlated_inputs()
    weight = torch.nn.Parameter(torch.randn(7, x.shape[1], dtype=torch.float64))
    kept_weight, bias = least_squares_update(
        weight, torch.tensor([0, 2, 3]), x.mean(0), x.T @ x / len(x), centered=True
    )
    assert not kept_weight.requires_grad and kept_weight.grad_fn is None and not bias.requires_grad


def test_the_solver_factors_a_positive_definite_matrix_once_and_falls_back_to_lu_otherwise(monkeypatch):
    """The fit's solves go through one Cholesky factorization (the damped second moment is positive definite) and
    equal LU's; a matrix the factorization refuses (no damping, numerically indefinite) is solved by LU instead."""
    from diet_hf import reconstruction

    x = _correlated_inputs()
    second = x.T @ x / len(x)
    b = torch.randn(12, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    factorizations = []
    cholesky_ex = torch.linalg.cholesky_ex
    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda m: factorizations.append(m) or cholesky_ex(m))
    solve = reconstruction._spd_solver(second)
    torch.testing.assert_close(solve(b), torch.linalg.solve(second, b), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(solve(b[:, :1]), torch.linalg.solve(second, b[:, :1]), rtol=1e-9, atol=1e-9)
    assert len(factorizations) == 1
    indefinite = torch.diag(torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(reconstruction._spd_solver(indefinite)(b[:3]), torch.linalg.solve(indefinite, b[:3]))


def test_first_token_inputs_are_position_zero_of_any_input():
    """One forward pass of the token alone gives its inputs at the start of any longer input, padded or not."""
    dense = tiny_dense_model("gemma3_text")
    family = family_for_model_type("gemma3_text")
    targets = [("mlp", 0), ("attn", 1), ("mlp", 1)]
    inputs = first_token_inputs(dense, family, 2, targets)
    assert sorted(inputs) == sorted(targets)
    seen = {}
    batch = _batches()[0]
    batch["input_ids"][:, 0] = 2
    with _hooked_inputs(dense, family, targets, lambda key, x: seen.__setitem__(key, x[:, 0])):
        dense(**batch)
    for key in targets:
        for row in seen[key]:  # both rows (the second one padded) start with the same vector
            torch.testing.assert_close(inputs[key], row, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("bias", [True, False])
def test_anchor_bos_keeps_the_first_position_exact(family, bias):
    """With `anchor_bos`, every cut layer reproduces its dense output at BOS, and position 0 sees only itself: the
    pruned model's logits after BOS are the dense model's, whatever follows; the rest is still fitted."""
    pruner, batches = _profiled(family)
    bos = pruner.model.config.bos_token_id
    test = {k: v.clone() for k, v in batches[0].items()}
    test["input_ids"][:, 0] = bos
    options = {"sparsity": 0.4, "recipe": "paper", "bias_compensation": bias, "reconstruct": True}
    plain = pruner.prune(**options)
    anchored = pruner.prune(**options, anchor_bos=True)
    assert anchored.config.pruning["options"]["anchor_bos"] is True
    assert plain.config.pruning["options"]["anchor_bos"] is False
    with torch.no_grad():
        dense_logits = pruner.model(**test).logits
        torch.testing.assert_close(anchored(**test).logits[:, 0], dense_logits[:, 0], rtol=1e-4, atol=1e-4)
        assert (plain(**test).logits[:, 0] - dense_logits[:, 0]).abs().max() > 1e-2
        # later positions still differ from dense (the model is pruned) but stay near the plain fit's
        later = (anchored(**test).logits[:, 1:] - dense_logits[:, 1:]).abs().max()
        assert later > 1e-3
    # a recipe's value needs reconstruct; passed explicitly without it, an error
    with pytest.raises(ValueError, match=r"`anchor_bos=True` constrains .* needs `reconstruct=True`"):
        pruner.prune(sparsity=0.4, recipe="paper", anchor_bos=True)
    with pytest.raises(ValueError, match=r"`anchor_bos` must be True or False, got 1"):
        pruner.prune(sparsity=0.4, anchor_bos=1)


def test_anchor_bos_needs_a_bos_token():
    pruner, _ = _profiled("gemma2")
    pruner.model.config.bos_token_id = None
    with pytest.raises(ValueError, match=r"`anchor_bos=True` needs a BOS token; this pruner's Gemma2Config has none"):
        pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True, anchor_bos=True)


def test_reconstructed_weights_are_not_sliced_first(monkeypatch):
    """Surgery takes a reconstructed `down_proj` / `o_proj` weight as the fit made it, without slicing the dense one
    first (a copy per cut layer that was thrown away: 0.2 GB of the peak for the 270M model at 20%)."""
    import diet_hf.surgery

    pruner, batches = _profiled("gemma2")
    sliced = []
    original = diet_hf.surgery.slice_linear_weight

    def spy(weight, kept, **kwargs):
        sliced.append(kwargs["dim"])
        return original(weight, kept, **kwargs)

    monkeypatch.setattr(diet_hf.surgery, "slice_linear_weight", spy)
    pruner.prune(sparsity=0.5, recipe="paper", reconstruct=True)  # MLP width and heads cut, both reconstructed
    assert sliced and 1 not in sliced  # gate/up/q/k/v sliced by rows; no down_proj / o_proj by columns
    sliced.clear()
    pruner.prune(sparsity=0.5, recipe="paper", reconstruct=False)
    assert 1 in sliced


def test_bfloat16_products_are_staged_into_one_matmul_shape_and_match_the_float32_sums(monkeypatch):
    """`product_dtype=torch.bfloat16`: the real tokens' rows are multiplied in full buffers of `_STAGE_ROWS` only (on
    the CPU a matmul of a new shape is a new kernel kept in oneDNN's cache: the profile's varying batches made
    hundreds), the rows left over in float32 when the sums are read, and the sums stay within bfloat16's rounding of
    the float32 ones, read mid-way (`channel_sums`) or at the end (`moments`)."""
    import diet_hf.moments as profiler

    monkeypatch.setattr(profiler, "_STAGE_ROWS", 16)
    products, original = [], profiler._add_products
    monkeypatch.setattr(
        profiler, "_add_products", lambda rows, x: (products.append((x.dtype, len(x))), original(rows, x))
    )
    channels, key = 300, ("mlp", 0)
    sums = MomentSums([key], {"mlp": channels}, product_dtype=torch.bfloat16)
    assert (
        MomentSums.nbytes_for([key], {"mlp": channels}, torch.bfloat16)
        - MomentSums.nbytes_for([key], {"mlp": channels})
        == 2 * 16 * channels
    )  # the staging buffer is counted against the memory budget
    g = torch.Generator().manual_seed(0)
    rows = []
    for count in (5, 23, 16, 9):  # 53 real tokens: 16 multiplied, 12 read mid-way, 16 multiplied, 9 read at the end
        x = torch.randn(1, count + 2, channels, generator=g) + 0.3
        mask = torch.ones(1, count + 2, dtype=torch.bool)
        mask[0, -2:] = False  # padding, ignored
        sums.add(key, x, mask)
        rows.append(x[mask])
        if count == 23:  # 28 rows in: one buffer multiplied, 12 staged and flushed by the read
            read = torch.cat(rows).bfloat16().double()
            mid = sums.channel_sums(key)
            torch.testing.assert_close(mid[0], torch.cat(rows).double().sum(0), rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(mid[1], (read**2).sum(0), rtol=1e-2, atol=1e-3)
    sums.num_tokens = 53
    mean, second = sums.moments().get(*key)
    x = torch.cat(rows).double()
    rounded = x.bfloat16().double()
    scale = (x.T @ x / len(x)).diagonal().mean()
    torch.testing.assert_close(mean.double(), x.mean(0), rtol=1e-5, atol=1e-6)  # the first moments stay exact
    torch.testing.assert_close(second.double(), rounded.T @ rounded / len(x), rtol=0, atol=1e-2 * scale)
    torch.testing.assert_close(second.double(), x.T @ x / len(x), rtol=0, atol=2e-2 * scale)
    bf16 = [n for dtype, n in products if dtype == torch.bfloat16]
    assert bf16 == [16, 16]  # one shape
    assert [n for dtype, n in products if dtype == torch.float32] == [12, 9]  # the two reads' leftovers
    with pytest.raises(ValueError, match="`product_dtype` must be torch.float32 or torch.bfloat16"):
        MomentSums([key], {"mlp": channels}, product_dtype=torch.float16)


def test_moments_dtype_chooses_the_products_precision_and_is_recorded(monkeypatch, tmp_path):
    """`ProfileOptions.moments_dtype`: "auto" follows the device (bfloat16 where it is fast), the choice reaches the
    profile's sums and prune's own passes, the record names it, and the model stays close to the float32 one."""
    import diet_hf.moments as profiler
    from diet_hf.moments import moments_product_dtype
    from diet_hf.options import ProfileOptions

    for fast in (True, False):
        monkeypatch.setattr(profiler, "fast_bf16", lambda device, fast=fast: fast)
        assert moments_product_dtype("auto", "cpu") == (torch.bfloat16 if fast else torch.float32)
        assert moments_product_dtype("float32", "cpu") == torch.float32
        assert moments_product_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match=r"`moments_dtype` must be one of \('auto', 'float32', 'bfloat16'\), got 'f"):
        ProfileOptions(moments_dtype="float16")
    pruner, batches = _profiled("gemma3_text")
    assert pruner._moments[1].num_tokens > 0
    reference = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True, anchor_bos=True)
    assert reference.config.pruning["moments_dtype"] == "float32"  # "auto" without fast bfloat16
    summed = []
    monkeypatch.setattr(
        profiler.MomentSums,
        "add",
        lambda self, *a, _add=profiler.MomentSums.add: (summed.append(self.product_dtype), _add(self, *a))[1],
    )
    monkeypatch.setattr(profiler, "fast_bf16", lambda device: True)
    pruner.profile({"a": batches, "b": batches[:1]})  # "auto" on a device with fast bfloat16
    assert set(summed) == {torch.bfloat16}
    auto = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True, anchor_bos=True)
    assert auto.config.pruning["moments_dtype"] == "bfloat16"
    with torch.no_grad():
        expected = reference(**batches[0]).logits
        torch.testing.assert_close(auto(**batches[0]).logits, expected, rtol=0, atol=2e-2 * expected.abs().max())
    # prune's own passes (the o_proj moments of a plan that cuts heads; every pass, above the memory budget) too
    summed.clear()
    pruner.profile({"a": batches, "b": batches[:1]}, moments_dtype="float32", moments_memory_gib=1000 / 2**30)
    pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True)
    assert summed and set(summed) == {torch.float32}
    pruner.save_scores(tmp_path / "scores")
    summed.clear()
    pruner.load_scores(tmp_path / "scores", moments_dtype="bfloat16")
    pruner._calibration = {"data": {"a": batches, "b": batches[:1]}, "batch_size": 8, "max_length": 512}
    loaded = pruner.prune(sparsity=0.4, recipe="paper", reconstruct=True)
    assert summed and set(summed) == {torch.bfloat16}
    assert loaded.config.pruning["moments_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match=r"`moments_dtype` must be one of"):
        pruner.load_scores(tmp_path / "scores", moments_dtype="half")


def test_your_own_texts_are_saved_with_the_profile_for_the_reconstruction(tmp_path, data_dir, tiny_tokenizer):
    """`save_scores` keeps the texts of the tasks you passed (texts and your own questions; registered tasks are
    drawn again), so a loaded profile reconstructs the same model; token batches are not kept and still refused."""
    from diet_hf.constants import SCORES_TEXTS_FILE
    from diet_hf.tasks import multiple_choice_task

    dense = tiny_dense_model("gemma3_text")
    mine = ["Question: what is it? Answer: yes", "the answer is no", "True or False? True", "what is the answer"]
    questions = multiple_choice_task(
        "q",
        [{"context": "Question: is it?\nAnswer:", "choices": ["yes", "no"], "label": 1}] * 2
        + [{"context": "The answer is", "choices": ["True", "False"], "label": 0}],
    )
    tasks = {"rte": None, "mine": mine, "q": questions}
    pruner = DietPruner(dense, tiny_tokenizer).profile(
        tasks, num_samples=3, data_dir=data_dir, disable_progress=True, calibration_answer="gold"
    )  # the gold answers, to write them out below
    first = pruner.prune(sparsity=0.3, reconstruct=True)
    pruner.save_scores(tmp_path / "scores")
    saved = json.loads((tmp_path / "scores" / SCORES_TEXTS_FILE).read_text())["tasks"]
    assert saved == {"mine": mine, "q": ["Question: is it?\nAnswer: no"] * 2 + ["The answer is True"]}
    loaded = DietPruner(dense, tiny_tokenizer).load_scores(tmp_path / "scores", data_dir=data_dir)
    again = loaded.prune(sparsity=0.3, reconstruct=True)
    ids = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, first(ids).logits, rtol=1e-4, atol=1e-5)
    # saved again from the loaded profile, the texts stay; a profile of registered tasks alone leaves none behind
    loaded.save_scores(tmp_path / "again")
    assert json.loads((tmp_path / "again" / SCORES_TEXTS_FILE).read_text())["tasks"] == saved
    DietPruner(dense, tiny_tokenizer).profile(["rte"], num_samples=3, data_dir=data_dir).save_scores(
        tmp_path / "scores"
    )
    assert json.loads((tmp_path / "scores" / SCORES_TEXTS_FILE).read_text())["tasks"] == {}
    # texts that are not the ones the profile read are refused
    (tmp_path / "again" / SCORES_TEXTS_FILE).write_text(json.dumps({"tasks": {"mine": mine[:2], "q": saved["q"]}}))
    edited = DietPruner(dense, tiny_tokenizer).load_scores(tmp_path / "again", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"the texts of task 'mine' saved with the profile are not the ones it read"):
        edited.prune(sparsity=0.3, reconstruct=True)
