"""Your own data from a file or a `datasets` source: multiple-choice questions as a `Task`, and calibration or
healing texts."""

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from .._checks import check_one_split
from .registry import (
    DEFAULT_CALIBRATION_ANSWER,
    TASKS,
    MultipleChoiceRequest,
    Task,
    _single_context,
    answer_text,
    check_calibration_answer,
)

# Your own multiple-choice task: one row per question, `context` (the prompt exactly as scored), `choices` (each scored
# as `context` + " " + choice, lm-eval's default target delimiter) and `label` (the gold choice's 0-based index, as in
# the shared data's files); `id` is optional.
CHOICE_FIELDS = ("context", "choices", "label")
# A conversation: a list of messages, each with a `role` and its `content`, the format of transformers' chat templates
# and of TRL's conversational datasets; as a text it is rendered by the model's chat template (`chat_text`).
MESSAGES_FIELD = "messages"


class SourceTexts(list):
    """Your texts as `load_task_source` read them: a list of strings that also holds `source`, where they came from
    (`{"dataset", "revision", "config", "split", "column"}` for a Hub dataset, the commit it was read at as its
    revision; `{"local": "file"}` or `{"local": "directory", ...}` for a local one, whose path is not kept: records go
    into configs and cards that are published). `profile()` and `heal()` record it; the card names a Hub dataset in
    its `datasets` metadata. Build one to state the source of texts you read yourself:
    `SourceTexts(texts, {"dataset": "acme/tickets", "split": "train"})`."""

    def __init__(self, texts: Iterable = (), source: dict | None = None):
        super().__init__(texts)
        self.source = dict(source) if source is not None else None


def source_label(source: dict) -> str:
    """A recorded source in words: `DATASET@REVISION,CONFIG:SPLIT:COLUMN` as the command line names a Hub dataset
    (the revision shortened to 7 characters where it is a commit), "a local file" or "a local dataset" otherwise."""
    if "dataset" not in source:
        return "a local file" if source.get("local") == "file" else "a local dataset"
    revision = source.get("revision")
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        revision = revision[:7]
    label = source["dataset"] + (f"@{revision}" if revision else "")
    label += f",{source['config']}" if source.get("config") else ""
    split, column = source.get("split") or "", source.get("column")
    return label + (f":{split}:{column}" if column else f":{split}" if split else "")


def named_with_source(name: str, source: dict | None) -> str:
    """`name` as the card's tables show it: `NAME (SOURCE)` where its source was recorded (`source_label`)."""
    return f"{name} ({source_label(source)})" if source else name


