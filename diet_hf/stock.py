"""A pruned model as a stock transformers checkpoint (`Gemma2ForCausalLM`, `Gemma3ForCausalLM`, ...): every layer
zero-padded to the largest MLP width and head count of any layer, so one global size fits all, which is what stock
configs and the runtimes that read them (llama.cpp's GGUF converter, MLX, serving engines) can hold.

Zero padding is exact: a padded MLP channel has zero `gate_proj` / `up_proj` rows and a zero `down_proj` column, so it
adds GELU(0) * 0 * 0 = 0; a padded query head has a zero `o_proj` block, a padded KV head zero `k_proj` / `v_proj`
rows, read only by padded query heads; a removed sublayer becomes one of all-zero projections, whose output is zero,
and so is the output of Gemma's post-norm of it. A compensation bias has no place in a stock Gemma, so a model that
has non-zero ones is refused (prune with `bias_compensation=False`); all-zero ones are dropped.

The price is the padding: a model whose layers differ little in size (the default recipe's uniform allocation) pays
almost nothing; one pruned unevenly pays up to the largest layer's size in every layer.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoConfig

from ._io import atomic_directory, check_output_is_not_input
from .constants import FAMILIES, block_parameters, head_dim, layer_sizes
from .loading import text_config
from .surgery import _dispatch, check_no_adapters, is_quantized, offloaded_weights

__all__ = ["StockShape", "export_stock", "stock_shape", "to_stock_model"]

# a pruned class's name ends like the stock class of the same kind; the family table names that stock class
_KIND_BY_SUFFIX = {
    "ForCausalLM": "dense_causal_lm_class",
    "ForSequenceClassification": "dense_sequence_classifier_class",
    "ForTokenClassification": "dense_token_classifier_class",
    "Model": "dense_base_model_class",
}
# an image-text Gemma 3 pruned in its text decoder: the stock image-text classes
_IMAGE_TEXT_CLASSES = {
    "PrunedGemma3ForConditionalGeneration": "Gemma3ForConditionalGeneration",
    "PrunedGemma3Model": "Gemma3Model",
}
# the model types a stock export takes: the pruned text models, and an image-text Gemma 3 pruned in its text decoder
_PRUNED_TYPES = (*sorted(f.pruned_model_type for f in FAMILIES), "pruned_gemma3")
# keys of a pruned config that a stock one does not have
_PRUNED_ONLY_KEYS = (
    "per_layer_config",
    "_per_layer_overrides",
    "intermediate_size_per_layer",
    "num_attention_heads_per_layer",
    "num_key_value_heads_per_layer",
    "o_proj_bias",
    "down_proj_bias",
    "auto_map",
    "architectures",
    "transformers_version",
)


@dataclass(frozen=True)
class StockShape:
    """The one global size every layer is padded to, and what the padding costs.

    Attributes:
        intermediate_size: the largest MLP width of any layer.
        num_key_value_heads: the largest KV head count of any layer.
        num_attention_heads: `num_key_value_heads` times the largest number of query heads per KV head of any layer
            (each layer's groups stay whole: KV head r serves the query heads r * group .. r * group + group - 1).
        padded_parameters: the zero parameters the padding adds to the decoder blocks.
        block_parameters: the pruned decoder blocks' parameters (projections, as `PruningPlan.block_parameters`).
    """

    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    padded_parameters: int
    block_parameters: int

    def to_dict(self) -> dict:
        return asdict(self)


def stock_shape(config) -> StockShape:
    """The global sizes a pruned text `config` pads to (see `StockShape`)."""
    sizes = [layer_sizes(config, i) for i in range(config.num_hidden_layers)]
    width = max(1, max(w for w, _, _ in sizes))
    kv = max(1, max(k for _, _, k in sizes))
    group = max([q // k for _, q, k in sizes if k] or [1])
    hidden, d = config.hidden_size, head_dim(config)
    pruned = sum(block_parameters(hidden, d, w, q, k) for w, q, k in sizes)
    stock = len(sizes) * block_parameters(hidden, d, width, group * kv, kv)
    return StockShape(width, group * kv, kv, stock - pruned, pruned)


def _stock_class(model) -> type:
    """The stock transformers class of the same kind as the pruned `model`'s; `ValueError` where there is none."""
    name = type(model).__name__
    stock_name = _IMAGE_TEXT_CLASSES.get(name)
    if stock_name is None:
        family = next((f for f in FAMILIES if f.pruned_model_type == model.config.model_type), None)
        if family is None:
            raise ValueError(
                f"`model` must be a pruned Gemma model saved by diet-hf ({', '.join(_PRUNED_TYPES)}); got a "
                f"{name} of model_type {model.config.model_type!r}."
            )
        kind = next((field for suffix, field in _KIND_BY_SUFFIX.items() if name.endswith(suffix)), None)
        stock_name = getattr(family, kind) if kind else None
    stock_class = getattr(transformers, stock_name, None) if stock_name else None
    if stock_class is None:
        raise ValueError(f"transformers has no stock class for a {name}: it cannot be exported as a stock model.")
    return stock_class


def _decoder_layers(model) -> tuple[str, nn.ModuleList]:
    """The name and the module list of `model`'s text decoder layers (not the vision tower's)."""
    text = text_config(model.config)
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and name.split(".")[-1] == "layers"
            and len(module) == text.num_hidden_layers
            and type(module[0]).__name__.endswith("DecoderLayer")
        ):
            return name, module
    raise ValueError(f"found no decoder layers in {type(model).__name__}")


