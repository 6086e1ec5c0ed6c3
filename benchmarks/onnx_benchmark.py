"""ONNX export of a pruned model, ONNX Runtime parity with PyTorch, and tokens/s of both, side by side.

Runs in an environment with `diet-hf[onnx]` (transformers 4.57.x; scripts/test.sh builds one as .venv-tf457):

    .venv-tf457/bin/python benchmarks/onnx_benchmark.py --model outputs/gemma-3-270m-diet-20 \
        --dense ~/.cache/diet_hf/gemma-3-270m --int8 --output benchmarks/results/onnx_gemma3_270m

The model directory is a pruned model saved by diet-hf (e.g. by `scripts/main_job.sh` or `diet-hf prune`).
`--dense` exports the dense model it was pruned from too (optimum's own export of the stock class), so that ONNX
Runtime's tokens/s of both are measured side by side; `--int8` adds each model quantized by optimum's stock
`ORTQuantizer` (dynamic int8 weights and activations of every MatMul, per channel, for AVX512-VNNI CPUs): its logits
against its float32 export and its greedy tokens against the float32 ones are reported, not asserted. The models are
timed in turns, each best-of `--repeats`, on the same inputs. Writes `<output>.json` and `<output>.md`.
"""

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from optimum.onnxruntime import ORTModelForCausalLM, ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from diet_hf.onnx import export_onnx
from diet_hf.speed import take_turns

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _side import PROMPTS  # noqa: E402


