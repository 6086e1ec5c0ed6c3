"""Generic text beside the task data in the calibration: the seven tasks plus WikiText-2 paragraphs, on dev halves.

    python benchmarks/mixed_calibration.py --data-dir ../shared/data

The default prunes for the user's tasks; its WikiText-2 perplexity (50.3 at 20% on the test split against the dense
model's 28.5) is what healing cannot recover in its budget (issue 16), and WikiText-2 calibration alone buys
perplexity (41.7) at a much higher KL on the task prompts (issue 13's ablation). This probe asks whether a share of
generic text in the task calibration buys perplexity without costing the tasks: the profile gets WikiText-2
validation paragraphs (the first 100 of over 400 characters, from the first 85% of the validation rows) as an eighth
source beside the seven tasks' 100 examples each, and `prune(task_weights=...)` gives it weight w against 1 per task
(w = 0: the kept channels are the default's and only the reconstruction's moments see the paragraphs; w = 1: an
equal share; w = 7: half of the score). The rule, written before any row (2026-12-02 01:14 UTC), is in RULE below.

Measures (no test example is looked at): accuracy on the first 150 dev-half examples per task, KL from the dense
model after 25 dev-half prompts per task, perplexity of the held-out last 15% of the WikiText-2 validation rows (16
windows of 512 tokens after BOS, as `heal_probe.py`). Rows are saved as they finish; done rows are kept.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_benchmark as rb  # noqa: E402
from heal_probe import _held_out_perplexity, _wikitext_rows  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import correct_by_task, kl_divergence, next_token_logprobs  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

RULE = (
    "Screen (20%, 150 dev examples per task): a mixed calibration goes on to 500-dev checks only if its seven-task "
    "average is at least the default's - 0.005, its held-out WikiText-2 validation perplexity at least 5% lower, and "
    "its dev-prompt KL at most the default's + 0.02. Adopted as the default only if, on 500 dev examples per task at "
    "20% and 40%, its seven-task average is at least the default's at both and its held-out perplexity lower at both."
)
CONFIGS = ("default", "mix_w0", "mix_w1", "mix_w7", "dense")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=150, help="dev-half examples per task")
    parser.add_argument("--only", nargs="*", default=None, help=f"rows of {CONFIGS} (default: all)")
    parser.add_argument("--output", default="benchmarks/results/mixed_calibration")
    args = parser.parse_args(argv)
    output = Path(args.output).with_suffix(".json")
    results = json.loads(output.read_text()) if output.is_file() else {}
    dense, tokenizer, _ = load_gemma3_270m()
    head, tail = _wikitext_rows(args.data_dir)  # the last 15% of the rows held out; the paragraphs from the rest
    held_out = "\n\n".join(tail)
    paragraphs = [r for r in head if len(r) > 400][:100]
    profile = {"num_samples": 100, "data_dir": args.data_dir, "channel_stats": True, "disable_progress": True}
    tasks_only = DietPruner(dense, tokenizer).profile(PAPER_TASKS, **profile)
    mixed = DietPruner(dense, tokenizer).profile({**dict.fromkeys(PAPER_TASKS), "wikitext2": paragraphs}, **profile)
    excluded = tasks_only.scores.provenance["excluded_eval_ids"]
    if any(mixed.scores.provenance["excluded_eval_ids"][t] != excluded[t] for t in excluded):
        raise RuntimeError("the two profiles drew different calibration examples")
    dev = argparse.Namespace(data_dir=args.data_dir, half="dev", kl_prompts=25, batch_size=16)
    prompts = rb._kl_prompts(dev, excluded)
    dense_logprobs = next_token_logprobs(dense, tokenizer, prompts)
    for name in CONFIGS:
        key = f"{name}@{args.sparsity}"
        if key in results or (args.only and name not in args.only):
            continue
        start = time.perf_counter()
        if name == "dense":
            model = dense
        elif name == "default":
            model = tasks_only.prune(sparsity=args.sparsity)
        else:
            weight = float(name.removeprefix("mix_w"))
            task_weights = {**dict.fromkeys(PAPER_TASKS, 1.0), "wikitext2": weight}
            model = mixed.prune(sparsity=args.sparsity, task_weights=task_weights)
        result = rb._evaluate(model, tokenizer, rb.EVAL_TASKS, args.limit, dev, excluded)
        per_task = {t: r[r["headline_metric"]] for t, r in result["results"].items()}
        results[key] = {
            "method": name,
            "sparsity": args.sparsity,
            "average_paper_tasks": sum(per_task[t] for t in PAPER_TASKS) / len(PAPER_TASKS),
            "average_stderr": rb._average_stderr(result),
            "per_task": per_task,
            "correct": correct_by_task(result),
            "dev_prompt_kl": kl_divergence(dense_logprobs, next_token_logprobs(model, tokenizer, prompts)),
            "held_out_wikitext_ppl": _held_out_perplexity(model, tokenizer, held_out),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(key, {k: v for k, v in results[key].items() if k != "correct"}, flush=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        output.with_suffix(".md").write_text(render(results, args))
    return 0


def render(results: dict, args) -> str:
    lines = [
        "# Task calibration plus WikiText-2 paragraphs (Gemma 3 270M, DIET's default recipe, dev halves)",
        "",
        f"Command: `python benchmarks/mixed_calibration.py --data-dir ../shared/data` (limit {args.limit}). "
        "`mix_w<w>`: WikiText-2 validation paragraphs profiled as an eighth source with `task_weights` w against 1 "
        "per task (w 0: the default's channels, the reconstruction's moments over all eight sources). Δ: against "
        "`default` at the same sparsity, paired bootstrap over the same dev examples (2,000 resamples), 95% "
        "interval. Held-out perplexity: the last 15% of the WikiText-2 validation rows.",
        "",
        f"Rule (written before the rows): {RULE}",
        "",
        "| row | sparsity | avg (7 tasks) ± s.e. | Δ vs default [95% CI] | BoolQ | RTE | HellaSwag+ARC-e+PIQA | "
        "dev-prompt KL | held-out WikiText-2 ppl |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results.values():
        reference = results.get(f"default@{row['sparsity']}")
        delta = ""
        if reference is not None and row is not reference and row["method"] != "dense":
            d = rb.paired_difference(row, reference)
            delta = f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        signal = sum(row["per_task"][t] for t in rb.SIGNAL_TASKS) / len(rb.SIGNAL_TASKS)
        lines.append(
            f"| {row['method']} | {0 if row['method'] == 'dense' else row['sparsity']:.0%} | "
            f"{row['average_paper_tasks']:.3f} ± "
            f"{row['average_stderr']:.3f} | {delta} | {row['per_task']['boolq']:.3f} | {row['per_task']['rte']:.3f} | "
            f"{signal:.3f} | {row['dev_prompt_kl']:.3f} | {row['held_out_wikitext_ppl']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
