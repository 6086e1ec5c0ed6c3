"""Fine-tune a pruned checkpoint on one task with PEFT LoRA and transformers' Trainer; score before and after.

The checkpoint is loaded as any user would load it from the Hub: `trust_remote_code=True`, the Auto classes. Two heads:

- `--head causal` (default): `AutoModelForCausalLM`, scored zero-shot as lm-eval scores it (`diet_hf.evaluate`)
  before and after. Each choice's log-likelihood is computed as lm-eval computes it (the continuation's tokens after
  the context), with the LM head run only at the continuation's positions (Gemma's 262k-row head would otherwise be
  most of every step). `--objective choice` (default) trains on the decision lm-eval makes: the cross-entropy of the
  softmax over the choices' scores (the task's headline metric: summed log-likelihood for `acc`, per character for
  `acc_norm`), so raising the gold answer means lowering the others. `--objective answer` is the next-token loss on
  the gold continuation alone (the usual supervised fine-tuning), which can raise every answer's probability at once.
- `--head classification`: `AutoModelForSequenceClassification` (a new linear head on the last token), trained as a
  classifier on the prompt (yes/no tasks: BoolQ, RTE); accuracy before (an untrained head) and after.

On the real model (by hand; see the README for what it measured):

    python examples/finetune_pruned.py outputs/gemma-3-270m-diet-20 --task arc_easy --data-dir ../shared/data \
        --max-steps 150 --output outputs/gemma-3-270m-diet-20-arc-easy

Training examples come from the task's train split (`--train-examples` of them, sampled), scores from one half of its
evaluation split (`--half`: test by default; choose settings on dev), the first `--eval-limit` examples of it.

Your own multiple-choice task: `--task NAME=QUESTIONS.jsonl --train-questions TRAIN.jsonl`, one question per line
(`context`, `choices`, `label`, optional `id`; see `diet-hf eval --tasks`), the first file scored before and after
(all of it, or the first `--eval-limit`; `--half` applies to registered tasks), the second trained on (its own
questions, not the ones you score).
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from diet_hf.evaluation import correct_by_task, encode_pair, evaluate, paired_bootstrap
from diet_hf.tasks import HALVES, Task, evaluation_examples, get_task, load_examples, load_multiple_choice_source

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _task(argument: str) -> Task:
    """`--task`: a registered task's name, or `NAME=FILE` of your own questions (`diet-hf eval --tasks` form)."""
    return load_multiple_choice_source(argument, flag="--task") if "=" in argument else get_task(argument)


def _train_docs(spec: Task, args) -> list[dict]:
    """`--train-examples` training questions, sampled: the registered task's train split, or `--train-questions`."""
    if spec.examples is not None:  # your own task: its training questions come from their own file
        if not args.train_questions:
            raise ValueError(f"--task {spec.name}=...: give the questions to train on with --train-questions FILE.")
        docs = list(
            load_multiple_choice_source(f"{spec.name}={args.train_questions}", flag="--train-questions").examples
        )
    elif spec.train_split is None:
        raise ValueError(f"Task {spec.name!r} has no train split to fine-tune on.")
    else:
        docs = load_examples(spec, spec.train_split, data_dir=args.data_dir)
    return random.Random(args.seed).sample(docs, min(args.train_examples, len(docs)))


def _choice_rows(task, docs, tokenizer, max_length):
    """Per question: each choice as (input ids, first scored position, continuation ids), as lm-eval encodes it.

    A row holds the context and all but the last continuation token; position `first + j` predicts continuation
    token `j`. Rows longer than `max_length` lose tokens from the left, as lm-eval truncates them.
    """
    spec, rows = task if isinstance(task, Task) else get_task(task), []
    for doc in docs:
        request = spec.build(doc)
        choices = []
        for context, continuation in zip(request.contexts, request.continuations):
            context_ids, continuation_ids = encode_pair(tokenizer, context, request.delimiter + continuation)
            ids = (context_ids + continuation_ids)[:-1]
            cut = max(0, len(ids) - max_length)
            choices.append((ids[cut:], len(context_ids) - 1 - cut, continuation_ids))
        norms = [len(c) if spec.headline_metric == "acc_norm" else 1 for c in request.continuations]
        rows.append({"choices": choices, "norms": norms, "label": request.label})
    return rows


def _collate_choices(pad_id):
    """Questions -> one right-padded batch of distinct rows (choices that share their row, as one-token answers after
    one prompt do, run it once) and, per scored token, its row, position, target and choice."""

    def collate(questions):
        row_of, rows, picks, norms, labels, question_of = {}, [], [], [], [], []
        for q, question in enumerate(questions):
            for (ids, first, continuation), norm in zip(question["choices"], question["norms"]):
                row = row_of.setdefault(tuple(ids), len(rows))
                if row == len(rows):
                    rows.append(ids)
                picks += [(row, first + j, token, len(norms)) for j, token in enumerate(continuation)]
                norms.append(norm)
                question_of.append(q)
            labels.append(question["label"])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "picks": torch.tensor(picks),
            "choice_norms": torch.tensor(norms, dtype=torch.float32),
            "choice_question": torch.tensor(question_of),
            "labels": torch.tensor(labels),
        }

    return collate


