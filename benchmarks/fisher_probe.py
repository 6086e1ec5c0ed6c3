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

Outcome of that rule (2026-12-04 13:21): KL 0.162 -> 0.139 at 20% (-14%), 0.397 -> 0.366 at 40% (-7.9%): under the
bar at 40%, so `fisher` did not go on to dev accuracy.

Second candidate, `fisher+global`, written after `fisher`'s rows and before its own: Kwon et al.'s mask search also
allocates by the Fisher, which estimates the loss each unit's removal costs on one scale across layers (the summed
Fisher of the removed units), where raw activations do not (they fall with depth; the reason DIET's global
allocation lost). Channels within each layer in the order of `fisher` (mean rank of the per-task Fisher scores);
widths from the pooled Fisher (the sum of the 7 tasks'): from 2048, 64 channels at a time off the layer whose summed
Fisher of removed channels rises least (`allocation_probe.greedy_widths`), floor 256 (as the measured allocation of
`allocation_probe.py`), to the default's total width; bias, anchored fit and the rest as the default. Same rule: KL
at least 10% below the default's at both 20% and 40%, then the same paired dev-accuracy rule.

Outcome (13:37): KL 0.145 at 20% (-10.4%, above `fisher`'s 0.139), 0.413 at 40% (+3.9%): fails; the Fisher's
allocation, like every global one before it, cuts the last layers hardest at 40% (256-384 channels in layers 13-16).

Third candidate, `fisher2`, written after `fisher+global`'s rows and before its own: the diagonal Fisher at m = 1 is
a local estimate, and it does not see what the bias and the refit of the cut `down_proj` give back; both matter
more the more is cut (`fisher` gained 14% at 20%, 8% at 40%). Two steps: `fisher` prunes to half the target
sparsity (the full recipe, refit included), the Fisher scores are read again on that pruned model (its kept channels,
the same calibration rows and loss), and the dense model is pruned to the target with them (the removed channels
ranked last in every task, so the second step keeps a subset of the first's; the refit on the dense model's moments,
as the default). No knob beyond the number of steps. Same rule: KL at least 10% below the default's at both 20% and
40%, then the same paired dev-accuracy rule.

Outcome (14:03): KL 0.139 at 20% (-14.5%), 0.366 at 40% (-8.0%), the same as one step: fails. No candidate passed;
the default stays (`benchmarks/results/fisher_probe.md`).

A separate question, written down after those rows and before any accuracy row (2026-12-04 14:15): not whether the
Fisher should be the default (the rule above has answered that), but whether `score="fisher"` should be offered as
an option, for users who prune lightly and can pay the backward pass. `--accuracy fisher` scores `fisher`'s models on
the same 500 dev examples per task at 20% and 40%, paired with the default's rows. It becomes an option only if its
paired difference in the seven-task average is at least zero (point estimate) at both sparsities with neither
interval below zero; otherwise the scores stay a probe.

Outcome (14:17): +0.003 [-0.010, +0.017] at 20%, -0.005 [-0.018, +0.008] at 40%: below zero at 40%, so no option.
"""

import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402
from allocation_probe import greedy_widths  # noqa: E402

from diet_hf import build_pruned_model  # noqa: E402
from diet_hf.moments import first_token_inputs  # noqa: E402
from diet_hf.plan import rank_normalize  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

VARIANTS = ("default", "fisher", "fisher+global", "fisher2")
STEP, FLOOR = 64, 256


def fisher_scores(model, batches) -> torch.Tensor:
    """Per layer, `(intermediate_size,)` float64: sum over rows of (dL_row / dm_j)^2, m_j = 1 scaling `down_proj`'s
    input channel j, L_row the mean next-token cross-entropy of one row (its non-padding tokens)."""
    layers = model.model.layers
    sums = [torch.zeros(layer.mlp.down_proj.in_features, dtype=torch.float64) for layer in layers]
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
                masks[index] = torch.ones(ids.shape[0], 1, len(sums[index]), requires_grad=True)
            hidden = model.model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            targets = ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
            loss = 0.0
            for row in range(ids.shape[0]):
                logits = model.lm_head(hidden[row, :-1])
                cap = getattr(model.config, "final_logit_softcapping", None)
                if cap is not None:
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
    parser = dev_sweep.probe_parser(__doc__.splitlines()[0], "benchmarks/results/fisher_probe")
    parser.add_argument("--fisher-cache", help="a file the Fisher scores are read from if it exists, else written to")
    parser.add_argument("--accuracy", nargs="*", default=[], choices=VARIANTS[1:], help="scored on dev regardless")
    args = parser.parse_args(argv)
    (dense, tokenizer, pruner), dev_kl, previous = dev_sweep.paired_probe_start(args)
    prompts, _, reference = dev_kl
    output = Path(args.output)
    report = {"commands": [], "kl_prompts_per_task": args.kl_prompts, "rows": []}
    if output.with_suffix(".json").exists():
        report = json.loads(output.with_suffix(".json").read_text())
    report["commands"].append(" ".join(["python", *sys.argv]))
    done = {(r["sparsity"], r["variant"]) for r in report["rows"]}
    fisher = _fisher(dense, pruner, args.fisher_cache, report)
    activation = dict(pruner.scores.mlp)
    report["rank_correlation"] = {t: dev_sweep.mean_spearman(activation[t], fisher[t]) for t in PAPER_TASKS}
    models = {}
    for sparsity in args.sparsities:
        for variant in VARIANTS:
            if (sparsity, variant) in done:
                continue
            start = time.perf_counter()
            model, widths = _pruned(dense, pruner, variant, sparsity, fisher, activation)
            row = dev_sweep.kl_row(model, tokenizer, dev_kl, sparsity, variant, previous, start)
            row["widths"] = widths
            report["rows"].append(row)
            _write(output, report)
            models[(sparsity, variant)] = model
    kl = {(r["sparsity"], r["variant"]): r["kl_from_dense"] for r in report["rows"] if "per_task" not in r}
    report["kl_rule_passed"] = {
        v: all(kl[(s, v)] <= 0.9 * kl[(s, "default")] for s in args.sparsities) for v in VARIANTS[1:]
    }
    _write(output, report)
    print("KL rule passed:", report["kl_rule_passed"], flush=True)
    passed = [v for v, ok in report["kl_rule_passed"].items() if ok or v in args.accuracy]
    done = {(r["sparsity"], r["variant"]) for r in report["rows"]}
    passed = [v for v in passed if any((s, f"{v}, dev accuracy") not in done for s in args.sparsities)]
    if not passed:
        return 0
    context = dev_sweep.measure_context(tokenizer, pruner.scores.provenance["excluded_eval_ids"], prompts, reference)
    for variant, sparsity in [(v, s) for v in passed for s in args.sparsities]:
        if (sparsity, f"{variant}, dev accuracy") in done:
            continue
        if (sparsity, variant) not in models:
            models[(sparsity, variant)] = _pruned(dense, pruner, variant, sparsity, fisher, activation)[0]
        model = models[(sparsity, variant)]
        report["rows"].append(
            dev_sweep.paired_accuracy_row(model, tokenizer, args, context, previous, sparsity, variant)
        )
        _write(output, report)
    return 0


def _fisher(dense, pruner, cache, report) -> dict:
    """Each paper task's Fisher scores, `(layers, intermediate_size)` float32, from `cache` if it exists."""
    if cache and Path(cache).exists():
        return torch.load(cache)
    start, fisher = time.perf_counter(), {}
    for task in PAPER_TASKS:
        batches, _ = pruner._batches(pruner._calibration["data"][task])
        fisher[task] = torch.stack(fisher_scores(dense, batches)).float()
        print("fisher", task, round(time.perf_counter() - start), flush=True)
    report["fisher_seconds"] = round(time.perf_counter() - start, 1)
    if cache:
        torch.save(fisher, cache)
    return fisher


def _pruned(dense, pruner, variant, sparsity, fisher, activation):
    """The model of one variant at one sparsity, and its MLP widths."""
    if variant == "fisher2":
        first, _ = _pruned(dense, pruner, "fisher", sparsity / 2, fisher, activation)
        kept = [torch.tensor(k) for k in pruner.plan.mlp_kept_indices]
        fisher = {}
        for task in PAPER_TASKS:
            batches, _ = pruner._batches(pruner._calibration["data"][task])
            scores = torch.full_like(activation[task], -1.0)
            for i, row in enumerate(fisher_scores(first, batches)):
                scores[i, kept[i]] = row.float()
            fisher[task] = scores
        del first
    pruner.scores.mlp = activation if variant == "default" else fisher
    try:
        model = pruner.prune(sparsity=sparsity, disable_progress=True)
    finally:
        pruner.scores.mlp = activation
    widths = [len(kept) for kept in pruner.plan.mlp_kept_indices]
    if variant != "fisher+global":
        return model, widths
    ranks = torch.stack([rank_normalize(fisher[t].double()) for t in PAPER_TASKS]).mean(0)
    order = [torch.sort(-ranks[i], stable=True).indices for i in range(len(ranks))]
    for i, kept in enumerate(pruner.plan.mlp_kept_indices):  # `fisher`'s plan keeps each layer's top of `order`
        assert kept == sorted(order[i][: len(kept)].tolist()), f"layer {i}: the channels differ"
    pooled = sum(fisher[t].double() for t in PAPER_TASKS)
    full = ranks.shape[1]
    cost = [lambda w, i=i: float(pooled[i, order[i][w:]].sum()) for i in range(len(ranks))]
    widths = greedy_widths(cost, sum(widths), full, FLOOR)
    plan = copy.deepcopy(pruner.plan)
    plan.mlp_kept_indices = [sorted(order[i][:w].tolist()) for i, w in enumerate(widths)]
    layers = [("mlp", i) for i in range(len(ranks))]
    anchors = first_token_inputs(dense, pruner.family, pruner.tokenizer.bos_token_id, layers)
    model = build_pruned_model(
        dense,
        plan,
        channel_means=pruner.scores.channel_means(),
        input_moments=pruner._moments[1],
        reconstruction_anchors=anchors,
    )
    return model, widths


def _write(output: Path, report: dict) -> None:
    dev_sweep.write_probe_json(output, report)
    title = "Per-task Fisher scores of the MLP dimensions under the default"
    lines = dev_sweep.probe_heading(title, report["commands"], report["kl_prompts_per_task"], "fisher_probe.py")
    if "fisher_seconds" in report:
        cells = ", ".join(f"{t} {v:.2f}" for t, v in report["rank_correlation"].items())
        lines += [
            f"Fisher scores: {report['fisher_seconds']} s for the 7 tasks' calibration rows. Spearman correlation of "
            f"each task's Fisher and activation scores (mean over layers): {cells}.",
            "",
        ]
    lines += dev_sweep.probe_tables(report["rows"], "MLP scores", "candidate", widths=True)
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
