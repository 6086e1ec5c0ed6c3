"""Weight surgery: slice a dense Gemma model by a `PruningPlan` into a physically smaller pruned model."""

import copy
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ._devices import float64_device, to_float64
from .constants import family_for_model_type
from .hub import modeling_module
from .loading import image_text_model, text_causal_lm
from .moments import InputMoments
from .plan import PruningPlan
from .reconstruction import DEFAULT_DAMPING, least_squares_update

__all__ = [
    "adapter_modules",
    "build_pruned_config",
    "build_pruned_model",
    "check_no_adapters",
    "check_prunable_weights",
    "gguf_file_of",
    "is_quantized",
    "offloaded_weights",
    "quantized_modules",
    "read_from_gguf",
    "slice_linear_weight",
    "to_pruned_model",
]


def _channels(kept: list[int], block: int) -> list[int]:
    """Channel indices of the kept units, each `block` channels wide (a head's `head_dim`, 1 for MLP dimensions)."""
    return [k * block + i for k in kept for i in range(block)]


def offloaded_weights(model: nn.Module) -> list[str]:
    """The names of `model`'s parameters on the meta device: offloaded by accelerate (a `device_map` that puts
    modules on "cpu" or "disk" keeps their weights out of the modules and loads them for each forward pass)."""
    return [name for name, parameter in model.named_parameters() if parameter.device.type == "meta"]


PRUNING_CUTS_BASE_WEIGHTS = "pruning cuts the base weights alone and would leave the adapters out"


def adapter_modules(model: nn.Module) -> list[str]:
    """The names of `model`'s modules that hold PEFT adapter weights beside a base layer (LoRA, IA3, ...: PEFT's
    `BaseTunerLayer`), as `get_peft_model` or `inject_adapter_in_model` leave them until `merge_and_unload()`."""
    if "peft" not in sys.modules:  # no adapter without PEFT imported (and no import of it for the check)
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


def check_no_adapters(model: nn.Module, name: str, why: str) -> None:
    """Raises `ValueError` naming `name` if `model` holds unmerged PEFT adapters (`adapter_modules`), saying `why`
    they cannot stay (e.g. "pruning cuts the base weights alone and would leave the adapters out")."""
    adapters = adapter_modules(model)
    if adapters:
        raise ValueError(
            f"`{name}` holds unmerged PEFT adapters ({len(adapters)} layers, e.g. `{adapters[0]}`): {why}. Merge them "
            "first with PEFT's `merge_and_unload()` (it returns the merged model) and pass that."
        )


def quantized_modules(model: nn.Module) -> list[str]:
    """The names of `model`'s layers whose weights are quantized: no plain floating-point weight (bitsandbytes' packed
    integers, torchao's or quanto's tensor subclasses, the GGUF blocks transformers keeps in its own `GgufLinear`
    modules; GPTQ / AWQ layers hold a `qweight`)."""
    found = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        integer = isinstance(weight, torch.Tensor) and not weight.dtype.is_floating_point
        subclass = isinstance(weight, torch.Tensor) and type(weight) not in (torch.Tensor, nn.Parameter)
        if hasattr(module, "qweight") or integer or (isinstance(module, nn.Linear) and subclass):
            found.append(name)
    return found


def _gguf_quantization(model: nn.Module) -> dict | None:
    """The quantization config transformers attaches to a model it read from a GGUF file, as a dict; None else."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    values = config if isinstance(config, dict) else getattr(config, "__dict__", {})
    method = values.get("quant_method")
    return values if str(getattr(method, "value", method)) == "gguf" else None


def read_from_gguf(model: nn.Module) -> bool:
    """Whether transformers read `model` from a GGUF file (`from_pretrained(..., gguf_file=...)`) and attached its GGUF
    quantizer, which dequantized every weight on load: the weights are plain floating-point tensors."""
    return _gguf_quantization(model) is not None


def gguf_file_of(model: nn.Module) -> str | None:
    """The name of the GGUF file transformers read `model` from, where its quantization config records it."""
    return (_gguf_quantization(model) or {}).get("gguf_file")


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` holds quantized linear layers (`quantized_modules`) or was loaded by a transformers quantizer
    (`hf_quantizer`) that keeps its weights quantized (a GGUF file's is dequantized on load: `read_from_gguf`)."""
    if quantized_modules(model):
        return True
    return getattr(model, "hf_quantizer", None) is not None and not read_from_gguf(model)


