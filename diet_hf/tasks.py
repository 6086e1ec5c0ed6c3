"""Task registry: where each task's data lives and how an example becomes lm-eval-harness 0.4's zero-shot prompt.

Calibration and evaluation share the same formatting: a calibration text is the scored context, the task's target
delimiter and the gold continuation, so DIET profiles the model on exactly what evaluation will ask of it.
"""

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "load_task_source",
    "load_multiple_choice_source",
    "multiple_choice_task",
    "DATA_DIR_ENV",
    "HALVES",
    "TASKS",
    "CalibrationSet",
    "MultipleChoiceRequest",
    "Task",
    "evaluation_examples",
    "get_task",
    "load_calibration",
    "load_examples",
    "resolve_data_dir",
    "wikitext2_last_word_texts",
    "wikitext2_text",
    "split_half",
]

DATA_DIR_ENV = "DIET_DATA_DIR"
# The two halves of every task's evaluation examples (DESIGN.md section 5): recipes and defaults are chosen on `dev`,
# reported numbers come from `test`.
HALVES = ("dev", "test")


def split_half(task: str, example_id: str) -> str:
    """`"dev"` or `"test"`: the half of `task`'s evaluation examples that `example_id` belongs to.

    The first 8 bytes of SHA-256 of `"{task}/{example_id}"`, read as a big-endian integer: even is dev, odd is test.
    Deterministic, independent of file order and of which examples calibration excluded, and about half and half.
    """
    digest = hashlib.sha256(f"{task}/{example_id}".encode()).digest()
    return HALVES[int.from_bytes(digest[:8], "big") % 2]


@dataclass(frozen=True)
class MultipleChoiceRequest:
    """One question as lm-eval scores it: `contexts[i]` + `delimiter` + `continuations[i]` for every choice `i`."""

    example_id: str
    contexts: list[str]
    continuations: list[str]
    label: int
    delimiter: str = " "


@dataclass(frozen=True)
class Task:
    """A multiple-choice task: its data sources and its prompt (lm-eval-harness 0.4 default template)."""

    name: str
    hub_path: str
    hub_name: str | None
    eval_split: str
    train_split: str | None
    build: Callable[[dict], MultipleChoiceRequest] = field(repr=False)
    from_hub: Callable[[dict, int], dict] = field(repr=False)
    # Headline metric (DESIGN.md section 4): `acc` for BoolQ, RTE, WinoGrande, `acc_norm` for the others.
    headline_metric: str = "acc_norm"
    # The metrics lm-eval 0.4 reports for the task: `acc` (highest log-likelihood) and `acc_norm` (per character);
    # WinoGrande scores one shared continuation after different contexts, so lm-eval reports `acc` only.
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    # Your own task (`multiple_choice_task`): its evaluation examples, held in memory instead of a data source.
    examples: tuple[dict, ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.headline_metric not in self.metrics:
            raise ValueError(
                f"Task {self.name!r}: `headline_metric` {self.headline_metric!r} is not one of its metrics "
                f"{self.metrics}."
            )

    def calibration_text(self, doc: dict) -> str:
        """The scored prompt followed by the gold answer, as one calibration text."""
        request = self.build(doc)
        return request.contexts[request.label] + request.delimiter + request.continuations[request.label]


def _hellaswag_preprocess(text: str) -> str:
    # lm-eval's hellaswag `preprocess`.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _single_context(doc_id: str, context: str, choices: list[str], label: int) -> MultipleChoiceRequest:
    return MultipleChoiceRequest(doc_id, [context] * len(choices), list(choices), int(label))


def _boolq(doc):
    return _single_context(
        doc["id"], f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"], doc["label"]
    )


def _rte(doc):
    context = f"{doc['premise']}\nQuestion: {doc['hypothesis']} True or False?\nAnswer:"
    return _single_context(doc["id"], context, ["True", "False"], doc["label"])


def _hellaswag(doc):
    context = _hellaswag_preprocess(doc["query"])
    return _single_context(doc["id"], context, [_hellaswag_preprocess(e) for e in doc["endings"]], doc["label"])


def _winogrande(doc):
    # Partial scoring: each option fills the blank of the context; the shared remainder is the scored continuation.
    sentence = doc["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + doc["option1"], sentence[:blank] + doc["option2"]]
    remainder = sentence[blank + 1 :].strip()
    return MultipleChoiceRequest(doc["id"], contexts, [remainder, remainder], int(doc["label"]))


def _arc(doc):
    return _single_context(doc["id"], f"Question: {doc['question']}\nAnswer:", doc["choices"]["text"], doc["label"])


def _openbookqa(doc):
    return _single_context(doc["id"], doc["question_stem"], doc["choices"]["text"], doc["label"])


def _piqa(doc):
    return _single_context(doc["id"], f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"])


# Hub rows -> the normalized schema of the local JSONL files (`shared/data/README.md`).
def _hub_boolq(row, idx):
    return {**row, "id": f"boolq-{row.get('idx', idx)}"}


def _hub_rte(row, idx):
    return {
        "id": f"rte-{row.get('idx', idx)}",
        "premise": row["sentence1"],
        "hypothesis": row["sentence2"],
        "label": row["label"],
    }


def _hub_hellaswag(row, idx):
    query = row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "id": f"hellaswag-{row.get('ind', idx)}",
        "query": query,
        "endings": row["endings"],
        "label": int(row["label"]),
    }


def _hub_winogrande(row, idx):
    return {**row, "id": f"winogrande-{idx}", "label": int(row["answer"]) - 1}


def _hub_keyed_choices(row, idx):
    return {**row, "id": row.get("id", str(idx)), "label": row["choices"]["label"].index(row["answerKey"])}


def _hub_piqa(row, idx):
    return {**row, "id": f"piqa-{idx}"}


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("boolq", "super_glue", "boolq", "validation", "train", _boolq, _hub_boolq, "acc"),
        Task("rte", "nyu-mll/glue", "rte", "validation", "train", _rte, _hub_rte, "acc"),
        Task("hellaswag", "Rowan/hellaswag", None, "validation", "train", _hellaswag, _hub_hellaswag),
        Task(
            "winogrande",
            "allenai/winogrande",
            "winogrande_xl",
            "validation",
            "train",
            _winogrande,
            _hub_winogrande,
            "acc",
            metrics=("acc",),
        ),
        Task("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test", "train", _arc, _hub_keyed_choices),
        Task("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test", "train", _arc, _hub_keyed_choices),
        Task("openbookqa", "allenai/openbookqa", "main", "test", "train", _openbookqa, _hub_keyed_choices),
        Task("piqa", "ybisk/piqa", None, "validation", "train", _piqa, _hub_piqa),
    )
}
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def get_task(name: str) -> Task:
    """Returns the registered task `name`; `ValueError` lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """`data_dir`, else `$DIET_DATA_DIR`, else `None` (load from the Hub)."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return None if value in (None, "") else Path(value)


