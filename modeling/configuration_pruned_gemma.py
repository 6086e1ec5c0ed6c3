# Configurations of structurally pruned Gemma-2 and Gemma 3 (text) models, written by diet-hf.
#
# Self-contained remote code: imports only the standard library and transformers, so that
# `AutoConfig.from_pretrained(repo, trust_remote_code=True)` works without diet-hf installed.
# Tested with transformers 4.57.6, 5.1.0, 5.10.4, 5.14.1, 5.15.1, 5.18.0, 5.24.0 and 5.25.0 (pyproject.toml pins
# 4.57.6 to 5.25, less 5.0); checked on 4.56.2 and later (benchmarks/results/transformers_compat*.md).
#
# Format v2: the per-layer sizes are transformers' own sparse `per_layer_config` (`HeterogeneousConfigMixin`,
# transformers >= 5.14), e.g. `{"1": {"intermediate_size": 0, "skip": ["mlp"]}}`: only layers that differ from the
# global sizes, which stay the unpruned base model's. On transformers 4.x and 5.0-5.13, which have no such mixin,
# `_PerLayerConfigSupport` below parses and writes the same JSON and gives the same per-layer views. Format v1
# checkpoints (three lists `intermediate_size_per_layer`, `num_attention_heads_per_layer`,
# `num_key_value_heads_per_layer`) load unchanged and save as v2; the three names remain as read-only views and as
# constructor arguments.
import copy
import re
from collections.abc import Sequence

import transformers
from transformers import Gemma2Config, Gemma3Config, Gemma3TextConfig

# The oldest transformers this code runs on (benchmarks/results/transformers_compat.md: 4.56.2 to 5.25.0 load, decode,
# train and re-save these checkpoints; 4.54 and 4.55 preallocate static caches at the global KV head count, which
# fails on a layer with fewer; 4.53 and older lack stock classes the pruned ones build on).
MIN_TRANSFORMERS = "4.56"
_version = re.match(r"(\d+)\.(\d+)", transformers.__version__)
_VERSION = tuple(map(int, _version.groups())) if _version else None  # (major, minor); None for an unparsable one
if _VERSION and _VERSION < tuple(map(int, MIN_TRANSFORMERS.split("."))):
    raise ImportError(
        f"This pruned Gemma checkpoint's code needs transformers >= {MIN_TRANSFORMERS}, found "
        f"{transformers.__version__}: pip install -U 'transformers>={MIN_TRANSFORMERS}'"
    )

try:  # transformers >= 5.14
    from transformers.integrations.heterogeneity import HeterogeneousConfigMixin

    _NATIVE_PER_LAYER_CONFIG = True
except ImportError:  # transformers 4.x and 5.0-5.13
    _NATIVE_PER_LAYER_CONFIG = False

# The attributes a layer may override, and the `skip` names (transformers' heterogeneous modeling) of the sublayers
# a size of 0 removes.
PER_LAYER_SIZES = ("intermediate_size", "num_attention_heads", "num_key_value_heads")
SKIPPED_BY_SIZE = {"intermediate_size": "mlp", "num_attention_heads": "attention", "num_key_value_heads": "attention"}
_LEGACY_LISTS = {f"{name}_per_layer": name for name in PER_LAYER_SIZES}


