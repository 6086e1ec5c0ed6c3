# Structurally pruned Gemma-2 and Gemma 3 (text) models, written by diet-hf.
#
# Self-contained remote code: imports only the standard library, torch and transformers (plus the config file beside
# it), so that `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)` works without diet-hf installed.
# Tested with transformers 4.57.6, 5.1.0, 5.10.4, 5.14.1, 5.15.1, 5.18.0, 5.24.0 and 5.25.0 (pyproject.toml pins
# 4.57.6 to 5.25, less 5.0); checked on 4.56.2 and later (benchmarks/results/transformers_compat*.md).
#
# This file is the diff against transformers' own Gemma code: every decoder layer is transformers' stock
# `Gemma2DecoderLayer` / `Gemma3DecoderLayer`, built with the sizes of that layer's own config view,
# `config.per_layer_config[i]` (transformers' view on 5.x, the config file's on 4.x). Forward passes, masks, RoPE,
# caches and generation are inherited unchanged, so parameter names, PEFT target modules, `device_map`, gradient
# checkpointing and attention backends registered through `AttentionInterface` work as for the stock models.
import contextlib

import torch
from torch import nn
from transformers import AutoModel
from transformers.modeling_layers import GenericForSequenceClassification, GenericForTokenClassification
from transformers.modeling_utils import PreTrainedModel
from transformers.models.gemma2 import modeling_gemma2 as gemma2
from transformers.models.gemma3 import modeling_gemma3 as gemma3

from .configuration_pruned_gemma import (
    PER_LAYER_SIZES,
    PrunedGemma2Config,
    PrunedGemma3Config,
    PrunedGemma3TextConfig,
)


class _LayerConfigView:
    """What a stock decoder layer keeps as its `config`: its own sizes, every other read and write delegated to the
    shared config. (A copied per-layer config would miss run-time switches such as `set_attn_implementation`, which
    write `_attn_implementation` on the model's config only.)"""

    def __init__(self, config, sizes: dict):
        self.__dict__["_config"] = config
        self.__dict__["_sizes"] = sizes

    def __getattr__(self, name):
        # Dunder look-ups (copy, pickle) must not reach the shared config; `_sizes` is absent while unpickling.
        if name.startswith("__") or "_sizes" not in self.__dict__:
            raise AttributeError(name)
        if name in self._sizes:
            return self._sizes[name]
        return getattr(self._config, name)

    def __setattr__(self, name, value):
        # Run-time switches such as `_attn_implementation` are shared by every layer, so writes go to the config.
        setattr(self._config, name, value)


def _output_bias(hidden_size: int, enabled: bool):
    # A removed sublayer with a compensation bias outputs that bias alone (what the dense model gave on average)
    return nn.Parameter(torch.zeros(hidden_size)) if enabled else None


def _constant_output(hidden_states, bias):
    if bias is None:
        return torch.zeros_like(hidden_states)
    return bias.to(hidden_states.dtype).expand_as(hidden_states).clone()


class _RemovedMLP(nn.Module):
    """Stands in for an MLP pruned to width 0: its output is zero (or its bias), the residual stream passes through."""

    def __init__(self, hidden_size: int, bias: bool = False):
        super().__init__()
        self.bias = _output_bias(hidden_size, bias)

    def forward(self, hidden_states):
        return _constant_output(hidden_states, self.bias)


