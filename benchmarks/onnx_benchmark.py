"""ONNX export of a pruned model, ONNX Runtime parity with PyTorch, and tokens/s of both, side by side.

Runs in an environment with `diet-hf[onnx]` (transformers 4.57.x; scripts/test.sh builds one as .venv-tf457):

    .venv-tf457/bin/python benchmarks/onnx_benchmark.py --model outputs/gemma-3-270m-diet-20 \
        --output benchmarks/results/onnx_gemma3_270m

The model directory is a pruned model saved by diet-hf (e.g. by `scripts/main_job.sh` or `diet-hf prune`).
Writes `<output>.json` and `<output>.md`.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from diet_hf.onnx import export_onnx

PROMPTS = [
    "The capital of France is",
    "Question: Is the sky blue on a clear day?\nAnswer:",
    "A recipe for pancakes starts with",
    "In 1969, the first humans",
]


def _speed(model, ids, new_tokens: int, repeats: int) -> dict:
    """Best-of-`repeats` prefill (one forward over `ids`, logits at every position: ONNX Runtime returns them all,
    so PyTorch does too) and greedy decode tokens/s from the first 16 tokens of `ids[0]`."""
    prefill = decode = 0.0
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            prefill = max(prefill, ids.numel() / (time.perf_counter() - start))
            start = time.perf_counter()
            model.generate(ids[:1, :16], attention_mask=torch.ones_like(ids[:1, :16]), **kwargs)
            decode = max(decode, new_tokens / (time.perf_counter() - start))
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pruned model directory saved by diet-hf")
    parser.add_argument("--onnx-dir", default=None, help="where to export (default: a temporary directory)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-note", default="", help="how the model directory was made (goes into the report)")
    parser.add_argument("--output", default="benchmarks/results/onnx_gemma3_270m")
    args = parser.parse_args(argv)
    work = Path(args.onnx_dir) if args.onnx_dir else Path(tempfile.mkdtemp(prefix="diet-onnx-")) / "onnx"
    start = time.perf_counter()
    export_onnx(args.model, work)
    export_seconds = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    torch_model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True, dtype=torch.float32)
    torch_model.eval()
    ort_model = ORTModelForCausalLM.from_pretrained(work)

    # parity: a left-padded batch of real prompts, and greedy continuations
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        expected = torch_model(**batch, position_ids=position_ids).logits[mask]
        got = ort_model(**batch).logits[mask]
    relative = ((got - expected).abs().max() / expected.abs().max()).item()
    generation = {}
    kwargs = {"max_new_tokens": args.new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            ours, theirs = torch_model.generate(**ids, **kwargs), ort_model.generate(**ids, **kwargs)
        generation[prompt] = {
            "equal": ours.tolist() == theirs.tolist(),
            "pytorch": tokenizer.decode(ours[0, ids["input_ids"].shape[1] :]),
            "onnxruntime": tokenizer.decode(theirs[0, ids["input_ids"].shape[1] :]),
        }

    ids = torch.randint(1000, 20000, (1, args.prompt_len), generator=torch.Generator().manual_seed(0))
    speed = {
        "pytorch": _speed(torch_model, ids, args.new_tokens, args.repeats),
        "onnxruntime": _speed(ort_model, ids, args.new_tokens, args.repeats),
    }
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": platform.platform(),
        "versions": {
            p: version(p) for p in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "diet-hf")
        },
        "model": args.model,
        "model_note": args.model_note,
        "pruning": getattr(torch_model.config, "pruning", None),
        "export_seconds": export_seconds,
        "onnx_bytes": sum(p.stat().st_size for p in work.glob("model.onnx*")),
        "max_relative_logit_difference": relative,
        "generation": generation,
        "speed": speed,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = _markdown(report)
    output.with_suffix(".md").write_text(text)
    print(text)
    return 0 if relative <= 1e-4 and all(g["equal"] for g in generation.values()) else 1


def _markdown(report: dict) -> str:
    pt, ort = report["speed"]["pytorch"], report["speed"]["onnxruntime"]
    lines = [
        "# ONNX Runtime vs PyTorch on the pruned Gemma 3 270M",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; versions {report['versions']}  ",
        f"Model: {report['model']} (pruning record: sparsity "
        f"{(report['pruning'] or {}).get('achieved_block_sparsity', 'n/a')}); {report['model_note']}",
        "",
        f"- export: {report['export_seconds']:.0f} s, model.onnx {report['onnx_bytes'] / 2**20:.0f} MiB (the tied "
        "embedding / LM-head matrix is stored twice: optimum keeps the transposed copy the MatMul uses)",
        f"- parity: max |ONNX Runtime - PyTorch| / max |PyTorch| over the logits of {len(report['generation'])} "
        f"left-padded real prompts = {report['max_relative_logit_difference']:.2e} (target <= 1e-4)",
        f"- greedy generation of {report['new_tokens']} tokens with past key values: "
        f"{sum(g['equal'] for g in report['generation'].values())} of {len(report['generation'])} prompts give "
        "the same tokens",
        "",
        "| runtime | prefill tok/s (1 x " + f"{report['prompt_len']}, all logits) | decode tok/s (greedy) |",
        "|---|---|---|",
        f"| PyTorch (float32, default attention) | {pt['prefill_tokens_per_s']:.0f} | "
        f"{pt['decode_tokens_per_s']:.1f} |",
        f"| ONNX Runtime (CPU EP, float32) | {ort['prefill_tokens_per_s']:.0f} | {ort['decode_tokens_per_s']:.1f} |",
        "",
        "Continuations (PyTorch):",
        "",
    ]
    for prompt, g in report["generation"].items():
        lines.append(f"- {prompt!r} -> {g['pytorch']!r}" + ("" if g["equal"] else f" (ONNX: {g['onnxruntime']!r})"))
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
