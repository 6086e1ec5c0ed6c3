"""Probe (issue 13): which channel statistic ranks the MLP dimensions best inside the default's pipeline?

    python benchmarks/score_statistic_probe.py --data-dir ../shared/data

DIET scores an MLP dimension by its mean |activation| (the input of `down_proj`) on each task. The default keeps that
score and changed everything around it: per-task ranks merged by their mean, the same width cut from every layer
(multiples of 64), the removed channels' mean kept as a bias, and each cut `down_proj` refitted by least squares,
constrained to reproduce the BOS token's output. The earlier score probes (`docs/choosing_the_default.md`: the
contribution score |a| x column norm, 2026-11-29; per-task Fisher scores, 2026-12-04) ran before the refit or cost a
backward pass. Two scores from the literature need nothing the profile does not already sum (its per-channel sums
of a and a^2 per task, `ImportanceScores.channel_stats`), and each replaces only each task's MLP scores:

- `rms`: sqrt(E_task[a_j^2]), the L2 activation norm Wanda (Sun et al. 2023) reads instead of the L1 mean; it weighs
  the rare large activations that the mean |a| averages away.
- `wanda`: sqrt(E_task[a_j^2]) x ||W_down[:, j]||, Wanda-sp's structured score (An et al. 2024), per task, in the
  default's pipeline (the baseline `wanda_sp` uses its own global allocation and no refit).

And one diagnostic row, not a candidate: `random`, a seeded random order per layer (the same for every task), to
show how much the choice of channels still matters once the refit carries what the removed ones wrote.

The rule, written before any row: a candidate goes on to dev accuracy only if its KL(dense || pruned) after the
first 40 dev prompts of each of 8 tasks is at least 10% below the default's at both 20% and 40% (the bar of every
score probe). On dev accuracy (500 dev examples per task, paired with the default's rows on the same calibration
texts in `benchmarks/results/choice_calibration_probe.json`) it would replace the default only if its paired
difference in the seven-task average is above zero at both sparsities, neither interval below zero.

Outcome of that rule (2026-12-05 13:58): `rms` 0.159 -> 0.144 at 20% (-9.5%) and 0.400 -> 0.371 at 40% (-7.2%),
lower on 7 of 8 tasks at each, PIQA included; `wanda` 0.180 (+13%) and 0.420 (+5%; BoolQ's KL four times the
default's); `random` 0.348 and 0.886. Neither candidate passes, so neither can replace the default.

A separate question, written down after those rows and before any accuracy row, as was done for the Fisher scores:
should `rms` be offered as an option? It costs nothing the profile does not already sum. `--accuracy rms` scores its
models on the same 500 dev examples per task at 20% and 40%, paired with the default's rows; it becomes an option only
if its paired difference in the seven-task average is at least zero (point estimate) at both sparsities with neither
interval below zero; otherwise it stays a probe.

Written at 14:13, after `rms`'s 20% accuracy row (+0.0125 [+0.0015, +0.0247] against the default, 500 dev examples
per task) and before its 40% row. That is the largest dev gain of any candidate, from a score that missed the KL bar
by half a point; the bar screens which candidates are worth scoring, it does not measure accuracy. Having picked the
candidate on those 500 examples, they now favour it, so switching the default needs examples no probe has scored:
`--confirm` scores the default and `rms` at 20% and 40% on the dev-half examples after the first 500 of each task (up
to 500 more; BoolQ, HellaSwag, WinoGrande, ARC-e, ARC-c and PIQA have them, RTE and OpenBookQA do not; the dev
probes so far read at most the first 500). `rms` replaces the default only if (1) the option rule above holds and (2)
on those fresh examples its paired difference against the default in the average over the paper tasks present
(BoolQ, HellaSwag, WinoGrande, ARC-e, ARC-c) is above zero at both 20% and 40%, neither interval below zero. If (1)
holds and (2) does not, it is an option only. The test halves report afterwards; they choose nothing.

Outcome (14:20 and 14:36): on the first 500 dev examples `rms` read +0.0125 [+0.0015, +0.0247] at 20% and -0.0088
[-0.0224, +0.0046] at 40% (RTE +4.6 and -4.6 points of 132 examples, WinoGrande +3.8 and -1.2; HellaSwag + ARC-e + PIQA
-0.5 and +1.1 points): below zero at 40%, so rule (1) fails and `rms` is neither the default nor an option. The
confirmation ran anyway, as a diagnosis of the 20% gain: on the fresh dev examples -0.0005 [-0.0238, +0.0215] at 20%
and +0.0095 [-0.0143, +0.0341] at 40%. The 20% gain did not replicate: it was RTE and WinoGrande, tasks a 270M model
answers near chance. The runs wrote to `/tmp/s54/` from a copy of the tree; their two files were copied to
`benchmarks/results/score_statistic_probe.{json,md}`.

The profile is made as the reference rows' was (`calibration_answer="any"`, float32 x xᵀ products), and the default's
KL is recomputed and checked against the stored one before any candidate row, so the pairing holds.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf.evaluation import correct_by_task, evaluate, paired_bootstrap  # noqa: E402
from diet_hf.tasks import PAPER_TASKS, evaluation_examples  # noqa: E402

CANDIDATES = ("rms", "wanda")
VARIANTS = ("default", *CANDIDATES, "random")


def main(argv=None) -> int:
    parser = dev_sweep.probe_parser(__doc__.splitlines()[0], "benchmarks/results/score_statistic_probe")
    parser.set_defaults(reference=dev_sweep.ANY_REFERENCE)
    parser.add_argument("--accuracy", nargs="*", default=[], choices=CANDIDATES, help="scored on dev regardless")
    parser.add_argument(
        "--confirm", action="store_true", help="score the default and rms on the dev examples after the first --limit"
    )
    args = parser.parse_args(argv)
    (dense, tokenizer, pruner), kl, stored = dev_sweep.any_answer_probe_start(args)
    output = Path(args.output)
    report = {"commands": [], "kl_prompts_per_task": args.kl_prompts, "rows": []}
    if output.with_suffix(".json").exists():  # a rerun resumes: the rows made stay
        report = json.loads(output.with_suffix(".json").read_text())
    report["commands"].append(" ".join(["python", *sys.argv]))
    done = {(r["sparsity"], r["variant"]) for r in report["rows"]}
    scores = candidate_scores(dense, pruner)
    previous = {(dev_sweep.PAIRED_DEFAULT, s): stored[(dev_sweep.ANY_KL, s)] for s in args.sparsities}
    report["rank_correlation"] = {
        name: {t: dev_sweep.mean_spearman(scores["default"][t], scores[name][t]) for t in PAPER_TASKS}
        for name in CANDIDATES
    }
    for sparsity in args.sparsities:
        for variant in VARIANTS:
            if (sparsity, variant) in done and variant != "default":  # the default is checked on every run
                continue
            started = time.perf_counter()
            model = _pruned(pruner, scores, variant, sparsity)
            row = dev_sweep.kl_row(model, tokenizer, kl, sparsity, variant, previous, started)
            if variant == "default":  # `kl_row` put the stored KL beside it
                dev_sweep.check_pairing(row, args.reference)
            if (sparsity, variant) in done:
                continue
            report["rows"].append(row)
            _write(output, report)
    values = {(r["sparsity"], r["variant"]): r["kl_from_dense"] for r in report["rows"] if "kl_from_dense" in r}
    report["kl_rule_passed"] = {
        v: all(values[(s, v)] <= 0.9 * values[(s, "default")] for s in args.sparsities) for v in CANDIDATES
    }
    _write(output, report)
    print("KL rule passed:", report["kl_rule_passed"], flush=True)
    passed = [v for v, ok in report["kl_rule_passed"].items() if ok or v in args.accuracy]
    if passed:
        _accuracy(args, report, output, done, (pruner, tokenizer, scores, kl, stored), passed)
    if args.confirm:
        _confirm(args, report, output, done, pruner, tokenizer, scores)
    return 0


def _accuracy(args, report, output, done, start, passed) -> None:
    """The accuracy rows of the `passed` candidates on the first `--limit` dev examples per task, paired with the
    default's stored rows."""
    pruner, tokenizer, scores, kl, stored = start
    prompts, _, reference = kl
    context = dev_sweep.measure_context(tokenizer, pruner.scores.provenance["excluded_eval_ids"], prompts, reference)
    defaults = {(dev_sweep.PAIRED_DEFAULT, s): stored[(dev_sweep.ANY_ACCURACY, s)] for s in args.sparsities}
    for variant in passed:
        for sparsity in args.sparsities:
            if (sparsity, f"{variant}, dev accuracy") in done:
                continue
            model = _pruned(pruner, scores, variant, sparsity)
            row = dev_sweep.paired_accuracy_row(model, tokenizer, args, context, defaults, sparsity, variant)
            report["rows"].append(row)
            _write(output, report)


