"""`DietPruner`: load a dense Gemma model, profile it on tasks, prune it by the merged per-task scores (a recipe)."""

import logging
import os
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from ._checks import check_positive_int
from ._io import check_model_location, check_tokenizer_files, is_local_location
from .constants import family_for_model_type
from .importance import ImportanceScores
from .info import _pruning_record, _record_options
from .loading import (
    gguf_commit,
    hub_keywords,
    image_text_model,
    is_image_text,
    load_pretrained,
    load_processor,
    load_tokenizer,
    read_config,
    text_causal_lm,
    text_config,
)
from .methods import METHODS as SCORING_METHODS
from .moments import (
    InputMoments,
    first_token_inputs,
)
from .options import ProfileOptions, PruneOptions, _PruneSettings, _resolved_options
from .plan import PruningPlan, build_plan, check_sparsity_targets
from .profiling import _moments_bytes, _ProfilingMixin
from .recipes import DEFAULT_RECIPE, SCORE_KINDS, output_weight_norms, weighted_scores
from .surgery import (
    PRUNING_CUTS_BASE_WEIGHTS,
    build_pruned_model,
    check_no_adapters,
    check_prunable_weights,
    gguf_file_of,
    is_quantized,
    offloaded_weights,
)

__all__ = ["DietPruner"]


logger = logging.getLogger(__name__)


METHODS = tuple(SCORING_METHODS)  # "diet" and the baselines (`diet_hf.methods`)


def _check_tokenizer_type(tokenizer) -> None:
    """`ValueError` unless `tokenizer` is None or a transformers tokenizer (an image-text model's processor goes in
    `processor=`)."""
    if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ValueError(f"`tokenizer` must be a transformers tokenizer, got {type(tokenizer).__name__}.")


