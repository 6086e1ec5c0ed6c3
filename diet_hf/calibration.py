"""What `DietPruner.profile(tasks=)` accepts, turned into calibration sets: registered task names, your own tasks'
texts, questions (`Task`s), conversations (rendered in the tokenizer's chat template) or token batches (checked)."""

import logging
from collections.abc import Iterable, Mapping

import torch

from ._checks import check_one_split, dataset_columns
from .tasks import MESSAGES_FIELD, Task, chat_text, custom_calibration, load_calibration

logger = logging.getLogger(__name__)


def _checked_token_batches(name: str, data) -> list:
    """`data` as a list of token batches, each a mapping with 2-D `input_ids` and `attention_mask` tensors of one
    shape (what a tokenizer returns with `return_tensors="pt"`); `TypeError` / `ValueError` naming the task and the
    batch otherwise."""
    batches = list(data)
    if not batches:
        raise ValueError(f"Custom task {name!r}: no token batches.")
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping) or not {"input_ids", "attention_mask"} <= set(batch):
            got = f"a mapping of {sorted(batch)}" if isinstance(batch, Mapping) else type(batch).__name__
            rows = " (rows with a `text` field: `[row['text'] for row in rows]`)" if isinstance(batch, Mapping) else ""
            raise TypeError(
                f"Custom task {name!r}: token batch {i} must be a mapping with `input_ids` and `attention_mask` "
                f"tensors (a tokenizer's output with `return_tensors='pt'`), got {got}; or pass a list of "
                f"strings{rows} or a `datasets.Dataset` with a `text` column."
            )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if not (torch.is_tensor(ids) and torch.is_tensor(mask) and ids.dim() == 2 and ids.shape == mask.shape):
            shapes = [tuple(t.shape) if torch.is_tensor(t) else type(t).__name__ for t in (ids, mask)]
            raise ValueError(
                f"Custom task {name!r}: token batch {i} needs 2-D `input_ids` and `attention_mask` tensors of one "
                f"shape (batch, sequence), got {shapes[0]} and {shapes[1]}."
            )
    return batches


def _is_token_batches(data) -> bool:
    if isinstance(data, Task):  # your own multiple-choice task: its questions' texts
        return False
    if isinstance(data, (str, list, tuple)) and (not data or isinstance(data[0], str)):
        return False
    if hasattr(data, "column_names"):
        return False
    return True


def rendered_conversations(name: str, data, tokenizer):
    """Your conversations (a list of message lists, each message a `{"role", "content"}`; or a `datasets.Dataset`
    with a `messages` column and no `text`) as the texts the tokenizer's chat template renders (`tasks.chat_text`);
    any other data as it is."""
    if hasattr(data, "column_names"):
        columns = dataset_columns(data)
        if "text" in columns or MESSAGES_FIELD not in columns:
            return data
        data = list(data[MESSAGES_FIELD])
    elif not (isinstance(data, (list, tuple)) and data and isinstance(data[0], (list, tuple))):
        return data
    if tokenizer is None:
        raise ValueError(
            f"Task {name!r} holds conversations: rendering them needs the chat template of a tokenizer; pass "
            "`tokenizer` to `DietPruner(model, tokenizer)`."
        )
    return [chat_text(tokenizer, messages) for messages in data]


def named_tasks(tasks) -> dict:
    """`profile(tasks=)` as {name: its data, or None for a registered task read by its name}."""
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    if not isinstance(tasks, Iterable):
        raise TypeError(
            f"`tasks` must be task names, a dict of task name to data, or a `Task`, got {type(tasks).__name__}."
        )
    if isinstance(tasks, Mapping):
        check_one_split("`tasks`", tasks, use="{{'mine': {split}}}")  # a mapping, but of splits, not task names
        named = dict(tasks)
    else:
        named = {}
        for task in tasks:  # names, and `Task`s under their own names
            if isinstance(task, Task):
                named[task.name] = task if task.examples is not None else None  # a registered one: by its name
            else:
                named[task] = None
    if not named:
        raise ValueError("`tasks` is empty; pass task names or custom task data.")
    return named


def calibration_sets(named: dict, options, data_dir, render=None) -> dict:
    """Each task's calibration data: a registered task's sample, your token batches as given, your texts (questions,
    registered or yours, through `render`: `Task.calibration_text`'s)."""
    calibration = {}
    for name, data in named.items():
        if data is None:
            calibration[name] = load_calibration(
                name,
                num_samples=options.num_samples,
                seed=options.seed,
                data_dir=data_dir,
                answer=options.calibration_answer,
                render=render,
            )
        elif _is_token_batches(data):
            calibration[name] = _checked_token_batches(name, data)  # kept: iterative pruning profiles again
        else:
            calibration[name] = custom_calibration(name, data, answer=options.calibration_answer, render=render)
            count = len(calibration[name].texts)
            if count > 10 * options.num_samples:  # `num_samples` draws from registered tasks, not from yours
                logger.warning(
                    "Task %r: all %d of your texts are profiled (`num_samples`=%d applies to registered tasks); "
                    "pass a sample of them to profile faster.",
                    name,
                    count,
                    options.num_samples,
                )
    return calibration
