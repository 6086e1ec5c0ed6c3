"""Diagnosis: does block quantization of the weights move the pruned model more than the dense one, and is the
least-squares refit's `down_proj` the fragile part?

    python benchmarks/quantization_noise_probe.py --data-dir ../shared/data

In llama.cpp (`benchmarks/gguf_benchmark.py`) Q4_K_M cost the 20% model 1.4 points of the seven-task average and
the dense model nothing measurable, while q8_0 cost neither. Two explanations were open. (1) The refit: the default
replaces each cut `down_proj` by W_K + W_R S_RK S_KK⁻¹, whose entries could be larger or cancel more than the dense
weights', so that the same rounding moves its output more. (2) No fragile tensor at all: the rounding moves both
models alike, and the two errors add.

This probe rounds the decoder's linear weights in PyTorch the way llama.cpp's simplest block types do (symmetric
round-to-nearest per block of 32 input weights, one scale per block: `q4_0`, `q5_0` and `q8_0`; the embedding, the
norms and any bias stay as they are) and reads, after the first 40 dev prompts of each of 8 tasks: KL(model ||
rounded model), what the rounding alone moves, and KL(dense || rounded model). At 4 bits it also rounds `down_proj`
alone and everything but `down_proj`. Three models: dense; the default recipe at 20% without compensation biases
(the model the GGUF benchmark converted); and the same plan without the refit (`reconstruct=False`), which keeps the
dense model's `down_proj` columns. The profile is the dev probes' (7 tasks x 100 calibration examples, answers drawn
per example). A diagnosis: nothing is chosen on it, and llama.cpp's K-quants (scales and minima per sub-block of
32, in super-blocks of 256) round more finely than `q4_0`, so only the comparison between models carries over.

`--accuracy-types q5_0 [q4_0]` (run after the KL rows, which it keeps) then asks the accuracy question, written down
before its rows: does the same rounding cost the pruned model more of the seven-task average than the dense one? On
the first `--limit` dev examples per task (the profile's calibration examples excluded for every model) it scores
dense and pruned (refit) in float32 and rounded, and reports for each model the rounded minus the float32 average
(paired bootstrap) and the difference of those two differences, pruned minus dense, with a 95% interval from the
same resampled examples for all four. `q5_0` is what llama.cpp's Q4_K_M falls back to for this model's tensors whose
rows are 640 wide (q, k, v, gate and up: K-quants need multiples of 256). A diagnosis: nothing is chosen on it.

Outcome (2026-12-06, `benchmarks/results/quantization_noise_probe.md`): explanation (2). Rounding moves the pruned
model as far as the dense one (q4_0 KL 0.350 against 0.336), its refitted `down_proj` as far as the dense one (0.089
against 0.087), and the errors add (0.162 -> 0.498). q5_0 costs neither model accuracy (pruned minus dense +0.001
[-0.011, +0.012]). The Q4_K_M loss that motivated the probe did not replicate in llama.cpp on 300 dev examples per
task either (`gguf_benchmark.py --accuracy-half dev`: the pruned model +0.007 [-0.002, +0.016]).
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dev_sweep  # noqa: E402
from _side import (  # noqa: E402
    commands_text,
    difference_of_differences,
    interval,
    provenance,
    task_average,
    write_report,
)

from diet_hf.evaluation import (  # noqa: E402
    correct_by_task,
    evaluate,
    kl_divergence,
    next_token_logprobs,
    paired_bootstrap,
)
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SUBSETS = {"all": PROJECTIONS, "down_proj": ("down_proj",), "all but down_proj": PROJECTIONS[:-1]}


def round_blocks(weight: torch.Tensor, bits: int, block: int = 32) -> torch.Tensor:
    """`weight` (out, in) rounded as llama.cpp's `q4_0` / `q5_0` / `q8_0` round it: per block of `block` input
    weights one scale d, d = m / -2^(bits-1) with m the block's weight of largest magnitude (signed) for 4 and 5 bits,
    d = max|w| / 127 for 8; each weight becomes d (stored in float16) times an integer in the type's range. Checked
    against the `gguf` package's (0.19) quantize / dequantize of the three types on 64 x 640 random weights: the
    same values, every one."""
    rows, columns = weight.shape
    blocks = torch.nn.functional.pad(weight.float(), (0, (-columns) % block)).reshape(rows, -1, block)
    if bits == 8:
        scale = blocks.abs().amax(-1, keepdim=True) / 127
        low, high = -127, 127
    else:
        largest = torch.gather(blocks, -1, blocks.abs().argmax(-1, keepdim=True))
        scale = largest / -(2 ** (bits - 1))
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    rounded = torch.round(blocks / safe).clamp(low, high) * scale.half().float()  # the file stores d in float16
    return rounded.reshape(rows, -1)[:, :columns].to(weight.dtype)


def rounded_copy(model, bits: int, projections: tuple[str, ...]):
    """A copy of `model` whose decoder projections named in `projections` are `round_blocks`-rounded."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in copied.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name and name.rsplit(".", 1)[-1] in projections:
                module.weight.copy_(round_blocks(module.weight, bits))
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--output", default="benchmarks/results/quantization_noise_probe")
    parser.add_argument("--accuracy-types", nargs="*", default=[], choices=("q4_0", "q5_0", "q8_0"))
    parser.add_argument("--limit", type=int, default=500, help="dev examples per task for --accuracy-types")
    args = parser.parse_args(argv)
    dense, tokenizer, pruner = dev_sweep.profiled_dense(args.data_dir, calibration_answer="any")
    models = {
        "dense": dense,
        "pruned, refit": pruner.prune(sparsity=args.sparsity, bias_compensation=False, disable_progress=True),
        "pruned, no refit": pruner.prune(
            sparsity=args.sparsity, bias_compensation=False, reconstruct=False, anchor_bos=False, disable_progress=True
        ),
    }
    output = Path(args.output)
    if output.with_suffix(".json").exists():  # a rerun keeps the rows made
        report = json.loads(output.with_suffix(".json").read_text())
        report.setdefault("commands", [report["command"]]).append(provenance()["command"])
    else:
        report = {**provenance(), "commands": [provenance()["command"]], "sparsity": args.sparsity, "rows": []}
        _kl_rows(report, models, tokenizer, pruner, args)
        write_report(output, report, _markdown(report, args))
    if args.accuracy_types:
        excluded = pruner.scores.provenance["excluded_eval_ids"]
        report["accuracy"] = _accuracy(models, tokenizer, excluded, args)
        write_report(output, report, _markdown(report, args))
    return 0


