"""The answer prior of the yes/no tasks, before and after pruning: is RTE's loss at 20% a shifted prior?

    python benchmarks/answer_prior.py --data-dir ../shared/data --output benchmarks/results/answer_prior

On the test halves DIET's default (the reconstruction with its BOS anchor) reads 4.1 points below dense on RTE at 20%,
and its predecessor without the anchor 0.7. The issue's diagnosis asks whether a yes/no loss is a shift of the answer
prior. For the dense model, the default and its predecessor at 20% and 40% (one profile of 100 calibration examples
per task, the benchmark's seed), over RTE's dev and test halves (all of each) and the first 150 of BoolQ's: the mean
probability of the first answer among the two (RTE " True" = entailment, BoolQ " yes"), the share of prompts answered
with it, the share of gold answers that are it, and accuracy (lm-eval's decision between the two answers). A report:
no recipe is chosen on it.

`--calibration-answer` is the answer the calibration texts end in (the library's default, "any" since 2026-12-05).
The pruned models' rows named without an answer were profiled on gold answers (2026-12-04, before the option); rows on
other answers carry theirs in the name (", any answers"). A rerun keeps the rows there and adds the missing ones.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from diet_hf import DietPruner
from diet_hf.evaluation import next_token_logprobs
from diet_hf.real_model import load_gemma3_270m
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, get_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _side import answer_suffix  # noqa: E402
from dev_sweep import answer_token_ids  # noqa: E402

from diet_hf.tasks.registry import CALIBRATION_ANSWERS, DEFAULT_CALIBRATION_ANSWER  # noqa: E402

ANSWERS = {"rte": ("True", "False", 0), "boolq": ("yes", "no", 1)}  # first answer, second, the label meaning "first"
LIMITS = {"rte": 500, "boolq": 150}


def measure(model, tokenizer, prompts: list[str], labels: torch.Tensor, task: str) -> dict:
    first, second, first_label = ANSWERS[task]
    first_id, second_id = answer_token_ids(tokenizer, (first, second))
    logprobs = next_token_logprobs(model, tokenizer, prompts)
    margin = logprobs[:, first_id] - logprobs[:, second_id]
    answered_first, gold_first = margin > 0, labels == first_label
    return {
        "n": len(prompts),
        "p_first": torch.sigmoid(margin).mean().item(),
        "answered_first": answered_first.float().mean().item(),
        "gold_first": gold_first.float().mean().item(),
        "accuracy": (answered_first == gold_first).float().mean().item(),
    }


def render(rows: list[dict]) -> str:
    lines = [
        "# Answer prior of the yes/no tasks (Gemma 3 270M)",
        "",
        "P(first): mean P(first answer) / (P(first) + P(second)) after the prompt (RTE: ' True', BoolQ: ' yes'); "
        "answered: share of prompts whose first answer scores higher; gold: share of gold answers that are the first; "
        "acc: accuracy. Written by `benchmarks/answer_prior.py`. Pruned models named without an answer were "
        "calibrated on gold answers; ', any answers': on a choice drawn per example (the default since 2026-12-05).",
        "",
        "| model | task | half | n | P(first) | answered first | gold first | acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['half']} | {r['n']} | {r['p_first']:.3f} | {r['answered_first']:.3f} "
            f"| {r['gold_first']:.3f} | {r['accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output", default="benchmarks/results/answer_prior")
    parser.add_argument(
        "--calibration-answer",
        choices=CALIBRATION_ANSWERS,
        default=DEFAULT_CALIBRATION_ANSWER,
        help="the answer the calibration texts end in (`ProfileOptions.calibration_answer`)",
    )
    args = parser.parse_args(argv)
    output = Path(args.output)
    report = {"commands": [], "rows": []}
    if output.with_suffix(".json").exists():
        report = json.loads(output.with_suffix(".json").read_text())
        report.setdefault("commands", [report.pop("command")] if "command" in report else [])
    report["commands"].append(" ".join(["python", *sys.argv]))
    done = {(r["model"], r["task"], r["half"]) for r in report["rows"]}
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="gemma-3-270m")
    pruner.profile(PAPER_TASKS, num_samples=100, data_dir=args.data_dir, calibration_answer=args.calibration_answer)
    excluded = pruner.scores.provenance["excluded_eval_ids"]
    sets = {}
    for task in ANSWERS:
        for half in ("dev", "test"):
            docs = evaluation_examples(
                task, half=half, exclude_ids=excluded.get(task), limit=LIMITS[task], data_dir=args.data_dir
            )
            requests = [get_task(task).build(doc) for doc in docs]
            sets[task, half] = ([r.contexts[0] for r in requests], torch.tensor([r.label for r in requests]))
    suffix = answer_suffix(args.calibration_answer)
    models = {"dense": lambda: dense}
    for sparsity in (0.2, 0.4):
        models[f"default {sparsity:.0%}{suffix}"] = lambda s=sparsity: pruner.prune(sparsity=s)
        models[f"uniform_mlp_mean_ls {sparsity:.0%}{suffix}"] = lambda s=sparsity: pruner.prune(
            sparsity=s, recipe="uniform_mlp_mean_ls"
        )
    for name, build in models.items():
        if all((name, task, half) in done for task, half in sets):
            continue
        model = build()
        for (task, half), (prompts, labels) in sets.items():
            if (name, task, half) in done:
                continue
            measured = measure(model, tokenizer, prompts, labels, task)
            report["rows"].append({"model": name, "task": task, "half": half, **measured})
            print(json.dumps(report["rows"][-1]), flush=True)
            output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
            output.with_suffix(".md").write_text(render(report["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
