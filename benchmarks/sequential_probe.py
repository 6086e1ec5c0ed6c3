"""Probe (issue 13): the default's least-squares reconstruction fitted on the pruned model's own MLP inputs.

    python benchmarks/sequential_probe.py --data-dir ../shared/data

The default (`"uniform_mlp_mean_ls_bos"`) fits every cut `down_proj` on the moments of the *dense* model's MLP
activations over the calibration tokens, all layers at once. SparseGPT, SlimGPT and OBC compress layer by layer
instead, each layer fitted on the inputs that the already-compressed earlier layers give it, so the fit sees the
activations the pruned model will actually feed it. An earlier probe (`reconstruction_damping.py
--sequential-dampings`, 2026-12-01, before the BOS anchor) fitted each layer on the pruned model's kept channels
against the dense layer's output on the *dense* inputs (an error-correcting target that also asks the layer to undo
upstream drift) and raised the KL at every damping. Untested until now: the SparseGPT form, which only changes the
inputs the fit sees. Layer by layer from the first, the dense layer's MLP runs on the pruned model's own hidden
state (the earlier layers already refitted); the moments of its full intermediate activation over the calibration
tokens replace the dense-input moments in the same `least_squares_update` (same kept channels, damping, bias and BOS
anchor: the BOS token's hidden state is exact under the anchored default, so its anchor is unchanged); the refitted
layer then gives the next layer its input. No other change: the plan, the widths and the channels are the default's.

The rule, written before any row: adopted as the next default candidate only if the KL(dense || pruned) after the
first 40 dev prompts of each of 8 tasks (`dev_sweep.py`'s measure, as every probe since the anchor) falls by at least
10% against the default at both 20% and 40%; it would then still need the dev accuracy sweep before any test-half run.
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
from reconstruction_damping import _hidden, _layer_inputs  # noqa: E402

from diet_hf.constants import family_for_model_type  # noqa: E402
from diet_hf.evaluation import next_token_logprobs  # noqa: E402
from diet_hf.moments import first_token_inputs  # noqa: E402
from diet_hf.reconstruction import DEFAULT_DAMPING, least_squares_update  # noqa: E402


@torch.no_grad()
def refit_on_pruned_inputs(dense, pruned, plan, batches, anchors) -> None:
    """Refits every cut `down_proj` of `pruned` in place, first layer first, on the moments of the dense MLP's
    intermediate activation computed from `pruned`'s own hidden states (see the docstring)."""
    layout = family_for_model_type(dense.config.model_type).layout
    captured = _layer_inputs(dense, batches)
    hidden = [c[0].clone() for c in captured]
    seen = {}
    for idx in range(dense.config.num_hidden_layers):
        dense_layer, pruned_layer = dense.get_decoder().layers[idx], pruned.get_decoder().layers[idx]
        dense_down = dense.get_submodule(layout.mlp_path(idx, "down"))
        down = pruned.get_submodule(layout.mlp_path(idx, "down"))
        if down.in_features < dense_down.in_features:
            width = dense_down.in_features
            total = torch.zeros(width, dtype=torch.float64)
            second = torch.zeros(width, width, dtype=torch.float64)
            count = 0
            hook = dense_down.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
            try:
                for b, (_, kwargs, mask) in enumerate(captured):
                    dense_layer(hidden[b], **kwargs[idx])
                    x = seen.pop("x")[mask].float()
                    total += x.sum(0).double()
                    second += (x.T @ x).double()
                    count += len(x)
            finally:
                hook.remove()
            kept = torch.tensor(plan.mlp_kept_indices[idx], dtype=torch.long)
            weight, bias = least_squares_update(
                dense_down.weight,
                kept,
                total / count,
                second / count,
                centered=True,
                damping=DEFAULT_DAMPING,
                anchor=anchors.get(("mlp", idx)),
            )
            if dense_down.bias is not None:
                bias = bias + dense_down.bias.double()
            if idx == 0:  # its inputs are the dense model's: the refit must give back the default's weights
                change = (weight.float() - down.weight.float()).abs().max() / down.weight.float().abs().max()
                print(f"layer 0: relative change of the refit {float(change):.2e} (expected ~0)", flush=True)
            down.weight = nn.Parameter(weight.to(down.weight.dtype), requires_grad=False)
            down.bias = nn.Parameter(bias.to(down.weight.dtype), requires_grad=False)
        for b, (_, kwargs, _) in enumerate(captured):  # the next layer's input, this one refitted
            hidden[b] = _hidden(pruned_layer(hidden[b], **kwargs[idx]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--output", default="benchmarks/results/sequential_probe")
    args = parser.parse_args(argv)
    dense, tokenizer, pruner = dev_sweep.profiled_dense(args.data_dir)
    prompts, flat, reference = dev_sweep.dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    batches = [b for t in pruner.scores.tasks for b in pruner._batches(pruner._calibration["data"][t])[0]]
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": []}
    output = Path(args.output)
    for sparsity in args.sparsities:
        for variant in ("default (dense-input moments)", "moments on the pruned model's own inputs"):
            start = time.perf_counter()
            model = pruner.prune(sparsity=sparsity, disable_progress=True)
            if variant.startswith("moments"):
                anchors = first_token_inputs(dense, pruner.family, tokenizer.bos_token_id, pruner.plan.cut_modules())
                refit_on_pruned_inputs(dense, model, pruner.plan, batches, anchors)
            logprobs = next_token_logprobs(model, tokenizer, flat, disable_progress=True)
            overall, per_task = dev_sweep.kl_by_task(reference, logprobs, prompts)
            row = {"sparsity": sparsity, "variant": variant, "kl_from_dense": overall, "kl_per_task": per_task}
            row["seconds"] = round(time.perf_counter() - start, 1)
            report["rows"].append(row)
            print(sparsity, variant, f"KL {overall:.4f}", f"{row['seconds']} s", flush=True)
            _write(output, report)
            del model
    return 0


def _write(output: Path, report: dict) -> None:
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# The reconstruction fitted on the pruned model's own inputs (probe; dev prompts, Gemma 3 270M)",
        "",
        f"Command: `{report['command']}`. KL(dense ‖ pruned) after the first {report['kl_prompts_per_task']} dev "
        "prompts of each of 8 tasks; the rule (adopt only at 10% lower KL at both 20% and 40%) and the method are in "
        "`benchmarks/sequential_probe.py`'s docstring.",
        "",
        "| sparsity | reconstruction | KL | " + " | ".join(dev_sweep.EVAL_TASKS) + " | s |",
        "|---|---|---|" + "---|" * len(dev_sweep.EVAL_TASKS) + "---|",
    ]
    for r in report["rows"]:
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in dev_sweep.EVAL_TASKS)
        lines.append(f"| {r['sparsity']:.0%} | {r['variant']} | {r['kl_from_dense']:.3f} | {cells} | {r['seconds']} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
