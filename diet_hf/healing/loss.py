"""The distillation objective: the coarse-grained top-k KL, the full-vocabulary KL, the layer-wise loss,
and the decoder and head passes they share (documents read apart, scored positions, the head cast once)."""

import contextlib

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .._checks import OVERFLOW_HINT


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
    """The causal LM's logits for `hidden` (its LM head, then Gemma's final soft-capping where configured), on
    `hidden`'s device (a model split across GPUs keeps its tied head with the embeddings, on the first)."""
    device = hidden.device
    hidden = hidden.to(model.lm_head.weight.device)
    weight = _HEAD_COPIES.get(model.lm_head.weight, hidden.device.type) if _HEAD_COPIES is not None else None
    if weight is None:
        logits = model.lm_head(hidden)
    else:
        bias = None if model.lm_head.bias is None else model.lm_head.bias.to(weight.dtype)
        logits = F.linear(hidden.to(weight.dtype), weight, bias)
    logits = logits.float().to(device)
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
        if not bool(torch.isfinite(logprobs).all()):  # before anything is cached or trained on
            raise ValueError(f"The teacher's logits are not finite: {OVERFLOW_HINT}.")
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


def _decoder(model):
    """The decoder stack (`model.model`) of a causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model