def _wikitext2_path(split: str, data_dir) -> Path:
    """The JSONL file of WikiText-2 `split` in the data directory (checked: the split's name, the directory, the
    file)."""
    if split not in ("test", "validation"):
        raise ValueError(f"`split` must be 'test' or 'validation', got {split!r}.")
    directory = resolve_data_dir(data_dir)
    if directory is None:
        raise ValueError("WikiText-2 is read from a data directory: pass `data_dir` or set DIET_DATA_DIR.")
    path = directory / "wikitext2" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"WikiText-2 {split} split not found at {path}.")
    return path


def wikitext2_last_word_texts(
    split: str = "test", *, limit: int | None = None, min_words: int = 40, data_dir: str | os.PathLike | None = None
) -> list[str]:
    """WikiText-2 `split` paragraphs as texts for `diet_hf.evaluation.last_word_accuracy` (LAMBADA's measure, which
    the shared data does not hold): every non-heading paragraph of at least `min_words` space-separated words, cut
    after its last word of letters only (WikiText's " ." and other trailing tokens dropped; a paragraph whose last
    such word comes before its `min_words // 2`-th word is skipped), the first `limit` of them, in file order. Not
    LAMBADA: its passages were filtered so that the word needs the whole passage."""
    path = _wikitext2_path(split, data_dir)
    texts = []
    for row in _read_jsonl(path):
        paragraph = row["text"].strip()
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
    """WikiText-2 `split` (`"test"`: perplexity; `"validation"`: healing text) from the data directory, its rows
    joined with blank lines."""
    path = _wikitext2_path(split, data_dir)
    return "\n\n".join(row["text"] for row in _read_jsonl(path))


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
                f"from `data_dir` or ${DATA_DIR_ENV}). Point `data_dir` at a folder with <task>/<split>.jsonl files."
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
    import datasets

    try:
        dataset = datasets.load_dataset(task.hub_path, task.hub_name, split=split)
    except Exception as error:  # datasets raises many types for "not reachable / not found"
        raise FileNotFoundError(
            f"Could not load the `{split}` split of task {task.name!r} from the Hub dataset {task.hub_path!r}"
            f"{f' ({task.hub_name})' if task.hub_name else ''} and no data directory is set (`data_dir` or "
            f"${DATA_DIR_ENV}): {error}"
        ) from error
    return [task.from_hub(dict(row), idx) for idx, row in enumerate(dataset)]