if _NATIVE_PER_LAYER_CONFIG:

    class _PerLayerConfigSupport:
        """transformers >= 5.14: `per_layer_config`, `is_heterogeneous` and the JSON form are transformers' own."""

        def _apply_per_layer_overrides(self, overrides: dict) -> None:
            if overrides:
                self.per_layer_config = overrides
            # Global reads of the per-layer sizes give the base model's values (as in format v1) instead of raising
            # `AmbiguousGlobalPerLayerAttributeError`: PEFT, accelerate, optimum and user code read some of them.
            # transformers still logs a one-time warning on such a read; set the flag to False for strict checking.
            self.allow_global_per_layer_attribute_access = True

        def _global_size(self, name: str) -> int:
            return self._getattr_without_heterogeneous_validation(name)

        def validate(self):
            # The stock Gemma validators (run again by `save_pretrained`) read the global sizes: run them on the
            # global config, the base model's, then check the layers' own sizes.
            super(_PerLayerConfigSupport, _global_view(self)).validate()
            _validate_sizes(
                [{name: getattr(layer, name) for name in PER_LAYER_SIZES} for layer in self.per_layer_config]
            )

        def to_dict(self):
            output = super().to_dict()
            output.pop("allow_global_per_layer_attribute_access", None)  # a run-time choice, set again on load
            return output

    if _VERSION and _VERSION < (5, 15):
        # transformers 5.14 gives None for a config without per-layer overrides; later releases, and the view below
        # on older ones, the config itself for every layer. Only there: the forward pass reads this property, and
        # `torch.compile(fullgraph=True)` cannot trace a property's `fget` called by hand.
        def _per_layer_config(self):
            layers = HeterogeneousConfigMixin.per_layer_config.fget(self)
            return [self] * self.num_hidden_layers if layers is None else layers

        _PerLayerConfigSupport.per_layer_config = property(
            _per_layer_config, HeterogeneousConfigMixin.per_layer_config.fset
        )

else:

    class _PerLayerConfigView(Sequence):
        """`config.per_layer_config` on transformers 4.x and 5.0-5.13: the same per-layer configs later 5.x give."""

        def __init__(self, config):
            self._config = config

        def __len__(self):
            return self._config.num_hidden_layers

        def __getitem__(self, layer_idx):
            if isinstance(layer_idx, slice):
                return [self[i] for i in range(*layer_idx.indices(len(self)))]
            if layer_idx < 0:
                layer_idx += len(self)
            if not 0 <= layer_idx < len(self):
                raise IndexError("list index out of range")
            if not self._config.is_heterogeneous:
                return self._config
            overrides = self._config._per_layer_overrides.get(layer_idx, {})
            view = copy.copy(self._config)
            view.__dict__["_per_layer_overrides"] = {}
            view.skip = list(overrides.get("skip", []))
            for name, value in overrides.items():
                if name != "skip":
                    setattr(view, name, value)
            return view

    class _PerLayerConfigSupport:
        """transformers 4.x and 5.0-5.13: parses and writes transformers 5's sparse `per_layer_config` itself."""

        def _apply_per_layer_overrides(self, overrides: dict) -> None:
            self.__dict__["_per_layer_overrides"] = overrides

        def _global_size(self, name: str) -> int:
            return getattr(self, name)

        @property
        def is_heterogeneous(self) -> bool:
            return bool(self.__dict__.get("_per_layer_overrides"))

        @property
        def per_layer_config(self):
            return _PerLayerConfigView(self)

        @property
        def per_layer_attributes(self):
            if not self.is_heterogeneous:
                return None
            return {name for layer in self._per_layer_overrides.values() for name in layer if name != "skip"}

        def to_dict(self):
            output = super().to_dict()
            overrides = output.pop("_per_layer_overrides", None)
            if overrides:
                # the JSON form of transformers 5: zero-padded keys, so that they sort numerically
                digits = len(str(max(overrides)))
                output["per_layer_config"] = {str(i).zfill(digits): copy.deepcopy(v) for i, v in overrides.items()}
            return output


