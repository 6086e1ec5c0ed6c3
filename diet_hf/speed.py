"""Prefill and decode throughput of a causal LM on fixed inputs (for benchmarks, never for unit tests)."""

import functools
import time

import torch

from ._checks import check_positive_int

__all__ = ["compare_tokens_per_second", "measure_tokens_per_second", "take_turns"]


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
    decode tokens/s (one sequence, `new_tokens` new tokens). Inputs are seeded, so two models see the same tokens; they
    go to the model's (first) device, and the clock waits for that device's queued work (GPUs run asynchronously)."""
    device = next(model.parameters()).device
    ids = torch.randint(1000, 20000, (batch, prompt_len), generator=torch.Generator().manual_seed(0)).to(device)
    prefill = decode = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            start = _clock(device)
            model(ids, logits_to_keep=1, use_cache=False)
            prefill = max(prefill, batch * prompt_len / (_clock(device) - start))
            start = _clock(device)
            model.generate(
                ids[:1, :16],
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad_token_id,
            )
            decode = max(decode, new_tokens / (_clock(device) - start))
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}


def _clock(device: torch.device) -> float:
    """`time.perf_counter()` once `device` has finished its queued work (CUDA, MPS and XPU run asynchronously: without
    the wait a timer reads the launch, not the work; `torch.cpu.synchronize` returns at once)."""
    backend = getattr(torch, device.type, None)
    if backend is not None and hasattr(backend, "synchronize"):
        backend.synchronize()
    return time.perf_counter()


def compare_tokens_per_second(models: dict, *, rounds: int = 5, **measure_kwargs) -> dict[str, dict[str, float]]:
    """`measure_tokens_per_second` of several models taking turns: in each of `rounds` rounds every model is measured
    once (the order reversed every other round), and each model keeps its best round. Measured one after the other
    instead, a machine whose speed drifts during the measurement (a shared virtual machine, a CPU warming up) favours
    whichever model ran in its fast stretch; taking turns gives every model the same stretches.
    `measure_kwargs` go to `measure_tokens_per_second` (not `repeats`)."""
    check_positive_int("rounds", rounds)
    if "repeats" in measure_kwargs:
        raise ValueError("`repeats` is set by `compare_tokens_per_second` (one per round); pass `rounds`.")
    measures = {
        name: functools.partial(measure_tokens_per_second, model, repeats=1, **measure_kwargs)
        for name, model in models.items()
    }
    return take_turns(measures, rounds=rounds)


def take_turns(measures: dict, *, rounds: int) -> dict[str, dict[str, float]]:
    """Calls each of `measures` (name: a function returning `{quantity: rate}`, higher is better) once per round for
    `rounds` rounds, the order reversed every other round, and keeps each name's best value of every quantity: the
    turn-taking of `compare_tokens_per_second`, for any measurement."""
    check_positive_int("rounds", rounds)
    names = list(measures)
    best: dict[str, dict[str, float]] = {name: {} for name in names}
    for round_idx in range(rounds):
        for name in names if round_idx % 2 == 0 else names[::-1]:
            for key, value in measures[name]().items():
                best[name][key] = max(best[name].get(key, value), value)
    return best
