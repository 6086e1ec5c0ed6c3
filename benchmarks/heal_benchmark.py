"""Healing on the real Gemma 3 270M: DIET's default at 20% and 40%, before and after distillation from the dense model.

    python benchmarks/heal_benchmark.py --data-dir ../shared/data --output benchmarks/results/healing

Per model, on the test half of every task (as `run_benchmark.py` scores it): the seven-task average with its standard
error, per task, PIQA, WikiText-2 test perplexity (first windows), KL from the dense model after evaluation prompts;
for each healing: tokens seen, wall time (teacher pass + training), peak resident memory during healing, the
validation-KL guard's history, and a paired bootstrap of the seven-task average healed vs unhealed. The control heals
the dense model the same way on the same data with the next-token loss (distilling the dense model from itself is
the identity) and the guard off: does the data alone move the scores? Rows are saved after every model (`--resume`).
"""

import argparse
import json
import os
import platform
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_benchmark as rb  # noqa: E402
from _side import interval  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf.evaluation import next_token_logprobs  # noqa: E402
from diet_hf.healing import LORA_MODULES, HealingConfig, heal, healing_texts  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.recipes import DEFAULT_RECIPE  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

# HealingConfig's on/off options this script passes on, with their --flag / --no-flag help
SWITCHES = {
    "bos_rows": "start every packed healing sequence with BOS",
    "separate_documents": "every document of a packed sequence attends only to itself, from its BOS at position 0",
    "keep_bos_state": "LoRA inputs kept orthogonal to BOS's",
}
HEAL_SOURCES = ["wikitext2", "boolq", "rte", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def mix_sources(texts: dict[str, list[str]], mix: str) -> dict[str, list[str]]:
    """The healing data per source for `mix`: `"per_source"` as given (equal shares each), `"half_wikitext"`
    WikiText-2 one half and the tasks' train texts together the other, `"wikitext"` WikiText-2 alone."""
    if mix == "per_source":
        return texts
    if mix == "wikitext":
        return {"wikitext2": texts["wikitext2"]}
    tasks = [text for source, part in texts.items() if source != "wikitext2" for text in part]
    return {"wikitext2": texts["wikitext2"], "tasks": tasks}


def _peak_rss_reset() -> None:
    """Resets the kernel's peak-RSS counter of this process (Linux `clear_refs` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_gib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def _measure(name, model, tokenizer, args, context, extra=None) -> dict:
    row = {"model": name, **rb.quality(model, tokenizer, args, context), **(extra or {})}
    print(f"{name}: avg {row['average_paper_tasks']:.4f} ppl {row['perplexity']:.1f} KL {row['kl_from_dense']:.3f}")
    return row


def _heal(name, student, teacher, tokenizer, data, config, args):
    _peak_rss_reset()
    start = time.perf_counter()
    healed = heal(
        student,
        teacher,
        tokenizer,
        data["texts"],
        config=config,
        work_dir=Path(args.work_dir) / name,
        resume=(Path(args.work_dir) / name).exists(),
        data_record=data["record"],
    )
    record = dict(healed.config.pruning["healing"])
    record["wall_seconds_with_teacher_pass"] = time.perf_counter() - start
    record["peak_rss_gib"] = _peak_rss_gib()
    return healed, record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--limit", type=int, default=150, help="test-half examples per task")
    parser.add_argument("--half", default="test")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1200, 1200], help="seconds of training each")
    parser.add_argument(
        "--max-tokens",
        type=int,
        nargs="+",
        default=[110_000],
        help="training tokens per healing (the teacher's pass covers them): one value, or one per sparsity and one "
        "for the control; chosen so that the teacher's pass and training together fit the budget",
    )
    parser.add_argument("--control-budget", type=float, default=600, help="seconds; 0 skips the dense control")
    parser.add_argument("--learning-rate", type=float, default=HealingConfig.learning_rate)
    parser.add_argument("--position-stride", type=int, default=HealingConfig.position_stride)
    parser.add_argument(
        "--top-k", type=int, default=HealingConfig.top_k, help="teacher log-probs kept per scored position"
    )
    parser.add_argument(
        "--seed", type=int, default=HealingConfig.seed, help="healing's seed: data order, packing, LoRA's start"
    )
    for name, text in SWITCHES.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            action=argparse.BooleanOptionalAction,
            default=getattr(HealingConfig, name),
            help=f"{text} (default: HealingConfig's)",
        )
    parser.add_argument(
        "--lora-modules",
        choices=LORA_MODULES,
        default=HealingConfig.lora_modules,
        help="projections given LoRA adapters",
    )
    parser.add_argument("--sources", nargs="+", default=HEAL_SOURCES)
    parser.add_argument(
        "--mix",
        choices=["per_source", "half_wikitext", "wikitext"],
        default="per_source",
        help="equal shares per source, WikiText-2 one half and the tasks' train texts together the other, or "
        "WikiText-2 alone",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch size")
    parser.add_argument("--ppl-windows", type=int, default=16)
    parser.add_argument("--ppl-length", type=int, default=512)
    parser.add_argument("--kl-prompts", type=int, default=25)
    parser.add_argument("--work-dir", default="/tmp/diet_heal_benchmark")
    parser.add_argument(
        "--healed-suffix",
        default="",
        help="appended to the healed rows' names: another budget's rows beside the first (with --resume)",
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--output", default="benchmarks/results/healing")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    output = Path(args.output).with_suffix(".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in ("torch", "transformers", "peft", "diet-hf")},
        "limit": args.limit,
        "half": args.half,
        "default_recipe": DEFAULT_RECIPE,
        "default_label": rb.DEFAULT_LABEL,
        "ppl": {"windows": args.ppl_windows, "length": args.ppl_length},
        "rows": [],
    }
    report["commands"] = [report.pop("command")]
    if args.resume and output.is_file():
        previous = json.loads(output.read_text())
        report["rows"] = previous["rows"]
        previous_label = previous.get("default_label", previous.get("default_recipe"))
        # rows of an earlier default: kept under the name of the ablation with its options (`diet_round1@`: before
        # the widths were rounded; `diet_no_reconstruct@`: before the reconstruction); DIET is measured again
        for row in report["rows"]:
            if row["model"].startswith("diet@"):
                row["model"] = rb.retired_name("diet", previous_label) + row["model"].removeprefix("diet")
        report["commands"] = previous.get("commands", [previous.get("command")]) + report["commands"]
    done = {r["model"] for r in report["rows"]}

    def save():
        output.write_text(json.dumps(report, indent=1) + "\n")
        output.with_suffix(".md").write_text(render(report))

    dense, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(PAPER_TASKS, num_samples=100, data_dir=args.data_dir, channel_stats=True, disable_progress=True)
    excluded = pruner.scores.provenance["excluded_eval_ids"]
    context = {"excluded": excluded, "kl_prompts": rb._kl_prompts(args, excluded)}
    context["dense_logprobs"] = next_token_logprobs(dense, tokenizer, context["kl_prompts"])
    texts, splits = {}, {}
    for source in args.sources:
        texts[source], split = healing_texts([source], data_dir=args.data_dir)
        splits[source] = split[source]
    texts = mix_sources(texts, args.mix)
    data = {"texts": texts, "record": {"sources": list(splits), "splits": splits, "mix": args.mix}}
    if "dense" not in done:
        report["rows"].append(_measure("dense", dense, tokenizer, args, context))
        save()
    tokens = args.max_tokens * (len(args.sparsities) + 1) if len(args.max_tokens) == 1 else args.max_tokens
    recipe = {
        "learning_rate": args.learning_rate,
        "position_stride": args.position_stride,
        "top_k": args.top_k,
        "seed": args.seed,
        "lora_modules": args.lora_modules,
        **{name: getattr(args, name) for name in SWITCHES},
    }
    for sparsity, budget, max_tokens in zip(args.sparsities, args.budgets, tokens):
        tag = f"diet@{sparsity:g}"
        healed_tag = f"{tag}+healed{args.healed_suffix}"
        if tag not in done or healed_tag not in done:
            pruned = pruner.prune(sparsity=sparsity)
        if tag not in done:
            report["rows"].append(_measure(tag, pruned, tokenizer, args, context, {"sparsity": sparsity}))
            save()
        if healed_tag not in done:
            config = HealingConfig(max_tokens=max_tokens, max_time=budget, **recipe)
            healed, record = _heal(tag + args.healed_suffix, pruned, dense, tokenizer, data, config, args)
            extra = {"sparsity": sparsity, "healing": record}
            report["rows"].append(_measure(healed_tag, healed, tokenizer, args, context, extra))
            save()
    if args.control_budget and "dense+healed (control)" not in done:
        student, _, _ = load_gemma3_270m()
        config = HealingConfig(
            max_tokens=tokens[len(args.sparsities)], max_time=args.control_budget, kd_weight=0.0, guard=False, **recipe
        )
        healed, record = _heal("control", student, dense, tokenizer, data, config, args)
        report["rows"].append(
            _measure("dense+healed (control)", healed, tokenizer, args, context, {"sparsity": 0.0, "healing": record})
        )
        save()
    save()
    return 0


def _objective(options: dict) -> str:
    if options.get("kd_weight", 1.0) == 0:
        return "next-token loss"
    return f"top-{options['top_k']} KL" if options.get("top_k") else "full KL"


def render(report: dict) -> str:
    rows = {r["model"]: r for r in report["rows"]}
    lines = [
        "# Healing DIET's default by distillation from the dense model (Gemma 3 270M)",
        "",
        "Commands (in order; each later one resumed the rows of the earlier ones): "
        + "; ".join(f"`{c}`" for c in report.get("commands", [report.get("command")])),
        "",
        f"Test half (`diet_hf.tasks.split_half`), first {report['limit']} examples per task; calibration 7 x 100; "
        f"recipe `{report.get('default_label', report['default_recipe'])}` (`diet_round1@`: the default before its "
        "widths were rounded to multiples of 64; `diet_no_reconstruct@`: before the least-squares reconstruction; "
        "`diet@<label>@`: an earlier default by its label, `calibration_answer` absent from it meaning gold answers); "
        "perplexity: WikiText-2 test, first "
        f"{report['ppl']['windows']} windows "
        f"of {report['ppl']['length']} tokens; KL: mean KL(dense || model) after evaluation prompts. "
        f"{report['cpus']} CPUs, {report['torch_threads']} torch threads; versions {report['versions']}.",
        "",
        "| model | avg ± s.e. | signal | BoolQ | RTE | HellaSwag | WinoGrande | ARC-e | ARC-c | OBQA | PIQA | ppl "
        "| KL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cells = [f"{rb._headline(r, t):.3f}" for t in [*PAPER_TASKS, "piqa"]]
        lines.append(
            f"| {name} | {r['average_paper_tasks']:.3f} ± {r['average_stderr']:.3f} | "
            f"{r['average_signal_tasks']:.3f} | "
            + " | ".join(cells)
            + f" | {r['perplexity']:.1f} | {r['kl_from_dense']:.3f} |"
        )
    lines += ["", "## Healing runs", ""]
    lines += [
        "| model | lr, position stride, batch, precision, adapters, objective | tokens seen | steps | train s "
        "| total s (with teacher pass) | peak RSS GiB "
        "| validation KL before → after | guard | Δ avg vs unhealed [95% CI] | gap recovered: avg / ppl |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dense = rows.get("dense")
    for name, r in rows.items():
        h = r.get("healing")
        if not h:
            continue
        base = rows.get(name.split("+healed")[0]) if "(control)" not in name else dense
        delta = rb.paired_difference(r, base) if base else None
        recovered = "–"
        if base and dense and "(control)" not in name:
            gap_avg = dense["average_paper_tasks"] - base["average_paper_tasks"]
            gap_ppl = base["perplexity"] - dense["perplexity"]
            avg_part = (
                (r["average_paper_tasks"] - base["average_paper_tasks"]) / gap_avg if gap_avg > 0 else float("nan")
            )
            ppl_part = (base["perplexity"] - r["perplexity"]) / gap_ppl if gap_ppl > 0 else float("nan")
            recovered = f"{avg_part:.0%} / {ppl_part:.0%}"
        guard = (
            "off"
            if not h["options"].get("guard", True)
            else ("rolled back" if h["rolled_back"] else f"best step {h['best_step']}")
        )
        ci = interval(delta)
        peak = "–" if h.get("peak_rss_gib") is None else f"{h['peak_rss_gib']:.2f}"
        options = h["options"]
        lines.append(
            f"| {name} | {options['learning_rate']:g}, {options.get('position_stride', 1)}, "
            f"{options['batch_size']} x {options['gradient_accumulation_steps']}, "
            f"{'bfloat16' if options.get('bf16') else 'float32'}, "
            # rows from before `lora_modules` existed had LoRA on every projection
            f"{'LoRA ' + options.get('lora_modules', 'all') if options.get('lora', True) else 'full'}"
            f"{', BOS states kept' if options.get('keep_bos_state') else ''}"
            f"{', documents apart' if options.get('separate_documents') else ''}"
            f"{', ' + _objective(options)} | "
            f"{h['tokens_seen']:,} | {h['steps']} | {h['train_seconds']:.0f} | "
            f"{h['wall_seconds_with_teacher_pass']:.0f} | {peak} | {h['validation_kl_before']:.4f} → "
            f"{h['validation_kl_after']:.4f} | {guard} | {ci} | {recovered} |"
        )
    mixes = {name: r["healing"]["data"].get("mix", "per_source") for name, r in rows.items() if r.get("healing")}
    lines += [
        "",
        "Data mix per healing: "
        + ", ".join(f"{name}: {mix}" for name, mix in mixes.items())
        + " (per_source: equal shares per source; half_wikitext: WikiText-2 one half, the tasks' train texts together "
        "the other; wikitext: WikiText-2 alone).",
        "",
        "Data: "
        + ", ".join(
            f"{k} ({v})"
            for k, v in (
                next((r["healing"]["data"]["splits"] for r in rows.values() if r.get("healing")), {}) or {}
            ).items()
        )
        + " — packed 256-token sequences; no evaluation example is trained on.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