def _checked_messages(messages, where: str) -> list:
    """A conversation, checked: a non-empty list of objects, each with a string `role` and a `content` (a string, or
    the list of typed parts that multimodal templates read); `where` names it in the error."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{where}: `{MESSAGES_FIELD}` must be a non-empty list of messages, got {messages!r:.80}.")
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), (str, list))
        ):
            raise ValueError(
                f"{where}: message {index} must be an object with a string `role` and a `content`, "
                f"got {message!r:.80}."
            )
    return list(messages)


def check_chat_template(tokenizer, argument: str, owner: str | None = None) -> None:
    """`ValueError` naming `argument` (and the model `owner` whose tokenizer it is) unless `tokenizer` has a chat
    template: the one check of every option that renders prompts in it."""
    if not getattr(tokenizer, "chat_template", None):
        of = f" of {owner}" if owner else ""
        raise ValueError(
            f"`{argument}`: the tokenizer{of} has no chat template (a base model's may not); use an instruction-tuned "
            "model's tokenizer, or leave the option out."
        )


def _without_bos(tokenizer, text: str) -> str:
    """`text` less the BOS token a chat template writes at its start: every text is tokenized with BOS added."""
    bos = tokenizer.bos_token
    return text[len(bos) :] if bos and text.startswith(bos) else text


def chat_text(tokenizer, messages) -> str:
    """One conversation as a text, rendered by `tokenizer`'s chat template, for calibration, healing or held-out
    perplexity: `messages` is a list of `{"role": ..., "content": ...}` (a row of a TRL-style conversational dataset).

    The rendered text leaves out the BOS token a chat template writes at its start (Gemma's does): diet-hf adds BOS
    to every text where it tokenizes it (profiling with the tokenizer's special tokens, healing's packing per
    document, held-out texts each from BOS), so a conversation is read as any other text is, with one BOS, not two.
    Raises `ValueError` if the tokenizer has no chat template (a base model's may not: render your conversations as
    plain texts, or take the tokenizer of the instruction-tuned model)."""
    messages = _checked_messages(messages, "conversation")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"The tokenizer ({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}) has no chat "
            "template, so conversations cannot be rendered: give them as plain texts, or use an instruction-tuned "
            "model's tokenizer."
        )
    return _without_bos(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False))


def chat_request(tokenizer, request: MultipleChoiceRequest) -> MultipleChoiceRequest:
    """`request` as lm-eval 0.4.13 builds it with `apply_chat_template` (zero-shot, no system prompt, no generation
    prefix): every context the one user message of a chat rendered with the model's turn opened
    (`add_generation_prompt=True`), and no delimiter before the choices (`evaluate(apply_chat_template=True)`)."""
    contexts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": context}],
            tokenize=False,
            add_generation_prompt=True,
            continue_final_message=False,
        )
        for context in request.contexts
    ]
    return dataclasses.replace(request, contexts=contexts, delimiter="")


def chat_calibration_request(tokenizer, request: MultipleChoiceRequest) -> MultipleChoiceRequest:
    """`chat_request` for a calibration text: the same prompt, less the BOS a chat template writes (every text is
    tokenized with BOS added, as `chat_text` says), so a question calibrates on what
    `evaluate(apply_chat_template=True)` scores."""
    chat = chat_request(tokenizer, request)
    return dataclasses.replace(chat, contexts=[_without_bos(tokenizer, c) for c in chat.contexts])


def _conversation_text(messages, render_chat: Callable | None, where: str) -> str:
    messages = _checked_messages(messages, where)
    if render_chat is None:
        raise ValueError(
            f"{where} is a conversation (`{MESSAGES_FIELD}`); rendering it needs a chat template: pass "
            "`render_chat=lambda messages: chat_text(tokenizer, messages)`."
        )
    return render_chat(messages)


def _question_text(task: str, row: dict, answer: str, render: Callable | None = None) -> str:
    """A checked question of `task` as one text: its context and the choice `Task.calibration_text` ends it in (the
    gold one with `answer="gold"`, one drawn from `task` and the question's id with `"any"`); `render`: as
    `Task.calibration_text`'s."""
    request = _own_choice(row)
    return answer_text(task, render(request) if render is not None else request, answer)


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

    The same task passed to `DietPruner.profile(tasks={name: task})` calibrates on each question's context and an
    answer, as the registered tasks do (`calibration_answer`: by default one of its choices, drawn from `name` and the
    question's id; give it training questions there, not the ones you evaluate).
    """
    where = f"task {name!r}" + (f" ({source})" if source else "")
    check_one_split(f"`rows` of {where}", rows)
    examples = [_checked_choice_row(row, i, f"{where} row {i}") for i, row in enumerate(rows)]
    return _own_task(name, examples, headline_metric, where)


def _own_task(
    name: str, examples: list[dict], headline_metric: str, where: str, data_source: dict | None = None
) -> Task:
    """The `Task` of your own questions, each already checked (`_checked_choice_row`); `where` names them in errors;
    `data_source`: where they were read (`SourceTexts.source`)."""
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
    return Task(
        name, "", None, "evaluation", None, _own_choice, _no_hub, headline_metric,
        examples=tuple(examples), data_source=data_source,
    )  # fmt: skip


def load_multiple_choice_source(
    argument: str, *, flag: str = "--tasks", headline_metric: str = "acc", token: str | None = None
) -> Task:
    """One `diet-hf eval --tasks` word of the form `NAME=SOURCE`: your own multiple-choice questions
    (`multiple_choice_task`) from a `.jsonl` / `.json` file (one object per line) or a `datasets` source
    `ID_OR_DIR[@REVISION][,CONFIG][:SPLIT]` (split `test` by default; `_source_parts`, `_open_dataset`) with `context`,
    `choices` and `label` columns, its headline `headline_metric`; a Hub dataset is read with `token` (a private one).
    Read and checked here, before any model loads; errors name `flag`, the source and the line. The task's
    `data_source` records where (`SourceTexts.source`)."""
    name, _, source = argument.partition("=")
    if not name or not source:
        raise ValueError(f"`{flag}`: expected NAME=SOURCE, got {argument!r}.")
    if name in TASKS:
        raise ValueError(f"`{flag}`: {name!r} is a registered task; give your own questions another name.")
    location, config, split, column = _source_parts(source, f"`{flag}` {name}")
    if column:
        raise ValueError(f"`{flag}` {name}: questions are read from whole rows; give no column, got {source!r}.")
    path = Path(location).expanduser()
    if path.is_file():
        if config or split:
            raise ValueError(f"`{flag}` {name}: a file takes no config or split, got {source!r}.")
        if path.suffix not in (".jsonl", ".json"):
            raise ValueError(f"`{flag}` {name}: {path} must be .jsonl or .json (one question object per line).")
        examples = []  # each checked once, an error naming its line
        for number, row in _json_lines(path, f"`{flag}` {name}"):
            examples.append(_checked_choice_row(row, len(examples), f"`{flag}` {name}: {path} line {number}"))
        return _own_task(name, examples, headline_metric, f"`{flag}` {name}: {path}", {"local": "file"})
    dataset, source = _open_dataset(
        name, location, path, split, flag, config=config, default_split="test", token=token
    )
    missing = [key for key in CHOICE_FIELDS if key not in dataset.column_names]
    if missing:
        raise ValueError(
            f"`{flag}` {name}: no {', '.join(map(repr, missing))} column (a question needs {CHOICE_FIELDS}); "
            f"columns: {dataset.column_names}."
        )
    where = f"`{flag}` {name}: {location}"  # the errors name the flag, as the file's do
    examples = [_checked_choice_row(row, i, f"{where} row {i}") for i, row in enumerate(dataset)]
    return _own_task(name, examples, headline_metric, where, source)


def load_task_source(
    argument: str,
    *,
    flag: str = "--tasks",
    registered: bool = True,
    answer: str = DEFAULT_CALIBRATION_ANSWER,
    render_chat: Callable[[list], str] | None = None,
    render_question: Callable | None = None,
    token: str | None = None,
) -> tuple[str, list[str] | None]:
    """One `diet-hf prune --tasks` word: a registered task name (`(name, None)`), or `NAME=SOURCE` for the user's own
    calibration texts (`(name, texts)`, the texts a `SourceTexts` that records where they were read). SOURCE is a file
    (`.jsonl` / `.json` lines with a `text` field, or `.txt` with one text per non-empty line), or a `datasets` source
    `ID_OR_DIR[@REVISION][,CONFIG][:SPLIT[:COLUMN]]` (a Hub dataset id, or a directory saved with `save_to_disk`;
    split `train` and column `text` by default; `_source_parts`, `_open_dataset`). Everything is read and checked
    here, so a bad path, split or column fails before any model is loaded; the error names what was wrong (and
    `flag`, the option it came from). With `registered=False` (your texts alone, e.g. `diet-hf eval --texts`) only
    `NAME=SOURCE` is accepted, under any name. Rows that are questions (`context`, `choices`, `label` and no `text`)
    each make their context and an answer, as the registered tasks calibrate: with `answer="any"` (the default) one of
    the choices drawn from NAME and the question's id (else its position among the questions), with `"gold"` the
    correct one (healing and `diet-hf eval --texts` read them so). Rows that are conversations (a `messages` list of
    `{"role", "content"}` and no `text`; in a dataset, a `messages` column) each make one text by `render_chat`
    (`chat_text` with the model's tokenizer; the command line loads the tokenizer at the first conversation).
    `render_question` changes a question's prompt before its answer (`chat_calibration_request`, for
    `ProfileOptions.calibration_chat_template`). A Hub dataset is read with `token` (a private one; default: the
    `HF_TOKEN` or login `datasets` reads)."""
    check_calibration_answer(answer)
    if "=" not in argument:
        if not registered:
            raise ValueError(
                f"`{flag}`: expected NAME=FILE or NAME=DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]], got {argument!r}."
            )
        if argument not in TASKS:
            raise ValueError(
                f"`{flag}`: {argument!r} is not a registered task ({', '.join(TASKS)}); give your own data as "
                "NAME=PATH or NAME=DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]]."
            )
        return argument, None
    name, source = argument.split("=", 1)
    if not name or not source:
        raise ValueError(f"`{flag}`: expected NAME=SOURCE, got {argument!r}.")
    if registered and name in TASKS:
        raise ValueError(f"`{flag}`: {name!r} is a registered task; give your own data another name.")
    location, config, split, column = _source_parts(source, f"`{flag}` {name}")
    path = Path(location).expanduser()
    if path.is_file():
        if config or split or column:
            raise ValueError(f"`{flag}` {name}: a file takes no config, split or column, got {source!r}.")
        texts = _read_text_file(path, name, flag, answer, render_chat, render_question)
        record = {"local": "file"}
    else:
        texts, record = _read_dataset(
            name, location, path, split, column, flag, answer, render_chat, render_question, config=config, token=token
        )
    if not texts:
        raise ValueError(f"`{flag}` {name}: {source} holds no non-empty texts.")
    return name, SourceTexts(texts, record)


# `ID_OR_PATH[@REVISION][,CONFIG][:SPLIT[:COLUMN]]` after the location: a split may hold a slice in brackets, colons
# included (datasets' `train[:200]`, `train[10%:20%]+validation[:5%]`)
_SPLIT_AND_COLUMN = re.compile(r"(?P<split>(?:[^:\[\]]|\[[^\]]*\])*)(?::(?P<column>.*))?")


def _source_parts(source: str, where: str) -> tuple[str, str | None, str | None, str | None]:
    """`(location, config, split, column)` of `ID_OR_PATH[@REVISION][,CONFIG][:SPLIT[:COLUMN]]`, None for a part not
    given (the location keeps its `@REVISION`, which `_open_dataset` reads): a path that exists as written is whole (a
    colon in a file name), a Windows drive (`C:\\...`, `C:/...`) belongs to its path, a comma after the location
    names a Hub dataset's config (subset), and a split may hold datasets' slice syntax (`train[:200]`)."""
    if Path(source).expanduser().exists():
        return source, None, None, None
    start = 2 if re.match(r"[A-Za-z]:[\\/]", source) else 0
    head, _, rest = source[start:].partition(":")
    location, _, config = head.partition(",")
    parts = _SPLIT_AND_COLUMN.fullmatch(rest)
    if parts is None:
        raise ValueError(f"{where}: an unmatched bracket in the split of {source!r} (a slice: SPLIT[START:END]).")
    return source[:start] + location, config or None, parts["split"] or None, parts["column"] or None


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


def _read_text_file(
    path: Path, name: str, flag: str, answer: str, render_chat: Callable | None, render_question: Callable | None
) -> list[str]:
    if path.suffix in (".jsonl", ".json"):
        texts, questions = [], 0
        for number, row in _json_lines(path, f"`{flag}` {name}"):
            if isinstance(row, dict) and "text" not in row and MESSAGES_FIELD in row:
                where = f"`{flag}` {name}: {path} line {number}"
                texts.append(_conversation_text(row[MESSAGES_FIELD], render_chat, where))
                continue
            if isinstance(row, dict) and "text" not in row and all(key in row for key in CHOICE_FIELDS):
                # a question of your own multiple-choice task: its context and an answer, as tasks calibrate; without
                # an id, its position among the questions, as `load_multiple_choice_source` reads the same file
                row = _checked_choice_row(row, questions, f"`{flag}` {name}: {path} line {number}")
                texts.append(_question_text(name, row, answer, render_question))
                questions += 1
                continue
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(
                    f"`{flag}` {name}: {path} line {number} has no string `text` field (nor a question's "
                    f"{', '.join(CHOICE_FIELDS)}, nor a conversation's `{MESSAGES_FIELD}`)."
                )
            texts.append(row["text"])
        return [t for t in texts if t.strip()]
    if path.suffix in (".txt", ""):
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise ValueError(f"`{flag}` {name}: {path} must be .jsonl, .json (one object per line) or .txt.")


def _read_dataset(
    name: str,
    location: str,
    path: Path,
    split: str | None,
    column: str | None,
    flag: str,
    answer: str,
    render_chat: Callable | None,
    render_question: Callable | None = None,
    config: str | None = None,
    token: str | None = None,
) -> tuple[list[str], dict]:
    """The texts of a dataset's `column` (`text` unless named; without one, questions with context, choices and
    label each make their context and an answer, `answer` as in `load_task_source`, and a `messages` column of
    conversations each one text by `render_chat`; a named column of conversations is read so too), and their source
    record (`SourceTexts.source`; the column read, None for questions)."""
    loaded, source = _open_dataset(name, location, path, split, flag, config=config, token=token)
    if column is None:
        if "text" not in loaded.column_names and all(key in loaded.column_names for key in CHOICE_FIELDS):
            rows = [_checked_choice_row(row, i, f"`{flag}` {name}: row {i}") for i, row in enumerate(loaded)]
            return [_question_text(name, row, answer, render_question) for row in rows], source
        conversations = "text" not in loaded.column_names and MESSAGES_FIELD in loaded.column_names
        column = MESSAGES_FIELD if conversations else "text"
    if column not in loaded.column_names:
        raise ValueError(f"`{flag}` {name}: no column {column!r}; columns: {loaded.column_names}.")
    source = {**source, "column": column}
    values = list(loaded[column])
    if values and all(isinstance(v, list) for v in values):
        texts = [_conversation_text(v, render_chat, f"`{flag}` {name}: row {i}") for i, v in enumerate(values)]
        return texts, source
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"`{flag}` {name}: column {column!r} does not hold strings (nor conversations).")
    return [v for v in values if v.strip()], source


# a split's rows START to STOP, both counts (not percentages, not from the end): `train[:200]`, `train[100:300]`
_HEAD_SLICE = re.compile(r"(?P<split>[\w.-]+)\[(?P<start>\d*):(?P<stop>\d+)\]")


def _open_dataset(
    name: str,
    location: str,
    path: Path,
    split: str | None,
    flag: str,
    *,
    config: str | None = None,
    default_split: str = "train",
    token: str | None = None,
):
    """The `datasets.Dataset` a `NAME=ID_OR_DIR[@REVISION][,CONFIG][:SPLIT]` word names, and its source record
    (`SourceTexts.source`, its column None): a `save_to_disk` directory or a Hub dataset id, at `REVISION` (a
    branch, tag or commit) where one is named, of its config (subset) `config` where it has several, split
    `default_split` unless given; a split may be sliced as `datasets.load_dataset` reads it (`train[:200]`,
    `train[:10%]+validation[:10%]`), in a directory's splits too. A Hub dataset is read at the commit its revision
    points to when the read starts (recorded as the source's revision; offline, the revision as named). A Hub split's
    rows START to STOP (`train[:200]`, `train[100:300]`) are streamed: `load_dataset` would download every file of the
    split before slicing (hundreds of GB for a web corpus), the stream reads the files that hold those rows, in the
    same order. Errors name `flag` and what was wrong; a Hub dataset with several configs and none named, its configs
    and how to name one. A Hub dataset is read with `token` where one is given."""
    import datasets

    requested, split = split, split or default_split
    if path.is_dir():
        if config:
            raise ValueError(f"`{flag}` {name}: {path} is a saved dataset, which has no configs; got {config!r}.")
        loaded = datasets.load_from_disk(str(path))
        if not isinstance(loaded, datasets.DatasetDict):
            if requested:
                raise ValueError(f"`{flag}` {name}: {path} is a single dataset; it has no split {split!r}.")
            return loaded, {"local": "directory"}
        try:
            parts = datasets.ReadInstruction.from_spec(split).to_absolute({k: len(v) for k, v in loaded.items()})
        except ValueError:  # an unknown split, or a slice datasets does not read
            raise ValueError(f"`{flag}` {name}: {path} has no split {split!r}; splits: {sorted(loaded)}.") from None
        # a slice's rows (an empty one as no indices: `select` refuses an empty range that starts at the end)
        pieces = [loaded[p.splitname].select(range(p.from_, p.to) if p.to > p.from_ else []) for p in parts]
        whole = pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)
        return whole, {"local": "directory", "split": split}
    from .._io import looks_like_local_path

    dataset_id, at, revision = location.partition("@")  # a revision may hold slashes: `refs/pr/1`
    if looks_like_local_path(dataset_id):
        raise FileNotFoundError(f"`{flag}` {name}: no file or directory at {location}.")
    if not dataset_id or (at and not revision):
        raise ValueError(f"`{flag}` {name}: expected DATASET@REVISION (a branch, tag or commit), got {location!r}.")
    location, revision = dataset_id, _dataset_commit(dataset_id, revision or None, token)
    source = {"dataset": location, "revision": revision, "config": config, "split": split, "column": None}
    try:
        head = _HEAD_SLICE.fullmatch(split)
        hub = {"revision": revision, "token": token}
        if head:  # the first rows of a split: streamed, so that only the files that hold them are read
            streamed = datasets.load_dataset(location, config, split=head["split"], streaming=True, **hub)
            start, stop = int(head["start"] or 0), int(head["stop"])
            rows = list(streamed.skip(start).take(max(stop - start, 0)))
            features = streamed.features  # of the files' schema; None where the stream does not know it
            if rows:
                return datasets.Dataset.from_list(rows, features=features), source
            return datasets.Dataset.from_dict({column: [] for column in features or {}}, features=features), source
        return datasets.load_dataset(location, config, split=split, **hub), source
    except ValueError as error:  # e.g. an unknown split, or a dataset of several configs and none named
        if config is None and str(error).startswith("Config name is missing"):
            configs = _config_names(location, token)
            raise ValueError(
                f"`{flag}` {name}: dataset {location!r} has several configs (subsets){configs}; "
                f"name one after a comma: {name}={location},CONFIG[:SPLIT[:COLUMN]]."
            ) from None
        raise ValueError(f"`{flag}` {name}: dataset {location!r}: {error}") from None
    except Exception as error:  # the Hub's many failure types, reported with the source named
        raise ValueError(
            f"`{flag}` {name}: could not load dataset {location!r} ({type(error).__name__}: {error})"
        ) from error


def _dataset_commit(location: str, revision: str | None, token: str | None) -> str | None:
    """The commit `revision` (None: the main branch) of the Hub dataset `location` points to now, so the read and its
    record name the same data; `revision` itself where the Hub cannot say (offline, or no such dataset, which the read
    then reports)."""
    import datasets
    from huggingface_hub import HfApi

    if datasets.config.HF_HUB_OFFLINE:
        return revision
    try:
        return HfApi().dataset_info(location, revision=revision, token=token).sha or revision
    except Exception:  # the read that follows fails with the dataset named, or reads datasets' cache
        return revision


def _config_names(location: str, token: str | None) -> str:
    """The Hub dataset's config names as `": a, b"`, for a message; `""` where they cannot be read."""
    import datasets

    try:
        return ": " + ", ".join(datasets.get_dataset_config_names(location, token=token))
    except Exception:  # the message then names no configs; the dataset's own load already failed
        return ""
