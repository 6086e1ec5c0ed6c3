"""The reconstruction's statistics: E[x] and E[x xᵀ] of the inputs of the modules a plan cuts (`down_proj`, `o_proj`),
summed in the profiling hooks' passes or in passes of their own grouped by a memory budget, and the BOS token's
inputs the anchored fit reproduces."""

from collections.abc import Iterator

import torch
from torch import nn

from ._devices import fast_bf16
from .constants import ModelFamily
from .constants import head_dim as config_head_dim
from .profiler import _run_decoder, _StopForward

__all__ = [
    "MOMENTS_DTYPES",
    "InputMoments",
    "MomentSums",
    "collect_input_moments",
    "first_token_inputs",
    "iter_input_moments",
    "moment_widths",
    "moments_product_dtype",
]


class InputMoments:
    """E[x] and E[x x^T] over real tokens of the input x of chosen `down_proj` (`"mlp"`) / `o_proj` (`"attn"`)
    modules: the statistics of the least-squares reconstruction (`diet_hf.reconstruction`).

    Args:
        sums (`dict`): `{(kind, layer_idx): (sum of x, block rows of sum of x x^T)}`, float32: x x^T is symmetric,
            so only the upper part of each block row of `_BLOCK` channels is held (`_block_rows`; at 2048 channels
            56% of the full matrix: the 270M model's moments take 0.21 GB instead of 0.38; the reconstruction
            solves in float64).
        num_tokens (`int`): the real tokens summed.

    The sums become the moments: they are divided in place (no second copy at the profile's peak).
    """

    def __init__(self, sums: dict[tuple[str, int], tuple[torch.Tensor, list[torch.Tensor]]], num_tokens: int):
        if num_tokens == 0:
            raise RuntimeError("No tokens were profiled; the calibration data is empty.")
        for first, rows in sums.values():
            first.div_(num_tokens)
            for row in rows:
                row.div_(num_tokens)
        self.moments = dict(sums)
        self.num_tokens = num_tokens

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.moments

    @property
    def nbytes(self) -> int:
        return sum(mean.nbytes + sum(row.nbytes for row in rows) for mean, rows in self.moments.values())

    def merged(self, other: "InputMoments") -> "InputMoments":
        """These moments and `other`'s (modules of the same calibration tokens) as one object."""
        if other.num_tokens != self.num_tokens:
            raise ValueError(f"Moments over {other.num_tokens} tokens cannot join moments over {self.num_tokens}.")
        merged = InputMoments({}, self.num_tokens)
        merged.moments = {**self.moments, **other.moments}
        return merged

    def get(self, kind: str, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(mean, second_moment)` of one module's input: `(channels,)` and `(channels, channels)`, float32, the
        second moment made whole (exactly symmetric) for this call."""
        mean, rows = self.moments[(kind, layer_idx)]
        full = torch.empty(len(mean), len(mean), dtype=rows[0].dtype, device=rows[0].device)
        for (start, stop), row in zip(_block_rows(len(mean)), rows):
            full[start:stop, start:] = row
            full[stop:, start:stop] = row[:, stop - start :].T
            diagonal = full[start:stop, start:stop]
            diagonal.copy_(diagonal.triu() + diagonal.triu(1).T)
        return mean, full


def collect_input_moments(
    model: nn.Module, family: ModelFamily, batches, targets: list[tuple[str, int]], **options
) -> InputMoments:
    """E[x] and E[x x^T] of the inputs of `targets` (`("mlp" | "attn", layer_idx)` pairs) over real tokens.

    `batches` is a callable returning a fresh iterable of batches (dicts with `input_ids`, `attention_mask`). The
    `channels x channels` float32 sums of as many targets as fit in `max_bytes` are summed per pass over the batches
    (`iter_input_moments`, which takes the same `options`: `max_bytes`, `num_batches`, `description`,
    `disable_progress`, `product_dtype`), and all of them are returned together; a pass stops after its last
    target's layer, so with one pass (the 270M model needs 0.3 GB) the cost is at most one forward pass of the
    decoder.
    """
    merged = None
    for moments in iter_input_moments(model, family, batches, targets, **options):
        merged = moments if merged is None else merged.merged(moments)
    return merged


def iter_input_moments(
    model: nn.Module,
    family: ModelFamily,
    batches,
    targets: list[tuple[str, int]],
    *,
    max_bytes: int = 4 * 2**30,
    num_batches: int | None = None,
    description: str = "input moments",
    disable_progress: bool = False,
    deepest_first: bool = False,
    product_dtype: torch.dtype = torch.float32,
) -> Iterator[InputMoments]:
    """`collect_input_moments` one pass at a time: yields the `InputMoments` of each group of targets (forward order,
    groups of about equal size, each at most `max_bytes` unless one target alone is larger) when its pass ends, so a
    consumer that drops each before asking for the next holds one group's moments at a time (`build_pruned_model`
    does: memory bounded by `max_bytes` where all the moments would not fit, e.g. Gemma-2 9B's MLPs' 17.6 GB).
    `deepest_first` yields the groups from the last layers back: each later pass stops before the layers of the
    groups before it, so an in-place surgery can cut those once they are solved (the same moments either way).
    `product_dtype`: the dtype of the x x^T products (`MomentSums`)."""
    width = moment_widths(model.config)
    order = sorted(set(targets), key=lambda key: (key[1], 0 if key[0] == "attn" else 1))  # forward order
    sizes = [MomentSums.nbytes_for([key], width, product_dtype) for key in order]
    share = sum(sizes) / max(1, -(-sum(sizes) // max_bytes))  # the total split evenly into the fewest passes
    groups, current, used = [], [], 0
    for key, size in zip(order, sizes):
        if current and (used + size > max_bytes or used + size / 2 > share):
            groups.append(current)
            current, used = [], 0
        current.append(key)
        used += size
    if current:
        groups.append(current)
    if deepest_first:
        groups.reverse()
    for number, group in enumerate(groups):
        name = description if len(groups) == 1 else f"{description} ({number + 1}/{len(groups)})"
        sums = MomentSums(group, width, next(model.parameters()).device, product_dtype)
        yield _moments_pass(model, family, batches(), sums, (name, num_batches), disable_progress).moments()


def _moments_pass(model, family, batches, sums: "MomentSums", progress, disable_progress) -> "MomentSums":
    """One pass over `batches` summing x and x x^T at the inputs of `sums`' modules; stops each forward after the
    last of them."""
    group = list(sums.sums)
    state = {"mask": None}

    def accumulate(key, last):
        def hook(module, args):
            sums.add(key, args[0], state["mask"])
            if last:
                raise _StopForward

        return hook

    handles = []
    try:
        for key in group:
            handles.append(
                _input_module(model, family, key).register_forward_pre_hook(accumulate(key, key == group[-1]))
            )
        num_tokens = _run_decoder(model, batches, lambda mask: state.update(mask=mask), progress, disable_progress)
    finally:
        for handle in handles:
            handle.remove()
    sums.num_tokens = num_tokens
    return sums


def _input_module(model: nn.Module, family: ModelFamily, key: tuple[str, int]) -> nn.Module:
    """The `down_proj` (`("mlp", layer_idx)`) or `o_proj` (`("attn", layer_idx)`) whose input `key` names."""
    template = family.mlp_down_proj if key[0] == "mlp" else family.attn_o_proj
    return model.get_submodule(template.format(layer_idx=key[1]))


def first_token_inputs(model: nn.Module, family: ModelFamily, token_id: int, targets) -> dict:
    """The inputs of `targets` (`("mlp" | "attn", layer_idx)` pairs) when `token_id` is an input's first token:
    `{key: (channels,) float32 tensor}` on the CPU.

    Position 0 attends only to itself, so its hidden states depend on its token alone: one forward pass of that one
    token gives them for every input that starts with it (the BOS token: the reconstruction's anchor).
    """
    inputs, handles = {}, []

    def keep(key):
        def hook(module, args):
            inputs[key] = args[0][0, 0].float().cpu()

        return hook

    try:
        for key in set(targets):
            handles.append(_input_module(model, family, key).register_forward_pre_hook(keep(key)))
        batch = {"input_ids": torch.tensor([[token_id]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
        _run_decoder(model, [batch], lambda mask: None, ("first token", 1), True)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


MOMENTS_DTYPES = ("auto", "float32", "bfloat16")


def moments_product_dtype(choice: str, device) -> torch.dtype:
    """The dtype of the x x^T products for `ProfileOptions.moments_dtype` `choice` on `device`: `"auto"` is bfloat16
    where bfloat16 matmuls are fast there (`fast_bf16`), float32 elsewhere."""
    if choice not in MOMENTS_DTYPES:
        raise ValueError(f"`moments_dtype` must be one of {MOMENTS_DTYPES}, got {choice!r}.")
    if choice == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    return torch.bfloat16 if choice == "bfloat16" else torch.float32


class MomentSums:
    """Float32 running sums of x and x x^T over real tokens at the inputs of `keys` (`("mlp" | "attn", layer_idx)`
    pairs); `moments()` turns them into an `InputMoments`. Filled by `_moments_pass` or, during profiling, by the hooks
    of `ActivationStats`; the function that runs the batches (`_moments_pass`, `collect_activation_stats`) counts
    `num_tokens`.

    `product_dtype` bfloat16 makes the x^T x products bfloat16 matmuls (float32 accumulation inside each, its result
    rounded to bfloat16) added to the float32 sums: the products are the moments' whole cost (0.42 of the 270M
    decoder's multiply-adds over the same tokens), and bfloat16 took the 270M profile's from 11.6 to 6.3 s on 2
    AVX512-BF16 cores. The real tokens' rows are staged in a buffer of `_STAGE_ROWS` rows per module and multiplied
    when it is full, so every product has one shape: on the CPU oneDNN builds and keeps a kernel per matmul shape, and
    the profile's batches of varying token counts made hundreds of them (0.44 GiB more at the profile's peak, and
    slower). The rows left in a buffer are multiplied in float32 when the sums are read (`channel_sums`, `moments`).
    The rounding averages out over the tokens: on Gemma 3 270M the pruned model's KL to dense after dev prompts stayed
    the same to 4 digits at 20% and 40%."""

    def __init__(self, keys, width: dict[str, int], device=None, product_dtype: torch.dtype = torch.float32):
        if product_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"`product_dtype` must be torch.float32 or torch.bfloat16, got {product_dtype!r}.")
        self.product_dtype = product_dtype
        self.sums = {
            key: (
                torch.zeros(width[key[0]], dtype=torch.float32, device=device),
                [
                    torch.zeros(stop - start, width[key[0]] - start, dtype=torch.float32, device=device)
                    for start, stop in _block_rows(width[key[0]])
                ],
            )
            for key in keys
        }
        self._staged = {}  # key -> [bfloat16 (_STAGE_ROWS, channels) buffer, rows filled]
        self.num_tokens = 0

    @staticmethod
    def nbytes_for(keys, width: dict[str, int], product_dtype: torch.dtype = torch.float32) -> int:
        """The memory of the sums of `keys`, with the staging buffers of bfloat16 products."""
        staged = 2 * _STAGE_ROWS if product_dtype == torch.bfloat16 else 0
        return sum(
            4 * (width[kind] + sum((stop - start) * (width[kind] - start) for start, stop in _block_rows(width[kind])))
            + staged * width[kind]
            for kind, _ in keys
        )

    def add(self, key: tuple[str, int], x: torch.Tensor, mask: torch.Tensor) -> None:
        """Adds the real tokens (`mask`, (batch, seq_len) bool) of `x` (batch, seq_len, channels) if `key` is held."""
        if self.sums is None:
            raise RuntimeError("These sums were turned into moments (`moments()`); start new `MomentSums`.")
        if key not in self.sums:
            return
        first, rows = self.sums[key]
        # (real tokens, channels), on the sums' device: a model split across GPUs (`device_map="auto"`) runs later
        # layers on other devices than the first, where the sums are
        x = x[mask.to(x.device)].to(first.device)
        first += x.sum(0, dtype=torch.float32)
        if self.product_dtype == torch.float32:
            _add_products(rows, x.float())
            return
        if key not in self._staged:
            buffer = torch.empty(_STAGE_ROWS, x.shape[1], dtype=self.product_dtype, device=first.device)
            self._staged[key] = [buffer, 0]
        staged = self._staged[key]
        buffer, start = staged[0], 0
        while start < len(x):
            take = min(len(x) - start, len(buffer) - staged[1])
            buffer[staged[1] : staged[1] + take] = x[start : start + take]  # rounded to bfloat16 here
            staged[1] += take
            start += take
            if staged[1] == len(buffer):
                _add_products(rows, buffer)
                staged[1] = 0

    def _flush(self, key: tuple[str, int]) -> None:
        """Multiplies the rows left in `key`'s staging buffer (in float32: no matmul shape of their own)."""
        staged = self._staged.get(key)
        if staged is not None and staged[1]:
            _add_products(self.sums[key][1], staged[0][: staged[1]].float())
            staged[1] = 0

    def channel_sums(self, key: tuple[str, int]) -> torch.Tensor:
        """`(2, channels)` float64: the sums so far of x and of x^2 per channel (the diagonal of the x x^T sums)."""
        if self.sums is None:
            raise RuntimeError("These sums were turned into moments (`moments()`); start new `MomentSums`.")
        self._flush(key)
        first, rows = self.sums[key]
        squares = torch.cat(
            [row[:, : stop - start].diagonal() for (start, stop), row in zip(_block_rows(len(first)), rows)]
        )
        return torch.stack([first, squares]).cpu().double()

    def moments(self) -> InputMoments:
        """E[x] and E[x x^T]: the sums themselves, divided in place, so this ends these sums."""
        if self.sums is None:
            raise RuntimeError("These sums were already turned into moments.")
        for key in self._staged:
            self._flush(key)
        self._staged = {}
        sums, self.sums = self.sums, None
        return _to_moments(sums, self.num_tokens)


_BLOCK = 256  # channels per block row of the x^T x sums


_STAGE_ROWS = 512  # real tokens per bfloat16 x^T x product (`MomentSums`): as fast as 1024 here, half the buffer


def _add_products(rows: list[torch.Tensor], x: torch.Tensor) -> None:
    """Adds x^T x of the `(tokens, channels)` rows `x` to the block rows `rows` of the float32 sums. x^T x is
    symmetric: each block row sums its upper part only (its diagonal block whole): 56% of the multiply-adds and of the
    memory at 2048 channels, a third less time measured."""
    for (start, stop), row in zip(_block_rows(x.shape[1]), rows):
        if x.dtype == torch.float32:
            row.addmm_(x[:, start:stop].T, x[:, start:])
        else:
            row += x[:, start:stop].T @ x[:, start:]  # bfloat16 matmul, its result added to the float32 sums


def _block_rows(channels: int) -> list[tuple[int, int]]:
    return [(start, min(start + _BLOCK, channels)) for start in range(0, channels, _BLOCK)]


def _to_moments(sums, num_tokens: int) -> InputMoments:
    return InputMoments(
        {key: (first.cpu(), [row.cpu() for row in rows]) for key, (first, rows) in sums.items()}, num_tokens
    )


def moment_widths(config) -> dict[str, int]:
    """Input width of `down_proj` (`"mlp"`) and `o_proj` (`"attn"`) of the dense `config`."""
    return {"mlp": config.intermediate_size, "attn": config.num_attention_heads * config_head_dim(config)}