def _speed(model, ids, new_tokens: int) -> dict:
    """Prefill (one forward over `ids`, logits at every position: ONNX Runtime returns them all, so PyTorch does too)
    and greedy decode tokens/s from the first 16 tokens of `ids[0]`, measured once."""
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
        prefill = ids.numel() / (time.perf_counter() - start)
        start = time.perf_counter()
        model.generate(ids[:1, :16], attention_mask=torch.ones_like(ids[:1, :16]), **kwargs)
        decode = new_tokens / (time.perf_counter() - start)
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pruned model directory saved by diet-hf")
    parser.add_argument("--dense", default=None, help="the dense model it was pruned from, exported beside it")
    parser.add_argument("--int8", action="store_true", help="add each model quantized to int8 by ORTQuantizer")
    parser.add_argument("--onnx-dir", default=None, help="where to export (default: a temporary directory)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-note", default="", help="how the model directory was made (goes into the report)")
    parser.add_argument("--output", default="benchmarks/results/onnx_gemma3_270m")
    args = parser.parse_args(argv)
    work = Path(args.onnx_dir) if args.onnx_dir else Path(tempfile.mkdtemp(prefix="diet-onnx-")) / "onnx"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    sources = {"pruned": args.model, **({"dense": args.dense} if args.dense else {})}
    models, runtimes = {}, {}
    for name, path in sources.items():
        out = work if name == "pruned" else work.with_name(work.name + "-dense")
        start = time.perf_counter()
        _export(name, path, out)
        entry = {"path": path, "export_seconds": time.perf_counter() - start, "onnx_bytes": _onnx_bytes(out)}
        torch_model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()
        ort_model = ORTModelForCausalLM.from_pretrained(out)
        entry.update(_agreement(torch_model, ort_model, tokenizer, args.new_tokens))
        runtimes[f"PyTorch, {name}"] = torch_model
        runtimes[f"ONNX Runtime, {name}"] = ort_model
        if args.int8:
            quantized_dir = out.with_name(out.name + "-int8")
            start = time.perf_counter()
            quantizer = ORTQuantizer.from_pretrained(out)
            quantizer.quantize(
                save_dir=quantized_dir,
                quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True),
            )
            quantized = ORTModelForCausalLM.from_pretrained(quantized_dir, file_name="model_quantized.onnx")
            entry["int8"] = {
                "quantize_seconds": time.perf_counter() - start,
                "onnx_bytes": _onnx_bytes(quantized_dir),
                **_agreement(ort_model, quantized, tokenizer, args.new_tokens),
            }
            runtimes[f"ONNX Runtime int8, {name}"] = quantized
        models[name] = entry

    vocab = runtimes["PyTorch, pruned"].config.vocab_size  # ordinary tokens: ids 1000-20000 of Gemma's vocabulary
    high = min(20000, vocab)
    ids = torch.randint(min(1000, high // 2), high, (1, args.prompt_len), generator=torch.Generator().manual_seed(0))
    # the models take turns (`take_turns`), so a slower minute of the machine slows all of them
    speed = take_turns(
        {name: functools.partial(_speed, model, ids, args.new_tokens) for name, model in runtimes.items()},
        rounds=args.repeats,
    )
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": platform.platform(),
        "versions": {
            p: version(p) for p in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "diet-hf")
        },
        "model": args.model,
        "model_note": args.model_note,
        "pruning": getattr(runtimes["PyTorch, pruned"].config, "pruning", None),
        "models": models,
        "speed": speed,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = _markdown(report)
    output.with_suffix(".md").write_text(text)
    print(text)
    exact = [m["max_relative_logit_difference"] <= 1e-4 and m["greedy_equal"] == m["prompts"] for m in models.values()]
    return 0 if all(exact) else 1


def _export(name: str, path: str, out: Path) -> None:
    """The pruned model through diet-hf's export; the dense one through optimum's own, for its stock class."""
    if name == "pruned":
        export_onnx(path, out)
    else:
        from optimum.exporters.onnx import main_export

        main_export(path, out, task="text-generation-with-past")


def _onnx_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.onnx*"))


def _encode(tokenizer, text) -> dict:
    """The ids and attention mask of `text` (left-padded), nothing else the tokenizer returns."""
    encoded = tokenizer(text, return_tensors="pt", padding=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _agreement(reference, model, tokenizer, new_tokens: int) -> dict:
    """`model`'s logits against `reference`'s on the left-padded `PROMPTS` (max relative difference over the real
    tokens), and their greedy continuations of each prompt alone (how many are the same tokens; the texts)."""
    batch = _encode(tokenizer, PROMPTS)
    mask = batch["attention_mask"].bool()
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        extra = {"position_ids": position_ids} if isinstance(reference, torch.nn.Module) else {}
        expected = reference(**batch, **extra).logits[mask]
        got = model(**batch).logits[mask]
    kwargs = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    texts, equal = {}, 0
    for prompt in PROMPTS:
        ids = _encode(tokenizer, prompt)
        with torch.inference_mode():
            ours, theirs = reference.generate(**ids, **kwargs), model.generate(**ids, **kwargs)
        equal += ours.tolist() == theirs.tolist()
        texts[prompt] = {
            "reference": tokenizer.decode(ours[0, ids["input_ids"].shape[1] :]),
            "model": tokenizer.decode(theirs[0, ids["input_ids"].shape[1] :]),
        }
    return {
        "max_relative_logit_difference": ((got - expected).abs().max() / expected.abs().max()).item(),
        "greedy_equal": equal,
        "prompts": len(PROMPTS),
        "continuations": texts,
    }


def _markdown(report: dict) -> str:
    models, speed = report["models"], report["speed"]
    lines = [
        "# ONNX Runtime vs PyTorch on the pruned Gemma 3 270M"
        + (", beside the dense model" if "dense" in models else ""),
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; versions {report['versions']}  ",
        f"Model: {report['model']} (pruning record: sparsity "
        f"{(report['pruning'] or {}).get('achieved_block_sparsity', 'n/a')}); {report['model_note']}",
        "",
    ]
    for name, m in models.items():
        lines.append(
            f"- {name}: exported in {m['export_seconds']:.0f} s, {m['onnx_bytes'] / 2**20:.0f} MiB of ONNX (the tied "
            "embedding / LM-head matrix is stored twice: optimum keeps the transposed copy the MatMul uses); ONNX "
            f"Runtime against PyTorch: max relative logit difference {m['max_relative_logit_difference']:.2e} over "
            f"{m['prompts']} left-padded real prompts (target <= 1e-4), greedy generation of {report['new_tokens']} "
            f"tokens with past key values the same on {m['greedy_equal']} of {m['prompts']} prompts"
        )
        if "int8" in m:
            q = m["int8"]
            lines.append(
                f"  - int8 (ORTQuantizer, dynamic, per channel, AVX512-VNNI): quantized in {q['quantize_seconds']:.0f}"
                f" s, {q['onnx_bytes'] / 2**20:.0f} MiB; against its float32 export: max relative logit difference "
                f"{q['max_relative_logit_difference']:.2e}, the same greedy tokens on {q['greedy_equal']} of "
                f"{q['prompts']} prompts"
            )
    lines += [
        "",
        f"Speed on the same random prompt, the models in turns, best of {report.get('repeats', 3)}:",
        "",
        "| runtime, model | prefill tok/s (1 x " + f"{report['prompt_len']}, all logits) | decode tok/s (greedy) |",
        "|---|---|---|",
    ]
    for name, s in speed.items():
        lines.append(f"| {name} | {s['prefill_tokens_per_s']:.0f} | {s['decode_tokens_per_s']:.1f} |")
    if "dense" in models:
        lines += ["", "Pruned over dense, the same runtime:", ""]
        for name in speed:
            if name.endswith(", pruned") and name.replace(", pruned", ", dense") in speed:
                pruned, dense = speed[name], speed[name.replace(", pruned", ", dense")]
                lines.append(
                    f"- {name.removesuffix(', pruned')}: prefill "
                    f"{pruned['prefill_tokens_per_s'] / dense['prefill_tokens_per_s']:.2f}x, decode "
                    f"{pruned['decode_tokens_per_s'] / dense['decode_tokens_per_s']:.2f}x"
                )
    lines += ["", "Continuations (PyTorch, pruned; ONNX Runtime's where they differ):", ""]
    for prompt, g in models["pruned"]["continuations"].items():
        differ = g["model"] != g["reference"]
        lines.append(f"- {prompt!r} -> {g['reference']!r}" + (f" (ONNX: {g['model']!r})" if differ else ""))
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