def _confirm(args, report, output, done, pruner, tokenizer, scores) -> None:
    """The default switch's check (the docstring's rule (2)): the default and `rms` at each sparsity on the dev
    examples after the first `--limit` of each task, paired over the paper tasks that have such examples."""
    excluded, fresh = fresh_exclusions(pruner.scores.provenance["excluded_eval_ids"], args.data_dir, args.limit)
    report["fresh_examples"] = {t: len(ids) for t, ids in fresh.items()}
    tasks = [t for t in dev_sweep.EVAL_TASKS if fresh[t]]
    paper = [t for t in PAPER_TASKS if t in tasks]
    for sparsity in args.sparsities:
        if (sparsity, "rms, fresh dev examples") in done:
            continue
        correct, averages = {}, {}
        for variant in ("default", "rms"):
            model = _pruned(pruner, scores, variant, sparsity)
            result = evaluate(
                model, tokenizer, tasks, limit=args.limit, half="dev", exclude_ids=excluded,
                data_dir=args.data_dir, return_predictions=True, disable_progress=True,
            )  # fmt: skip
            correct[variant] = correct_by_task(result)
            per_task = {t: r[r["headline_metric"]] for t, r in result["results"].items()}
            averages[variant] = {"per_task": per_task, "average": sum(per_task[t] for t in paper) / len(paper)}
            del model
        difference = paired_bootstrap({t: correct["rms"][t] for t in paper}, {t: correct["default"][t] for t in paper})
        report["rows"].append(
            {"sparsity": sparsity, "variant": "rms, fresh dev examples", "tasks": paper, "fresh": averages,
             "against_default": difference}
        )  # fmt: skip
        print(sparsity, "fresh", {v: round(a["average"], 4) for v, a in averages.items()}, difference, flush=True)
        _write(output, report)
    rows = [r for r in report["rows"] if r["variant"] == "rms, fresh dev examples"]
    option = [r for r in report["rows"] if r["variant"] == "rms, dev accuracy"]
    report["option_rule_passed"] = len(option) == len(args.sparsities) and all(
        r["against_default"]["difference"] >= 0 and r["against_default"]["ci95"][1] >= 0 for r in option
    )
    report["default_rule_passed"] = report["option_rule_passed"] and all(
        r["against_default"]["difference"] > 0 and r["against_default"]["ci95"][1] >= 0 for r in rows
    )
    _write(output, report)
    print("option rule:", report["option_rule_passed"], "default rule:", report["default_rule_passed"], flush=True)


