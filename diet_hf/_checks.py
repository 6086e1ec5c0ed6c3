"""Argument checks shared by the public functions and option dataclasses: one wording for every message."""

__all__ = ["check_positive_int", "is_int_at_least", "is_positive_int"]


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
