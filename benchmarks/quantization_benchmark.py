"""Prune, then quantize: a pruned model and its dense parent, each in float32 and through transformers' own int8
quantizers, scored on the same test-half examples and timed in turns.

    python benchmarks/quantization_benchmark.py --model outputs/gemma-3-270m-diet-20 \
        --dense ~/.cache/diet_hf/gemma-3-270m --data-dir ../shared/data \
        --output benchmarks/results/quantization_gemma3_270m

It needs torchao (`pip install -e ".[torchao]"`) besides the test extra's optimum-quanto. The model directory is a
pruned model saved by diet-hf (`scripts/main_job.sh`, `diet-hf prune`); `--dense` is the
dense model it was pruned from. Each is loaded as it is (float32) and with each `--quantizers` entry, the way a user
deploys it (`AutoModelForCausalLM.from_pretrained(..., quantization_config=...)`, no diet-hf needed):

- `quanto-int8`: `QuantoConfig(weights="int8")` (optimum-quanto; int8 weights, float activations);
- `torchao-int8`: `TorchAoConfig(Int8WeightOnlyConfig())` (torchao; int8 weights, per channel);
- `torchao-int8-dynamic`: `TorchAoConfig(Int8DynamicActivationInt8WeightConfig())` (int8 weights and activations,
  the activations' scales per token at run time).

Reported per model: the bytes of its weights (tensor storage, a tied head counted once, quantized tensors by their
int8 data and scales), the seven-task average on the test halves (the pruned model's calibration examples excluded
for both) with its standard error and the paired-bootstrap difference to the same checkpoint in float32 and to the
dense float32 model, the largest logit difference to its float32 checkpoint on a seeded batch (as a fraction of that
batch's logit range), whether its greedy continuations of four prompts equal the float32 checkpoint's, and prefill /
decode tokens/s (`diet_hf.speed.compare_tokens_per_second`: all models in turns, best round each). Nothing is chosen
on these rows. Each model's row is saved as it finishes (`--resume` keeps them); the speed rows come last, all
models in memory together (`--compile-rounds N` adds prefill with each model's forward under `torch.compile`).
Writes `<output>.json` and `<output>.md`.
"""

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _side import PROMPTS, commands_text, interval, provenance, resumed_commands, write_report  # noqa: E402

from diet_hf.evaluation import compare_evaluations, evaluate  # noqa: E402
from diet_hf.quantization import QUANTIZATIONS, quantization_config  # noqa: E402
from diet_hf.speed import compare_tokens_per_second, measure_tokens_per_second, take_turns  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402


def _storage_bytes(tensor, seen: set) -> int:
    """Bytes of a tensor's storage, a tensor subclass's (quantized data, scales) through its flattened parts; a
    storage already counted (a tied weight) counts nothing."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(_storage_bytes(getattr(tensor, name), seen) for name in names)
    key = (tensor.untyped_storage().data_ptr(), tensor.device)
    if key in seen:
        return 0
    seen.add(key)
    return tensor.untyped_storage().nbytes()


def weight_bytes(model) -> int:
    """The bytes of a model's parameters and buffers."""
    seen: set = set()
    return sum(_storage_bytes(t, seen) for t in [*model.parameters(), *model.buffers()])


def load(path: str, quantizer: str | None):
    kwargs = {"dtype": torch.float32, "trust_remote_code": True}
    if quantizer is not None:
        kwargs["quantization_config"] = quantization_config(quantizer)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


def _greedy(model, tokenizer) -> list[list[int]]:
    out = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")
            generated = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            out.append(generated[0, ids.input_ids.shape[1] :].tolist())
    return out