def fresh_exclusions(excluded: dict, data_dir, limit: int) -> tuple[dict, dict]:
    """Per evaluation task: the ids to exclude so that the dev half starts after its first `limit` examples (the
    calibration exclusions `excluded` plus those), and the ids of the examples that leaves, at most `limit`."""
    exclusions, fresh = {}, {}
    for task in dev_sweep.EVAL_TASKS:
        docs = evaluation_examples(task, half="dev", exclude_ids=excluded.get(task), data_dir=data_dir)
        exclusions[task] = [*excluded.get(task, []), *(str(d["id"]) for d in docs[:limit])]
        fresh[task] = [str(d["id"]) for d in docs[limit : 2 * limit]]
    return exclusions, fresh


def candidate_scores(dense, pruner) -> dict[str, dict[str, torch.Tensor]]:
    """Each variant's per-task MLP scores, `(layers, intermediate_size)`: the profile's mean |a| (`default`), the RMS
    activation, Wanda-sp's RMS x `down_proj` column norm, and one seeded random order shared by every task."""
    stats = pruner.scores.channel_stats
    rms = {t: (stats[t]["mlp"][:, 1].double() / float(stats[t]["num_tokens"])).sqrt().float() for t in PAPER_TASKS}
    columns = torch.stack([layer.mlp.down_proj.weight.detach().float().norm(dim=0) for layer in dense.model.layers])
    generator = torch.Generator().manual_seed(0)
    shared = torch.rand(columns.shape, generator=generator)
    return {
        "default": dict(pruner.scores.mlp),
        "rms": rms,
        "wanda": {t: rms[t] * columns for t in PAPER_TASKS},
        "random": dict.fromkeys(PAPER_TASKS, shared),
    }


