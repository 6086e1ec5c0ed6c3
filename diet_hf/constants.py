"""File names, supported model types and the per-architecture module-name table."""

from dataclasses import dataclass

__all__ = [
    "CONFIG_FILE",
    "FAMILIES",
    "PLAN_FILE",
    "REMOTE_CODE_FILES",
    "SCORES_META_FILE",
    "SCORES_WEIGHTS_FILE",
    "ModelFamily",
    "family_for_model_type",
]

CONFIG_FILE = "config.json"
PLAN_FILE = "diet_pruning.json"
SCORES_WEIGHTS_FILE = "importance_scores.safetensors"
SCORES_META_FILE = "importance_scores.json"
REMOTE_CODE_FILES = ("configuration_pruned_gemma2.py", "modeling_pruned_gemma2.py")


@dataclass(frozen=True)
class ModelFamily:
    """How one stock architecture maps to its pruned classes and where DIET reads and cuts."""

    name: str
    dense_model_type: str
    pruned_model_type: str
    pruned_config_class: str
    pruned_causal_lm_class: str
    mlp_down_proj: str = "model.layers.{layer_idx}.mlp.down_proj"
    attn_o_proj: str = "model.layers.{layer_idx}.self_attn.o_proj"


FAMILIES = (
    ModelFamily("gemma2", "gemma2", "pruned_gemma2", "PrunedGemma2Config", "PrunedGemma2ForCausalLM"),
    ModelFamily(
        "gemma3_text", "gemma3_text", "pruned_gemma3_text", "PrunedGemma3TextConfig", "PrunedGemma3ForCausalLM"
    ),
)


def family_for_model_type(model_type: str) -> ModelFamily:
    """Returns the family of a dense or pruned `model_type`; `ValueError` names the supported ones."""
    for family in FAMILIES:
        if model_type in (family.dense_model_type, family.pruned_model_type):
            return family
    supported = sorted({t for f in FAMILIES for t in (f.dense_model_type, f.pruned_model_type)})
    raise ValueError(f"Unsupported `model_type` {model_type!r}; diet-hf supports {', '.join(supported)}.")
