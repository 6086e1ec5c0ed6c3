"""Scoring methods behind one small interface, registered by name: DIET (the default) and the baselines.

A method turns DIET's profile (per-task activation scores, with channel statistics) and the dense model into the
`ImportanceScores` a plan ranks, and names the plan options that make its allocation rule. `DietPruner.prune(method=)`
and `diet-hf prune --method` take any registered name; the model card names the method. Registering a new one is one
`register_method(ScoringMethod(...))` call.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from .baselines import BASELINE_PRUNE_OPTIONS, BASELINES, baseline_scores
from .importance import ImportanceScores

__all__ = ["METHODS", "PLAN_DEFAULTS", "ScoringMethod", "get_method", "method_options", "register_method"]


@dataclass(frozen=True)
class ScoringMethod:
    """One way of scoring MLP dimensions and heads.

    Args:
        name: the registry key (`method=` / `--method`).
        display_name: how the model card and the record name it.
        scores: `(model, profile) -> ImportanceScores`; `profile` is DIET's (it may be ignored).
        plan_options: the `PruneOptions` fields that make its allocation rule, over `PLAN_DEFAULTS` (`None` for DIET:
            its recipe's).
        bias_compensation: whether it comes with FLAP's bias compensation by default.
        paper: the reference printed with it, if any.
    """

    name: str
    display_name: str
    scores: Callable[..., ImportanceScores] = field(repr=False)
    plan_options: dict | None = None
    bias_compensation: bool = False
    paper: str | None = None


METHODS: dict[str, ScoringMethod] = {}
# What a method's `plan_options` do not set: one global ranking of raw scores, every unit kind at the same fraction.
PLAN_DEFAULTS = {
    "merge": "vote",
    "mlp_normalize": "none",
    "head_normalize": "none",
    "allocation": "global",
    "layer_sparsity_cap": None,
    "attention_ratio": 1.0,
    "keep_layers": None,
    "round_to": 1,
    "reconstruct": False,
}


def register_method(method: ScoringMethod) -> ScoringMethod:
    METHODS[method.name] = method
    return method


def method_options(method: ScoringMethod) -> dict:
    """The plan options of a non-DIET method: `PLAN_DEFAULTS`, its own, its score name and compensation default."""
    return {
        **PLAN_DEFAULTS,
        "score": method.name,
        "bias_compensation": method.bias_compensation,
        **(method.plan_options or {}),
    }


def get_method(name: str) -> ScoringMethod:
    if name not in METHODS:
        raise ValueError(f"`method` must be one of {tuple(METHODS)}, got {name!r}.")
    return METHODS[name]


register_method(ScoringMethod("diet", "DIET", lambda model, profile: profile, paper="arXiv:2603.23985"))
_DISPLAY = {"flap": "FLAP", "wanda_sp": "Wanda-sp", "magnitude": "magnitude", "random": "random"}
for _name in BASELINES:
    register_method(
        ScoringMethod(
            _name,
            _DISPLAY[_name],
            lambda model, profile, _n=_name: baseline_scores(_n, model, profile),
            plan_options=dict(BASELINE_PRUNE_OPTIONS[_name]),
            bias_compensation=_name == "flap",
        )
    )