class _RemovedAttn(nn.Module):
    """Stands in for an attention pruned to 0 heads: zero output, and a one-channel placeholder cache entry."""

    def __init__(self, replaced: nn.Module, layer_idx: int, hidden_size: int, bias: bool = False):
        super().__init__()
        self.layer_idx = layer_idx
        self.config = replaced.config  # the layer's view: `_attn_implementation` is read from the shared config
        self.bias = _output_bias(hidden_size, bias)
        # Some decoder layers read these from their attention (4.57's Gemma 3 picks its RoPE by `is_sliding`).
        for name in ("is_sliding", "layer_type", "attention_type", "sliding_window"):
            if hasattr(replaced, name):
                setattr(self, name, getattr(replaced, name))

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            # Stock caches read the sequence length from stored keys (an empty tensor counts as length 0), so this
            # layer stores (batch, 1, seq_len, 1) zeros to keep its length in step with the other layers, or zeros of
            # the shape its cache layer was initialized with in advance (a static cache sized from the config holds
            # 0 heads here).
            heads, width, dtype = 1, 1, hidden_states.dtype
            layers = getattr(cache, "layers", None)
            # a cache built without a config (`DynamicCache()`, as 4.57's assisted generation builds its draft's)
            # adds its layers as they are first updated: this one may not exist yet
            stored = None
            if layers is not None and self.layer_idx < len(layers):
                stored = getattr(layers[self.layer_idx], "keys", None)
            if isinstance(stored, torch.Tensor) and stored.dim() == 4:
                heads, width, dtype = stored.shape[1], stored.shape[-1], stored.dtype
            placeholder = hidden_states.new_zeros(hidden_states.shape[0], heads, hidden_states.shape[1], width)
            placeholder = placeholder.to(dtype)
            cos, sin = position_embeddings
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": kwargs.get("cache_position")}
            key_length = cache.update(placeholder, placeholder, self.layer_idx, cache_kwargs)[0].shape[-2]
        else:
            key_length = hidden_states.shape[1]
        # Eager attention returns its weights, which `output_attentions=True` collects one entry per layer: this
        # layer's have 0 heads, so that entry i stays layer i's (other implementations return none).
        weights = None
        if getattr(self.config, "_attn_implementation", None) == "eager":
            weights = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[1], key_length)
        return _constant_output(hidden_states, self.bias), weights


class _SkippedNorm(nn.Module):
    """Stands in for the input norm of a removed sublayer, whose output nothing reads: no weight that could never
    receive a gradient (DistributedDataParallel without `find_unused_parameters`, Trainer's setting under gradient
    checkpointing, stops on such a weight)."""

    def forward(self, hidden_states):
        return hidden_states


def _with_bias(linear: nn.Linear) -> nn.Linear:
    """The same projection with a bias (zero until weights are loaded), on the weight's device and dtype."""
    if linear.bias is not None:
        return linear
    weight = linear.weight
    return nn.Linear(linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=weight.dtype)


def _build_decoder_layer(layer_cls, config, layer_idx: int) -> nn.Module:
    """Builds the stock decoder layer `layer_idx` with the sizes of `config.per_layer_config[layer_idx]`; a sublayer
    that the view skips (size 0) is replaced by a stand-in without weights."""
    layer_config = config.per_layer_config[layer_idx]
    sizes = {name: getattr(layer_config, name) for name in PER_LAYER_SIZES}
    skip = set(getattr(layer_config, "skip", None) or ())
    # A removed sublayer is first built at size 1 (stock modules cannot have size 0), then replaced.
    layer = layer_cls(_LayerConfigView(config, {name: max(value, 1) for name, value in sizes.items()}), layer_idx)
    o_proj_bias = getattr(config, "o_proj_bias", False)
    down_proj_bias = getattr(config, "down_proj_bias", False)
    if "attention" in skip:
        layer.self_attn = _RemovedAttn(layer.self_attn, layer_idx, config.hidden_size, o_proj_bias)
        layer.input_layernorm = _SkippedNorm()
    elif o_proj_bias:
        layer.self_attn.o_proj = _with_bias(layer.self_attn.o_proj)
    if "mlp" in skip:
        layer.mlp = _RemovedMLP(config.hidden_size, down_proj_bias)
        layer.pre_feedforward_layernorm = _SkippedNorm()
    elif down_proj_bias:
        layer.mlp.down_proj = _with_bias(layer.mlp.down_proj)
    return layer


@contextlib.contextmanager
def _without_decoder_layers(config):
    """Lets a stock base-model `__init__` build everything except its decoder layers, which we build per layer."""
    num_hidden_layers = config.num_hidden_layers
    config.num_hidden_layers = 0
    try:
        yield num_hidden_layers
    finally:
        config.num_hidden_layers = num_hidden_layers