class _PerLayerSizesMixin(_PerLayerConfigSupport):
    """Per-layer MLP widths and head counts on top of a stock Gemma config; the global fields stay the base model's."""

    # Auto class -> model class name in `modeling_pruned_gemma.py`; written into `config.json` as `auto_map`.
    _auto_map_models = {}

    def _init_per_layer(self, per_layer_config, legacy_lists, pruning, o_proj_bias, down_proj_bias):
        """Runs after the stock `__init__`: the global sizes exist, the per-layer ones are checked and applied."""
        for name, value in (("o_proj_bias", o_proj_bias), ("down_proj_bias", down_proj_bias)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}.")
        self.pruning = pruning
        self.o_proj_bias = o_proj_bias
        self.down_proj_bias = down_proj_bias
        given_lists = {name: values for name, values in legacy_lists.items() if values is not None}
        if per_layer_config is not None and given_lists:
            raise ValueError(
                f"Pass the per-layer sizes either as `per_layer_config` or as {sorted(given_lists)}, not both."
            )
        global_sizes = {name: self._global_size(name) for name in PER_LAYER_SIZES}
        if given_lists:
            sizes = _sizes_from_lists(given_lists, self.num_hidden_layers, global_sizes)
        else:
            sizes = _sizes_from_per_layer_config(per_layer_config or {}, self.num_hidden_layers, global_sizes)
        _validate_sizes(sizes)
        self._apply_per_layer_overrides(_sparse_overrides(sizes, global_sizes))
        _set_auto_map(self)

    def _layer_size(self, name: str, layer_idx: int) -> int:
        return getattr(self.per_layer_config[layer_idx], name)

    def layer_intermediate_size(self, layer_idx: int) -> int:
        """MLP width of layer `layer_idx` (0 means the MLP is removed)."""
        return self._layer_size("intermediate_size", layer_idx)

    def layer_num_attention_heads(self, layer_idx: int) -> int:
        """Query heads of layer `layer_idx` (0 means the attention is removed)."""
        return self._layer_size("num_attention_heads", layer_idx)

    def layer_num_key_value_heads(self, layer_idx: int) -> int:
        """KV heads of layer `layer_idx`."""
        return self._layer_size("num_key_value_heads", layer_idx)

    def base_model_size(self, name: str) -> int:
        """The unpruned base model's `intermediate_size`, `num_attention_heads` or `num_key_value_heads` (the global
        value; read here without transformers' warning about global reads of per-layer attributes)."""
        if name not in PER_LAYER_SIZES:
            raise ValueError(f"`name` must be one of {list(PER_LAYER_SIZES)}, got {name!r}.")
        return self._global_size(name)

    # Format v1's names, as read-only views of `per_layer_config`: one entry per layer.
    @property
    def intermediate_size_per_layer(self) -> list:
        return [self.layer_intermediate_size(i) for i in range(self.num_hidden_layers)]

    @property
    def num_attention_heads_per_layer(self) -> list:
        return [self.layer_num_attention_heads(i) for i in range(self.num_hidden_layers)]

    @property
    def num_key_value_heads_per_layer(self) -> list:
        return [self.layer_num_key_value_heads(i) for i in range(self.num_hidden_layers)]


def _set_auto_map(config) -> None:
    """Writes `config.auto_map`: `AutoConfig` and the config class's `_auto_map_models` (Auto class -> model class
    name), in the module names of the file the class was loaded from: `configuration_pruned_gemma` (diet-hf >= 0.2,
    and in-process), or `configuration_pruned_gemma2` when a checkpoint of an earlier version ran its own copy."""
    config_module = type(config).__module__.rsplit(".", 1)[-1]
    modeling_module = config_module.replace("configuration_", "modeling_", 1)
    auto_map = {"AutoConfig": f"{config_module}.{type(config).__name__}"}
    auto_map.update({key: f"{modeling_module}.{name}" for key, name in config._auto_map_models.items()})
    ours = {"AutoConfig", *config._auto_map_models}
    earlier = {k: v for k, v in (getattr(config, "auto_map", None) or {}).items() if k not in ours}
    config.auto_map = {**auto_map, **earlier}


def _global_view(config):
    """A shallow copy of a pruned text config without transformers 5's per-layer spec: reads of the per-layer sizes
    give the base model's (global) values, as the stock validators expect."""
    view = copy.copy(config)
    view.__dict__.pop("_heterogeneity_spec", None)
    return view


def _sizes_from_lists(lists: dict, num_layers: int, global_sizes: dict) -> list:
    """Format v1: one list per size (absent = the global size everywhere) -> every layer's sizes."""
    for list_name, values in lists.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"`{list_name}` must be a list of ints, one per layer, got {values!r}.")
        if len(values) != num_layers:
            raise ValueError(
                f"`{list_name}` must have one entry per layer (`num_hidden_layers`={num_layers}), got {len(values)}."
            )
    sizes = [dict(global_sizes) for _ in range(num_layers)]
    for list_name, values in lists.items():
        for layer_idx, value in enumerate(values):
            sizes[layer_idx][_LEGACY_LISTS[list_name]] = _size(value, f"`{list_name}`[{layer_idx}]", layer_idx)
    return sizes