def _token_logprobs(model, batch) -> torch.Tensor:
    """log p(target) at every scored token of `batch`, the LM head run only there (as the evaluator runs it)."""
    states = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    picks = batch["picks"]
    # (scored tokens, vocab): Gemma's head, with its final soft-capping, on the scored positions alone
    logits = model.get_output_embeddings()(states.last_hidden_state[picks[:, 0], picks[:, 1]]).float()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.log_softmax(-1).gather(1, picks[:, 2:3].to(logits.device)).squeeze(1)


def choice_scores(model, batch, token_logprobs=None) -> torch.Tensor:
    """Each choice's score: its continuation's summed log-likelihood, divided by its length in characters where the
    task's headline metric is `acc_norm` (lm-eval's decision is the highest score)."""
    if token_logprobs is None:
        token_logprobs = _token_logprobs(model, batch)
    norms = batch["choice_norms"].to(token_logprobs.device)
    sums = torch.zeros_like(norms).index_add(0, batch["picks"][:, 3], token_logprobs)
    return sums / norms


class ChoiceTrainer(Trainer):
    """`Trainer` whose loss is computed from `choice_scores` (`objective`: "choice" or "answer", see the docstring)."""

    def __init__(self, *args, objective: str = "choice", **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        token_logprobs = _token_logprobs(model, inputs)
        scores = choice_scores(model, inputs, token_logprobs)
        question, labels = inputs["choice_question"], inputs["labels"]
        gold = torch.zeros_like(question, dtype=torch.bool)
        gold[torch.searchsorted(question, torch.arange(len(labels), device=question.device)) + labels] = True
        if self.objective == "answer":  # next-token loss on the gold continuations' tokens
            loss = -token_logprobs[gold[inputs["picks"][:, 3]]].mean()
        else:  # cross-entropy over each question's choices: log-sum-exp of its scores minus the gold one's
            top = torch.full((len(labels),), -torch.inf, device=scores.device)
            top = top.scatter_reduce(0, question, scores.detach(), reduce="amax")
            total = torch.zeros_like(top).index_add(0, question, (scores - top[question]).exp())
            loss = (top + total.log() - scores[gold]).mean()
        return (loss, {"scores": scores}) if return_outputs else loss


def _classification_rows(task, docs, tokenizer, max_length):
    spec = task if isinstance(task, Task) else get_task(task)
    rows = []
    for doc in docs:
        request = spec.build(doc)
        if len(set(request.contexts)) != 1:
            raise ValueError(f"--head classification needs a one-prompt task (BoolQ, RTE); {spec.name!r} is not.")
        ids = tokenizer(request.contexts[0], add_special_tokens=True)["input_ids"][-max_length:]
        rows.append({"input_ids": ids, "labels": request.label})
    return rows


def _collate_classification(pad_id):
    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: the classifier reads the last non-pad token
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}

    return collate


@torch.no_grad()
def _classification_correct(model, spec: Task, tokenizer, args) -> list[int]:
    docs = evaluation_examples(spec, half=_half(spec, args), limit=args.eval_limit, data_dir=args.data_dir)
    rows = _classification_rows(spec, docs, tokenizer, args.max_length)
    collate, correct = _collate_classification(tokenizer.pad_token_id), []
    model.eval()
    for start in range(0, len(rows), 8):
        batch = collate(rows[start : start + 8])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += (logits.argmax(-1) == batch["labels"]).int().tolist()
    return correct


def _half(spec: Task, args) -> str | None:
    """`--half` of a registered task; your own questions are all scored (the file is your held-out set)."""
    return None if spec.examples is not None else args.half


def _correct(model, head, spec: Task, tokenizer, args) -> list[int]:
    """1 or 0 per scored example of the task's `--half`, in a fixed order (the causal head: its headline metric)."""
    if head == "causal":
        result = evaluate(
            model,
            tokenizer,
            [spec],
            limit=args.eval_limit,
            half=_half(spec, args),
            data_dir=args.data_dir,
            return_predictions=True,
            disable_progress=True,
        )
        return correct_by_task(result)[spec.name]
    return _classification_correct(model, spec, tokenizer, args)


