"""Collects runs of `examples/finetune_pruned.py` into one table with paired comparisons.

Each run is the example's `--output` directory (with its `finetune_result.json`) and the example's printed output
beside it as `DIR.log`; the runs of `benchmarks/results/finetune_pruned.md`, made one at a time in WORK:

    M=outputs/gemma-3-270m-diet-20; D=~/.cache/diet_hf/gemma-3-270m; F=examples/finetune_pruned.py
    python $F $M --task arc_easy --data-dir ../shared/data --max-steps 150 --output WORK/ft_arc_easy_choice \\
        > WORK/ft_arc_easy_choice.log 2>&1
    python $F $M --task arc_easy --objective answer ... --max-steps 150 --output WORK/ft_arc_easy_answer ...
    python $F $M --task rte ... --max-steps 300 --output WORK/ft_rte_choice ...
    python $F $D --task arc_easy ... --max-steps 150 --output WORK/ft_arc_easy_dense ...
    python $F $M --task rte --head classification ... --max-steps 300 --output WORK/ft_rte_classification ...
    python benchmarks/finetune_report.py --work-dir WORK

Dense zero-shot on RTE comes from the dense row of `benchmarks/results/benchmark_test500.json` (the same 145 test-half
examples in the same order: its DIET 20% row's RTE results must equal the runs' "before" ones, checked).
"""

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _side import interval  # noqa: E402

RUNS = [  # (directory name, model label)
    ("ft_arc_easy_choice", "DIET 20% (default)"),
    ("ft_arc_easy_answer", "DIET 20% (default)"),
    ("ft_rte_choice", "DIET 20% (default)"),
    ("ft_arc_easy_dense", "dense"),
    ("ft_rte_classification", "DIET 20% (default)"),
]
DESCRIPTION = " ".join(
    """
Each row: one run of the example (PEFT LoRA r 16 on every projection, `Trainer`, batch 8, lr 2e-4 with linear decay,
seed 0, float32 on 2 CPU cores of an AMD EPYC without AVX512-BF16, one run at a time), trained on the task's train
split (never evaluation examples), scored zero-shot as lm-eval scores it on the test half of the evaluation split
(the first 500 examples of it; RTE's test half has 145) before and after, with the same examples: Δ and its
paired-bootstrap 95% interval (2000 resamples). ARC-Easy's headline metric is `acc_norm`, RTE's `acc`.
The classification row trains a new linear head (`--head classification`): its 'before' is that untrained head.
MODEL is `outputs/gemma-3-270m-diet-20` (the main job's 20% model, the default recipe) or the dense
`~/.cache/diet_hf/gemma-3-270m`. Commands: `benchmarks/finetune_report.py`.
""".split()
)
ROOT = Path(__file__).resolve().parent.parent


