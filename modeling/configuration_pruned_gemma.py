# Configurations of structurally pruned Gemma-2 and Gemma 3 (text) models, written by diet-hf.
#
# Self-contained remote code: imports only the standard library and transformers, so that
# `AutoConfig.from_pretrained(repo, trust_remote_code=True)` works without diet-hf installed.
# Tested with transformers 4.57.6 and 5.24.0 (pyproject.toml pins the same range).
from transformers import Gemma2Config, Gemma3TextConfig


class _PerLayerSizesMixin:
    """Per-layer MLP widths and head counts on top of a stock Gemma config; the global fields stay the base model's."""

    # Auto class -> model class name in `modeling_pruned_gemma.py`; written into `config.json` as `auto_map`.
    _auto_map_models = {}

    def _init_per_layer(
        self,
        intermediate_size_per_layer,
        num_attention_heads_per_layer,
        num_key_value_heads_per_layer,
        pruning,
        o_proj_bias,
        down_proj_bias,
    ):
        self.intermediate_size_per_layer = _as_int_list(intermediate_size_per_layer)
        self.num_attention_heads_per_layer = _as_int_list(num_attention_heads_per_layer)
        self.num_key_value_heads_per_layer = _as_int_list(num_key_value_heads_per_layer)
        self.pruning = pruning
        for name, value in (("o_proj_bias", o_proj_bias), ("down_proj_bias", down_proj_bias)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}.")
        self.o_proj_bias = o_proj_bias
        self.down_proj_bias = down_proj_bias

    def _finish_per_layer(self):
        self.validate_per_layer_sizes()
        # The module names of the file this class was loaded from: `configuration_pruned_gemma` (diet-hf >= 0.2, and
        # in-process), or `configuration_pruned_gemma2` when a checkpoint of an earlier version ran its own copy.
        config_module = type(self).__module__.rsplit(".", 1)[-1]
        modeling_module = config_module.replace("configuration_", "modeling_", 1)
        auto_map = {"AutoConfig": f"{config_module}.{type(self).__name__}"}
        auto_map.update({key: f"{modeling_module}.{name}" for key, name in self._auto_map_models.items()})
        ours = {"AutoConfig", *self._auto_map_models}
        earlier = {k: v for k, v in (getattr(self, "auto_map", None) or {}).items() if k not in ours}
        self.auto_map = {**auto_map, **earlier}

    def validate_per_layer_sizes(self):
        """Raises `ValueError` naming the field and the layer when the per-layer lists are inconsistent."""
        num_layers = self.num_hidden_layers
        for name in ("intermediate_size_per_layer", "num_attention_heads_per_layer", "num_key_value_heads_per_layer"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != num_layers:
                raise ValueError(
                    f"`{name}` must have one entry per layer (`num_hidden_layers`={num_layers}), got {len(values)}."
                )
            for layer_idx, value in enumerate(values):
                if value < 0:
                    raise ValueError(f"`{name}`[{layer_idx}] must be >= 0, got {value} (layer {layer_idx}).")
        for layer_idx in range(num_layers):
            heads = self.layer_num_attention_heads(layer_idx)
            kv_heads = self.layer_num_key_value_heads(layer_idx)
            if kv_heads == 0 and heads > 0:
                raise ValueError(
                    f"Layer {layer_idx}: {heads} query heads but 0 KV heads in `num_key_value_heads_per_layer`; "
                    "a layer with query heads needs at least one KV head."
                )
            if kv_heads > 0 and heads == 0:
                raise ValueError(
                    f"Layer {layer_idx}: {kv_heads} KV heads but 0 query heads in `num_attention_heads_per_layer`; "
                    "KV heads without query heads must be removed too."
                )
            if kv_heads > 0 and heads % kv_heads != 0:
                raise ValueError(
                    f"Layer {layer_idx}: {heads} query heads (`num_attention_heads_per_layer`) do not split into "
                    f"{kv_heads} KV groups (`num_key_value_heads_per_layer`); query heads must be a multiple of KV "
                    "heads."
                )

    def layer_intermediate_size(self, layer_idx: int) -> int:
        """MLP width of layer `layer_idx` (0 means the MLP is removed)."""
        return _pick(self.intermediate_size_per_layer, layer_idx, self.intermediate_size)

    def layer_num_attention_heads(self, layer_idx: int) -> int:
        """Query heads of layer `layer_idx` (0 means the attention is removed)."""
        return _pick(self.num_attention_heads_per_layer, layer_idx, self.num_attention_heads)

    def layer_num_key_value_heads(self, layer_idx: int) -> int:
        """KV heads of layer `layer_idx`."""
        return _pick(self.num_key_value_heads_per_layer, layer_idx, self.num_key_value_heads)


def _as_int_list(values):
    return None if values is None else [int(value) for value in values]


def _pick(values, layer_idx, default):
    return default if values is None else values[layer_idx]


class PrunedGemma2Config(_PerLayerSizesMixin, Gemma2Config):
    r"""
    Configuration of a Gemma-2 model whose decoder layers have their own MLP widths and attention head counts.
    All other arguments are those of [`Gemma2Config`]; its global sizes keep the unpruned base model's values.

    Args:
        intermediate_size_per_layer (`list[int]`, *optional*):
            MLP width of every layer; 0 removes a layer's MLP. `None` means `intermediate_size` everywhere.
        num_attention_heads_per_layer (`list[int]`, *optional*):
            Query heads of every layer; 0 removes a layer's attention. `None` means `num_attention_heads` everywhere.
        num_key_value_heads_per_layer (`list[int]`, *optional*):
            KV heads of every layer; each layer's query heads must be a multiple of them.
        pruning (`dict`, *optional*):
            Provenance of the pruning (method, base model, tasks, sparsity, per-layer summary) for the model card.
        o_proj_bias (`bool`, *optional*, defaults to `False`):
            Give every layer's attention output projection a bias (FLAP's bias compensation stores there what the
            removed heads contributed on average). A layer without attention then outputs the bias alone.
        down_proj_bias (`bool`, *optional*, defaults to `False`):
            The same for every layer's MLP `down_proj`.

    ```python
    >>> config = PrunedGemma2Config(num_hidden_layers=2, intermediate_size_per_layer=[64, 0])
    >>> config.layer_intermediate_size(1)
    0
    ```"""

    model_type = "pruned_gemma2"
    _auto_map_models = {
        "AutoModel": "PrunedGemma2Model",
        "AutoModelForCausalLM": "PrunedGemma2ForCausalLM",
        "AutoModelForSequenceClassification": "PrunedGemma2ForSequenceClassification",
    }

    def __init__(
        self,
        intermediate_size_per_layer=None,
        num_attention_heads_per_layer=None,
        num_key_value_heads_per_layer=None,
        pruning=None,
        o_proj_bias=False,
        down_proj_bias=False,
        **kwargs,
    ):
        self._init_per_layer(
            intermediate_size_per_layer,
            num_attention_heads_per_layer,
            num_key_value_heads_per_layer,
            pruning,
            o_proj_bias,
            down_proj_bias,
        )
        super().__init__(**kwargs)
        self._finish_per_layer()


class PrunedGemma3TextConfig(_PerLayerSizesMixin, Gemma3TextConfig):
    r"""
    Configuration of a Gemma 3 text model whose decoder layers have their own MLP widths and attention head counts.
    All other arguments are those of [`Gemma3TextConfig`]; the per-layer arguments are those of
    [`PrunedGemma2Config`].

    ```python
    >>> config = PrunedGemma3TextConfig(num_hidden_layers=2, num_attention_heads_per_layer=[4, 2],
    ...                                 num_key_value_heads_per_layer=[2, 1])
    >>> config.layer_num_key_value_heads(1)
    1
    ```"""

    model_type = "pruned_gemma3_text"
    _auto_map_models = {
        "AutoModel": "PrunedGemma3TextModel",
        "AutoModelForCausalLM": "PrunedGemma3ForCausalLM",
        "AutoModelForSequenceClassification": "PrunedGemma3ForSequenceClassification",
    }

    def __init__(
        self,
        intermediate_size_per_layer=None,
        num_attention_heads_per_layer=None,
        num_key_value_heads_per_layer=None,
        pruning=None,
        o_proj_bias=False,
        down_proj_bias=False,
        **kwargs,
    ):
        self._init_per_layer(
            intermediate_size_per_layer,
            num_attention_heads_per_layer,
            num_key_value_heads_per_layer,
            pruning,
            o_proj_bias,
            down_proj_bias,
        )
        super().__init__(**kwargs)
        self._finish_per_layer()


__all__ = ["PrunedGemma2Config", "PrunedGemma3TextConfig"]
