"""File names, supported model types and the per-architecture module-name table."""

from dataclasses import dataclass

__all__ = [
    "CONFIG_FILE",
    "FAMILIES",
    "PLAN_FILE",
    "PROFILE_SUBFOLDER",
    "REMOTE_CODE_FILES",
    "SCORES_META_FILE",
    "SCORES_TEXTS_FILE",
    "SCORES_WEIGHTS_FILE",
    "ModelFamily",
    "ModuleLayout",
    "family_for_model_type",
    "head_dim",
]

CONFIG_FILE = "config.json"
# what `PeftModel.save_pretrained` writes beside an adapter's weights: with no config.json beside it, a PEFT adapter
# saved alone, which transformers (and diet-hf, `loading.peft_adapter`) read as its base model with the adapter applied
ADAPTER_CONFIG_FILE = "adapter_config.json"
PLAN_FILE = "diet_pruning.json"
SCORES_WEIGHTS_FILE = "importance_scores.safetensors"
SCORES_META_FILE = "importance_scores.json"
# beside them: the calibration texts of the tasks you passed to `profile()` (registered tasks are drawn again instead)
SCORES_TEXTS_FILE = "calibration_texts.json"
# a pruned model saved with its profile (`save_pretrained(save_profile=True)`, `prune --include-profile`): the
# profile's files in this folder of the model's, read back by `load_scores(MODEL)` / `prune --scores MODEL`
PROFILE_SUBFOLDER = "diet_profile"
# The remote code shipped beside every checkpoint (both families). Checkpoints of diet-hf 0.1 ship the same code as
# `configuration_pruned_gemma2.py` / `modeling_pruned_gemma2.py`; they keep loading (their `auto_map` names those).
REMOTE_CODE_FILES = ("configuration_pruned_gemma.py", "modeling_pruned_gemma.py")
# `diet-hf export onnx --task`: optimum's export task -> the ONNX Runtime class that loads the result
ONNX_TASKS = {
    "text-generation-with-past": "ORTModelForCausalLM",
    "text-generation": "ORTModelForCausalLM",
    "text-classification": "ORTModelForSequenceClassification",
    "token-classification": "ORTModelForTokenClassification",
    "feature-extraction": "ORTModelForFeatureExtraction",
}


@dataclass(frozen=True)
class ModuleLayout:
    """Where a decoder layer keeps what DIET reads and cuts: the module names under `model.layers.{i}`."""

    layers: str = "model.layers"
    mlp: str = "mlp"
    attention: str = "self_attn"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"  # its input channels are the MLP dimensions
    query: str = "q_proj"
    key: str = "k_proj"
    value: str = "v_proj"
    output: str = "o_proj"  # its input channels are the heads' outputs
    qk_norms: tuple[str, ...] = ("q_norm", "k_norm")
    attention_input_norm: str = "input_layernorm"  # removed with the attention it feeds
    mlp_input_norm: str = "pre_feedforward_layernorm"  # removed with the MLP it feeds

    def mlp_path(self, layer_idx: int | str, proj: str) -> str:
        """`model.layers.{layer_idx}.mlp.{proj}` for one of `gate`, `up`, `down` (or the MLP itself for `""`)."""
        return ".".join(filter(None, (self.layers, str(layer_idx), self.mlp, getattr(self, proj) if proj else "")))

    def attention_path(self, layer_idx: int | str, proj: str) -> str:
        """The path of one of `query`, `key`, `value`, `output` (or the attention itself for `""`)."""
        parts = (self.layers, str(layer_idx), self.attention, getattr(self, proj) if proj else "")
        return ".".join(filter(None, parts))

    @property
    def attention_projection_names(self) -> tuple[str, ...]:
        """The module names of the attention's projections."""
        return tuple(getattr(self, role) for role in ("query", "key", "value", "output"))

    @property
    def mlp_projection_names(self) -> tuple[str, ...]:
        """The module names of the MLP's projections."""
        return tuple(getattr(self, role) for role in ("gate", "up", "down"))

    @property
    def projection_names(self) -> tuple[str, ...]:
        """The module names of every projection (PEFT's `target_modules`)."""
        return self.attention_projection_names + self.mlp_projection_names


