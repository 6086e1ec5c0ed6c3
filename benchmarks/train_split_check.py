"""The BOS anchor on the training splits: does it cost accuracy on more development examples than the dev halves hold?

    python benchmarks/train_split_check.py --data-dir ../shared/data --output benchmarks/results/train_split_check

Issue 13's "best seven-task average of all methods" is missed on the test halves by the default's own ablation
without the BOS anchor (`"uniform_mlp_mean_ls"`, the predecessor): +0.004 to +0.010 at 10-40% (500 test examples per
task), most of it RTE's 145. On the dev halves the two were within noise both ways (`anchor_any_probe.md`), and on
RTE's 2390 training examples the default is at or above it (`rte_train_check.md`). Four more tasks have training
splits that no choice has read: ARC-Easy (2251), ARC-Challenge (1119), OpenBookQA (4957) and WinoGrande (640);
calibration draws 100 of each. This scores the others (the draw's own left out; the first `--limit` of each in file
order) as each task is scored (lm-eval's prompt, the headline metric), for both recipes at 20% and 40%, pruned from
the benchmark's profile (100 calibration examples per task, seed 0, any answers, the default since 2026-12-05).

The rule, written down before any row. These examples are development data: neither half of the evaluation split,
never read by a probe or a choice. Over five tasks, these four and RTE's training examples (the `", any answers"`
rows of `rte_train_check.json`, same profile), each weighted equally, the default minus the predecessor with a
paired-bootstrap 95% interval (each task's examples drawn apart):
- if the interval lies entirely below zero at both 20% and 40%, the BOS anchor goes off by default (the recipe
  becomes `"uniform_mlp_mean_ls"`), after the test-half rows are measured again with it;
- otherwise the anchor stays, and the predecessor's test-half lead is recorded as not reproduced on development data
  (the interval above zero at both) or as unresolved (anything else).
Rows are saved as they finish (per model and task); a rerun resumes.
"""

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_benchmark as rb  # noqa: E402
from _side import interval  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import evaluate, paired_bootstrap  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.recipes import DEFAULT_RECIPE  # noqa: E402
from diet_hf.tasks import PAPER_TASKS, get_task, load_calibration, load_examples  # noqa: E402

PREDECESSOR = "uniform_mlp_mean_ls"
TASKS = ("arc_easy", "arc_challenge", "openbookqa", "winogrande")
RTE_ROWS = "benchmarks/results/rte_train_check.json"


def training_task(name: str, data_dir: str, seed: int, limit: int | None):
    """`name`'s training examples outside calibration draw `seed` (the first `limit` in file order), as a task
    scored exactly as `name` is (its prompt and headline metric)."""
    spec = get_task(name)
    drawn = set(load_calibration(name, num_samples=100, seed=seed, data_dir=data_dir).example_ids)
    docs = [doc for doc in load_examples(spec, spec.train_split, data_dir=data_dir) if str(doc["id"]) not in drawn]
    return dataclasses.replace(spec, name=f"{name}_train", examples=tuple(docs[:limit]))


