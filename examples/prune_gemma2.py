"""Prune Gemma-2 with DIET.

With internet (the Hub path):

    python examples/prune_gemma2.py --model google/gemma-2-2b --output gemma-2-2b-diet-20

Offline, on a tiny random Gemma-2 and the local benchmark data (what the tests run):

    python examples/prune_gemma2.py --tiny --data-dir ../shared/data --output /tmp/tiny-diet
"""

import argparse

import torch
from transformers import AutoModelForCausalLM

from diet_hf import DietPruner

TASKS = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def tiny_pruner() -> DietPruner:
    """A tiny random Gemma-2 with a byte-level tokenizer trained in memory (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False
    )
    backend.train_from_iterator(["Question: Answer: yes no True False"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
    )
    return DietPruner(Gemma2ForCausalLM(config).eval(), tokenizer, model_id="tiny-random-gemma2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Prune Gemma-2 with DIET.")
    parser.add_argument("--model", default="google/gemma-2-2b")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random Gemma-2 (offline)")
    parser.add_argument("--data-dir", default=None, help="local benchmark data (default: the Hub)")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    if args.tiny:
        pruner = tiny_pruner()
    else:
        pruner = DietPruner.from_pretrained(args.model, dtype=torch.bfloat16, device_map="auto")
    pruner.profile(tasks=TASKS, num_samples=args.num_samples, data_dir=args.data_dir)
    pruner.prune(sparsity=args.sparsity)  # the pruned model; physically smaller
    pruner.save_pretrained(args.output)  # weights, config, remote code, tokenizer, plan, model card; atomically
    reloaded = AutoModelForCausalLM.from_pretrained(args.output, trust_remote_code=True)
    print(
        f"saved {type(reloaded).__name__} to {args.output}: "
        f"{sum(p.numel() for p in reloaded.parameters()):,} parameters, "
        f"block sparsity {pruner.plan.sparsity:.1%}, MLP widths {pruner.plan.intermediate_size_per_layer}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