def check_prunable_weights(model: nn.Module, name: str = "model") -> None:
    """Raises `ValueError` naming `name` if pruning cannot cut `model`'s weights: offloaded by accelerate (they are
    loaded per forward pass, so profiling works), quantized, or beside unmerged PEFT adapters."""
    check_no_adapters(model, name, PRUNING_CUTS_BASE_WEIGHTS)
    offloaded = offloaded_weights(model)
    if offloaded:
        raise ValueError(
            f"`{name}` has {len(offloaded)} weights offloaded to the meta device (e.g. `{offloaded[0]}`): a "
            '`device_map` that puts modules on "cpu" or "disk" (e.g. "auto" where the devices are too small) loads '
            "them only for each forward pass, and pruning cuts every weight. Load the model where it fits whole "
            '(e.g. `device_map="cpu"`), or profile it offloaded, save the profile (`save_scores(dir)`) and prune '
            "from it (`load_scores(dir)`) where the model fits."
        )
    if is_quantized(model):
        quantized = quantized_modules(model)
        where = f" (e.g. `{quantized[0]}`)" if quantized else ""
        how = (
            "Read the GGUF file into float weights: `from_pretrained(..., gguf_file=..., "
            "quantization_config=GgufConfig(dequantize=True))` (`DietPruner.from_pretrained(..., gguf_file=...)` "
            "does),"
            if read_from_gguf(model)
            else "Load the dense model in bfloat16 or float32 to prune it,"
        )
        raise ValueError(
            f"`{name}` is quantized{where}: pruning slices and refits full-precision weights. {how} then quantize "
            "the pruned model as you would the dense one."
        )


def slice_linear_weight(weight: torch.Tensor, kept: list[int], *, dim: int, block: int = 1) -> torch.Tensor:
    """Rows (`dim=0`) or columns (`dim=1`) of a `nn.Linear` weight, in blocks of `block` (a head's `head_dim`)."""
    index = torch.tensor(_channels(kept, block), dtype=torch.long, device=weight.device)
    return weight.index_select(dim, index).contiguous()


def build_pruned_config(
    config, plan: PruningPlan, *, pruning: dict | None = None, o_proj_bias: bool = False, down_proj_bias: bool = False
):
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
        "per_layer_config",
        "intermediate_size_per_layer",
        "num_attention_heads_per_layer",
        "num_key_value_heads_per_layer",
        "pruning",
        "o_proj_bias",
        "down_proj_bias",
    ):
        values.pop(key, None)
    pruned = config_class(
        intermediate_size_per_layer=plan.intermediate_size_per_layer,
        num_attention_heads_per_layer=plan.num_attention_heads_per_layer,
        num_key_value_heads_per_layer=plan.num_key_value_heads_per_layer,
        pruning=pruning,
        o_proj_bias=o_proj_bias,
        down_proj_bias=down_proj_bias,
        **values,
    )
    attn_implementation = getattr(config, "_attn_implementation", None) or "eager"
    if attn_implementation == "sdpa" and getattr(config, "attn_logit_softcapping", None) is not None:
        # sdpa cannot soft-cap attention logits (transformers 4.x still ran Gemma-2 that way); keep the exact path
        attn_implementation = "eager"
    pruned._attn_implementation = attn_implementation
    pruned.architectures = [family.pruned_causal_lm_class]
    return pruned


