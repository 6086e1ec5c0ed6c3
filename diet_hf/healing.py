"""Healing: knowledge distillation of a pruned model from its dense parent, on transformers' `Trainer` and PEFT.

The student learns the teacher's next-token distribution. On Gemma's 262k vocabulary the full teacher distribution
per token cannot be stored, so by default the teacher runs once over the packed data before training (then it is
freed) and keeps its top-k log-probabilities per position; the loss is the exact KL divergence between the two
distributions coarse-grained to those k tokens plus one "rest of the vocabulary" bucket. That KL is a lower bound of
the full KL; the gap is the teacher's rest mass times the KL of the two rest-conditionals (a test bounds it).
`top_k=None` keeps the teacher in memory and uses the full-vocabulary KL. The precomputed targets of the training
rows are read from their cache file a batch at a time (`_DiskTargets`), so training holds no copy of them. Either way
the student's logits are made position-chunk by chunk and no (tokens x vocabulary) tensor is held for backward: with
a frozen head (LoRA) each chunk's gradient is taken right in forward, so the logits are made once; a trained head
(full fine-tuning) uses activation checkpointing, which makes them again in backward. `position_stride` scores a
subset of the positions (all still feed attention), cutting the head's share of the work in the teacher's pass and in
training.

LoRA (PEFT) is the default and is merged into the weights at the end: the healed checkpoint is the same pruned format
and loads without PEFT. A validation guard scores held-out sequences before training and at every evaluation; the
best state is kept, and if it is no better than the unhealed model the healing is rolled back (and recorded so).
"""

import contextlib
import gc
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from ._checks import check_positive_int, is_int_at_least, is_positive_int
from ._devices import fast_bf16
from ._io import atomic_write, check_not_a_file, check_output_is_not_input
from .constants import family_for_model_type, layer_sizes
from .loading import image_text_model, is_image_text, load_causal_lm, text_causal_lm, text_config
from .options import option
from .tasks import get_task, load_examples, wikitext2_text

__all__ = [
    "HealingConfig",
    "coarse_kl",
    "cut_rows",
    "distillation_loss",
    "heal",
    "healing_texts",
    "limit_heap_retention",
    "pack_sources",
    "pack_texts",
    "scored_positions",
    "teacher_targets",
]

logger = logging.getLogger(__name__)

LORA_MODULES = ("all", "mlp", "attention")


@dataclass(frozen=True)
class HealingConfig:
    """Options of `heal`, validated on creation. Each field's `metadata["help"]` is its documentation and the help
    of its `diet-hf heal` flag (the CLI is generated from these fields)."""

    max_tokens: int = option(90_000, "training tokens to see (sequences x seq_len); sets the number of steps")
    max_time: float | None = option(None, "stop training after this many seconds (a CPU budget), if sooner")
    seq_len: int = option(256, "tokens per packed training sequence")
    bos_rows: bool = option(
        False,
        "start every packed sequence with BOS, as every evaluation prompt and perplexity window starts (a row that "
        "does not begin a document gets one inserted): Gemma's first position is its attention sink, and rows cut "
        "mid-document otherwise train the model on a first token it never sees in use",
    )
    separate_documents: bool | None = option(
        None,
        "every document of a packed row attends only to itself, from a BOS token at position 0 (position ids restart "
        "at each BOS; transformers then masks attention across documents), so every scored position sees what it "
        "would see in a prompt of its own, as evaluation prompts are scored; rows are packed as with `bos_rows` (a "
        "document cut at a row's end goes on after a BOS in the next row). Default: on where the tokenizer has a BOS "
        "token (on the 270M under two seeds: held-out perplexity 52.0 against 52.8 and dev-prompt KL 0.152 against "
        "0.162 with documents read together, benchmarks/results/healing_probe.md)",
    )
    batch_size: int = option(2, "sequences per forward and backward pass (per device)")
    gradient_accumulation_steps: int = option(
        2,
        "batches accumulated per optimizer step (2 x 2 sequences: the step of 4 x 1 at a lower peak memory, 3.13 "
        "against 3.45 GB healing the 270M on CPU in bfloat16, and no slower)",
    )
    learning_rate: float = option(
        6e-4, "AdamW peak learning rate (linear warmup and decay); 6e-4 reached the lowest held-out KL in a fixed time"
    )
    warmup_ratio: float = option(0.05, "fraction of the steps spent warming up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    lora: bool = option(
        True, "train LoRA adapters and merge them at the end (--no-lora: full fine-tuning of the decoder layers)"
    )
    train_embeddings: bool = option(
        False,
        "full fine-tuning (--no-lora) trains the input embeddings and the LM head tied to them too; off, only the "
        "decoder layers train (on the 270M the 262k x 640 embedding is 62% of the weights, and the head's weight "
        "gradient costs about as much as its forward)",
    )
    lora_r: int = option(16, "LoRA rank")
    lora_modules: str = option(
        "mlp",
        "projections given LoRA adapters in every layer: 'mlp' (gate/up/down; lower held-out perplexity and KL than "
        "'all' on the 270M under two seeds, benchmarks/results/healing_probe.md), 'all' (q/k/v/o/gate/up/down) or "
        "'attention' (q/k/v/o)",
        choices=LORA_MODULES,
    )
    keep_bos_state: bool | None = option(
        None,
        "LoRA only: keep every adapter's input matrix orthogonal to what its projection reads at a BOS token in "
        "position 0, so healing leaves that token's hidden states in every layer as they were (the attention sink "
        "every prompt starts with; DIET's default reconstruction, anchor_bos, reproduces its dense values). Default: "
        "on with LoRA where the tokenizer has a BOS token, off otherwise",
    )
    lora_alpha: int = option(32, "LoRA scaling numerator")
    lora_dropout: float = option(0.0, "LoRA dropout")
    kd_weight: float = option(1.0, "loss = w * KL(teacher || student) + (1 - w) * next-token cross-entropy")
    temperature: float = option(1.0, "softmax temperature of both distributions (KL scaled by its square)")
    hidden_weight: float = option(
        0.0,
        "weight of a layer-wise loss added to the KD loss: the relative squared error between the student's and the "
        "teacher's residual stream after every decoder layer, at every position (keeps the teacher in memory during "
        "training: its top-k targets are then made online, in the same pass)",
    )
    top_k: int | None = option(
        512,
        "teacher log-probs kept per position, precomputed so the teacher is freed (0 on the CLI: full vocabulary); "
        "512 rather than 64 since 2026-12-02: lower held-out perplexity and dev-prompt KL under two seeds on the 270M "
        "(benchmarks/results/healing_probe.md), for 4 KiB of targets per scored position instead of 0.5",
    )
    chunk_size: int = option(
        64, "positions whose logits (x 262k vocabulary) are materialized at once: memory against matmul efficiency"
    )
    position_stride: int = option(
        4,
        "score every n-th position of each training sequence (a seeded offset per sequence; the rest still feed "
        "attention): the LM head, about two thirds of the work per token on a 262k vocabulary, and the teacher's "
        "pass then run on 1/n of the positions; the guard scores every position",
    )
    validation_sequences: int = option(8, "packed sequences held out for the validation-KL guard")
    eval_steps: int = option(20, "guard evaluation every this many steps")
    save_steps: int = option(20, "resumable checkpoint every this many steps")
    guard: bool = option(
        True, "keep the best evaluated state, rolling back when none beats the unhealed model (--no-guard: the last)"
    )
    seed: int = option(0, "data order, packing and LoRA initialization")
    bf16: bool | None = option(
        None,
        "bfloat16 autocast for the training steps and the teacher's pass (weights, optimizer state and the guard stay "
        "float32). Default: on where bfloat16 matmuls are fast (CUDA GPUs that support it; CPUs with AVX512-BF16 or "
        "AMX, where a training step of the pruned 270M ran 1.6x faster), off elsewhere",
    )
    release_memory: bool = option(
        True,
        "on CPU with glibc: from the start of training, allocations of 1 MiB or more go straight to the OS "
        "(process-wide, from then on) and freed heap is returned after every step and every batch of the teacher's "
        "pass; on the 270M the peak resident size of training fell from 3.70 to 2.98 GB for a tenth more time "
        "(measured); the teacher's pass peaked at 2.36 GiB over 200 batches with it and 2.42 without",
    )

    def __post_init__(self):
        positive_ints = (
            *("max_tokens", "seq_len", "batch_size", "gradient_accumulation_steps", "lora_r", "chunk_size"),
            "position_stride",
        )
        for name in (*positive_ints, "validation_sequences", "eval_steps", "save_steps", "lora_alpha"):
            check_positive_int(name, getattr(self, name))
        if not is_int_at_least(self.seed, 0):
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed!r}.")
        if self.top_k is not None and not is_positive_int(self.top_k):
            raise ValueError(f"`top_k` must be a positive integer or None, got {self.top_k!r}.")
        if not (isinstance(self.hidden_weight, (int, float)) and self.hidden_weight >= 0):
            raise ValueError(f"`hidden_weight` must be a number >= 0, got {self.hidden_weight!r}.")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError(f"`kd_weight` must be in [0, 1], got {self.kd_weight!r}.")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)!r}.")
        if self.position_stride >= self.seq_len:
            raise ValueError(
                f"`position_stride` must be smaller than `seq_len` ({self.seq_len}), got {self.position_stride!r}."
            )
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"`max_time` must be > 0 seconds or None, got {self.max_time!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}.")
        if self.lora_modules not in LORA_MODULES:
            raise ValueError(f"`lora_modules` must be one of {LORA_MODULES}, got {self.lora_modules!r}.")
        if self.train_embeddings and self.lora:
            raise ValueError("`train_embeddings=True` applies to full fine-tuning: set `lora=False` too.")
        if not (self.separate_documents is None or isinstance(self.separate_documents, bool)):
            raise ValueError(f"`separate_documents` must be True, False or None, got {self.separate_documents!r}.")
        if not (self.keep_bos_state is None or isinstance(self.keep_bos_state, bool)):
            raise ValueError(f"`keep_bos_state` must be True, False or None, got {self.keep_bos_state!r}.")
        if self.keep_bos_state and not self.lora:
            raise ValueError("`keep_bos_state=True` constrains LoRA adapters: it needs `lora=True`.")

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size * self.gradient_accumulation_steps