@dataclass(frozen=True)
class ModelFamily:
    """Every per-family fact in one place: how a stock architecture maps to its pruned classes, where DIET reads and
    cuts, what its ONNX export and model card name, and what its parameter count includes. A new family is one entry
    here plus its classes in the remote code (`modeling/`)."""

    name: str
    dense_model_type: str
    pruned_model_type: str
    pruned_config_class: str
    pruned_causal_lm_class: str
    dense_causal_lm_class: str  # the stock class the ONNX export's config.json names (text generation)
    # the stock classes an ONNX export's config.json names for its other tasks (none: transformers has no such class)
    dense_base_model_class: str | None = None  # feature extraction
    dense_sequence_classifier_class: str | None = None
    dense_token_classifier_class: str | None = None
    license: str | None = None  # the base model's license tag on the model card
    qk_norms: bool = False  # per-layer q_norm / k_norm weights of head_dim (Gemma 3), counted as parameters
    layout: ModuleLayout = ModuleLayout()  # module names (surgery, profiler hooks, baselines, LoRA targets)

    @property
    def mlp_down_proj(self) -> str:
        """`down_proj`'s path with a `{layer_idx}` field (the profiler's hook point)."""
        return self.layout.mlp_path("{layer_idx}", "down")

    @property
    def attn_o_proj(self) -> str:
        """`o_proj`'s path with a `{layer_idx}` field."""
        return self.layout.attention_path("{layer_idx}", "output")


FAMILIES = (
    ModelFamily(
        "gemma2",
        "gemma2",
        "pruned_gemma2",
        "PrunedGemma2Config",
        "PrunedGemma2ForCausalLM",
        "Gemma2ForCausalLM",
        dense_base_model_class="Gemma2Model",
        dense_sequence_classifier_class="Gemma2ForSequenceClassification",
        dense_token_classifier_class="Gemma2ForTokenClassification",
        license="gemma",
    ),
    ModelFamily(
        "gemma3_text",
        "gemma3_text",
        "pruned_gemma3_text",
        "PrunedGemma3TextConfig",
        "PrunedGemma3ForCausalLM",
        "Gemma3ForCausalLM",
        dense_base_model_class="Gemma3TextModel",
        dense_sequence_classifier_class="Gemma3TextForSequenceClassification",
        license="gemma",
        qk_norms=True,
    ),
)


def head_dim(config) -> int:
    """Per-head width of a Gemma config: `head_dim`, or `hidden_size / num_attention_heads` where it is unset."""
    return getattr(config, "head_dim", None) or config.hidden_size // base_sizes(config)[1]


def block_parameters(hidden_size: int, head_dim: int, width: int, heads: int, kv_heads: int) -> int:
    """Attention + MLP parameters of one decoder layer: gate, up and down projections of `width`, query and output
    projections of `heads`, key and value projections of `kv_heads` (norms and biases not counted)."""
    return 3 * hidden_size * width + 2 * hidden_size * head_dim * (heads + kv_heads)


def base_sizes(config) -> tuple[int, int, int]:
    """`intermediate_size`, `num_attention_heads`, `num_key_value_heads` of the base (dense) model: a dense config's
    own, a pruned config's global values (read without transformers' warning on global reads of per-layer sizes)."""
    read = getattr(config, "base_model_size", None) or (lambda name: getattr(config, name))
    return read("intermediate_size"), read("num_attention_heads"), read("num_key_value_heads")


def layer_sizes(config, layer_idx: int) -> tuple[int, int, int]:
    """Layer `layer_idx`'s MLP width, query heads and KV heads: a pruned config's `per_layer_config[layer_idx]`, or the
    global sizes where no layer differs (a dense config)."""
    if not getattr(config, "is_heterogeneous", False):
        return base_sizes(config)
    layer = config.per_layer_config[layer_idx]
    return layer.intermediate_size, layer.num_attention_heads, layer.num_key_value_heads


def family_for_model_type(model_type: str) -> ModelFamily:
    """Returns the family of a dense or pruned `model_type`; `ValueError` names the supported ones."""
    for family in FAMILIES:
        if model_type in (family.dense_model_type, family.pruned_model_type):
            return family
    supported = sorted({t for f in FAMILIES for t in (f.dense_model_type, f.pruned_model_type)})
    raise ValueError(f"Unsupported `model_type` {model_type!r}; diet-hf supports {', '.join(supported)}.")
