"""Argument checks shared by the public functions and option dataclasses: one wording for every message."""

import math
import os

__all__ = [
    "check_finite_outputs",
    "check_one_split",
    "check_path",
    "check_positive_int",
    "check_shard_size",
    "is_int_at_least",
    "is_positive_int",
]


def is_int_at_least(value, least: int) -> bool:
    """Whether `value` is an `int` >= `least` (`True` is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def is_positive_int(value) -> bool:
    """Whether `value` is an `int` >= 1."""
    return is_int_at_least(value, 1)


def check_positive_int(name: str, value) -> None:
    """Raises `ValueError` naming the argument `name` unless `value` is an `int` >= 1."""
    if not is_positive_int(value):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_one_split(what: str, data, use: str = "{split}") -> None:
    """Raises `ValueError` for a `datasets` `DatasetDict` (or `IterableDatasetDict`), which `load_dataset` returns
    without `split=`: `what` (e.g. "`data`") takes one split's rows, passed as `use` says (`{split}`: one split of it,
    e.g. "{{'mine': {split}}}" for a mapping of task names)."""
    columns = getattr(data, "column_names", None)
    if isinstance(columns, dict):  # a dict of splits: {split: [column, ...]}
        splits = list(columns)
        split = f"dataset[{splits[0]!r}]"
        raise ValueError(
            f"{what} is a `DatasetDict` of the splits {splits}; pass one split: {use.format(split=split)} (or "
            f"`load_dataset(..., split={splits[0]!r})`)."
        )


def dataset_columns(data) -> list[str]:
    """The column names of a `datasets` `Dataset` or `IterableDataset`; of a stream whose features are not known
    before it is read (a streamed JSON or CSV dataset, `IterableDataset.from_generator`: `column_names` is None), the
    keys of its first row (none for an empty stream)."""
    columns = data.column_names
    if columns is None:
        first = next(iter(data), None)
        columns = list(first) if isinstance(first, dict) else []
    return list(columns)


def check_path(name: str, value, what: str = "a path") -> None:
    """Raises `TypeError` naming the argument `name` unless `value` is a path (a `str` or an `os.PathLike`; `what`
    it should be, in the message), and `ValueError` for an empty one (which would name the working directory)."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"`{name}` must be {what} (a `str` or `os.PathLike`), got {type(value).__name__}: {value!r}.")
    if not os.fspath(value):
        raise ValueError(f"`{name}` is an empty path.")


def check_shard_size(name: str, value) -> None:
    """Raises `ValueError` naming the argument `name` unless `value` is None or a shard size transformers'
    `save_pretrained(max_shard_size=)` takes: a positive number of bytes, or a string such as "2GB" or "500MB"."""
    if value is None:
        return
    from transformers.utils.hub import convert_file_size_to_int

    try:
        size = None if isinstance(value, bool) else convert_file_size_to_int(value)
    except (TypeError, ValueError):
        size = None
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"`{name}` must be a number of bytes or a size such as '2GB' or '500MB', got {value!r}.")


# what non-finite model outputs most likely mean, and the fix
OVERFLOW_HINT = (
    "most likely the model overflowed its dtype (Gemma's activations exceed float16's range, Gemma 3 270M's on "
    "ordinary text): load it in bfloat16 or float32 (`dtype=torch.bfloat16`; CLI `--dtype bfloat16`)"
)


def check_finite_outputs(values, what: str) -> None:
    """Raises `ValueError` if any of `values` (floats) is not finite: `what` they are, and why that happens."""
    bad = sum(not math.isfinite(v) for v in values)
    if bad:
        raise ValueError(f"{bad} of {len(values)} {what} are not finite: {OVERFLOW_HINT}.")
