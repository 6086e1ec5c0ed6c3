"""`heal`: distillation of a pruned model from its dense parent, from the data to the saved, merged checkpoint."""

import gc
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from .._checks import OVERFLOW_HINT, check_one_split, check_path, check_shard_size
from .._devices import fast_bf16
from .._io import check_not_a_file, check_output_is_not_input
from ..constants import family_for_model_type
from ..importance import load_profile
from ..loading import image_text_model, is_image_text, text_causal_lm
from ..surgery import check_no_adapters
from ..tasks import SourceTexts
from .config import HealingConfig
from .data import _collate, _PackedDataset, pack_sources, training_texts
from .loss import _cast_heads_once, _causal_lm, scored_positions
from .record import (
    _held_out_records,
    _held_out_sources,
    _run_record,
    _scored_on_held_out,
    _task_scorer,
)
from .resume import check_same_run, run_identity, work_directory
from .teacher import _load_teacher, _precompute, _teacher_config, check_parent
from .training import (
    _BosBasis,
    _lora_layers,
    _own_storage,
    _unnamed,
    _validation_kl,
    limit_heap_retention,
    release_freed_memory,
)


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
    max_shard_size: int | str | None = None,
    teacher_revision: str | None = None,
    profile: str | os.PathLike | None = None,
    teacher_gguf_file: str | None = None,
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
        data_record (`dict`, *optional*): what the data is (sources, splits), recorded in the card; where your texts
            are `tasks.SourceTexts` (`load_task_source` reads them so), their sources are recorded beside it.
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
            `batch_size`, `apply_chat_template`).
        token (`str`, *optional*): the Hub token to read a `teacher` given as a Hub id with (default: `HF_TOKEN`,
            else the login `hf auth login` saved).
        max_shard_size (`int` or `str`, *optional*): the largest weight file of the saved model, as in
            transformers' `save_pretrained` (e.g. `"2GB"`; default: its default); checked before any training.
        teacher_revision (`str`, *optional*): the branch, tag or commit of a `teacher` given as a Hub id.
        teacher_gguf_file (`str`, *optional*): read a `teacher` given as a directory or Hub id from this GGUF file in
            it (transformers' `from_pretrained(gguf_file=...)`: dequantized on load), e.g. the dense GGUF the student
            was pruned from (`DietPruner.from_pretrained(..., gguf_file=...)`).
        profile (*optional*): the profile the student was pruned from, saved beside the healed model in its folder
            `diet_profile` (healing does not change it: it is the dense parent's), as `load_scores` reads one: the
            pruned model's own directory or Hub id where it was saved with it, or a saved profile's. Read (with
            `token`) and checked against the teacher's shapes before any training; needs `output_dir`.

    Returns:
        The healed pruned model (LoRA merged), with `config.pruning["healing"]` describing the healing.
    """
    config = HealingConfig() if config is None else config
    if not isinstance(config, HealingConfig):
        raise TypeError(
            f"`config` must be a `HealingConfig`, got {type(config).__name__}"
            + (": pass `HealingConfig(**config)`." if isinstance(config, dict) else ".")
        )
    _check_heal_arguments(student, teacher, output_dir, work_dir, resume, data_record, callbacks, eval_options)
    check_no_adapters(student, "student", "healing adds LoRA adapters of its own and merges them into the weights")
    if isinstance(teacher, torch.nn.Module):
        check_no_adapters(teacher, "teacher", "the student was pruned from the merged model (the pruner asks for it)")
    # a pruned image-text Gemma 3: its text model is healed, then put back beside its unchanged vision tower
    image_text, student = (student, text_causal_lm(student)) if is_image_text(student.config) else (None, student)
    if not str(getattr(student.config, "model_type", "")).startswith("pruned_"):
        raise ValueError(
            f"`student` must be a pruned model made by diet-hf, got a {type(student).__name__} (model_type "
            f"{student.config.model_type!r}): healing distills a pruned model back toward its dense parent. Prune it "
            "first (`DietPruner.prune`), or load the pruned checkpoint."
        )
    teacher_hub = _teacher_hub(teacher, token, teacher_revision, teacher_gguf_file)
    teacher_config, teacher_name, read_config = _teacher_config(teacher, **teacher_hub)
    check_parent(student.config, teacher_config)
    check_shard_size("max_shard_size", max_shard_size)
    profile_scores = profile_texts = None
    if profile is not None:
        if output_dir is None:
            raise ValueError("`profile` is saved beside the healed model: pass `output_dir` too.")
        profile_scores, profile_texts = load_profile(profile, token=token)  # read before any training
        profile_scores.check_compatible(teacher_config)  # the dense parent's profile, not another model's
    if output_dir is not None:  # before any training, not when the healed model is saved
        check_not_a_file(output_dir, "output_dir")
        if isinstance(teacher, (str, os.PathLike)):
            check_output_is_not_input(output_dir, "output_dir", {"teacher": teacher})
    context = getattr(student.config, "max_position_embeddings", None)
    if context is not None and config.seq_len > context:  # attention over such rows can also exhaust the memory
        raise ValueError(
            f"`seq_len` {config.seq_len} is longer than the model's context (`max_position_embeddings` {context}): "
            "pack the healing data into rows it was trained to read."
        )
    if not isinstance(tokenizer, PreTrainedTokenizerBase):  # the data are texts
        raise ValueError(
            f"`tokenizer` must be the transformers tokenizer of the student and the teacher, got "
            f"{type(tokenizer).__name__}."
        )
    config = _resolved_bos_options(config, tokenizer)
    document_bos = tokenizer.bos_token_id if config.separate_documents else None
    if data is None:
        raise TypeError(
            "`data` is None: pass the healing texts (a list of strings, a dataset with a `text` column, or a dict of "
            "them); for registered sources, the texts of `healing_texts(['wikitext2', ...])`."
        )
    check_one_split("`data`", data)  # a dict, but of splits: not sources to train on side by side
    given = data if isinstance(data, dict) else {"data": data}
    sources = {name: training_texts(texts) for name, texts in given.items()}
    # where your texts were read (`tasks.load_task_source`): the record, and the card's `datasets` for a Hub one
    own_sources = {name: t.source for name, t in given.items() if isinstance(t, SourceTexts) and t.source}
    held_out = _held_out_sources(eval_texts, sources)  # checked before the data is packed or anything runs
    score_tasks = _task_scorer(eval_tasks, eval_options, student, tokenizer, disable_progress)
    rows = _packed_rows(sources, tokenizer, config)
    work_dir = work_directory(work_dir, output_dir, resume)

    torch.manual_seed(config.seed)
    use_cuda = torch.cuda.is_available() and next(student.parameters()).is_cuda
    if config.bf16 is None:  # resolved here, so the record says what ran
        config = replace(config, bf16=fast_bf16(next(student.parameters()).device))
    release = config.release_memory and not use_cuda  # the C heap's retention is a CPU training matter
    check_same_run(work_dir, run_identity(config, teacher, teacher_name, student, rows), resume)  # before the teacher
    side = _teacher_side(
        teacher, student, tokenizer, rows, config, work_dir, document_bos, held_out, score_tasks,
        {**teacher_hub, "config": read_config},
        release, disable_progress,
    )  # fmt: skip
    if release:  # from here on: the teacher's pass gains nothing from it, and mapping every block anew slows it
        limit_heap_retention()
    unhealed = _scored_on_held_out(student, tokenizer, held_out, score_tasks, disable_progress)
    before = _validation_kl(student, rows.validation, side.validation_targets, side.guard, config, document_bos)
    if not math.isfinite(before):
        raise ValueError(f"The student's KL to the teacher on the guard's rows is {before}: {OVERFLOW_HINT}.")
    # seeded again after the teacher's pass: loading a teacher by name may draw from the generator (transformers 4.57
    # initializes weights it then overwrites), and the LoRA start must not depend on how the teacher was given
    torch.manual_seed(config.seed)
    model = _trainable_model(student, config)
    trainer, guard = _trainer(
        model, tokenizer, rows, side, config, work_dir, before, document_bos, use_cuda, release, callbacks,
        disable_progress,
    )  # fmt: skip
    checkpoints = sorted((work_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    started = time.monotonic()
    with _unnamed(student), _cast_heads_once():
        trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if resume and checkpoints else None)
    seconds = time.monotonic() - started
    healed, merge_error, rolled_back = _best_state_merged(model, guard, config, rows.validation)
    record = {
        "method": "knowledge distillation from the dense parent",
        "teacher": teacher_name,
        "data": {
            **(data_record or {"sources": list(sources), "splits": None}),
            **({"own_sources": own_sources} if own_sources else {}),
        },
        **_run_record(config, rows, trainer, guard, before, seconds, merge_error, rolled_back),
    }
    healed_scores = _scored_on_held_out(healed, tokenizer, held_out, score_tasks, disable_progress)
    record.update(_held_out_records(side.scores, unhealed, healed_scores))
    healed.config.pruning = {**(getattr(healed.config, "pruning", None) or {}), "healing": record}
    if image_text is not None:
        healed = image_text_model(image_text, healed)
    if output_dir is not None:
        from ..hub import save_pruned_model

        plan = getattr(image_text if image_text is not None else student, "diet_plan", None)
        saved_tokenizer = processor if processor is not None else tokenizer
        save_pruned_model(
            healed,
            output_dir,
            tokenizer=saved_tokenizer,
            plan=plan,
            repo_id=repo_id,
            max_shard_size=max_shard_size,
            profile=profile_scores,
            profile_texts=profile_texts,
        )
        shutil.rmtree(work_dir, ignore_errors=True)
    return healed


class _Rows(NamedTuple):
    """The packed data: the guard's held-out rows, the training rows, the steps they make, the scored positions."""

    validation: torch.Tensor  # (validation_sequences, seq_len)
    train: torch.Tensor  # (rows, seq_len)
    max_steps: int
    positions: torch.Tensor | None  # (rows, scored positions per row); None: every position


@dataclass
class _TeacherSide:
    """What a run keeps of its teacher once the teacher's pass is done."""

    guard: object  # the model the guard runs (the full-vocabulary KL, `top_k=None`), else None
    training: object  # the model beside the student at every step (full KL or layer-wise loss), else None
    validation_targets: dict | None  # its top-k targets on the guard's rows
    train_targets: object  # on the training rows (`_DiskTargets`), else None
    scores: dict  # its perplexity on the held-out texts and scores on the held-out tasks (`_scored_on_held_out`)


def _teacher_hub(teacher, token: str | None, revision: str | None, gguf_file: str | None = None) -> dict:
    """The Hub keywords a teacher given by name is read with; `teacher_revision` and `teacher_gguf_file` refused for a
    teacher model."""
    for argument, value, what, instead in (
        ("teacher_revision", revision, "a branch, tag or commit name", "at the revision you want"),
        ("teacher_gguf_file", gguf_file, "the name of a GGUF file", "from the GGUF file (`gguf_file=`)"),
    ):
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"`{argument}` must be {what}; got {value!r}.")
        if not isinstance(teacher, (str, os.PathLike)):
            raise ValueError(
                f"`{argument}` is for a teacher given as a Hub id or directory; this teacher is a loaded model "
                f"({type(teacher).__name__}): load it {instead} instead."
            )
    return {"token": token, "revision": revision, "gguf_file": gguf_file}


def _resolved_bos_options(config: HealingConfig, tokenizer) -> HealingConfig:
    """`keep_bos_state` and `separate_documents` resolved from the tokenizer (so the record says what ran); both
    refused without a BOS token."""
    has_bos = getattr(tokenizer, "bos_token_id", None) is not None
    for name in ("separate_documents", "keep_bos_state"):
        if getattr(config, name) and not has_bos:
            raise ValueError(f"`{name}=True` needs a tokenizer with a BOS token; this one has none.")
    if config.keep_bos_state is None:
        config = replace(config, keep_bos_state=config.lora and has_bos)
    if config.separate_documents is None:
        config = replace(config, separate_documents=has_bos)
    return config


def _check_heal_arguments(student, teacher, output_dir, work_dir, resume, data_record, callbacks, eval_options):
    """`heal`'s arguments of the wrong type, named before anything runs (each failed deep inside before)."""
    from transformers import TrainerCallback

    if not isinstance(student, torch.nn.Module):  # a PEFT wrapper too, which the adapter check then names
        raise TypeError(f"`student` must be a pruned model made by diet-hf, got {type(student).__name__}.")
    if not isinstance(teacher, str | os.PathLike | torch.nn.Module):
        raise TypeError(
            f"`teacher` must be the dense parent: a model, a Hub id or a directory, got {type(teacher).__name__}."
        )
    for name, value in (("output_dir", output_dir), ("work_dir", work_dir)):
        if value is not None:
            check_path(name, value)
    if not isinstance(resume, bool):
        raise TypeError(f"`resume` must be True or False, got {resume!r}.")
    for name, value in (("data_record", data_record), ("eval_options", eval_options)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"`{name}` must be a dict, got {type(value).__name__}: {value!r:.60}.")

    def is_callback(value) -> bool:  # Trainer takes instances and classes
        return isinstance(value, TrainerCallback) or (isinstance(value, type) and issubclass(value, TrainerCallback))

    if callbacks is not None and not (isinstance(callbacks, list | tuple) and all(map(is_callback, callbacks))):
        raise TypeError(
            f"`callbacks` must be a list of transformers `TrainerCallback`s (instances or classes), got "
            f"{callbacks!r:.80}."
        )


def _packed_rows(sources: dict[str, list[str]], tokenizer, config: HealingConfig) -> _Rows:
    """The sources packed into rows of `seq_len`, the guard's cut off first, the training rows cut to `max_tokens`."""
    rows = pack_sources(
        sources, tokenizer, config.seq_len, seed=config.seed, bos_rows=config.bos_rows or config.separate_documents
    )
    if rows.shape[0] <= config.validation_sequences:
        raise ValueError(
            f"The healing data packs into {rows.shape[0]} sequences of {config.seq_len} tokens; at least "
            f"{config.validation_sequences + 1} are needed ({config.validation_sequences} are held out for the guard)."
        )
    validation, train = rows[: config.validation_sequences], rows[config.validation_sequences :]
    per_step = config.batch_size * config.gradient_accumulation_steps
    steps_for_tokens = math.ceil(config.max_tokens / config.tokens_per_step)
    train = train[: max(steps_for_tokens * per_step, config.batch_size)]
    max_steps = min(steps_for_tokens, math.ceil(train.shape[0] / per_step))
    positions = scored_positions(train.shape[0], config.seq_len, config.position_stride, seed=config.seed)
    return _Rows(validation, train, max_steps, positions)


def _teacher_side(
    teacher, student, tokenizer, rows: _Rows, config, work_dir: Path, document_bos, held_out, score_tasks,
    teacher_hub: dict, release: bool, disable_progress: bool,
) -> _TeacherSide:  # fmt: skip
    """The teacher's part of a run: its top-k targets on the guard's and the training rows (cached in `work_dir`),
    its held-out texts and tasks scored while it is loaded; then it is freed, unless it runs beside the student at
    every step (the full-vocabulary KL, `top_k=None`, or the layer-wise loss)."""

    loaded = {}

    def get_teacher():  # a teacher given by name is loaded only when something must run through it
        if "model" not in loaded:
            by_name = isinstance(teacher, (str, os.PathLike))
            model = _load_teacher(teacher, student, **teacher_hub) if by_name else text_causal_lm(teacher)
            loaded["model"] = model.eval()
        return loaded["model"]

    online, layerwise = config.top_k is None, config.hidden_weight > 0
    validation_targets = train_targets = None
    if online:
        get_teacher()
    else:
        validation_targets = _precompute(
            get_teacher,
            rows.validation,
            config,
            work_dir / "teacher_validation.safetensors",
            document_bos=document_bos,
            disable_progress=disable_progress,
        )
        # the next-token loss alone (kd_weight 0) needs the teacher only for the guard's held-out sequences; the
        # layer-wise loss makes its top-k targets online
        if config.kd_weight > 0 and not layerwise:
            train_targets = _precompute(
                get_teacher,
                rows.train,
                config,
                work_dir / "teacher_train.safetensors",
                rows.positions,
                document_bos,
                on_disk=True,  # read a batch's slice at a time: the training steps hold no copy of them
                disable_progress=disable_progress,
            )
    # while it is loaded (a resumed run that finds its cached targets loads it for this alone)
    scores = {"texts": None, "tasks": None}
    if held_out or score_tasks:
        scores = _scored_on_held_out(get_teacher(), tokenizer, held_out, score_tasks, disable_progress)
    kept = get_teacher() if (online or layerwise) else None
    if not online:  # otherwise freed: training needs only its cached targets
        loaded.clear()
        gc.collect()
        if release:
            release_freed_memory()
    return _TeacherSide(kept if online else None, kept, validation_targets, train_targets, scores)


def _trainable_model(student, config: HealingConfig):
    """The student wrapped for training: PEFT LoRA on the projections `lora_modules` names, or the student itself
    with its own weights (embedding and head frozen unless `train_embeddings`)."""
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
        model.peft_config["default"].base_model_name_or_path = None  # see `_unnamed`
    else:
        if not config.train_embeddings:
            for module in (student.get_input_embeddings(), student.get_output_embeddings()):
                module.requires_grad_(False)
        _own_storage(p for p in student.parameters() if p.requires_grad)  # frozen ones: nothing writes to them
        model = student
    model.train()
    return model


def _trainable(model) -> dict:
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


def _trainer(
    model, tokenizer, rows: _Rows, side: _TeacherSide, config, work_dir: Path, before: float, document_bos,
    use_cuda: bool, release: bool, callbacks, disable_progress: bool,
):  # fmt: skip
    """The distillation `Trainer` over the training rows, with its callbacks (BOS-state projection, guard, loss bar,
    memory release, the caller's); returns it and the guard."""
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments

    from .trainer import DistillationTrainer, Guard, KeepBosState, LossBar, ReleaseMemory

    bos_basis = _BosBasis(model, tokenizer.bos_token_id) if config.keep_bos_state else None  # before the guard's copy
    guard = Guard(
        lambda m: _validation_kl(m, rows.validation, side.validation_targets, side.guard, config, document_bos),
        _trainable,
        config,
        before,
        {k: v.detach().clone() for k, v in _trainable(model).items()},
    )
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=math.ceil(config.warmup_ratio * rows.max_steps),
        lr_scheduler_type="linear",
        max_steps=rows.max_steps,
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
        train_dataset=_PackedDataset(rows.train, side.train_targets, rows.positions),
        data_collator=_collate,
        healing=config,
        teacher=side.training,
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
    return trainer, guard


def _best_state_merged(model, guard, config: HealingConfig, validation: torch.Tensor):
    """The best state the guard saw put back (the unhealed one when no evaluation beat it: then the healing is rolled
    back) and LoRA merged into new tensors; returns the healed model, the merge's largest logit change on one held-out
    row, and whether it was rolled back."""
    rolled_back = config.guard and guard.best_step == 0
    if config.guard:
        with torch.no_grad():
            current = _trainable(model)
            for name, value in guard.best_state.items():
                current[name].copy_(value)
    model.eval()
    probe = validation[:1].to(next(model.parameters()).device)
    with torch.no_grad():
        trained_logits = _causal_lm(model)(input_ids=probe).logits.float()
    if config.lora and not rolled_back:
        # the merge writes W + BA into W in place (PEFT 0.22 does so even with safe_merge), which would change every
        # model sharing W: a model fresh from `build_pruned_model` shares its unsliced weights with the dense parent,
        # often the teacher itself. Each merged weight gets its own memory first, one at a time.
        _own_storage(module.get_base_layer().weight for module in _lora_layers(model))
    healed = (model.unload() if rolled_back else model.merge_and_unload(safe_merge=True)) if config.lora else model
    healed.eval()
    with torch.no_grad():
        merge_error = float((healed(input_ids=probe).logits.float() - trained_logits).abs().max())
    # float32 rounding of W + BA against W x + B(A x): ~1e-4 on logits of tens over a 262k vocabulary
    tolerance = 5e-2 if next(healed.parameters()).dtype != torch.float32 else 2e-3
    if merge_error > tolerance:
        raise RuntimeError(f"Merging the LoRA weights changed the logits by {merge_error:.2e} (> {tolerance:g}).")
    return healed, merge_error, rolled_back
