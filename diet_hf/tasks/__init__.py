"""Task registry: where each task's data lives and how an example becomes lm-eval-harness 0.4's zero-shot prompt.

Calibration and evaluation share the same formatting: a calibration text is the scored context, the task's target
delimiter and one of the continuations evaluation scores (by default one drawn per example, `calibration_answer="any"`;
the gold one with `"gold"`, the paper's), so DIET profiles the model on what evaluation will ask of it.

The package: `registry` (the registered tasks, their prompts and the dev/test halves), `data` (the data directory or
the Hub, evaluation examples, calibration draws, WikiText-2) and `own` (your own questions and texts).
"""

from .data import (
    DATA_DIR_ENV,
    CalibrationSet,
    custom_calibration,
    evaluation_examples,
    load_calibration,
    load_examples,
    resolve_data_dir,
    wikitext2_last_word_texts,
    wikitext2_text,
)
from .own import (
    CHOICE_FIELDS,
    MESSAGES_FIELD,
    SourceTexts,
    chat_calibration_request,
    chat_request,
    chat_text,
    check_chat_template,
    load_multiple_choice_source,
    load_task_source,
    multiple_choice_task,
    source_label,
)
from .registry import HALVES, PAPER_TASKS, TASKS, MultipleChoiceRequest, Task, get_task, split_half

__all__ = [
    "chat_calibration_request",
    "chat_request",
    "chat_text",
    "check_chat_template",
    "load_task_source",
    "load_multiple_choice_source",
    "multiple_choice_task",
    "SourceTexts",
    "source_label",
    "CHOICE_FIELDS",
    "MESSAGES_FIELD",
    "DATA_DIR_ENV",
    "HALVES",
    "PAPER_TASKS",
    "TASKS",
    "CalibrationSet",
    "MultipleChoiceRequest",
    "Task",
    "custom_calibration",
    "evaluation_examples",
    "get_task",
    "load_calibration",
    "load_examples",
    "resolve_data_dir",
    "wikitext2_last_word_texts",
    "wikitext2_text",
    "split_half",
]