class _Cutter:
    """Applies `plan`'s cuts to the dense state dict, a layer at a time (`cut`; `finish` does the layers left).

    With `inplace`, each cut tensor also replaces the dense module's own as it is made (a removed one becomes empty),
    so the dense tensor is freed then and the dense model is left unusable; `cut_ready` lets the reconstruction cut
    each layer as soon as its refitted modules are solved and no pass over the decoder will run it again."""

    def __init__(self, model: nn.Module, plan: PruningPlan, inplace: bool):
        self.model, self.plan, self.inplace = model, plan, inplace
        self.state = dict(model.state_dict())
        self.layout = family_for_model_type(model.config.model_type).layout
        self.pending = set(range(plan.num_hidden_layers))
        self.refitted = {}  # layer -> the keys of its modules the reconstruction refits
        for kind, layer_idx in plan.cut_modules():
            self.refitted.setdefault(layer_idx, set()).add((kind, layer_idx))

    def _put(self, key, value):
        self.state[key] = value
        if self.inplace:
            _replace_tensor(self.model, key, value)

    def _drop(self, key):
        if self.state.pop(key, None) is not None and self.inplace:
            _replace_tensor(self.model, key, None)

    def cut_ready(self, replaced: dict, solved: set, deepest_pending_pass: int) -> None:
        """Cuts every layer deeper than `deepest_pending_pass` (the deepest layer a pass still to come runs) whose
        refitted modules are all in `solved`, taking their weights from `replaced`."""
        for layer_idx in sorted(self.pending):
            if layer_idx > deepest_pending_pass and self.refitted.get(layer_idx, set()) <= solved:
                self.cut(layer_idx, replaced)

    def finish(self, replaced: dict) -> dict:
        for layer_idx in sorted(self.pending):
            self.cut(layer_idx, replaced)
        self.state.update(replaced)  # the reconstruction's biases (the pruned modules get them; the dense have none)
        return self.state

    def cut(self, layer_idx: int, replaced: dict) -> None:
        plan, layout, state, put, drop = self.plan, self.layout, self.state, self._put, self._drop
        d = plan.head_dim
        self.pending.discard(layer_idx)
        mlp, heads, kv_heads = (
            plan.mlp_kept_indices[layer_idx],
            plan.head_kept_indices[layer_idx],
            plan.kv_head_kept_indices[layer_idx],
        )
        mlp_keys = [f"{layout.mlp_path(layer_idx, role)}.weight" for role in ("gate", "up", "down")]
        attn_keys = [
            f"{layout.attention_path(layer_idx, role)}.{kind}"
            for role in ("query", "key", "value", "output")
            for kind in ("weight", "bias")
        ]
        if not mlp:
            for key in mlp_keys:
                drop(key)
            drop(f"{layout.layers}.{layer_idx}.{layout.mlp_input_norm}.weight")
        elif len(mlp) < plan.intermediate_size:
            for key in mlp_keys[:2]:
                put(key, slice_linear_weight(state[key], mlp, dim=0))
            if mlp_keys[2] in replaced:
                put(mlp_keys[2], replaced.pop(mlp_keys[2]))
            else:
                put(mlp_keys[2], slice_linear_weight(state[mlp_keys[2]], mlp, dim=1))
        if not heads:
            for key in attn_keys:
                drop(key)
            for norm in layout.qk_norms:
                drop(f"{layout.attention_path(layer_idx, '')}.{norm}.weight")
            drop(f"{layout.layers}.{layer_idx}.{layout.attention_input_norm}.weight")
        elif len(heads) < plan.num_attention_heads or len(kv_heads) < plan.num_key_value_heads:
            for role, kept in (("query", heads), ("key", kv_heads), ("value", kv_heads)):
                for kind in ("weight", "bias"):
                    if (key := f"{layout.attention_path(layer_idx, role)}.{kind}") in state:
                        put(key, slice_linear_weight(state[key], kept, dim=0, block=d))
            key = f"{layout.attention_path(layer_idx, 'output')}.weight"
            put(key, replaced.pop(key) if key in replaced else slice_linear_weight(state[key], heads, dim=1, block=d))


def _replace_tensor(model: nn.Module, key: str, value: torch.Tensor | None) -> None:
    """Sets the dense module's parameter `key` to `value` (an empty tensor for None), dropping its own."""
    path, _, name = key.rpartition(".")
    module = model.get_submodule(path)
    old = getattr(module, name)
    if value is None:
        value = torch.empty(0, dtype=old.dtype, device=old.device)
    setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))


