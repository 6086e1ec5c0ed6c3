"""`DietPruner`: load a dense Gemma model, profile it on tasks, prune it by the merged per-task scores (a recipe)."""

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoConfig, AutoTokenizer

from ._batching import pad_id, pad_rows
from ._checks import check_positive_int
from ._io import check_model_location, check_tokenizer_files
from .constants import SCORES_TEXTS_FILE, family_for_model_type
from .importance import ImportanceScores
from .loading import image_text_model, is_image_text, load_pretrained, load_processor, text_causal_lm, text_config
from .methods import METHODS as SCORING_METHODS
from .methods import get_method, method_options
from .moments import (
    InputMoments,
    MomentSums,
    collect_input_moments,
    first_token_inputs,
    iter_input_moments,
    moment_widths,
    moments_product_dtype,
)
from .options import ProfileOptions, PruneOptions, with_overrides
from .plan import PruningPlan, build_plan, check_sparsity_targets
from .profiler import collect_activation_stats
from .recipes import DEFAULT_RECIPE, SCORE_KINDS, output_weight_norms, recipe_options, weighted_scores
from .surgery import build_pruned_model
from .tasks import PAPER_TASKS, TASKS, CalibrationSet, Task, custom_calibration, load_calibration

__all__ = ["DietPruner"]

logger = logging.getLogger(__name__)


METHODS = tuple(SCORING_METHODS)  # "diet" and the baselines (`diet_hf.methods`)