def _sizes_from_per_layer_config(per_layer_config, num_layers: int, global_sizes: dict) -> list:
    """Format v2: transformers' sparse `per_layer_config` (int or zero-padded string keys) -> every layer's sizes."""
    if not isinstance(per_layer_config, dict):
        raise ValueError(f"`per_layer_config` must be a dict of layer index -> overrides, got {per_layer_config!r}.")
    sizes = [dict(global_sizes) for _ in range(num_layers)]
    for key, overrides in per_layer_config.items():
        try:
            layer_idx = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"`per_layer_config` keys must be layer indices, got {key!r}.") from None
        if not 0 <= layer_idx < num_layers:
            raise ValueError(
                f"`per_layer_config` keys must be layer indices in [0, {num_layers}) (`num_hidden_layers`), "
                f"got {key!r}."
            )
        if not isinstance(overrides, dict):
            raise ValueError(f"`per_layer_config`[{key!r}] must be a dict of attribute overrides, got {overrides!r}.")
        unknown = sorted(set(overrides) - {*PER_LAYER_SIZES, "skip"})
        if unknown:
            raise ValueError(
                f"`per_layer_config`[{key!r}] overrides {unknown}; a pruned Gemma layer may only override "
                f"{list(PER_LAYER_SIZES)} and `skip`."
            )
        skip = overrides.get("skip", [])
        if isinstance(skip, str) or not all(name in ("attention", "mlp") for name in skip):
            raise ValueError(
                f"`per_layer_config`[{key!r}]['skip'] must be a list of 'attention' and/or 'mlp', got {skip!r}."
            )
        for name in PER_LAYER_SIZES:
            if name in overrides:
                sizes[layer_idx][name] = _size(overrides[name], f"`per_layer_config`[{key!r}][{name!r}]", layer_idx)
            elif SKIPPED_BY_SIZE[name] in skip:
                sizes[layer_idx][name] = 0
        for name in PER_LAYER_SIZES:
            if SKIPPED_BY_SIZE[name] in skip and sizes[layer_idx][name] != 0:
                raise ValueError(
                    f"`per_layer_config`[{key!r}] skips the {SKIPPED_BY_SIZE[name]} but gives it "
                    f"{name}={sizes[layer_idx][name]}; a skipped sublayer has size 0."
                )
    return sizes