def summarize(predictions: list[dict], metric: str) -> dict:
    correct = [int(p[metric] == p["label"]) for p in predictions]
    n, accuracy = len(correct), sum(correct) / len(correct)
    return {
        "num_scored": n,
        "metric": metric,
        "accuracy": accuracy,
        "stderr": math.sqrt(accuracy * (1 - accuracy) / (n - 1)),
        "correct": correct,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.2, 0.4])
    parser.add_argument("--seed", type=int, default=0, help="calibration draw (the benchmark's: 0)")
    parser.add_argument("--limit", type=int, default=1000, help="training examples per task (first in file order)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default="benchmarks/results/train_split_check")
    args = parser.parse_args(argv)
    output = Path(args.output).with_suffix(".json")
    results = json.loads(output.read_text()) if output.is_file() else {"seed": args.seed, "limit": args.limit}
    results.setdefault("rows", {})
    results["command"] = " ".join(["python", "benchmarks/train_split_check.py", *(argv or sys.argv[1:])])
    tasks = [training_task(name, args.data_dir, args.seed, args.limit) for name in TASKS]
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    for sparsity in args.sparsities:
        for recipe in (DEFAULT_RECIPE, PREDECESSOR):
            name = f"{recipe} {sparsity:.0%}"
            rows = results["rows"].setdefault(name, {})
            todo = [task for task in tasks if task.name not in rows]
            if not todo:
                continue
            if pruner.scores is None:
                pruner.profile(PAPER_TASKS, num_samples=100, seed=args.seed, data_dir=args.data_dir)
            model = rb._diet_model(pruner, sparsity, recipe=recipe)
            for task in todo:
                scored = evaluate(model, tokenizer, [task], batch_size=args.batch_size, return_predictions=True)
                rows[task.name] = summarize(scored["predictions"][task.name], task.headline_metric)
                print(name, task.name, f"{rows[task.name]['accuracy']:.4f} (n={rows[task.name]['num_scored']})")
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(json.dumps(results) + "\n")
                output.with_suffix(".md").write_text(render(results))
            del model
    return 0


def _rte_rows(sparsity: float) -> dict | None:
    """RTE's training-example rows of both recipes at `sparsity` (any answers), from `rte_train_check.json`."""
    path = Path(RTE_ROWS)
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["rows"]
    names = [f"{recipe} {sparsity:.0%}, any answers" for recipe in (DEFAULT_RECIPE, PREDECESSOR)]
    return (
        {name.split(" ")[0]: rows[name]["correct"] for name in names if name in rows}
        if all(name in rows for name in names)
        else None
    )


def render(results: dict) -> str:
    rows = results["rows"]
    names = [f"{t}_train" for t in TASKS]
    lines = [
        "# The BOS anchor on the training splits (Gemma 3 270M)",
        "",
        f"`{results.get('command', 'python benchmarks/train_split_check.py')}`: the training examples of four tasks "
        f"outside calibration draw {results['seed']} (the first {results['limit']} of each in file order), scored as "
        "each task is (its headline metric); the default (BOS anchor) against its predecessor (none), both pruned "
        "from one profile (100 calibration examples per task, any answers). The rule, written before any row, is "
        "in the script's docstring. Δ: the default minus the predecessor, paired bootstrap 95% interval over the "
        "same examples (2000 resamples; per task, and over the tasks with each weighted equally, each task's "
        "examples drawn apart). The five-task column adds RTE's 2390 training examples from `rte_train_check.json`.",
        "",
        "| model | " + " | ".join(names) + " | four-task average | Δ (four) | Δ (five, with RTE) |",
        "|---|" + "---|" * (len(names) + 3),
    ]
    for name, per_task in rows.items():
        cells = [
            f"{per_task[t]['accuracy']:.3f} (n={per_task[t]['num_scored']})" if t in per_task else "…" for t in names
        ]
        done = all(t in per_task for t in names)
        average = sum(per_task[t]["accuracy"] for t in names) / len(names) if done else None
        four = five = "–"
        if name.startswith(DEFAULT_RECIPE + " "):
            other = rows.get(name.replace(DEFAULT_RECIPE, PREDECESSOR, 1), {})
            if done and all(t in other for t in names):
                after = {t: per_task[t]["correct"] for t in names}
                before = {t: other[t]["correct"] for t in names}
                four = interval(paired_bootstrap(after, before))
                rte = _rte_rows(float(name.rsplit(" ", 1)[1].rstrip("%")) / 100)
                if rte is not None:
                    after["rte_train"], before["rte_train"] = rte[DEFAULT_RECIPE], rte[PREDECESSOR]
                    five = interval(paired_bootstrap(after, before))
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {'…' if average is None else f'{average:.4f}'} | {four} | {five} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
