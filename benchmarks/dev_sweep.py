"""Choosing DIET's recipe on dev examples only: candidate scores and plan options on the real Gemma 3 270M.

    python benchmarks/dev_sweep.py --data-dir ../shared/data --limit 150 --output benchmarks/results/dev_sweep

Every number here comes from the dev half of each task's evaluation examples (`diet_hf.tasks.split_half`); the test
halves are left for `run_benchmark.py --half test`. One profile (7 paper tasks x 100 calibration examples, with
channel statistics); each candidate is a set of `DietPruner.prune` options on top of the paper's recipe (or a
baseline's scores and options), pruned at each sparsity.
Per model: dev accuracy per task (7 paper tasks + PIQA), the seven-task average with its standard error, the
HellaSwag + ARC-e + PIQA average, KL(dense || pruned) of the next-token distribution after dev prompts, and the BoolQ
answer prior (mean P(yes) / (P(yes) + P(no)) after the BoolQ dev prompts, and the share of "yes" answers).

`--diagnose S` adds the diagnosis at sparsity S: for the paper's plan, each layer's removed MLP width (then each
layer's removed heads) is restored alone, and the KL from dense (overall and per task, after the dev prompts) and
BoolQ's answer prior are measured again.
Rows are saved after every model (`--resume` continues).
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from diet_hf import DietPruner, build_pruned_model
from diet_hf.baselines import BASELINE_PRUNE_OPTIONS, baseline_scores
from diet_hf.evaluation import correct_by_task, evaluate, kl_divergence, next_token_logprobs, paired_bootstrap
from diet_hf.plan import build_plan
from diet_hf.real_model import load_gemma3_270m
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, get_task
from diet_hf.tasks.registry import CALIBRATION_ANSWERS, DEFAULT_CALIBRATION_ANSWER

EVAL_TASKS = [*PAPER_TASKS, "piqa"]
SIGNAL_TASKS = ("hellaswag", "arc_easy", "piqa")
PAPER = {"mlp_normalize": "none", "head_normalize": "layer", "allocation": "global"}
BIAS = {"bias_compensation": True}
DEFAULT_R64 = {"merge": "mean", "allocation": "uniform", "attention_ratio": 0.0, "round_to": 64, **BIAS}
# name -> `DietPruner.prune` options (on top of the paper's recipe), or a baseline: ("baseline", method)
CANDIDATES = {
    "paper": {},
    "paper+bias": BIAS,
    "uniform+bias": {"allocation": "uniform", **BIAS},
    "cap2+bias": {"layer_sparsity_cap": 2.0, **BIAS},
    "cap1.5+bias": {"layer_sparsity_cap": 1.5, **BIAS},
    "mlpnorm+bias": {"mlp_normalize": "layer", **BIAS},
    "contrib+bias": {"score": "contribution", **BIAS},
    "contrib+uniform+bias": {"score": "contribution", "allocation": "uniform", **BIAS},
    "contrib+cap1.5+bias": {"score": "contribution", "layer_sparsity_cap": 1.5, **BIAS},
    "contrib+mlpnorm+bias": {"score": "contribution", "mlp_normalize": "layer", **BIAS},
    "iter4+cap1.5+bias": {"layer_sparsity_cap": 1.5, "steps": 4, **BIAS},
    "iter4+uniform+bias": {"allocation": "uniform", "steps": 4, **BIAS},
    "heads0.5+uniform+bias": {"allocation": "uniform", "attention_ratio": 0.5, **BIAS},
    "mlponly+uniform+bias": {"allocation": "uniform", "attention_ratio": 0.0, **BIAS},
    "mlponly+keeplast+uniform+bias": {"allocation": "uniform", "attention_ratio": 0.0, "keep_layers": [-1], **BIAS},
    "keeplast+uniform+bias": {"allocation": "uniform", "keep_layers": [-1], **BIAS},
    # added after the test-half rows showed FLAP's allocation without its compensation leading at 20%: the default
    # without compensation, and DIET's scores under FLAP's allocation rule (per-layer z-scores, one global cut)
    "mlponly+uniform": {"allocation": "uniform", "attention_ratio": 0.0},
    "std": {"mlp_normalize": "standardize", "head_normalize": "standardize"},
    # added after the test-half ablation row `diet_global` (the default with global allocation) scored 0.466 at 20%
    "mlponly+bias": {"attention_ratio": 0.0, **BIAS},
    # and after `diet_mean` (the default with the mean-rank merge instead of the vote) scored 0.455 at 20% on test
    "mlponly+mean+uniform+bias": {"merge": "mean", "allocation": "uniform", "attention_ratio": 0.0, **BIAS},
    # the default since 2026-11-30 (widths rounded to multiples of 64) and its two test-half ablations that scored
    # above it within noise at 20% (global allocation; no bias compensation), now on dev
    "mlponly+mean+uniform+bias+r64": {
        "merge": "mean",
        "allocation": "uniform",
        "attention_ratio": 0.0,
        "round_to": 64,
        **BIAS,
    },
    "mlponly+mean+uniform+r64": {"merge": "mean", "allocation": "uniform", "attention_ratio": 0.0, "round_to": 64},
    "mlponly+mean+bias+r64": {"merge": "mean", "attention_ratio": 0.0, "round_to": 64, **BIAS},
    "mlponly+mean+r64": {"merge": "mean", "attention_ratio": 0.0, "round_to": 64},
    # least-squares reconstruction of the cut down_proj (`reconstruct`): on the default, without compensation, with
    # global allocation, and with heads cut too (o_proj reconstructed)
    "mlponly+mean+uniform+bias+r64+ls": {**DEFAULT_R64, "reconstruct": True},
    "mlponly+mean+uniform+r64+ls": {**DEFAULT_R64, "bias_compensation": False, "reconstruct": True},
    "mlponly+mean+bias+r64+ls": {**DEFAULT_R64, "allocation": "global", "reconstruct": True},
    "mean+uniform+bias+r64+ls": {**DEFAULT_R64, "attention_ratio": 1.0, "reconstruct": True},
    "paper+ls": {"reconstruct": True},
    # the reconstruction constrained to reproduce the BOS position's output (`anchor_bos`; the limit of
    # `bos_weight_probe.py`'s weighting, whose KL it prompted)
    "mlponly+mean+uniform+bias+r64+ls+bos": {**DEFAULT_R64, "reconstruct": True, "anchor_bos": True},
    "flap": ("baseline", "flap"),
    "wanda_sp": ("baseline", "wanda_sp"),
}


def _dev_prompts(task, excluded, data_dir, count):
    docs = evaluation_examples(task, half="dev", exclude_ids=excluded.get(task), limit=count, data_dir=data_dir)
    return [get_task(task).build(d).contexts[0] for d in docs]


def profiled_dense(data_dir, **profile_options):
    """The dense Gemma 3 270M, its tokenizer and a `DietPruner` profiled on the paper's seven tasks x 100 calibration
    examples (drawn with the profile's own seed), as every dev probe starts; `profile_options` go to `profile`."""
    torch.manual_seed(0)
    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(PAPER_TASKS, num_samples=100, data_dir=data_dir, disable_progress=True, **profile_options)
    return dense, tokenizer, pruner


PAIRED_DEFAULT = "mlponly+mean+uniform+bias+r64+ls+bos"  # the default's rows in dev_sweep_500.json


def kl_row(model, tokenizer, kl, sparsity: float, variant: str, previous: dict, started: float) -> dict:
    """A paired probe's KL row of `model`: KL(dense || model) after the dev prompts (`kl`: `dev_prompt_reference`'s
    `(prompts, flat, reference)`), overall and per task; for the default, the reference rows' KL beside it (a check
    that the pairing holds); the seconds since `started`."""
    prompts, flat, reference = kl
    logprobs = next_token_logprobs(model, tokenizer, flat, disable_progress=True)
    overall, per_task = kl_by_task(reference, logprobs, prompts)
    row = {"sparsity": sparsity, "variant": variant, "kl_from_dense": overall, "kl_per_task": per_task}
    if variant == "default":
        row["kl_in_reference_rows"] = previous[(PAIRED_DEFAULT, sparsity)]["kl_from_dense"]
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(sparsity, variant, f"KL {overall:.4f}", row.get("kl_in_reference_rows", ""), flush=True)
    return row


def probe_parser(description: str, output: str) -> argparse.ArgumentParser:
    """The flags of the probes whose accuracy step is paired with the default's rows of `dev_sweep_500.json`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--limit", type=int, default=500, help="dev examples per task for the accuracy step")
    parser.add_argument("--reference", default="benchmarks/results/dev_sweep_500.json")
    parser.add_argument("--output", default=output)
    return parser


def paired_probe_start(args):
    """What those probes start from: `(dense, tokenizer, pruner)` profiled as the reference rows were (float32 x xᵀ
    products, their calibration answers), `(prompts, flat, reference)` of `dev_prompt_reference`, and the reference
    rows by (name, sparsity)."""
    report = json.loads(Path(args.reference).read_text())
    dense, tokenizer, pruner = profiled_dense(
        args.data_dir, moments_dtype="float32", calibration_answer=reference_answer(report)
    )
    kl = dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    previous = {(r["name"], r["sparsity"]): r for r in report["rows"]}
    return (dense, tokenizer, pruner), kl, previous


# The default's dev rows on calibration texts that end in any answer choice (its KL and 500-dev accuracy rows), which
# the probes since 2026-12-05 pair with, and the names of those rows there
ANY_REFERENCE = "benchmarks/results/choice_calibration_probe.json"
ANY_KL, ANY_ACCURACY = "any-choice", "any-choice, dev accuracy"


def any_answer_probe_start(args):
    """What the probes paired with `ANY_REFERENCE`'s rows start from: `(dense, tokenizer, pruner)` profiled as those
    rows were (`calibration_answer="any"`, float32 x xᵀ products), `(prompts, flat, reference)` of
    `dev_prompt_reference`, and the rows of `args.reference` by (variant, sparsity)."""
    stored = {(r["variant"], r["sparsity"]): r for r in json.loads(Path(args.reference).read_text())["rows"]}
    dense, tokenizer, pruner = profiled_dense(args.data_dir, moments_dtype="float32", calibration_answer="any")
    kl = dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    return (dense, tokenizer, pruner), kl, stored


def check_pairing(row: dict, reference: str) -> None:
    """Stops a probe whose default's KL row does not reproduce the stored one beside it (`kl_in_reference_rows`) to
    1e-4: its profile is not the reference rows' (`reference`, the file), so pairing with them would compare
    different models."""
    if abs(row["kl_from_dense"] - row["kl_in_reference_rows"]) > 1e-4:
        raise SystemExit(f"The default's KL at {row['sparsity']:.0%} differs from {reference}'s.")


ANSWER_WORDS = {"gold": "their gold answers", "any": "a choice drawn per example"}


def reference_answer(report: dict) -> str:
    """The answer a sweep's calibration texts ended in (`"gold"` in sweeps from before the option)."""
    return report.get("calibration_answer", "gold")


def dev_prompt_reference(dense, tokenizer, pruner, data_dir, count: int):
    """The probes' KL measure: `dev_prompts_excluding` the calibration examples of `pruner`'s profile."""
    return dev_prompts_excluding(dense, tokenizer, pruner.scores.provenance["excluded_eval_ids"], data_dir, count)


def dev_prompts_excluding(dense, tokenizer, excluded: dict, data_dir, count: int):
    """The first `count` dev-half prompts of each evaluation task, none of the ids in `excluded` (task -> ids), per
    task and flat, and the dense model's next-token log-probs after the flat list."""
    prompts = {t: _dev_prompts(t, excluded, data_dir, count) for t in EVAL_TASKS}
    flat = [p for t in EVAL_TASKS for p in prompts[t]]
    return prompts, flat, next_token_logprobs(dense, tokenizer, flat, disable_progress=True)


def kl_by_task(reference, logprobs, prompts: dict[str, list[str]]) -> tuple[float, dict[str, float]]:
    """KL(dense || pruned) over all prompts and per task, for log-prob rows in the order of `prompts` (task -> its
    prompts)."""
    start, per_task = 0, {}
    for task, texts in prompts.items():
        per_task[task] = kl_divergence(reference[start : start + len(texts)], logprobs[start : start + len(texts)])
        start += len(texts)
    return kl_divergence(reference, logprobs), per_task


def answer_token_ids(tokenizer, words=("yes", "no")) -> tuple[int, ...]:
    """The token id of each answer word after a space, as lm-eval's prompts end; each must be one token."""
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"] for word in words]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"The answers {[' ' + w for w in words]} are not single tokens: {ids}")
    return tuple(i[0] for i in ids)


def measure_context(tokenizer, excluded: dict, prompts: dict[str, list[str]], reference: torch.Tensor) -> dict:
    """What `_measure` reads besides the model: the excluded calibration ids, the dev prompts (task -> prompts, in
    `EVAL_TASKS` order) with each task's rows among them, the yes/no token ids and the dense log-probs after them."""
    starts = [sum(len(prompts[t]) for t in EVAL_TASKS[:i]) for i in range(len(EVAL_TASKS))]
    return {
        "excluded": excluded,
        "kl_prompts": [p for t in EVAL_TASKS for p in prompts[t]],
        "rows": {t: list(range(start, start + len(prompts[t]))) for t, start in zip(EVAL_TASKS, starts)},
        "yes_no": answer_token_ids(tokenizer),
        "dense_logprobs": reference,
    }


def mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over layers of the Spearman correlation between two `(layers, units)` score tensors (the score probes'
    measure of how far a candidate's order is from DIET's)."""

    def ranks(x):
        return x.argsort(dim=1).argsort(dim=1).double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return float(((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).mean())


def paired_with(model, tokenizer, args, context, before: dict) -> dict:
    """`_measure` of `model`, with its paired difference in the seven-task average against the row `before` (the same
    dev examples) and that row's average: the probes' accuracy step."""
    measured = _measure(model, tokenizer, args, context)
    difference = paired_bootstrap(
        {t: measured["correct"][t] for t in PAPER_TASKS}, {t: before["correct"][t] for t in PAPER_TASKS}
    )
    return {**measured, "against_default": difference, "default_average": before["average_paper_tasks"]}


def paired_accuracy_row(model, tokenizer, args, context, previous: dict, sparsity: float, variant: str) -> dict:
    """The probes' accuracy row of `model` (`variant` at `sparsity`): `paired_with` against the default's reference
    row at that sparsity (`previous`: the reference rows by (name, sparsity)), printed as it comes."""
    measured = paired_with(model, tokenizer, args, context, previous[(PAIRED_DEFAULT, sparsity)])
    row = {"sparsity": sparsity, "variant": f"{variant}, dev accuracy", **measured}
    average = f"avg {row['average_paper_tasks']:.4f} vs {row['default_average']:.4f}"
    print(sparsity, average, row["against_default"], flush=True)
    return row


def guarded_probe(args, start, report: dict, variant: str, prune, write, guard: float = 1.05) -> None:
    """One candidate against the default, the flow of the probes whose KL is a guard: at every sparsity the KL rows of
    the default and of `variant` (`prune(name, sparsity)` builds either model; `start`: `paired_probe_start`'s
    result), then, only if the candidate's KL is at most `guard` times the default's at every sparsity
    (`report["kl_rule_passed"]`), its accuracy rows paired with the default's reference rows. `write(report)` after
    every row."""
    (_, tokenizer, pruner), dev_kl, previous = start
    models = {}
    for sparsity in args.sparsities:
        for name in ("default", variant):
            started = time.perf_counter()
            models[(sparsity, name)] = prune(name, sparsity)
            report["rows"].append(
                kl_row(models[(sparsity, name)], tokenizer, dev_kl, sparsity, name, previous, started)
            )
            write(report)
    kl = {(r["sparsity"], r["variant"]): r["kl_from_dense"] for r in report["rows"]}
    report["kl_rule_passed"] = all(kl[(s, variant)] <= guard * kl[(s, "default")] for s in args.sparsities)
    write(report)
    print("KL rule passed:", report["kl_rule_passed"], flush=True)
    if not report["kl_rule_passed"]:
        return
    prompts, _, reference = dev_kl
    context = measure_context(tokenizer, pruner.scores.provenance["excluded_eval_ids"], prompts, reference)
    for sparsity in args.sparsities:
        model = models[(sparsity, variant)]
        report["rows"].append(paired_accuracy_row(model, tokenizer, args, context, previous, sparsity, variant))
        write(report)


def write_probe_json(output: Path, report: dict) -> None:
    """A probe's report as `output`.json (its folder made), rewritten after every row."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")


def probe_heading(title: str, commands: list[str], kl_prompts: int, script: str) -> list[str]:
    """The first Markdown lines of a paired probe's report: its title, the commands that made its rows, what its KL
    is read after, and where its method and rule are written (`script`'s docstring)."""
    return [
        f"# {title} (probe; dev halves, Gemma 3 270M)",
        "",
        ("Command: " if len(commands) == 1 else "Commands: ")
        + "; ".join(f"`{c}`" for c in commands)
        + f". KL(dense ‖ pruned) after the first {kl_prompts} dev prompts of each of 8 tasks; the method and the "
        f"rule are in `benchmarks/{script}`'s docstring.",
        "",
    ]


def probe_tables(rows: list[dict], column: str, candidate: str, widths: bool = False) -> list[str]:
    """Markdown lines of a paired probe's rows: its KL table (`column` heads the variant's column; with `widths`, each
    row's MLP widths too) and, where rows hold dev accuracy, `paired_table` (`candidate` heads its column)."""
    lines = [
        f"| sparsity | {column} | KL | " + " | ".join(EVAL_TASKS) + " | s |" + (" widths |" if widths else ""),
        "|---|---|---|" + "---|" * len(EVAL_TASKS) + "---|" + ("---|" if widths else ""),
    ]
    for r in rows:
        if "per_task" in r:
            continue
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in EVAL_TASKS)
        line = f"| {r['sparsity']:.0%} | {r['variant']} | {r['kl_from_dense']:.3f} | {cells} | {r['seconds']} |"
        if widths:
            line += " " + (" ".join(str(w) for w in r.get("widths", [])) or "(not recorded)") + " |"
        lines.append(line)
    accuracy = [r for r in rows if "per_task" in r]
    return lines + (paired_table(accuracy, candidate) if accuracy else [])


