"""`DietPruner`: load a dense Gemma model, profile it on tasks, prune it by DIET's majority vote."""

import logging
import os
from collections.abc import Iterable, Mapping

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .constants import family_for_model_type
from .importance import ImportanceScores
from .plan import PruningPlan, build_plan
from .profiler import collect_activation_stats
from .surgery import build_pruned_model
from .tasks import PAPER_TASKS, CalibrationSet, custom_calibration, load_calibration

__all__ = ["DietPruner"]

logger = logging.getLogger(__name__)


class DietPruner:
    """Training-free, task-aware structured pruning (DIET) of a dense Gemma-2 or Gemma 3 text model.

    Args:
        model (`Gemma2ForCausalLM` or `Gemma3ForCausalLM`): the dense model to prune.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): needed to profile on text tasks.
        model_id (`str`, *optional*): recorded in the provenance of scores and pruned models.

    ```python
    >>> pruner = DietPruner(model, tokenizer)
    >>> pruned = pruner.profile(tasks={"mine": ["some text", "more text"]}).prune(sparsity=0.2)
    ```
    """

    def __init__(self, model, tokenizer=None, *, model_id: str | None = None):
        self.family = family_for_model_type(getattr(model.config, "model_type", type(model).__name__))
        if model.config.model_type == self.family.pruned_model_type:
            raise ValueError(
                f"`model` is already pruned (`model_type` {model.config.model_type!r}); pass the dense "
                f"`{self.family.dense_model_type}` model."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or None
        self.scores: ImportanceScores | None = None
        self.plan: PruningPlan | None = None

    @classmethod
    def from_pretrained(cls, model_id_or_path: str | os.PathLike, **from_pretrained_kwargs) -> "DietPruner":
        """Loads a dense model and its tokenizer; the `model_type` is checked before any weight is read.

        Args:
            model_id_or_path (`str` or `os.PathLike`): Hub id or local directory of a Gemma-2 / Gemma 3 text model.
            from_pretrained_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (`dtype`, `device_map`, ...).
        """
        hub_kwargs = {
            k: from_pretrained_kwargs[k] for k in ("revision", "token", "cache_dir") if k in from_pretrained_kwargs
        }
        config = AutoConfig.from_pretrained(model_id_or_path, **hub_kwargs)
        family_for_model_type(config.model_type)  # refuse unsupported models before loading weights
        model = AutoModelForCausalLM.from_pretrained(model_id_or_path, **from_pretrained_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model_id_or_path, **hub_kwargs)
        return cls(model.eval(), tokenizer, model_id=str(model_id_or_path))

    def profile(
        self,
        tasks: Iterable[str] | Mapping[str, object] = PAPER_TASKS,
        *,
        num_samples: int = 100,
        batch_size: int = 8,
        max_length: int = 512,
        seed: int = 0,
        data_dir: str | os.PathLike | None = None,
        channel_stats: bool = False,
        disable_progress: bool = False,
    ) -> "DietPruner":
        """Collects per-task importance scores (hooks on `down_proj` / `o_proj` inputs, no gradients).

        Args:
            tasks (`list[str]` or `dict`): registered task names, or name -> custom data (a list of strings, a
                `datasets.Dataset` with a `text` column, or an iterable of token batches with `input_ids` and
                `attention_mask`).
            num_samples (`int`, *optional*, defaults to 100): calibration examples per registered task.
            batch_size (`int`, *optional*, defaults to 8): texts per forward pass (right padding, ignored).
            max_length (`int`, *optional*, defaults to 512): longer texts are truncated.
            seed (`int`, *optional*, defaults to 0): seed of the calibration draw.
            data_dir (`str`, *optional*): local data directory (else `$DIET_DATA_DIR`, else the Hub).
            channel_stats (`bool`, *optional*, defaults to `False`): also keep per-input-channel sums of a and a^2
                of `down_proj` / `o_proj`, which the Wanda-sp and FLAP baselines need.

        Returns:
            `DietPruner`: `self`, with `scores` set.
        """
        if isinstance(tasks, str):
            tasks = [tasks]
        named = dict(tasks) if isinstance(tasks, Mapping) else {name: None for name in tasks}
        if not named:
            raise ValueError("`tasks` is empty; pass task names or custom task data.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        calibration = {}
        for name, data in named.items():
            if data is None:
                calibration[name] = load_calibration(name, num_samples=num_samples, seed=seed, data_dir=data_dir)
            elif _is_token_batches(data):
                calibration[name] = data
            else:
                calibration[name] = custom_calibration(name, data)
        mlp, heads, sample_ids, excluded, channels = {}, {}, {}, {}, {}
        for name, data in calibration.items():
            if isinstance(data, CalibrationSet):
                batches = self._text_batches(data.texts, batch_size, max_length)
                count = -(-len(data.texts) // batch_size)
                sample_ids[name], excluded[name] = data.example_ids, data.excluded_eval_ids
            else:
                batches, count = data, None
            stats = collect_activation_stats(
                self.model,
                self.family,
                batches,
                num_batches=count,
                channel_stats=channel_stats,
                description=f"profiling {name}",
                disable_progress=disable_progress,
            )
            mlp[name], heads[name] = stats.means()
            if channel_stats:
                channels[name] = {
                    "mlp": torch.stack(stats.mlp_channel),
                    "attn": torch.stack(stats.attn_channel),
                    "num_tokens": torch.tensor(stats.num_tokens, dtype=torch.float64),
                }
        import diet_hf

        provenance = {
            "model_id": self.model_id,
            "revision": getattr(self.model.config, "_commit_hash", None),
            "model_type": self.model.config.model_type,
            "tasks": list(calibration),
            "num_samples": num_samples,
            "max_length": max_length,
            "seed": seed,
            "sample_ids": sample_ids,
            "excluded_eval_ids": excluded,
            "diet_hf_version": diet_hf.__version__,
        }
        self.scores = ImportanceScores(mlp, heads, provenance, channel_stats=channels or None)
        return self

    def _text_batches(self, texts: list[str], batch_size: int, max_length: int):
        if self.tokenizer is None:
            raise ValueError(
                "Profiling on text needs a tokenizer: pass `tokenizer` to `DietPruner(model, tokenizer)`."
            )
        encoded = [self.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(order), batch_size):
            rows = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                input_ids[i, : len(row)] = torch.tensor(row)
                attention_mask[i, : len(row)] = 1
            yield {"input_ids": input_ids, "attention_mask": attention_mask}

    def save_scores(self, save_directory: str | os.PathLike) -> None:
        """Saves the profile, so pruning again at another sparsity needs no forward pass."""
        self._require_scores().save_pretrained(save_directory)

    def load_scores(self, directory: str | os.PathLike) -> "DietPruner":
        """Loads a saved profile after checking it was made for this model."""
        scores = ImportanceScores.from_pretrained(directory)
        scores.check_compatible(self.model.config)
        self.scores = scores
        return self

    def _require_scores(self) -> ImportanceScores:
        if self.scores is None:
            raise RuntimeError("No importance scores: call `profile()` (or `load_scores()`) before `prune()`.")
        return self.scores

    def prune(
        self,
        *,
        sparsity: float | None = None,
        mlp_sparsity: float | None = None,
        attention_sparsity: float | None = None,
        merge: str = "vote",
        task_weights: dict[str, float] | None = None,
        mlp_normalize: str = "none",
        head_normalize: str = "layer",
        allocation: str = "global",
        round_to: int = 1,
        min_mlp_fraction: float = 0.05,
        allow_sublayer_removal: bool = False,
        tasks: list[str] | None = None,
        bias_compensation: bool = False,
    ):
        """Builds the DIET plan from the scores and returns the physically pruned model.

        Args:
            sparsity (`float`): fraction in (0, 1) of the decoder blocks' attention + MLP parameters to remove.
            mlp_sparsity, attention_sparsity (`float`, *optional*): set the MLP and attention fractions apart instead.
            merge (`str`, *optional*, defaults to `"vote"`): `"vote"` (DIET's majority vote) or `"mean"`.
            task_weights (`dict[str, float]`, *optional*): per-task weights of votes and scores.
            mlp_normalize, head_normalize (`str`): `"none"` ranks raw scores globally; `"layer"` divides each layer's
                scores by their mean first. Heads default to `"layer"`: raw head norms fall ~40x with depth on Gemma 3
                and raw global ranking strips whole layers' attention at high sparsity (DESIGN.md section 2).
            allocation (`str`, *optional*, defaults to `"global"`): `"uniform"` keeps equal widths in every layer.
            round_to (`int`, *optional*, defaults to 1): per-layer MLP widths in multiples of this.
            min_mlp_fraction (`float`, *optional*, defaults to 0.05): MLP width floor per layer.
            allow_sublayer_removal (`bool`, *optional*, defaults to `False`): allow 0 heads or 0 MLP width in a layer.
            tasks (`list[str]`, *optional*): use only these profiled tasks (e.g. leave-one-task-out).
            bias_compensation (`bool`, *optional*, defaults to `False`): FLAP's bias compensation; the pruned model
                gets `o_proj` / `down_proj` biases holding the removed channels' mean contribution (needs a profile
                made with `channel_stats=True`).

        Returns:
            `PrunedGemma2ForCausalLM` or `PrunedGemma3ForCausalLM`; `self.plan` holds the plan.
        """
        scores = self._require_scores()
        if tasks is not None:
            scores = scores.select(list(tasks))
        plan = build_plan(
            scores,
            self.model.config,
            sparsity=sparsity,
            mlp_sparsity=mlp_sparsity,
            attention_sparsity=attention_sparsity,
            merge=merge,
            task_weights=task_weights,
            mlp_normalize=mlp_normalize,
            head_normalize=head_normalize,
            allocation=allocation,
            round_to=round_to,
            min_mlp_fraction=min_mlp_fraction,
            allow_sublayer_removal=allow_sublayer_removal,
        )
        plan.provenance.update(
            {k: scores.provenance.get(k) for k in ("model_id", "revision", "num_samples", "seed", "diet_hf_version")}
        )
        plan.provenance["bias_compensation"] = bias_compensation
        channel_means = scores.channel_means() if bias_compensation else None
        self.plan = plan
        record = _pruning_record(self.model, plan, scores)
        pruned = build_pruned_model(self.model, plan, pruning=record, channel_means=channel_means)
        # biases added by compensation count too
        pruned.config.pruning["total_parameters"]["pruned"] = sum(p.numel() for p in pruned.parameters())
        return pruned


def _pruning_record(model, plan: PruningPlan, scores: ImportanceScores) -> dict:
    kept, dense = plan.block_parameters()
    total_dense = sum(p.numel() for p in model.parameters())
    return {
        "method": "DIET",
        "paper": "arXiv:2603.23985",
        "base_model": scores.provenance.get("model_id"),
        "base_model_revision": scores.provenance.get("revision"),
        "tasks": scores.tasks,
        "num_samples": scores.provenance.get("num_samples"),
        "seed": scores.provenance.get("seed"),
        "target": {k: plan.provenance.get(k) for k in ("sparsity", "mlp_sparsity", "attention_sparsity")},
        "achieved_block_sparsity": plan.sparsity,
        "block_parameters": {"dense": dense, "pruned": kept},
        "total_parameters": {"dense": total_dense, "pruned": total_dense - (dense - kept)},
        "options": {
            k: plan.provenance.get(k)
            for k in (
                "merge",
                "task_weights",
                "mlp_normalize",
                "head_normalize",
                "allocation",
                "round_to",
                "min_mlp_fraction",
                "allow_sublayer_removal",
                "bias_compensation",
            )
        },
        "diet_hf_version": scores.provenance.get("diet_hf_version"),
    }


def _is_token_batches(data) -> bool:
    if isinstance(data, (str, list, tuple)) and (not data or isinstance(data[0], str)):
        return False
    if hasattr(data, "column_names"):
        return False
    return True
