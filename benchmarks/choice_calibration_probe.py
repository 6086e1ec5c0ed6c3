"""Probe (issue 13): calibration texts that end in any answer choice, not only the gold one.

    python benchmarks/choice_calibration_probe.py --data-dir ../shared/data

Each calibration text of a registered task is its scored prompt followed by the gold answer
(`Task.calibration_text`). The evaluator, as lm-eval does, reads the model on every choice of every question: three of
HellaSwag's four endings, and most of what ARC, OpenBookQA and PIQA score, are distractors that calibration never shows
the model. Both what DIET ranks and what the reconstruction fits come from the calibration tokens. The candidate ends
each calibration text in one of the example's choices drawn uniformly (seeded by task and example id): the mix of
continuations the evaluator reads, at the same number of texts and about the same tokens. The draw of examples is
unchanged, so the same evaluation examples are excluded and the dev examples are those of the reference rows. No knob;
everything else is the default's.

The rule, written before any row: the dev-prompt KL (after the first 40 dev prompts of each of 8 tasks) cannot see
this change, since it reads the distribution after the prompt, before any continuation; it is a guard only: the
candidate goes on to dev accuracy only if its KL is at most 5% above the default's at both 20% and 40%. On dev accuracy
(500 dev examples per task, paired with the default's rows of `benchmarks/results/dev_sweep_500.json`) it replaces the
default only if its paired difference in the seven-task average is above zero (point estimate) at both 20% and 40%,
with neither interval below zero. The profiles multiply x x^T in float32 (`moments_dtype="float32"`), as when those
rows were made, and the default's KL is recomputed and must match theirs (a check that the pairing holds).

Since 2026-12-05 the candidate is the library's `calibration_answer="any"` (the default since then, drawing exactly
the choices this script drew when it patched `Task.calibration_text`), and the reference is profiled with the answers
of the reference rows (`dev_sweep.reference_answer`: gold for `dev_sweep_500.json`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402


def main(argv=None) -> int:
    parser = dev_sweep.probe_parser(__doc__.splitlines()[0], "benchmarks/results/choice_calibration_probe")
    args = parser.parse_args(argv)
    start = dev_sweep.paired_probe_start(args)
    (dense, tokenizer, pruner), _, _ = start
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": []}
    candidate = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    candidate.profile(
        PAPER_TASKS,
        num_samples=100,
        data_dir=args.data_dir,
        disable_progress=True,
        moments_dtype="float32",
        calibration_answer="any",
    )
    same = candidate.scores.provenance["excluded_eval_ids"] == pruner.scores.provenance["excluded_eval_ids"]
    report["same_excluded_examples"] = same
    if not same:
        raise SystemExit("The candidate's calibration draw excluded other evaluation examples; the pairing fails.")

    def prune(variant: str, sparsity: float):
        return (pruner if variant == "default" else candidate).prune(sparsity=sparsity, disable_progress=True)

    dev_sweep.guarded_probe(args, start, report, "any-choice", prune, lambda r: _write(Path(args.output), r))
    return 0


def _write(output: Path, report: dict) -> None:
    dev_sweep.write_probe_json(output, report)
    title = "Calibration texts ending in any answer choice"
    lines = dev_sweep.probe_heading(
        title, [report["command"]], report["kl_prompts_per_task"], "choice_calibration_probe.py"
    )
    lines += dev_sweep.probe_tables(report["rows"], "calibration", "any-choice")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
