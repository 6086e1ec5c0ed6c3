"""The training loop's helpers: the guard's validation KL, the BOS-state basis, mixed precision, the student's own
storage, and the C heap's retention on CPU. The `Trainer` subclass and its callbacks are in `trainer`."""

import contextlib

import torch

from .config import HealingConfig
from .loss import (
    _causal_lm,
    _decode,
    _scored,
    distillation_loss,
    teacher_targets,
)


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
        modules = _lora_layers(model)
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


def _lora_layers(model) -> list:
    """The modules of `model` that carry the healing's LoRA adapter ("default")."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]


def _own_storage(parameters) -> None:
    """Gives each of `parameters` its own memory (tied ones stay tied), so writing to it in place cannot change
    another model sharing its tensors (a pruned model shares its unsliced weights with the dense parent)."""
    copies = {}
    for param in parameters:
        key = param.data_ptr()
        if key not in copies:
            copies[key] = param.data.clone()
        param.data = copies[key]
