"""Structure and parameter counts of a (pruned or dense) Gemma checkpoint, read from its config alone."""

from transformers import AutoConfig

from .constants import family_for_model_type

__all__ = ["count_parameters", "describe_checkpoint"]


def _layer_sizes(config, layer_idx: int) -> tuple[int, int, int]:
    if hasattr(config, "layer_intermediate_size"):
        return (
            config.layer_intermediate_size(layer_idx),
            config.layer_num_attention_heads(layer_idx),
            config.layer_num_key_value_heads(layer_idx),
        )
    return config.intermediate_size, config.num_attention_heads, config.num_key_value_heads


def count_parameters(config, *, dense: bool = False) -> dict[str, int]:
    """Parameters of the model a config describes: total and decoder-block attention + MLP.

    Args:
        dense (`bool`, *optional*): count the unpruned base model (the global sizes) instead.
    """
    h = config.hidden_size
    d = getattr(config, "head_dim", None) or h // config.num_attention_heads
    qk_norms = config.model_type in ("gemma3_text", "pruned_gemma3_text")
    blocks = norms = 0
    for layer_idx in range(config.num_hidden_layers):
        width, heads, kv_heads = (
            (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads)
            if dense
            else _layer_sizes(config, layer_idx)
        )
        blocks += 3 * h * width + 2 * h * d * (heads + kv_heads)
        norms += 4 * h + (2 * d if qk_norms and heads else 0)
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return {"total": blocks + norms + embeddings + h, "decoder_blocks": blocks}


def describe_checkpoint(model_id_or_path: str, *, revision: str | None = None) -> dict:
    """Per-layer sizes, parameter counts and pruning provenance of a local directory or Hub repository."""
    config = AutoConfig.from_pretrained(model_id_or_path, revision=revision)
    family_for_model_type(config.model_type)
    layers = []
    for layer_idx in range(config.num_hidden_layers):
        width, heads, kv_heads = _layer_sizes(config, layer_idx)
        layers.append(
            {
                "layer": layer_idx,
                "type": config.layer_types[layer_idx],
                "intermediate_size": width,
                "num_attention_heads": heads,
                "num_key_value_heads": kv_heads,
            }
        )
    counts, base = count_parameters(config), count_parameters(config, dense=True)
    return {
        "model_type": config.model_type,
        "num_hidden_layers": config.num_hidden_layers,
        "layers": layers,
        "parameters": {
            "total": counts["total"],
            "decoder_blocks": counts["decoder_blocks"],
            "base_total": base["total"],
            "base_decoder_blocks": base["decoder_blocks"],
        },
        "pruning": getattr(config, "pruning", None),
    }
