"""Time and peak memory of diet-hf's evaluator across batch sizes, on the real Gemma 3 270M (dense, float32).

    python benchmarks/evaluator_memory.py --data-dir ../shared/data --limit 40 \
        --output benchmarks/results/evaluator_memory

Each batch size runs in its own process on the same examples (the first `limit` of every task). Memory is the peak
resident set size of that process (max RSS), and the same minus the resident size once the model is loaded and every
weight has been read: what the evaluation adds on top of the model.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

from _side import print_result, provenance, run_side, write_report

TASKS = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa"]


def _rss_gb() -> float:
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return kib / 2**20


def side(model_dir: str, data_dir: str, limit: int, batch_size: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diet_hf.evaluation import evaluate

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():  # read every weight once, so that memory-mapped weights count as loaded
        for param in model.parameters():
            param.sum()
    loaded = _rss_gb()
    start = time.perf_counter()
    out = evaluate(model, tokenizer, TASKS, limit=limit, batch_size=batch_size, data_dir=data_dir)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    model_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    return {
        "batch_size": batch_size,
        "seconds": seconds,
        "peak_rss_gb": peak,
        "rss_after_load_gb": loaded,
        "peak_above_loaded_gb": peak - loaded,
        "model_gb": model_gb,
        "average": out["average"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model-dir", default=None, help="safetensors Gemma 3 270M (default: the diet-hf cache)")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    parser.add_argument("--output", default="benchmarks/results/evaluator_memory")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        from diet_hf.real_model import load_gemma3_270m

        args.model_dir = str(load_gemma3_270m()[2])
    rows = []
    for batch_size in args.batch_sizes:
        command = [sys.executable, __file__, "--side", args.model_dir, str(Path(args.data_dir).resolve())]
        row = run_side([*command, str(args.limit), str(batch_size)])
        if row is None:
            return 1
        rows.append(row)
        print(rows[-1], flush=True)
    report = {**provenance(), "limit": args.limit, "rows": rows}
    lines = [
        "# diet-hf evaluator: time and peak memory by batch size (Gemma 3 270M, dense, float32)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, {report['processor_count']} CPUs. First {args.limit} examples of each of "
        f"{len(TASKS)} tasks; each batch size in its own process.",
        "",
        "| batch size | wall time (s) | peak RSS (GB) | RSS after loading (GB) | peak above loaded (GB) | average |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batch_size']} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {r['rss_after_load_gb']:.2f} | "
        f"{r['peak_above_loaded_gb']:.2f} | {r['average']:.4f} |"
        for r in rows
    ]
    lines += ["", f"Model parameters: {rows[0]['model_gb']:.2f} GB."]
    write_report(args.output, report, lines)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        model_dir, data_dir, limit, batch_size = sys.argv[2:6]
        print_result(side(model_dir, data_dir, int(limit), int(batch_size)))
    else:
        sys.exit(main())
