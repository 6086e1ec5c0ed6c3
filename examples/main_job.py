"""The project's main job on the real Gemma 3 270M (from PyPI): prune with DIET at 20%, evaluate, save, reload.

    python examples/main_job.py --data-dir ../shared/data

Steps: convert the PyPI GGUF to safetensors once (cached), profile the seven paper tasks (100 calibration examples
each), prune at 20% with the default recipe, evaluate dense and pruned on the same test-half examples and on LAMBADA's
last-word measure over WikiText-2 test paragraphs (the language-modelling task where a cut costs most), save, reload
the pruned model through `AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)` in a fresh process
without diet_hf, and print a table of parameters, accuracy and tokens/s.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import torch

from diet_hf import DietPruner
from diet_hf.evaluation import compare_evaluations, evaluate, last_word_accuracy, paired_bootstrap
from diet_hf.real_model import load_gemma3_270m
from diet_hf.speed import compare_tokens_per_second, measure_tokens_per_second
from diet_hf.tasks import PAPER_TASKS, evaluation_examples, wikitext2_last_word_texts

RELOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # prove the checkpoint loads without diet-hf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, prompt = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    print(json.dumps({"class": type(model).__name__, "logits_head": logits[:8].tolist(),
                      "text": tokenizer.decode(out[0], skip_special_tokens=True)}))
    """
)


