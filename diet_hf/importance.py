"""`ImportanceScores`: per-task, per-layer importance of MLP dimensions and attention heads, with provenance."""

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ._checks import check_path
from ._io import atomic_directory
from .constants import CONFIG_FILE, PROFILE_SUBFOLDER, SCORES_META_FILE, SCORES_TEXTS_FILE, SCORES_WEIGHTS_FILE

__all__ = ["ImportanceScores"]

logger = logging.getLogger(__name__)


@dataclass
class ImportanceScores:
    """Per-task importance scores of a dense model.

    Args:
        mlp (`dict[str, torch.Tensor]`):
            Task name -> `(num_hidden_layers, intermediate_size)` mean |input of `down_proj`| per MLP dimension.
        heads (`dict[str, torch.Tensor]`):
            Task name -> `(num_hidden_layers, num_attention_heads)` mean L2 norm of each head's slice of the input
            of `o_proj`.
        provenance (`dict`, *optional*):
            Model id, revision, `model_type`, sizes, example ids per task, seed, library version.
        channel_stats (`dict`, *optional*):
            Task name -> `mlp` `(layers, 2, intermediate_size)` and `attn` `(layers, 2, heads * head_dim)` sums of a
            and a^2 per input channel of `down_proj` / `o_proj`, and `num_tokens`; for the baselines.
    """

    mlp: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    provenance: dict = field(default_factory=dict)
    channel_stats: dict[str, dict[str, torch.Tensor]] | None = None

    def __post_init__(self):
        if set(self.mlp) != set(self.heads):
            raise ValueError(
                f"`mlp` and `heads` must cover the same tasks, got {sorted(self.mlp)} and {sorted(self.heads)}."
            )
        if not self.mlp:
            raise ValueError("`ImportanceScores` needs at least one task.")
        shapes = {tuple(t.shape) for t in self.mlp.values()}, {tuple(t.shape) for t in self.heads.values()}
        if len(shapes[0]) != 1 or len(shapes[1]) != 1:
            raise ValueError(f"All tasks must have equal score shapes, got MLP {shapes[0]} and heads {shapes[1]}.")
        for name, tensor in [*self.mlp.items(), *self.heads.items()]:
            if tensor.dim() != 2:
                raise ValueError(
                    f"Scores of task {name!r} must be (num_layers, units), got shape {tuple(tensor.shape)}."
                )

    @property
    def calibration_answer(self) -> str:
        """The answer the profile's calibration texts of questions ended in (`ProfileOptions.calibration_answer`);
        profiles saved before the option ended them in the gold one."""
        return self.provenance.get("calibration_answer", "gold")

    @property
    def chat_template(self) -> bool:
        """Whether the profile's calibration texts of questions were in the chat template
        (`ProfileOptions.calibration_chat_template`; False in profiles saved before the option)."""
        return bool(self.provenance.get("calibration_chat_template", False))

    @property
    def tasks(self) -> list[str]:
        return list(self.mlp)

    @property
    def num_hidden_layers(self) -> int:
        return next(iter(self.mlp.values())).shape[0]

    def select(self, tasks: list[str]) -> "ImportanceScores":
        """The scores of a subset of tasks (leave-one-task-out and ablations)."""
        missing = [t for t in tasks if t not in self.mlp]
        if missing:
            raise ValueError(f"`tasks` must be profiled tasks ({self.tasks}), got {missing}, which were not profiled.")
        channels = None if self.channel_stats is None else {t: self.channel_stats[t] for t in tasks}
        return ImportanceScores(
            {t: self.mlp[t] for t in tasks}, {t: self.heads[t] for t in tasks}, dict(self.provenance), channels
        )

    def channel_moments(self) -> dict[str, torch.Tensor]:
        """Per-input-channel E[a] and E[a^2] of `down_proj` (`mlp`) and `o_proj` (`attn`), pooled over all tasks'
        tokens: `(layers, 2, channels)` float64 each. Needs a profile made with `channel_stats=True`."""
        if self.channel_stats is None:
            raise ValueError(
                "These scores have no per-channel statistics (needed by Wanda-sp, FLAP and bias compensation): "
                "profile with `channel_stats=True`."
            )
        stats = self.channel_stats.values()
        tokens = float(sum(s["num_tokens"] for s in stats))
        return {kind: sum(s[kind].double() for s in stats) / tokens for kind in ("mlp", "attn")}

    def channel_means(self) -> dict[str, torch.Tensor]:
        """E[a] per input channel of `down_proj` (`mlp`, `(layers, intermediate_size)`) and `o_proj` (`attn`,
        `(layers, heads * head_dim)`), pooled over all tasks: FLAP's bias compensation reads these."""
        return {kind: moments[:, 0] for kind, moments in self.channel_moments().items()}

    def check_compatible(self, config) -> None:
        """Raises `ValueError` when these scores were made for a model of another shape or type."""
        layers, width = next(iter(self.mlp.values())).shape
        heads = next(iter(self.heads.values())).shape[1]
        expected = (config.num_hidden_layers, config.intermediate_size, config.num_attention_heads)
        if (layers, width, heads) != expected:
            raise ValueError(
                f"These importance scores were made for another model ({self.provenance.get('model_id', 'unknown')}: "
                f"{layers} layers, intermediate_size {width}, {heads} heads); this model has {expected[0]} layers, "
                f"intermediate_size {expected[1]}, {expected[2]} heads."
            )
        model_type = self.provenance.get("model_type")
        if model_type is not None and model_type != config.model_type:
            raise ValueError(f"These scores were made for `model_type` {model_type!r}, not {config.model_type!r}.")

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, calibration_texts: dict[str, list[str]] | None = None
    ) -> None:
        """Writes safetensors + JSON into `save_directory`, atomically (a failed save leaves nothing half-written).
        `calibration_texts` (`{task: texts}`, the tasks whose data was passed to `profile()`) go beside them, so a
        later prune that needs the calibration data (the reconstruction) can read them again; `{}` is written when
        there are none, so an earlier save's texts never outlive it."""
        check_path("save_directory", save_directory)
        with atomic_directory(save_directory, merge=True) as tmp:  # other files there stay
            texts = {"tasks": calibration_texts or {}}
            (tmp / SCORES_TEXTS_FILE).write_text(json.dumps(texts, ensure_ascii=False) + "\n", encoding="utf-8")
            tensors = {f"mlp/{t}": v.contiguous() for t, v in self.mlp.items()}
            tensors.update({f"heads/{t}": v.contiguous() for t, v in self.heads.items()})
            for task, stats in (self.channel_stats or {}).items():
                tensors.update({f"channels/{task}/{k}": v.contiguous() for k, v in stats.items()})
            save_file(tensors, str(tmp / SCORES_WEIGHTS_FILE))
            meta = {"tasks": self.tasks, "provenance": self.provenance}
            (tmp / SCORES_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def push_to_hub(
        self,
        repo_id: str,
        *,
        calibration_texts: dict[str, list[str]] | None = None,
        private: bool = False,
        revision: str | None = None,
        commit_message: str = "Upload DIET profile",
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Uploads what `save_pretrained` writes, with a card saying what was profiled and how to prune from it, to the
        Hub repository `repo_id` as one commit; returns the commit id (with `create_pr`, the pull request's URL).
        `from_pretrained(repo_id)` (`DietPruner.load_scores`, `diet-hf prune MODEL --scores REPO_ID`) reads it back:
        a profile made once prunes at any sparsity, on any machine, with no forward pass. Arguments as
        `diet_hf.hub.push_saved_model`'s; nothing is written locally."""
        from .hub import _check_pull_request, check_repo_id, push_written_folder

        check_repo_id(repo_id)
        _check_pull_request(create_pr, revision)
        _check_not_a_model_repo(repo_id, revision, token)

        def write(directory: Path) -> None:
            self.save_pretrained(directory, calibration_texts=calibration_texts)
            (directory / "README.md").write_text(_profile_card(self, repo_id), encoding="utf-8")

        return push_written_folder(
            write,
            repo_id,
            retry="save it first (`save_pretrained`, `DietPruner.save_scores`, `--save-scores DIR`) and upload that "
            f"folder with `hf upload {repo_id} DIR`",
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
            create_pr=create_pr,
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, revision: str | None = None, token: str | None = None
    ) -> "ImportanceScores":
        """Loads scores written by `save_pretrained`, from a local directory or a Hub repository (`push_to_hub`) at
        `revision` (default: its default branch)."""
        directory = scores_directory(directory, revision=revision, token=token)
        weights, meta_path = directory / SCORES_WEIGHTS_FILE, directory / SCORES_META_FILE
        tensors = load_file(str(weights))
        meta = json.loads(meta_path.read_text())
        tasks = meta["tasks"]
        channels = {
            t: {k.split("/")[2]: v for k, v in tensors.items() if k.startswith(f"channels/{t}/")} for t in tasks
        }
        channels = channels if all(channels.values()) else None
        return cls(
            {t: tensors[f"mlp/{t}"] for t in tasks},
            {t: tensors[f"heads/{t}"] for t in tasks},
            meta.get("provenance", {}),
            channels,
        )


def load_profile(
    model_id_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> tuple[ImportanceScores, dict[str, list[str]]]:
    """A saved profile (`scores_directory`'s places) and the texts of your own tasks saved beside it (`{}` where there
    are none, or in profiles saved before diet-hf kept them)."""
    directory = scores_directory(model_id_or_path, revision=revision, token=token)
    texts_path = directory / SCORES_TEXTS_FILE
    texts = json.loads(texts_path.read_text("utf-8"))["tasks"] if texts_path.is_file() else {}
    return ImportanceScores.from_pretrained(directory), texts


def scores_directory(
    model_id_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    missing_ok: bool = False,
) -> Path | None:
    """The local directory of a saved profile: `model_id_or_path` itself, or a Hub repository's profile files
    downloaded at `revision` into the Hub cache (the weights, the record and the calibration texts, nothing else;
    `hub.local_checkpoint`); a pruned model saved with its profile: its `diet_profile` folder. `FileNotFoundError`
    where there is none; with `missing_ok`, `None` where the location holds a model and no profile (one request to
    the Hub either way), and still the error where it holds neither or an incomplete profile."""
    from ._io import is_local_location
    from .hub import local_checkpoint

    text = os.fspath(model_id_or_path)
    files = [SCORES_WEIGHTS_FILE, SCORES_META_FILE, SCORES_TEXTS_FILE]
    path = local_checkpoint(
        model_id_or_path,
        revision=revision,
        token=token,
        allow_patterns=[*files, *(f"{PROFILE_SUBFOLDER}/{name}" for name in files), CONFIG_FILE],
        subject=f"No importance scores at {text}",
    )
    if not (path / SCORES_META_FILE).is_file() and (path / PROFILE_SUBFOLDER / SCORES_META_FILE).is_file():
        path = path / PROFILE_SUBFOLDER  # a pruned model saved with the profile it was pruned from
    local = is_local_location(model_id_or_path)
    where = text if local else f"the Hub repository {text}" + (f" at revision {revision}" if revision else "")
    if (path / CONFIG_FILE).is_file() and not (path / SCORES_META_FILE).is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(
            f"No importance scores in {where}: it holds a model and no profile (a pruned model carries the one it was "
            "pruned from in `diet_profile/` when saved with `save_pretrained(save_profile=True)` / `diet-hf prune "
            "--include-profile`)."
        )
    for name in (SCORES_WEIGHTS_FILE, SCORES_META_FILE):
        if not (path / name).is_file():
            how = (
                ""
                if local
                else " (a profile is uploaded with `ImportanceScores.push_to_hub` / `DietPruner.push_scores_to_hub`)"
            )
            raise FileNotFoundError(f"No importance scores in {where}: {name} is missing{how}.")
    return path


def _check_not_a_model_repo(repo_id: str, revision: str | None, token: str | None) -> None:
    """`ValueError` where `repo_id` holds a model (its `config.json`): the profile's card would replace the model's.
    A repository that cannot be read here is left to the upload, which says why it fails."""
    from huggingface_hub import HfApi

    try:
        holds_model = HfApi(token=token).file_exists(repo_id, "config.json", revision=revision)
    except Exception:  # connection, permission: the upload reports it
        return
    if holds_model:
        raise ValueError(
            f"`repo_id` {repo_id} holds a model (config.json): the profile's card would replace the model's; give "
            "the profile a repository of its own."
        )


def _profile_card(scores: ImportanceScores, repo_id: str) -> str:
    """The card of a profile pushed to the Hub: what was profiled, on what, and how to prune from it."""
    from .card import _card_datasets
    from .tasks.own import named_with_source

    provenance = scores.provenance
    model = provenance.get("model_id") or "MODEL"
    samples = {task: len(ids) for task, ids in (provenance.get("sample_ids") or {}).items()}
    sources = provenance.get("sources") or {}  # your own tasks' data, where it was read (`tasks.SourceTexts`)
    rows = "\n".join(
        f"| {named_with_source(task, sources.get(task))} | {samples.get(task, '')} |" for task in scores.tasks
    )
    meta = {"library_name": "diet-hf", "tags": ["diet-hf", "pruning-profile"]}
    if provenance.get("model_id"):
        meta["base_model"] = provenance["model_id"]
    datasets = _card_datasets({"tasks": scores.tasks, "task_sources": sources})  # the Hub links it from them
    if datasets:
        meta["datasets"] = datasets
    header = "\n".join(f"{key}: {json.dumps(value)}" for key, value in meta.items())
    ending = "the gold answer" if scores.calibration_answer == "gold" else "a choice drawn per example"
    chat = " in the model's chat template" if scores.chat_template else ""
    return f"""---
{header}
---

# DIET profile of {model}

Per-task importance scores of every MLP dimension and attention head of `{model}` (revision
{provenance.get("revision") or "default"}), made by diet-hf (DIET, arXiv:2603.23985) from the calibration examples
below (seed {provenance.get("seed")}; the texts of questions end in {ending}{chat}).
It holds no model weights: prune `{model}` from it at any sparsity, with no profiling pass.

| task | calibration examples |
|---|---|
{rows}

```python
from diet_hf import DietPruner

pruner = DietPruner.from_pretrained("{model}").load_scores("{repo_id}")
pruner.prune(sparsity=0.2)
pruner.save_pretrained("{model.split("/")[-1]}-diet-20")
```

or `diet-hf prune {model} --scores {repo_id} --sparsity 0.2 --output DIR`. The reconstruction of the default recipe
reads the calibration data again: the registered tasks' examples are drawn again by their ids, and your own tasks'
texts are in `{SCORES_TEXTS_FILE}`.
"""