def _compensation_biases(
    model: nn.Module, plan: PruningPlan, channel_means: dict[str, torch.Tensor] | None, attention_biased: bool
) -> dict[str, torch.Tensor]:
    """FLAP's bias compensation: what the removed input channels of `down_proj` / `o_proj` contribute on average,
    `W[:, removed] @ E[x_removed]`, becomes the output bias (plus a dense `o_proj` bias, which a removed attention
    would otherwise lose). Keys follow the pruned model (a removed sublayer keeps its bias on the stand-in)."""
    biases = {}
    layout = family_for_model_type(model.config.model_type).layout
    wanted = {"mlp": channel_means is not None, "attn": channel_means is not None or attention_biased}
    for layer_idx in range(plan.num_hidden_layers):
        for kind, kept, block, path, parent in (
            (
                "mlp",
                plan.mlp_kept_indices[layer_idx],
                1,
                layout.mlp_path(layer_idx, "down"),
                layout.mlp_path(layer_idx, ""),
            ),
            (
                "attn",
                plan.head_kept_indices[layer_idx],
                plan.head_dim,
                layout.attention_path(layer_idx, "output"),
                layout.attention_path(layer_idx, ""),
            ),
        ):
            linear = model.get_submodule(path)
            if not wanted[kind]:
                continue
            weight = linear.weight
            device = float64_device(weight.device)  # the CPU where the model's device has no float64 (Apple's MPS)
            bias = torch.zeros(weight.shape[0], dtype=torch.float64, device=device)
            if linear.bias is not None:
                bias += to_float64(linear.bias).to(device)
            if channel_means is not None:
                removed = torch.ones(weight.shape[1], dtype=torch.bool, device=device)
                removed[_channels(kept, block)] = False
                means = to_float64(channel_means[kind][layer_idx]).to(device)
                bias += to_float64(weight)[:, removed] @ means[removed]
            key = f"{path}.bias" if kept else f"{parent}.bias"  # a removed sublayer: the stand-in's bias
            biases[key] = bias.to(weight.dtype).to(weight.device)
    return biases


