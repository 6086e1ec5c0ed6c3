"""The ridge term of the least-squares reconstruction, chosen on dev prompts (KL to dense only; no accuracy).

    python benchmarks/reconstruction_damping.py --data-dir ../shared/data

One profile (7 paper tasks x 100 calibration examples), DIET's default plan at each sparsity, built without the
reconstruction and with it at each damping (`diet_hf.reconstruction.least_squares_update`: the ridge term as a
fraction of the mean variance of the kept channels); KL(dense || pruned) of the next-token distribution after the
first 40 dev prompts of each of the 8 evaluation tasks (`dev_sweep.py`'s prompts), overall and per task.

`--sequential-dampings` adds the sequential variant (SparseGPT / SlimGPT-style propagation; measured, not adopted):
starting from the default reconstruction, layer by layer from the first, each cut `down_proj` (kept columns and
bias) is fitted again so that on the *pruned* model's own inputs, the earlier layers already refitted, it reproduces
the dense `down_proj`'s output on the dense model's inputs over the calibration tokens; the ridge term (that
fraction of the mean input variance) pulls the refit toward the default's weights (a large damping gives them back;
the bias is refitted unregularized).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import build_pruned_model  # noqa: E402
from diet_hf.constants import family_for_model_type  # noqa: E402
from diet_hf.evaluation import next_token_logprobs  # noqa: E402
from diet_hf.reconstruction import DEFAULT_DAMPING  # noqa: E402

SEQUENTIAL_MODES = {"refit": "sequential", "keep": "sequential, bias kept"}


def _layer_inputs(model, batches):
    """Per batch: the hidden state entering the first decoder layer, every layer's keyword arguments (masks,
    position embeddings: the same for the dense and the pruned model) and the real-token mask."""
    layers = model.get_decoder().layers
    seen = {}

    def record(args, kwargs, idx):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen[idx] = (hidden, {k: v for k, v in kwargs.items() if k != "hidden_states"})

    hooks = [
        layer.register_forward_pre_hook(lambda m, a, kw, i=i: record(a, kw, i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    captured = []
    try:
        with torch.inference_mode():
            for batch in batches:
                seen.clear()
                model.get_decoder()(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                )
                captured.append((seen[0][0], [seen[i][1] for i in range(len(layers))], batch["attention_mask"].bool()))
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def sequential_refit(dense, pruned, batches, damping: float, *, refit_bias: bool = True) -> None:
    """Refits every cut `down_proj` of `pruned` (in place, first layer first) on the pruned model's own inputs; with
    `refit_bias=False` its bias stays the default reconstruction's and only the weights are refitted."""
    layout = family_for_model_type(dense.config.model_type).layout
    captured, seen = _layer_inputs(dense, batches), {}
    dense_h = [c[0] for c in captured]
    pruned_h = [c[0].clone() for c in captured]
    for idx in range(dense.config.num_hidden_layers):
        dense_layer, pruned_layer = dense.get_decoder().layers[idx], pruned.get_decoder().layers[idx]
        down = pruned.get_submodule(layout.mlp_path(idx, "down"))
        dense_down = dense.get_submodule(layout.mlp_path(idx, "down"))
        if down.in_features < dense_down.in_features:
            k = down.in_features
            sums_xx = torch.zeros(k + 1, k + 1, dtype=torch.float64)
            sums_xy = torch.zeros(k + 1, down.out_features, dtype=torch.float64)
            hooks = [
                dense_down.register_forward_hook(lambda m, a, out: seen.__setitem__("y", out)),
                down.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
            ]
            with torch.inference_mode():
                for b, (_, kwargs, mask) in enumerate(captured):
                    dense_h[b] = _hidden(dense_layer(dense_h[b], **kwargs[idx]))
                    pruned_layer(pruned_h[b], **kwargs[idx])
                    x, y = seen["x"][mask].double(), seen["y"][mask].double()
                    x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
                    sums_xx += x.T @ x
                    sums_xy += x.T @ y
            for hook in hooks:
                hook.remove()
            n = sums_xx[k, k]
            mean_x, mean_y = sums_xx[k, :k] / n, sums_xy[k] / n
            second, cov = sums_xx[:k, :k] / n, sums_xx[:k, :k] / n - torch.outer(mean_x, mean_x)
            weight, bias = down.weight.double(), down.bias.double()
            ridge = damping * cov.diagonal().mean()
            if refit_bias:  # min E||W x + b - y||^2 + ridge ||W - W_0||^2 over (W, b): centered
                target = sums_xy[:k] / n - torch.outer(mean_x, mean_y) - cov @ weight.T
                gram = cov
            else:  # the same over W alone, b the default's: uncentered
                target = sums_xy[:k] / n - torch.outer(mean_x, bias) - second @ weight.T
                gram = second
            gram.diagonal().add_(ridge)
            weight = weight + torch.linalg.solve(gram, target).T
            if refit_bias:
                bias = mean_y - weight @ mean_x
            down.weight = nn.Parameter(weight.to(down.weight.dtype), requires_grad=False)
            down.bias = nn.Parameter(bias.to(down.weight.dtype), requires_grad=False)
        else:
            with torch.inference_mode():
                for b, (_, kwargs, _) in enumerate(captured):
                    dense_h[b] = _hidden(dense_layer(dense_h[b], **kwargs[idx]))
        with torch.inference_mode():  # the pruned model's inputs to the next layer, this one refitted
            for b, (_, kwargs, _) in enumerate(captured):
                pruned_h[b] = _hidden(pruned_layer(pruned_h[b], **kwargs[idx]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--dampings", type=float, nargs="+", default=[0.001, 0.01, 0.03, 0.1])
    parser.add_argument(
        "--sequential-dampings",
        type=float,
        nargs="*",
        default=[],
        help="also refit sequentially on the pruned model's inputs, with these ridge terms (see the docstring)",
    )
    parser.add_argument(
        "--sequential-bias",
        nargs="+",
        choices=["refit", "keep"],
        default=["refit"],
        help="refit the bias with the weights, or keep the default reconstruction's (a row set for each)",
    )
    parser.add_argument("--resume", action="store_true", help="keep the rows of --output's JSON, add the missing")
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--output", default="benchmarks/results/reconstruction_damping")
    args = parser.parse_args(argv)
    dense, tokenizer, pruner = dev_sweep.profiled_dense(args.data_dir)
    prompts, flat, reference = dev_sweep.dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    batches = [b for t in pruner.scores.tasks for b in pruner._batches(pruner._calibration["data"][t])[0]]

    def kl_row(model, **fields):
        overall, per_task = dev_sweep.kl_by_task(reference, next_token_logprobs(model, tokenizer, flat), prompts)
        row = {**fields, "kl_from_dense": overall, "kl_per_task": per_task}
        print(row["sparsity"], row["mode"], row["damping"], f"KL {row['kl_from_dense']:.4f}", flush=True)
        return row

    output = Path(args.output)
    command = " ".join(["python", *sys.argv])
    report = {"commands": [], "kl_prompts_per_task": args.kl_prompts, "rows": []}
    if args.resume and output.with_suffix(".json").exists():
        report = json.loads(output.with_suffix(".json").read_text())
        report.setdefault("commands", [report.pop("command")] if "command" in report else [])
    report["commands"].append(command)
    rows = report["rows"]
    done = {(r["sparsity"], r.get("mode", "dense inputs"), r["damping"]) for r in rows}

    def add(row, start):
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        _write(output, report)

    for sparsity in args.sparsities:
        pruner.prune(sparsity=sparsity, reconstruct=False)
        plan, means = pruner.plan, pruner.scores.channel_means()
        moments = pruner._input_moments(plan, list(pruner.scores.tasks))
        for damping in [None, *args.dampings]:
            if (sparsity, "dense inputs", damping) in done:
                continue
            start = time.perf_counter()
            model = build_pruned_model(
                dense,
                plan,
                channel_means=means,
                input_moments=None if damping is None else moments,
                reconstruction_damping=0.0 if damping is None else damping,
            )
            add(kl_row(model, sparsity=sparsity, mode="dense inputs", damping=damping), start)
        for bias in args.sequential_bias:
            mode = SEQUENTIAL_MODES[bias]
            for damping in args.sequential_dampings:
                if (sparsity, mode, damping) in done:
                    continue
                start = time.perf_counter()
                model = build_pruned_model(
                    dense, plan, channel_means=means, input_moments=moments, reconstruction_damping=DEFAULT_DAMPING
                )
                sequential_refit(dense, model, batches, damping, refit_bias=bias == "refit")
                add(kl_row(model, sparsity=sparsity, mode=mode, damping=damping), start)
    _write(output, report)
    return 0


def _write(output: Path, report: dict) -> None:
    rows = report["rows"]
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    commands = "`, then `".join(report["commands"])
    lines = [
        "# Damping of the least-squares reconstruction (dev prompts, Gemma 3 270M)",
        "",
        f"Commands: `{commands}`. DIET's default plan (`reconstruct=False` row: bias compensation only); "
        f"KL(dense ‖ pruned) after the first {report['kl_prompts_per_task']} dev prompts of each of 8 tasks. "
        "Fitted on: the dense model's inputs (the default), or sequentially on the pruned model's own (see "
        "`reconstruction_damping.py`'s docstring).",
        "",
        "| sparsity | fitted on | damping | KL | " + " | ".join(dev_sweep.EVAL_TASKS) + " |",
        "|---|---|---|---|" + "---|" * len(dev_sweep.EVAL_TASKS),
    ]
    order = {"dense inputs": 0, **{mode: i + 1 for i, mode in enumerate(SEQUENTIAL_MODES.values())}}
    for r in sorted(rows, key=lambda r: (r["sparsity"], order[r["mode"]], r["damping"] or 0)):
        damping = "no reconstruction" if r["damping"] is None else f"{r['damping']:g}"
        mode = "–" if r["damping"] is None else r["mode"]
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in dev_sweep.EVAL_TASKS)
        lines.append(f"| {r['sparsity']:.0%} | {mode} | {damping} | {r['kl_from_dense']:.3f} | {cells} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