def paired_table(rows: list[dict], label: str) -> list[str]:
    """Markdown lines of the probes' accuracy rows (`paired_with`'s, with `variant` and `sparsity`)."""
    lines = [
        "",
        "Dev accuracy (seven-task average, 500 dev examples per task; the default's from the reference rows):",
        "",
        f"| variant | sparsity | default | {label} | paired difference [95%] | HellaSwag+ARC-e+PIQA | KL |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, (low, high) = r["against_default"], r["against_default"]["ci95"]
        lines.append(
            f"| {r['variant']} | {r['sparsity']:.0%} | {r['default_average']:.4f} | {r['average_paper_tasks']:.4f} | "
            f"{d['difference']:+.4f} [{low:+.4f}, {high:+.4f}] | {r['average_signal_tasks']:.4f} | "
            f"{r['kl_from_dense']:.3f} |"
        )
    return lines


def _prompt_measures(model, tokenizer, context) -> dict:
    """KL from dense after the dev prompts (all, and per task) and BoolQ's answer prior: cheap, low-variance."""
    logprobs = next_token_logprobs(model, tokenizer, context["kl_prompts"])
    yes, no = context["yes_no"]
    boolq = logprobs[context["rows"]["boolq"]]
    p_yes = (boolq[:, yes].exp() / (boolq[:, yes].exp() + boolq[:, no].exp())).mean().item()
    dense = context["dense_logprobs"]
    return {
        "kl_from_dense": kl_divergence(dense, logprobs),
        "kl_per_task": {t: kl_divergence(dense[rows], logprobs[rows]) for t, rows in context["rows"].items()},
        "boolq_p_yes": p_yes,
    }


def _measure(model, tokenizer, args, context) -> dict:
    start = time.perf_counter()
    result = evaluate(
        model,
        tokenizer,
        EVAL_TASKS,
        limit=args.limit,
        half="dev",
        exclude_ids=context["excluded"],
        data_dir=args.data_dir,
        return_predictions=True,
        disable_progress=True,
    )
    per_task = {t: r[r["headline_metric"]] for t, r in result["results"].items()}
    stderr = math.sqrt(sum(result["results"][t]["acc_stderr"] ** 2 for t in PAPER_TASKS)) / len(PAPER_TASKS)
    answers = result["predictions"]["boolq"]
    return {
        "average_paper_tasks": sum(per_task[t] for t in PAPER_TASKS) / len(PAPER_TASKS),
        "average_stderr": stderr,
        "average_signal_tasks": sum(per_task[t] for t in SIGNAL_TASKS) / len(SIGNAL_TASKS),
        "per_task": per_task,
        "num_scored": {t: r["num_scored"] for t, r in result["results"].items()},
        **_prompt_measures(model, tokenizer, context),
        "boolq_share_yes": sum(a["acc"] == 1 for a in answers) / len(answers),
        "correct": correct_by_task(result),
        "seconds": time.perf_counter() - start,
    }


def _build(name, pruner, sparsity):
    """The candidate's pruned model and its plan."""
    candidate = CANDIDATES[name]
    if isinstance(candidate, tuple):
        method = candidate[1]
        options = BASELINE_PRUNE_OPTIONS[method]
        plan = build_plan(
            baseline_scores(method, pruner.model, pruner.scores), pruner.model.config, **options, sparsity=sparsity
        )
        means = pruner.scores.channel_means() if method == "flap" else None
        return build_pruned_model(pruner.model, plan, channel_means=means), plan, {**options, "method": method}
    model = pruner.prune(sparsity=sparsity, recipe="paper", **candidate)
    return model, pruner.plan, candidate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--limit", type=int, default=150, help="dev examples per task")
    parser.add_argument("--num-samples", type=int, default=100, help="calibration examples per task")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--kl-prompts", type=int, default=40, help="dev prompts per task for KL and the prior")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="NAME@SPARSITY",
        help="run just these (candidate, sparsity) pairs (none: only the diagnosis)",
    )
    parser.add_argument("--diagnose", type=float, default=None, help="sparsity of the per-layer restore diagnosis")
    parser.add_argument(
        "--calibration-answer",
        choices=CALIBRATION_ANSWERS,
        default=DEFAULT_CALIBRATION_ANSWER,
        help="what the calibration texts end in (`ProfileOptions.calibration_answer`; the committed sweeps: gold)",
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--render", action="store_true", help="only write <output>.md from <output>.json")
    parser.add_argument("--output", default="benchmarks/results/dev_sweep")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    output = Path(args.output).with_suffix(".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    if args.render:
        output.with_suffix(".md").write_text(render(json.loads(output.read_text())))
        return 0
    command = " ".join(["python", *sys.argv])
    answer = args.calibration_answer
    report = {"commands": [command], "half": "dev", "limit": args.limit, "calibration_answer": answer, "rows": []}
    if args.resume and output.is_file():
        previous = json.loads(output.read_text())
        earlier = reference_answer(previous)
        if earlier != answer:
            parser.error(
                f"--resume: {output}'s rows were calibrated on the {earlier!r} answers, not on {answer!r}: give "
                f"--calibration-answer {earlier} or another --output"
            )
        report["rows"] = previous["rows"]
        report["commands"] = [*previous.get("commands", [previous.get("command")]), command]
    done = {(r["name"], r["sparsity"]) for r in report["rows"]}

    def add(row):
        report["rows"].append(row)
        output.write_text(json.dumps(report, indent=1) + "\n")
        if "per_task" not in row:
            print(f"{row['name']:24} kl {row['kl_from_dense']:.3f} p_yes {row['boolq_p_yes']:.3f}", flush=True)
            return
        print(
            f"{row['name']:24} {row['sparsity']:.2f} avg {row['average_paper_tasks']:.3f} "
            f"signal {row['average_signal_tasks']:.3f} boolq {row['per_task']['boolq']:.3f} "
            f"rte {row['per_task']['rte']:.3f} kl {row['kl_from_dense']:.3f} p_yes {row['boolq_p_yes']:.3f} "
            f"({row['seconds']:.0f} s)",
            flush=True,
        )

    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(
        PAPER_TASKS,
        num_samples=args.num_samples,
        data_dir=args.data_dir,
        channel_stats=True,
        disable_progress=True,
        calibration_answer=answer,
    )
    scores = pruner.scores
    excluded = scores.provenance["excluded_eval_ids"]
    prompts, _, reference = dev_prompts_excluding(dense, tokenizer, excluded, args.data_dir, args.kl_prompts)
    context = measure_context(tokenizer, excluded, prompts, reference)
    if ("dense", 0.0) not in done and args.only != []:
        add({"name": "dense", "sparsity": 0.0, **_measure(dense, tokenizer, args, context)})
    pairs = [(name, sparsity) for sparsity in args.sparsities for name in args.candidates]
    if args.only is not None:
        pairs = [(item.split("@")[0], float(item.split("@")[1])) for item in args.only]
        unknown = [name for name, _ in pairs if name not in CANDIDATES]
        if unknown:
            parser.error(f"--only: unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    for name, sparsity in pairs:
        if (name, sparsity) in done:
            continue
        model, plan, options = _build(name, pruner, sparsity)
        row = {"name": name, "sparsity": sparsity, "options": options}
        row["mlp_widths"] = plan.intermediate_size_per_layer
        row["heads"] = plan.num_attention_heads_per_layer
        add({**row, **_measure(model, tokenizer, args, context)})
    if args.diagnose is not None:
        _diagnose(dense, tokenizer, scores, args, context, report, add, done)
    return 0


def render(report: dict) -> str:
    """Markdown of a sweep: candidates per sparsity (dev), then the restore diagnosis."""
    rows = report["rows"]
    dense = next(r for r in rows if r["name"] == "dense")
    lines = [
        "# DIET recipe candidates on the dev halves (Gemma 3 270M)",
        "",
        "Commands (in order; each later one resumed the rows of the earlier ones):",
        "",
        *[f"- `{command}`" for command in report.get("commands", [report.get("command")])],
        "",
        f"Dev half of each task (`diet_hf.tasks.split_half`), first {report['limit']} examples per task after "
        "calibration exclusions; 7 paper tasks x 100 calibration examples, ending in "
        f"{ANSWER_WORDS[reference_answer(report)]}. avg: seven-task average (acc for BoolQ, "
        "RTE, WinoGrande, acc_norm otherwise) ± its standard error; signal: HellaSwag + ARC-e + PIQA; KL: mean "
        "KL(dense ‖ pruned) of the next-token distribution after 40 dev prompts per task (8 tasks); P(yes): mean "
        "P(yes) / (P(yes) + P(no)) after BoolQ dev prompts (dense "
        f"{dense['boolq_p_yes']:.3f}).",
        "",
        "| candidate | sparsity | avg ± s.e. | signal | BoolQ | RTE | HellaSwag | ARC-e | PIQA | KL | P(yes) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    full = sorted((r for r in rows if "per_task" in r), key=lambda r: (r["sparsity"], -r["average_paper_tasks"]))
    for r in full:
        t = r["per_task"]
        lines.append(
            f"| {r['name']} | {r['sparsity']:.0%} | {r['average_paper_tasks']:.3f} ± {r['average_stderr']:.3f} | "
            f"{r['average_signal_tasks']:.3f} | {t['boolq']:.3f} | {t['rte']:.3f} | {t['hellaswag']:.3f} | "
            f"{t['arc_easy']:.3f} | {t['piqa']:.3f} | {r['kl_from_dense']:.3f} | {r['boolq_p_yes']:.3f} |"
        )
    diagnosis = [r for r in rows if r["name"].startswith("restore_") or r["name"] == "diagnose_base"]
    if diagnosis:
        base = next(r for r in diagnosis if r["name"] == "diagnose_base")
        tasks = list(base["kl_per_task"])
        lines += [
            "",
            f"## Diagnosis: the paper's plan at {base['sparsity']:.0%}, one layer's removed part restored at a time",
            "",
            f"KL per task (after that task's first {base.get('kl_prompts', 40)} dev prompts) and BoolQ's P(yes); the "
            "first row is the plan itself. Lower KL after restoring a layer means that layer's removal cost that "
            "task.",
            "",
            "| restored | parameters | KL (all) | " + " | ".join(tasks) + " | P(yes) |",
            "|---|---|---|" + "---|" * len(tasks) + "---|",
        ]
        for r in diagnosis:
            what = "nothing" if r["name"] == "diagnose_base" else f"{r['part']} of layer {r['layer']}"
            cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in tasks)
            lines.append(
                f"| {what} | {r.get('restored_parameters', 0):,} | {r['kl_from_dense']:.3f} | {cells} | "
                f"{r['boolq_p_yes']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _diagnose(dense, tokenizer, scores, args, context, report, add, done):
    """The paper's plan at `--diagnose`, with one layer's removed MLP width (or heads) restored at a time."""
    sparsity = args.diagnose
    base = build_plan(scores, dense.config, sparsity=sparsity, **PAPER)
    if ("diagnose_base", sparsity) not in done:
        start = time.perf_counter()
        row = {
            "name": "diagnose_base",
            "sparsity": sparsity,
            **_prompt_measures(build_pruned_model(dense, base), tokenizer, context),
        }
        add({**row, "seconds": time.perf_counter() - start})
    full = list(range(base.intermediate_size))
    for layer in range(base.num_hidden_layers):
        for part in ("mlp", "attn"):
            name = f"restore_{part}_{layer}"
            if (name, sparsity) in done:
                continue
            plan = build_plan(scores, dense.config, sparsity=sparsity, **PAPER)
            if part == "mlp":
                if len(plan.mlp_kept_indices[layer]) == base.intermediate_size:
                    continue
                plan.mlp_kept_indices[layer] = full
            else:
                if len(plan.head_kept_indices[layer]) == base.num_attention_heads:
                    continue
                plan.head_kept_indices[layer] = list(range(base.num_attention_heads))
                plan.kv_head_kept_indices[layer] = list(range(base.num_key_value_heads))
            model = build_pruned_model(dense, plan)
            row = {"name": name, "sparsity": sparsity, "layer": layer, "part": part, "kl_prompts": args.kl_prompts}
            row["restored_parameters"] = plan.block_parameters()[0] - base.block_parameters()[0]
            start = time.perf_counter()
            row.update(_prompt_measures(model, tokenizer, context))
            row["seconds"] = time.perf_counter() - start
            add(row)


if __name__ == "__main__":
    raise SystemExit(main())