def _stock_text_config_values(values: dict, shape: StockShape, dense_model_type: str) -> dict:
    """A pruned text config's dict as a stock one's: the padded global sizes, the pruned-only keys gone, the pruning
    record (`pruning`) kept as provenance beside `diet_hf_stock_export`."""
    values = {k: v for k, v in values.items() if k not in _PRUNED_ONLY_KEYS}
    values.update(
        model_type=dense_model_type,
        intermediate_size=shape.intermediate_size,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        diet_hf_stock_export=shape.to_dict(),
    )
    return values


def _stock_config(config, shape: StockShape):
    """The stock config of a pruned `config` (text, or image-text with a pruned `text_config`)."""
    values = config.to_dict()
    if config.model_type == "pruned_gemma3":  # image-text: the text config is the pruned one
        text = text_config(config)
        values["text_config"] = _stock_text_config_values(values["text_config"], shape, "gemma3_text")
        values = {k: v for k, v in values.items() if k not in _PRUNED_ONLY_KEYS}
        values["model_type"] = "gemma3"
        values["text_config"]["head_dim"] = head_dim(text)
    else:
        family = next(f for f in FAMILIES if f.pruned_model_type == config.model_type)
        values = _stock_text_config_values(values, shape, family.dense_model_type)
        values["head_dim"] = head_dim(config)
    model_type = values.pop("model_type")
    if "id2label" in values:  # the labels are there; a `num_labels` beside them only draws a warning
        values.pop("num_labels", None)
    stock = AutoConfig.for_model(model_type, **values)
    stock._attn_implementation = config._attn_implementation  # as the pruned model runs (not saved: a load chooses)
    return stock


def _check_weights(model) -> None:
    """Refuses a model whose weights are offloaded (meta device) or quantized: padding copies float tensors."""
    offloaded = offloaded_weights(model)
    if offloaded:
        raise ValueError(
            f"`model` has {len(offloaded)} weights offloaded to the meta device (e.g. `{offloaded[0]}`); load it "
            'where it fits whole (e.g. `device_map="cpu"`) to export it as a stock model.'
        )
    if is_quantized(model):
        raise ValueError(
            "`model` is quantized: export the float model as a stock one, then quantize that (as you would the dense "
            "model)."
        )


def _attention_biases(config, layout) -> set[str]:
    """The biases of a decoder layer that a stock layer holds: with `attention_bias`, its attention's projections'
    (and a removed attention's output bias, which a stock attention of all-zero projections outputs alone)."""
    if not getattr(config, "attention_bias", False):
        return set()
    return {f"{layout.attention}.{name}.bias" for name in layout.attention_projection_names} | {
        f"{layout.attention}.bias"
    }


def _check_biases(layer_idx: int, tensors: dict[str, torch.Tensor], held: set[str]) -> None:
    """Refuses a layer with a non-zero bias that the stock layer has no place for (not in `held`, the
    `_attention_biases`): a compensation bias."""
    for name, tensor in tensors.items():
        if name.endswith("bias") and name not in held and torch.count_nonzero(tensor):
            raise ValueError(
                f"The pruned model has compensation biases (layer {layer_idx}: {name}), which stock Gemma has no "
                "place for: it cannot be exported as a stock model. Prune with `bias_compensation=False` (CLI: "
                "`diet-hf prune --no-bias-compensation`) for one that can."
            )


