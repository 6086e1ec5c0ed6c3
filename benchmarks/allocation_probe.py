"""Probe (dev prompts, KL only): per-layer MLP widths chosen from the anchored fit's error, or from measured costs,
against the default's uniform widths.

    python benchmarks/allocation_probe.py --data-dir ../shared/data

Same profile (7 paper tasks x 100 calibration examples), same channels (DIET's mean-rank order within each layer) and
the same anchored least-squares fit as the default (`uniform_mlp_mean_ls_bos`); only how many channels each layer
keeps changes, at the default's total, in steps of 64:

- `error`: ZipLM-style. Each layer's relative residual of the fit, E||W x - W'_K x_K - b||^2 / E||W x||^2 on the
  calibration moments (scale-free across layers, as the post-feedforward norm makes the MLP output), for every width
  from 512 up in multiples of 64; 64-channel steps are removed greedily where it rises least.
- `measured`: each layer alone cut to each width of `--grid` (the rest dense), the KL to dense read after prompts cut
  at a random token from the calibration texts (no evaluation example); greedy on those curves, linear between the
  grid points (and (2048, 0)), extrapolated below the lowest. Costs 18 x len(grid) model builds and KL passes.

Rule written before the rows (2026-12-02, in this docstring since): a candidate goes on to dev accuracy only if its
KL after the first `--kl-prompts` dev prompts of each of the 8 evaluation tasks is at least 10% below the default's
at both 20% and 40%.
"""

import argparse
import copy
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import build_pruned_model  # noqa: E402
from diet_hf.evaluation import kl_divergence, next_token_logprobs  # noqa: E402
from diet_hf.moments import first_token_inputs  # noqa: E402
from diet_hf.plan import rank_normalize  # noqa: E402
from diet_hf.reconstruction import least_squares_update  # noqa: E402

STEP = 64


def relative_errors(dense, moments, anchors, order, widths) -> torch.Tensor:
    """(layers, len(widths)): the anchored fit's residual over E||W x||^2, each layer keeping its first w."""
    layers = dense.model.layers
    out = torch.zeros(len(layers), len(widths), dtype=torch.float64)
    for layer_idx, layer in enumerate(layers):
        weight = layer.mlp.down_proj.weight.detach()
        mean, second = moments.get("mlp", layer_idx)
        w, s, m = weight.double(), second.double(), mean.double()
        energy = torch.einsum("ij,jk,ik->", w, s, w)
        for i, width in enumerate(widths):
            if width >= weight.shape[1]:
                continue
            kept = order[layer_idx][:width].sort().values
            kept_weight, bias = least_squares_update(
                weight, kept, mean, second, centered=True, anchor=anchors[("mlp", layer_idx)]
            )
            error = w.clone()  # W x - W'_K x_K - b as a map of x, then its mean square over the moments
            error[:, kept] -= kept_weight.double()
            out[layer_idx, i] = (
                torch.einsum("ij,jk,ik->", error, s, error) - 2 * bias @ (error @ m) + bias @ bias
            ) / energy
    return out


def greedy_widths(cost, total: int, full: int, floor: int) -> list[int]:
    """Widths (multiples of STEP) summing to `total`: from `full`, STEP channels at a time off the layer whose
    `cost(layer, width)` rises least."""
    widths = [full] * len(cost)
    while sum(widths) > total:
        rise = [
            (cost[i](widths[i] - STEP) - cost[i](widths[i]), i)
            for i in range(len(widths))
            if widths[i] - STEP >= floor
        ]
        widths[min(rise)[1]] -= STEP
    return widths


def _tabled(values: list[float], widths: list[int], full: int):
    """The cost at one of `widths` (0 at `full`)."""
    table = dict(zip(widths, values))
    return lambda width: 0.0 if width >= full else table[width]


