"""A pruned model in llama.cpp: `diet-hf export stock`, then llama.cpp's own `convert_hf_to_gguf.py`, beside the dense
model converted the same way; logits and greedy text against transformers, file sizes, and speed in turns.

    python benchmarks/gguf_benchmark.py --model PRUNED_WITHOUT_BIASES --dense ~/.cache/diet_hf/gemma-3-270m \
        --llama-cpp LLAMA_CPP_SOURCE --output benchmarks/results/gguf_gemma3_270m

`--model` is a pruned model saved by diet-hf without compensation biases (`diet-hf prune ... --no-bias-compensation`;
stock Gemma has no place for them), `--dense` the dense model it was pruned from. `--llama-cpp` is a llama.cpp source
tree (its `convert_hf_to_gguf.py` and `gguf-py`; the sdist of `llama-cpp-python` carries one under `vendor/llama.cpp`),
and `llama_cpp` (llama-cpp-python, built from that sdist) must import. For each of `--types` (the converter's `f32`,
`q8_0`; `Q4_K_M` through llama.cpp's quantizer from the f32 file) both models are converted, then:

- checked against transformers in float32 (the pruned model through its remote code, the dense one stock): whether
  llama.cpp tokenizes four prompts as transformers does, the largest logit difference over their positions as a
  fraction of the reference's logit range, how often the top token agrees, and whether 16 greedy tokens are the same;
- timed in turns (`diet_hf.speed.take_turns`; dense and pruned alternate, best round each): prefill of 128 seeded
  tokens (logits of the last position only, as llama.cpp computes them) and greedy decode of 32 tokens after 16.

With `--accuracy-limit N`, each model of the `--accuracy-types` is also scored in llama.cpp on the seven tasks (the
first N examples per task of the `--accuracy-half`, test by default, the pruned model's calibration examples
excluded for both), with the same requests, tokens and decisions as `diet_hf.evaluation.evaluate` (lm-eval's: the sum
of the continuation's log-probabilities, `acc_norm` per character), and compared, paired, with the same model in
transformers (float32) and with the dense model of the same type; and what the type costs the pruned model beyond
what it costs the dense one, (pruned GGUF - pruned f32) - (dense GGUF - dense f32), from the same resampled examples.

Nothing is chosen on these rows. Writes `<output>.json` and `<output>.md`.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _side import PROMPTS, difference_of_differences, interval, provenance, write_report  # noqa: E402

from diet_hf.evaluation import compare_evaluations, correct_by_task, encode_pair, evaluate  # noqa: E402
from diet_hf.evaluation.harness import _task_result  # noqa: E402  (the evaluator's decisions, not a copy of them)
from diet_hf.speed import take_turns  # noqa: E402
from diet_hf.stock import export_stock  # noqa: E402
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, get_task  # noqa: E402

CONVERTER_TYPES = ("f32", "q8_0")
QUANTIZER_TYPES = {"Q4_K_M": 15}  # llama_ftype LLAMA_FTYPE_MOSTLY_Q4_K_M


def convert(hf_dir: Path, out: Path, outtype: str, llama_cpp_dir: Path) -> None:
    """llama.cpp's converter on a stock transformers checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(llama_cpp_dir / "gguf-py")}
    command = [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out)]
    subprocess.run([*command, "--outtype", outtype], env=env, check=True, capture_output=True, text=True)


def quantize(source: Path, out: Path, ftype: int) -> None:
    """llama.cpp's quantizer (the C API `llama-quantize` calls), from an f32 GGUF."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source}")


def reference(hf_dir: str, remote_code: bool) -> dict:
    """transformers' float32 logits and 16 greedy tokens for each prompt."""
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, trust_remote_code=remote_code).eval()
    rows = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0].numpy()
            greedy = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids) :].tolist()
            rows.append({"ids": ids, "logits": logits, "greedy": greedy})
    return {"rows": rows}