def _reload(pruned, tokenizer, path: str, prompt: str) -> dict:
    """Loads the saved checkpoint in a fresh Python process without diet_hf (as anyone would from the Hub) and returns
    its class, its greedy continuation of `prompt` and its largest logit difference to `pruned` in this process."""
    reload = subprocess.run(
        [sys.executable, "-c", RELOAD, path, prompt],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    if reload.returncode != 0:
        raise RuntimeError(f"Reloading {path} without diet_hf failed:\n{reload.stderr[-3000:]}")
    reloaded = json.loads(reload.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        expected = pruned(**tokenizer(prompt, return_tensors="pt")).logits[0, -1, :8]
    reloaded["max_logit_diff"] = (torch.tensor(reloaded["logits_head"]) - expected).abs().max().item()
    return reloaded


def _print_table(args, pruner, models: dict, evaluations: dict, words: dict, speed: dict) -> None:
    """The table the README shows: parameters, accuracy per task and its average with the paired interval of the
    difference, last-word accuracy, tokens per second."""
    dense_eval, pruned_eval = evaluations["dense"], evaluations["pruned"]
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    kept, dense_block = pruner.plan.block_parameters()
    print()
    print(
        f"Gemma 3 270M, DIET ({pruner.plan.provenance['recipe']!r} recipe) at {args.sparsity:.0%} of decoder-block "
        f"parameters (achieved {pruner.plan.sparsity:.2%}), {args.num_samples} calibration examples x "
        f"{len(PAPER_TASKS)} tasks (answers: {pruner.scores.provenance['calibration_answer']}), "
        f"MLP widths {sorted(set(pruner.plan.intermediate_size_per_layer))} of "
        f"{pruner.plan.intermediate_size}; scored on the test half of each task"
    )
    print(f"{'':28}{'dense':>12}{'pruned':>12}")
    print(f"{'parameters (total)':28}{params['dense']:>12,}{params['pruned']:>12,}")
    print(f"{'parameters (decoder blocks)':28}{dense_block:>12,}{kept:>12,}")
    for task in PAPER_TASKS:
        d, p = dense_eval["results"][task], pruned_eval["results"][task]
        metric = d["headline_metric"]
        print(f"{task + ' ' + metric + ' (n=' + str(d['num_scored']) + ')':28}{d[metric]:>12.3f}{p[metric]:>12.3f}")
    print(f"{'average (headline)':28}{dense_eval['average']:>12.3f}{pruned_eval['average']:>12.3f}")
    change = compare_evaluations(pruned_eval, dense_eval)["average"]
    interval = "[{:+.3f}, {:+.3f}]".format(*change["ci95"])
    print(f"{'pruned - dense, 95% CI':28}{change['difference']:>+24.3f} {interval}")
    label = f"last word, WikiText (n={len(words['dense']['correct'])})"
    print(f"{label:28}{words['dense']['accuracy']:>12.3f}{words['pruned']['accuracy']:>12.3f}")
    change = paired_bootstrap(words["pruned"]["correct"], words["dense"]["correct"])
    interval = "[{:+.3f}, {:+.3f}]".format(*change["ci95"])
    print(f"{'pruned - dense, 95% CI':28}{change['difference']:>+24.3f} {interval}")
    for label, key, digits in (
        ("prefill tokens/s", "prefill_tokens_per_s", 0),
        ("decode tokens/s", "decode_tokens_per_s", 1),
    ):
        print(f"{label:28}{speed['dense'][key]:>12.{digits}f}{speed['pruned'][key]:>12.{digits}f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DIET_DATA_DIR", "../shared/data"))
    parser.add_argument("--output", default="outputs/gemma-3-270m-diet-20")
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--limit", type=int, default=200, help="test-half evaluation examples per task")
    parser.add_argument("--last-word-texts", type=int, default=200, help="WikiText-2 test paragraphs, last word")
    parser.add_argument("--cache-dir", default=None, help="safetensors copy of Gemma 3 270M (default ~/.cache)")
    args = parser.parse_args(argv)
    try:  # the data first: a directory without it fails now, not after the model's download, conversion and profile
        for task in PAPER_TASKS:
            evaluation_examples(task, data_dir=args.data_dir)
        wikitext2_last_word_texts(limit=1, data_dir=args.data_dir)
    except FileNotFoundError as error:
        parser.error(f"--data-dir (or $DIET_DATA_DIR): {error}")
    # diet_hf's own messages, e.g. that the model is being converted (once: the first minute or so of a fresh
    # machine's run, before transformers' progress bar appears)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("diet_hf").setLevel(logging.INFO)
    torch.manual_seed(0)
    clock = time.perf_counter()

    model, tokenizer, path = load_gemma3_270m(args.cache_dir)
    print(f"[{time.perf_counter() - clock:6.0f}s] dense Gemma 3 270M loaded from {path}", flush=True)
    pruner = DietPruner(model, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(PAPER_TASKS, num_samples=args.num_samples, data_dir=args.data_dir)
    pruned = pruner.prune(sparsity=args.sparsity)
    models = {"dense": model, "pruned": pruned}
    print(f"[{time.perf_counter() - clock:6.0f}s] profiled and pruned", flush=True)
    excluded = pruner.scores.provenance["excluded_eval_ids"]
    scored = {"limit": args.limit, "half": "test", "exclude_ids": excluded, "data_dir": args.data_dir}
    scored["return_predictions"] = True  # per-example answers: the difference's paired-bootstrap interval
    evaluations = {name: evaluate(m, tokenizer, PAPER_TASKS, **scored) for name, m in models.items()}
    texts = wikitext2_last_word_texts(limit=args.last_word_texts, data_dir=args.data_dir)
    words = {name: last_word_accuracy(m, tokenizer, texts) for name, m in models.items()}
    print(f"[{time.perf_counter() - clock:6.0f}s] evaluated dense and pruned", flush=True)

    pruner.save_pretrained(args.output, evaluation=evaluations["pruned"], dense_evaluation=evaluations["dense"])
    reloaded = _reload(pruned, tokenizer, args.output, "The capital of France is")
    print(
        f"[{time.perf_counter() - clock:6.0f}s] saved to {args.output}; reloaded as {reloaded['class']} in a fresh "
        f"process without diet_hf (max |logit diff| {reloaded['max_logit_diff']:.2e})",
        flush=True,
    )

    measure_tokens_per_second(model, repeats=1)  # warm-up: first calls pay one-off allocation costs
    # the two take turns, five rounds, best round each: measured one after the other, a drift of the machine's speed
    # during the measurement once read the pruned model slower than the dense one
    speed = compare_tokens_per_second(models, pad_token_id=tokenizer.pad_token_id)
    _print_table(args, pruner, models, evaluations, words, speed)
    print(f"\nreloaded pruned model says: {reloaded['text']!r}")
    print(f"total time {time.perf_counter() - clock:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
