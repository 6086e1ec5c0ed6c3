"""Forward hooks that accumulate DIET's activation statistics (float32 running sums, padding ignored), and the decoder
runner that the reconstruction's moment passes (`moments`) share."""

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from .constants import ModelFamily
from .constants import head_dim as config_head_dim

if TYPE_CHECKING:  # the profile's hooks feed the moments; they do not need the module
    from .moments import MomentSums
    from .plan import PruningPlan

__all__ = ["ActivationStats", "collect_activation_stats", "record_activation_stats"]


class ActivationStats:
    """Running sums of |MLP activation| per dimension and of head-output L2 norms per head, over real tokens."""

    def __init__(
        self,
        num_layers: int,
        intermediate_size: int,
        num_heads: int,
        head_dim: int,
        *,
        channel_stats: bool = False,
        moments: "MomentSums | None" = None,
    ):
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.mlp_sums = [torch.zeros(intermediate_size, dtype=torch.float32) for _ in range(num_layers)]
        self.head_sums = [torch.zeros(num_heads, dtype=torch.float32) for _ in range(num_layers)]
        # Optional per-input-channel sums of a and a^2 of `down_proj` and `o_proj` (for the Wanda-sp / FLAP baselines)
        self.channel_stats = channel_stats
        width = num_heads * head_dim
        self.mlp_channel = [torch.zeros(2, intermediate_size, dtype=torch.float64) for _ in range(num_layers)]
        self.attn_channel = [torch.zeros(2, width, dtype=torch.float64) for _ in range(num_layers)]
        self.moments = moments  # the reconstruction's x and x x^T sums of the modules it holds, if any
        # modules whose channel sums come from `moments` (sum of x, and the diagonal of x x^T) instead of hooks of
        # their own: the same numbers, without a second pass over the activations (`record_activation_stats` adds
        # them when its block ends)
        self.channels_from_moments = set(moments.sums) if channel_stats and moments is not None else set()
        self.num_tokens = 0
        self.token_mask: torch.Tensor | None = None  # (batch, seq_len) bool, set per batch

    def _accumulate_channels(self, target: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> None:
        # (2, channels): sum over real tokens of a and of a^2
        first = torch.einsum("bsc,bs->c", values, mask)
        second = torch.einsum("bsc,bs->c", values * values, mask)
        target += torch.stack([first, second]).cpu().double()

    def accumulate_mlp(self, layer_idx: int, activation: torch.Tensor) -> None:
        """Adds `sum over real tokens of |a|`; `activation` is the input of `down_proj`, (batch, seq_len, width)."""
        mask = self.token_mask.to(activation.device, torch.float32)
        summed = torch.einsum("bsi,bs->i", activation.float().abs(), mask)
        self.mlp_sums[layer_idx] += summed.cpu()
        if self.channel_stats and ("mlp", layer_idx) not in self.channels_from_moments:
            self._accumulate_channels(self.mlp_channel[layer_idx], activation.float(), mask)
        if self.moments is not None:
            self.moments.add(("mlp", layer_idx), activation, self.token_mask)

    def accumulate_heads(self, layer_idx: int, attn_output: torch.Tensor) -> None:
        """Adds per-head L2 norms; `attn_output` is the input of `o_proj`, (batch, seq_len, heads * head_dim)."""
        batch, seq_len, _ = attn_output.shape
        # (batch, seq_len, num_heads)
        norms = attn_output.float().view(batch, seq_len, self.num_heads, self.head_dim).norm(dim=-1)
        mask = self.token_mask.to(attn_output.device, torch.float32)
        self.head_sums[layer_idx] += torch.einsum("bsh,bs->h", norms, mask).cpu()
        if self.channel_stats and ("attn", layer_idx) not in self.channels_from_moments:
            self._accumulate_channels(self.attn_channel[layer_idx], attn_output.float(), mask)
        if self.moments is not None:
            self.moments.add(("attn", layer_idx), attn_output, self.token_mask)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(num_layers, intermediate_size)` and `(num_layers, num_heads)` means over real tokens."""
        if self.num_tokens == 0:
            raise RuntimeError("No tokens were profiled; the calibration data is empty.")
        return torch.stack(self.mlp_sums) / self.num_tokens, torch.stack(self.head_sums) / self.num_tokens


@contextlib.contextmanager
def record_activation_stats(
    model: nn.Module, family: ModelFamily, stats: ActivationStats
) -> Iterator[ActivationStats]:
    """Hooks `down_proj` and `o_proj` of every layer for the duration of the block; hooks leave on every path. The
    channel sums that `stats` reads off its moments (`channels_from_moments`) are added when the block ends: the
    share of the moments' sums that this block's batches made (the sums may pool earlier blocks, e.g. other tasks)."""
    handles = []
    before = {key: stats.moments.channel_sums(key) for key in stats.channels_from_moments}
    try:
        for layer_idx in range(len(stats.mlp_sums)):
            down = model.get_submodule(family.mlp_down_proj.format(layer_idx=layer_idx))
            o_proj = model.get_submodule(family.attn_o_proj.format(layer_idx=layer_idx))
            handles.append(down.register_forward_pre_hook(_hook(stats.accumulate_mlp, layer_idx)))
            handles.append(o_proj.register_forward_pre_hook(_hook(stats.accumulate_heads, layer_idx)))
        yield stats
    finally:
        for handle in handles:
            handle.remove()
    for (kind, layer_idx), earlier in before.items():
        (stats.mlp_channel if kind == "mlp" else stats.attn_channel)[layer_idx] += (
            stats.moments.channel_sums((kind, layer_idx)) - earlier
        )


def _hook(accumulate, layer_idx):
    def hook(module, args):
        accumulate(layer_idx, args[0])

    return hook


def collect_activation_stats(
    model: nn.Module,
    family: ModelFamily,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    num_batches: int | None = None,
    channel_stats: bool = False,
    moments: "MomentSums | None" = None,
    description: str = "profiling",
    disable_progress: bool = False,
) -> ActivationStats:
    """Runs `batches` (dicts with `input_ids`, `attention_mask`) through the decoder and returns the statistics.

    Only the decoder runs: the LM head is not needed for the statistics and is most of the compute on Gemma 3.
    `moments` (a `MomentSums`) also sums x and x x^T of its modules' inputs in the same pass.
    """
    config = model.config
    stats = ActivationStats(
        config.num_hidden_layers,
        config.intermediate_size,
        config.num_attention_heads,
        config_head_dim(config),
        channel_stats=channel_stats,
        moments=moments,
    )

    def start_batch(mask):
        stats.token_mask = mask

    with record_activation_stats(model, family, stats):
        stats.num_tokens = _run_decoder(model, batches, start_batch, (description, num_batches), disable_progress)
    stats.token_mask = None
    if moments is not None:
        moments.num_tokens += stats.num_tokens
    return stats


def _run_decoder(model, batches, start_batch, progress, disable_progress) -> int:
    """Runs `batches` through the decoder (no LM head) under `torch.inference_mode()`, calling `start_batch(mask)`
    with each batch's real-token mask first; a hook raising `_StopForward` ends that batch's forward. Returns the
    number of real tokens."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    device = next(model.parameters()).device
    num_tokens = 0
    with torch.inference_mode():
        for batch in tqdm(batches, desc=progress[0], total=progress[1], disable=disable_progress):
            mask = batch["attention_mask"].bool()
            start_batch(mask)
            num_tokens += int(mask.sum())
            try:
                decoder(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    use_cache=False,
                )
            except _StopForward:
                pass
    return num_tokens


class _StopForward(Exception):
    """Raised by the hook of a pass's last module: the rest of the decoder is not needed."""


class _ChannelMasks:
    """Context manager: forward pre-hooks on every layer's `down_proj` / `o_proj` that replace the input channels of
    the units `plan` removes by 0 (or by `fill`, `ImportanceScores.channel_means()`), as the pruned model sees them."""

    def __init__(self, model, family, plan: "PruningPlan", fill: dict | None):
        self.model, self.family, self.plan, self.fill = model, family, plan, fill
        layers, d = plan.num_hidden_layers, plan.head_dim
        self.mlp_kept = torch.zeros(layers, plan.intermediate_size, dtype=torch.bool)
        self.head_kept = torch.zeros(layers, plan.num_attention_heads, dtype=torch.bool)
        for layer in range(layers):
            self.mlp_kept[layer, plan.mlp_kept_indices[layer]] = True
            self.head_kept[layer, plan.head_kept_indices[layer]] = True
        self.attn_kept = self.head_kept.repeat_interleave(d, dim=1)  # per o_proj input channel
        self.handles = []

    def _hook(self, kept: torch.Tensor, fill: torch.Tensor | None):
        def hook(module, args):
            x = args[0]
            keep = kept.to(x.device)
            replacement = torch.zeros((), dtype=x.dtype, device=x.device) if fill is None else fill.to(x)
            return (torch.where(keep, x, replacement), *args[1:])

        return hook

    def __enter__(self):
        for layer in range(self.plan.num_hidden_layers):
            for kind, template, kept in (
                ("mlp", self.family.mlp_down_proj, self.mlp_kept),
                ("attn", self.family.attn_o_proj, self.attn_kept),
            ):
                module = self.model.get_submodule(template.format(layer_idx=layer))
                fill = None if self.fill is None else self.fill[kind][layer]
                self.handles.append(module.register_forward_pre_hook(self._hook(kept[layer], fill)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
