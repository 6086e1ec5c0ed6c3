"""The training loop's parts on transformers' `Trainer`: the distillation trainer and its callbacks (guard,
loss bar, BOS-state projection, memory release), the guard's validation KL, and the C heap's retention on CPU."""

import contextlib
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import HealingConfig
from .loss import (
    _causal_lm,
    _decode,
    _decoder,
    _recording,
    _scored,
    distillation_loss,
    layerwise_loss,
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
