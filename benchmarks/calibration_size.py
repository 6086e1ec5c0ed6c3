"""How many calibration examples per task the default needs: 10, 25, 50 and 100, two draws each (dev prompts).

    python benchmarks/calibration_size.py --data-dir ../shared/data --output benchmarks/results/calibration_size

DIET profiles about 100 examples per task, and users ask how few will do ("I have 20 examples of my task"). For each
size and calibration seed this profiles the paper's seven tasks on that many examples each, prunes with the default
recipe at 20% and 40% (the same profile feeds its plan and its least-squares reconstruction), and reads KL(dense ‖
pruned) of the next-token distribution after the first 40 dev-half prompts of each of the 8 evaluation tasks, none of
them a calibration example of any draw here (HellaSwag has no training split and BoolQ 64 training examples, so their
draws also take evaluation examples). Also the profile's seconds. KL is the probes' low-variance signal; two draws
per size show how much the draw itself moves it.

A measurement for the README's guidance on `num_samples`, not a choice: the default (100, the paper's) is not changed
on it. Rows are saved as they finish; a rerun resumes.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_sweep import EVAL_TASKS, dev_prompts_excluding, kl_by_task  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import next_token_logprobs  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.recipes import DEFAULT_RECIPE  # noqa: E402
from diet_hf.tasks import PAPER_TASKS, load_calibration  # noqa: E402


def excluded_by_any_draw(sizes, seeds, data_dir) -> dict[str, list[str]]:
    """Per task, the evaluation ids any of the draws (size x seed) takes for calibration."""
    excluded = {task: set() for task in PAPER_TASKS}
    for size in sizes:
        for seed in seeds:
            for task in PAPER_TASKS:
                draw = load_calibration(task, num_samples=size, seed=seed, data_dir=data_dir)
                excluded[task].update(draw.excluded_eval_ids)
    return {task: sorted(ids) for task, ids in excluded.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--output", default="benchmarks/results/calibration_size")
    args = parser.parse_args(argv)
    output = Path(args.output).with_suffix(".json")
    results = json.loads(output.read_text()) if output.is_file() else {"recipe": DEFAULT_RECIPE, "rows": []}
    done = {(r["num_samples"], r["seed"]) for r in results["rows"]}
    excluded = excluded_by_any_draw(args.sizes, args.seeds, args.data_dir)
    dense, tokenizer, _ = load_gemma3_270m()
    prompts, flat, reference = dev_prompts_excluding(dense, tokenizer, excluded, args.data_dir, args.kl_prompts)
    for size in args.sizes:
        for seed in args.seeds:
            if (size, seed) in done:
                continue
            pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
            started = time.perf_counter()
            pruner.profile(PAPER_TASKS, num_samples=size, seed=seed, data_dir=args.data_dir, disable_progress=True)
            row = {"num_samples": size, "seed": seed, "profile_seconds": round(time.perf_counter() - started, 1)}
            for sparsity in args.sparsities:
                model = pruner.prune(sparsity=sparsity)
                logprobs = next_token_logprobs(model, tokenizer, flat, disable_progress=True)
                overall, per_task = kl_by_task(reference, logprobs, prompts)
                row[f"{sparsity:.0%}"] = {"kl_from_dense": overall, "kl_per_task": per_task}
                del model
            results["rows"].append(row)
            print(size, seed, {k: v["kl_from_dense"] for k, v in row.items() if isinstance(v, dict)}, flush=True)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=1) + "\n")
            output.with_suffix(".md").write_text(render(results, args))
    return 0


def render(results: dict, args) -> str:
    sparsities = [key for key in results["rows"][0] if key.endswith("%")]
    lines = [
        "# Calibration examples per task: what fewer cost (dev prompts, Gemma 3 270M)",
        "",
        "`python benchmarks/calibration_size.py --data-dir ../shared/data`: the default recipe "
        f"(`{results['recipe']}`) pruned from a profile of the seven tasks x N calibration examples each, per draw "
        f"(seed); KL(dense ‖ pruned) after the first {args.kl_prompts} dev prompts of each of 8 tasks (none drawn for "
        "calibration by any row here). A measurement for guidance, not a choice; see the script's docstring.",
        "",
        "| examples per task | seed | profile s | " + " | ".join(f"KL at {s}" for s in sparsities) + " | "
        + " | ".join(f"{t} at 20%" for t in EVAL_TASKS) + " |",
        "|---|---|---|" + "---|" * (len(sparsities) + len(EVAL_TASKS)),
    ]  # fmt: skip
    for row in results["rows"]:
        kls = " | ".join(f"{row[s]['kl_from_dense']:.3f}" for s in sparsities)
        per_task = " | ".join(f"{row['20%']['kl_per_task'][t]:.3f}" for t in EVAL_TASKS) if "20%" in row else ""
        lines.append(f"| {row['num_samples']} | {row['seed']} | {row['profile_seconds']} | {kls} | {per_task} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