def _padded_layer(
    pruned: dict[str, torch.Tensor], shapes: dict[str, torch.Size], sizes, shape: StockShape, d: int, layout
) -> dict[str, torch.Tensor]:
    """One decoder layer's stock tensors (`shapes`: the stock layer's) from the pruned layer's `pruned` tensors of
    `sizes` (MLP width, query heads, KV heads), zero where the pruned layer has nothing; new tensors, on the pruned
    layer's device and in its dtype."""
    like = next(iter(pruned.values()))
    out = {name: torch.zeros(size, dtype=like.dtype, device=like.device) for name, size in shapes.items()}
    removed_bias = f"{layout.attention}.bias"  # a removed attention's output bias (its stand-in's)
    # biases the stock layer has no place for: checked by `_check_biases`, all zero, dropped
    used = {name for name in pruned if name.endswith("bias") and name not in out and name != removed_bias}

    missing = []

    def put(name: str, fill) -> None:
        if name not in pruned:
            missing.append(name)
            return
        fill(out[name], pruned[name])
        used.add(name)

    width, heads, kv = sizes
    mlp = {role: f"{layout.mlp}.{getattr(layout, role)}.weight" for role in ("gate", "up", "down")}
    if width:
        put(mlp["gate"], lambda dst, src: dst[:width].copy_(src))
        put(mlp["up"], lambda dst, src: dst[:width].copy_(src))
        put(mlp["down"], lambda dst, src: dst[:, :width].copy_(src))
    paths = {role: f"{layout.attention}.{getattr(layout, role)}" for role in ("query", "key", "value", "output")}
    attn = {role: f"{path}.weight" for role, path in paths.items()}
    biases = {role: f"{path}.bias" for role, path in paths.items()}
    if heads:
        group, stock_group = heads // kv, shape.num_attention_heads // shape.num_key_value_heads
        # query head j of KV group r: row block r * group + j of the pruned layer, r * stock_group + j of the stock one
        slots = [(r * stock_group + j, r * group + j) for r in range(kv) for j in range(group)]

        def query_rows(dst, src):
            for to, source in slots:
                dst[to * d : (to + 1) * d] = src[source * d : (source + 1) * d]

        def output_columns(dst, src):
            for to, source in slots:
                dst[:, to * d : (to + 1) * d] = src[:, source * d : (source + 1) * d]

        def kv_rows(dst, src):  # the KV heads in order, the padded ones after them
            dst[: kv * d].copy_(src)

        put(attn["query"], query_rows)
        put(attn["key"], kv_rows)
        put(attn["value"], kv_rows)
        put(attn["output"], output_columns)
        if biases["query"] in out:  # `attention_bias`: the same rows, padded heads with zero bias
            put(biases["query"], query_rows)
            put(biases["key"], kv_rows)
            put(biases["value"], kv_rows)
            put(biases["output"], lambda dst, src: dst.copy_(src))
    elif removed_bias in pruned:
        if biases["output"] in out:  # all-zero projections: the stock attention outputs this bias alone
            out[biases["output"]].copy_(pruned[removed_bias])
        used.add(removed_bias)  # else all zero (`_check_biases`): dropped
    for name, tensor in pruned.items():  # norms (a removed sublayer's input norm is absent: zero, i.e. scale 1)
        if name not in used and name in out and out[name].shape == tensor.shape:
            put(name, lambda dst, src: dst.copy_(src))
    left = sorted(set(pruned) - used)
    if left or missing:
        raise ValueError(
            f"unexpected weights in a pruned decoder layer: {left}" + (f", and none of {missing}" if missing else "")
        )
    return out


@torch.no_grad()
def to_stock_model(model):
    """The stock transformers model that computes what the pruned `model` computes (see the module's docstring):
    `Gemma2ForCausalLM` / `Gemma3ForCausalLM` for a causal LM, the stock class of the same kind for a base model, a
    sequence or token classifier (where transformers has one) and an image-text Gemma 3. Its decoder layers are new
    tensors on `model`'s devices and in its dtype; everything else (embeddings, final norm, head, vision tower) is
    `model`'s own tensors, shared, not copied (train one and the other changes). No stock weights are initialized
    first: the stock model is built without weights (accelerate's `init_empty_weights`) and takes these tensors.
    Its config's `diet_hf_stock_export` records the padded sizes and what the padding cost (`StockShape`);
    `pruning`, the pruning record, stays. `ValueError` for a model that is not a pruned one, has non-zero
    compensation biases, or has no stock class. Save it with `save_pretrained`; the tokenizer is the pruned model's.
    """
    # a `PeftModel` wrapper too, before its class is read
    check_no_adapters(model, "model", "the stock export pads the base weights alone and would leave the adapters out")
    stock_class = _stock_class(model)
    _check_weights(model)
    text = text_config(model.config)
    family = next(f for f in FAMILIES if f.pruned_model_type == text.model_type)
    prefix, layers = _decoder_layers(model)
    held = _attention_biases(text, family.layout)
    for layer_idx, layer in enumerate(layers):
        _check_biases(layer_idx, layer.state_dict(), held)
    shape = stock_shape(text)
    with init_empty_weights():  # parameters on the meta device; buffers (RoPE frequencies) computed as usual
        stock = stock_class(_stock_config(model.config, shape))
    if getattr(model, "generation_config", None) is not None:
        stock.generation_config = model.generation_config
    _, stock_layers = _decoder_layers(stock)
    state = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith(prefix + ".")}
    d = head_dim(text)
    for layer_idx, (layer, stock_layer) in enumerate(zip(layers, stock_layers)):
        shapes = {name: tensor.shape for name, tensor in stock_layer.state_dict().items()}
        padded = _padded_layer(layer.state_dict(), shapes, layer_sizes(text, layer_idx), shape, d, family.layout)
        state.update({f"{prefix}.{layer_idx}.{name}": tensor for name, tensor in padded.items()})
    stock.load_state_dict(state, strict=True, assign=True)
    stock.tie_weights()
    buffers = dict(model.named_buffers())
    for name, value in list(stock.named_buffers()):  # RoPE frequencies, embedding scale: the pruned model's own
        if name in buffers and buffers[name].shape == value.shape:
            module, _, leaf = name.rpartition(".")
            stock.get_submodule(module)._buffers[leaf] = buffers[name]
    device_map = getattr(model, "hf_device_map", None)
    if device_map:  # split across devices: the same map, and the hooks that move inputs between them
        _dispatch(stock, device_map)
    else:  # the buffers built on the CPU go where the weights are
        stock.to(next(model.parameters()).device)
    return stock.train(model.training)


