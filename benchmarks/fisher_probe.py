"""Probe (issue 13): per-task Fisher scores of the MLP dimensions (Kwon et al. 2022's mask search) under the default.

    python benchmarks/fisher_probe.py --data-dir ../shared/data

The default's reconstruction is the mask tuning of Kwon et al. 2022 ("A Fast Post-Training Pruning Framework for
Transformers"): the cut `down_proj` refitted by least squares on the kept channels. Their mask *search* is not
DIET's: each unit is scored by the empirical Fisher information of a mask variable m_j on it, F_j = sum over
calibration rows of (dL/dm_j)^2, the second-order estimate of how much the loss rises when the unit is removed.
DIET scores a unit by its mean |activation| alone, which does not see what the rest of the network makes of it. This
probe keeps everything of the default (per-task profiles merged by mean rank, uniform allocation, widths in
multiples of 64, bias compensation, the BOS-anchored fit) and replaces only each task's MLP scores by that task's
Fisher scores: L the next-token cross-entropy of the dense model over each calibration row (padding ignored; every
row read alone, so dL/dm_j per row is sum_t a_tj * dL/da_tj over its tokens), m_j multiplying the input of
`down_proj`, read at m = 1 (the dense model). No gradient updates any weight; the heads' scores stay DIET's (the
default keeps every head). Same calibration rows (7 paper tasks x 100) as the default's profile.

The rule, written before any row: the candidate goes on to dev accuracy only if its KL(dense || pruned) after the
first 40 dev prompts of each of 8 tasks is at least 10% below the default's at both 20% and 40% (the bar of every
probe since the reconstruction). On dev accuracy (500 dev examples per task, paired with the default's rows in
`benchmarks/results/dev_sweep_500.json`) it would replace the default only if its paired difference in the
seven-task average is above zero at both sparsities, neither interval below zero.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import next_token_logprobs, paired_bootstrap  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

DEFAULT_NAME = "mlponly+mean+uniform+bias+r64+ls+bos"  # the default's rows in dev_sweep_500.json


def fisher_scores(model, batches) -> torch.Tensor:
    """`(layers, intermediate_size)` float64: sum over rows of (dL_row / dm_j)^2, m_j = 1 scaling `down_proj`'s
    input channel j, L_row the mean next-token cross-entropy of one row (its non-padding tokens)."""
    layers = model.model.layers
    sums = torch.zeros(len(layers), layers[0].mlp.down_proj.in_features, dtype=torch.float64)
    masks, handles = {}, []

    def scale(index):
        def hook(module, args):
            return (args[0] * masks[index],)

        return hook

    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for index, layer in enumerate(layers):
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(scale(index)))
        for batch in batches:
            ids, attention = batch["input_ids"], batch["attention_mask"]
            for index in range(len(layers)):
                masks[index] = torch.ones(ids.shape[0], 1, sums.shape[1], requires_grad=True)
            hidden = model.model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            targets = ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
            loss = 0.0
            for row in range(ids.shape[0]):
                logits = model.lm_head(hidden[row, :-1])
                if model.config.final_logit_softcapping is not None:
                    cap = model.config.final_logit_softcapping
                    logits = torch.tanh(logits / cap) * cap
                loss = loss + F.cross_entropy(logits.float(), targets[row], ignore_index=-100)
            grads = torch.autograd.grad(loss, [masks[i] for i in range(len(layers))])
            for index, grad in enumerate(grads):
                sums[index] += grad[:, 0].double().pow(2).sum(0)
    finally:
        for handle in handles:
            handle.remove()
    return sums


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--limit", type=int, default=500, help="dev examples per task for the accuracy step")
    parser.add_argument("--reference", default="benchmarks/results/dev_sweep_500.json")
    parser.add_argument("--output", default="benchmarks/results/fisher_probe")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(
        PAPER_TASKS, num_samples=100, data_dir=args.data_dir, moments_dtype="float32", disable_progress=True
    )
    prompts, flat, reference = dev_sweep.dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    previous = {(r["name"], r["sparsity"]): r for r in json.loads(Path(args.reference).read_text())["rows"]}
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": []}
    output = Path(args.output)
    start = time.perf_counter()
    fisher = {}
    for task in PAPER_TASKS:
        batches, _ = pruner._batches(pruner._calibration["data"][task])
        fisher[task] = fisher_scores(dense, batches).float()
        print("fisher", task, round(time.perf_counter() - start), flush=True)
    report["fisher_seconds"] = round(time.perf_counter() - start, 1)
    activation = dict(pruner.scores.mlp)
    report["rank_correlation"] = {t: _mean_spearman(activation[t], fisher[t]) for t in PAPER_TASKS}
    models = {}
    for sparsity in args.sparsities:
        for variant in ("default", "fisher"):
            start = time.perf_counter()
            pruner.scores.mlp = fisher if variant == "fisher" else activation
            try:
                model = pruner.prune(sparsity=sparsity, disable_progress=True)
            finally:
                pruner.scores.mlp = activation
            logprobs = next_token_logprobs(model, tokenizer, flat, disable_progress=True)
            overall, per_task = dev_sweep.kl_by_task(reference, logprobs, prompts)
            row = {"sparsity": sparsity, "variant": variant, "kl_from_dense": overall, "kl_per_task": per_task}
            if variant == "default":
                row["kl_in_reference_rows"] = previous[(DEFAULT_NAME, sparsity)]["kl_from_dense"]
            row["seconds"] = round(time.perf_counter() - start, 1)
            report["rows"].append(row)
            print(sparsity, variant, f"KL {overall:.4f}", row.get("kl_in_reference_rows", ""), flush=True)
            _write(output, report)
            models[(sparsity, variant)] = model
    kl = {(r["sparsity"], r["variant"]): r["kl_from_dense"] for r in report["rows"]}
    report["kl_rule_passed"] = all(kl[(s, "fisher")] <= 0.9 * kl[(s, "default")] for s in args.sparsities)
    _write(output, report)
    print("KL rule passed:", report["kl_rule_passed"], flush=True)
    if not report["kl_rule_passed"]:
        return 0
    context = {"excluded": pruner.scores.provenance["excluded_eval_ids"]}
    context["kl_prompts"] = [p for t in dev_sweep.EVAL_TASKS for p in prompts[t]]
    starts = [sum(len(prompts[t]) for t in dev_sweep.EVAL_TASKS[:i]) for i in range(len(dev_sweep.EVAL_TASKS))]
    context["rows"] = {t: list(range(s, s + len(prompts[t]))) for t, s in zip(dev_sweep.EVAL_TASKS, starts)}
    context["yes_no"] = dev_sweep.answer_token_ids(tokenizer)
    context["dense_logprobs"] = reference
    for sparsity in args.sparsities:
        measured = dev_sweep._measure(models[(sparsity, "fisher")], tokenizer, args, context)
        before = previous[(DEFAULT_NAME, sparsity)]
        difference = paired_bootstrap(
            {t: measured["correct"][t] for t in PAPER_TASKS}, {t: before["correct"][t] for t in PAPER_TASKS}
        )
        row = {"sparsity": sparsity, "variant": "fisher, dev accuracy", **measured}
        row["against_default"] = difference
        row["default_average"] = before["average_paper_tasks"]
        report["rows"].append(row)
        print(sparsity, f"avg {measured['average_paper_tasks']:.4f} vs {row['default_average']:.4f}", difference)
        _write(output, report)
    return 0


def _mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over layers of the Spearman correlation between two score rows."""

    def ranks(x):
        return x.argsort(dim=1).argsort(dim=1).double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return float(((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).mean())


def _write(output: Path, report: dict) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    tasks = dev_sweep.EVAL_TASKS
    lines = [
        "# Per-task Fisher scores of the MLP dimensions under the default (probe; dev halves, Gemma 3 270M)",
        "",
        f"Command: `{report['command']}`. KL(dense ‖ pruned) after the first {report['kl_prompts_per_task']} dev "
        "prompts of each of 8 tasks; the method and the rule are in `benchmarks/fisher_probe.py`'s docstring.",
        "",
    ]
    if "rank_correlation" in report:
        cells = ", ".join(f"{t} {v:.2f}" for t, v in report["rank_correlation"].items())
        lines += [
            f"Fisher scores: {report['fisher_seconds']} s for the 7 tasks' calibration rows. Spearman correlation of "
            f"each task's Fisher and activation scores (mean over layers): {cells}.",
            "",
        ]
    lines += [
        "| sparsity | MLP scores | KL | " + " | ".join(tasks) + " | s |",
        "|---|---|---|" + "---|" * len(tasks) + "---|",
    ]
    for r in report["rows"]:
        if "per_task" in r:
            continue
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in tasks)
        lines.append(f"| {r['sparsity']:.0%} | {r['variant']} | {r['kl_from_dense']:.3f} | {cells} | {r['seconds']} |")
    accuracy = [r for r in report["rows"] if "per_task" in r]
    if accuracy:
        lines += [
            "",
            "Dev accuracy (seven-task average, 500 dev examples per task; the default's from the reference rows):",
            "",
            "| sparsity | default | fisher | paired difference [95%] | HellaSwag+ARC-e+PIQA | KL |",
            "|---|---|---|---|---|---|",
        ]
        for r in accuracy:
            d, (low, high) = r["against_default"], r["against_default"]["ci95"]
            lines.append(
                f"| {r['sparsity']:.0%} | {r['default_average']:.4f} | {r['average_paper_tasks']:.4f} | "
                f"{d['difference']:+.4f} [{low:+.4f}, {high:+.4f}] | {r['average_signal_tasks']:.4f} | "
                f"{r['kl_from_dense']:.3f} |"
            )
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