class _PrunedPreTrainedMixin:
    """Shared by all pruned classes: sdpa only where it computes what eager does (it has no logit soft-capping);
    attention goes through `ALL_ATTENTION_FUNCTIONS`, so a backend registered with `AttentionInterface` runs it."""

    _supports_attention_backend = True
    # Checkpoints saved before the input norms of removed sublayers were dropped still hold their (unread) weights.
    _keys_to_ignore_on_load_unexpected = [r"layers\.\d+\.(input_layernorm|pre_feedforward_layernorm)\.weight$"]

    @property
    def _supports_sdpa(self):
        return getattr(self.config, "attn_logit_softcapping", None) is None


class _PrunedBaseModelMixin:
    """`__init__` of a pruned base model: the stock one for embeddings, norm and RoPE, then per-layer decoders."""

    _stock_model_cls = None
    _stock_layer_cls = None

    def __init__(self, config):
        with _without_decoder_layers(config) as num_hidden_layers:
            self._stock_model_cls.__init__(self, config)
        self.config.num_hidden_layers = num_hidden_layers  # in case the stock `__init__` copied the config
        self.layers = nn.ModuleList(
            [_build_decoder_layer(self._stock_layer_cls, config, idx) for idx in range(num_hidden_layers)]
        )
        self.post_init()


