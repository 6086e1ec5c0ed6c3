"""Structure and parameter counts of a (pruned or dense) Gemma checkpoint, read from its config alone, and the
provenance record a pruned model carries (`config.pruning`, built once after surgery by `_pruning_record`)."""

import json
import os
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from ._io import check_model_location, is_local_location
from .constants import (
    CONFIG_FILE,
    FAMILIES,
    PROFILE_SUBFOLDER,
    REMOTE_CODE_FILES,
    SCORES_META_FILE,
    base_sizes,
    block_parameters,
    family_for_model_type,
    head_dim,
    layer_sizes,
)
from .importance import ImportanceScores
from .loading import adapter_of, is_image_text, peft_adapter, text_config
from .methods import get_method
from .options import PruneOptions, _PruneSettings
from .plan import PruningPlan

__all__ = [
    "check_pruned_checkpoint",
    "count_parameters",
    "describe_checkpoint",
    "describe_profile",
    "holds_profile",
    "is_profile",
]


def count_parameters(config, *, dense: bool = False) -> dict[str, int]:
    """Parameters of the text model a config describes: total and decoder-block attention + MLP.

    Args:
        config: a (pruned or dense) Gemma-2 / Gemma 3 config, or a model, whose `config` is read; an image-text
            Gemma 3: its text model, language-model head included.
        dense (`bool`, *optional*): count the unpruned base model (the global sizes) instead.
    """
    if not isinstance(config, PretrainedConfig):
        if not isinstance(getattr(config, "config", None), PretrainedConfig):
            raise TypeError(f"`config` must be a model config or a model, got {type(config).__name__}.")
        config = config.config
    config = text_config(config)
    family_for_model_type(config.model_type)  # the supported ones named, not an attribute error
    h = config.hidden_size
    d = head_dim(config)
    qk_norms = family_for_model_type(config.model_type).qk_norms
    # biases: the stock projections' with `attention_bias` (query, key, value and output of a kept attention), and
    # those of bias compensation (FLAP), one per layer and sublayer (on a kept attention the same output bias)
    attention_bias = bool(getattr(config, "attention_bias", False))
    o_proj_bias = not dense and bool(getattr(config, "o_proj_bias", False))
    down_proj_bias = not dense and bool(getattr(config, "down_proj_bias", False))
    blocks = norms = biases = 0
    for layer_idx in range(config.num_hidden_layers):
        width, heads, kv_heads = base_sizes(config) if dense else layer_sizes(config, layer_idx)
        blocks += block_parameters(h, d, width, heads, kv_heads)
        # four norms per layer, less the input norm of a removed attention or MLP (the pruned classes drop it)
        norms += (2 + bool(heads) + bool(width)) * h + (2 * d if qk_norms and heads else 0)
        if attention_bias and heads:
            biases += d * (heads + 2 * kv_heads)
        biases += h * (bool(o_proj_bias or (attention_bias and heads)) + down_proj_bias)
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    # the decoder-block count stays the plan's (weights only)
    return {"total": blocks + norms + embeddings + h + biases, "decoder_blocks": blocks}


def describe_checkpoint(model_id_or_path: str, *, revision: str | None = None, token: str | None = None) -> dict:
    """Per-layer sizes, parameter counts and pruning provenance of a local directory or Hub repository (`token`: for
    a private one, where `HF_TOKEN` or the saved login is not the one to use)."""
    check_model_location(model_id_or_path)
    adapter = peft_adapter(model_id_or_path, revision=revision, token=token)
    if adapter is not None:
        raise ValueError(
            f"{model_id_or_path} holds {adapter_of(adapter)}, not a model of its own: describe the model it adapts "
            f"with `diet-hf info {adapter['base_model_name_or_path']}` (pruning or evaluating the adapter's "
            "directory reads that model with the adapter merged)."
        )
    raw, _ = PretrainedConfig.get_config_dict(model_id_or_path, revision=revision, token=token)
    full = AutoConfig.from_pretrained(model_id_or_path, revision=revision, token=token)
    config = text_config(full)  # an image-text Gemma 3: its text decoder, the part diet-hf prunes
    family_for_model_type(config.model_type)
    layers = []
    for layer_idx in range(config.num_hidden_layers):
        width, heads, kv_heads = layer_sizes(config, layer_idx)
        layers.append(
            {
                "layer": layer_idx,
                "type": config.layer_types[layer_idx],
                "intermediate_size": width,
                "num_attention_heads": heads,
                "num_key_value_heads": kv_heads,
            }
        )
    counts, base = count_parameters(config), count_parameters(config, dense=True)
    return {
        "model_type": config.model_type,
        # the image-text model whose text decoder this describes (its vision tower is not counted); None otherwise
        "text_decoder_of": (full.architectures or [full.model_type])[0] if full is not config else None,
        # where a pruned image-text checkpoint has one: it is the base model's, unchanged
        "vision_tower": "kept, unchanged" if full is not config and config.model_type.startswith("pruned_") else None,
        # pruned checkpoints: "v2" (transformers' `per_layer_config`) or "v1" (diet-hf's own per-layer lists; it
        # loads the same, and re-saving writes v2); None for a dense model
        "format": _format_version(raw),
        "num_hidden_layers": config.num_hidden_layers,
        "layers": layers,
        "parameters": {
            "total": counts["total"],
            "decoder_blocks": counts["decoder_blocks"],
            "base_total": base["total"],
            "base_decoder_blocks": base["decoder_blocks"],
        },
        "pruning": getattr(config, "pruning", None),
        # a pruned model: the one size `diet-hf export stock` pads every layer to, what that adds, and whether the
        # checkpoint has compensation biases (which the export refuses unless they are all zero); None otherwise
        "stock_export": _stock_export(config),
        # the folder holding the profile it was pruned from (`save_pretrained(save_profile=True)`), else None
        "profile": PROFILE_SUBFOLDER if holds_profile(model_id_or_path, revision=revision, token=token) else None,
    }