def export_stock(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    max_shard_size: int | str | None = None,
    validate: bool = True,
    atol: float = 1e-4,
) -> tuple[Path, StockShape]:
    """Saves a pruned model saved by diet-hf (a local directory, or a Hub repository read at `revision` with `token`)
    as a stock transformers checkpoint in the new directory `output` (`to_stock_model`), with its tokenizer, its
    generation config and a model card (`README.md`: what the padding added, how the model was pruned, how to load and
    convert it; `card.write_stock_card`). It loads with `AutoModelForCausalLM.from_pretrained(output)`, no remote
    code, and converts with the tools that read stock Gemma checkpoints (llama.cpp's `convert_hf_to_gguf.py`, MLX).

    With `validate`, the stock model's logits on a few tokens are compared with the pruned model's (at most `atol`
    apart) before anything is written. Everything is written into a temporary folder beside `output` and moved into
    place at the end, so a failure leaves nothing. Returns `output` and the padded shape (`StockShape`).
    """
    from ._checks import check_shard_size
    from .card import write_stock_card
    from .hub import local_checkpoint, register_auto_classes
    from .loading import load_pretrained

    check_shard_size("max_shard_size", max_shard_size)
    output = Path(output)
    if output.is_dir() and any(output.iterdir()):
        raise ValueError(f"`output` {output} exists and is not empty; choose a new directory.")
    model_dir = local_checkpoint(model, revision=revision, token=token)
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"`model` must be a directory with a config.json; {model_dir} has none.")
    check_output_is_not_input(output, "output", {"model": model_dir})
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in _PRUNED_TYPES:
        raise ValueError(
            f"`model` must be a pruned Gemma model saved by diet-hf ({', '.join(_PRUNED_TYPES)}); {model_dir} holds "
            f"model_type {model_type!r}."
        )
    register_auto_classes()
    pruned = _load_saved_class(model_dir, load_pretrained)
    stock = to_stock_model(pruned)
    if validate:
        _validate(pruned, stock, atol)
    shape = stock_shape(text_config(pruned.config))
    with atomic_directory(output, argument="output") as tmp:
        stock.save_pretrained(tmp, **({} if max_shard_size is None else {"max_shard_size": max_shard_size}))
        _copy_tokenizer_files(Path(model_dir), tmp)
        write_stock_card(tmp, pruned.config, shape, type(stock).__name__)
    return output, shape


def _load_saved_class(model_dir, load_pretrained):
    """The pruned model in the class its config.json's `architectures` names (a causal LM otherwise)."""
    from .hub import modeling_module

    architectures = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []
    model_class = getattr(modeling_module(), architectures[0], None) if architectures else None
    if model_class is None:
        return load_pretrained(model_dir)
    return model_class.from_pretrained(model_dir)


def _validate(pruned, stock, atol: float) -> None:
    """Compares the two models' outputs on a few tokens; `RuntimeError` where they differ by more than `atol`."""
    config = text_config(pruned.config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (1, 8), generator=generator).to(next(pruned.parameters()).device)
    with torch.no_grad():
        expected, got = pruned(input_ids=ids)[0], stock(input_ids=ids)[0]
    difference = (expected.float() - got.float()).abs().max().item()
    if not difference <= atol:
        raise RuntimeError(
            f"the stock model's outputs differ from the pruned model's by {difference:.3g} (atol {atol})"
        )


# what a tokenizer and a generation config are saved as (every transformers release); copied as they are
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
)


def _copy_tokenizer_files(source: Path, target: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
