"""Checks diet-hf's evaluator against lm-eval-harness 0.4.13 itself, on the same local data and the same model.

    pip install "lm-eval==0.4.13"
    python benchmarks/lm_eval_agreement.py --data-dir ../shared/data --limit 100 \
        --output benchmarks/results/lm_eval_agreement

For every task, lm-eval runs from task YAMLs that point at the local JSONL files (prompts as in lm-eval's own
YAMLs; HellaSwag and WinoGrande use lm-eval's own preprocessing functions), and every example's chosen answer under
`acc` and `acc_norm` is compared with ours. Each side runs in its own process, which reports wall time and peak
memory (max RSS), so the cost comparison is side by side on the same examples. `--model-dir` may be a checkpoint
pruned by diet-hf: lm-eval's side cannot import diet-hf and loads it with `trust_remote_code=True`, as a user would.
`--apply-chat-template` compares the scoring of an instruction-tuned model: lm-eval's `apply_chat_template=True`
against `evaluate(apply_chat_template=True)`, with the chat template of the model directory's tokenizer.
"""

import argparse
import json
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _side import print_result, provenance, run_side  # noqa: E402

TASKS = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa"]

# Task name -> (split lm-eval scores, doc_to_text, doc_to_target, doc_to_choice); local schema of shared/data.
YAMLS = {
    "boolq": ("validation", '"{{passage}}\\nQuestion: {{question}}?\\nAnswer:"', "label", '["no", "yes"]'),
    "rte": (
        "validation",
        '"{{premise}}\\nQuestion: {{hypothesis}} True or False?\\nAnswer:"',
        "label",
        '["True", "False"]',
    ),
    "hellaswag": ("validation", "!function utils.hellaswag_text", "label", "!function utils.hellaswag_choices"),
    "winogrande": (
        "validation",
        "!function utils.winogrande_text",
        "!function utils.winogrande_target",
        "!function utils.winogrande_choices",
    ),
    "arc_easy": ("test", '"Question: {{question}}\\nAnswer:"', "label", '"{{choices.text}}"'),
    "arc_challenge": ("test", '"Question: {{question}}\\nAnswer:"', "label", '"{{choices.text}}"'),
    "openbookqa": ("test", "question_stem", "label", '"{{choices.text}}"'),
    "piqa": ("validation", '"Question: {{goal}}\\nAnswer:"', "label", '"{{[sol1, sol2]}}"'),
}

UTILS = textwrap.dedent(
    """
    # lm-eval's own preprocessing, applied to the local normalized rows.
    from lm_eval.tasks.hellaswag.utils import preprocess
    from lm_eval.tasks.winogrande import preprocess_winogrande as wg

    def hellaswag_text(doc):
        return preprocess(doc["query"])

    def hellaswag_choices(doc):
        return [preprocess(e) for e in doc["endings"]]

    winogrande_text, winogrande_target, winogrande_choices = wg.doc_to_text, wg.doc_to_target, wg.doc_to_choice
    """
)