def _stock_export(config) -> dict | None:
    if not config.model_type.startswith("pruned_"):
        return None
    from .stock import stock_shape

    biases = bool(getattr(config, "o_proj_bias", False) or getattr(config, "down_proj_bias", False))
    return {**stock_shape(config).to_dict(), "compensation_biases": biases}


def holds_profile(model_id_or_path, *, revision: str | None = None, token: str | None = None) -> bool:
    """Whether a checkpoint (a local directory, or a Hub repository at `revision`) carries the profile it was pruned
    from in `PROFILE_SUBFOLDER`."""
    return _holds(model_id_or_path, revision, token, [f"{PROFILE_SUBFOLDER}/{SCORES_META_FILE}"])


def is_profile(model_id_or_path, *, revision: str | None = None, token: str | None = None) -> bool:
    """Whether `model_id_or_path` holds a saved profile (`ImportanceScores.save_pretrained` / `push_to_hub`) and no
    checkpoint: a local directory with its record and no config.json, or a Hub repository with its record."""
    return _holds(model_id_or_path, revision, token, [SCORES_META_FILE], absent=[CONFIG_FILE])


def _holds(model_id_or_path, revision: str | None, token: str | None, present: list[str], absent=()) -> bool:
    """Whether a local directory or a Hub repository at `revision` holds every file of `present` and none of
    `absent` (paths inside it); False where the Hub cannot be asked (the checkpoint's own reading reports why)."""
    from huggingface_hub import HfApi

    local = is_local_location(model_id_or_path)

    def exists(name: str) -> bool:
        if local:
            return (Path(os.fspath(model_id_or_path)).expanduser() / name).is_file()
        return HfApi(token=token).file_exists(str(model_id_or_path), name, revision=revision)

    try:
        return all(exists(name) for name in present) and not any(exists(name) for name in absent)
    except Exception:  # connection, permission: not asked here
        return False


def describe_profile(model_id_or_path, *, revision: str | None = None, token: str | None = None) -> dict:
    """What a saved profile is (a local directory or a Hub repository at `revision`): the model it was made on, its
    tasks and their calibration examples, the score shapes and how its texts were written."""
    from .importance import scores_directory
    from .tasks import TASKS

    directory = scores_directory(model_id_or_path, revision=revision, token=token)
    scores = ImportanceScores.from_pretrained(directory)
    provenance = dict(scores.provenance)
    samples = provenance.pop("sample_ids", None) or {}
    layers, width = next(iter(scores.mlp.values())).shape
    return {
        "profile_of": provenance.get("model_id"),
        "model_revision": provenance.get("revision"),
        "model_type": provenance.get("model_type"),
        "num_hidden_layers": layers,
        "intermediate_size": width,
        "num_attention_heads": next(iter(scores.heads.values())).shape[1],
        # per task: its calibration examples (None: token batches, not counted)
        "tasks": {task: len(samples[task]) if task in samples else None for task in scores.tasks},
        # the tasks that are not registered: your own data, saved beside the profile where it was texts
        "own_tasks": [task for task in scores.tasks if task not in TASKS],
        "calibration_answer": scores.calibration_answer,
        "calibration_chat_template": scores.chat_template,
        "channel_statistics": scores.channel_stats is not None,
        "provenance": provenance,
    }


def _format_version(raw: dict) -> str | None:
    if not str(raw.get("model_type", "")).startswith("pruned_"):
        return None
    return "v1" if any(name.endswith("_per_layer") for name in raw) else "v2"