def _pruned(pruner, scores, variant: str, sparsity: float):
    """The default recipe at `sparsity` with `variant`'s MLP scores in place of the profile's."""
    activation = pruner.scores.mlp
    pruner.scores.mlp = scores[variant]
    try:
        return pruner.prune(sparsity=sparsity, disable_progress=True)
    finally:
        pruner.scores.mlp = activation


def _write(output: Path, report: dict) -> None:
    dev_sweep.write_probe_json(output, report)
    title = "The channel statistic inside the default's pipeline"
    lines = dev_sweep.probe_heading(
        title, report["commands"], report["kl_prompts_per_task"], "score_statistic_probe.py"
    )
    for name, by_task in report.get("rank_correlation", {}).items():
        cells = ", ".join(f"{t} {v:.2f}" for t, v in by_task.items())
        lines.append(f"Spearman correlation of `{name}` with the default's mean |a| (mean over layers): {cells}.")
    lines.append("")
    fresh = [r for r in report["rows"] if "fresh" in r]
    lines += dev_sweep.probe_tables([r for r in report["rows"] if "fresh" not in r], "MLP scores", "candidate")
    if "kl_rule_passed" in report:
        lines += ["", f"KL rule (at least 10% below the default's at both sparsities): {report['kl_rule_passed']}."]
    if fresh:
        tasks = list(fresh[0]["fresh"]["default"]["per_task"])
        counts = ", ".join(f"{t} {report['fresh_examples'][t]}" for t in tasks)
        lines += [
            "",
            f"The default switch's check: the dev examples after the first 500 of each task ({counts}), scored by "
            "no probe before; average over the paper tasks among them; paired difference rms minus default, 95%:",
            "",
            "| sparsity | default | rms | rms − default [95%] | " + " | ".join(tasks) + " (default / rms) |",
            "|---|---|---|---|" + "---|" * len(tasks),
        ]
        for r in fresh:
            d, (low, high) = r["against_default"], r["against_default"]["ci95"]
            default, rms = r["fresh"]["default"], r["fresh"]["rms"]
            cells = " | ".join(f"{default['per_task'][t]:.3f} / {rms['per_task'][t]:.3f}" for t in tasks)
            lines.append(
                f"| {r['sparsity']:.0%} | {default['average']:.4f} | {rms['average']:.4f} | "
                f"{d['difference']:+.4f} [{low:+.4f}, {high:+.4f}] | {cells} |"
            )
    for key, words in (("option_rule_passed", "Option rule"), ("default_rule_passed", "Default rule")):
        if key in report:
            lines += ["", f"{words} (the docstring's): {'passed' if report[key] else 'not passed'}."]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
