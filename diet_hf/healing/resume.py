"""A healing run's work directory and the check that a resumed run trains what the run there trained (`RUN_FILE`:
its options, teacher, student and data, fingerprinted)."""

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .._io import atomic_write_text
from .config import HealingConfig


def work_directory(work_dir, output_dir, resume: bool) -> Path:
    """The run's checkpoint directory (default `<output_dir>.healing`), made; one holding an earlier run is refused
    unless `resume`."""
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
    return work_dir


RUN_FILE = "run.json"
# the options a resumed run may change: how long it may run, its memory and how often it saves, not what it trains
RESUMABLE_OPTIONS = ("max_time", "chunk_size", "release_memory", "save_steps")


def run_identity(config: HealingConfig, teacher, teacher_name, student, rows) -> dict:
    """What a run trains, as `RUN_FILE` records it: its options (less `RESUMABLE_OPTIONS`), its teacher (by name and
    revision, or a fingerprint of a teacher given loaded), a fingerprint of the student and one of the packed data."""
    data = hashlib.sha256()
    for tensor in (rows.validation, rows.train, rows.positions):
        data.update(b"-" if tensor is None else tensor.contiguous().cpu().numpy().tobytes())
    by_name = isinstance(teacher, (str, os.PathLike))
    identity = {
        **{k: v for k, v in asdict(config).items() if k not in RESUMABLE_OPTIONS},
        "teacher": teacher_name if by_name else f"{teacher_name} ({fingerprint(teacher)})",
        "student": fingerprint(student),
        "data": data.hexdigest(),
    }
    return json.loads(json.dumps(identity))


_FINGERPRINT_CHUNK = 1 << 24  # elements summed at a time: 128 MiB of float64


def fingerprint(model) -> str:
    """A model's config and every weight's sum and sum of squares (in float64, to 6 digits), hashed: one pass over the
    weights, a slice of at most `_FINGERPRINT_CHUNK` of them in float64 at a time (no copy of a whole embedding)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            flat, total, squares = parameter.detach().reshape(-1), 0.0, 0.0
            if flat.is_meta:  # offloaded: its shape alone
                digest.update(f"{name}:{tuple(parameter.shape)};".encode())
                continue
            for start in range(0, flat.numel(), _FINGERPRINT_CHUNK):  # no float64 copy of a whole embedding
                chunk = flat[start : start + _FINGERPRINT_CHUNK].double()
                total, squares = total + chunk.sum().item(), squares + chunk.square().sum().item()
            digest.update(f"{name}:{total:.6e}:{squares:.6e};".encode())
    settings = model.config.to_dict()
    settings = {k: v for k, v in settings.items() if not k.startswith("_") and k != "transformers_version"}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def check_same_run(work_dir: Path, identity: dict, resume: bool) -> None:
    """Writes `identity` into `work_dir` (`RUN_FILE`); resuming, refuses a run that trains otherwise than the one
    there (other options, teacher, student or data), naming what differs, before anything is loaded or trained."""
    path = work_dir / RUN_FILE
    if resume and path.is_file():
        earlier = json.loads(path.read_text())
        changed = [k for k in sorted(identity.keys() | earlier.keys()) if identity.get(k) != earlier.get(k)]
        if changed:
            shown = [
                k if k in ("student", "data") else f"{k} ({earlier.get(k)!r} there, {identity.get(k)!r} now)"
                for k in changed
            ]
            raise ValueError(
                f"`resume`: {work_dir} holds a run that trained otherwise: {'; '.join(shown)} differ. Resume with "
                "the same student, teacher, data and options (only "
                f"{', '.join(RESUMABLE_OPTIONS)} may change), or delete the directory to start anew."
            )
    atomic_write_text(path, json.dumps(identity, indent=1) + "\n")