class DietPruner:
    """Training-free, task-aware structured pruning (DIET) of a dense Gemma-2 or Gemma 3 text model.

    Args:
        model (`Gemma2ForCausalLM` or `Gemma3ForCausalLM`): the dense model to prune; of a
            `Gemma3ForConditionalGeneration` (Gemma 3 from 4B up) the text decoder is pruned, and `prune()` returns a
            `PrunedGemma3ForConditionalGeneration` with the vision tower and projector unchanged (`diet_hf.loading`).
        tokenizer (`PreTrainedTokenizerBase`, *optional*): needed to profile on text tasks.
        model_id (`str`, *optional*): recorded in the provenance of scores and pruned models.
        processor (`ProcessorMixin`, *optional*): an image-text model's processor, saved with the pruned model
            (instead of `tokenizer`, which it holds).
        text_only (`bool`, *optional*, defaults to `False`): of an image-text model, prune and save the text model
            alone (a `PrunedGemma3ForCausalLM`, no vision tower): smaller, for text-only use.

    ```python
    >>> pruner = DietPruner(model, tokenizer)
    >>> pruned = pruner.profile(tasks={"mine": ["some text", "more text"]}).prune(sparsity=0.2)
    ```
    """

    def __init__(self, model, tokenizer=None, *, model_id: str | None = None, processor=None, text_only: bool = False):
        if not isinstance(text_only, bool):
            raise ValueError(f"`text_only` must be a bool, got {text_only!r}.")
        if not hasattr(model, "config"):
            raise TypeError(
                f"`model` must be a transformers Gemma-2 / Gemma 3 model (a `PreTrainedModel`), got "
                f"{type(model).__name__}."
            )
        source = model
        model = text_causal_lm(model)
        # the image-text model whose vision tower and projector the pruned model keeps (None: a text model, or
        # `text_only`)
        self._image_text = source if source is not model and not text_only else None
        self.processor = processor if self._image_text is not None else None
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
        self.pruned_model = None  # the model the last `prune()` returned, for `save_pretrained` / `push_to_hub`
        self._calibration: dict | None = None  # the data of the last `profile()`, for iterative pruning
        self._moments: tuple[frozenset, InputMoments] | None = None  # reconstruction's, kept for the next prune()
        self._scores_data_dir = None  # where `load_scores` draws the calibration data again if a prune needs it
        self._custom_texts: dict[str, list[str]] = {}  # the texts of the tasks passed to `profile()`, saved with it
        # what the reconstruction's input moments may take at once (`ProfileOptions.moments_memory_gib`)
        self._moments_budget = _moments_bytes(ProfileOptions().moments_memory_gib)
        self._moments_dtype = ProfileOptions().moments_dtype  # and the precision of their x x^T products
        self._consumed = False  # set by `prune(inplace=True)`: the dense model became the pruned one

    @classmethod
    def from_pretrained(
        cls, model_id_or_path: str | os.PathLike, *, text_only: bool = False, **from_pretrained_kwargs
    ) -> "DietPruner":
        """Loads a dense model and its tokenizer (and an image-text model's processor); the `model_type` is checked
        before any weight is read.

        Args:
            model_id_or_path (`str` or `os.PathLike`): Hub id or local directory of a Gemma-2 / Gemma 3 model; of an
                image-text Gemma 3 (4B and up) the text decoder is pruned and the vision tower kept unchanged.
            text_only (`bool`, *optional*, defaults to `False`): of an image-text model, load and prune its text
                model alone; the pruned checkpoint has no vision tower.
            from_pretrained_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (`dtype`, `device_map`, ...).
        """
        if not isinstance(text_only, bool):
            raise ValueError(f"`text_only` must be a bool, got {text_only!r}.")
        check_model_location(model_id_or_path, "model_id_or_path")
        hub_kwargs = {
            k: from_pretrained_kwargs[k] for k in ("revision", "token", "cache_dir") if k in from_pretrained_kwargs
        }
        config = AutoConfig.from_pretrained(model_id_or_path, **hub_kwargs)
        family_for_model_type(text_config(config).model_type)  # refuse unsupported models before loading weights
        model = load_pretrained(model_id_or_path, config, **from_pretrained_kwargs)
        if text_only:  # the image-text model's vision tower is freed here
            model = text_causal_lm(model)
        try:
            check_tokenizer_files(model_id_or_path, "model_id_or_path")
        except ValueError as error:  # profiling custom token batches needs no tokenizer; registered tasks say so
            logger.warning("%s The pruner has no tokenizer.", error)
            tokenizer = None
        else:
            tokenizer = AutoTokenizer.from_pretrained(model_id_or_path, **hub_kwargs)
        processor = load_processor(model_id_or_path, **hub_kwargs) if is_image_text(model.config) else None
        return cls(model.eval(), tokenizer, model_id=str(model_id_or_path), processor=processor)

    def profile(
        self,
        tasks: Iterable[str] | Mapping[str, object] = PAPER_TASKS,
        *,
        options: ProfileOptions | None = None,
        data_dir: str | os.PathLike | None = None,
        disable_progress: bool = False,
        **option_values,
    ) -> "DietPruner":
        """Collects per-task importance scores (hooks on `down_proj` / `o_proj` inputs, no gradients).

        Args:
            tasks (`list` or `dict`): registered task names (and your own `tasks.multiple_choice_task`s, under their
                names), or name -> custom data (a list of strings, a
                `datasets.Dataset` with a `text` column, your own multiple-choice questions as a
                `tasks.multiple_choice_task`, calibrated on each context and gold choice, or an iterable of token
                batches with `input_ids` and `attention_mask`).
            options (`ProfileOptions`, *optional*): the calibration options as one object; or give them as keywords
                (`num_samples=100`, `batch_size=8`, `max_length=512`, `seed=0`, `channel_stats=True`,
                `input_moments=True`, `moments_memory_gib=2.0`, `moments_dtype="auto"`), which override `options`.
                `channel_stats` keeps per-input-channel sums of a and a^2 of `down_proj` / `o_proj`, which bias
                compensation and the Wanda-sp and FLAP baselines need (`2 x (intermediate_size + heads x head_dim)`
                float64 per layer and task). `input_moments` sums the reconstruction's x x^T of every `down_proj`
                input over all the tasks' tokens in the same pass (when they fit in `moments_memory_gib`; the 270M's
                take 0.17 GB), so a later `prune(reconstruct=True)` over the same tasks runs no forward pass unless it
                cuts heads (their `o_proj` moments are then summed once, in a pass of their own); above that budget
                `prune` sums the cut modules' moments in passes of at most the budget each. On a GPU with room to
                spare, raise it: Gemma-2 2B's take 4.5 GB. `moments_dtype` is the precision of the x x^T products
                (summed in float32 either way): `"auto"` multiplies in bfloat16 where that is fast (a CUDA GPU with
                bfloat16, a CPU with AVX512-BF16 or AMX), the products being most of the moments' cost.
            data_dir (`str`, *optional*): local data directory (else `$DIET_DATA_DIR`, else the Hub).
            disable_progress (`bool`, *optional*): no progress bar.

        Returns:
            `DietPruner`: `self`, with `scores` set.
        """
        self._require_dense("profile")
        options = with_overrides(ProfileOptions, options, option_values, "profile")
        if isinstance(tasks, (str, Task)):
            tasks = [tasks]
        if isinstance(tasks, Mapping):
            named = dict(tasks)
        else:
            named = {}
            for task in tasks:  # names, and `Task`s under their own names
                if isinstance(task, Task):
                    named[task.name] = task if task.examples is not None else None  # a registered one: by its name
                else:
                    named[task] = None
        if not named:
            raise ValueError("`tasks` is empty; pass task names or custom task data.")
        calibration = {}
        for name, data in named.items():
            if data is None:
                calibration[name] = load_calibration(
                    name, num_samples=options.num_samples, seed=options.seed, data_dir=data_dir
                )
            elif _is_token_batches(data):
                calibration[name] = _checked_token_batches(name, data)  # kept: iterative pruning profiles again
            else:
                calibration[name] = custom_calibration(name, data)
                count = len(calibration[name].texts)
                if count > 10 * options.num_samples:  # `num_samples` draws from registered tasks, not from yours
                    logger.warning(
                        "Task %r: all %d of your texts are profiled (`num_samples`=%d applies to registered tasks); "
                        "pass a sample of them to profile faster.",
                        name,
                        count,
                        options.num_samples,
                    )
        self._calibration = {"data": calibration, "batch_size": options.batch_size, "max_length": options.max_length}
        self._custom_texts = {
            name: data.texts
            for name, data in calibration.items()
            if named[name] is not None and isinstance(data, CalibrationSet)
        }
        self._moments = None
        self._moments_budget = _moments_bytes(options.moments_memory_gib)
        self._moments_dtype = options.moments_dtype
        pooled = self._pooled_moments() if options.input_moments else None
        mlp, heads, channels = self._collect(
            calibration, channel_stats=options.channel_stats, moments=pooled, disable_progress=disable_progress
        )
        if pooled is not None:
            self._moments = (frozenset(calibration), pooled.moments())
        sample_ids = {n: d.example_ids for n, d in calibration.items() if isinstance(d, CalibrationSet)}
        excluded = {n: d.excluded_eval_ids for n, d in calibration.items() if isinstance(d, CalibrationSet)}
        import diet_hf

        provenance = {
            "model_id": self.model_id,
            "revision": getattr(self.model.config, "_commit_hash", None),
            "model_type": self.model.config.model_type,
            "tasks": list(calibration),
            "num_samples": options.num_samples,
            "max_length": options.max_length,
            "seed": options.seed,
            "sample_ids": sample_ids,
            "excluded_eval_ids": excluded,
            "diet_hf_version": diet_hf.__version__,
        }
        self.scores = ImportanceScores(mlp, heads, provenance, channel_stats=channels or None)
        return self

    def _reprofile(self, plan: PruningPlan, tasks: list[str], fill, *, previous: ImportanceScores):
        """Scores of the dense model with `plan`'s removed units masked (zero, or `fill` means): units already
        removed score 0, so every later plan removes them too."""
        calibration = {t: self._calibration["data"][t] for t in tasks}
        masks = _ChannelMasks(self.model, self.family, plan, fill)
        mlp, heads, channels = self._collect(
            calibration, channel_stats=previous.channel_stats is not None, disable_progress=True, masks=masks
        )
        for task in tasks:
            mlp[task][~masks.mlp_kept] = 0
            heads[task][~masks.head_kept] = 0
        return ImportanceScores(mlp, heads, dict(previous.provenance), channels or None)

    def _pooled_moments(self) -> MomentSums | None:
        """Empty sums for every `down_proj` input, filled while profiling; `None` above the budget.

        Only the MLP's: every recipe that reconstructs cuts MLP width, and none cuts heads (`attention_ratio=0`), so
        summing the `o_proj` inputs too would cost every profile a fifth more of the moments' work (and memory) for
        plans that rarely need them; a plan that cuts heads with `reconstruct=True` has them summed in a pass of
        their own, once (`_input_moments`)."""
        width = moment_widths(self.model.config)
        keys = [("mlp", layer) for layer in range(self.model.config.num_hidden_layers)]
        nbytes = MomentSums.nbytes_for(keys, width, self._product_dtype())
        if nbytes > self._moments_budget:
            logger.info(
                "The reconstruction's input moments (%.1f GiB) exceed `moments_memory_gib` (%.1f GiB): not collected "
                "while profiling; prune(reconstruct=True) collects those of the cut modules in passes of its own.",
                nbytes / 2**30,
                self._moments_budget / 2**30,
            )
            return None
        device = next(self.model.parameters()).device
        return MomentSums(keys, width, device, self._product_dtype())

    def _product_dtype(self) -> torch.dtype:
        """The dtype of the reconstruction's x x^T products (`ProfileOptions.moments_dtype`) on the model's device."""
        return moments_product_dtype(self._moments_dtype, next(self.model.parameters()).device)

    def _input_moments(
        self, plan: PruningPlan, tasks: list[str], disable_progress: bool = False, inplace: bool = False
    ) -> InputMoments | Iterator[InputMoments] | None:
        """Input moments of the dense model's cut `down_proj` / `o_proj` modules over `tasks`' calibration data: all
        of them, or where they exceed `moments_memory_gib` an iterator of groups, one pass over the data each
        (deepest first for an in-place surgery, which then frees the dense layers a group at a time)."""
        targets = plan.cut_modules()
        if not targets:
            return None
        cached = self._moments[1] if self._moments is not None and self._moments[0] == frozenset(tasks) else None
        missing = [key for key in targets if cached is None or key not in cached]
        if not missing:
            return cached
        calibration = [self._calibration["data"][t] for t in tasks]

        def batches():
            for data in calibration:
                yield from self._batches(data)[0]

        count = sum(self._batches(data)[1] or 0 for data in calibration)
        held = 0 if cached is None else cached.nbytes
        needed = MomentSums.nbytes_for(missing, moment_widths(self.model.config), self._product_dtype())
        if held + needed > self._moments_budget:
            # too many to keep (Gemma 3 1B's MLP moments take 2.6 GB, Gemma-2 9B's 17.6 GB): surgery reads them one
            # pass's group at a time, each group at most the same budget, and none is kept for the next prune()
            stream = iter_input_moments(
                self.model,
                self.family,
                batches,
                missing,
                max_bytes=self._moments_budget,
                num_batches=count,
                description="reconstruction",
                disable_progress=disable_progress,
                deepest_first=inplace,
                product_dtype=self._product_dtype(),
            )
            return stream if cached is None else itertools.chain([cached], stream)
        moments = collect_input_moments(
            self.model,
            self.family,
            batches,
            missing,
            num_batches=count,
            description="reconstruction",
            disable_progress=disable_progress,
            product_dtype=self._product_dtype(),
        )
        if cached is not None:
            moments = cached.merged(moments)
        self._moments = (frozenset(tasks), moments)  # pruning again (another sparsity) reuses them
        return moments

    def _collect(self, calibration: dict, *, channel_stats: bool, disable_progress: bool, masks=None, moments=None):
        """Per-task mean scores (and channel sums) of the dense model, with `masks` (`_ChannelMasks`) applied;
        `moments` (`MomentSums`) sums the reconstruction's statistics over all the tasks in the same passes."""
        mlp, heads, channels = {}, {}, {}
        for name, data in calibration.items():
            batches, count = self._batches(data)
            with masks if masks is not None else contextlib.nullcontext():
                stats = collect_activation_stats(
                    self.model,
                    self.family,
                    batches,
                    num_batches=count,
                    channel_stats=channel_stats,
                    moments=moments,
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
        return mlp, heads, channels

    def _batches(self, data) -> tuple:
        """One task's calibration data as model batches (texts tokenized with the profile's batch size and length)
        and their number (`None` for token batches of unknown length)."""
        if not isinstance(data, CalibrationSet):
            return data, len(data) if hasattr(data, "__len__") else None
        batch_size, max_length = self._calibration["batch_size"], self._calibration["max_length"]
        return self._text_batches(data.texts, batch_size, max_length), -(-len(data.texts) // batch_size)

    def _text_batches(self, texts: list[str], batch_size: int, max_length: int):
        if self.tokenizer is None:
            raise ValueError(
                "Profiling on text needs a tokenizer: pass `tokenizer` to `DietPruner(model, tokenizer)`."
            )
        encoded = [self.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
        pad = pad_id(self.tokenizer)
        for start in range(0, len(order), batch_size):
            input_ids, attention_mask = pad_rows([encoded[i] for i in order[start : start + batch_size]], pad)
            yield {"input_ids": input_ids, "attention_mask": attention_mask}

    def save_scores(self, save_directory: str | os.PathLike) -> None:
        """Saves the profile, so pruning again at another sparsity needs no forward pass. The texts of the tasks you
        passed to `profile()` (your own data; not token batches) are saved beside it (`calibration_texts.json`), so a
        reconstruction from the loaded profile reads them again; registered tasks are drawn again from their data."""
        scores = self._require_scores("`save_scores()`")
        scores.save_pretrained(save_directory, calibration_texts=self._custom_texts)

    def load_scores(
        self,
        directory: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None = None,
        moments_memory_gib: float | None = None,
        moments_dtype: str | None = None,
    ) -> "DietPruner":
        """Loads a saved profile after checking it was made for this model.

        A later `prune()` that needs the calibration data (`reconstruct=True`, `steps` > 1) reads the texts of your
        own tasks saved beside the profile and draws the same examples of its registered tasks again (from
        `data_dir`, else `$DIET_DATA_DIR`, else the Hub), checking both against the profile's record; plain pruning
        runs no forward pass and reads no data. Token batches passed to `profile()` are not saved.
        `moments_memory_gib` and `moments_dtype` (`ProfileOptions`'s, defaults 2.0 and `"auto"`): the memory the
        reconstruction's input moments may take at once, in its passes over that data, and the precision of their
        x x^T products.
        """
        given = {"moments_memory_gib": moments_memory_gib, "moments_dtype": moments_dtype}
        checked = ProfileOptions(**{k: v for k, v in given.items() if v is not None})  # validated as the options are
        scores = ImportanceScores.from_pretrained(directory)
        scores.check_compatible(self.model.config)
        self.scores = scores
        self._calibration, self._moments, self._scores_data_dir = None, None, data_dir
        texts_path = Path(directory) / SCORES_TEXTS_FILE  # absent in profiles saved before diet-hf kept the texts
        self._custom_texts = json.loads(texts_path.read_text("utf-8"))["tasks"] if texts_path.is_file() else {}
        self._moments_budget = _moments_bytes(checked.moments_memory_gib)
        self._moments_dtype = checked.moments_dtype
        return self

    def _require_calibration(self, purpose: str, alternative: str) -> None:
        """The calibration data of the scores: this session's `profile()`, or drawn again for loaded scores."""
        if self._calibration is not None:
            return
        provenance = self.scores.provenance
        drawn = provenance.get("sample_ids") or {}
        saved = self._custom_texts
        custom = [t for t in self.scores.tasks if t not in saved and (t not in drawn or t not in TASKS)]
        reason = None
        if custom:
            reason = (
                f"tasks {custom} were profiled on data passed to `profile()` that was not saved with it (token "
                "batches, or a profile saved before diet-hf kept your texts)"
            )
        else:
            data = {}
            for task in self.scores.tasks:
                if task in saved:  # your own texts, saved with the profile
                    data[task] = custom_calibration(task, saved[task])
                    if len(saved[task]) != len(drawn.get(task, ())):
                        reason = f"the texts of task {task!r} saved with the profile are not the ones it read"
                        break
                    continue
                seed, count = provenance["seed"], provenance["num_samples"]
                data[task] = load_calibration(task, num_samples=count, seed=seed, data_dir=self._scores_data_dir)
                if data[task].example_ids != drawn[task]:
                    reason = f"the examples of task {task!r} drawn again differ from the profile's (the data changed)"
                    break
        if reason is not None:
            raise ValueError(
                f"{purpose} on the calibration data of `profile()`; these scores were not profiled in this session "
                f"(`load_scores`) and {reason}. Call `profile()` first, or pass {alternative}."
            )
        batch_size = ProfileOptions().batch_size  # padding only: the statistics do not depend on it
        self._calibration = {"data": data, "batch_size": batch_size, "max_length": provenance["max_length"]}

    def _require_scores(self, action: str = "`prune()`") -> ImportanceScores:
        if self.scores is None:
            raise RuntimeError(f"No importance scores: call `profile()` (or `load_scores()`) before {action}.")
        return self.scores

    def prune(
        self,
        *,
        sparsity: float | None = None,
        mlp_sparsity: float | None = None,
        attention_sparsity: float | None = None,
        recipe: str = DEFAULT_RECIPE,
        method: str = "diet",
        tasks: list[str] | None = None,
        options: PruneOptions | None = None,
        disable_progress: bool = False,
        inplace: bool = False,
        **option_values,
    ):
        """Builds the DIET plan from the scores and returns the physically pruned model.

        Args:
            sparsity (`float`): fraction in (0, 1) of the decoder blocks' attention + MLP parameters to remove.
                A target out of reach of the options' floors (`min_mlp_fraction`, one head per layer, `keep_layers`,
                every head kept where `attention_ratio` is 0) raises `ValueError` with the most they can remove;
                `check_targets` runs that check before a profile.
            mlp_sparsity, attention_sparsity (`float`, *optional*): set the MLP and attention fractions apart instead.
            recipe (`str`, *optional*): a named set of options (`diet_hf.recipes.RECIPES`): the default recipe, or
                `"paper"` for the method exactly as the paper describes it. Options passed explicitly override it.
            method (`str`, *optional*, defaults to `"diet"`): `"diet"`, or a baseline's scores and allocation in the
                same pipeline (`"flap"`, `"wanda_sp"`, `"magnitude"`, `"random"`; `diet_hf.baselines`), so its pruned
                model is saved and published the same way and its card names the method. `recipe` applies to DIET
                only; FLAP gets its bias compensation by default.
            tasks (`list[str]`, *optional*): use only these profiled tasks (e.g. leave-one-task-out).
            options (`PruneOptions`, *optional*): the options below as one object.
            **option_values: the fields of `diet_hf.options.PruneOptions` (`score`, `merge`, `mlp_normalize`,
                `head_normalize`, `allocation`, `layer_sparsity_cap`, `attention_ratio`, `keep_layers`,
                `bias_compensation`, `reconstruct`, `anchor_bos`, `steps`, `task_weights`, `round_to`,
                `min_mlp_fraction`, `allow_sublayer_removal`); each field's `metadata["help"]` documents it. `None` =
                the recipe's value. `steps` > 1 profiles again between steps and `reconstruct=True` runs the
                calibration data once more; both need the calibration data of `profile()` (scores from `load_scores`
                draw it again).
            disable_progress (`bool`, *optional*): no progress bars (the reconstruction's passes over the
                calibration data and its per-module solves, which take minutes on the larger Gemmas).
            inplace (`bool`, *optional*, defaults to `False`): build the pruned model out of the dense model's own
                weights (`build_pruned_model(inplace=True)`): the reconstruction's passes run deepest first and each
                layer's dense tensors are freed once it is cut, so the pruned model is never held beside the whole
                dense model (the peak is the dense model plus one pass's moments and solves, and afterwards the
                process holds about the pruned model). Weights mapped from a file (safetensors loaded on the CPU)
                release nothing when freed. The dense model is consumed: this pruner cannot profile or prune again,
                and a model you passed in must not be used afterwards.

        Returns:
            `PrunedGemma2ForCausalLM` or `PrunedGemma3ForCausalLM`; `self.plan` holds the plan. Its unsliced weights
            are `self.model`'s own tensors (no copy): train a saved-and-reloaded checkpoint or a `copy.deepcopy`, or
            use `diet_hf.healing.heal`, which never writes through to the dense model. The pruner keeps it for
            `save_pretrained` / `push_to_hub` until the next `prune()` reaches surgery, then lets it go (freed then
            unless you hold it).
        """
        if not isinstance(inplace, bool):
            raise ValueError(f"`inplace` must be a bool, got {inplace!r}.")
        self._require_dense("prune")
        settings = self._prune_settings(recipe, method, options, option_values, tasks)
        targets = {"sparsity": sparsity, "mlp_sparsity": mlp_sparsity, "attention_sparsity": attention_sparsity}
        check_sparsity_targets(**targets)  # before the steps scale them
        plan, channel_source = self._stepped_plan(settings, targets)
        scores, reconstruct = settings.scores, settings.reconstruct
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
                "reconstruct": reconstruct,
                "anchor_bos": settings.anchor_bos,
                "steps": settings.steps,
            }
        )
        if reconstruct:  # the precision of the x x^T products its moments summed (`ProfileOptions.moments_dtype`)
            plan.provenance["moments_dtype"] = str(self._product_dtype()).removeprefix("torch.")
        channel_means = None
        if settings.bias_compensation:
            channel_means = (channel_source if method == "diet" else self.scores).channel_means()
        # the previous pruned model is not kept past this point, so that it can be freed before surgery builds the
        # next one (unless the caller holds it): Gemma-2 2B's pruned weights take 5 GB in float32
        self.pruned_model = None
        moments = self._input_moments(plan, list(scores.tasks), disable_progress, inplace) if reconstruct else None
        anchors = None
        if settings.anchor_bos and moments is not None:  # the BOS token's inputs of the modules the fit refits
            anchors = first_token_inputs(self.model, self.family, settings.bos_token_id, plan.cut_modules())
        self.plan = plan
        dense_parameters = sum(
            p.numel() for p in (self._image_text if self._image_text is not None else self.model).parameters()
        )
        if inplace:  # from here on the dense model is the pruned one's raw material
            self._consumed = True
            self._moments = None
        pruned = build_pruned_model(
            self.model,
            plan,
            channel_means=channel_means,
            input_moments=moments,
            reconstruction_anchors=anchors,
            disable_progress=disable_progress,
            inplace=inplace,
        )
        architecture = getattr(self.model, "diet_source_architecture", None)
        if self._image_text is not None:  # the pruned decoder beside the unchanged vision tower and projector
            pruned = image_text_model(self._image_text, pruned)
        # the one place, after surgery
        pruned.config.pruning = _pruning_record(dense_parameters, pruned, plan, scores, architecture)
        self.pruned_model = pruned
        return pruned

    def _prune_settings(self, recipe: str, method: str, options, option_values: dict, tasks) -> "_PruneSettings":
        """The options `prune()` runs with (each given, else the recipe's or the method's), checked against each other,
        the method and this pruner's profile, tokenizer and calibration data; the profile narrowed to `tasks`."""
        options, scoring, applied, values = _resolved_options(recipe, method, options, option_values, "prune")
        score, bias_compensation = applied["score"], applied["bias_compensation"]
        reconstruct = bool(applied["reconstruct"])
        anchor_bos = bool(applied["anchor_bos"]) and reconstruct
        if options.anchor_bos and not reconstruct:
            raise ValueError(
                "`anchor_bos=True` constrains the least-squares reconstruction; it needs `reconstruct=True`."
            )
        # the token prompts start with: the tokenizer's BOS, or the config's where the pruner has no tokenizer
        source = self.tokenizer if self.tokenizer is not None else self.model.config
        bos_token_id = getattr(source, "bos_token_id", None)
        if anchor_bos and bos_token_id is None:
            raise ValueError(f"`anchor_bos=True` needs a BOS token; this pruner's {type(source).__name__} has none.")
        steps = applied["steps"] or 1
        if method != "diet" and (score != method or steps != 1):
            raise ValueError(f"`score` and `steps` belong to DIET; `method={method!r}` has its own scores.")
        if method == "diet" and score not in SCORE_KINDS:
            raise ValueError(f"`score` must be one of {SCORE_KINDS}, got {score!r}.")
        check_positive_int("steps", steps)
        if steps > 1 and "standardize" in (values["mlp_normalize"], values["head_normalize"]):
            raise ValueError("`steps` > 1 needs scores where removed units rank last; `standardize` does not.")
        scores = self._require_scores()
        if steps > 1:
            self._require_calibration(f"`steps={steps}` profiles again between steps", "`steps=1`")
        if reconstruct:
            self._require_calibration("`reconstruct=True` fits the kept output weights", "`reconstruct=False`")
        if tasks is not None:
            tasks = [tasks] if isinstance(tasks, str) else list(tasks)  # one name, as `profile()` takes it
            if not tasks:
                raise ValueError("`tasks` must name at least one profiled task, got an empty list.")
            scores = scores.select(tasks)
        if bias_compensation and scores.channel_stats is None:
            source = "passed" if options.bias_compensation else f"of recipe {recipe!r}"
            raise ValueError(
                f"`bias_compensation=True` ({source}) needs per-channel statistics, which this profile lacks: "
                "profile with `channel_stats=True` (the default), or pass `bias_compensation=False`."
            )
        return _PruneSettings(
            scoring, values, scores, score, bias_compensation, reconstruct, anchor_bos, steps, bos_token_id
        )

    def _stepped_plan(self, settings: "_PruneSettings", targets: dict) -> tuple[PruningPlan, ImportanceScores]:
        """The plan for `targets`, reached in `settings.steps` steps (re-profiled between them, each step's plan
        inside the last); returns it and the profile whose channel means the compensation biases take."""
        scores, steps = settings.scores, settings.steps
        norms = output_weight_norms(self.model) if settings.score == "contribution" else None
        current, channel_source, plan = settings.scoring.scores(self.model, scores), scores, None
        for step in range(1, steps + 1):
            ranked = weighted_scores(current, norms) if norms is not None else current
            scaled = {k: (None if v is None else v * step / steps) for k, v in targets.items()}
            previous, plan = plan, build_plan(ranked, self.model.config, **scaled, **settings.values)
            if previous is not None and not _nested(plan, previous):
                raise RuntimeError(f"Step {step} of iterative pruning kept a unit that an earlier step removed.")
            if step < steps:
                fill = channel_source.channel_means() if settings.bias_compensation else None
                current = self._reprofile(plan, list(scores.tasks), fill, previous=current)
                channel_source = current if settings.bias_compensation else channel_source
        return plan, channel_source

    def check_targets(
        self,
        *,
        sparsity: float | None = None,
        mlp_sparsity: float | None = None,
        attention_sparsity: float | None = None,
        recipe: str = DEFAULT_RECIPE,
        method: str = "diet",
        options: PruneOptions | None = None,
        **option_values,
    ) -> None:
        """Raises the `ValueError` that `prune()` with the same arguments would raise for a target out of reach of its
        options (every layer's MLP floor, whole `keep_layers`, one head per layer), before any profile.

        Checked on a plan of equal scores, so it needs no profile: where the options remove heads by their scores
        (`attention_ratio` > 0 with global allocation), how many heads a plan removes can differ a little with the
        scores, and `prune()` checks again.
        """
        *_, plan_values = _resolved_options(recipe, method, options, option_values, "check_targets")
        targets = {"sparsity": sparsity, "mlp_sparsity": mlp_sparsity, "attention_sparsity": attention_sparsity}
        check_sparsity_targets(**targets)
        config = self.model.config
        layers = config.num_hidden_layers
        equal = ImportanceScores(
            {"equal": torch.ones(layers, config.intermediate_size)},
            {"equal": torch.ones(layers, config.num_attention_heads)},
            {"model_type": config.model_type},
        )
        plan_values["task_weights"] = None  # task names of a profile not made yet
        build_plan(equal, config, **targets, **plan_values)

    def _require_dense(self, action: str) -> None:
        if self._consumed:
            raise RuntimeError(
                f"Cannot {action}: the dense model was pruned in place (`prune(inplace=True)`) and is gone. Load it "
                "again (`DietPruner.from_pretrained`) to profile or prune once more; the last pruned model is still "
                "here for `save_pretrained` / `push_to_hub`."
            )

    def _require_pruned(self, action: str):
        if self.pruned_model is None:
            raise RuntimeError(f"Nothing to {action}: call `prune()` first.")
        return self.pruned_model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        evaluation: dict | None = None,
        dense_evaluation: dict | None = None,
        text_evaluation: dict | None = None,
        dense_text_evaluation: dict | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """Saves the last pruned model with everything a published checkpoint carries, atomically: weights, config
        with `auto_map`, remote code, tokenizer, plan (`diet_pruning.json`) and model card (with the evaluation
        table when `evaluation` is given; beside the dense model's with `dense_evaluation`, and the average's
        paired-bootstrap interval when both were made with `return_predictions=True`; the perplexity of your
        held-out texts with `text_evaluation`, `{name: texts_perplexity(...)}`, beside the dense model's with
        `dense_text_evaluation`; `repo_id` names the repository in the card's usage snippet). See
        `diet_hf.hub.save_pruned_model`."""
        from .hub import save_pruned_model

        model = self._require_pruned("save")
        return save_pruned_model(
            model,
            save_directory,
            tokenizer=self.processor if self.processor is not None else self.tokenizer,
            plan=self.plan,
            evaluation=evaluation,
            dense_evaluation=dense_evaluation,
            text_evaluation=text_evaluation,
            dense_text_evaluation=dense_text_evaluation,
            repo_id=repo_id,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        commit_message: str = "Upload DIET-pruned model",
        token: str | None = None,
    ) -> str:
        """Uploads what `save_pretrained` writes to the Hub repository `repo_id` as one commit; returns its id.
        Pushing unchanged files creates no commit. `token`: the Hub token to write with (default: `HF_TOKEN`, else the
        login `hf auth login` saved)."""
        from .hub import push_pruned_model

        model = self._require_pruned("push")
        return push_pruned_model(
            model,
            repo_id,
            tokenizer=self.processor if self.processor is not None else self.tokenizer,
            plan=self.plan,
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
        )


def _moments_bytes(gib: float) -> int:
    return int(gib * 2**30)


class _PruneSettings(NamedTuple):
    """What `prune()` runs with, resolved and checked by `DietPruner._prune_settings`."""

    scoring: object  # the scoring method (`methods.ScoringMethod`)
    values: dict  # `build_plan`'s options
    scores: ImportanceScores  # the profile, narrowed to the tasks asked for
    score: str
    bias_compensation: bool
    reconstruct: bool
    anchor_bos: bool
    steps: int
    bos_token_id: int | None


# the options `prune()` applies itself; the rest of a resolved `PruneOptions` are `build_plan`'s
_NOT_PLAN_OPTIONS = ("score", "bias_compensation", "reconstruct", "anchor_bos", "steps")


def _resolved_options(recipe: str, method: str, options, option_values: dict, caller: str):
    """(the options as given, the scoring method, the values of the options `prune()` applies itself, those of
    `build_plan`'s): each given, else the recipe's or the method's."""
    options = with_overrides(PruneOptions, options, option_values, caller)
    scoring = get_method(method)
    values = options.resolved(recipe_options(recipe) if scoring.plan_options is None else method_options(scoring))
    applied = {name: values.pop(name) for name in _NOT_PLAN_OPTIONS}
    return options, scoring, applied, values


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
        # the image-text class whose text decoder was pruned (Gemma 3 from 4B up); None for a text model
        "base_model_architecture": architecture,
        # of an image-text base model: whether the pruned model keeps its vision tower and projector (unchanged)
        "vision_tower": ("kept" if is_image_text(pruned.config) else "dropped") if architecture else None,
        "tasks": scores.tasks,
        "num_samples": scores.provenance.get("num_samples"),
        # what each task's profile read: `num_samples` for a registered task (fewer where its data is short), every
        # text of your own (None: token batches)
        "samples_per_task": {
            task: len((scores.provenance.get("sample_ids") or {}).get(task, [])) or None for task in scores.tasks
        },
        "seed": scores.provenance.get("seed"),
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


def _nested(plan: PruningPlan, previous: PruningPlan) -> bool:
    """Whether every unit `plan` keeps was kept by `previous`."""
    pairs = (
        (plan.mlp_kept_indices, previous.mlp_kept_indices),
        (plan.head_kept_indices, previous.head_kept_indices),
    )
    return all(set(now) <= set(before) for kept, kept_before in pairs for now, before in zip(kept, kept_before))


class _ChannelMasks:
    """Context manager: forward pre-hooks on every layer's `down_proj` / `o_proj` that replace the input channels of
    the units `plan` removes by 0 (or by `fill`, `ImportanceScores.channel_means()`), as the pruned model sees them."""

    def __init__(self, model, family, plan: PruningPlan, fill: dict | None):
        self.model, self.family, self.plan, self.fill = model, family, plan, fill
        layers, d = plan.num_hidden_layers, plan.head_dim
        self.mlp_kept = torch.zeros(layers, plan.intermediate_size, dtype=torch.bool)
        self.head_kept = torch.zeros(layers, plan.num_attention_heads, dtype=torch.bool)
        for layer in range(layers):
            self.mlp_kept[layer, plan.mlp_kept_indices[layer]] = True
            self.head_kept[layer, plan.head_kept_indices[layer]] = True
        self.attn_kept = self.head_kept.repeat_interleave(d, dim=1)  # per o_proj input channel
        self.handles = []

    def _hook(self, kept: torch.Tensor, fill: torch.Tensor | None):
        def hook(module, args):
            x = args[0]
            keep = kept.to(x.device)
            replacement = torch.zeros((), dtype=x.dtype, device=x.device) if fill is None else fill.to(x)
            return (torch.where(keep, x, replacement), *args[1:])

        return hook

    def __enter__(self):
        for layer in range(self.plan.num_hidden_layers):
            for kind, template, kept in (
                ("mlp", self.family.mlp_down_proj, self.mlp_kept),
                ("attn", self.family.attn_o_proj, self.attn_kept),
            ):
                module = self.model.get_submodule(template.format(layer_idx=layer))
                fill = None if self.fill is None else self.fill[kind][layer]
                self.handles.append(module.register_forward_pre_hook(self._hook(kept[layer], fill)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _checked_token_batches(name: str, data) -> list:
    """`data` as a list of token batches, each a mapping with 2-D `input_ids` and `attention_mask` tensors of one
    shape (what a tokenizer returns with `return_tensors="pt"`); `TypeError` / `ValueError` naming the task and the
    batch otherwise."""
    batches = list(data)
    if not batches:
        raise ValueError(f"Custom task {name!r}: no token batches.")
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping) or not {"input_ids", "attention_mask"} <= set(batch):
            raise TypeError(
                f"Custom task {name!r}: token batch {i} must be a mapping with `input_ids` and `attention_mask` "
                f"tensors (a tokenizer's output with `return_tensors='pt'`), got {type(batch).__name__}; or pass "
                "a list of strings or a `datasets.Dataset` with a `text` column."
            )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if not (torch.is_tensor(ids) and torch.is_tensor(mask) and ids.dim() == 2 and ids.shape == mask.shape):
            shapes = [tuple(t.shape) if torch.is_tensor(t) else type(t).__name__ for t in (ids, mask)]
            raise ValueError(
                f"Custom task {name!r}: token batch {i} needs 2-D `input_ids` and `attention_mask` tensors of one "
                f"shape (batch, sequence), got {shapes[0]} and {shapes[1]}."
            )
    return batches


def _is_token_batches(data) -> bool:
    if isinstance(data, Task):  # your own multiple-choice task: its questions' texts
        return False
    if isinstance(data, (str, list, tuple)) and (not data or isinstance(data[0], str)):
        return False
    if hasattr(data, "column_names"):
        return False
    return True