def _example():
    spec = importlib.util.spec_from_file_location("finetune_pruned", ROOT / "examples" / "finetune_pruned.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _training_log(result: dict, log: str) -> tuple[float, list[float]]:
    """Training seconds and the logged losses: from the result's `log_history` (runs since it was recorded), else
    from the printed log."""
    history = result.get("log_history")
    if history:
        runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
        return float(runtime), [float(entry["loss"]) for entry in history if "loss" in entry]
    return (
        float(re.search(r"'train_runtime': '([0-9.]+)'", log).group(1)),
        [float(x) for x in re.findall(r"\{'loss': '([0-9.]+)'", log)],
    )


def collect(work: Path) -> list[dict]:
    rows = []
    for name, model in RUNS:
        result = json.loads((work / name / "finetune_result.json").read_text())
        log_file = work / f"{name}.log"
        train_seconds, loss_curve = _training_log(
            result, log_file.read_text(errors="replace") if log_file.is_file() else ""
        )
        rows.append(
            {
                "run": name,
                "model_label": model,
                "train_seconds": train_seconds,
                "loss_curve": loss_curve,
                **{k: v for k, v in result.items() if k not in ("output", "log_history")},
                "model": result["model"].replace(str(Path.home()), "~"),
            }
        )
    return rows


def comparisons(rows: list[dict], benchmark: dict) -> list[dict]:
    summary = _example()._summary
    by = {r["run"]: r for r in rows}
    bench = {(r["method"], r["sparsity"]): r for r in benchmark["rows"]}
    if bench[("diet", 0.2)]["correct"]["rte"] != by["ft_rte_choice"]["correct_before"]:
        raise ValueError("benchmark_test500.json's RTE examples are not the fine-tuning runs' examples")
    dense_rte = bench[("dense", 0.0)]["correct"]["rte"]
    pairs = [  # (label, reference, compared): compared minus reference
        ("ARC-Easy: the choice objective minus the answer objective (DIET 20%, after)",
         by["ft_arc_easy_answer"]["correct_after"], by["ft_arc_easy_choice"]["correct_after"]),
        ("ARC-Easy: DIET 20% fine-tuned minus dense zero-shot",
         by["ft_arc_easy_dense"]["correct_before"], by["ft_arc_easy_choice"]["correct_after"]),
        ("ARC-Easy: DIET 20% fine-tuned minus dense fine-tuned the same way",
         by["ft_arc_easy_dense"]["correct_after"], by["ft_arc_easy_choice"]["correct_after"]),
        ("RTE (145): DIET 20% fine-tuned, causal head (choice objective), minus dense zero-shot",
         dense_rte, by["ft_rte_choice"]["correct_after"]),
        ("RTE (145): DIET 20% fine-tuned, classification head, minus dense zero-shot",
         dense_rte, by["ft_rte_classification"]["correct_after"]),
        ("RTE (145): DIET 20%, the classification head minus the causal head's choice objective (after)",
         by["ft_rte_choice"]["correct_after"], by["ft_rte_classification"]["correct_after"]),
    ]  # fmt: skip
    out = []
    for label, reference, compared in pairs:
        s = summary(before=reference, after=compared)
        out.append({"comparison": label, "difference": s["difference"], "ci95": s["difference_ci95"]})
    return out


def render(rows: list[dict], compared: list[dict]) -> str:
    lines = [
        "# Downstream fine-tuning of a pruned Gemma 3 270M (`examples/finetune_pruned.py`)",
        "",
        DESCRIPTION,
        "",
        "| model | task | objective | steps (examples seen) | training s | n | before ± s.e. | after ± s.e. "
        "| Δ [95% CI] | loss (first / last logged) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["difference_ci95"]
        objective = r["objective"] if r["head"] == "causal" else "classification head"
        lines.append(
            f"| {r['model_label']} | {r['task']} | {objective} "
            f"| {r['max_steps']} ({r['max_steps'] * r['batch_size']}) "
            f"| {r['train_seconds']:.0f} | {r['n']} | {r['before']:.3f} ± {r['before_stderr']:.3f} "
            f"| {r['after']:.3f} ± {r['after_stderr']:.3f} | {r['difference']:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"| {r['loss_curve'][0]:.3f} / {r['loss_curve'][-1]:.3f} |"
        )
    lines += [
        "",
        "Paired comparisons over the same test-half examples (500 of ARC-Easy, 145 of RTE; paired bootstrap, 2000 "
        "resamples; dense zero-shot on RTE from the dense row of `benchmark_test500.json`, the same examples):",
        "",
        "| comparison | Δ [95% CI] |",
        "|---|---|",
    ]
    for c in compared:
        lines.append(f"| {c['comparison']} | {interval(c)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="the directory holding the runs and their logs")
    parser.add_argument("--output", default="benchmarks/results/finetune_pruned")
    args = parser.parse_args(argv)
    rows = collect(Path(args.work_dir))
    benchmark = json.loads((ROOT / "benchmarks" / "results" / "benchmark_test500.json").read_text())
    compared = comparisons(rows, benchmark)
    Path(args.output + ".json").write_text(json.dumps({"rows": rows, "comparisons": compared}, indent=1) + "\n")
    Path(args.output + ".md").write_text(render(rows, compared))
    print(render(rows, compared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
