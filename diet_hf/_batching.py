"""Padding: the one place token rows become padded batches, and the one fallback pad id."""

import torch

__all__ = ["pad_id", "pad_rows"]


def pad_id(tokenizer) -> int:
    """The tokenizer's pad token id, or 0 where it has none (masked positions never reach a result)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def pad_rows(rows: list[list[int]], pad: int, *, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """`(input_ids, attention_mask)` of token rows padded to the longest with `pad` on `side` (`"left"` puts every
    row's last token in the last column)."""
    if side not in ("left", "right"):
        raise ValueError(f"`side` must be 'left' or 'right', got {side!r}.")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        input_ids[i, span] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, span] = 1
    return input_ids, attention_mask