def write_task_dir(directory: Path, data_dir: Path) -> None:
    (directory / "utils.py").write_text(UTILS)
    for task, (split, text, target, choice) in YAMLS.items():
        (directory / f"local_{task}.yaml").write_text(
            f"task: local_{task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    {split}: {data_dir / task / f'{split}.jsonl'}\noutput_type: multiple_choice\n"
            f"{'test_split' if split == 'test' else 'validation_split'}: {split}\n"
            f"doc_to_text: {text}\ndoc_to_target: {target}\ndoc_to_choice: {choice}\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        )


def run_lm_eval(model_dir: str, task_dir: str, limit: int, batch_size: int, chat: bool = False) -> dict:
    # As a user of lm-eval without diet-hf: a pruned checkpoint loads through its own remote code
    sys.modules["diet_hf"] = None
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # Scoring time alone: lm-eval's `loglikelihood` (all the requests of all tasks), without loading and set-up.
    scoring = {"seconds": 0.0}
    loglikelihood = HFLM.loglikelihood

    def timed(self, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return loglikelihood(self, *args, **kwargs)
        finally:
            scoring["seconds"] += time.perf_counter() - begin

    HFLM.loglikelihood = timed
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32,device=cpu,trust_remote_code=True",
        tasks=[f"local_{t}" for t in TASKS],
        task_manager=TaskManager(include_path=task_dir),
        limit=limit,
        batch_size=batch_size,
        log_samples=True,
        apply_chat_template=chat,
    )
    seconds = time.perf_counter() - start
    predictions = {}
    for task in TASKS:
        rows = []
        for sample in out["samples"][f"local_{task}"]:
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            choices = sample["arguments"]
            lengths = [len(arg[1].lstrip(" ")) if task != "winogrande" else 1 for arg in choices]
            # lm-eval 0.4.13 acc_norm divides by the length of the choice string (without the target delimiter)
            rows.append(
                {
                    "id": str(sample["doc"]["id"]),
                    "acc": max(range(len(lls)), key=lambda i: (lls[i], -i)),
                    "acc_norm": max(range(len(lls)), key=lambda i: (lls[i] / lengths[i], -i)),
                    "lm_eval_acc": sample["acc"],
                    "lm_eval_acc_norm": sample.get("acc_norm"),
                }
            )
        predictions[task] = rows
    results = {t: out["results"][f"local_{t}"] for t in TASKS}
    return {"seconds": seconds, "scoring_seconds": scoring["seconds"], "predictions": predictions, "results": results}


def run_ours(model_dir: str, data_dir: str, limit: int, batch_size: int, chat: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diet_hf.evaluation import evaluate

    start = time.perf_counter()  # end to end, model loading included, as lm-eval's `simple_evaluate` is timed
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    begin = time.perf_counter()  # scoring: reading the data, building and scoring the requests
    out = evaluate(
        model,
        tokenizer,
        TASKS,
        limit=limit,
        batch_size=batch_size,
        data_dir=data_dir,
        return_predictions=True,
        apply_chat_template=chat,
    )
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "scoring_seconds": end - begin,
        "predictions": out["predictions"],
        "results": out["results"],
    }


def side(argv) -> None:
    """Runs one side in this process and prints its result with the peak memory."""
    which, model_dir, data_dir, task_dir, limit, batch_size, chat = argv
    chat = chat == "chat"
    result = (
        run_lm_eval(model_dir, task_dir, int(limit), int(batch_size), chat)
        if which == "lm_eval"
        else run_ours(model_dir, data_dir, int(limit), int(batch_size), chat)
    )
    result["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print_result(result)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--model-dir",
        default=None,
        help="a Gemma 3 270M checkpoint, dense or pruned by diet-hf (default: the dense model in the diet-hf cache)",
    )
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8, help="both sides use this batch size")
    parser.add_argument("--output", default="benchmarks/results/lm_eval_agreement")
    parser.add_argument(
        "--apply-chat-template",
        action="store_true",
        help="both sides score each prompt in the model directory's chat template (lm-eval's apply_chat_template)",
    )
    args = parser.parse_args(argv)
    if args.model_dir is None:
        from diet_hf.real_model import load_gemma3_270m

        args.model_dir = str(load_gemma3_270m()[2])
    data_dir = Path(args.data_dir).resolve()
    sides = {}
    with tempfile.TemporaryDirectory() as task_dir:
        write_task_dir(Path(task_dir), data_dir)
        for which in ("ours", "lm_eval"):
            command = [
                sys.executable,
                __file__,
                "--side",
                which,
                args.model_dir,
                str(data_dir),
                task_dir,
                str(args.limit),
                str(args.batch_size),
                "chat" if args.apply_chat_template else "plain",
            ]
            sides[which] = run_side(command)
            if sides[which] is None:
                return 1
    report = {
        **provenance(),
        "apply_chat_template": args.apply_chat_template,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "versions": _versions(),
        "tasks": {},
    }
    all_agree = True
    for task in TASKS:
        ours = {r["id"]: r for r in sides["ours"]["predictions"][task]}
        theirs = {r["id"]: r for r in sides["lm_eval"]["predictions"][task]}
        metrics = ["acc"] + ([] if task == "winogrande" else ["acc_norm"])
        same_ids = sorted(ours) == sorted(theirs)
        disagreements = {m: [i for i in theirs if i in ours and ours[i][m] != theirs[i][m]] for m in metrics}
        # the choices read back from lm-eval's log-likelihoods must reproduce lm-eval's own per-example scores
        golds = {i: ours[i]["label"] for i in ours}
        consistent = all(
            float(theirs[i][m] == golds[i]) == theirs[i][f"lm_eval_{m}"] for i in theirs if i in golds for m in metrics
        )
        all_agree &= same_ids and consistent and not any(disagreements.values())
        report["tasks"][task] = {
            "examples": len(theirs),
            "same_examples": same_ids,
            "lm_eval_choices_reproduce_its_scores": consistent,
            "disagreements": disagreements,
            "ours": {m: sides["ours"]["results"][task][m] for m in metrics},
            "lm_eval": {m: sides["lm_eval"]["results"][task][f"{m},none"] for m in metrics},
        }
    for which in ("ours", "lm_eval"):
        report[which] = {key: sides[which][key] for key in ("seconds", "scoring_seconds", "max_rss_gb")}
    report["speedup"] = sides["lm_eval"]["seconds"] / sides["ours"]["seconds"]
    report["scoring_speedup"] = sides["lm_eval"]["scoring_seconds"] / sides["ours"]["scoring_seconds"]
    report["all_choices_agree"] = all_agree
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    output.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))
    return 0 if all_agree else 2


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "lm_eval", "diet-hf")}