# --------------------------------------------------------------------------------------------------------- losses


def coarse_kl(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per-position KL(teacher || student) over the teacher's top-k tokens `ids` plus one bucket for the rest.

    `teacher_logprobs`: (N, k) the teacher's log-probabilities of `ids` under its full softmax; `student_logprobs`:
    (N, V) the student's full log-softmax. Exact when k = V; otherwise a lower bound of the full KL, short of it by
    the teacher's rest mass times the KL between the two distributions restricted to the rest.
    """
    student_top = student_logprobs.gather(-1, ids)
    kl = (teacher_logprobs.exp() * (teacher_logprobs - student_top)).sum(-1)
    teacher_rest = _log1mexp(torch.logsumexp(teacher_logprobs, dim=-1))
    student_rest = _log1mexp(torch.logsumexp(student_top, dim=-1))
    rest = teacher_rest.exp() * (teacher_rest - student_rest)
    return kl + torch.where(teacher_rest > -30.0, rest, torch.zeros_like(rest))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable; clamped away from log(0)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The causal LM's logits for `hidden` (its LM head, then Gemma's final soft-capping where configured)."""
    weight = _HEAD_COPIES.get(model.lm_head.weight, hidden.device.type) if _HEAD_COPIES is not None else None
    if weight is None:
        logits = model.lm_head(hidden).float()
    else:
        bias = None if model.lm_head.bias is None else model.lm_head.bias.to(weight.dtype)
        logits = F.linear(hidden.to(weight.dtype), weight, bias).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class _HeadCopies:
    """Low-precision copies of LM-head weights that get no gradient (frozen, or under `no_grad`: the teacher's pass),
    made once while `_cast_heads_once` is active. Autocast casts such a weight again at every call (its cache keeps
    only weights that require grad, and only with grad enabled): for a 262k x 640 head that is a 168M-element copy per
    position chunk, more time than the chunk's bfloat16 matmul saves."""

    def __init__(self):
        self.copies = {}  # id(weight) -> (weight, its version when copied, copy)

    def get(self, weight: torch.Tensor, device_type: str) -> torch.Tensor | None:
        if (weight.requires_grad and torch.is_grad_enabled()) or not torch.is_autocast_enabled(device_type):
            return None  # a head being trained is left to autocast (whose cache keeps its cast for the step)
        dtype = torch.get_autocast_dtype(device_type)
        held = self.copies.get(id(weight))
        if held is None or held[0] is not weight or held[1] != weight._version or held[2].dtype != dtype:
            held = self.copies[id(weight)] = (weight, weight._version, weight.detach().to(dtype))
        return held[2]


_HEAD_COPIES: _HeadCopies | None = None


@contextlib.contextmanager
def _cast_heads_once():
    global _HEAD_COPIES
    previous, _HEAD_COPIES = _HEAD_COPIES, _HeadCopies()
    try:
        yield
    finally:
        _HEAD_COPIES = previous


def distillation_loss(
    model,
    hidden: torch.Tensor,
    *,
    teacher_ids: torch.Tensor | None,
    teacher_logprobs: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, dict]:
    """Mean per-position loss over the rows of `hidden` (N, H): KD against the teacher plus optional cross-entropy.

    `teacher_logprobs` is (N, k) with `teacher_ids` (N, k) for the top-k form, or (N, V) full log-probabilities with
    `teacher_ids=None`; both at `temperature`. `labels` (N,) are the next tokens (needed when `kd_weight < 1`).
    Logits are made `chunk_size` rows at a time and recomputed in backward (activation checkpointing).
    Returns the loss and its parts (`kd`, `lm`, detached floats).
    """
    if kd_weight < 1 and labels is None:
        raise ValueError("`labels` are needed when `kd_weight` < 1 (the language-modelling part of the loss).")
    if teacher_logprobs is None and kd_weight > 0:
        raise ValueError("`teacher_logprobs` are needed when `kd_weight` > 0.")
    n = hidden.shape[0]
    if n == 0:
        raise ValueError("No positions to score.")

    def chunk_loss(h, t_lp, t_ids, y):
        logits = _output_logits(model, h)
        log_student = F.log_softmax(logits / temperature, dim=-1)
        if t_lp is None:
            kd = logits.new_zeros(logits.shape[0])
        elif t_ids is None:
            kd = (t_lp.exp() * (t_lp - log_student)).sum(-1)
        else:
            kd = coarse_kl(t_lp, log_student, t_ids)
        kd = kd.sum() * temperature**2
        lm = F.cross_entropy(logits, y, reduction="sum") if y is not None and kd_weight < 1 else kd.new_zeros(())
        return kd, lm

    def targets(part):  # a chunk's teacher log-probs, teacher ids and labels
        return (
            None if teacher_logprobs is None else teacher_logprobs[part],
            None if teacher_ids is None else teacher_ids[part],
            None if labels is None else labels[part],
        )

    def combine(kd, lm):
        return kd_weight * kd + (1 - kd_weight) * lm if kd_weight < 1 else kd

    chunks = [slice(start, start + chunk_size) for start in range(0, n, chunk_size)]
    needs_grad = torch.is_grad_enabled() and hidden.requires_grad
    if needs_grad and not any(p.requires_grad for p in model.lm_head.parameters()):
        # the head is frozen (LoRA): each chunk's gradient with respect to its hidden states is taken right away, so
        # the logits are made once (not again in backward, as checkpointing would) and then dropped
        total, kd_total, lm_total = _FusedHeadLoss.apply(
            hidden, chunks, lambda part, h: chunk_loss(h, *targets(part)), combine
        )
        loss = total / n
        return loss, {"kd": float(kd_total) / n, "lm": float(lm_total) / n}
    kd_total = hidden.new_zeros((), dtype=torch.float32)
    lm_total = hidden.new_zeros((), dtype=torch.float32)
    for part in chunks:
        if needs_grad:
            kd, lm = checkpoint(chunk_loss, hidden[part], *targets(part), use_reentrant=False)
        else:
            kd, lm = chunk_loss(hidden[part], *targets(part))
        kd_total, lm_total = kd_total + kd, lm_total + lm
    kd_mean, lm_mean = kd_total / n, lm_total / n
    return combine(kd_mean, lm_mean), {"kd": float(kd_mean.detach()), "lm": float(lm_mean.detach())}


class _FusedHeadLoss(torch.autograd.Function):
    """Sum over position chunks of a loss of the (frozen) head's logits, with the gradient with respect to `hidden`
    computed chunk by chunk in forward and replayed in backward (what fused linear cross-entropy kernels do).
    Returns the combined loss and its two parts (the parts carry no gradient)."""

    @staticmethod
    def forward(ctx, hidden, chunks, chunk_loss, combine):
        grad = torch.zeros_like(hidden)
        total = hidden.new_zeros((), dtype=torch.float32)
        kd_total, lm_total = total.clone(), total.clone()
        for part in chunks:
            with torch.enable_grad():
                h = hidden[part].detach().requires_grad_(True)
                kd, lm = chunk_loss(part, h)
                loss = combine(kd, lm)
                (grad[part],) = torch.autograd.grad(loss, h)
            total += loss.detach()
            kd_total += kd.detach()
            lm_total += lm.detach()
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(kd_total, lm_total)
        return total, kd_total, lm_total

    @staticmethod
    def backward(ctx, grad_total, _grad_kd, _grad_lm):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


@torch.no_grad()
def teacher_targets(
    teacher,
    input_ids: torch.Tensor,
    *,
    top_k: int | None,
    temperature: float = 1.0,
    chunk_size: int = 256,
    positions: torch.Tensor | None = None,
    layer_outputs: list | None = None,
    document_bos: int | None = None,
) -> dict[str, torch.Tensor]:
    """The teacher's next-token log-probabilities at every position but the last of each row of `input_ids` (B, L),
    or at `positions` (B, P) only: `logprobs` (B*P, k) and `ids` (B*P, k) for `top_k`, or full (B*P, V) `logprobs`
    for `top_k=None` (P = L - 1 without `positions`). A list `layer_outputs` receives every decoder layer's output.
    With `document_bos`, every document (from that token on) is read apart (`document_position_ids`)."""
    device = next(teacher.parameters()).device
    with _recording(_decoder(teacher), layer_outputs):
        last = _decode(teacher, input_ids.to(device), document_bos)
    hidden = _scored(last, positions)
    values, indices = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        logprobs = _output_logits(teacher, hidden[start : start + chunk_size])
        if temperature != 1.0:
            logprobs.div_(temperature)
        logprobs.sub_(torch.logsumexp(logprobs, dim=-1, keepdim=True))  # log-softmax in place: one vocab-wide copy
        if top_k is None:
            values.append(logprobs.cpu())
        else:
            top = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
            values.append(top.values.cpu())
            indices.append(top.indices.to(torch.int32).cpu())
    out = {"logprobs": torch.cat(values)}
    if top_k is not None:
        out["ids"] = torch.cat(indices)
    return out


@contextlib.contextmanager
def _recording(decoder, outputs: list | None):
    """Appends the output hidden states of every layer of `decoder` to `outputs` during the block (none if None)."""
    if outputs is None:
        yield
        return

    def keep(module, args, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    hooks = [layer.register_forward_hook(keep) for layer in decoder.layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def layerwise_loss(student_layers: list[torch.Tensor], teacher_layers: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers and positions of the relative squared error ||s - t||^2 / ||t||^2 between the student's and
    the teacher's residual stream after each decoder layer (per position, so no position's norm dominates)."""
    if len(student_layers) != len(teacher_layers) or not student_layers:
        raise ValueError(f"{len(student_layers)} student layer outputs for {len(teacher_layers)} of the teacher.")
    errors = [
        ((s.float() - t.float()).pow(2).sum(-1) / t.float().pow(2).sum(-1).clamp_min(1e-6)).mean()
        for s, t in zip(student_layers, teacher_layers)
    ]
    return torch.stack(errors).mean()


def document_position_ids(input_ids: torch.Tensor, bos_token_id: int) -> torch.Tensor:
    """(B, L) position ids that restart at 0 at every `bos_token_id` of `input_ids` (B, L): passed with no attention
    mask and no cache, transformers' causal masks then let each document attend only to itself (its packed-sequence
    detection: a new sequence wherever the position id does not grow by one)."""
    index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    starts = torch.where(input_ids == bos_token_id, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - starts


def _decode(model, input_ids: torch.Tensor, bos_token_id: int | None) -> torch.Tensor:
    """The decoder's last hidden states of `input_ids`; with `bos_token_id`, each document apart
    (`document_position_ids`)."""
    positions = None if bos_token_id is None else document_position_ids(input_ids, bos_token_id)
    return _decoder(model)(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state


def _scored(last_hidden: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """(B*P, H) hidden states that predict a next token: every position but the last, or `positions` (B, P)."""
    hidden = last_hidden[:, :-1]
    if positions is not None:
        index = positions.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        hidden = hidden.gather(1, index)
    return hidden.reshape(-1, hidden.shape[-1])


def scored_positions(num_rows: int, seq_len: int, stride: int, *, seed: int = 0) -> torch.Tensor | None:
    """(num_rows, (seq_len - 1) // stride) positions scored per packed row: every `stride`-th from an offset in
    [0, stride) drawn per row from `seed`; None for stride 1 (every position)."""
    if stride == 1:
        return None
    offsets = torch.randint(stride, (num_rows, 1), generator=torch.Generator().manual_seed(seed))
    return offsets + stride * torch.arange((seq_len - 1) // stride).unsqueeze(0)


def limit_heap_retention(threshold: int = 1 << 20) -> bool:
    """glibc only: allocations of `threshold` bytes or more are mapped from and unmapped to the OS directly, for the
    rest of the process. glibc otherwise raises that threshold as large blocks are freed and then keeps freed
    activations of a few MiB in its heap, where they fragment: healing the 270M on CPU peaked at 3.70 GB resident
    with the default and at 2.98 GB with 1 MiB (9% slower). Returns whether the setting took effect."""
    try:
        import ctypes

        M_MMAP_THRESHOLD = -3
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc
        return False


def release_freed_memory() -> None:
    """Returns the C heap's free memory to the operating system (glibc's `malloc_trim`; a no-op elsewhere). PyTorch's
    CPU tensors are malloc'ed: freed ones stay in the process's heap, so the resident size keeps every step's peak."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        pass


def _decoder(model):
    """The decoder stack (`model.model`) of a causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# ----------------------------------------------------------------------------------------------------------- data


def healing_texts(
    sources: Iterable[str] = ("wikitext2",), *, data_dir: str | os.PathLike | None = None
) -> tuple[list[str], dict[str, str]]:
    """Training texts from `sources`: `"wikitext2"` (the WikiText-2 validation split, joined into one text; its test
    split stays for perplexity) and task names (their train split, as prompt + gold answer; never evaluation
    examples). Returns the texts and, per source, the split it came from."""
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
        texts.extend(spec.calibration_text(doc) for doc in docs)
        splits[source] = spec.train_split
    return texts, splits


def pack_texts(texts: list[str], tokenizer, seq_len: int, *, seed: int = 0, bos_rows: bool = False) -> torch.Tensor:
    """Tokenizes every text (BOS first, EOS last), shuffles the documents with `seed`, concatenates them, cuts the
    stream into rows of `seq_len` tokens (the remainder is dropped) and shuffles the rows. With `bos_rows` every row
    starts with BOS: a row that does not start at a document gets BOS inserted before its `seq_len - 1` tokens
    (`cut_rows`). Returns (rows, seq_len)."""
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            "The healing data is empty: give a non-empty list of strings or a dataset with a text column."
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


# -------------------------------------------------------------------------------------------------------- checks


def check_parent(student_config, teacher_config) -> None:
    """Raises `ValueError` unless `teacher_config` could be the dense model `student_config` was pruned from."""
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim")
    different = [
        f"{name}: student {getattr(student_config, name, None)}, teacher {getattr(teacher_config, name, None)}"
        for name in fields
        if getattr(student_config, name, None) != getattr(teacher_config, name, None)
    ]
    family = type(student_config).model_type.removeprefix("pruned_")
    if teacher_config.model_type.removeprefix("pruned_") != family:
        different.append(f"model_type: student {student_config.model_type}, teacher {teacher_config.model_type}")
    base = (getattr(student_config, "pruning", None) or {}).get("base_model")
    if different:
        raise ValueError(
            "`teacher` is not the dense parent of this pruned model (" + "; ".join(different) + "). Pass the model "
            f"it was pruned from (the card names {base})."
        )
    if not teacher_config.model_type.startswith("pruned_"):
        return
    layers = range(student_config.num_hidden_layers)
    if [layer_sizes(teacher_config, i) for i in layers] == [layer_sizes(student_config, i) for i in layers]:
        raise ValueError(
            "`teacher` is a pruned model with this student's own per-layer sizes (the student itself, or another "
            "copy or healing of it): distilling from it cannot give back what pruning removed. Pass the dense model "
            f"it was pruned from (the card names {base})."
        )
    logger.warning(
        "`teacher` is itself pruned (%s), not the dense model this student was pruned from (%s): healing distills "
        "toward the pruned teacher.",
        teacher_config.model_type,
        base,
    )


# ------------------------------------------------------------------------------------------------------- training


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


def _trainer_classes():
    from transformers import Trainer, TrainerCallback

    class DistillationTrainer(Trainer):
        """`Trainer` whose loss is `distillation_loss` against precomputed or online teacher targets."""

        def __init__(self, *args, healing: HealingConfig, teacher=None, document_bos=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.healing, self.teacher, self.document_bos = healing, teacher, document_bos

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # the decoder and the head are called directly, not through the forward that accelerate wraps in
            # autocast, so mixed precision is applied here
            with _autocast(self.healing, inputs["input_ids"].device):
                return self._loss(model, inputs, return_outputs)

        def _loss(self, model, inputs, return_outputs):
            ids, positions = inputs["input_ids"], inputs.get("positions")
            layerwise = self.healing.hidden_weight > 0
            student_layers = [] if layerwise else None
            with _recording(_decoder(model), student_layers):
                hidden = _scored(_decode(model, ids, self.document_bos), positions)
            labels = ids[:, 1:] if positions is None else ids[:, 1:].gather(1, positions)
            teacher_layers = [] if layerwise else None
            if self.teacher is not None:
                targets = teacher_targets(
                    self.teacher,
                    ids,
                    top_k=self.healing.top_k,
                    temperature=self.healing.temperature,
                    chunk_size=self.healing.chunk_size,
                    positions=positions,
                    layer_outputs=teacher_layers,
                    document_bos=self.document_bos,
                )
                t_lp = targets["logprobs"].to(hidden.device)
                t_ids = targets["ids"].to(hidden.device).long() if "ids" in targets else None
            elif "teacher_logprobs" in inputs:
                t_lp = inputs["teacher_logprobs"].reshape(-1, inputs["teacher_logprobs"].shape[-1]).float()
                t_ids = inputs["teacher_ids"].reshape(-1, inputs["teacher_ids"].shape[-1]).long()
            else:  # kd_weight 0: the next-token loss alone
                t_lp = t_ids = None
            loss, _ = distillation_loss(
                _causal_lm(model),
                hidden,
                teacher_ids=t_ids,
                teacher_logprobs=t_lp,
                labels=labels.reshape(-1),
                kd_weight=self.healing.kd_weight,
                temperature=self.healing.temperature,
                chunk_size=self.healing.chunk_size,
            )
            if layerwise:
                loss = loss + self.healing.hidden_weight * layerwise_loss(student_layers, teacher_layers)
            return (loss, None) if return_outputs else loss

    class Guard(TrainerCallback):
        """Scores the held-out sequences every `eval_steps`; keeps the best trainable state (starting from the
        unhealed one), saved with every checkpoint so a resumed run chooses as an uninterrupted one; stops on the
        time budget."""

        def __init__(self, score, trainable, healing, before, initial_state):
            self.score, self.trainable, self.healing = score, trainable, healing
            self.history = [{"step": 0, "validation_kl": before}]
            self.best, self.best_step, self.best_state = before, 0, initial_state
            self.started = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            if args.resume_from_checkpoint:
                saved = torch.load(Path(args.resume_from_checkpoint) / "diet_guard.pt", weights_only=True)
                self.history, self.best, self.best_step = saved["history"], saved["best"], saved["best_step"]
                self.best_state = saved["best_state"]

        def _check(self, state, model):
            value = self.score(model)
            self.history.append({"step": state.global_step, "validation_kl": value})
            if value < self.best:
                self.best, self.best_step = value, state.global_step
                self.best_state = {k: v.detach().clone() for k, v in self.trainable(model).items()}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            budget = self.healing.max_time
            if budget is not None and time.monotonic() - self.started >= budget:
                control.should_training_stop = True
            if state.global_step % self.healing.eval_steps == 0 or control.should_training_stop:
                self._check(state, model)
            elif state.global_step == state.max_steps:
                self._check(state, model)
            return control

        def on_save(self, args, state, control, **kwargs):
            saved = {
                "history": self.history,
                "best": self.best,
                "best_step": self.best_step,
                "best_state": self.best_state,
            }
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            torch.save(saved, directory / "diet_guard.pt")

    class LossBar(TrainerCallback):
        """A progress bar whose postfix shows the latest training loss (replaces transformers' log printing)."""

        def __init__(self, disable: bool = False):
            self.bar, self.disable = None, disable

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="healing", unit="step", disable=self.disable
            )

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    class KeepBosState(TrainerCallback):
        """After every optimizer step, projects each LoRA input matrix off its projection's BOS input (`_BosBasis`),
        before the guard scores or a checkpoint is saved."""

        def __init__(self, basis):
            self.basis = basis

        def on_optimizer_step(self, args, state, control, **kwargs):
            self.basis.project()

    class ReleaseMemory(TrainerCallback):
        """After every step, a step's freed temporaries, kept by the C heap, go back to the OS."""

        def on_step_end(self, args, state, control, **kwargs):
            release_freed_memory()

    return DistillationTrainer, Guard, LossBar, KeepBosState, ReleaseMemory


class _BosBasis:
    """What every LoRA-adapted projection reads at a BOS token in position 0, as unit vectors, and the projection of
    each adapter's input matrix `A` off it (`A -= (A u) u^T`).

    A token in position 0 attends to itself alone, so its hidden states are a function of the weights only. With
    `A u = 0` an adapter adds nothing at that token's input; if that holds for every adapter, no layer's output at
    BOS changes, so every projection keeps reading the same `u` there (by induction over the layers), however the
    adapters train. Projecting after every optimizer step (Adam's per-coordinate update leaves the subspace; a
    projected gradient would not keep it) keeps the constraint exact up to float rounding.
    """

    def __init__(self, model, bos_token_id: int):
        from peft.tuners.lora import LoraLayer

        modules = [m for m in model.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]
        inputs = {}

        def keep(module, args):
            inputs[module] = args[0].reshape(-1, args[0].shape[-1])[0].detach().float()

        handles = [module.register_forward_pre_hook(keep) for module in modules]
        try:
            device = next(model.parameters()).device
            with torch.no_grad():
                _decode(model, torch.tensor([[bos_token_id]], device=device), None)
        finally:
            for handle in handles:
                handle.remove()
        self.pairs = []  # (A's weight, u) per adapter
        for module in modules:
            weight, x = module.lora_A["default"].weight, inputs[module]
            self.pairs.append((weight, (x / x.norm().clamp_min(1e-12)).to(weight.device, weight.dtype)))
        self.project()

    @torch.no_grad()
    def project(self) -> None:
        for weight, unit in self.pairs:
            weight.sub_(torch.outer(weight @ unit, unit))


@torch.no_grad()
def _validation_kl(
    model, rows: torch.Tensor, targets, teacher, healing: HealingConfig, document_bos: int | None = None
) -> float:
    """Mean per-position KD loss of `model` on the held-out rows (the guard's measure), each document apart with
    `document_bos`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, rows.shape[0], healing.batch_size):
        ids = rows[start : start + healing.batch_size].to(device)
        hidden = _scored(_decode(model, ids, document_bos), None)
        if teacher is not None:
            t = teacher_targets(teacher, ids, top_k=None, temperature=healing.temperature, document_bos=document_bos)
            t_lp, t_ids = t["logprobs"], None
        else:
            part = slice(start * (rows.shape[1] - 1), (start + ids.shape[0]) * (rows.shape[1] - 1))
            t_lp, t_ids = targets["logprobs"][part], targets["ids"][part].long()
        loss, _ = distillation_loss(
            _causal_lm(model),
            hidden,
            teacher_ids=None if t_ids is None else t_ids.to(device),
            teacher_logprobs=t_lp.to(device).float(),
            temperature=healing.temperature,
            chunk_size=healing.chunk_size,
        )
        total += float(loss) * hidden.shape[0]
        count += hidden.shape[0]
    model.train(was_training)
    return total / count


def _autocast(healing: HealingConfig, device: torch.device):
    """bfloat16 autocast on `device` when `healing.bf16` (a no-op context otherwise)."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=healing.bf16)


def _teacher_config(teacher, token=None):
    """The teacher's config and name, without loading weights when `teacher` is a Hub id or directory."""
    if isinstance(teacher, (str, os.PathLike)):
        from transformers import AutoConfig

        from ._io import check_model_location

        check_model_location(teacher, "teacher")
        return text_config(AutoConfig.from_pretrained(teacher, token=token)), str(teacher)
    return text_config(teacher.config), getattr(teacher.config, "_name_or_path", None) or None


def _load_teacher(teacher, student, token=None):
    parameter = next(student.parameters())
    model = load_causal_lm(teacher, dtype=parameter.dtype, token=token)  # an image-text Gemma 3: its text model
    return model.to(parameter.device).eval()


def _precompute(
    get_teacher,
    rows: torch.Tensor,
    healing: HealingConfig,
    path: Path | None,
    positions: torch.Tensor | None = None,
    document_bos: int | None = None,
    *,
    on_disk: bool = False,
    disable_progress: bool = False,
) -> dict:
    """Top-k teacher targets for every row, at `positions` if given, each document apart with `document_bos` (cached
    in `path`, so a resumed run does not run the teacher again). With `on_disk` (and a `path`) they are returned as
    `_DiskTargets` of the cache file, read a slice at a time, and no copy stays in memory."""
    from safetensors.torch import save_file

    key = {"rows": rows.contiguous(), **({} if positions is None else {"positions": positions.contiguous()})}
    if document_bos is not None:
        key["document_bos"] = torch.tensor([document_bos])
    if path is not None and path.is_file():
        cached = _cached_targets(path, key, on_disk)
        if cached is not None:
            return cached
    teacher = get_teacher()
    device = next(teacher.parameters()).device
    per_row = rows.shape[1] - 1 if positions is None else positions.shape[1]
    # the targets go into tensors made once, and the freed heap goes back to the OS after every batch: keeping a
    # small tensor per batch between the batch's freed vocabulary-wide temporaries made the resident size grow with
    # the number of batches (200 batches of the 270M: peak 3.97 GiB before, 2.35 after; a healing benchmark over
    # 1056 batches peaked at 16.3 GiB before)
    targets = {}
    with _autocast(healing, device), _cast_heads_once():  # the teacher's head is cast once, not per chunk
        batches = range(0, rows.shape[0], healing.batch_size)
        for start in tqdm(batches, desc="teacher top-k", unit="batch", disable=disable_progress):
            out = teacher_targets(
                teacher,
                rows[start : start + healing.batch_size],
                top_k=healing.top_k,
                temperature=healing.temperature,
                chunk_size=healing.chunk_size,
                positions=None if positions is None else positions[start : start + healing.batch_size],
                document_bos=document_bos,
            )
            for name, value in out.items():
                if name not in targets:
                    targets[name] = value.new_empty((rows.shape[0] * per_row, value.shape[1]))
                targets[name][start * per_row : start * per_row + value.shape[0]] = value
            del out, value
            if healing.release_memory and device.type == "cpu":
                release_freed_memory()
    if path is not None:
        atomic_write(path, lambda tmp: save_file({**targets, **key}, str(tmp)))
        if on_disk:
            return {name: _DiskTargets(path, name) for name in targets}
    return targets


def _cached_targets(path: Path, key: dict[str, torch.Tensor], on_disk: bool) -> dict | None:
    """The targets in the cache file `path` if it was written for `key` (the rows, positions and BOS it was made
    for), else None; as `_DiskTargets` with `on_disk`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as cache:
        if set(cache.keys()) != set(key) | {"logprobs", "ids"}:
            return None
        for name, value in key.items():
            stored = cache.get_tensor(name)
            if stored.shape != value.shape or not torch.equal(stored, value):
                return None
        if not on_disk:
            return {name: cache.get_tensor(name) for name in ("logprobs", "ids")}
    return {name: _DiskTargets(path, name) for name in ("logprobs", "ids")}


class _DiskTargets:
    """One tensor of a safetensors file, read a slice of rows at a time. The file is opened for each read, so none of
    it stays mapped: training holds no copy of its teacher targets, which take 4 KiB per scored position at top-512
    (92 MB for 90k tokens at every 4th position)."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = str(path), name

    def __getitem__(self, rows: slice) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as cache:
            return cache.get_slice(self.name)[rows]


def heal(
    student,
    teacher,
    tokenizer,
    data,
    *,
    config: HealingConfig | None = None,
    output_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    data_record: dict | None = None,
    callbacks: list | None = None,
    repo_id: str | None = None,
    disable_progress: bool = False,
    processor=None,
    eval_texts=None,
    eval_tasks=None,
    eval_options: dict | None = None,
    token: str | None = None,
):
    """Distills `teacher` (the dense parent) into `student` (a pruned model) and returns the healed model.

    Args:
        student: a pruned causal LM (`PrunedGemma*ForCausalLM`); trained in place. A pruned image-text Gemma 3
            (`PrunedGemma3ForConditionalGeneration`): its text model is healed, and the healed model keeps its vision
            tower and projector (unchanged, shared).
        teacher: its dense parent (checked: vocabulary, hidden size, layers, family), as a model or as a Hub id /
            directory. With `top_k` set it runs once over the data and is not needed afterwards: given as a path, it
            is loaded for that pass and freed before training (and not loaded at all when a resumed run finds its
            cached targets); given as a model, `del` your reference to free the memory.
        tokenizer: the tokenizer of both.
        data: a list of strings, a `datasets.Dataset` with a `text` column, or a dict of such per source (each
            packed apart, their sequences interleaved in equal shares; see `healing_texts`).
        config (`HealingConfig`, *optional*): the options; defaults of `HealingConfig()`.
        output_dir (*optional*): where to save the healed model (atomically: absent or complete, never half-written).
        work_dir (*optional*): checkpoints and the teacher's cached targets (default `<output_dir>.healing`); kept
            until the healed model is saved, so an interrupted run resumes with `resume=True`.
        data_record (`dict`, *optional*): what the data is (sources, splits), recorded in the card.
        callbacks (`list[TrainerCallback]`, *optional*): more `Trainer` callbacks.
        repo_id (`str`, *optional*): the Hub repository the saved model is meant for (its card's usage snippet names
            it); upload `output_dir` with `diet_hf.hub.push_saved_model`.
        disable_progress (`bool`, *optional*): no progress bars (the teacher's pass, training).
        processor (`ProcessorMixin`, *optional*): a pruned image-text model's processor, saved in `output_dir` instead
            of `tokenizer` (which it holds); `diet_hf.loading.load_processor` reads it from the pruned checkpoint.
        eval_texts (*optional*): held-out texts of your own (never trained on), as `data` takes them (a list of
            strings, a dataset with a `text` column, or a dict of them per source): scored with
            `diet_hf.evaluation.texts_perplexity` on the teacher and the unhealed student before training and on the
            healed model after; the perplexities and the healed model's ratios to both, with 95% paired-bootstrap
            intervals over the texts, go into `config.pruning["healing"]["held_out_texts"]` and the card. A text
            that is also in the healing data is warned about.
        eval_tasks (*optional*): tasks to score as `diet_hf.evaluation.evaluate` scores them (registered names and
            your own `tasks.multiple_choice_task`s, none of them trained on), on the teacher and the unhealed
            student before training and on the healed model after, on the same examples (the evaluation examples
            the student's pruning profiled left out); each model's headline scores and the healed model's
            differences to both, with 95% paired-bootstrap intervals, go into
            `config.pruning["healing"]["held_out_tasks"]` and the card.
        eval_options (`dict`, *optional*): `evaluate`'s keywords for `eval_tasks` (`limit`, `half`, `data_dir`,
            `batch_size`).
        token (`str`, *optional*): the Hub token to read a `teacher` given as a Hub id with (default: `HF_TOKEN`,
            else the login `hf auth login` saved).

    Returns:
        The healed pruned model (LoRA merged), with `config.pruning["healing"]` describing the healing.
    """
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments

    from .evaluation.language_modeling import texts_perplexity_by_source

    config = config or HealingConfig()
    # a pruned image-text Gemma 3: its text model is healed, then put back beside its unchanged vision tower
    image_text, student = (student, text_causal_lm(student)) if is_image_text(student.config) else (None, student)
    teacher_config, teacher_name = _teacher_config(teacher, token)
    check_parent(student.config, teacher_config)
    if output_dir is not None:  # before any training, not when the healed model is saved
        check_not_a_file(output_dir, "output_dir")
        if isinstance(teacher, (str, os.PathLike)):
            check_output_is_not_input(output_dir, "output_dir", {"teacher": teacher})
    has_bos = getattr(tokenizer, "bos_token_id", None) is not None
    for name in ("separate_documents", "keep_bos_state"):
        if getattr(config, name) and not has_bos:
            raise ValueError(f"`{name}=True` needs a tokenizer with a BOS token; this one has none.")
    if config.keep_bos_state is None:  # resolved here, so the record says what ran
        config = replace(config, keep_bos_state=config.lora and has_bos)
    if config.separate_documents is None:
        config = replace(config, separate_documents=has_bos)
    document_bos = tokenizer.bos_token_id if config.separate_documents else None
    sources = {name: _text_list(texts) for name, texts in (data if isinstance(data, dict) else {"data": data}).items()}
    held_out = _held_out_sources(eval_texts, sources)  # checked before the data is packed or anything runs
    score_tasks = _task_scorer(eval_tasks, eval_options, student, tokenizer, disable_progress)
    rows = pack_sources(
        sources, tokenizer, config.seq_len, seed=config.seed, bos_rows=config.bos_rows or config.separate_documents
    )
    if rows.shape[0] <= config.validation_sequences:
        raise ValueError(
            f"The healing data packs into {rows.shape[0]} sequences of {config.seq_len} tokens; at least "
            f"{config.validation_sequences + 1} are needed ({config.validation_sequences} are held out for the guard)."
        )
    validation, train = rows[: config.validation_sequences], rows[config.validation_sequences :]
    steps_for_tokens = math.ceil(config.max_tokens / config.tokens_per_step)
    rows_needed = steps_for_tokens * config.batch_size * config.gradient_accumulation_steps
    train = train[: max(rows_needed, config.batch_size)]
    max_steps = min(
        steps_for_tokens, math.ceil(train.shape[0] / (config.batch_size * config.gradient_accumulation_steps))
    )
    positions = scored_positions(train.shape[0], config.seq_len, config.position_stride, seed=config.seed)
    if work_dir is None:
        if output_dir is None:
            raise ValueError("Pass `output_dir` or `work_dir`: healing keeps resumable checkpoints there.")
        work_dir = Path(output_dir).with_name(Path(output_dir).name + ".healing")
    work_dir = Path(work_dir)
    if work_dir.exists() and not resume and any(work_dir.iterdir()):
        raise FileExistsError(
            f"`work_dir` {work_dir} holds an earlier run: pass `resume=True` (CLI: --resume) to continue it, or "
            "delete it."
        )
    work_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    use_cuda = torch.cuda.is_available() and next(student.parameters()).is_cuda
    if config.bf16 is None:  # resolved here, so the record says what ran
        config = replace(config, bf16=fast_bf16(next(student.parameters()).device))
    release = config.release_memory and not use_cuda  # the C heap's retention is a CPU training matter
    online = config.top_k is None
    layerwise = config.hidden_weight > 0  # the teacher runs beside the student at every step
    loaded = {}

    def get_teacher():  # a teacher given by name is loaded only when something must run through it
        if "model" not in loaded:
            by_name = isinstance(teacher, (str, os.PathLike))
            model = _load_teacher(teacher, student, token) if by_name else text_causal_lm(teacher)
            loaded["model"] = model.eval()
        return loaded["model"]

    if online:
        teacher = get_teacher()
        train_targets = validation_targets = None
    else:
        validation_targets = _precompute(
            get_teacher,
            validation,
            config,
            work_dir / "teacher_validation.safetensors",
            document_bos=document_bos,
            disable_progress=disable_progress,
        )
        # the next-token loss alone (kd_weight 0) needs the teacher only for the guard's held-out sequences; the
        # layer-wise loss makes its top-k targets online
        train_targets = (
            _precompute(
                get_teacher,
                train,
                config,
                work_dir / "teacher_train.safetensors",
                positions,
                document_bos,
                on_disk=True,  # read a batch's slice at a time: the training steps hold no copy of them
                disable_progress=disable_progress,
            )
            if config.kd_weight > 0 and not layerwise
            else None
        )
        if held_out:  # while it is loaded (a resumed run that finds its cached targets loads it for this alone)
            teacher_texts = texts_perplexity_by_source(
                get_teacher(), tokenizer, held_out, disable_progress=disable_progress
            )
        if score_tasks:
            teacher_tasks = score_tasks(get_teacher())
        teacher = get_teacher() if layerwise else None  # otherwise freed: training needs only its cached targets
        if not layerwise:
            loaded.clear()
        gc.collect()
        if release:
            release_freed_memory()
    if release:  # from here on: the teacher's pass gains nothing from it, and mapping every block anew slows it
        limit_heap_retention()
    guard_teacher = teacher if online else None
    training_teacher = teacher if (online or layerwise) else None
    if held_out:
        if online:
            teacher_texts = texts_perplexity_by_source(teacher, tokenizer, held_out, disable_progress=disable_progress)
        student.eval()
        unhealed_texts = texts_perplexity_by_source(student, tokenizer, held_out, disable_progress=disable_progress)
    if score_tasks:
        if online:
            teacher_tasks = score_tasks(teacher)
        student.eval()
        unhealed_tasks = score_tasks(student)

    before = _validation_kl(student, validation, validation_targets, guard_teacher, config, document_bos)
    # seeded again after the teacher's pass: loading a teacher by name may draw from the generator (transformers 4.57
    # initializes weights it then overwrites), and the LoRA start must not depend on how the teacher was given
    torch.manual_seed(config.seed)
    if config.lora:
        import peft

        layout = family_for_model_type(student.config.model_type).layout
        projections = {
            "all": layout.projection_names,
            "mlp": layout.mlp_projection_names,
            "attention": layout.attention_projection_names,
        }[config.lora_modules]
        targets = [
            name
            for name, module in student.named_modules()
            if name.rsplit(".", 1)[-1] in projections and isinstance(module, torch.nn.Linear) and module.weight.numel()
        ]
        lora = peft.LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets
        )
        model = peft.get_peft_model(student, lora)
        model.peft_config["default"].base_model_name_or_path = None  # see `_unnamed` below
    else:
        if not config.train_embeddings:
            for module in (student.get_input_embeddings(), student.get_output_embeddings()):
                module.requires_grad_(False)
        _own_storage(student)
        model = student
    model.train()

    def trainable(m):
        return {k: v for k, v in m.named_parameters() if v.requires_grad}

    DistillationTrainer, Guard, LossBar, KeepBosState, ReleaseMemory = _trainer_classes()
    bos_basis = None
    if config.keep_bos_state:
        bos_basis = _BosBasis(model, tokenizer.bos_token_id)  # before the guard copies the initial state
    guard = Guard(
        lambda m: _validation_kl(m, validation, validation_targets, guard_teacher, config, document_bos),
        trainable,
        config,
        before,
        {k: v.detach().clone() for k, v in trainable(model).items()},
    )
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=math.ceil(config.warmup_ratio * max_steps),
        lr_scheduler_type="linear",
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        use_cpu=not use_cuda,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=model,
        args=args,
        train_dataset=_PackedDataset(train, train_targets, positions),
        data_collator=_collate,
        healing=config,
        teacher=training_teacher,
        document_bos=document_bos,
        callbacks=[
            *([KeepBosState(bos_basis)] if bos_basis else []),
            guard,
            LossBar(disable_progress),
            *([ReleaseMemory()] if release else []),
            *(callbacks or []),
        ],
    )
    for printer in (ProgressCallback, PrinterCallback):  # LossBar is the progress bar; no raw log dicts on stdout
        trainer.remove_callback(printer)
    checkpoints = sorted((work_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    started = time.monotonic()
    with _unnamed(student), _cast_heads_once():
        trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if resume and checkpoints else None)
    seconds = time.monotonic() - started

    steps = trainer.state.global_step
    # the best state seen (the unhealed one when no evaluation beat it: then the healing is rolled back)
    rolled_back = config.guard and guard.best_step == 0
    if config.guard:
        with torch.no_grad():
            current = trainable(model)
            for name, value in guard.best_state.items():
                current[name].copy_(value)
    model.eval()
    probe = validation[:1].to(next(model.parameters()).device)
    with torch.no_grad():
        trained_logits = _causal_lm(model)(input_ids=probe).logits.float()
    # safe_merge writes W + BA into a new tensor: an in-place merge would change every model sharing W (a model fresh
    # from `build_pruned_model` shares its unsliced weights with the dense parent, often the teacher itself)
    healed = (model.unload() if rolled_back else model.merge_and_unload(safe_merge=True)) if config.lora else model
    healed.eval()
    with torch.no_grad():
        merge_error = float((healed(input_ids=probe).logits.float() - trained_logits).abs().max())
    # float32 rounding of W + BA against W x + B(A x): ~1e-4 on logits of tens over a 262k vocabulary
    tolerance = 5e-2 if next(healed.parameters()).dtype != torch.float32 else 2e-3
    if merge_error > tolerance:
        raise RuntimeError(f"Merging the LoRA weights changed the logits by {merge_error:.2e} (> {tolerance:g}).")
    after = guard.best if config.guard else guard.history[-1]["validation_kl"]
    curve = [(entry["step"], round(entry["loss"], 5)) for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "method": "knowledge distillation from the dense parent",
        "teacher": teacher_name,
        "data": data_record or {"sources": list(sources), "splits": None},
        "training_sequences": int(train.shape[0]),
        "validation_sequences": int(validation.shape[0]),
        "steps": steps,
        "tokens_seen": steps * config.tokens_per_step,
        "scored_positions_per_sequence": config.seq_len - 1 if positions is None else int(positions.shape[1]),
        "train_seconds": round(seconds, 1),
        "objective": _objective_text(config),
        "adapter": (
            f"LoRA r={config.lora_r} alpha={config.lora_alpha} on {config.lora_modules} projections"
            + (", orthogonal to the BOS token's inputs" if config.keep_bos_state else "")
            + ", merged"
            if config.lora
            else "full fine-tuning" + ("" if config.train_embeddings else " of the decoder layers")
        ),
        "options": asdict(config),
        "validation_kl_before": round(before, 5),
        "validation_kl_after": round(after, 5),
        "validation_kl_history": [{**e, "validation_kl": round(e["validation_kl"], 5)} for e in guard.history],
        "best_step": guard.best_step if config.guard else steps,
        "merge_max_abs_logit_diff": merge_error,
        "rolled_back": rolled_back,
        "loss_curve": _thin(curve, 60),
    }
    if held_out:
        healed_texts = texts_perplexity_by_source(healed, tokenizer, held_out, disable_progress=disable_progress)
        record["held_out_texts"] = _held_out_record(teacher_texts, unhealed_texts, healed_texts)
    if score_tasks:
        record["held_out_tasks"] = _held_out_tasks_record(teacher_tasks, unhealed_tasks, score_tasks(healed))
    healed.config.pruning = {**(getattr(healed.config, "pruning", None) or {}), "healing": record}
    if image_text is not None:
        healed = image_text_model(image_text, healed)
    if output_dir is not None:
        from .hub import save_pruned_model

        plan = getattr(image_text if image_text is not None else student, "diet_plan", None)
        saved_tokenizer = processor if processor is not None else tokenizer
        save_pruned_model(healed, output_dir, tokenizer=saved_tokenizer, plan=plan, repo_id=repo_id)
        shutil.rmtree(work_dir, ignore_errors=True)
    return healed


@contextlib.contextmanager
def _unnamed(model):
    """`model.name_or_path` blanked for the duration. PEFT's checkpoint save compares the vocabulary with the base
    model's by loading the config at `name_or_path` (a pruned model's is its dense parent's directory or Hub id) into
    the pruned config class: a warning that a `gemma3_text` config makes a pruned one at every checkpoint, or a Hub
    request when offline. LoRA never touches the embeddings: there is nothing to compare."""
    name, model.name_or_path = model.name_or_path, ""
    try:
        yield model
    finally:
        model.name_or_path = name


def _own_storage(model) -> None:
    """Gives every trained parameter of `model` its own memory (tied ones stay tied), so training it in place cannot
    change another model sharing its tensors (a pruned model shares its unsliced weights with the dense parent).
    Frozen parameters keep theirs: nothing writes to them."""
    copies = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        key = param.data_ptr()
        if key not in copies:
            copies[key] = param.data.clone()
        param.data = copies[key]


def _objective_text(config: HealingConfig) -> str:
    kl = (
        f"KL(teacher || student) on top-{config.top_k} teacher log-probs + rest bucket"
        if config.top_k
        else "KL(teacher || student) on the full vocabulary"
    )
    layers = (
        f" + {config.hidden_weight:g} x relative squared error of every layer's output"
        if config.hidden_weight > 0
        else ""
    )
    if config.kd_weight == 0:
        return "next-token loss only (the teacher is used for the guard's validation KL)" + layers
    if config.kd_weight == 1:
        return kl + layers
    return f"{config.kd_weight:g} x {kl} + {1 - config.kd_weight:g} x next-token loss" + layers


def _held_out_sources(eval_texts, sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """`heal`'s `eval_texts` as `{name: texts}`, checked (non-empty strings); warns of texts also in the healing
    data."""
    if eval_texts is None:
        return {}
    held_out = {
        name: _text_list(texts, "eval_texts")
        for name, texts in (eval_texts if isinstance(eval_texts, dict) else {"texts": eval_texts}).items()
    }
    if not held_out:
        raise ValueError("`eval_texts` is an empty dict: pass at least one source of texts, or None.")
    trained = {text for texts in sources.values() for text in texts}
    for name, texts in held_out.items():
        if not texts:
            raise ValueError(f"`eval_texts` {name!r} is empty: pass at least one text.")
        if not all(isinstance(text, str) and text for text in texts):
            raise ValueError(f"`eval_texts` {name!r} must hold non-empty strings only.")
        seen = sum(text in trained for text in texts)
        if seen:
            logger.warning(
                "%d of the %d held-out texts %r are also in the healing data: their perplexity is not a held-out "
                "measure.",
                seen,
                len(texts),
                name,
            )
    return held_out


def _held_out_record(teacher: dict, unhealed: dict, healed: dict) -> dict:
    """Per source: the three perplexities and the healed model's ratios to the unhealed one and to the teacher, with
    their paired-bootstrap intervals, and the share of the unhealed model's gap to the teacher that healing closed
    (on log-perplexity)."""
    from .evaluation import paired_bootstrap_perplexity

    record = {}
    for name, result in healed.items():
        gap = math.log(unhealed[name]["perplexity"]) - math.log(teacher[name]["perplexity"])
        closed = math.log(unhealed[name]["perplexity"]) - math.log(result["perplexity"])
        record[name] = {
            "texts": result["texts"],
            "tokens": result["tokens"],
            "teacher": round(teacher[name]["perplexity"], 4),
            "unhealed": round(unhealed[name]["perplexity"], 4),
            "healed": round(result["perplexity"], 4),
            "healed_over_unhealed": _rounded_ratio(paired_bootstrap_perplexity(result, unhealed[name])),
            "healed_over_teacher": _rounded_ratio(paired_bootstrap_perplexity(result, teacher[name])),
            "gap_closed": round(closed / gap, 4) if gap > 0 else None,
        }
    return record


def _task_scorer(eval_tasks, eval_options: dict | None, student, tokenizer, disable_progress: bool):
    """`heal`'s `eval_tasks` as a function of a model (`evaluate` on the same examples each time, with per-example
    answers), or None; the tasks and options are checked now, before anything runs."""
    from .evaluation import evaluate
    from .tasks import Task, evaluation_examples

    if eval_tasks is None:
        if eval_options:
            raise ValueError("`eval_options` is set but `eval_tasks` is not: name the tasks to score.")
        return None
    tasks = [eval_tasks] if isinstance(eval_tasks, (str, Task)) else list(eval_tasks)
    if not tasks:
        raise ValueError("`eval_tasks` is empty: name at least one task, or pass None.")
    options = dict(eval_options or {})
    unknown = set(options) - {"limit", "half", "data_dir", "batch_size"}
    if unknown:
        raise ValueError(
            f"`eval_options` takes limit, half, data_dir and batch_size; got {', '.join(sorted(unknown))}."
        )
    for task in tasks:  # an unknown name or missing data fails now, not after training
        evaluation_examples(task, data_dir=options.get("data_dir"))
    # the evaluation examples the student's pruning profiled are scored for no model
    options["exclude_ids"] = (getattr(student.config, "pruning", None) or {}).get("calibration_eval_ids")

    def score(model):
        return evaluate(model, tokenizer, tasks, return_predictions=True, disable_progress=disable_progress, **options)

    return score


def _held_out_tasks_record(teacher: dict, unhealed: dict, healed: dict) -> dict:
    """Per task and on the average: the three models' headline scores and the healed model's differences to the
    unhealed one and to the teacher, with their paired-bootstrap intervals over the same examples."""
    from .evaluation import compare_evaluations

    to_unhealed, to_teacher = compare_evaluations(healed, unhealed), compare_evaluations(healed, teacher)
    record = {}
    for task in [*healed["results"], "average"]:
        if task == "average":
            row = {"teacher": teacher["average"], "unhealed": unhealed["average"], "healed": healed["average"]}
        else:
            metric = healed["results"][task]["headline_metric"]
            row = {"examples": healed["results"][task]["num_scored"], "metric": metric}
            row["own_questions"] = healed["results"][task].get("own_questions", False)
            row.update(
                {
                    name: result["results"][task][metric]
                    for name, result in (("teacher", teacher), ("unhealed", unhealed), ("healed", healed))
                }
            )
        row = {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
        for key, comparison in (("healed_minus_unhealed", to_unhealed), ("healed_minus_teacher", to_teacher)):
            low, high = comparison[task]["ci95"]
            row[key] = {
                "difference": round(comparison[task]["difference"], 4),
                "ci95": [round(low, 4), round(high, 4)],
            }
        record[task] = row
    return record


def _rounded_ratio(ratio: dict) -> dict:
    return {"ratio": round(ratio["ratio"], 4), "ci95": [round(value, 4) for value in ratio["ci95"]]}


def _text_list(data, argument: str = "data") -> list[str]:
    if hasattr(data, "column_names"):
        if "text" not in data.column_names:
            raise ValueError(f"`{argument}` is a dataset without a `text` column; columns: {data.column_names}.")
        return list(data["text"])
    if isinstance(data, str):
        raise TypeError(f"`{argument}` must be a list of strings (or a dataset), not one string.")
    return list(data)


def _thin(points: list, limit: int) -> list:
    if len(points) <= limit:
        return [list(p) for p in points]
    stride = len(points) / limit
    picked = [points[int(i * stride)] for i in range(limit - 1)] + [points[-1]]
    return [list(p) for p in picked]