class DietPruner(_ProfilingMixin):
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
        _check_tokenizer_type(tokenizer)
        if not hasattr(model, "config"):
            raise TypeError(
                f"`model` must be a transformers Gemma-2 / Gemma 3 model (a `PreTrainedModel`), got "
                f"{type(model).__name__}."
            )
        # a `PeftModel` wrapper too, before its class is read as Gemma's
        check_no_adapters(model, "model", PRUNING_CUTS_BASE_WEIGHTS)
        source = model
        model = text_causal_lm(model)
        # the image-text model whose vision tower and projector the pruned model keeps (None: a text model, or
        # `text_only`)
        self._image_text = source if source is not model and not text_only else None
        self.processor = processor if self._image_text is not None else None
        self.family = family_for_model_type(getattr(model.config, "model_type", type(model).__name__))
        if model.config.model_type == self.family.pruned_model_type:
            base = (getattr(model.config, "pruning", None) or {}).get("base_model")
            raise ValueError(
                f"`model` is already pruned (`model_type` {model.config.model_type!r}); pass the dense "
                f"`{self.family.dense_model_type}` model"
                + (
                    f" it was pruned from, {base} (`load_scores` reads the profile a pruned model was saved with, to "
                    "prune that model again at another sparsity)."
                    if base
                    else "."
                )
            )
        _warn_about_weights(source)
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or None
        # the GGUF file in `model_id` the model was read from (`from_pretrained(gguf_file=)`), recorded beside it
        self.gguf_file = gguf_file_of(source)
        self.scores: ImportanceScores | None = None
        self.plan: PruningPlan | None = None
        self.pruned_model = None  # the model the last `prune()` returned, for `save_pretrained` / `push_to_hub`
        self._pruned_from = None  # (the scores it was pruned from, your tasks' texts among them), for `save_profile`
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
        cls,
        model_id_or_path: str | os.PathLike,
        *,
        text_only: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
        **from_pretrained_kwargs,
    ) -> "DietPruner":
        """Loads a dense model and its tokenizer (and an image-text model's processor); the `model_type` is checked
        before any weight is read.

        Args:
            model_id_or_path (`str` or `os.PathLike`): Hub id or local directory of a Gemma-2 / Gemma 3 model; of an
                image-text Gemma 3 (4B and up) the text decoder is pruned and the vision tower kept unchanged.
            text_only (`bool`, *optional*, defaults to `False`): of an image-text model, load and prune its text
                model alone; the pruned checkpoint has no vision tower.
            tokenizer (`PreTrainedTokenizerBase`, *optional*): this model's tokenizer, already loaded (e.g. to render
                your calibration texts in its chat template), used instead of loading it again (of a GGUF file, a
                parse of its metadata: 20 s on the 270M).
            from_pretrained_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (`dtype`, `device_map`, ...).
                `gguf_file`, as in transformers: the model is read from that GGUF file in the directory or
                repository (its weights dequantized to float on load, its tokenizer from the file; transformers'
                GGUF reader needs the `gguf` package), pruned like any other, and saved as an ordinary checkpoint;
                the record and the card name the file. `subfolder`, as in transformers, of a local directory: the
                checkpoint in that folder of it, which the record names (of a Hub repository it is refused: download
                the folder and pass its path).
        """
        if not isinstance(text_only, bool):
            raise ValueError(f"`text_only` must be a bool, got {text_only!r}.")
        _check_tokenizer_type(tokenizer)
        subfolder = from_pretrained_kwargs.pop("subfolder", None)
        if subfolder:  # transformers' keyword: the checkpoint in a folder of the directory or repository
            if not is_local_location(model_id_or_path):
                raise ValueError(
                    f"`subfolder` is supported for a local directory only; {model_id_or_path} is read as a Hub "
                    "repository, whose record and card could not name the folder. Download it "
                    f"(`huggingface_hub.snapshot_download({str(model_id_or_path)!r}, allow_patterns="
                    f"'{subfolder}/*')`) and pass the folder's path."
                )
            model_id_or_path = Path(os.fspath(model_id_or_path)).expanduser() / subfolder  # what the record names
        gguf_file = from_pretrained_kwargs.get("gguf_file")
        check_model_location(model_id_or_path, "model_id_or_path", gguf_file=gguf_file)
        hub_kwargs = hub_keywords(from_pretrained_kwargs)
        config = read_config(model_id_or_path, **hub_kwargs)
        family_for_model_type(text_config(config).model_type)  # refuse unsupported models before loading weights
        model = load_pretrained(model_id_or_path, config, **from_pretrained_kwargs)
        if text_only:  # the image-text model's vision tower is freed here
            model = text_causal_lm(model)
        try:
            if tokenizer is None and gguf_file is None:  # a GGUF file holds its tokenizer
                check_tokenizer_files(model_id_or_path, "model_id_or_path")
        except ValueError as error:  # profiling custom token batches needs no tokenizer; registered tasks say so
            logger.warning("%s The pruner has no tokenizer.", error)
        else:
            if tokenizer is None:
                tokenizer = load_tokenizer(model_id_or_path, config, **hub_kwargs)
        processor = load_processor(model_id_or_path, **hub_kwargs) if is_image_text(model.config) else None
        if gguf_file is not None and getattr(model.config, "_commit_hash", None) is None:
            keywords = ("revision", "token", "gguf_file", "cache_dir", "local_files_only")
            model.config._commit_hash = gguf_commit(model_id_or_path, **{k: hub_kwargs.get(k) for k in keywords})
        pruner = cls(model.eval(), tokenizer, model_id=str(model_id_or_path), processor=processor)
        if gguf_file is not None:  # read dequantized, the model keeps no GGUF quantization config that would name it
            pruner.gguf_file = os.fspath(gguf_file)
        return pruner

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
        check_prunable_weights(self._image_text or self.model)  # before the plan and any pass
        settings = self._prune_settings(recipe, method, options, option_values, tasks)
        targets = {"sparsity": sparsity, "mlp_sparsity": mlp_sparsity, "attention_sparsity": attention_sparsity}
        check_sparsity_targets(**targets)  # before the steps scale them
        plan, channel_source = self._stepped_plan(settings, targets)
        products = self._product_dtype() if settings.reconstruct else None
        _record_options(plan, settings, method, recipe, targets, products)
        channel_means = None
        if settings.bias_compensation:
            channel_means = (channel_source if method == "diet" else self.scores).channel_means()
        # the previous pruned model is not kept past this point, so that it can be freed before surgery builds the
        # next one (unless the caller holds it): Gemma-2 2B's pruned weights take 5 GB in float32
        self.pruned_model = None
        self.pruned_model = self._surgery(plan, settings, channel_means, disable_progress, inplace)
        return self.pruned_model

    def _surgery(self, plan: PruningPlan, settings: _PruneSettings, channel_means, disable_progress, inplace):
        """Cuts the dense model by `plan` (reconstruction moments and BOS anchors first) and records the result."""
        scores = settings.scores
        moments = None
        if settings.reconstruct:
            moments = self._input_moments(plan, list(scores.tasks), disable_progress, inplace)
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
        texts = {task: texts for task, texts in self._custom_texts.items() if task in scores.tasks}
        self._pruned_from = (scores, texts)
        return pruned

    def _prune_settings(self, recipe: str, method: str, options, option_values: dict, tasks) -> _PruneSettings:
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

    def _stepped_plan(self, settings: _PruneSettings, targets: dict) -> tuple[PruningPlan, ImportanceScores]:
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
        scores, and `prune()` checks again. Also raises the `ValueError` of a model whose weights are offloaded
        (`device_map` with "cpu" or "disk" modules) or quantized, which `prune()` cannot cut.
        """
        check_prunable_weights(self._image_text or self.model)
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

    def _profile_to_save(self, save_profile: bool) -> dict:
        """`save_pruned_model`'s `profile` and `profile_texts` for `save_profile`: the scores of the last prune."""
        if not isinstance(save_profile, bool):
            raise ValueError(f"`save_profile` must be a bool, got {save_profile!r}.")
        if not save_profile:
            return {}
        scores, texts = self._pruned_from
        return {"profile": scores, "profile_texts": texts}

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        evaluation: dict | None = None,
        dense_evaluation: dict | None = None,
        text_evaluation: dict | None = None,
        dense_text_evaluation: dict | None = None,
        repo_id: str | None = None,
        max_shard_size: int | str | None = None,
        save_profile: bool = False,
    ) -> Path:
        """Saves the last pruned model with everything a published checkpoint carries, atomically: weights, config
        with `auto_map`, remote code, tokenizer, plan (`diet_pruning.json`) and model card (with the evaluation
        table when `evaluation` is given; beside the dense model's with `dense_evaluation`, and the average's
        paired-bootstrap interval when both were made with `return_predictions=True`; the perplexity of your
        held-out texts with `text_evaluation`, `{name: texts_perplexity(...)}`, beside the dense model's with
        `dense_text_evaluation`; `repo_id` names the repository in the card's usage snippet). `max_shard_size`
        (e.g. `"2GB"`): the largest weight file, as in transformers' `save_pretrained`. `save_profile`: also write
        the profile the model was pruned from (as `save_scores` writes it; the tasks it was pruned on) into its
        folder `diet_profile`, so that `load_scores(save_directory)` / `diet-hf prune BASE --scores save_directory`
        prunes the base model again at another sparsity with no profiling pass (it holds the texts of your own tasks:
        publish it only where they may be public). See
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
            max_shard_size=max_shard_size,
            **self._profile_to_save(save_profile),
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        evaluation: dict | None = None,
        dense_evaluation: dict | None = None,
        text_evaluation: dict | None = None,
        dense_text_evaluation: dict | None = None,
        max_shard_size: int | str | None = None,
        save_profile: bool = False,
        private: bool = False,
        revision: str | None = None,
        commit_message: str = "Upload DIET-pruned model",
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Uploads what `save_pretrained` writes to the Hub repository `repo_id` as one commit; returns its id.
        `evaluation`, `dense_evaluation`, `text_evaluation` and `dense_text_evaluation` go into the card, and
        `max_shard_size` sizes the weight files and `save_profile` adds the profile, as in `save_pretrained`.
        Pushing unchanged files creates no commit.
        `token`: the Hub token to write with (default: `HF_TOKEN`, else the login `hf auth login` saved).
        `create_pr`: open a pull request against the main branch with the commit instead (returns its URL), as
        transformers' `push_to_hub(create_pr=True)`."""
        from .hub import push_pruned_model

        model = self._require_pruned("push")
        return push_pruned_model(
            model,
            repo_id,
            tokenizer=self.processor if self.processor is not None else self.tokenizer,
            plan=self.plan,
            evaluation=evaluation,
            dense_evaluation=dense_evaluation,
            text_evaluation=text_evaluation,
            dense_text_evaluation=dense_text_evaluation,
            max_shard_size=max_shard_size,
            **self._profile_to_save(save_profile),
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
            create_pr=create_pr,
        )


