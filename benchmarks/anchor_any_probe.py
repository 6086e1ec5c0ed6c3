"""Probe (issue 13): the BOS anchor against no anchor again, now that calibration texts end in any answer choice.

    python benchmarks/anchor_any_probe.py --data-dir ../shared/data

The anchor (`anchor_bos=True`, recipe `"uniform_mlp_mean_ls_bos"`) became the default on 2026-12-01 and was kept by a
rule written before its 500-dev rows (`docs/choosing_the_default.md`, "Seen on test first, said plainly"): it stays
only if its paired 95% interval against `"uniform_mlp_mean_ls"` (the same recipe without it) includes zero or lies
above it at both 20% and 40%; otherwise the default goes back to `"uniform_mlp_mean_ls"` and `anchor_bos` stays an
option. It stayed (−0.002 [−0.009, +0.005], −0.003 [−0.012, +0.005]). Those rows were profiled on gold answers. Since
2026-12-05 the calibration texts end in a choice drawn per example (`calibration_answer="any"`), which changes both
what is ranked and what the fit sees, so that comparison no longer describes the default.

This rechecks it on the new texts with **that same rule**, unchanged, written down here before any row of this
script. Said plainly: the test-half rows on the new texts had been seen when this was written (the recipe without the
anchor read +0.004 [−0.002, +0.012] at 20% and +0.010 [+0.001, +0.019] at 40% there); the rule is the one from
before those rows, not one chosen after them.

The anchored default's dev rows on "any" texts already exist: the candidate rows of
`benchmarks/results/choice_calibration_probe.json` (500 dev examples per task, float32 x xᵀ products). This profiles
the same way (`calibration_answer="any"`, `moments_dtype="float32"`), checks that the pairing holds (the same excluded
evaluation examples, and the anchored default's dev-prompt KL recomputed equal to the stored one), then prunes
`"uniform_mlp_mean_ls"` at each sparsity and scores it on the same dev examples. The difference is reported as the
rule reads it: anchored minus unanchored, paired bootstrap over the same examples.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf.evaluation import paired_bootstrap  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

ANCHORED, UNANCHORED = "uniform_mlp_mean_ls_bos", "uniform_mlp_mean_ls"
# One component of the default against the default without it: how the probe names and prunes the candidate, and
# how its report reads (`prefix`: the JSON keys of the default's side; `verdict`: the key of the rule's answer).
ANCHOR = {
    "title": "The BOS anchor on any-answer calibration texts",
    "script": "anchor_any_probe.py",
    "variant": UNANCHORED,
    "options": {"recipe": UNANCHORED},
    "names": ("anchored", "unanchored"),
    "prefix": "anchored",
    "reference": "the anchored default's",  # whose accuracy rows the reference holds
    "difference": "anchored_minus_unanchored",
    "verdict": "anchor_stays",
    "verdicts": ("the anchor **stays the default**", "the anchor **goes: the rule returns to `uniform_mlp_mean_ls`**"),
}


def main(argv=None) -> int:
    return run(__doc__, ANCHOR, "benchmarks/results/anchor_any_probe", argv)


def run(doc: str, spec: dict, output: str, argv=None) -> int:
    """Profile on any-answer texts as the reference rows were, check the pairing, then measure `spec`'s candidate
    (the default `ANCHORED` pruned with `spec["options"]`) on dev-prompt KL and dev accuracy, and apply the rule: the
    component stays when the default minus the candidate has a 95% interval reaching zero or above at every
    sparsity."""
    parser = dev_sweep.probe_parser(doc.splitlines()[0], output)
    parser.set_defaults(reference=dev_sweep.ANY_REFERENCE)
    args = parser.parse_args(argv)
    (_, tokenizer, pruner), (prompts, flat, reference), stored = dev_sweep.any_answer_probe_start(args)
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": []}
    output = Path(args.output)
    prefix, key = spec["prefix"], spec["difference"]
    for sparsity in args.sparsities:
        for variant, options in ((ANCHORED, {"recipe": ANCHORED}), (spec["variant"], spec["options"])):
            started = time.perf_counter()
            model = pruner.prune(sparsity=sparsity, disable_progress=True, **options)
            row = dev_sweep.kl_row(model, tokenizer, (prompts, flat, reference), sparsity, variant, {}, started)
            if variant == ANCHORED:
                row["kl_in_reference_rows"] = stored[(dev_sweep.ANY_KL, sparsity)]["kl_from_dense"]
                dev_sweep.check_pairing(row, args.reference)
            report["rows"].append(row)
            _write(output, report, spec)
    context = dev_sweep.measure_context(tokenizer, pruner.scores.provenance["excluded_eval_ids"], prompts, reference)
    for sparsity in args.sparsities:
        default = stored[(dev_sweep.ANY_ACCURACY, sparsity)]
        model = pruner.prune(sparsity=sparsity, disable_progress=True, **spec["options"])
        measured = dev_sweep._measure(model, tokenizer, args, context)
        difference = paired_bootstrap(
            {t: default["correct"][t] for t in PAPER_TASKS}, {t: measured["correct"][t] for t in PAPER_TASKS}
        )
        row = {
            "sparsity": sparsity,
            "variant": f"{spec['variant']}, dev accuracy",
            **measured,
            f"{prefix}_average": default["average_paper_tasks"],
            f"{prefix}_signal_average": default["average_signal_tasks"],
            f"{prefix}_per_task": default["per_task"],
            key: difference,
        }
        print(
            sparsity,
            f"{spec['names'][0]} {row[prefix + '_average']:.4f} vs {row['average_paper_tasks']:.4f}",
            difference,
        )
        report["rows"].append(row)
        _write(output, report, spec)
    accuracy = [r for r in report["rows"] if key in r]
    report[spec["verdict"]] = all(r[key]["ci95"][1] >= 0 for r in accuracy)
    _write(output, report, spec)
    print(f"{spec['verdict']}:", report[spec["verdict"]])
    return 0


def _write(output: Path, report: dict, spec: dict) -> None:
    dev_sweep.write_probe_json(output, report)
    prefix, key, (default, candidate) = spec["prefix"], spec["difference"], spec["names"]
    lines = dev_sweep.probe_heading(spec["title"], [report["command"]], report["kl_prompts_per_task"], spec["script"])
    lines += dev_sweep.probe_tables([r for r in report["rows"] if key not in r], "recipe", spec["variant"])
    accuracy = [r for r in report["rows"] if key in r]
    if accuracy:
        tasks = dev_sweep.EVAL_TASKS
        lines += [
            "",
            f"Dev accuracy, 500 dev examples per task ({spec['reference']} from the reference rows); paired "
            f"difference {default} minus {candidate}, 95% interval:",
            "",
            f"| sparsity | {default} | {candidate} | {default} − {candidate} [95%] | "
            f"HellaSwag+ARC-e+PIQA ({default} / {candidate}) | " + " | ".join(tasks) + f" ({default} / {candidate}) |",
            "|---|---|---|---|---|" + "---|" * len(tasks),
        ]
        for r in accuracy:
            d, (low, high) = r[key], r[key]["ci95"]
            cells = " | ".join(f"{r[prefix + '_per_task'][t]:.3f} / {r['per_task'][t]:.3f}" for t in tasks)
            lines.append(
                f"| {r['sparsity']:.0%} | {r[prefix + '_average']:.4f} | {r['average_paper_tasks']:.4f} | "
                f"{d['difference']:+.4f} [{low:+.4f}, {high:+.4f}] | {r[prefix + '_signal_average']:.4f} / "
                f"{r['average_signal_tasks']:.4f} | {cells} |"
            )
    if spec["verdict"] in report:
        verdict = spec["verdicts"][0] if report[spec["verdict"]] else spec["verdicts"][1]
        lines += ["", f"By the rule in the script's docstring, {verdict}."]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