def piecewise(points: list[tuple[int, float]]):
    """Linear through `points` ((width, cost), widest first), extrapolated below the narrowest."""

    def cost(width: int) -> float:
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x1 <= width <= x0:
                return y0 + (y1 - y0) * (x0 - width) / (x0 - x1)
        (x0, y0), (x1, y1) = points[-2], points[-1]
        return y1 + (y1 - y0) * (x1 - width) / (x0 - x1)

    return cost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--kl-prompts", type=int, default=40, help="dev prompts per evaluation task for the KL")
    parser.add_argument("--sensitivity-prompts", type=int, default=40, help="calibration-text prompts per task")
    parser.add_argument("--grid", type=int, nargs="+", default=[1536, 1024, 512], help="widths the costs are read at")
    parser.add_argument("--output", default="benchmarks/results/allocation_probe")
    args = parser.parse_args(argv)
    dense, tokenizer, pruner = dev_sweep.profiled_dense(args.data_dir)
    scores = pruner.scores
    ranks = torch.stack([rank_normalize(scores.mlp[t].double()) for t in scores.tasks]).mean(0)
    num_layers, full = ranks.shape
    order = [torch.sort(-ranks[i], stable=True).indices for i in range(num_layers)]
    plans = {}
    for sparsity in args.sparsities:
        pruner.prune(sparsity=sparsity)
        plans[sparsity] = copy.deepcopy(pruner.plan)
        for i, kept in enumerate(plans[sparsity].mlp_kept_indices):  # the default keeps each layer's top of `order`
            assert kept == sorted(order[i][: len(kept)].tolist()), f"layer {i}: the default's channels differ"
    moments = pruner._moments[1]
    anchors = first_token_inputs(dense, pruner.family, tokenizer.bos_token_id, [("mlp", i) for i in range(num_layers)])
    means = scores.channel_means()

    def build(widths):
        plan = copy.deepcopy(plans[args.sparsities[0]])
        plan.mlp_kept_indices = [sorted(order[i][:w].tolist()) for i, w in enumerate(widths)]
        return build_pruned_model(
            dense, plan, channel_means=means, input_moments=moments, reconstruction_anchors=anchors
        )

    prompts, flat, reference = dev_sweep.dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    rows, report = [], {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts}
    output = Path(args.output)

    def measure(name, sparsity, widths):
        logprobs = next_token_logprobs(build(widths), tokenizer, flat)
        overall, per_task = dev_sweep.kl_by_task(reference, logprobs, prompts)
        rows.append(
            {
                "allocation": name,
                "sparsity": sparsity,
                "widths": widths,
                "kl_from_dense": overall,
                "kl_per_task": per_task,
            }
        )
        print(name, sparsity, widths, f"KL {overall:.4f}", flush=True)
        _write(output, {**report, "rows": rows})

    uniform = {sparsity: [len(k) for k in plans[sparsity].mlp_kept_indices] for sparsity in args.sparsities}
    # every allocation keeps the default's total width
    totals = {sparsity: sum(widths) for sparsity, widths in uniform.items()}
    for sparsity in args.sparsities:
        measure("uniform", sparsity, uniform[sparsity])
    # error-driven
    grid = list(range(512, full, STEP))
    errors = relative_errors(dense, moments, anchors, order, grid)
    report["relative_error"] = {"widths": grid, "per_layer": errors.tolist()}
    error_cost = [_tabled(errors[i].tolist(), grid, full) for i in range(num_layers)]
    for sparsity in args.sparsities:
        measure("error", sparsity, greedy_widths(error_cost, totals[sparsity], full, grid[0]))
    # measured one-layer costs on calibration-text prompts
    rng = random.Random(0)
    calibration_prompts = []
    for task in scores.tasks:
        for text in rng.sample(pruner._calibration["data"][task].texts, args.sensitivity_prompts):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            calibration_prompts.append(tokenizer.decode(ids[: rng.randint(min(8, len(ids)), len(ids))]))
    calibration_reference = next_token_logprobs(dense, tokenizer, calibration_prompts)
    measured = torch.zeros(num_layers, len(args.grid))
    for i in range(num_layers):
        for j, width in enumerate(args.grid):
            widths = [full] * num_layers
            widths[i] = width
            logprobs = next_token_logprobs(build(widths), tokenizer, calibration_prompts)
            measured[i, j] = kl_divergence(calibration_reference, logprobs)
        print("layer", i, [round(float(c), 4) for c in measured[i]], flush=True)
    report["measured_cost"] = {"widths": args.grid, "per_layer": measured.tolist()}
    measured_cost = [piecewise([(full, 0.0), *zip(args.grid, measured[i].tolist())]) for i in range(num_layers)]
    for sparsity in args.sparsities:
        measure("measured", sparsity, greedy_widths(measured_cost, totals[sparsity], full, 256))
    return 0


def _write(output: Path, report: dict) -> None:
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Per-layer MLP widths from the fit's error or from measured costs (probe; dev prompts, Gemma 3 270M)",
        "",
        f"Command: `{report['command']}`. Same channels and anchored fit as the default; `uniform` is the default. "
        f"KL(dense ‖ pruned) after the first {report['kl_prompts_per_task']} dev prompts of each of 8 tasks. Rule "
        "written before the rows: on to dev accuracy only at least 10% below the default's KL at both 20% and 40%.",
        "",
        "| allocation | sparsity | KL | " + " | ".join(dev_sweep.EVAL_TASKS) + " | widths |",
        "|---|---|---|" + "---|" * len(dev_sweep.EVAL_TASKS) + "---|",
    ]
    for r in sorted(report["rows"], key=lambda r: (r["sparsity"], r["allocation"])):
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in dev_sweep.EVAL_TASKS)
        widths = " ".join(str(w) for w in r["widths"])
        lines.append(f"| {r['allocation']} | {r['sparsity']:.0%} | {r['kl_from_dense']:.3f} | {cells} | {widths} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
