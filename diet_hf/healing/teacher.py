"""The teacher: checked to be the student's dense parent, loaded, and run once over the packed rows for its
top-k targets (cached on disk for `resume`, read back a batch at a time)."""

import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._io import atomic_write
from ..constants import layer_sizes
from ..loading import load_causal_lm, text_config
from .config import HealingConfig
from .loss import _cast_heads_once, teacher_targets
from .training import _autocast, release_freed_memory

logger = logging.getLogger(__name__)


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


def _teacher_config(teacher, token=None, revision=None, gguf_file=None):
    """The teacher's text config, its name (`NAME@REVISION` at a revision, `NAME/FILE` read from a GGUF file) and,
    when `teacher` is a Hub id or directory, the whole config as read (`None` for a loaded model), without loading
    weights."""
    if isinstance(teacher, (str, os.PathLike)):
        from .._io import check_model_location, source_name
        from ..loading import read_config

        check_model_location(teacher, "teacher", gguf_file=gguf_file, gguf_argument="teacher_gguf_file")
        config = read_config(teacher, token=token, revision=revision, gguf_file=gguf_file)
        return text_config(config), source_name(teacher, revision, gguf_file), config
    return text_config(teacher.config), getattr(teacher.config, "_name_or_path", None) or None, None


def _load_teacher(teacher, student, token=None, revision=None, gguf_file=None, config=None):
    """The teacher given by name, in the student's dtype and on its device; `config`, the one `_teacher_config` read,
    spares a GGUF file's metadata another parse (20 s on the 270M)."""
    parameter = next(student.parameters())
    model = load_causal_lm(
        teacher, config, dtype=parameter.dtype, token=token, revision=revision, gguf_file=gguf_file
    )  # an image-text Gemma 3: its text model
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