def check_pruned_checkpoint(model_dir: str | os.PathLike) -> str:
    """Returns the `model_type` of a local pruned checkpoint saved by diet-hf; `ValueError` says what is wrong
    (no config.json, another model type, remote code missing)."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"`model` must be a local directory with a config.json; {model_dir} has none.")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type == "pruned_gemma3":
        raise ValueError(
            f"{model_dir} is an image-text Gemma 3 with a pruned text decoder (model_type 'pruned_gemma3'); its ONNX "
            "export is not supported. Prune with `text_only=True` (CLI: `diet-hf prune --text-only`) for a text "
            "model that exports."
        )
    pruned_types = sorted(family.pruned_model_type for family in FAMILIES)
    if model_type not in pruned_types:
        raise ValueError(
            f"`model` must be a pruned Gemma model ({', '.join(pruned_types)}); {model_dir} holds model_type "
            f"{model_type!r}. Stock models export with `optimum-cli export onnx`."
        )
    missing = [name for name in REMOTE_CODE_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ValueError(
            f"{model_dir} has no remote code ({', '.join(missing)} missing beside config.json): save the model with "
            "transformers' `save_pretrained` or diet-hf's `save_pruned_model`, which copy it there."
        )
    return model_type


def _pruning_record(
    total_dense: int, pruned, plan: PruningPlan, scores: ImportanceScores, architecture: str | None = None
) -> dict:
    """The provenance of a pruned model (`config.pruning`; the card, `info` and `cli` read it), built once from the
    dense model's parameter count (counted before surgery, which may consume it), the pruned model (its parameters
    include any compensation biases), the plan and the profile; `architecture` names the image-text class whose text
    decoder was pruned."""
    kept, dense = plan.block_parameters()
    return {
        "method": get_method(plan.provenance["method"]).display_name,
        "paper": get_method(plan.provenance["method"]).paper,
        "base_model": scores.provenance.get("model_id"),
        "base_model_revision": scores.provenance.get("revision"),
        # the GGUF file in `base_model` the dense model was read from (dequantized on load); None: a checkpoint
        "base_model_gguf_file": scores.provenance.get("gguf_file"),
        # the image-text class whose text decoder was pruned (Gemma 3 from 4B up); None for a text model
        "base_model_architecture": architecture,
        # of an image-text base model: whether the pruned model keeps its vision tower and projector (unchanged)
        "vision_tower": ("kept" if is_image_text(pruned.config) else "dropped") if architecture else None,
        "tasks": scores.tasks,
        # where your own tasks' data was read (`tasks.SourceTexts.source`: a Hub dataset at a commit, or "local"
        # without its path), where the profile knows it; registered tasks are named by `tasks`
        "task_sources": scores.provenance.get("sources") or None,
        "num_samples": scores.provenance.get("num_samples"),
        # what each task's profile read: `num_samples` for a registered task (fewer where its data is short), every
        # text of your own (None: token batches)
        "samples_per_task": {
            task: len((scores.provenance.get("sample_ids") or {}).get(task, [])) or None for task in scores.tasks
        },
        "seed": scores.provenance.get("seed"),
        # the answer the calibration texts of questions ended in (`ProfileOptions.calibration_answer`)
        "calibration_answer": scores.calibration_answer,
        "calibration_chat_template": scores.chat_template,
        "target": {k: plan.provenance.get(k) for k in ("sparsity", "mlp_sparsity", "attention_sparsity")},
        "achieved_block_sparsity": plan.sparsity,
        "block_parameters": {"dense": dense, "pruned": kept},
        "total_parameters": {"dense": total_dense, "pruned": sum(p.numel() for p in pruned.parameters())},
        "options": {k: plan.provenance.get(k) for k in ("recipe", *PruneOptions.names())},
        # the precision of the reconstruction's x x^T products (`ProfileOptions.moments_dtype`); None: none made
        "moments_dtype": plan.provenance.get("moments_dtype"),
        "diet_hf_version": scores.provenance.get("diet_hf_version"),
        # evaluation examples the profile read (carved where a train split is short): `diet-hf eval` leaves them out
        "calibration_eval_ids": {
            task: list(ids) for task, ids in (scores.provenance.get("excluded_eval_ids") or {}).items() if ids
        },
    }


def _record_options(plan: PruningPlan, settings: _PruneSettings, method: str, recipe: str, targets: dict, products):
    """Adds to `plan.provenance` (in place) the profile's origin and the options `prune()` applied itself; `products`:
    the dtype of the x x^T products the reconstruction's moments summed (`ProfileOptions.moments_dtype`), or None."""
    scores = settings.scores
    if settings.steps > 1:
        plan.provenance.update(targets)
    plan.provenance.update(
        {k: scores.provenance.get(k) for k in ("model_id", "revision", "num_samples", "seed", "diet_hf_version")}
    )
    plan.provenance.update(
        {
            "method": method,
            "recipe": recipe if method == "diet" else None,
            "score": settings.score,
            "bias_compensation": settings.bias_compensation,
            "reconstruct": settings.reconstruct,
            "anchor_bos": settings.anchor_bos,
            "steps": settings.steps,
        }
    )
    if products is not None:
        plan.provenance["moments_dtype"] = str(products).removeprefix("torch.")