class _PrunedForCausalLMMixin:
    """`__init__` of a pruned causal LM: the pruned base model under `model`, a (tied) `lm_head`."""

    _base_model_cls = None

    def __init__(self, config):
        PreTrainedModel.__init__(self, config)
        self.model = self._base_model_cls(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


class _PrunedForSequenceClassificationMixin:
    """`__init__` of a pruned sequence classifier (the stock one would build its base model through `AutoModel`)."""

    _base_model_cls = None

    def __init__(self, config):
        PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = self._base_model_cls(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()


class _PrunedForTokenClassificationMixin:
    """`__init__` of a pruned token classifier (the stock one would build its base model through `AutoModel`): the
    pruned base model under `model`, then dropout and a per-token `score` head as transformers' own
    `GenericForTokenClassification` builds them (`classifier_dropout`, else `hidden_dropout`, else 0.1; a bias unless
    `config.token_classification_bias` is false)."""

    _base_model_cls = None

    def __init__(self, config):
        PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = self._base_model_cls(config)
        dropouts = (getattr(config, "classifier_dropout", None), getattr(config, "hidden_dropout", None))
        self.dropout = nn.Dropout(next((p for p in dropouts if p is not None), 0.1))
        bias = getattr(config, "token_classification_bias", True)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=bias)
        self.post_init()


# ---------------------------------------------------------------------------------------------------- Gemma-2


class PrunedGemma2PreTrainedModel(_PrunedPreTrainedMixin, gemma2.Gemma2PreTrainedModel):
    config_class = PrunedGemma2Config
    config: PrunedGemma2Config
    _auto_class = "AutoModelForCausalLM"
    _can_record_outputs = {
        "hidden_states": gemma2.Gemma2DecoderLayer,
        "attentions": "self_attn",  # by module name: the stock attentions and the removed ones' stand-ins
    }


class PrunedGemma2Model(_PrunedBaseModelMixin, PrunedGemma2PreTrainedModel, gemma2.Gemma2Model):
    """Gemma-2 decoder whose layers have their own MLP widths and head counts (see `PrunedGemma2Config`)."""

    _stock_model_cls = gemma2.Gemma2Model
    _stock_layer_cls = gemma2.Gemma2DecoderLayer


class PrunedGemma2ForCausalLM(_PrunedForCausalLMMixin, PrunedGemma2PreTrainedModel, gemma2.Gemma2ForCausalLM):
    """Pruned Gemma-2 with a language-modeling head; forward and `generate` are Gemma-2's.

    ```python
    >>> config = PrunedGemma2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...     num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size_per_layer=[48, 0])
    >>> model = PrunedGemma2ForCausalLM(config)
    >>> model(torch.tensor([[1, 2, 3]])).logits.shape
    torch.Size([1, 3, 128])
    ```"""

    _base_model_cls = PrunedGemma2Model


class PrunedGemma2ForSequenceClassification(
    _PrunedForSequenceClassificationMixin, GenericForSequenceClassification, PrunedGemma2PreTrainedModel
):
    _base_model_cls = PrunedGemma2Model


class PrunedGemma2ForTokenClassification(
    _PrunedForTokenClassificationMixin, GenericForTokenClassification, PrunedGemma2PreTrainedModel
):
    _base_model_cls = PrunedGemma2Model


# ---------------------------------------------------------------------------------------------------- Gemma 3


class PrunedGemma3PreTrainedModel(_PrunedPreTrainedMixin, gemma3.Gemma3PreTrainedModel):
    config_class = PrunedGemma3TextConfig
    config: PrunedGemma3TextConfig
    base_model_prefix = "model"
    _auto_class = "AutoModelForCausalLM"
    _can_record_outputs = {
        "hidden_states": gemma3.Gemma3DecoderLayer,
        "attentions": "self_attn",  # by module name: the stock attentions and the removed ones' stand-ins
    }


class PrunedGemma3TextModel(_PrunedBaseModelMixin, PrunedGemma3PreTrainedModel, gemma3.Gemma3TextModel):
    """Gemma 3 text decoder whose layers have their own MLP widths and head counts (see `PrunedGemma3TextConfig`)."""

    _stock_model_cls = gemma3.Gemma3TextModel
    _stock_layer_cls = gemma3.Gemma3DecoderLayer


class PrunedGemma3ForCausalLM(_PrunedForCausalLMMixin, PrunedGemma3PreTrainedModel, gemma3.Gemma3ForCausalLM):
    """Pruned Gemma 3 text model with a language-modeling head; forward and `generate` are Gemma 3's."""

    _base_model_cls = PrunedGemma3TextModel


class PrunedGemma3ForSequenceClassification(
    _PrunedForSequenceClassificationMixin, GenericForSequenceClassification, PrunedGemma3PreTrainedModel
):
    _base_model_cls = PrunedGemma3TextModel


class PrunedGemma3ForTokenClassification(
    _PrunedForTokenClassificationMixin, GenericForTokenClassification, PrunedGemma3PreTrainedModel
):
    _base_model_cls = PrunedGemma3TextModel


class PrunedGemma3Model(_PrunedPreTrainedMixin, gemma3.Gemma3Model):
    """Image-text Gemma 3 base model: the stock vision tower and projector, and a pruned text decoder."""

    config_class = PrunedGemma3Config
    config: PrunedGemma3Config

    def __init__(self, config):
        # the stock `__init__`, except that the language model is the pruned one (the stock one builds it through
        # `AutoModel`, which does not know the pruned text config)
        gemma3.Gemma3PreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = gemma3.Gemma3MultiModalProjector(config)
        self.vocab_size = config.text_config.vocab_size
        self.language_model = PrunedGemma3TextModel(config.text_config)
        self.pad_token_id = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else -1
        self.post_init()


class PrunedGemma3ForConditionalGeneration(_PrunedPreTrainedMixin, gemma3.Gemma3ForConditionalGeneration):
    """Image-text Gemma 3 whose text decoder is pruned; forward, image features, masks and `generate` are Gemma 3's."""

    config_class = PrunedGemma3Config
    config: PrunedGemma3Config
    _auto_class = "AutoModelForImageTextToText"

    def __init__(self, config):
        gemma3.Gemma3PreTrainedModel.__init__(self, config)
        self.model = PrunedGemma3Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


__all__ = [
    "PrunedGemma2PreTrainedModel",
    "PrunedGemma2Model",
    "PrunedGemma2ForCausalLM",
    "PrunedGemma2ForSequenceClassification",
    "PrunedGemma2ForTokenClassification",
    "PrunedGemma3PreTrainedModel",
    "PrunedGemma3TextModel",
    "PrunedGemma3ForCausalLM",
    "PrunedGemma3ForSequenceClassification",
    "PrunedGemma3ForTokenClassification",
    "PrunedGemma3Model",
    "PrunedGemma3ForConditionalGeneration",
]
