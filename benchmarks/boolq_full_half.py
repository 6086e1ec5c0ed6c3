"""BoolQ on its whole test half: the one floor target (majority class) the default missed on the first 500 examples.

    python benchmarks/boolq_full_half.py --data-dir ../shared/data --output benchmarks/results/boolq_full_half

`run_benchmark.py` scores the first 500 test-half examples per task; there, at 20%, DIET's default read one example
below BoolQ's majority-class rate (0.624 vs 0.626), the dense model 0.620. The issue asks for more examples where time
allows: this scores every test-half example of BoolQ (after the calibration exclusions) for the dense model and DIET's
default at 20% and 40%, pruned from the benchmark's profile (100 calibration examples per task, the same seed), and
reports accuracy with its standard error, the majority-class rate of the same examples, the share of "yes" answers,
and accuracy minus the majority rate with a bootstrap 95% interval over examples. Rows are saved as they finish, and
a rerun adds the rows it lacks: `--recipes` names the recipes scored (the default's by default; each row names its
recipe, so the rows of an earlier default stay beside the current one's). `--calibration-answer` is the answer the
calibration texts end in (the library's default, `"any"` since 2026-12-05); rows on gold answers keep the names they
had before the option, other answers' rows are named after them, so rows on either never stand in for the other.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_benchmark as rb  # noqa: E402
from _side import answer_suffix  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import evaluate  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.recipes import DEFAULT_RECIPE  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402
from diet_hf.tasks.registry import CALIBRATION_ANSWERS, DEFAULT_CALIBRATION_ANSWER  # noqa: E402

ANSWERS = ("no", "yes")  # BoolQ's choices, by label index (as lm-eval orders them)


def summarize(predictions: list[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy, its standard error, the majority-class rate and accuracy minus it (bootstrap interval)."""
    labels = [p["label"] for p in predictions]
    majority_label = max(set(labels), key=labels.count)
    correct = torch.tensor([float(p["acc"] == p["label"]) for p in predictions])  # BoolQ's headline metric: acc
    majority = torch.tensor([float(label == majority_label) for label in labels])
    n = len(predictions)
    accuracy = float(correct.mean())
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (resamples, n), generator=generator)
    differences = (correct[index] - majority[index]).mean(1).sort().values
    return {
        "num_scored": n,
        "acc": accuracy,
        "acc_stderr": math.sqrt(accuracy * (1 - accuracy) / (n - 1)),
        "majority_label": majority_label,
        "majority_rate": float(majority.mean()),
        "predicted_majority_share": sum(p["acc"] == majority_label for p in predictions) / n,
        "acc_minus_majority": accuracy - float(majority.mean()),
        "acc_minus_majority_ci95": [
            float(differences[int(0.025 * resamples)]),
            float(differences[int(0.975 * resamples) - 1]),
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.2, 0.4])
    parser.add_argument("--recipes", nargs="+", default=[DEFAULT_RECIPE])
    parser.add_argument(
        "--calibration-answer",
        choices=CALIBRATION_ANSWERS,
        default=DEFAULT_CALIBRATION_ANSWER,
        help="the answer the calibration texts end in (`ProfileOptions.calibration_answer`)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default="benchmarks/results/boolq_full_half")
    args = parser.parse_args(argv)
    output = Path(args.output).with_suffix(".json")
    results = _upgraded(json.loads(output.read_text())) if output.is_file() else {"rows": {}}
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(
        PAPER_TASKS,
        num_samples=100,
        data_dir=args.data_dir,
        channel_stats=True,
        calibration_answer=args.calibration_answer,
        disable_progress=True,
    )
    excluded = pruner.scores.provenance["excluded_eval_ids"]
    models = {"dense": (None, lambda: dense)}
    for recipe in args.recipes:
        for sparsity in args.sparsities:
            build = lambda s=sparsity, r=recipe: rb._diet_model(pruner, s, recipe=r)  # noqa: E731
            models[_row_name(sparsity, recipe, args.calibration_answer)] = (recipe, build)
    for name, (recipe, build) in models.items():
        if name in results["rows"]:
            continue
        scored = evaluate(
            build(),
            tokenizer,
            ["boolq"],
            limit=None,
            half="test",
            exclude_ids=excluded,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            return_predictions=True,
        )
        answer = {} if recipe is None else {"calibration_answer": args.calibration_answer}
        results["rows"][name] = {"recipe": recipe, **answer, **summarize(scored["predictions"]["boolq"])}
        print(name, results["rows"][name], flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        output.with_suffix(".md").write_text(render(results))
    return 0


def _row_name(sparsity: float, recipe: str, answer: str = "gold") -> str:
    """Rows on gold answers (every row before the option) keep their names; other answers are named."""
    return f"DIET {sparsity:.0%} ({recipe}{answer_suffix(answer)})"


def _is_default(row: dict) -> bool:
    """A row of today's default: its recipe, calibrated on its answers (rows without an answer: gold)."""
    return row["recipe"] == DEFAULT_RECIPE and row.get("calibration_answer", "gold") == DEFAULT_CALIBRATION_ANSWER


def _upgraded(results: dict) -> dict:
    """Results saved before rows named their recipe (one top-level `recipe`, rows "DIET 20% (default)"): each DIET
    row renamed by and marked with that recipe."""
    recipe = results.pop("recipe", None)
    if recipe is None:
        return results
    rows = {}
    for name, row in results["rows"].items():
        if name == "dense":
            rows[name] = {"recipe": None, **row}
        else:
            rows[_row_name(float(name.split()[1].rstrip("%")) / 100, recipe)] = {"recipe": recipe, **row}
    return {**results, "rows": rows}


def render(results: dict) -> str:
    lines = [
        "# BoolQ on its whole test half (Gemma 3 270M)",
        "",
        "`python benchmarks/boolq_full_half.py --data-dir ../shared/data [--recipes ...]`: every test-half example of "
        "BoolQ after the calibration exclusions; each DIET row names its recipe, pruned from the benchmark's profile "
        "(rows named without an answer: calibration texts ending in the gold answer). "
        "Majority rate: the share of the majority label among the same examples; Δ: accuracy minus it, 95% bootstrap "
        "interval over examples.",
        "",
        "| model | examples | accuracy ± s.e. | majority rate | Δ vs majority [95% CI] | answered with the majority "
        "label |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        low, high = row["acc_minus_majority_ci95"]
        if _is_default(row):
            name = f"{name[:-1]}, the default)"
        lines.append(
            f"| {name} | {row['num_scored']} | {row['acc']:.3f} ± {row['acc_stderr']:.3f} | "
            f"{row['majority_rate']:.3f} "
            f"({ANSWERS[row['majority_label']]}) | {row['acc_minus_majority']:+.3f} [{low:+.3f}, {high:+.3f}] | "
            f"{row['predicted_majority_share']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
