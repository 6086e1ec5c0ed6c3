"""Your own data, end to end through the command line: prune on it, then measure what the pruned model kept of it.

    python benchmarks/own_data.py --data-dir ../shared/data

A user's task that is none of the paper's seven stands in here as PIQA (physical commonsense; in no calibration mix
of the benchmarks): its dev-half examples (goal + gold solution, as a calibration text reads) are "your data", its
test-half examples the held-out texts, so the two never overlap. The real Gemma 3 270M is pruned at 20% by the
default recipe three ways, each with `diet-hf prune` in a process of its own:

- `paper seven`: the default calibration (the paper's seven tasks, 100 examples each), as the main job prunes;
- `own data`: `--tasks piqa_own=FILE` alone (the first `--own-samples` dev-half texts);
- `seven + own`: both.

Then (`--heal-tokens` > 0) the `seven + own` model is healed on your texts: `diet-hf heal MODEL --teacher DENSE
--data piqa_train=FILE wikitext2 --eval-texts piqa_heldout=FILE --max-tokens N`, where the training texts are every
dev-half PIQA example (the calibration texts among them; never a test-half one), beside WikiText-2 validation as the
README suggests; `heal` itself scores the held-out texts on the teacher, the unhealed and the healed model.

Each model is then scored by `diet-hf eval MODEL --reference DENSE --texts piqa_heldout=FILE --tasks <the seven> piqa
--half test --limit N` (one process each): the held-out texts' perplexity ratio to dense with its paired-bootstrap
interval, PIQA accuracy and the seven-task average with their paired intervals. Rows are saved as they finish; the
pruned checkpoints and text files live in `--work-dir` (the shared data is never copied into the repository).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from diet_hf.real_model import load_gemma3_270m
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, get_task

VARIANTS = {
    "paper seven": list(PAPER_TASKS),
    "own data": ["piqa_own={own}"],
    "seven + own": [*PAPER_TASKS, "piqa_own={own}"],
}


HEALED = "seven + own, healed on your texts"


def write_texts(path: Path, half: str, count: int | None, data_dir: str) -> int:
    task = get_task("piqa")
    docs = evaluation_examples(task, half=half, limit=count, data_dir=data_dir)
    path.write_text("".join(json.dumps({"text": task.calibration_text(doc)}) + "\n" for doc in docs))
    return len(docs)


def run(command: list[str], log: Path) -> float:
    start = time.time()
    with log.open("w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    return time.time() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--own-samples", type=int, default=100, help="dev-half PIQA texts the pruning reads")
    parser.add_argument("--limit", type=int, default=200, help="test-half examples per task, and held-out texts")
    parser.add_argument("--heal-tokens", type=int, default=90_000, help="healing tokens (0: no healed row)")
    parser.add_argument("--work-dir", default="/tmp/diet_own_data")
    parser.add_argument("--output", default="benchmarks/results/own_data")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dense, _, dense_dir = load_gemma3_270m()  # converted and cached once; the commands read it from its directory
    del dense
    cli = str(Path(sys.executable).with_name("diet-hf"))
    own, heldout, train = work / "piqa_own.jsonl", work / "piqa_heldout.jsonl", work / "piqa_train.jsonl"
    counts = {
        "own": write_texts(own, "dev", args.own_samples, args.data_dir),
        "heldout": write_texts(heldout, "test", args.limit, args.data_dir),
        "train": write_texts(train, "dev", None, args.data_dir),
    }
    output = Path(args.output)
    report = json.loads(output.with_suffix(".json").read_text()) if output.with_suffix(".json").exists() else {}
    report.update(
        {
            "command": " ".join(["python", *sys.argv]),
            "sparsity": args.sparsity,
            "texts": counts,
            "rows": report.get("rows", {}),
        }
    )
    for name, tasks in VARIANTS.items():
        if name in report["rows"]:
            continue
        slug = name.replace(" ", "_").replace("+", "plus")
        model_dir = work / slug
        words = [t.format(own=own) for t in tasks]
        prune = [cli, "prune", str(dense_dir), "--sparsity", str(args.sparsity), "--output", str(model_dir)]
        prune_s = run([*prune, "--tasks", *words, "--data-dir", args.data_dir], work / f"{slug}.prune.log")
        report["rows"][name] = {
            "calibration": words,
            "prune_seconds": round(prune_s),
            **score(cli, model_dir, dense_dir, heldout, args, work / slug),
        }
        print(name, json.dumps(report["rows"][name]["heldout_ratio"]), flush=True)
        _write(output, report)
    if args.heal_tokens and HEALED not in report["rows"]:
        healed_dir = work / "seven_plus_own_healed"
        heal = [cli, "heal", str(work / "seven_plus_own"), "--teacher", str(dense_dir), "--output", str(healed_dir)]
        heal += ["--data", f"piqa_train={train}", "wikitext2", "--data-dir", args.data_dir]
        heal += ["--eval-texts", f"piqa_heldout={heldout}", "--max-tokens", str(args.heal_tokens)]
        heal_s = run(heal, work / "seven_plus_own_healed.heal.log")
        healing = json.loads((healed_dir / "config.json").read_text())["pruning"]["healing"]
        report["rows"][HEALED] = {
            "calibration": report["rows"]["seven + own"]["calibration"],
            "prune_seconds": report["rows"]["seven + own"]["prune_seconds"],
            "heal": {
                "data": healing["data"],
                "tokens_seen": healing["tokens_seen"],
                "steps": healing["steps"],
                "train_seconds": healing["train_seconds"],
                "heal_seconds": round(heal_s),
                "bf16": healing["options"]["bf16"],
                "held_out_texts": healing["held_out_texts"],
            },
            **score(cli, healed_dir, dense_dir, heldout, args, work / "seven_plus_own_healed"),
        }
        print(HEALED, json.dumps(report["rows"][HEALED]["heal"]["held_out_texts"]), flush=True)
        _write(output, report)
    return 0


def score(cli: str, model_dir: Path, dense_dir: Path, heldout: Path, args, stem: Path) -> dict:
    """`diet-hf eval` of `model_dir` against the dense model: the held-out texts, PIQA and the seven tasks."""
    result = stem.with_suffix(".json")
    evaluate = [cli, "eval", str(model_dir), "--reference", str(dense_dir), "--texts", f"piqa_heldout={heldout}"]
    evaluate += ["--tasks", *PAPER_TASKS, "piqa", "--half", "test", "--limit", str(args.limit)]
    eval_s = run([*evaluate, "--data-dir", args.data_dir, "--output", str(result)], stem.with_suffix(".eval.log"))
    scored = json.loads(result.read_text())
    return {
        "eval_seconds": round(eval_s),
        "heldout_perplexity": scored["texts"]["piqa_heldout"]["perplexity"],
        "dense_heldout_perplexity": scored["reference_texts"]["piqa_heldout"]["perplexity"],
        "heldout_ratio": scored["texts_ratio"]["piqa_heldout"],
        "piqa": scored["results"]["piqa"]["acc_norm"],
        "dense_piqa": scored["reference"]["results"]["piqa"]["acc_norm"],
        "piqa_difference": scored["difference"]["piqa"],
        "seven_task_average": sum(scored["results"][t][scored["results"][t]["headline_metric"]] for t in PAPER_TASKS)
        / len(PAPER_TASKS),
        "per_task_difference": {t: scored["difference"][t] for t in PAPER_TASKS},
    }


def _write(output: Path, report: dict) -> None:
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Your own data, end to end (Gemma 3 270M, 20%, the default recipe; PIQA standing in for your task)",
        "",
        f"Command: `{report['command']}`. Calibration texts: the first {report['texts']['own']} dev-half PIQA "
        f"examples; held-out texts: the first {report['texts']['heldout']} test-half ones (goal + gold solution). "
        "Scored by `diet-hf eval --reference DENSE --texts ... --half test`; perplexity ratio and accuracy "
        "differences with 95% paired-bootstrap intervals (texts / examples).",
        "",
        "| calibration | held-out text perplexity (dense) | ratio to dense [95% CI] | PIQA acc_norm (dense) | Δ PIQA "
        "[95% CI] | seven-task average | `diet-hf prune` s (load, profile, prune, save) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["rows"].items():
        ratio, piqa = r["heldout_ratio"], r["piqa_difference"]
        lines.append(
            f"| {name} | {r['heldout_perplexity']:.2f} ({r['dense_heldout_perplexity']:.2f}) | "
            f"{ratio['ratio']:.3f} [{ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}] | {r['piqa']:.3f} "
            f"({r['dense_piqa']:.3f}) | {piqa['difference']:+.3f} [{piqa['ci95'][0]:+.3f}, {piqa['ci95'][1]:+.3f}] | "
            f"{r['seven_task_average']:.3f} | {r['prune_seconds']} |"
        )
    healed = report["rows"].get(HEALED)
    if healed:
        heal, texts = healed["heal"], healed["heal"]["held_out_texts"]["piqa_heldout"]
        ratio = texts["healed_over_unhealed"]
        lines += [
            "",
            f"Healing (`{HEALED}`): `diet-hf heal` on all {report['texts']['train']} dev-half PIQA texts beside "
            f"WikiText-2 validation (equal shares until the PIQA rows ran out), {heal['tokens_seen']:,} tokens in "
            f"{heal['steps']} steps ({heal['train_seconds']:.0f} s of training, {heal['heal_seconds']} s in all with "
            f"the teacher's pass and the held-out scoring; bfloat16 autocast {'on' if heal['bf16'] else 'off'}). "
            f"Its own held-out scoring: teacher {texts['teacher']:.2f}, unhealed {texts['unhealed']:.2f}, healed "
            f"{texts['healed']:.2f}; healed / unhealed {ratio['ratio']:.3f} [{ratio['ci95'][0]:.3f}, "
            f"{ratio['ci95'][1]:.3f}], {texts['gap_closed']:.0%} of the log-perplexity gap to the teacher closed.",
        ]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