def _summary(before: list[int], after: list[int], resamples: int = 2000) -> dict:
    """Accuracy before and after with standard errors, and the paired-bootstrap 95% interval of the difference
    (`diet_hf.evaluation.paired_bootstrap`: the same examples resampled for both)."""
    comparison = paired_bootstrap(after, before, resamples=resamples)
    a, b = torch.tensor(after, dtype=torch.float64), torch.tensor(before, dtype=torch.float64)
    stderr = lambda x: (x.mean() * (1 - x.mean()) / max(len(x) - 1, 1)).sqrt().item()  # noqa: E731
    return {
        "n": len(a),
        "before": b.mean().item(),
        "before_stderr": stderr(b),
        "after": a.mean().item(),
        "after_stderr": stderr(a),
        "difference": comparison["difference"],
        "difference_ci95": comparison["ci95"],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="Hub id or local directory of a pruned checkpoint")
    parser.add_argument(
        "--task", default="rte", help="a registered task, or NAME=QUESTIONS.jsonl: your own questions, scored"
    )
    parser.add_argument("--train-questions", default=None, help="with --task NAME=FILE: the questions to train on")
    parser.add_argument("--head", choices=("causal", "classification"), default="causal")
    parser.add_argument(
        "--objective", choices=("choice", "answer"), default="choice", help="the causal head's loss (see above)"
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-limit", type=int, default=500, help="examples scored before and after")
    parser.add_argument(
        "--half", choices=HALVES, default="test", help="evaluation half scored (choose settings on dev)"
    )
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="save the merged fine-tuned model here")
    return parser


def _load(args, spec: Task, docs):
    """The checkpoint through the Auto class of `--head`, and the PEFT task type its LoRA adapters are for."""
    import peft

    if args.head == "causal":
        return AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True), peft.TaskType.CAUSAL_LM
    labels = max(len(spec.build(doc).continuations) for doc in docs)  # 2 for BoolQ and RTE
    model = AutoModelForSequenceClassification.from_pretrained(args.model, trust_remote_code=True, num_labels=labels)
    return model, peft.TaskType.SEQ_CLS


def _train(model, task_type, spec: Task, docs, tokenizer, args):
    """LoRA adapters on every projection, trained by `Trainer` (`ChoiceTrainer` for the causal head), then merged into
    the weights; returns the merged model and the trainer's log history (the loss curve and `train_runtime`)."""
    import peft

    pad = tokenizer.pad_token_id
    if args.head == "causal":
        rows, collate = _choice_rows(spec, docs, tokenizer, args.max_length), _collate_choices(pad)
    else:
        rows, collate = _classification_rows(spec, docs, tokenizer, args.max_length), _collate_classification(pad)
    lora = peft.LoraConfig(task_type=task_type, r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=LORA_MODULES)
    model = peft.get_peft_model(model, lora)
    model.print_trainable_parameters()
    with tempfile.TemporaryDirectory(prefix="finetune_pruned-") as scratch:  # Trainer's output_dir; nothing kept
        trainer = (ChoiceTrainer if args.head == "causal" else Trainer)(
            model=model,
            args=TrainingArguments(
                output_dir=scratch,
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
            data_collator=collate,
            **({"objective": args.objective} if args.head == "causal" else {}),
        )
        trainer.train()
    return model.merge_and_unload(), trainer.state.log_history


def _save(model, tokenizer, result: dict, output: str) -> None:
    """Writes the model, its tokenizer and `finetune_result.json` into a new directory beside `output`, then renames it
    to `output`: an interrupted save leaves no half-written model."""
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "finetune_result.json").write_text(json.dumps(result, indent=1))
        tmp.chmod(0o755)  # mkdtemp's directory is private to its owner; a saved model is not
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.output and Path(args.output).exists():
        parser.error(f"--output {args.output!r} exists; name a new directory.")
    try:  # your questions are read and checked before the model loads
        spec = _task(args.task)
        docs = _train_docs(spec, args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    model, task_type = _load(args, spec, docs)
    if args.head == "classification":
        model.config.pad_token_id = tokenizer.pad_token_id
    label = args.head if args.head == "classification" else f"causal, {args.objective}"
    before = _correct(model, args.head, spec, tokenizer, args)
    scored = _half(spec, args) or "all"
    print(f"{spec.name} ({label}) before fine-tuning: {sum(before) / len(before):.4f} ({scored}, n={len(before)})")

    model, log_history = _train(model, task_type, spec, docs, tokenizer, args)
    after = _correct(model, args.head, spec, tokenizer, args)
    summary = _summary(before, after)
    print(
        f"{spec.name} ({label}) after fine-tuning: {summary['after']:.4f} ± {summary['after_stderr']:.4f} "
        f"(before {summary['before']:.4f} ± {summary['before_stderr']:.4f}; difference {summary['difference']:+.4f}, "
        "paired-bootstrap 95% interval [{:+.4f}, {:+.4f}])".format(*summary["difference_ci95"])
    )
    if args.output:
        # "task" among the arguments: the --task argument as given
        result = {**summary, **vars(args), "correct_before": before, "correct_after": after}
        _save(model, tokenizer, {**result, "log_history": log_history}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