def _kl_rows(report, models, tokenizer, pruner, args) -> None:
    dense = models["dense"]
    prompts, flat, reference = dev_sweep.dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    report["kl_prompts"] = len(flat)
    for name, model in models.items():
        own = reference if model is dense else next_token_logprobs(model, tokenizer, flat, disable_progress=True)
        for bits in (4, 5, 8):
            for subset, projections in SUBSETS.items():
                if bits != 4 and subset != "all":
                    continue
                started = time.perf_counter()
                logprobs = next_token_logprobs(
                    rounded_copy(model, bits, projections), tokenizer, flat, disable_progress=True
                )
                row = {
                    "model": name,
                    "type": f"q{bits}_0",
                    "rounded": subset,
                    "kl_dense_to_model": kl_divergence(reference, own),
                    "kl_model_to_rounded": kl_divergence(own, logprobs),
                    "kl_dense_to_rounded": kl_divergence(reference, logprobs),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                print(row, flush=True)
                report["rows"].append(row)


def _accuracy(models, tokenizer, excluded, args) -> dict:
    """The accuracy question of the docstring: per type, each model's rounded minus float32 seven-task average and
    their difference (pruned minus dense), on the same dev examples."""
    correct = {}
    for name in ("dense", "pruned, refit"):
        for kind in ("float32", *args.accuracy_types):
            model = models[name] if kind == "float32" else rounded_copy(models[name], int(kind[1]), PROJECTIONS)
            started = time.perf_counter()
            result = evaluate(
                model,
                tokenizer,
                PAPER_TASKS,
                limit=args.limit,
                half="dev",
                exclude_ids=excluded,
                data_dir=args.data_dir,
                return_predictions=True,
                disable_progress=True,
            )
            correct[(name, kind)] = correct_by_task(result)
            print(name, kind, f"{result['average']:.4f}", f"{time.perf_counter() - started:.0f} s", flush=True)
    accuracy = {
        "limit": args.limit,
        "num_scored": {t: len(v) for t, v in correct[("dense", "float32")].items()},
        "average": {f"{name} / {kind}": task_average(c) for (name, kind), c in correct.items()},
    }
    for kind in args.accuracy_types:
        accuracy[kind] = {
            name: paired_bootstrap(correct[(name, kind)], correct[(name, "float32")])
            for name in ("dense", "pruned, refit")
        }
        accuracy[kind]["pruned minus dense"] = difference_of_differences(
            *(
                correct[key]
                for key in (
                    ("pruned, refit", kind),
                    ("pruned, refit", "float32"),
                    ("dense", kind),
                    ("dense", "float32"),
                )
            )
        )
    return accuracy


def _markdown(report: dict, args) -> list[str]:
    lines = [
        "# Block rounding of the weights, dense and pruned (diagnosis; dev prompts, Gemma 3 270M)",
        "",
        f"{commands_text(report)} ({report['machine']}). KL in nats after {report['kl_prompts']} dev prompts "
        f"({args.kl_prompts} per task); pruned: the default recipe at {report['sparsity']:.0%} without compensation "
        "biases, and the same plan without the least-squares refit. Rounding: `round_blocks` (llama.cpp's "
        "`q4_0` / `q5_0` / `q8_0` rules) on the decoder projections named; the embedding and norms stay. A "
        "diagnosis: nothing is chosen on it (the script's docstring).",
        "",
        "| model | type | rounded | KL(dense ‖ model) | KL(model ‖ rounded) | KL(dense ‖ rounded) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['type']} | {row['rounded']} | {row['kl_dense_to_model']:.4f} | "
            f"{row['kl_model_to_rounded']:.4f} | {row['kl_dense_to_rounded']:.4f} |"
        )
    accuracy = report.get("accuracy")
    if accuracy:
        sizes = ", ".join(f"{t} {n}" for t, n in accuracy["num_scored"].items())
        lines += [
            "",
            f"Seven-task average on the first {accuracy['limit']} dev examples per task ({sizes}), every decoder "
            "projection rounded; rounded minus float32 with its paired 95% interval, and the difference of the two "
            "differences (pruned minus dense) from the same resampled examples:",
            "",
            "| type | dense: float32 → rounded | Δ | pruned 20%, refit: float32 → rounded | Δ | pruned Δ − dense Δ |",
            "|---|---|---|---|---|---|",
        ]
        averages = accuracy["average"]
        for kind, rows in accuracy.items():
            if kind in ("limit", "num_scored", "average"):
                continue
            cells = [
                f"{averages[name + ' / float32']:.4f} → {averages[name + ' / ' + kind]:.4f} | {interval(rows[name])}"
                for name in ("dense", "pruned, refit")
            ]
            lines.append(f"| {kind} | {cells[0]} | {cells[1]} | {interval(rows['pruned minus dense'])} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