def check(llm, ref: dict) -> dict:
    """llama.cpp (`logits_all`) against the transformers reference."""
    differences, agree, same_tokens, same_greedy = [], [], 0, 0
    for prompt, row in zip(PROMPTS, ref["rows"]):
        same_tokens += llm.tokenize(prompt.encode(), add_bos=True, special=False) == row["ids"]
        llm.reset()
        llm.eval(row["ids"])
        logits = np.array(llm.scores[: len(row["ids"])])
        span = row["logits"].max() - row["logits"].min()
        differences.append(float(np.abs(logits - row["logits"]).max() / span))
        agree.append(float((logits.argmax(-1) == row["logits"].argmax(-1)).mean()))
        greedy = []
        for _ in range(16):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(token)
            llm.eval([token])
        same_greedy += greedy == row["greedy"]
    return {
        "same_tokenization": f"{same_tokens}/{len(PROMPTS)}",
        "max_logit_difference": max(differences),
        "top_token_agreement": sum(agree) / len(agree),
        "same_greedy_16": f"{same_greedy}/{len(PROMPTS)}",
    }


def measure(llm, prompt_len: int = 128, new_tokens: int = 32) -> dict:
    """Prefill tokens/s (`prompt_len` seeded tokens, the last position's logits) and greedy decode tokens/s."""
    import llama_cpp

    ids = torch.randint(1000, 20000, (prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    prefill = prompt_len / (time.perf_counter() - start)
    llm.reset()
    llm.eval(ids[:16])
    n_vocab = llm.n_vocab()
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        llm.eval([int(logits.argmax())])
    decode = new_tokens / (time.perf_counter() - start)
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}


def _log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def llama_cpp_evaluation(llm, tokenizer, scored: dict) -> dict:
    """`evaluate(..., return_predictions=True)`'s result, the log-likelihoods computed by llama.cpp (`logits_all`):
    each question's context run once, each choice after it from the context's cache."""
    results, predictions = {}, {}
    for name in PAPER_TASKS:
        spec = get_task(name)
        excluded = {str(i) for i in scored["exclude_ids"].get(name, [])}
        docs = evaluation_examples(
            spec, half=scored["half"], exclude_ids=excluded, limit=scored["limit"], data_dir=scored["data_dir"]
        )
        requests = [spec.build(d) for d in docs]
        lls = []
        for request in requests:
            for context, continuation in zip(request.contexts, request.continuations):
                context_ids, continuation_ids = encode_pair(tokenizer, context, request.delimiter + continuation)
                if llm.n_tokens < len(context_ids) or list(llm.input_ids[: len(context_ids)]) != context_ids:
                    llm.reset()
                    llm.eval(context_ids)
                llm.n_tokens = len(context_ids)  # the choice continues the context's cache
                llm.eval(continuation_ids)
                rows = llm.scores[len(context_ids) - 1 : len(context_ids) - 1 + len(continuation_ids)]
                lls.append(float(sum(_log_softmax(row)[token] for row, token in zip(rows, continuation_ids))))
        results[name], predictions[name] = _task_result(spec, requests, lls, excluded, scored["half"])
    headline = [r[r["headline_metric"]] for r in results.values()]
    return {"results": results, "average": sum(headline) / len(headline), "predictions": predictions}


def accuracy_rows(args, files_by_type: dict, pruned_config) -> dict:
    """Each `--accuracy-types` GGUF and the float32 transformers models on the same examples of one half."""
    from llama_cpp import Llama

    tokenizer = AutoTokenizer.from_pretrained(args.dense)
    scored = {
        "exclude_ids": (pruned_config.pruning or {}).get("calibration_eval_ids") or {},
        "limit": args.accuracy_limit,
        "data_dir": args.data_dir,
        "half": args.accuracy_half,
    }
    rows = {}
    for name, path, remote in (("dense", args.dense, False), ("pruned", args.model, True)):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=remote).eval()
        rows[("transformers f32", name)] = evaluate(
            model,
            tokenizer,
            PAPER_TASKS,
            half=scored["half"],
            limit=scored["limit"],
            exclude_ids=scored["exclude_ids"],
            data_dir=scored["data_dir"],
            return_predictions=True,
            disable_progress=True,
        )
        del model
    for outtype in args.accuracy_types:
        for name, path in files_by_type[outtype].items():
            llm = Llama(str(path), n_ctx=2048, n_batch=512, logits_all=True, verbose=False, n_threads=args.threads)
            rows[(f"llama.cpp {outtype}", name)] = llama_cpp_evaluation(llm, tokenizer, scored)
            llm.close()
            print(outtype, name, rows[(f"llama.cpp {outtype}", name)]["average"], flush=True)
    report = {}
    for (runtime, name), result in rows.items():
        own = rows[("transformers f32", name)]
        dense = rows[(runtime, "dense")]
        report[f"{runtime} / {name}"] = {
            "average": result["average"],
            "per_task": {task: r[r["headline_metric"]] for task, r in result["results"].items()},
            "num_scored": {task: r["num_scored"] for task, r in result["results"].items()},
            "vs_transformers_f32": None if result is own else compare_evaluations(result, own)["average"],
            "vs_dense": None if result is dense else compare_evaluations(result, dense)["average"],
        }
        if runtime != "transformers f32" and name == "pruned":  # beyond what the type costs the dense model
            correct = [correct_by_task(r) for r in (result, own, dense, rows[("transformers f32", "dense")])]
            report[f"{runtime} / {name}"]["type_cost_vs_dense"] = difference_of_differences(*correct)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a pruned model saved by diet-hf, without compensation biases")
    parser.add_argument("--dense", required=True, help="the dense model it was pruned from")
    parser.add_argument("--llama-cpp", required=True, type=Path, help="llama.cpp source tree (convert_hf_to_gguf.py)")
    parser.add_argument("--types", nargs="+", default=["f32", "q8_0", "Q4_K_M"], help="GGUF types to compare")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (each model once per round)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="llama.cpp threads")
    parser.add_argument(
        "--accuracy-limit", type=int, default=0, help="score the seven tasks' first N test-half examples (0: no)"
    )
    parser.add_argument("--accuracy-types", nargs="+", default=["Q4_K_M"], help="GGUF types scored for accuracy")
    parser.add_argument("--accuracy-half", choices=("test", "dev"), default="test", help="the half scored")
    parser.add_argument("--data-dir", default=os.environ.get("DIET_DATA_DIR"), help="the benchmark data")
    parser.add_argument("--work", default=None, help="where the GGUF files go (default: a temporary directory)")
    parser.add_argument("--output", required=True, help="report path without suffix")
    args = parser.parse_args(argv)
    for outtype in args.types:
        if outtype not in (*CONVERTER_TYPES, *QUANTIZER_TYPES):
            parser.error(f"--types: {outtype!r} is none of {', '.join((*CONVERTER_TYPES, *QUANTIZER_TYPES))}")
    from llama_cpp import Llama

    work = Path(args.work or tempfile.mkdtemp(prefix="gguf-benchmark-"))
    work.mkdir(parents=True, exist_ok=True)
    stock_dir = work / "stock"
    if not stock_dir.is_dir():
        export_stock(args.model, stock_dir)
    hf_dirs = {"dense": Path(args.dense).expanduser(), "pruned": stock_dir}
    references = {"dense": reference(str(hf_dirs["dense"]), False), "pruned": reference(args.model, True)}
    report = {**provenance(), "model": args.model, "dense": args.dense, "rounds": args.rounds, "rows": {}}
    report["stock_export"] = json.loads((stock_dir / "config.json").read_text())["diet_hf_stock_export"]
    files_by_type = {}
    for outtype in args.types:
        files = files_by_type[outtype] = {}
        for name, hf_dir in hf_dirs.items():
            files[name] = work / f"{name}-{outtype}.gguf"
            if files[name].is_file():
                continue
            if outtype in CONVERTER_TYPES:
                convert(hf_dir, files[name], outtype, args.llama_cpp)
            else:
                f32 = work / f"{name}-f32.gguf"
                if not f32.is_file():
                    convert(hf_dir, f32, "f32", args.llama_cpp)
                quantize(f32, files[name], QUANTIZER_TYPES[outtype])
        llms, rows = {}, {}
        for name, path in files.items():
            checker = Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=args.threads)
            rows[name] = {"file_bytes": path.stat().st_size, **check(checker, references[name])}
            checker.close()
            llms[name] = Llama(str(path), n_ctx=256, n_batch=256, verbose=False, n_threads=args.threads)
        speeds = take_turns({name: functools.partial(measure, llm) for name, llm in llms.items()}, rounds=args.rounds)
        for name, llm in llms.items():
            rows[name].update(speeds[name])
            llm.close()
        report["rows"][outtype] = rows
        print(outtype, json.dumps(rows), flush=True)
    if args.accuracy_limit:
        from transformers import AutoConfig

        report["accuracy_limit"], report["accuracy_half"] = args.accuracy_limit, args.accuracy_half
        report["accuracy"] = accuracy_rows(args, files_by_type, AutoConfig.from_pretrained(args.model))
    write_report(args.output, report, markdown(report))
    return 0