def build_pruned_model(
    model: nn.Module,
    plan: PruningPlan | None = None,
    *,
    pruning: dict | None = None,
    channel_means: dict[str, torch.Tensor] | None = None,
    input_moments=None,
    reconstruction_damping: float = DEFAULT_DAMPING,
    reconstruction_anchors: dict | None = None,
    disable_progress: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """Builds the pruned causal LM of a dense Gemma causal LM; weights not cut are shared, not copied.

    Args:
        model (`Gemma2ForCausalLM` or `Gemma3ForCausalLM`; of a `Gemma3ForConditionalGeneration` its text decoder): the
            dense model (it stays usable; untouched tensors are shared with the result, so training the result in
            place, e.g. full fine-tuning or an in-place LoRA merge, changes the dense model too: `heal` guards against
            that; for your own training, train a reloaded checkpoint or a `copy.deepcopy` of the result).
        plan (`PruningPlan`, *optional*): what to keep; `None` keeps everything (an unpruned pruned-format model).
        pruning (`dict`, *optional*): provenance stored as `config.pruning`.
        channel_means (`dict[str, torch.Tensor]`, *optional*): FLAP's bias compensation. `mlp` `(layers,
            intermediate_size)` and `attn` `(layers, heads * head_dim)` mean inputs of `down_proj` / `o_proj` (e.g.
            `ImportanceScores.channel_means()`); the pruned model then gets `o_proj` and
            `down_proj` biases holding what the removed channels contributed on average.
        input_moments (`diet_hf.moments.InputMoments`, *optional*): least-squares reconstruction: for every cut
            `down_proj` / `o_proj` it holds, the kept columns are updated to carry what the removed channels
            contributed (`diet_hf.reconstruction.least_squares_update`; centered, with its bias, when
            `channel_means` is given too). Or an iterable of them (`diet_hf.moments.iter_input_moments`), read
            one at a time, so that only one group of modules' moments need be in memory.
        reconstruction_damping (`float`, *optional*): the ridge term of that solve, as a fraction of the mean
            variance of the kept channels.
        reconstruction_anchors (`dict`, *optional*): `{(kind, layer_idx): (channels,) tensor}`: an input of that
            `down_proj` / `o_proj` whose output its reconstruction reproduces exactly (the BOS token's:
            `diet_hf.moments.first_token_inputs`; `least_squares_update`'s `anchor`).
        disable_progress (`bool`, *optional*): no progress bar over the reconstruction's solves.
        inplace (`bool`, *optional*, defaults to `False`): build the pruned model from the dense model's own
            weights, each cut tensor replacing the dense one as it is made; with `input_moments`, each layer is cut as
            soon as its refitted modules are solved and no pass of a later part runs it (give the parts deepest first,
            `iter_input_moments(..., deepest_first=True)`, to free the dense layers part by part). The dense model
            is consumed: its cut modules hold the pruned shapes (or nothing) afterwards, and it must not be used
            again.

    Returns:
        `PrunedGemma2ForCausalLM` or `PrunedGemma3ForCausalLM` (of an image-text model, a
        `PrunedGemma3ForConditionalGeneration` with its vision tower and projector, shared), with the logits of the
        dense model whose removed MLP dimensions and heads are zeroed (with `channel_means`: replaced by those means;
        with `input_moments`: by their least-squares prediction from the kept channels).
    """
    if plan is not None and not isinstance(plan, PruningPlan):
        raise TypeError(
            f"`plan` must be a `PruningPlan` (or None: keep everything), got {type(plan).__name__}"
            + (": read a saved one with `PruningPlan.from_pretrained`." if isinstance(plan, (str, Path)) else ".")
        )
    if not isinstance(inplace, bool):
        raise ValueError(f"`inplace` must be a bool, got {inplace!r}.")
    check_prunable_weights(model)
    source = model
    model = text_causal_lm(model)  # an image-text Gemma 3: its text decoder
    family = family_for_model_type(model.config.model_type)
    if model.config.model_type == family.pruned_model_type:
        raise ValueError(f"The model is already a `{family.pruned_model_type}` model; prune its dense base model.")
    plan = PruningPlan.keep_all(model.config) if plan is None else plan
    plan.check_compatible(model.config)
    if channel_means is not None:
        _check_channel_means(channel_means, plan)
    # A dense `o_proj` bias must survive a removed attention, so the format's `o_proj_bias` carries it.
    attention_biased = bool(getattr(model.config, "attention_bias", False)) and not all(plan.head_kept_indices)
    biases = _compensation_biases(model, plan, channel_means, attention_biased)
    config = build_pruned_config(
        model.config,
        plan,
        pruning=pruning,
        o_proj_bias=channel_means is not None or attention_biased,
        down_proj_bias=channel_means is not None,
    )
    model_class = getattr(modeling_module(), family.pruned_causal_lm_class)
    with torch.device("meta"):
        pruned = model_class(config)
    cutter = _Cutter(model, plan, inplace)
    reconstructed = {}
    if input_moments is not None:
        reconstructed = _reconstructed(
            model,
            plan,
            input_moments,
            centered=channel_means is not None,
            damping=reconstruction_damping,
            anchors=reconstruction_anchors or {},
            disable_progress=disable_progress,
            cutter=cutter if inplace else None,
        )
    # the reconstructed weights and biases win over the plain slices and the compensation biases
    state = cutter.finish(reconstructed)
    state.update({key: value for key, value in biases.items() if key not in reconstructed})
    _assign(pruned, state, model)
    _dispatch(pruned, getattr(model, "hf_device_map", None))
    pruned.diet_plan = plan  # written as diet_pruning.json by diet_hf.hub.save_pruned_model
    if source is not model:  # the pruned decoder beside the image-text model's unchanged vision tower and projector
        pruned = image_text_model(source, pruned)
    return pruned.eval() if not model.training else pruned


def _assign(pruned: nn.Module, state: dict, model: nn.Module) -> None:
    """Fills the meta-device `pruned` (in place) with `state`, the dense `model`'s buffers and generation config."""
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


def _dispatch(pruned: nn.Module, device_map: dict | None) -> None:
    """Gives `pruned` (in place) the dense model's `device_map` as `from_pretrained` does (accelerate's
    `dispatch_model`): its weights already sit on those devices, and a model split across several GPUs also needs the
    hooks that move each module's inputs to its device. Offloaded models never get here (`check_prunable_weights`)."""
    if not device_map:
        return
    from accelerate import dispatch_model

    # modules on "cpu" here hold their weights (offloaded ones were refused): with the CPU as the main device
    # accelerate runs them there; with a GPU as the main device it would offload them
    main_device = "cpu" if "cpu" in set(device_map.values()) else None
    skip_keys = getattr(pruned, "_skip_keys_device_placement", None)
    dispatch_model(pruned, device_map=dict(device_map), main_device=main_device, skip_keys=skip_keys)


def _reconstructed(
    model: nn.Module,
    plan: PruningPlan,
    input_moments,
    *,
    centered: bool,
    damping: float,
    anchors: dict,
    disable_progress: bool = False,
    cutter: "_Cutter | None" = None,
) -> dict:
    """The least-squares `down_proj` / `o_proj` weights (and biases, when `centered`) of every cut layer that
    `input_moments` covers (one `InputMoments`, or an iterable of them, each dropped once its layers are solved); a
    wholly removed sublayer keeps its bias compensation. With an in-place `cutter`, each layer is cut as soon as its
    modules are solved and no later part's pass (which runs the decoder up to that part's deepest module) reads it:
    its weights then leave the returned dict for the model (parts deepest first, as `iter_input_moments(...,
    deepest_first=True)` yields them, free the dense layers part by part; in forward order they wait to the end)."""
    layout = family_for_model_type(model.config.model_type).layout
    cut = {}
    for kind, layer_idx in plan.cut_modules():
        if kind == "mlp":
            kept, block, path = plan.mlp_kept_indices[layer_idx], 1, layout.mlp_path(layer_idx, "down")
        else:
            kept, block = plan.head_kept_indices[layer_idx], plan.head_dim
            path = layout.attention_path(layer_idx, "output")
        cut[(kind, layer_idx)] = (torch.tensor(_channels(kept, block), dtype=torch.long), path)
    parts = [input_moments] if isinstance(input_moments, InputMoments) else input_moments
    tensors = {}
    # one step per solved module (a float64 solve of the kept width: seconds each for the larger Gemmas); a
    # streamed part's pass over the calibration data shows its own bar before its solves
    progress = tqdm(total=len(cut), desc="reconstruction solves", unit="module", disable=disable_progress)
    seen, solved = set(), set()
    for moments in parts:
        covered = [key for key in cut if key in moments]
        seen.update(covered)
        # the deepest layer a pass still to come runs (-1: none comes); only deeper layers may be cut in place
        deepest_pending = max((layer for kind, layer in cut if (kind, layer) not in seen), default=-1)
        for key in covered:
            channels, path = cut[key]
            linear = model.get_submodule(path)
            mean, second = moments.get(*key)
            weight, bias = least_squares_update(
                linear.weight, channels, mean, second, centered=centered, damping=damping, anchor=anchors.get(key)
            )
            tensors[f"{path}.weight"] = weight
            if bias is not None:
                dense_bias = to_float64(linear.bias).to(bias.device) if linear.bias is not None else 0
                tensors[f"{path}.bias"] = (bias + dense_bias).to(linear.weight.dtype).to(linear.weight.device)
            del mean, second
            progress.update()
            solved.add(key)
            if cutter is not None:
                cutter.cut_ready(tensors, solved, deepest_pending)
        del moments  # before the next part's pass: one part's moments in memory at a time
    progress.close()
    return tensors


def _check_channel_means(channel_means: dict, plan: PruningPlan) -> None:
    expected = {
        "mlp": (plan.num_hidden_layers, plan.intermediate_size),
        "attn": (plan.num_hidden_layers, plan.num_attention_heads * plan.head_dim),
    }
    for kind, shape in expected.items():
        value = channel_means.get(kind) if isinstance(channel_means, dict) else None
        if value is None or tuple(value.shape) != shape:
            got = "missing" if value is None else f"shape {tuple(value.shape)}"
            raise ValueError(f"`channel_means[{kind!r}]` must be a tensor of shape {shape}, got {got}.")


def to_pruned_model(model: nn.Module) -> nn.Module:
    """A stock `Gemma2ForCausalLM` / `Gemma3ForCausalLM` / `Gemma3ForConditionalGeneration` as an unpruned
    pruned-format model sharing its weights."""
    return build_pruned_model(model, None)
