"""The ridge term of the least-squares reconstruction, chosen on dev prompts (KL to dense only; no accuracy).

    python benchmarks/reconstruction_damping.py --data-dir ../shared/data

One profile (7 paper tasks x 100 calibration examples), DIET's default plan at each sparsity, built without the
reconstruction and with it at each damping (`diet_hf.reconstruction.least_squares_update`: the ridge term as a
fraction of the mean variance of the kept channels); KL(dense || pruned) of the next-token distribution after the
first 40 dev prompts of each of the 8 evaluation tasks (`dev_sweep.py`'s prompts), overall and per task.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import DietPruner, build_pruned_model  # noqa: E402
from diet_hf.evaluation import kl_divergence, next_token_logprobs  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--dampings", type=float, nargs="+", default=[0.001, 0.01, 0.03, 0.1])
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--output", default="benchmarks/results/reconstruction_damping")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(PAPER_TASKS, num_samples=100, data_dir=args.data_dir, disable_progress=True)
    excluded = pruner.scores.provenance["excluded_eval_ids"]
    prompts = {t: dev_sweep._dev_prompts(t, excluded, args.data_dir, args.kl_prompts) for t in dev_sweep.EVAL_TASKS}
    flat = [p for t in dev_sweep.EVAL_TASKS for p in prompts[t]]
    reference = next_token_logprobs(dense, tokenizer, flat)
    rows = []
    for sparsity in args.sparsities:
        pruner.prune(sparsity=sparsity, reconstruct=False)
        plan, means = pruner.plan, pruner.scores.channel_means()
        moments = pruner._input_moments(plan, list(pruner.scores.tasks))
        for damping in [None, *args.dampings]:
            start = time.perf_counter()
            model = build_pruned_model(
                dense,
                plan,
                channel_means=means,
                input_moments=None if damping is None else moments,
                reconstruction_damping=0.0 if damping is None else damping,
            )
            logprobs = next_token_logprobs(model, tokenizer, flat)
            start_row, per_task = 0, {}
            for task in dev_sweep.EVAL_TASKS:
                rows_of_task = slice(start_row, start_row + len(prompts[task]))
                per_task[task] = kl_divergence(reference[rows_of_task], logprobs[rows_of_task])
                start_row += len(prompts[task])
            row = {
                "sparsity": sparsity,
                "damping": damping,
                "kl_from_dense": kl_divergence(reference, logprobs),
                "kl_per_task": per_task,
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            print(sparsity, damping, f"KL {row['kl_from_dense']:.4f}", flush=True)
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": rows}
    output = Path(args.output)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Damping of the least-squares reconstruction (dev prompts, Gemma 3 270M)",
        "",
        f"Command: `{report['command']}`. DIET's default plan (`reconstruct=False` row: bias compensation only); "
        f"KL(dense ‖ pruned) after the first {args.kl_prompts} dev prompts of each of 8 tasks.",
        "",
        "| sparsity | damping | KL | " + " | ".join(dev_sweep.EVAL_TASKS) + " |",
        "|---|---|---|" + "---|" * len(dev_sweep.EVAL_TASKS),
    ]
    for r in rows:
        damping = "no reconstruction" if r["damping"] is None else f"{r['damping']:g}"
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in dev_sweep.EVAL_TASKS)
        lines.append(f"| {r['sparsity']:.0%} | {damping} | {r['kl_from_dense']:.3f} | {cells} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
