"""The pruning options as one frozen, validated object: `DietPruner.prune`, the `diet-hf prune` flags, the provenance
record and the model card's rows all come from the fields of `PruneOptions`. The profiling options likewise:
`ProfileOptions` (`DietPruner.profile`, the calibration flags of `diet-hf prune`, the profile's provenance).

Adding an option is one field here (with its help text, and `recipe=True` if named recipes set it) plus the code
that uses it (`plan.build_plan` for a plan option); the CLI flag, the record and the card follow. The README's table
is checked against the fields by a test.
"""

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import NamedTuple

from ._checks import check_positive_int, is_int_at_least
from .importance import ImportanceScores
from .methods import get_method, method_options
from .moments import MOMENTS_DTYPES
from .plan import ALLOCATIONS, MERGE_MODES, NORMALIZATIONS
from .recipes import SCORE_KINDS, recipe_options
from .tasks.registry import CALIBRATION_ANSWERS, DEFAULT_CALIBRATION_ANSWER

__all__ = ["ProfileOptions", "PruneOptions", "option", "with_overrides"]


def option(default, help_text: str, *, choices=None, recipe: bool = False, cli: str | None = None):
    """A dataclass field with its documentation. `choices`: allowed values (checked, and the CLI's choices);
    `recipe`: `None` means "the recipe's value"; `cli`: how the CLI parses it (`"pairs"`: NAME=VALUE words)."""
    metadata = {"help": help_text, "choices": choices, "recipe": recipe, "cli": cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class PruneOptions:
    """How `DietPruner.prune` scores and allocates, beyond the target (`sparsity`), the `recipe` and the `method`.

    Fields marked `recipe` default to `None`: the recipe's value (`diet_hf.recipes.RECIPES`). Validated on creation;
    `ValueError` names the field, what was expected and what came.
    """

    score: str | None = option(
        None,
        "unit score: 'activation' (mean |activation| per MLP dimension, mean head-output norm per head; the paper) "
        "or 'contribution' (the same times the norm of the unit's down_proj / o_proj columns)",
        choices=SCORE_KINDS,
        recipe=True,
    )
    merge: str | None = option(
        None, "merge of the per-task rankings: DIET's majority 'vote', or 'mean'", choices=MERGE_MODES, recipe=True
    )
    mlp_normalize: str | None = option(
        None,
        "MLP scores before ranking: 'none' (raw, global), 'layer' (divided by the layer's mean), 'standardize' "
        "(per-layer z-scores, FLAP)",
        choices=NORMALIZATIONS,
        recipe=True,
    )
    head_normalize: str | None = option(
        None, "head scores before ranking (as mlp_normalize)", choices=NORMALIZATIONS, recipe=True
    )
    allocation: str | None = option(
        None,
        "'global' (one ranking across layers: uneven widths) or 'uniform' (every layer the same width)",
        choices=ALLOCATIONS,
        recipe=True,
    )
    layer_sparsity_cap: float | None = option(
        None,
        "no layer loses more than this multiple (>= 1) of the global fraction of its MLP width or heads",
        recipe=True,
    )
    attention_ratio: float | None = option(
        None,
        "with sparsity: heads lose this multiple of it (1: the same fraction as the MLP width; 0: every head kept, "
        "the MLP width pays the whole budget)",
        recipe=True,
    )
    keep_layers: list[int] | None = option(
        None, "layers left whole (negative indices from the end); the others pay the whole budget", recipe=True
    )
    bias_compensation: bool | None = option(
        None,
        "FLAP's bias compensation: o_proj / down_proj biases hold the removed channels' mean contribution (needs the "
        "channel statistics profile() keeps by default)",
        recipe=True,
    )
    reconstruct: bool | None = option(
        None,
        "least-squares reconstruction: the kept down_proj / o_proj columns are updated so each cut layer's output "
        "matches the dense layer's on the calibration tokens (no gradients; one more pass over the calibration data "
        "of profile())",
        recipe=True,
    )
    anchor_bos: bool | None = option(
        None,
        "with reconstruct: the fit reproduces the BOS token's output exactly (position 0 sees only itself, so BOS "
        "is the same input at the start of every prompt, and the attention sink every later token reads; the plain "
        "fit weighs it as one calibration token among all); a recipe's value is ignored without reconstruct",
        recipe=True,
    )
    steps: int | None = option(
        None,
        "iterative pruning: reach the target in this many steps, re-profiling (no gradients) with the units removed "
        "so far masked",
        recipe=True,
    )
    task_weights: dict[str, float] | None = option(
        None, "per-task weights of votes and ranks (CLI: TASK=WEIGHT ...)", cli="pairs"
    )
    round_to: int | None = option(
        None,
        "per-layer MLP widths in multiples of this (matrix kernels run misaligned widths slower), holding the global "
        "budget; at most 1/16 of the MLP width is used",
        recipe=True,
    )
    min_mlp_fraction: float = option(0.05, "MLP width floor per layer (each layer also keeps at least one head)")
    allow_sublayer_removal: bool = option(
        False, "allow a layer to lose its whole MLP or attention (the residual passes through)"
    )

    def __post_init__(self):
        _check_choices(self)
        _check_number("layer_sparsity_cap", self.layer_sparsity_cap, low=1)
        _check_number("attention_ratio", self.attention_ratio, low=0)
        _check_number("min_mlp_fraction", self.min_mlp_fraction, low=0, high=1)
        for name in ("round_to", "steps"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        for name in ("bias_compensation", "reconstruct", "anchor_bos", "allow_sublayer_removal"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False, got {value!r}.")
        if self.keep_layers is not None:
            if isinstance(self.keep_layers, (str, int)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in self.keep_layers
            ):
                raise ValueError(f"`keep_layers` must be a list of layer indices, got {self.keep_layers!r}.")
            object.__setattr__(self, "keep_layers", list(self.keep_layers))
        if self.task_weights is not None:
            if not isinstance(self.task_weights, dict):
                raise ValueError(f"`task_weights` must be a dict of task name to weight, got {self.task_weights!r}.")
            for task, weight in self.task_weights.items():
                number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
                if not number or not math.isfinite(weight) or weight < 0:
                    raise ValueError(
                        f"`task_weights` must give each task a finite weight >= 0, got {task}={weight!r}."
                    )

    @classmethod
    def names(cls) -> list[str]:
        return [spec.name for spec in fields(cls)]

    def resolved(self, recipe_values: dict) -> dict:
        """Every option's value: the explicit ones, the recipe's (`recipe_values`) where `None`."""
        values = asdict(self)
        for spec in fields(self):
            if spec.metadata["recipe"] and values[spec.name] is None:
                values[spec.name] = recipe_values.get(spec.name, _default_of(spec))
        return values


@dataclass(frozen=True)
class ProfileOptions:
    """How `DietPruner.profile` draws and runs its calibration data (the data itself, its directory and the progress
    bar are arguments of the call). Validated on creation; `ValueError` names the field."""

    num_samples: int = option(
        100,
        "calibration examples per registered task (on Gemma 3 270M, the pruned model's KL to dense was 5% higher with "
        "50 than with 100, 16% with 25, 60% with 10: README)",
    )
    batch_size: int = option(8, "calibration texts per forward pass (right padding, ignored)")
    max_length: int = option(512, "calibration texts are truncated to this many tokens")
    seed: int = option(0, "seed of the calibration draw")
    calibration_answer: str = option(
        DEFAULT_CALIBRATION_ANSWER,
        "the answer each calibration text of a registered task (or of your own questions) ends in: 'any', one of the "
        "example's choices drawn from the task's name and the example's id, distractors included, as the evaluator "
        "reads them; or 'gold', the correct one (the paper's; the default before 2026-12-05). On Gemma 3 270M 'any' "
        "was +0.005 [-0.002, +0.011] on the seven-task dev average at 20% and +0.004 [-0.004, +0.011] at 40%: "
        "docs/choosing_the_default.md",
        choices=CALIBRATION_ANSWERS,
    )
    calibration_chat_template: bool = option(
        False,
        "the calibration texts of questions (the registered tasks' and your own) in the tokenizer's chat template, as "
        "evaluate(apply_chat_template=True) / eval --apply-chat-template scores them: the prompt as the user's "
        "message, the model's turn opened, then the answer; for an instruction-tuned model (plain texts and "
        "conversations are as they are either way)",
    )
    channel_stats: bool = option(
        True,
        "also keep per-input-channel sums of a and a^2 of down_proj / o_proj (bias compensation, Wanda-sp and FLAP "
        "need them)",
    )
    input_moments: bool = option(
        True,
        "also sum x and x x^T of every down_proj input over all the tasks' tokens in the same forward pass: the "
        "statistics of prune(reconstruct=True), kept in memory so that prune needs no second pass (0.17 GB for "
        "Gemma 3 270M; skipped above moments_memory_gib, where prune runs passes of its own; a plan that cuts heads "
        "has their o_proj moments summed by prune, once)",
    )
    moments_memory_gib: float = option(
        2.0,
        "GiB the reconstruction's input moments may take at once, on the model's device: where all the down_proj "
        "inputs' fit, the profile sums them in its own pass and keeps them for every prune; above it, prune sums "
        "the cut modules' in passes of at most this each, and keeps none (Gemma 3 1B's take 2.6 GB, Gemma-2 2B's "
        "4.5 GB, Gemma-2 9B's 17.6 GB: raise it where memory allows, and prune runs no extra pass)",
    )
    moments_dtype: str = option(
        "auto",
        "precision of the reconstruction's x x^T products, which are summed in float32 either way: 'bfloat16' "
        "(Gemma 3 270M's took 6.3 s instead of 11.6 s on 2 AVX512-BF16 cores, and its pruned model's KL to dense "
        "after dev prompts was the same to 4 digits at 20% and 40%), 'float32', or 'auto': bfloat16 where bfloat16 "
        "matmuls are fast (a CUDA GPU with bfloat16, a CPU with AVX512-BF16 or AMX), float32 elsewhere",
        choices=MOMENTS_DTYPES,
    )

    def __post_init__(self):
        _check_choices(self)
        for name in ("num_samples", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not is_int_at_least(self.max_length, 2):  # 1: every text cut to its BOS, the same state for all of them
            raise ValueError(
                f"`max_length` must be an integer >= 2 (BOS and at least one token of each text), got "
                f"{self.max_length!r}."
            )
        _check_number("moments_memory_gib", self.moments_memory_gib, low=0)
        if self.moments_memory_gib <= 0:
            raise ValueError(f"`moments_memory_gib` must be a number > 0, got {self.moments_memory_gib!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}.")
        for name in ("channel_stats", "input_moments"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")


def with_overrides(options_class, options, values: dict, caller: str):
    """`options` (an `options_class` instance, or `None` for the defaults) with the keyword `values` of `caller`
    applied and validated; `TypeError` names keywords that are no field of `options_class`."""
    if options is not None and not isinstance(options, options_class):
        raise TypeError(
            f"{caller}(options=) must be a `diet_hf.options.{options_class.__name__}`, got {type(options).__name__}"
            + (
                f": pass `{options_class.__name__}(**options)`, or the options as keywords."
                if isinstance(options, dict)
                else "."
            )
        )
    names = [spec.name for spec in fields(options_class)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {unknown}; its options are {names} "
            f"(`diet_hf.options.{options_class.__name__}`)."
        )
    return replace(options, **values) if options is not None else options_class(**values)


def _default_of(spec):
    return None if spec.default is MISSING else spec.default


def _check_choices(options) -> None:
    """Every field of `options` declared with `choices` holds one of them (or, in a `recipe` field, `None`: the
    recipe's value)."""
    for spec in fields(options):
        value, choices = getattr(options, spec.name), spec.metadata["choices"]
        if value is None and spec.metadata["recipe"]:
            continue
        if choices is not None and value not in choices:
            raise ValueError(f"`{spec.name}` must be one of {tuple(choices)}, got {value!r}.")


def _check_number(name, value, *, low=None, high=None):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (low is not None and not value >= low):
        raise ValueError(f"`{name}` must be a number >= {low}, got {value!r}.")
    if high is not None and not value <= high:
        raise ValueError(f"`{name}` must be a number in [{low}, {high}], got {value!r}.")


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