def _markdown(report: dict) -> str:
    lines = [
        "# diet-hf evaluator vs lm-eval-harness 0.4.13 (Gemma 3 270M, dense, float32)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, {report['processor_count']} CPUs; versions: {report['versions']}  ",
        f"First {report['limit']} examples of every task, batch size {report['batch_size']} on both sides.",
        "",
        "| task | examples | acc (ours / lm-eval) | acc_norm (ours / lm-eval) | differing choices |",
        "|---|---|---|---|---|",
    ]
    for task, row in report["tasks"].items():
        norm = (
            f"{row['ours']['acc_norm']:.3f} / {row['lm_eval']['acc_norm']:.3f}" if "acc_norm" in row["ours"] else "–"
        )
        differing = sum(len(v) for v in row["disagreements"].values())
        lines.append(
            f"| {task} | {row['examples']} | {row['ours']['acc']:.3f} / {row['lm_eval']['acc']:.3f} | "
            f"{norm} | {differing} |"
        )
    lines += [
        "",
        f"Every chosen answer agrees: **{report['all_choices_agree']}**",
        "",
        "| | end to end (s) | scoring only (s) | peak RSS (GB) |",
        "|---|---|---|---|",
    ]
    for which, name in (("ours", "diet-hf"), ("lm_eval", "lm-eval hf backend")):
        row = report[which]
        lines.append(f"| {name} | {row['seconds']:.0f} | {row['scoring_seconds']:.0f} | {row['max_rss_gb']:.2f} |")
    lines += [
        "",
        "End to end: from loading the model to the scores (lm-eval: `simple_evaluate`; diet-hf: `from_pretrained` + "
        "`evaluate`). Scoring only: lm-eval's `HFLM.loglikelihood` calls; diet-hf's `evaluate` (which also reads the "
        "data and builds the prompts).",
        "",
        f"Throughput ratio (lm-eval time / diet-hf time): {report['speedup']:.2f}x end to end, "
        f"{report['scoring_speedup']:.2f}x scoring only.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        side(sys.argv[2:])
        raise SystemExit(0)
    raise SystemExit(main())