def _logits(model) -> torch.Tensor:
    ids = torch.randint(10, 20000, (2, 128), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model(ids).logits.float()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pruned model directory saved by diet-hf")
    parser.add_argument("--dense", required=True, help="the dense model it was pruned from")
    parser.add_argument("--data-dir", default=os.environ.get("DIET_DATA_DIR", "../shared/data"))
    parser.add_argument("--limit", type=int, default=300, help="test-half examples per task")
    parser.add_argument("--quantizers", nargs="+", default=list(QUANTIZATIONS), choices=tuple(QUANTIZATIONS))
    parser.add_argument("--rounds", type=int, default=5, help="speed: rounds of all models in turns")
    parser.add_argument(
        "--compile-rounds",
        type=int,
        default=0,
        help="also time prefill with each model's forward under torch.compile, this many rounds in turns",
    )
    parser.add_argument("--output", default="benchmarks/results/quantization_gemma3_270m")
    parser.add_argument("--resume", action="store_true", help="keep the rows of an earlier run with this --output")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    output = Path(args.output)
    report = (
        json.loads(output.with_suffix(".json").read_text())
        if args.resume and output.with_suffix(".json").exists()
        else {}
    )
    here = provenance()
    report["commands"] = resumed_commands(report, here["command"])
    report.update({k: v for k, v in here.items() if k != "command"})
    report.update({"model": args.model, "dense": args.dense, "limit": args.limit, "half": "test"})
    rows = report.setdefault("rows", {})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pruning = AutoConfig.from_pretrained(args.model, trust_remote_code=True).pruning  # the config alone
    excluded = pruning.get("calibration_eval_ids") or {}
    scored = {"limit": args.limit, "half": "test", "exclude_ids": excluded, "data_dir": args.data_dir}
    checkpoints = {"dense": args.dense, "pruned": args.model}
    names = [(c, q) for c in checkpoints for q in (None, *args.quantizers)]

    references = {}
    for checkpoint, quantizer in names:
        name = f"{checkpoint} {quantizer or 'float32'}"
        if name in rows:
            print(f"{name}: kept from the earlier run", flush=True)
            continue
        model = load(checkpoints[checkpoint], quantizer)
        if checkpoint not in references:  # each checkpoint's float32 model comes first
            reference = model if quantizer is None else load(checkpoints[checkpoint], None)
            references[checkpoint] = {"logits": _logits(reference), "greedy": _greedy(reference, tokenizer)}
        start = time.perf_counter()
        result = evaluate(model, tokenizer, PAPER_TASKS, return_predictions=True, disable_progress=True, **scored)
        reference = references[checkpoint]["logits"]
        logits = _logits(model)
        greedy = _greedy(model, tokenizer)
        rows[name] = {
            "checkpoint": checkpoint,
            "quantizer": quantizer,
            "weight_bytes": weight_bytes(model),
            "evaluation": result,
            "max_logit_difference": ((logits - reference).abs().max() / (reference.max() - reference.min())).item(),
            "greedy_same": sum(a == b for a, b in zip(greedy, references[checkpoint]["greedy"])),
            "seconds": time.perf_counter() - start,
        }
        print(f"{name}: average {result['average']:.3f} ({rows[name]['seconds']:.0f} s)", flush=True)
        write_report(output, report, _markdown(report))
        del model

    if args.rounds > 0 or args.compile_rounds > 0:
        models = {f"{c} {q or 'float32'}": load(checkpoints[c], q) for c, q in names}
    if args.rounds > 0:
        measure_tokens_per_second(models["dense float32"], repeats=1)  # warm-up: one-off allocation costs
        speed = compare_tokens_per_second(models, rounds=args.rounds, pad_token_id=tokenizer.pad_token_id)
        for name, value in speed.items():
            rows[name]["speed"] = value
        report["speed_rounds"] = args.rounds
    if args.compile_rounds > 0:
        for name, value in compiled_prefill(models, args.compile_rounds).items():
            rows[name]["compiled_prefill"] = value
        report["compile_rounds"] = args.compile_rounds
    write_report(output, report, _markdown(report))
    return 0


def compiled_prefill(models: dict, rounds: int) -> dict[str, dict[str, float]]:
    """Prefill tokens/s of each model's forward under `torch.compile` (static shapes; the same seeded 4 x 256 batch
    as `measure_tokens_per_second`, the LM head on the last position), all models in turns, best round each; and the
    seconds its first (compiling) call took."""
    ids = torch.randint(1000, 20000, (4, 256), generator=torch.Generator().manual_seed(0))
    compiled, compile_seconds = {}, {}
    with torch.inference_mode():
        for name, model in models.items():
            compiled[name] = torch.compile(model.forward, dynamic=False)
            start = time.perf_counter()
            compiled[name](input_ids=ids, logits_to_keep=1)
            compile_seconds[name] = time.perf_counter() - start

        def prefill(forward) -> dict[str, float]:
            start = time.perf_counter()
            forward(input_ids=ids, logits_to_keep=1)
            return {"prefill_tokens_per_s": ids.numel() / (time.perf_counter() - start)}

        best = take_turns({name: functools.partial(prefill, f) for name, f in compiled.items()}, rounds=rounds)
    return {name: {"compile_s": compile_seconds[name], **best[name]} for name in models}


def _markdown(report: dict) -> list[str]:
    rows = report["rows"]
    lines = [
        "# Prune, then quantize: Gemma 3 270M, float32 and int8 (test halves)",
        "",
        f"Made by {commands_text(report)} on {report['machine']} ({report['processor_count']} CPUs); "
        f"{report['limit']} test-half examples per task at most, the pruned model's calibration examples excluded for "
        "both. Δ: paired bootstrap over the same examples. logit diff: the largest |logit difference| to the same "
        "checkpoint in float32 on a seeded 2 x 128 batch, as a fraction of that batch's logit range. greedy: of 4 "
        "prompts, how many continue (16 tokens) as in float32. Speed: all models in turns, best of "
        f"{report.get('speed_rounds', '–')} rounds (prefill 4 x 256 tokens, decode 32 tokens), eager PyTorch; "
        "compiled: the same prefill with each model's forward under torch.compile (static shapes), best of "
        f"{report.get('compile_rounds', '–')} rounds in turns. Nothing is chosen on these rows.",
        "",
        "| model | weights (MB) | avg (7 tasks) ± s.e. | Δ vs its float32 | Δ vs dense float32 | logit diff | greedy "
        "| prefill tok/s | decode tok/s | prefill tok/s, compiled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        result = row["evaluation"]
        headline = [r[r["headline_metric"]] for r in result["results"].values()]
        # the average's standard error as run_benchmark.py gives it (each task's binomial error of its accuracy)
        errors = [r["acc_stderr"] for r in result["results"].values()]
        se = sum(e**2 for e in errors) ** 0.5 / len(errors)
        own = rows.get(f"{row['checkpoint']} float32")
        dense = rows.get("dense float32")
        vs_own = interval(compare_evaluations(result, own["evaluation"])["average"]) if own and own is not row else "–"
        vs_dense = (
            interval(compare_evaluations(result, dense["evaluation"])["average"])
            if dense and dense is not row
            else "–"
        )
        speed = row.get("speed") or {}
        prefill = f"{speed['prefill_tokens_per_s']:.0f}" if speed else "–"
        decode = f"{speed['decode_tokens_per_s']:.1f}" if speed else "–"
        compiled = row.get("compiled_prefill")
        compiled = f"{compiled['prefill_tokens_per_s']:.0f}" if compiled else "–"
        lines.append(
            f"| {name} | {row['weight_bytes'] / 1e6:.0f} | {sum(headline) / len(headline):.3f} ± {se:.3f} | "
            f"{vs_own} | {vs_dense} | {row['max_logit_difference']:.3f} | {row['greedy_same']}/4 | {prefill} | "
            f"{decode} | {compiled} |"
        )
    lines.append("")
    lines.append("Per task (headline metric):")
    lines.append("")
    lines.append("| model | " + " | ".join(PAPER_TASKS) + " |")
    lines.append("|---|" + "---|" * len(PAPER_TASKS))
    for name, row in rows.items():
        results = row["evaluation"]["results"]
        lines.append(
            f"| {name} | " + " | ".join(f"{results[t][results[t]['headline_metric']]:.3f}" for t in PAPER_TASKS) + " |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