@dataclass
class CalibrationSet:
    """Calibration texts of one task, with the ids they came from and the evaluation ids they use up."""

    task: str
    texts: list[str]
    example_ids: list[str]
    excluded_eval_ids: list[str]


def load_calibration(
    task: str, *, num_samples: int = 100, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> CalibrationSet:
    """Draws `num_samples` calibration texts of `task` with a fixed seed.

    They come from the train split; where it is missing or too small, the rest is drawn from the evaluation split and
    those ids are returned in `excluded_eval_ids`, so evaluation can leave them out.
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
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
        texts=[spec.calibration_text(doc) for doc in docs],
        example_ids=[str(doc["id"]) for doc in docs],
        excluded_eval_ids=[str(doc["id"]) for doc in excluded],
    )


def custom_calibration(name: str, data: Iterable, *, text_column: str = "text") -> CalibrationSet:
    """A user task from a list of strings, a `datasets.Dataset` with a text column, or your own multiple-choice
    `Task` (`multiple_choice_task`: each example's context and gold choice, as the registered tasks calibrate)."""
    if isinstance(data, Task):
        if data.examples is None:
            raise TypeError(
                f"Custom task {name!r}: a registered `Task` is calibrated by its name, not passed as data."
            )
        return CalibrationSet(
            task=name,
            texts=[data.calibration_text(doc) for doc in data.examples],
            example_ids=[str(doc["id"]) for doc in data.examples],
            excluded_eval_ids=[],
        )
    if hasattr(data, "column_names"):
        if text_column not in data.column_names:
            raise ValueError(f"Dataset for task {name!r} has no `{text_column}` column; columns: {data.column_names}.")
        texts = list(data[text_column])
    else:
        texts = list(data)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"Custom task {name!r} must be a non-empty list of strings or a Dataset with a text column.")
    return CalibrationSet(
        task=name, texts=texts, example_ids=[f"{name}-{i}" for i in range(len(texts))], excluded_eval_ids=[]
    )


# Your own multiple-choice task: one row per question, `context` (the prompt exactly as scored), `choices` (each scored
# as `context` + " " + choice, lm-eval's default target delimiter) and `label` (the gold choice's 0-based index, as in
# the shared data's files); `id` is optional.
CHOICE_FIELDS = ("context", "choices", "label")


def _question_text(row: dict) -> str:
    """A checked question's calibration text: its context and gold choice, as `Task.calibration_text` makes it."""
    return row["context"] + " " + row["choices"][row["label"]]


def _own_choice(doc):
    return _single_context(doc["id"], doc["context"], doc["choices"], doc["label"])


def _no_hub(row, idx):
    raise FileNotFoundError("Your own task's examples come with it; it has no Hub source.")


def _checked_choice_row(row, index: int, where: str) -> dict:
    """One row of your own multiple-choice task, checked: `where` names the row in the error."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with {', '.join(CHOICE_FIELDS)}, got {type(row).__name__}.")
    missing = [key for key in CHOICE_FIELDS if key not in row]
    if missing:
        raise ValueError(f"{where}: no {', '.join(map(repr, missing))} field (a question needs {CHOICE_FIELDS}).")
    context, choices, label = row["context"], row["choices"], row["label"]
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"{where}: `context` must be a non-empty string, got {context!r}.")
    if (
        not isinstance(choices, (list, tuple))
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise ValueError(f"{where}: `choices` must be a list of at least two non-empty strings, got {choices!r}.")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise ValueError(
            f"{where}: `label` must be the gold choice's index, an integer from 0 to {len(choices) - 1}, "
            f"got {label!r}."
        )
    example_id = row.get("id", index)
    if not isinstance(example_id, (str, int)) or isinstance(example_id, bool):
        raise ValueError(f"{where}: `id` must be a string or an integer, got {example_id!r}.")
    return {**row, "id": str(example_id), "choices": list(choices)}


def multiple_choice_task(
    name: str, rows: Iterable[dict], *, headline_metric: str = "acc", source: str | None = None
) -> Task:
    """Your own multiple-choice task, scored as lm-eval scores one zero-shot: every choice's log-likelihood after its
    question's context, `acc` the share where the gold choice scores highest, `acc_norm` the same per character.

    Args:
        name (`str`): the task's name in results (not a registered task's).
        rows (iterable of `dict`, or a `datasets.Dataset`): one question each: `context` (the prompt exactly as scored,
            e.g. `"Question: ...\\nAnswer:"`), `choices` (at least two; each scored as `context + " " + choice`)
            and `label` (the gold choice's index); optionally `id` (a string or integer, unique), else the row's
            position. The dev/test halves (`half=`) hash these ids, as for the registered tasks.
        headline_metric (`str`, *optional*, defaults to `"acc"`): the metric `evaluate` averages (`"acc_norm"` for
            choices of very different lengths, as lm-eval reports HellaSwag and ARC).
        source (`str`, *optional*): where the rows came from, for error messages.

    The same task passed to `DietPruner.profile(tasks={name: task})` calibrates on each question's context and gold
    choice, as the registered tasks do (give it training questions there, not the ones you evaluate).
    """
    where = f"task {name!r}" + (f" ({source})" if source else "")
    examples = [_checked_choice_row(row, i, f"{where} row {i}") for i, row in enumerate(rows)]
    return _own_task(name, examples, headline_metric, where)


def _own_task(name: str, examples: list[dict], headline_metric: str, where: str) -> Task:
    """The `Task` of your own questions, each already checked (`_checked_choice_row`); `where` names them in errors."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")
    if name in TASKS:
        raise ValueError(f"{name!r} is a registered task; give your own task another name.")
    if headline_metric not in ("acc", "acc_norm"):
        raise ValueError(f"`headline_metric` must be 'acc' or 'acc_norm', got {headline_metric!r}.")
    if not examples:
        raise ValueError(f"{where} holds no questions.")
    seen = set()
    for example in examples:
        if example["id"] in seen:
            raise ValueError(f"{where}: `id` {example['id']!r} appears twice; ids must be unique.")
        seen.add(example["id"])
    return Task(name, "", None, "evaluation", None, _own_choice, _no_hub, headline_metric, examples=tuple(examples))


