"""The pipeline on an accelerator: profile, prune (the default recipe and the baselines), evaluate, perplexity and
speed on one device, and a model split across two (the CPU and a GPU, dispatched by accelerate as a split load is).

Each test compares with the same work done on the CPU. The `cpu` cases run everywhere (they check the tests
themselves); the CUDA cases are skipped without a GPU. None of the CUDA cases had run on one as of 2026-12-04: this
project had no GPU. They are the short check to run when one is lent (`scripts/test.sh tests/test_devices.py`).
"""

import pytest
import torch
from conftest import random_batch, tiny_dense_model

from diet_hf import DietPruner
from diet_hf.evaluation import evaluate, texts_perplexity
from diet_hf.speed import measure_tokens_per_second

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
TEXTS = ["Question: what is the answer? Answer: yes", "True False no yes", "the answer is no"]


def _batches(vocab_size: int = 128) -> list[dict]:
    return [
        {"input_ids": random_batch(2, 9, vocab_size=vocab_size, seed=i), "attention_mask": torch.ones(2, 9, dtype=int)}
        for i in range(3)
    ]


def _pruner(model, vocab_size: int = 128) -> DietPruner:
    batches = _batches(vocab_size)
    calibration = {"a": batches[:2], "b": batches[2:]}
    # float32 x x^T products on every device ("auto" multiplies in bfloat16 on a GPU, and on some CPUs), so the
    # reconstructions compare to float32 precision
    return DietPruner(model).profile(calibration, channel_stats=True, moments_dtype="float32", disable_progress=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["diet", "flap", "wanda_sp"])
def test_profile_and_prune_on_a_device_give_the_cpu_model(device, method):
    reference = _pruner(tiny_dense_model("gemma2"))
    pruner = _pruner(tiny_dense_model("gemma2").to(device))
    for task in reference.scores.tasks:
        torch.testing.assert_close(pruner.scores.mlp[task], reference.scores.mlp[task], rtol=1e-4, atol=1e-6)
    expected = reference.prune(sparsity=0.3, method=method, disable_progress=True)
    pruned = pruner.prune(sparsity=0.3, method=method, disable_progress=True)
    assert pruner.plan.to_dict()["mlp_kept_indices"] == reference.plan.to_dict()["mlp_kept_indices"]
    assert {parameter.device.type for parameter in pruned.parameters()} == {device}
    batch = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(pruned(batch.to(device)).logits.cpu(), expected(batch).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_perplexity_and_speed_on_a_device(device, tiny_tokenizer, data_dir):
    model = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    expected = evaluate(model, tiny_tokenizer, ["rte", "piqa"], limit=6, data_dir=data_dir, disable_progress=True)
    expected_ppl = texts_perplexity(model, tiny_tokenizer, TEXTS, disable_progress=True)["perplexity"]
    model.to(device)
    result = evaluate(model, tiny_tokenizer, ["rte", "piqa"], limit=6, data_dir=data_dir, disable_progress=True)
    assert result["results"]["rte"]["acc"] == expected["results"]["rte"]["acc"]
    assert result["results"]["piqa"]["acc_norm"] == expected["results"]["piqa"]["acc_norm"]
    ppl = texts_perplexity(model, tiny_tokenizer, TEXTS, disable_progress=True)["perplexity"]
    assert ppl == pytest.approx(expected_ppl, rel=1e-4)
    speed = measure_tokens_per_second(
        tiny_dense_model("gemma2", vocab_size=20000).to(device), prompt_len=8, new_tokens=2, repeats=1
    )
    assert speed["prefill_tokens_per_s"] > 0 and speed["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("second", ["cpu", pytest.param(0, marks=needs_cuda)])
def test_a_model_split_across_the_cpu_and_a_gpu(second, tiny_tokenizer, data_dir):
    """Layer 0 and the final norm on the GPU (`second`; "cpu": the test's own check, nothing split), the rest (the tied
    head with the embeddings) on the CPU: the reconstruction's sums take layer 0's inputs from the GPU, the pruned
    model is dispatched on the same map, and the evaluator's head gets the final norm's states from the GPU."""
    from accelerate import dispatch_model

    vocab = len(tiny_tokenizer)
    reference = _pruner(tiny_dense_model("gemma2", vocab_size=vocab), vocab)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": second,
        "model.layers.1": "cpu",
        "model.norm": second,
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    split = dispatch_model(tiny_dense_model("gemma2", vocab_size=vocab), device_map=device_map, main_device="cpu")
    pruner = _pruner(split, vocab)
    expected = reference.prune(sparsity=0.3, disable_progress=True)
    pruned = pruner.prune(sparsity=0.3, disable_progress=True)
    assert pruned.hf_device_map == device_map
    assert pruned.model.layers[0].mlp.down_proj.weight.is_cuda == (second != "cpu")
    assert not pruned.model.layers[1].mlp.down_proj.weight.is_cuda
    batch = random_batch(vocab_size=vocab)
    with torch.no_grad():
        torch.testing.assert_close(pruned(batch).logits.cpu(), expected(batch).logits, rtol=1e-4, atol=1e-4)
    scoring = {"limit": 6, "data_dir": data_dir, "disable_progress": True}
    scored = evaluate(pruned, tiny_tokenizer, ["rte"], **scoring)["results"]["rte"]
    assert scored["acc"] == evaluate(expected, tiny_tokenizer, ["rte"], **scoring)["results"]["rte"]["acc"]
