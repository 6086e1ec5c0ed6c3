"""Healing data: texts from named sources, packed into fixed-length rows (documents read apart by default),
and the dataset `Trainer` reads them from."""

import os
import random
from collections.abc import Callable, Iterable

import torch

from .._checks import check_one_split, dataset_columns
from ..tasks import get_task, load_examples, wikitext2_text


def healing_texts(
    sources: Iterable[str] = ("wikitext2",),
    *,
    data_dir: str | os.PathLike | None = None,
    render: Callable | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Training texts from `sources`: `"wikitext2"` (the WikiText-2 validation split, joined into one text; its test
    split stays for perplexity) and task names (their train split, as prompt + gold answer; never evaluation
    examples). `render` changes a task's request before its answer is written, as `Task.calibration_text`'s does:
    `lambda request: tasks.chat_calibration_request(tokenizer, request)` writes each prompt in the chat template, as a
    model calibrated with `calibration_chat_template` saw them. Returns the texts and, per source, the split it came
    from."""
    texts, splits = [], {}
    for source in sources:
        if source == "wikitext2":
            texts.append(wikitext2_text("validation", data_dir=data_dir))
            splits[source] = "validation"
            continue
        spec = get_task(source)
        if spec.train_split is None:
            raise ValueError(f"Task {source!r} has no train split; healing never trains on evaluation examples.")
        try:
            docs = load_examples(spec, spec.train_split, data_dir=data_dir)
        except FileNotFoundError as error:
            raise ValueError(
                f"Task {source!r}: its train split is not available ({error}); healing never trains on evaluation "
                "examples. Leave the task out of `sources`."
            ) from error
        # the correct answers: training on a distractor would teach the wrong one (calibration reads any choice)
        texts.extend(spec.calibration_text(doc, "gold", render) for doc in docs)
        splits[source] = spec.train_split
    return texts, splits


def pack_texts(texts: list[str], tokenizer, seq_len: int, *, seed: int = 0, bos_rows: bool = False) -> torch.Tensor:
    """Tokenizes every text (BOS first, EOS last), shuffles the documents with `seed`, concatenates them, cuts the
    stream into rows of `seq_len` tokens (the remainder is dropped) and shuffles the rows. With `bos_rows` every row
    starts with BOS: a row that does not start at a document gets BOS inserted before its `seq_len - 1` tokens
    (`cut_rows`). Returns (rows, seq_len)."""
    if not texts:
        raise ValueError(
            "The healing data is empty: give a non-empty list of strings or a dataset with a text column."
        )
    wrong = next((t for t in texts if not isinstance(t, str)), None)
    if wrong is not None:
        raise TypeError(
            f"The healing data must be texts (strings); one of them is a {type(wrong).__name__}: {wrong!r:.80}."
        )
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    stream: list[int] = []
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos_rows and bos is None:
        raise ValueError("`bos_rows=True` needs a tokenizer with a BOS token; this one has none.")
    for i in order:
        ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
        stream.extend(([bos] if bos is not None else []) + ids + ([eos] if eos is not None else []))
    packed = cut_rows(stream, seq_len, bos if bos_rows else None)
    if packed.shape[0] == 0:
        raise ValueError(f"The healing data has {len(stream)} tokens, fewer than one sequence of {seq_len}.")
    return packed[torch.randperm(packed.shape[0], generator=torch.Generator().manual_seed(seed))]


def cut_rows(stream: list[int], seq_len: int, bos: int | None = None) -> torch.Tensor:
    """`stream` cut in order into rows of `seq_len` tokens, the remainder dropped. With `bos`, every row starts with
    it: a row whose first token is not `bos` takes `seq_len - 1` tokens after an inserted `bos`, so no token of the
    stream is skipped or repeated (only the inserted BOS tokens are added)."""
    if bos is None:
        rows = len(stream) // seq_len
        return torch.tensor(stream[: rows * seq_len], dtype=torch.long).view(rows, seq_len)
    out, i = [], 0
    while True:
        starts = stream[i : i + 1] == [bos]
        row = stream[i : i + seq_len] if starts else [bos, *stream[i : i + seq_len - 1]]
        if len(row) < seq_len:
            break
        out.append(row)
        i += seq_len if starts else seq_len - 1
    return torch.tensor(out, dtype=torch.long).view(len(out), seq_len)


def pack_sources(
    sources: dict[str, list[str]], tokenizer, seq_len: int, *, seed: int = 0, bos_rows: bool = False
) -> torch.Tensor:
    """Packs each source apart (`pack_texts`) and interleaves their rows in turn, so every source gets an equal
    share of any prefix of the result until it runs out."""
    if not sources:
        raise ValueError("The healing data is empty: give at least one source.")
    packed = [pack_texts(texts, tokenizer, seq_len, seed=seed, bos_rows=bos_rows) for texts in sources.values()]
    order = [(i, k) for i in range(max(len(p) for p in packed)) for k in range(len(packed)) if i < len(packed[k])]
    return torch.stack([packed[k][i] for i, k in order])


class _PackedDataset(torch.utils.data.Dataset):
    def __init__(self, rows: torch.Tensor, targets: dict[str, torch.Tensor] | None, positions: torch.Tensor | None):
        self.rows, self.targets, self.positions = rows, targets, positions
        self.per_row = rows.shape[1] - 1 if positions is None else positions.shape[1]

    def __len__(self):
        return self.rows.shape[0]

    def __getitem__(self, i):
        item = {"input_ids": self.rows[i]}
        if self.positions is not None:
            item["positions"] = self.positions[i]
        if self.targets is not None:
            part = slice(i * self.per_row, (i + 1) * self.per_row)
            item.update({f"teacher_{k}": v[part] for k, v in self.targets.items()})
        return item


def _collate(items):
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _text_list(data, argument: str = "data") -> list[str]:
    """The texts of a list or of a dataset's `text` column."""
    if hasattr(data, "column_names"):
        check_one_split(f"`{argument}`", data)
        columns = dataset_columns(data)
        if "text" not in columns:
            raise ValueError(f"`{argument}` is a dataset without a `text` column; columns: {columns}.")
        return list(data["text"])
    if isinstance(data, str):
        raise TypeError(f"`{argument}` must be a list of strings (or a dataset), not one string.")
    return list(data)


def training_texts(data) -> list[str]:
    """`_text_list(data)` without the blank texts, each of which would be trained on as BOS and EOS alone (a
    dataset's empty rows; the command line leaves them out of your files and datasets). Anything not a string stays,
    for `pack_texts` to refuse."""
    return [t for t in _text_list(data) if not isinstance(t, str) or t.strip()]
