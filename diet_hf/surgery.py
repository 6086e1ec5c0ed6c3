"""Weight surgery: slice a dense Gemma model by a `PruningPlan` into a physically smaller pruned model."""

import copy

import torch
from torch import nn

from .constants import family_for_model_type
from .hub import modeling_module
from .plan import PruningPlan

__all__ = ["build_pruned_config", "build_pruned_model", "slice_linear_weight", "to_pruned_model"]


def slice_linear_weight(weight: torch.Tensor, kept: list[int], *, dim: int, block: int = 1) -> torch.Tensor:
    """Rows (`dim=0`) or columns (`dim=1`) of a `nn.Linear` weight, in blocks of `block` (a head's `head_dim`)."""
    index = torch.tensor([k * block + i for k in kept for i in range(block)], dtype=torch.long, device=weight.device)
    return weight.index_select(dim, index).contiguous()


def build_pruned_config(config, plan: PruningPlan, *, pruning: dict | None = None):
    """The pruned config of a dense Gemma config: global fields unchanged, per-layer sizes from `plan`."""
    family = family_for_model_type(config.model_type)
    config_class = getattr(modeling_module(), family.pruned_config_class)
    values = config.to_dict()
    for key in (
        "model_type",
        "architectures",
        "auto_map",
        "transformers_version",
        "quantization_config",
        "intermediate_size_per_layer",
        "num_attention_heads_per_layer",
        "num_key_value_heads_per_layer",
        "pruning",
    ):
        values.pop(key, None)
    pruned = config_class(
        intermediate_size_per_layer=plan.intermediate_size_per_layer,
        num_attention_heads_per_layer=plan.num_attention_heads_per_layer,
        num_key_value_heads_per_layer=plan.num_key_value_heads_per_layer,
        pruning=pruning,
        **values,
    )
    attn_implementation = getattr(config, "_attn_implementation", None) or "eager"
    if attn_implementation == "sdpa" and getattr(config, "attn_logit_softcapping", None) is not None:
        # sdpa cannot soft-cap attention logits (transformers 4.x still ran Gemma-2 that way); keep the exact path
        attn_implementation = "eager"
    pruned._attn_implementation = attn_implementation
    pruned.architectures = [family.pruned_causal_lm_class]
    return pruned


def _sliced_state_dict(model: nn.Module, plan: PruningPlan) -> dict[str, torch.Tensor]:
    state = dict(model.state_dict())
    d = plan.head_dim
    for layer_idx in range(plan.num_hidden_layers):
        mlp, heads, kv_heads = (
            plan.mlp_kept_indices[layer_idx],
            plan.head_kept_indices[layer_idx],
            plan.kv_head_kept_indices[layer_idx],
        )
        prefix = f"model.layers.{layer_idx}"
        mlp_keys = [f"{prefix}.mlp.{name}.weight" for name in ("gate_proj", "up_proj", "down_proj")]
        attn_keys = [
            f"{prefix}.self_attn.{name}.{kind}"
            for name in ("q_proj", "k_proj", "v_proj", "o_proj")
            for kind in ("weight", "bias")
        ]
        if not mlp:
            for key in mlp_keys:
                state.pop(key)
        elif len(mlp) < plan.intermediate_size:
            for key in mlp_keys[:2]:
                state[key] = slice_linear_weight(state[key], mlp, dim=0)
            state[mlp_keys[2]] = slice_linear_weight(state[mlp_keys[2]], mlp, dim=1)
        if not heads:
            for key in attn_keys:
                state.pop(key, None)
            for key in (f"{prefix}.self_attn.q_norm.weight", f"{prefix}.self_attn.k_norm.weight"):
                state.pop(key, None)
        elif len(heads) < plan.num_attention_heads or len(kv_heads) < plan.num_key_value_heads:
            for name, kept in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads)):
                for kind in ("weight", "bias"):
                    if (key := f"{prefix}.self_attn.{name}.{kind}") in state:
                        state[key] = slice_linear_weight(state[key], kept, dim=0, block=d)
            key = f"{prefix}.self_attn.o_proj.weight"
            state[key] = slice_linear_weight(state[key], heads, dim=1, block=d)
    return state


def build_pruned_model(model: nn.Module, plan: PruningPlan | None = None, *, pruning: dict | None = None) -> nn.Module:
    """Builds the pruned causal LM of a dense Gemma causal LM; weights not cut are shared, not copied.

    Args:
        model (`Gemma2ForCausalLM` or `Gemma3ForCausalLM`): the dense model (it stays usable; untouched tensors are
            shared with the result).
        plan (`PruningPlan`, *optional*): what to keep; `None` keeps everything (an unpruned pruned-format model).
        pruning (`dict`, *optional*): provenance stored as `config.pruning`.

    Returns:
        `PrunedGemma2ForCausalLM` or `PrunedGemma3ForCausalLM`, with the logits of the dense model whose removed MLP
        dimensions and heads are zeroed.
    """
    family = family_for_model_type(model.config.model_type)
    if model.config.model_type == family.pruned_model_type:
        raise ValueError(f"The model is already a `{family.pruned_model_type}` model; prune its dense base model.")
    plan = PruningPlan.keep_all(model.config) if plan is None else plan
    plan.check_compatible(model.config)
    config = build_pruned_config(model.config, plan, pruning=pruning)
    model_class = getattr(modeling_module(), family.pruned_causal_lm_class)
    with torch.device("meta"):
        pruned = model_class(config)
    state = _sliced_state_dict(model, plan)
    missing, unexpected = pruned.load_state_dict(state, strict=False, assign=True)
    missing = [key for key in missing if key != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"Surgery produced mismatched weights: missing {missing}, unexpected {unexpected}.")
    # Non-persistent buffers (RoPE frequencies, embedding scale) are not in the state dict: take the dense model's.
    for name, buffer in model.named_buffers():
        module_name, _, buffer_name = name.rpartition(".")
        target = pruned.get_submodule(module_name)
        if buffer_name in target._buffers:
            target._buffers[buffer_name] = buffer
    pruned.tie_weights()
    pruned.generation_config = copy.deepcopy(model.generation_config)
    pruned.diet_plan = plan  # written as diet_pruning.json by save_pretrained / push_to_hub (see diet_hf.hub)
    return pruned.eval() if not model.training else pruned


def to_pruned_model(model: nn.Module) -> nn.Module:
    """A stock `Gemma2ForCausalLM` / `Gemma3ForCausalLM` as an unpruned pruned-format model sharing its weights."""
    return build_pruned_model(model, None)
