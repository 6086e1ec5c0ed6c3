"""The `Trainer` subclass that heals by distillation, and its callbacks: the validation guard, the loss bar, the
BOS-state projection and the memory release. Imported when a healing run starts (`run._trainer`), so that importing
diet-hf does not import transformers' `Trainer`."""

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

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
from .training import _autocast, release_freed_memory

__all__ = ["DistillationTrainer", "Guard", "KeepBosState", "LossBar", "ReleaseMemory"]


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