def load_multiple_choice_source(argument: str, *, flag: str = "--tasks", headline_metric: str = "acc") -> Task:
    """One `diet-hf eval --tasks` word of the form `NAME=SOURCE`: your own multiple-choice questions
    (`multiple_choice_task`) from a `.jsonl` / `.json` file (one object per line) or a `datasets` source
    `ID_OR_DIR[:SPLIT]` (split `test` by default) with `context`, `choices` and `label` columns, its headline
    `headline_metric`. Read and checked here, before any model loads; errors name `flag`, the source and the line."""
    name, _, source = argument.partition("=")
    if not name or not source:
        raise ValueError(f"`{flag}`: expected NAME=SOURCE, got {argument!r}.")
    if name in TASKS:
        raise ValueError(f"`{flag}`: {name!r} is a registered task; give your own questions another name.")
    location, _, split = source.partition(":")
    path = Path(location).expanduser()
    if path.is_file():
        if split:
            raise ValueError(f"`{flag}` {name}: a file takes no split, got {source!r}.")
        if path.suffix not in (".jsonl", ".json"):
            raise ValueError(f"`{flag}` {name}: {path} must be .jsonl or .json (one question object per line).")
        examples = []  # each checked once, an error naming its line
        for number, row in _json_lines(path, f"`{flag}` {name}"):
            examples.append(_checked_choice_row(row, len(examples), f"`{flag}` {name}: {path} line {number}"))
        return _own_task(name, examples, headline_metric, f"task {name!r} ({path})")
    dataset = _open_dataset(name, location, path, split or None, flag, default_split="test")
    missing = [key for key in CHOICE_FIELDS if key not in dataset.column_names]
    if missing:
        raise ValueError(
            f"`{flag}` {name}: no {', '.join(map(repr, missing))} column (a question needs {CHOICE_FIELDS}); "
            f"columns: {dataset.column_names}."
        )
    return multiple_choice_task(name, list(dataset), headline_metric=headline_metric, source=location)


