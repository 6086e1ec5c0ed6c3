"""Fine-tune a pruned checkpoint on one task with PEFT LoRA and transformers' Trainer; score before and after.

The checkpoint is loaded as any user would load it from the Hub: `trust_remote_code=True`, the Auto classes. Two heads:

- `--head causal` (default): `AutoModelForCausalLM`, trained on the task's prompt + gold answer (loss on the
  answer tokens only), scored zero-shot as lm-eval scores it (`diet_hf.evaluate`) before and after.
- `--head classification`: `AutoModelForSequenceClassification` (a new linear head on the last token), trained as a
  classifier on the prompt (yes/no tasks: BoolQ, RTE); accuracy before (an untrained head) and after.

On the real model (by hand; a few minutes per 100 steps on 2 CPU cores):

    python examples/finetune_pruned.py outputs/gemma-3-270m-diet-20 --task rte --data-dir ../shared/data \
        --max-steps 200 --output outputs/gemma-3-270m-diet-20-rte

Training examples come from the task's train split, scores from the test half of its evaluation split.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from diet_hf.evaluation import evaluate
from diet_hf.tasks import get_task, load_examples, split_half

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _train_docs(task: str, data_dir, count: int, seed: int) -> list[dict]:
    spec = get_task(task)
    if spec.train_split is None:
        raise ValueError(f"Task {task!r} has no train split to fine-tune on.")
    docs = load_examples(spec, spec.train_split, data_dir=data_dir)
    return random.Random(seed).sample(docs, min(count, len(docs)))


def _causal_rows(task, docs, tokenizer, max_length):
    """Prompt + gold answer, labels only on the answer tokens (the prompt is context, as lm-eval scores it)."""
    spec, rows = get_task(task), []
    for doc in docs:
        request = spec.build(doc)
        context = tokenizer(request.contexts[request.label], add_special_tokens=True)["input_ids"]
        answer = tokenizer(request.delimiter + request.continuations[request.label], add_special_tokens=False)
        ids = (context + answer["input_ids"])[-max_length:]
        labels = ([-100] * len(context) + answer["input_ids"])[-max_length:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def _classification_rows(task, docs, tokenizer, max_length):
    spec = get_task(task)
    rows = []
    for doc in docs:
        request = spec.build(doc)
        if len(set(request.contexts)) != 1:
            raise ValueError(f"--head classification needs a one-prompt task (BoolQ, RTE); {task!r} is not.")
        ids = tokenizer(request.contexts[0], add_special_tokens=True)["input_ids"][-max_length:]
        rows.append({"input_ids": ids, "labels": request.label})
    return rows


def _collate(pad_id):
    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        sequence_labels = isinstance(rows[0]["labels"], list)
        labels = torch.full((len(rows), width), -100) if sequence_labels else torch.tensor([r["labels"] for r in rows])
        for i, r in enumerate(rows):  # right padding: the classifier reads the last non-pad token
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
            if sequence_labels:
                labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


@torch.no_grad()
def _classification_accuracy(model, task, tokenizer, data_dir, limit, max_length) -> float:
    spec = get_task(task)
    docs = [
        d for d in load_examples(spec, spec.eval_split, data_dir=data_dir) if split_half(task, str(d["id"])) == "test"
    ]
    rows = _classification_rows(task, docs[:limit], tokenizer, max_length)
    collate, correct = _collate(tokenizer.pad_token_id), 0
    model.eval()
    for start in range(0, len(rows), 8):
        batch = collate(rows[start : start + 8])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(rows)


def _score(model, head, task, tokenizer, args) -> float:
    if head == "causal":
        result = evaluate(
            model, tokenizer, [task], limit=args.eval_limit, half="test", data_dir=args.data_dir, disable_progress=True
        )
        return result["average"]
    return _classification_accuracy(model, task, tokenizer, args.data_dir, args.eval_limit, args.max_length)


def main(argv=None) -> int:
    import peft

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="Hub id or local directory of a pruned checkpoint")
    parser.add_argument("--task", default="rte")
    parser.add_argument("--head", choices=("causal", "classification"), default="causal")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-limit", type=int, default=200, help="test-half examples scored before and after")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="save the merged fine-tuned model here")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    if args.head == "causal":
        model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True)
        task_type = peft.TaskType.CAUSAL_LM
    else:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, trust_remote_code=True, num_labels=2)
        model.config.pad_token_id = tokenizer.pad_token_id
        task_type = peft.TaskType.SEQ_CLS
    before = _score(model, args.head, args.task, tokenizer, args)
    print(f"{args.task} ({args.head}) before fine-tuning: {before:.4f}")

    docs = _train_docs(args.task, args.data_dir, args.train_examples, args.seed)
    make_rows = _causal_rows if args.head == "causal" else _classification_rows
    rows = make_rows(args.task, docs, tokenizer, args.max_length)
    lora = peft.LoraConfig(task_type=task_type, r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=LORA_MODULES)
    model = peft.get_peft_model(model, lora)
    model.print_trainable_parameters()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(Path(args.output or "/tmp/finetune_pruned") / "checkpoints"),
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            max_steps=args.max_steps,
            warmup_steps=max(1, args.max_steps // 20),
            logging_steps=max(1, args.max_steps // 10),
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            use_cpu=not torch.cuda.is_available(),
            remove_unused_columns=False,
        ),
        train_dataset=rows,
        data_collator=_collate(tokenizer.pad_token_id),
    )
    trainer.train()
    model = model.merge_and_unload()
    after = _score(model, args.head, args.task, tokenizer, args)
    print(f"{args.task} ({args.head}) after fine-tuning: {after:.4f} ({after - before:+.4f})")
    if args.output:
        model.save_pretrained(args.output)
        tokenizer.save_pretrained(args.output)
        Path(args.output, "finetune_result.json").write_text(
            json.dumps(
                {"task": args.task, "head": args.head, "before": before, "after": after, **vars(args)}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