def markdown(report: dict) -> list[str]:
    shape = report["stock_export"]
    lines = [
        "# A pruned Gemma in llama.cpp (GGUF), beside its dense parent",
        "",
        f"Command: `{report['command']}` ({report['machine']}, {report['processor_count']} CPUs). Pruned model: "
        f"`{report['model']}`, exported with `diet-hf export stock` (every layer at MLP width "
        f"{shape['intermediate_size']}, {shape['num_attention_heads']} query / {shape['num_key_value_heads']} KV "
        f"heads; {shape['padded_parameters']:,} zero parameters of padding), then converted by llama.cpp's "
        f"`convert_hf_to_gguf.py`; dense: `{report['dense']}`, converted the same way. Logits are checked against "
        "transformers in float32 on four prompts (the pruned model through its own remote code); speed is "
        f"llama.cpp's, dense and pruned in turns, best of {report['rounds']} rounds.",
        "",
        "| GGUF type | model | file MiB | same tokenization | max logit difference (of range) | top token agrees "
        "| same 16 greedy tokens | prefill tok/s (128) | decode tok/s | prefill / decode vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for outtype, rows in report["rows"].items():
        dense = rows["dense"]
        for name, row in rows.items():
            ratio = (
                f"{row['prefill_tokens_per_s'] / dense['prefill_tokens_per_s']:.2f}x / "
                f"{row['decode_tokens_per_s'] / dense['decode_tokens_per_s']:.2f}x"
                if name != "dense"
                else "–"
            )
            lines.append(
                f"| {outtype} | {name} | {row['file_bytes'] / 2**20:.0f} | {row['same_tokenization']} | "
                f"{row['max_logit_difference']:.2e} | {row['top_token_agreement']:.3f} | {row['same_greedy_16']} | "
                f"{row['prefill_tokens_per_s']:.0f} | {row['decode_tokens_per_s']:.1f} | {ratio} |"
            )
    if report.get("accuracy"):
        tasks = list(next(iter(report["accuracy"].values()))["per_task"])
        lines += [
            "",
            f"Accuracy on the first {report['accuracy_limit']} {report.get('accuracy_half', 'test')}-half examples "
            "per task (the pruned model's calibration examples excluded for both; each task's headline metric; "
            "paired-bootstrap 95% intervals; the type's cost to the pruned model beyond its cost to the dense one: "
            "(pruned GGUF − pruned f32) − (dense GGUF − dense f32), from the same resampled examples):",
            "",
            "| runtime / model | avg (7 tasks) | vs the same model, transformers f32 | vs dense, same runtime | "
            "type's cost beyond dense's | " + " | ".join(tasks) + " |",
            "|---|---|---|---|---|" + "---|" * len(tasks),
        ]
        for name, row in report["accuracy"].items():
            lines.append(
                f"| {name} | {row['average']:.3f} | {interval(row['vs_transformers_f32'])} | "
                f"{interval(row['vs_dense'])} | {interval(row.get('type_cost_vs_dense'))} | "
                + " | ".join(f"{row['per_task'][t]:.3f}" for t in tasks)
                + " |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
