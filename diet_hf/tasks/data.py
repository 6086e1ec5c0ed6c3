"""Task data: the local data directory (or the Hub), evaluation examples of a half after exclusions, calibration
texts drawn from train splits, your own calibration texts, and WikiText-2."""

import json
import logging
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._checks import check_one_split, check_path, dataset_columns
from .own import SourceTexts
from .registry import DEFAULT_CALIBRATION_ANSWER, Task, check_calibration_answer, get_task, split_half

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "DIET_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """`data_dir`, else `$DIET_DATA_DIR`, else `None` (load from the Hub)."""
    if data_dir is not None:
        check_path("data_dir", data_dir)
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return None if value in (None, "") else Path(value)


# WikiText-2 on the Hub: the raw rows, as the data directory's `wikitext2/<split>.jsonl` holds them, in order
WIKITEXT2_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")


def _wikitext2_rows(split: str, data_dir) -> list[str]:
    """The rows of WikiText-2 `split`, from the data directory (`wikitext2/<split>.jsonl`), else from the Hub
    (`WIKITEXT2_HUB`); errors say where it looked."""
    if split not in ("test", "validation"):
        raise ValueError(f"`split` must be 'test' or 'validation', got {split!r}.")
    directory = resolve_data_dir(data_dir)
    if directory is not None:
        path = directory / "wikitext2" / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"WikiText-2 {split} split not found at {path}.")
        return [row["text"] for row in _read_jsonl(path)]
    return list(_hub_split("WikiText-2", *WIKITEXT2_HUB, split)["text"])


def wikitext2_last_word_texts(
    split: str = "test", *, limit: int | None = None, min_words: int = 40, data_dir: str | os.PathLike | None = None
) -> list[str]:
    """WikiText-2 `split` paragraphs as texts for `diet_hf.evaluation.last_word_accuracy` (LAMBADA's measure, which
    the shared data does not hold): every non-heading paragraph of at least `min_words` space-separated words, cut
    after its last word of letters only (WikiText's " ." and other trailing tokens dropped; a paragraph whose last
    such word comes before its `min_words // 2`-th word is skipped), the first `limit` of them, in file order. Not
    LAMBADA: its passages were filtered so that the word needs the whole passage."""
    texts = []
    for row in _wikitext2_rows(split, data_dir):
        paragraph = row.strip()
        words = paragraph.split(" ")
        if paragraph.startswith("=") or len(words) < min_words:
            continue
        last = max((i for i, word in enumerate(words) if word.isalpha()), default=None)
        if last is None or last < min_words // 2:
            continue
        texts.append(" ".join(words[: last + 1]))
        if len(texts) == limit:
            break
    return texts


def wikitext2_text(split: str, *, data_dir: str | os.PathLike | None = None) -> str:
    """WikiText-2 `split` (`"test"`: perplexity; `"validation"`: healing text), its rows joined with blank lines: from
    the data directory (`data_dir`, else `$DIET_DATA_DIR`), else from the Hub (`Salesforce/wikitext`,
    `wikitext-2-raw-v1`, the same rows)."""
    return "\n\n".join(_wikitext2_rows(split, data_dir))


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_examples(task: str | Task, split: str, *, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Loads one split of a task as normalized rows, from `data_dir` (or `$DIET_DATA_DIR`) or else from the Hub.

    Raises:
        FileNotFoundError: the split is neither in the data directory nor loadable from the Hub; the message says
            where it looked.
    """
    task = get_task(task) if isinstance(task, str) else task
    if task.examples is not None:  # your own task: its examples came with it
        if split != task.eval_split:
            raise FileNotFoundError(f"Task {task.name!r} is your own: it holds only its evaluation examples.")
        return list(task.examples)
    directory = resolve_data_dir(data_dir)
    if directory is not None:
        path = directory / task.name / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"No `{split}` split for task {task.name!r}: {path} does not exist (data directory {directory}, "
                f"from `data_dir`, `--data-dir` or ${DATA_DIR_ENV}). Point it at a folder with <task>/<split>.jsonl "
                "files."
            )
        rows = _read_jsonl(path)
    else:
        rows = _load_from_hub(task, split)
    if not rows:
        raise ValueError(f"The `{split}` split of task {task.name!r} is empty.")
    return rows