def _nested(plan: PruningPlan, previous: PruningPlan) -> bool:
    """Whether every unit `plan` keeps was kept by `previous`."""
    pairs = (
        (plan.mlp_kept_indices, previous.mlp_kept_indices),
        (plan.head_kept_indices, previous.head_kept_indices),
    )
    return all(set(now) <= set(before) for kept, kept_before in pairs for now, before in zip(kept, kept_before))


def _warn_about_weights(model) -> None:
    """Warns, when a pruner is made, about weights that `profile()` or `prune()` will refuse: float16 (Gemma's
    activations overflow it), quantized or offloaded (`prune()` cuts full-precision weights in memory)."""
    if any(parameter.dtype == torch.float16 for parameter in model.parameters()):
        logger.warning(
            "The model is in float16: Gemma's activations can exceed its range (Gemma 3 270M's do on ordinary text), "
            "and `profile()` stops with an error where they do. bfloat16 or float32 are safe."
        )
    if is_quantized(model):
        logger.warning(
            "The model is quantized: `prune()` needs its full-precision weights (load it in bfloat16 or float32)."
        )
    offloaded = offloaded_weights(model)
    if offloaded:
        logger.warning(
            '%d weights of the model are offloaded (a `device_map` with "cpu" or "disk" modules): `profile()` '
            "works, `prune()` needs every weight in memory (`save_scores` the profile and prune where it fits).",
            len(offloaded),
        )