def load_task_source(argument: str, *, flag: str = "--tasks", registered: bool = True) -> tuple[str, list[str] | None]:
    """One `diet-hf prune --tasks` word: a registered task name (`(name, None)`), or `NAME=SOURCE` for the user's own
    calibration texts (`(name, texts)`). SOURCE is a file (`.jsonl` / `.json` lines with a `text` field, or `.txt`
    with one text per non-empty line), or a `datasets` source `ID_OR_DIR[:SPLIT[:COLUMN]]` (a Hub dataset id, or a
    directory saved with `save_to_disk`; split `train` and column `text` by default). Everything is read and checked
    here, so a bad path, split or column fails before any model is loaded; the error names what was wrong (and
    `flag`, the option it came from). With `registered=False` (your texts alone, e.g. `diet-hf eval --texts`) only
    `NAME=SOURCE` is accepted, under any name."""
    if "=" not in argument:
        if not registered:
            raise ValueError(f"`{flag}`: expected NAME=FILE or NAME=DATASET[:SPLIT[:COLUMN]], got {argument!r}.")
        if argument not in TASKS:
            raise ValueError(
                f"`{flag}`: {argument!r} is not a registered task ({', '.join(TASKS)}); give your own data as "
                "NAME=PATH or NAME=DATASET[:SPLIT[:COLUMN]]."
            )
        return argument, None
    name, source = argument.split("=", 1)
    if not name or not source:
        raise ValueError(f"`{flag}`: expected NAME=SOURCE, got {argument!r}.")
    if registered and name in TASKS:
        raise ValueError(f"`{flag}`: {name!r} is a registered task; give your own data another name.")
    location, _, rest = source.partition(":")
    split, _, column = rest.partition(":")
    path = Path(location).expanduser()
    if path.is_file():
        if rest:
            raise ValueError(f"`{flag}` {name}: a file takes no split or column, got {source!r}.")
        texts = _read_text_file(path, name, flag)
    else:
        texts = _read_dataset(name, location, path, split or None, column or None, flag)
    if not texts:
        raise ValueError(f"`{flag}` {name}: {source} holds no non-empty texts.")
    return name, texts


def _json_lines(path: Path, where: str):
    """(line number, parsed object) of every non-blank line of a JSON-lines file; a line that is not JSON is an
    error naming `where`, the file and the line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: {path} line {number} is not JSON ({error.msg}).") from None
            yield number, row


def _read_text_file(path: Path, name: str, flag: str) -> list[str]:
    if path.suffix in (".jsonl", ".json"):
        texts = []
        for number, row in _json_lines(path, f"`{flag}` {name}"):
            if isinstance(row, dict) and "text" not in row and all(key in row for key in CHOICE_FIELDS):
                # a question of your own multiple-choice task: its context and gold choice, as tasks calibrate
                row = _checked_choice_row(row, number, f"`{flag}` {name}: {path} line {number}")
                texts.append(_question_text(row))
                continue
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(
                    f"`{flag}` {name}: {path} line {number} has no string `text` field (nor a question's "
                    f"{', '.join(CHOICE_FIELDS)})."
                )
            texts.append(row["text"])
        return [t for t in texts if t.strip()]
    if path.suffix in (".txt", ""):
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise ValueError(f"`{flag}` {name}: {path} must be .jsonl, .json (one object per line) or .txt.")


def _read_dataset(name: str, location: str, path: Path, split: str | None, column: str | None, flag: str) -> list[str]:
    """The texts of a dataset's `column` (`text` unless named; without one, questions with context, choices and
    label each make their context and gold choice, as the registered tasks calibrate)."""
    loaded = _open_dataset(name, location, path, split, flag)
    if column is None:
        if "text" not in loaded.column_names and all(key in loaded.column_names for key in CHOICE_FIELDS):
            rows = [_checked_choice_row(row, i, f"`{flag}` {name}: row {i}") for i, row in enumerate(loaded)]
            return [_question_text(row) for row in rows]
        column = "text"
    if column not in loaded.column_names:
        raise ValueError(f"`{flag}` {name}: no column {column!r}; columns: {loaded.column_names}.")
    values = loaded[column]
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"`{flag}` {name}: column {column!r} does not hold strings.")
    return [v for v in values if v.strip()]


def _open_dataset(name: str, location: str, path: Path, split: str | None, flag: str, *, default_split: str = "train"):
    """The `datasets.Dataset` a `NAME=ID_OR_DIR[:SPLIT]` word names: a `save_to_disk` directory or a Hub dataset id
    (split `default_split` unless given); errors name `flag` and what was wrong."""
    import datasets

    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = split or default_split
            if split not in loaded:
                raise ValueError(f"`{flag}` {name}: {path} has no split {split!r}; splits: {sorted(loaded)}.")
            loaded = loaded[split]
        elif split:
            raise ValueError(f"`{flag}` {name}: {path} is a single dataset; it has no split {split!r}.")
    else:
        from ._io import looks_like_local_path

        if looks_like_local_path(location):
            raise FileNotFoundError(f"`{flag}` {name}: no file or directory at {location}.")
        try:
            loaded = datasets.load_dataset(location, split=split or default_split)
        except ValueError as error:  # e.g. an unknown split
            raise ValueError(f"`{flag}` {name}: dataset {location!r}: {error}") from None
        except Exception as error:  # the Hub's many failure types, reported with the source named
            raise ValueError(
                f"`{flag}` {name}: could not load dataset {location!r} ({type(error).__name__}: {error})"
            ) from error
    return loaded