def _size(value, where: str, layer_idx: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an int >= 0, got {value!r} (layer {layer_idx}).")
    if value < 0:
        raise ValueError(f"{where} must be >= 0, got {value} (layer {layer_idx}).")
    return value


def _validate_sizes(sizes: list) -> None:
    """Raises `ValueError` naming the layer when its head counts cannot form grouped-query attention."""
    for layer_idx, layer in enumerate(sizes):
        heads, kv_heads = layer["num_attention_heads"], layer["num_key_value_heads"]
        if kv_heads == 0 and heads > 0:
            raise ValueError(
                f"Layer {layer_idx}: {heads} query heads but 0 KV heads (`num_key_value_heads`); a layer with query "
                "heads needs at least one KV head."
            )
        if kv_heads > 0 and heads == 0:
            raise ValueError(
                f"Layer {layer_idx}: {kv_heads} KV heads but 0 query heads (`num_attention_heads`); KV heads without "
                "query heads must be removed too."
            )
        if kv_heads > 0 and heads % kv_heads != 0:
            raise ValueError(
                f"Layer {layer_idx}: {heads} query heads (`num_attention_heads`) do not split into {kv_heads} KV "
                "groups (`num_key_value_heads`); query heads must be a multiple of KV heads."
            )


def _sparse_overrides(sizes: list, global_sizes: dict) -> dict:
    """Every layer's sizes -> transformers' sparse form: only what differs, and `skip` for a removed sublayer."""
    overrides = {}
    for layer_idx, layer in enumerate(sizes):
        entry = {name: value for name, value in layer.items() if value != global_sizes[name]}
        skip = sorted({SKIPPED_BY_SIZE[name] for name, value in layer.items() if value == 0})
        if skip:
            entry["skip"] = skip
        if entry:
            overrides[layer_idx] = entry
    return overrides


_CONFIG_ARGS_DOC = r"""
    Args:
        per_layer_config (`dict`, *optional*):
            transformers' sparse per-layer overrides: layer index -> `intermediate_size`, `num_attention_heads`,
            `num_key_value_heads` and `skip` (`"mlp"` and / or `"attention"` for a sublayer pruned to size 0). Layers
            not listed keep the global sizes. This is what `config.json` stores (format v2).
        intermediate_size_per_layer (`list[int]`, *optional*):
            Format v1: the MLP width of every layer (0 removes the MLP). Converted to `per_layer_config`; afterwards a
            read-only view. Give either `per_layer_config` or the three lists.
        num_attention_heads_per_layer (`list[int]`, *optional*):
            Format v1: query heads of every layer (0 removes the attention).
        num_key_value_heads_per_layer (`list[int]`, *optional*):
            Format v1: KV heads of every layer; each layer's query heads must be a multiple of them.
        pruning (`dict`, *optional*):
            Provenance of the pruning (method, base model, tasks, sparsity, per-layer summary) for the model card.
        o_proj_bias (`bool`, *optional*, defaults to `False`):
            Give every layer's attention output projection a bias (FLAP's bias compensation stores there what the
            removed heads contributed on average). A layer without attention then outputs the bias alone.
        down_proj_bias (`bool`, *optional*, defaults to `False`):
            The same for every layer's MLP `down_proj`.

    The global `intermediate_size`, `num_attention_heads` and `num_key_value_heads` keep the unpruned base model's
    values; read a layer's own from `config.per_layer_config[i]` (or `config.layer_intermediate_size(i)` etc.)."""


class PrunedGemma2Config(_PerLayerSizesMixin, Gemma2Config):
    model_type = "pruned_gemma2"
    _auto_map_models = {
        "AutoModel": "PrunedGemma2Model",
        "AutoModelForCausalLM": "PrunedGemma2ForCausalLM",
        "AutoModelForSequenceClassification": "PrunedGemma2ForSequenceClassification",
        "AutoModelForTokenClassification": "PrunedGemma2ForTokenClassification",
    }

    # Each class has its own `__init__` (the same in both): transformers 5 turns every config subclass into a dataclass
    # whose generated `__init__` would shadow one inherited from the mixin.
    def __init__(
        self,
        per_layer_config=None,
        intermediate_size_per_layer=None,
        num_attention_heads_per_layer=None,
        num_key_value_heads_per_layer=None,
        pruning=None,
        o_proj_bias=False,
        down_proj_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_per_layer(
            per_layer_config,
            {
                "intermediate_size_per_layer": intermediate_size_per_layer,
                "num_attention_heads_per_layer": num_attention_heads_per_layer,
                "num_key_value_heads_per_layer": num_key_value_heads_per_layer,
            },
            pruning,
            o_proj_bias,
            down_proj_bias,
        )


PrunedGemma2Config.__doc__ = (
    r"""
    Configuration of a Gemma-2 model whose decoder layers have their own MLP widths and attention head counts.
    All other arguments are those of [`Gemma2Config`].
"""
    + _CONFIG_ARGS_DOC
    + r"""

    ```python
    >>> config = PrunedGemma2Config(num_hidden_layers=2, per_layer_config={1: {"skip": ["mlp"]}})
    >>> config.per_layer_config[1].intermediate_size
    0
    ```"""
)


class PrunedGemma3TextConfig(_PerLayerSizesMixin, Gemma3TextConfig):
    model_type = "pruned_gemma3_text"
    _auto_map_models = {
        "AutoModel": "PrunedGemma3TextModel",
        "AutoModelForCausalLM": "PrunedGemma3ForCausalLM",
        "AutoModelForSequenceClassification": "PrunedGemma3ForSequenceClassification",
        "AutoModelForTokenClassification": "PrunedGemma3ForTokenClassification",
    }

    def __init__(
        self,
        per_layer_config=None,
        intermediate_size_per_layer=None,
        num_attention_heads_per_layer=None,
        num_key_value_heads_per_layer=None,
        pruning=None,
        o_proj_bias=False,
        down_proj_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_per_layer(
            per_layer_config,
            {
                "intermediate_size_per_layer": intermediate_size_per_layer,
                "num_attention_heads_per_layer": num_attention_heads_per_layer,
                "num_key_value_heads_per_layer": num_key_value_heads_per_layer,
            },
            pruning,
            o_proj_bias,
            down_proj_bias,
        )


PrunedGemma3TextConfig.__doc__ = (
    r"""
    Configuration of a Gemma 3 text model whose decoder layers have their own MLP widths and attention head counts.
    All other arguments are those of [`Gemma3TextConfig`].
"""
    + _CONFIG_ARGS_DOC
    + r"""

    ```python
    >>> config = PrunedGemma3TextConfig(num_hidden_layers=2, per_layer_config={1: {"num_attention_heads": 2,
    ...                                                                          "num_key_value_heads": 1}})
    >>> config.per_layer_config[1].num_key_value_heads
    1
    ```"""
)


class PrunedGemma3Config(Gemma3Config):
    r"""
    Configuration of an image-text Gemma 3 (4B and up) whose text decoder is pruned: the stock vision tower and
    projector ([`Gemma3Config`]'s `vision_config` and fields), and a [`PrunedGemma3TextConfig`] as `text_config`. The
    pruning provenance is the text config's (`config.pruning` reads and writes `config.text_config.pruning`).

    ```python
    >>> config = PrunedGemma3Config(text_config={"num_hidden_layers": 2, "per_layer_config": {1: {"skip": ["mlp"]}}})
    >>> config.text_config.per_layer_config[1].intermediate_size
    0
    ```"""

    model_type = "pruned_gemma3"
    _auto_map_models = {
        "AutoModel": "PrunedGemma3Model",
        "AutoModelForCausalLM": "PrunedGemma3ForConditionalGeneration",
        "AutoModelForImageTextToText": "PrunedGemma3ForConditionalGeneration",
    }
    # the text config class that a `config.json`'s `text_config` dict becomes (transformers 5 reads
    # `sub_configs_defaults`, 4.x `sub_configs`)
    if hasattr(Gemma3Config, "sub_configs_defaults"):  # a spec of the parent's spec class (5.20 takes no bare class)
        sub_configs_defaults = {
            **Gemma3Config.sub_configs_defaults,
            "text_config": type(Gemma3Config.sub_configs_defaults["text_config"])(config_class=PrunedGemma3TextConfig),
        }
    else:
        sub_configs = {**Gemma3Config.sub_configs, "text_config": PrunedGemma3TextConfig}

    def __init__(self, text_config=None, vision_config=None, **kwargs):
        if text_config is None:
            text_config = PrunedGemma3TextConfig()
        elif isinstance(text_config, dict):
            text_config = PrunedGemma3TextConfig(**text_config)
        elif not isinstance(text_config, PrunedGemma3TextConfig):
            raise ValueError(
                f"`text_config` must be a `PrunedGemma3TextConfig` or its dict, got {type(text_config).__name__}."
            )
        pruning = kwargs.pop("pruning", None)
        # the stock `__init__` validates the composite config, reading every text config attribute globally: hide
        # the per-layer spec (transformers 5) meanwhile, as `validate` below does
        spec = text_config.__dict__.pop("_heterogeneity_spec", None)
        try:
            super().__init__(text_config=text_config, vision_config=vision_config, **kwargs)
        finally:
            if spec is not None:
                text_config.__dict__["_heterogeneity_spec"] = spec
        if pruning is not None:
            self.pruning = pruning
        _set_auto_map(self)

    if hasattr(Gemma3Config, "validate"):  # transformers 5: validated on init and on save

        def validate(self):
            # The stock composite validator reads every attribute of the text config, per-layer sizes included (a
            # global read, which transformers warns about or refuses): run it with the text config's global view,
            # then the text config's own validation, which checks each layer's sizes.
            composite = copy.copy(self)
            composite.__dict__["text_config"] = _global_view(self.text_config)
            super(PrunedGemma3Config, composite).validate()
            self.text_config.validate()

    @property
    def pruning(self):
        return self.text_config.pruning

    @pruning.setter
    def pruning(self, value):
        self.text_config.pruning = value


__all__ = ["PrunedGemma2Config", "PrunedGemma3TextConfig", "PrunedGemma3Config"]
