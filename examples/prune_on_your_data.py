"""Prune a Gemma for *your* task: calibrate on your own texts, then measure what the pruned model kept of them.

Your texts are one JSONL file (a `text` field per line) or a `.txt` file (one text per line). A fixed share of them
(every fifth, `--held-out`) is held out: never read by the pruning, scored afterwards by perplexity against the dense
model on the same texts (a ratio with its 95% paired-bootstrap interval over the texts).

With internet (the Hub path):

    python examples/prune_on_your_data.py --model google/gemma-3-1b-pt --texts tickets.jsonl --output gemma-diet-20

Offline, on a tiny random Gemma 3 (what the tests run):

    python examples/prune_on_your_data.py --tiny --texts my_texts.txt --output /tmp/tiny-diet

`--with-paper-tasks` calibrates on the paper's seven tasks beside your texts (needs their data: `--data-dir` or the
Hub). The same from the command line: `diet-hf prune MODEL --tasks mine=train.jsonl ...`, then `diet-hf eval PRUNED
--reference MODEL --texts mine=held_out.jsonl`.
"""

import argparse

import torch
from transformers import AutoModelForCausalLM

from diet_hf import DietPruner
from diet_hf.evaluation import paired_bootstrap_perplexity, texts_perplexity
from diet_hf.tasks import PAPER_TASKS, load_task_source


def tiny_pruner() -> DietPruner:
    """A tiny random Gemma 3 with a byte-level tokenizer trained in memory (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False
    )
    backend.train_from_iterator(["Question: Answer: yes no True False the a of to is"], trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", backend.token_to_id("<bos>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=16,
    )
    return DietPruner(Gemma3ForCausalLM(config).eval(), tokenizer, model_id="tiny-random-gemma3")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="google/gemma-3-1b-pt")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random Gemma 3 (offline)")
    parser.add_argument("--texts", required=True, help="your texts: .jsonl (a text field per line) or .txt")
    parser.add_argument("--held-out", type=int, default=5, help="every N-th text is held out (default: 5)")
    parser.add_argument("--with-paper-tasks", action="store_true", help="calibrate on the paper's seven tasks too")
    parser.add_argument("--data-dir", default=None, help="local benchmark data for --with-paper-tasks")
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    _, texts = load_task_source(
        f"mine={args.texts}", flag="--texts", registered=False
    )  # read and checked before any model loads
    held_out = texts[:: args.held_out]
    calibration = [text for i, text in enumerate(texts) if i % args.held_out]
    if not calibration or not held_out:
        raise SystemExit(f"{args.texts} holds {len(texts)} texts: too few to hold out every {args.held_out}-th.")
    if args.tiny:
        pruner = tiny_pruner()
    else:
        pruner = DietPruner.from_pretrained(args.model, dtype=torch.bfloat16, device_map="auto")
    tasks = {"mine": calibration}  # your own data: every text is read
    if args.with_paper_tasks:
        tasks.update({task: None for task in PAPER_TASKS})  # registered tasks: 100 examples each
    pruner.profile(tasks=tasks, data_dir=args.data_dir)
    pruned = pruner.prune(sparsity=args.sparsity)
    # held-out texts, each read alone from BOS as a prompt is read; the dense model first, on the same texts
    dense = texts_perplexity(pruner.model, pruner.tokenizer, held_out)
    mine = texts_perplexity(pruned, pruner.tokenizer, held_out)
    ratio = paired_bootstrap_perplexity(mine, dense)
    pruner.save_pretrained(args.output)  # weights, config, remote code, tokenizer, plan, model card; atomically
    reloaded = AutoModelForCausalLM.from_pretrained(args.output, trust_remote_code=True)
    low, high = ratio["ci95"]
    print(
        f"saved {type(reloaded).__name__} to {args.output}: calibrated on {len(calibration)} of your texts"
        f"{' and the paper tasks' if args.with_paper_tasks else ''}, block sparsity {pruner.plan.sparsity:.1%}; "
        f"on {len(held_out)} held-out texts perplexity {mine['perplexity']:.2f} against the dense model's "
        f"{dense['perplexity']:.2f}: ratio {ratio['ratio']:.3f} [{low:.3f}, {high:.3f}]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