def evaluation_examples(
    task: str | Task,
    *,
    half: str | None = None,
    exclude_ids: Iterable | None = None,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """A task's evaluation examples in file order, without `exclude_ids` (e.g. the calibration examples carved from
    the evaluation split), of one `half` (`split_half`; None: both), the first `limit` of them."""
    task = get_task(task) if isinstance(task, str) else task
    excluded = {str(i) for i in exclude_ids or ()}
    docs = [d for d in load_examples(task, task.eval_split, data_dir=data_dir) if str(d["id"]) not in excluded]
    if half is not None:
        docs = [d for d in docs if split_half(task.name, str(d["id"])) == half]
    return docs[:limit] if limit is not None else docs


def _load_from_hub(task: Task, split: str) -> list[dict]:
    dataset = _hub_split(f"task {task.name!r}", task.hub_path, task.hub_name, split)
    return [task.from_hub(dict(row), idx) for idx, row in enumerate(dataset)]


def _hub_split(what: str, path: str, name: str | None, split: str):
    """`split` of the Hub dataset `path` (configuration `name`), the data of `what` where no data directory is set;
    `FileNotFoundError` saying so when it does not load."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as error:  # datasets raises many types for "not reachable / not found"
        raise FileNotFoundError(
            f"Could not load the `{split}` split of {what} from the Hub dataset {path!r}"
            f"{f' ({name})' if name else ''} and no data directory is set (`data_dir`, `--data-dir`, or "
            f"${DATA_DIR_ENV}): {error}"
        ) from error


@dataclass
class CalibrationSet:
    """Calibration texts of one task, with the ids they came from and the evaluation ids they use up."""

    task: str
    texts: list[str]
    example_ids: list[str]
    excluded_eval_ids: list[str]
    # where your own texts or questions were read (`SourceTexts.source`, `Task.data_source`); None: a registered task
    # (its data is its name's) or data whose source is not known
    source: dict | None = None


def load_calibration(
    task: str,
    *,
    num_samples: int = 100,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    answer: str = DEFAULT_CALIBRATION_ANSWER,
    render=None,
) -> CalibrationSet:
    """Draws `num_samples` calibration texts of `task` with a fixed seed (`render`: as `Task.calibration_text`'s).

    They come from the train split; where it is missing or too small, the rest is drawn from the evaluation split and
    those ids are returned in `excluded_eval_ids`, so evaluation can leave them out. Each text is an example's prompt
    and an answer: with `answer="any"` (the default) one of its choices drawn from the task's name and the example's
    id, with `"gold"` the correct one (`Task.calibration_text`). The examples drawn do not depend on `answer`.
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    check_calibration_answer(answer)
    spec = get_task(task)
    rng = random.Random(seed)
    try:
        train = load_examples(spec, spec.train_split, data_dir=data_dir) if spec.train_split else []
    except FileNotFoundError:
        train = []
    chosen = rng.sample(train, min(num_samples, len(train)))
    excluded: list[dict] = []
    if len(chosen) < num_samples:
        evaluation = load_examples(spec, spec.eval_split, data_dir=data_dir)
        needed = num_samples - len(chosen)
        if needed > len(evaluation):
            raise ValueError(
                f"Task {task!r} has only {len(train) + len(evaluation)} examples; asked for {num_samples}."
            )
        excluded = rng.sample(evaluation, needed)
    docs = chosen + excluded
    return CalibrationSet(
        task=task,
        texts=[spec.calibration_text(doc, answer, render) for doc in docs],
        example_ids=[str(doc["id"]) for doc in docs],
        excluded_eval_ids=[str(doc["id"]) for doc in excluded],
    )


def custom_calibration(
    name: str,
    data: Iterable,
    *,
    text_column: str = "text",
    answer: str = DEFAULT_CALIBRATION_ANSWER,
    render=None,
) -> CalibrationSet:
    """A user task from a list of strings, a `datasets.Dataset` with a text column, or your own multiple-choice
    `Task` (`multiple_choice_task`: each example's context and an answer, as the registered tasks calibrate: one of
    its choices drawn from the task's name and the example's id with `answer="any"`, the gold one with `"gold"`;
    texts are taken as they are; `render`: as `Task.calibration_text`'s, for questions)."""
    check_calibration_answer(answer)
    if isinstance(data, Task):
        if data.examples is None:
            raise TypeError(
                f"Custom task {name!r}: a registered `Task` is calibrated by its name, not passed as data."
            )
        return CalibrationSet(
            task=name,
            texts=[data.calibration_text(doc, answer, render) for doc in data.examples],
            example_ids=[str(doc["id"]) for doc in data.examples],
            excluded_eval_ids=[],
            source=data.data_source,
        )
    if hasattr(data, "column_names"):
        check_one_split(f"The dataset for task {name!r}", data)
        columns = dataset_columns(data)
        if text_column not in columns:
            raise ValueError(f"Dataset for task {name!r} has no `{text_column}` column; columns: {columns}.")
        texts = list(data[text_column])
    elif isinstance(data, str):  # read as a list, it would calibrate on its characters
        raise TypeError(
            f"Custom task {name!r} is one string ({data!r:.60}), not a list of texts. Pass a list of strings or a "
            f"Dataset; a file or dataset source as the command line names it is read by "
            f"`diet_hf.tasks.load_task_source({name + '=SOURCE'!r})[1]` (SOURCE a file, or "
            "DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]])."
        )
    else:
        texts = list(data)
    if not texts:
        raise ValueError(f"Custom task {name!r} has no texts: pass a non-empty list of strings or Dataset.")
    wrong = [t for t in texts if not isinstance(t, str)]  # a list: the first wrong text may be None itself
    if wrong:
        raise TypeError(
            f"Custom task {name!r} must be a list of strings or a Dataset with a text column; one of its texts is a "
            f"{type(wrong[0]).__name__}: {wrong[0]!r:.80}."
        )
    # a blank text would be profiled as its BOS alone (a dataset's empty rows, WikiText's one in three): left out, as
    # the command line leaves them out of your files and datasets; the ids keep each text's position
    kept = [i for i, text in enumerate(texts) if text.strip()]
    if not kept:
        raise ValueError(f"Custom task {name!r} has no non-empty texts: every one of its {len(texts)} is blank.")
    if len(kept) < len(texts):
        logger.info("Task %r: %d blank texts of %d left out.", name, len(texts) - len(kept), len(texts))
    return CalibrationSet(
        task=name,
        texts=[texts[i] for i in kept],
        example_ids=[f"{name}-{i}" for i in kept],
        excluded_eval_ids=[],
        source=data.source if isinstance(data, SourceTexts) else None,
    )
