"""Where profile + prune spends its time and memory on the real Gemma 3 270M, against one plain forward pass.

    python benchmarks/cost_split.py --data-dir ../shared/data --output benchmarks/results/cost_split

The cost target (issue 7, kept in the README's Status table) is profile + prune at most 1.5x one plain forward pass
over the same calibration tokens. `run_benchmark.py` reads the total; this script splits it, in one process with
nothing else meant to run: the plain decoder pass (timed before and after, the machine's speed drifts), the default
profile (with the reconstruction's x xᵀ sums) and `prune(sparsity=0.2)` after it, then the profile without those
sums (`input_moments=False`), each `--repeats` times, best reading each; memory from the first profile + prune, which
follows plain passes only, as in `run_benchmark.py`. It also counts the multiply-adds of the
decoder's linear layers and of the x xᵀ sums over the same tokens, and samples the resident memory during each step.
"""

import argparse
import time

import torch
from _side import provenance, write_report
from run_benchmark import _linear_macs, _PeakRss

from diet_hf import DietPruner
from diet_hf.moments import MomentSums, moment_widths, moments_product_dtype
from diet_hf.real_model import load_gemma3_270m
from diet_hf.tasks import PAPER_TASKS, load_calibration


def _timed(step):
    with _PeakRss() as rss:
        start = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - start
    return result, seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--moments-dtype", default="auto", help="ProfileOptions.moments_dtype of the profiles")
    parser.add_argument("--output", default="benchmarks/results/cost_split")
    args = parser.parse_args()

    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    texts = [
        text
        for task in PAPER_TASKS
        for text in load_calibration(task, num_samples=args.num_samples, data_dir=args.data_dir).texts
    ]
    batches = list(pruner._text_batches(texts, 8, 512))
    tokens = int(sum(batch["attention_mask"].sum() for batch in batches))
    decoder = dense.get_decoder()

    def plain() -> None:
        with torch.inference_mode():
            for batch in batches:
                decoder(**batch, use_cache=False)

    def profile(input_moments: bool) -> None:
        pruner.profile(
            PAPER_TASKS,
            num_samples=args.num_samples,
            data_dir=args.data_dir,
            disable_progress=True,
            input_moments=input_moments,
            moments_dtype=args.moments_dtype,
        )

    readings = {"plain_before": [], "profile_without_moments": [], "profile": [], "prune": [], "plain_after": []}
    memory = {}
    plain()  # warm-up, not counted
    for _ in range(args.repeats):
        readings["plain_before"].append(_timed(plain)[1])
    for _ in range(args.repeats):
        _, seconds, rss = _timed(lambda: profile(True))
        readings["profile"].append(seconds)
        if not memory:  # the first reading: the process as `run_benchmark.py` profiles it, after plain passes only
            memory["before_profile_gb"], memory["profile_peak_gb"] = rss.before, rss.peak
        pruned, seconds, rss = _timed(lambda: pruner.prune(sparsity=0.2, disable_progress=True))
        readings["prune"].append(seconds)
        if "prune_peak_gb" not in memory:
            memory["after_profile_gb"], memory["prune_peak_gb"] = rss.before, rss.peak
        dense_storage = {p.untyped_storage().data_ptr() for p in dense.parameters()}
        memory["pruned_new_tensors_gb"] = (
            sum(
                p.numel() * p.element_size()
                for p in pruned.parameters()
                if p.untyped_storage().data_ptr() not in dense_storage
            )
            / 2**30
        )
        del pruned
    for _ in range(args.repeats):
        readings["profile_without_moments"].append(_timed(lambda: profile(False))[1])
    for _ in range(args.repeats):
        readings["plain_after"].append(_timed(plain)[1])

    best = {name: min(values) for name, values in readings.items()}
    plain_s = (best["plain_before"] + best["plain_after"]) / 2
    blocks_macs, _ = _linear_macs(dense)
    keys = [("mlp", layer) for layer in range(dense.config.num_hidden_layers)]
    width = moment_widths(dense.config)["mlp"]
    moments_bytes = MomentSums.nbytes_for(keys, moment_widths(dense.config))  # the sums alone
    # multiply-adds per token of the block-triangular x xᵀ sums: 4 bytes per float32 entry held
    moments_macs = (moments_bytes / 4 - width * len(keys)) * tokens
    model_gb = sum(p.numel() * p.element_size() for p in dense.parameters()) / 2**30
    products = str(moments_product_dtype(args.moments_dtype, dense.device)).removeprefix("torch.")
    report = {
        **provenance(),
        "moments_dtype": args.moments_dtype,
        "moments_products": products,
        "calibration_tokens": tokens,
        "readings_seconds": readings,
        "best_seconds": best,
        "plain_seconds": plain_s,
        "ratios": {
            "profile_without_moments": best["profile_without_moments"] / plain_s,
            "moments": (best["profile"] - best["profile_without_moments"]) / plain_s,
            "prune": best["prune"] / plain_s,
            "profile_and_prune": (best["profile"] + best["prune"]) / plain_s,
        },
        "decoder_linear_macs": blocks_macs * tokens,
        "moments_macs": moments_macs,
        "moments_gb": moments_bytes / 2**30,
        "model_gb": model_gb,
        "memory_gb": memory,
    }
    ratios = report["ratios"]
    lines = [
        "# Profile + prune cost, split (Gemma 3 270M, float32, CPU)",
        "",
        f"`{report['command']}` on {report['machine']}, {report['processor_count']} CPUs; {tokens:,} calibration "
        f"tokens ({len(PAPER_TASKS)} tasks x {args.num_samples}); best of {args.repeats} per step; the x xᵀ products "
        f"in {products} (`moments_dtype={args.moments_dtype!r}`).",
        "",
        "| step | seconds | x one plain forward pass |",
        "|---|---|---|",
        f"| plain decoder pass (best before / after) | {best['plain_before']:.1f} / {best['plain_after']:.1f} | 1 |",
        f"| profile without the x xᵀ sums | {best['profile_without_moments']:.1f} | "
        f"{ratios['profile_without_moments']:.2f} |",
        f"| the x xᵀ sums (profile with them, less without) | "
        f"{best['profile'] - best['profile_without_moments']:.1f} | {ratios['moments']:.2f} |",
        f"| prune at 20% (plan, reconstruction solves, surgery) | {best['prune']:.1f} | {ratios['prune']:.2f} |",
        f"| **profile + prune** | {best['profile'] + best['prune']:.1f} | **{ratios['profile_and_prune']:.2f}** |",
        "",
        f"Multiply-adds over these tokens: the decoder's linear layers {report['decoder_linear_macs'] / 1e12:.2f} "
        f"trillion, the block-triangular x xᵀ sums of the 18 `down_proj` inputs {moments_macs / 1e12:.2f} trillion "
        f"({moments_macs / report['decoder_linear_macs']:.2f} of the decoder's).",
        "",
        f"Memory (resident, GiB; the model {model_gb:.2f}): {memory['before_profile_gb']:.2f} before profiling, "
        f"{memory['profile_peak_gb']:.2f} at the profile's peak, {memory['after_profile_gb']:.2f} after it (the "
        f"moments held: {report['moments_gb']:.2f}), {memory['prune_peak_gb']:.2f} at the prune's peak (the pruned "
        f"model's new tensors: {memory['pruned_new_tensors_gb']:.2f}).",
    ]
    write_report(args.output, report, lines)


if __name__ == "__main__":
    main()
