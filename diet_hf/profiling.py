"""`DietPruner`'s profiling half: calibration data (registered tasks, your own texts, questions or token batches) run
through the dense model with the profiler's hooks into `ImportanceScores` and the reconstruction's moments; scores
saved and loaded; the profile run again under a plan's channel masks for iterative pruning."""

import contextlib
import functools
import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import torch

from ._batching import pad_id, pad_rows
from ._checks import OVERFLOW_HINT, check_path
from .calibration import calibration_sets, named_tasks, rendered_conversations
from .importance import ImportanceScores, load_profile
from .moments import (
    InputMoments,
    MomentSums,
    collect_input_moments,
    iter_input_moments,
    moment_widths,
    moments_product_dtype,
)
from .options import ProfileOptions, with_overrides
from .plan import PruningPlan
from .profiler import _ChannelMasks, collect_activation_stats
from .tasks import (
    PAPER_TASKS,
    TASKS,
    CalibrationSet,
    chat_calibration_request,
    check_chat_template,
    custom_calibration,
    load_calibration,
)

if TYPE_CHECKING:  # the class these methods belong to
    from .pruner import DietPruner

logger = logging.getLogger(__name__)


class _ProfilingMixin:
    """The profiling methods of `DietPruner` (`profile`, `save_scores`, `load_scores` and their helpers); the state
    they use is set by `DietPruner.__init__`."""

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
                `tasks.multiple_choice_task`, calibrated on each context and an answer as the registered tasks are,
                conversations, rendered by the tokenizer's chat template (`tasks.chat_text`): a list of message
                lists, each message a `{"role": ..., "content": ...}`, or a `datasets.Dataset` with a `messages`
                column and no `text`, or an iterable of token batches with `input_ids` and `attention_mask`).
            options (`ProfileOptions`, *optional*): the calibration options as one object; or give them as keywords
                (`num_samples=100`, `batch_size=8`, `max_length=512`, `seed=0`, `calibration_answer="any"`,
                `channel_stats=True`, `input_moments=True`, `moments_memory_gib=2.0`, `moments_dtype="auto"`), which
                override `options`. `calibration_answer` is the answer a question's calibration text ends in: `"any"`
                one of its choices, drawn from the task's name and the example's id (distractors too, as the
                evaluator reads every choice), `"gold"` the correct one (the paper's).
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
        named = {name: rendered_conversations(name, data, self.tokenizer) for name, data in named_tasks(tasks).items()}
        calibration = calibration_sets(named, options, data_dir, self._question_renderer(options))
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
            "gguf_file": self.gguf_file,
            "revision": getattr(self.model.config, "_commit_hash", None),
            "model_type": self.model.config.model_type,
            "tasks": list(calibration),
            "num_samples": options.num_samples,
            "max_length": options.max_length,
            "seed": options.seed,
            "calibration_answer": options.calibration_answer,
            "calibration_chat_template": options.calibration_chat_template,
            "sample_ids": sample_ids,
            "excluded_eval_ids": excluded,
            # where your own tasks' data was read, where known (`tasks.SourceTexts`): the record and the card's
            # `datasets` name a Hub dataset
            "sources": {n: d.source for n, d in calibration.items() if isinstance(d, CalibrationSet) and d.source},
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
            _check_finite_profile(name, mlp[name], heads[name])
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

    def _question_renderer(self, options):
        """`Task.calibration_text`'s `render` under `options.calibration_chat_template` (None without it): each
        question in the tokenizer's chat template (`tasks.chat_calibration_request`)."""
        if not options.calibration_chat_template:
            return None
        check_chat_template(self.tokenizer, "calibration_chat_template")
        return functools.partial(chat_calibration_request, self.tokenizer)

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

    def push_scores_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        commit_message: str = "Upload DIET profile",
        token: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Uploads the profile as `save_scores` writes it (your own tasks' texts beside it), with a card, to the Hub
        repository `repo_id` in one commit; returns the commit id (with `create_pr`, the pull request's URL).
        `load_scores(repo_id)` reads it back on any machine. Arguments as `diet_hf.hub.push_saved_model`'s."""
        scores = self._require_scores("`push_scores_to_hub()`")
        return scores.push_to_hub(
            repo_id,
            calibration_texts=self._custom_texts,
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
            create_pr=create_pr,
        )

    def load_scores(
        self,
        directory: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None = None,
        moments_memory_gib: float | None = None,
        moments_dtype: str | None = None,
        revision: str | None = None,
        token: str | None = None,
    ) -> "DietPruner":
        """Loads a saved profile after checking it was made for this model: a directory `save_scores` wrote, or a
        Hub repository `push_scores_to_hub` uploaded to (at `revision`, read with `token`).

        A later `prune()` that needs the calibration data (`reconstruct=True`, `steps` > 1) reads the texts of your
        own tasks saved beside the profile and draws the same examples of its registered tasks again (from
        `data_dir`, else `$DIET_DATA_DIR`, else the Hub), checking both against the profile's record; plain pruning
        runs no forward pass and reads no data. Token batches passed to `profile()` are not saved.
        `moments_memory_gib` and `moments_dtype` (`ProfileOptions`'s, defaults 2.0 and `"auto"`): the memory the
        reconstruction's input moments may take at once, in its passes over that data, and the precision of their
        x x^T products.
        """
        check_path("directory", directory)
        given = {"moments_memory_gib": moments_memory_gib, "moments_dtype": moments_dtype}
        checked = ProfileOptions(**{k: v for k, v in given.items() if v is not None})  # validated as the options are
        scores, texts = load_profile(directory, revision=revision, token=token)
        scores.check_compatible(self.model.config)
        profiled, loaded = scores.provenance.get("revision"), getattr(self.model.config, "_commit_hash", None)
        if profiled and loaded and profiled != loaded:  # the same shapes, perhaps other weights
            logger.warning(
                "These scores were made on %s at commit %s; this model (%s) is at commit %s. Where its weights "
                "changed, the plan follows scores of other weights: profile this revision again, or load the model "
                "at the profiled one (`revision=`).",
                scores.provenance.get("model_id"),
                profiled,
                self.model_id,
                loaded,
            )
        self.scores = scores
        self._calibration, self._moments, self._scores_data_dir = None, None, data_dir
        self._custom_texts = texts
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
                seed, count, answer = provenance["seed"], provenance["num_samples"], self.scores.calibration_answer
                render = self._question_renderer(ProfileOptions(calibration_chat_template=self.scores.chat_template))
                data[task] = load_calibration(
                    task, num_samples=count, seed=seed, data_dir=self._scores_data_dir, answer=answer, render=render
                )
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


def _moments_bytes(gib: float) -> int:
    return int(gib * 2**30)


def _check_finite_profile(task: str, mlp: torch.Tensor, heads: torch.Tensor) -> None:
    """Raises `ValueError` if a task's mean activations are not finite (scores of NaN would rank units arbitrarily
    and the reconstruction would write NaN weights), naming the first such layer."""
    for values, where in ((mlp, "`down_proj` inputs"), (heads, "`o_proj` inputs")):
        layers = (~torch.isfinite(values)).any(dim=-1).nonzero().flatten().tolist()
        if layers:
            more = f" (and of {len(layers) - 1} later layers)" if len(layers) > 1 else ""
            raise ValueError(
                f"Profiling {task!r}: the {where} of layer {layers[0]}{more} are not finite: {OVERFLOW_HINT}."
            )
