"""Prefill and decode throughput of a causal LM on fixed inputs (for benchmarks, never for unit tests)."""

import time

import torch

__all__ = ["measure_tokens_per_second"]


def measure_tokens_per_second(
    model,
    *,
    prompt_len: int = 256,
    batch: int = 4,
    new_tokens: int = 32,
    repeats: int = 5,
    pad_token_id: int | None = 0,
) -> dict[str, float]:
    """Best-of-`repeats` prefill tokens/s (`batch` x `prompt_len`, LM head on the last position only) and greedy
    decode tokens/s (one sequence, `new_tokens` new tokens). Inputs are seeded, so two models see the same tokens."""
    ids = torch.randint(1000, 20000, (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    prefill = decode = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids, logits_to_keep=1, use_cache=False)
            prefill = max(prefill, batch * prompt_len / (time.perf_counter() - start))
            start = time.perf_counter()
            model.generate(
                ids[:1, :16],
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad_token_id,
            )
            decode = max(decode, new_tokens / (time.perf_counter() - start))
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}
