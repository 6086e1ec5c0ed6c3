"""Loading a dense model as the causal LM diet-hf prunes, scores and distills from, and putting an image-text model
back together around its pruned text decoder.

Gemma 3 from 4B up is published as an image-text model (`Gemma3ForConditionalGeneration`, `model_type` `"gemma3"`,
its decoder's config as `text_config`). diet-hf prunes its text decoder: `text_causal_lm` wraps the loaded model's
language model and LM head (the same modules, no copy) as a `Gemma3ForCausalLM`. Loading the checkpoint into
`Gemma3ForCausalLM` directly does not do this on every transformers release (5.x leaves every decoder weight freshly
initialized, only warning), so it is done here, the same way on all of them. `image_text_model` puts the pruned
decoder back beside the unchanged vision tower and projector, as a `PrunedGemma3ForConditionalGeneration`; the same
two functions read a pruned image-text checkpoint's text model for healing and scoring, and put it back after healing.
"""

import copy
import json
import logging
import os
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ._io import is_adapter_directory
from .constants import ADAPTER_CONFIG_FILE

__all__ = [
    "adapter_of",
    "image_text_model",
    "is_image_text",
    "load_causal_lm",
    "load_pretrained",
    "load_processor",
    "load_tokenizer",
    "peft_adapter",
    "read_config",
    "text_causal_lm",
    "text_config",
]

logger = logging.getLogger(__name__)

# model_type of an image-text checkpoint -> model_type of its text decoder, which diet-hf prunes
_MULTIMODAL_TEXT_TYPES = {"gemma3": "gemma3_text", "pruned_gemma3": "pruned_gemma3_text"}


def is_image_text(config) -> bool:
    """Whether `config` is an image-text Gemma 3's (dense, or pruned by diet-hf): diet-hf works on its text decoder."""
    text = getattr(config, "text_config", None)
    return (
        getattr(config, "model_type", None) in _MULTIMODAL_TEXT_TYPES
        and getattr(text, "model_type", None) == _MULTIMODAL_TEXT_TYPES[config.model_type]
    )


def text_config(config):
    """The config of the text decoder diet-hf works on: an image-text Gemma 3's `text_config`, else `config`."""
    return config.text_config if is_image_text(config) else config


def text_causal_lm(model):
    """`model` itself, or an image-text Gemma 3's decoder and LM head as a `Gemma3ForCausalLM` (the same modules)."""
    if not is_image_text(model.config):
        return model
    if model.config.model_type == "pruned_gemma3":  # the text class of the same remote-code module
        causal_lm_class = sys.modules[type(model).__module__].PrunedGemma3ForCausalLM
    else:
        from transformers import Gemma3ForCausalLM as causal_lm_class

    language_model = getattr(model.model, "language_model", None) if hasattr(model, "model") else None
    if language_model is None or not hasattr(model, "lm_head"):
        raise ValueError(
            f"`model` is a {type(model).__name__} without `model.language_model` and `lm_head`; pass a "
            "`Gemma3ForConditionalGeneration` or the text model itself (`Gemma3ForCausalLM`)."
        )
    config = model.config.text_config  # the decoder's own config object, so both read the same attributes
    config._name_or_path = model.config._name_or_path
    config.tie_word_embeddings = getattr(model.config, "tie_word_embeddings", config.tie_word_embeddings)
    with torch.device("meta"):  # no weights made: the loaded model's are moved in
        causal = causal_lm_class(config)
    causal.model = language_model
    causal.lm_head = model.lm_head
    causal.generation_config = model.generation_config
    device_map = getattr(model, "hf_device_map", None)
    if device_map is not None:  # its module names as the text model sees them; the vision tower's left out
        causal.hf_device_map = {
            name.replace("model.language_model", "model", 1): device
            for name, device in device_map.items()
            if name in ("", "model") or name.startswith(("model.language_model", "lm_head"))
        }
    causal.train(model.training)
    causal.diet_source_architecture = type(model).__name__  # recorded by `prune` (`base_model_architecture`)
    return causal


def image_text_model(source, text_model):
    """The image-text model of `source` with `text_model` as its text decoder and LM head: a
    `PrunedGemma3ForConditionalGeneration` holding `source`'s vision tower and projector and `text_model`'s decoder
    and head (the same modules, no copy), its config `source`'s with `text_model.config` as `text_config`.

    Args:
        source (`Gemma3ForConditionalGeneration` or `PrunedGemma3ForConditionalGeneration`): the image-text model the
            text decoder came from (the dense model pruned, or the pruned model healed).
        text_model (`PrunedGemma3ForCausalLM`): its pruned (or healed) text model.
    """
    if not is_image_text(source.config):
        raise ValueError(f"`source` must be an image-text Gemma 3, got a {type(source).__name__}.")
    if getattr(text_model.config, "model_type", None) != "pruned_gemma3_text":
        raise ValueError(
            f"`text_model` must be a pruned Gemma 3 text model (`PrunedGemma3ForCausalLM`), got a "
            f"{type(text_model).__name__}."
        )
    module = sys.modules[type(text_model).__module__]  # the classes of the text model's own remote-code module
    fields = source.config.to_dict()
    for key in ("text_config", "vision_config", "model_type", "architectures", "auto_map", "pruning"):
        fields.pop(key, None)
    config = module.PrunedGemma3Config(
        text_config=text_model.config, vision_config=copy.deepcopy(source.config.vision_config), **fields
    )
    config._name_or_path = getattr(text_model.config, "_name_or_path", "")
    with torch.device("meta"):  # no weights made: the two models' modules are moved in
        model = module.PrunedGemma3ForConditionalGeneration(config)
    model.model.vision_tower = source.model.vision_tower
    model.model.multi_modal_projector = source.model.multi_modal_projector
    model.model.language_model = text_model.model
    model.lm_head = text_model.lm_head
    model.generation_config = copy.deepcopy(text_model.generation_config)
    if getattr(text_model, "diet_plan", None) is not None:
        model.diet_plan = text_model.diet_plan
    device_map = getattr(source, "hf_device_map", None)
    if device_map is not None:
        model.hf_device_map = dict(device_map)
    model.train(text_model.training)
    return model


# `from_pretrained`'s keywords that say where and how a checkpoint's files are read (the config's, the tokenizer's and
# the processor's loads take them as the model's does)
HUB_KEYWORDS = ("revision", "token", "cache_dir", "gguf_file", "local_files_only", "force_download")


def hub_keywords(from_pretrained_kwargs: dict, *also: str) -> dict:
    """The `HUB_KEYWORDS` (and the keywords `also`) among `from_pretrained_kwargs` that are set."""
    return {k: from_pretrained_kwargs[k] for k in (*HUB_KEYWORDS, *also) if from_pretrained_kwargs.get(k) is not None}


# the `HUB_KEYWORDS` PEFT's reads of an adapter's files take (`hf_hub_download`'s)
_ADAPTER_HUB_KEYWORDS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


def peft_adapter(model_id_or_path: str | os.PathLike, **hub_kwargs) -> dict | None:
    """The `adapter_config.json` of a PEFT adapter checkpoint: a directory or Hub repository that holds an adapter
    (`PeftModel.save_pretrained`, a LoRA fine-tune's usual output) and no model of its own, which transformers'
    `from_pretrained` loads as the base model the adapter names with the adapter applied. None for anything else: a
    local directory with a `config.json` beside an adapter is a model and loads as one, as in transformers; a GGUF
    file (`gguf_file=`) is a model. A local directory is read without asking the Hub; of a Hub repository the file
    is looked up as transformers' own loads do (`find_adapter_config_file`, with the `HUB_KEYWORDS` given)."""
    if hub_kwargs.get("gguf_file"):
        return None
    path = Path(os.fspath(model_id_or_path)).expanduser()
    if path.is_dir():
        if not is_adapter_directory(path):
            return None
        found = path / ADAPTER_CONFIG_FILE
    else:
        from transformers.utils import find_adapter_config_file

        keywords = {k: hub_kwargs[k] for k in _ADAPTER_HUB_KEYWORDS if hub_kwargs.get(k) is not None}
        found = find_adapter_config_file(os.fspath(model_id_or_path), **keywords)
        if found is None:
            return None
    adapter = json.loads(Path(found).read_text(encoding="utf-8"))
    if not adapter.get("base_model_name_or_path"):
        raise ValueError(
            f"{model_id_or_path} holds a PEFT adapter whose {ADAPTER_CONFIG_FILE} names no base model "
            "(`base_model_name_or_path`): load the base model, apply the adapter with PEFT "
            "(`PeftModel.from_pretrained(base, adapter).merge_and_unload()`) and pass the merged model."
        )
    return adapter


def adapter_of(adapter: dict) -> str:
    """What a `peft_adapter` is, for messages: "a PEFT LORA adapter of BASE"."""
    kind = f"PEFT {adapter['peft_type']}" if adapter.get("peft_type") else "PEFT"
    return f"a {kind} adapter of {adapter['base_model_name_or_path']}"


def _adapter_base(adapter: dict, keywords: dict) -> tuple[str, dict]:
    """The base model a PEFT adapter names and the `from_pretrained` keywords to read it with: `keywords`, except
    that the revision is the one the adapter was trained on (its config's `revision`; the main branch where it names
    none), not the adapter's own."""
    return adapter["base_model_name_or_path"], {**keywords, "revision": adapter.get("revision")}


def read_config(model_id_or_path: str | os.PathLike, **hub_kwargs):
    """`AutoConfig.from_pretrained(model_id_or_path, **hub_kwargs)`; of a PEFT adapter checkpoint (`peft_adapter`),
    the config of the base model it names, as transformers' `from_pretrained` reads it. Of a GGUF file
    (`gguf_file=`) it first says what the wait is: transformers parses the file's whole metadata for the config, and
    again for the weights and the tokenizer (about 20 s each for Gemma's 262k-token vocabulary on 2 CPU cores), with
    no progress bar of its own."""
    if hub_kwargs.get("gguf_file"):
        logger.info(
            "Reading %s from %s: transformers parses a GGUF file's whole metadata for the config, then again for the "
            "weights and the tokenizer (about 20 s each for Gemma's 262k-token vocabulary on 2 CPU cores).",
            hub_kwargs["gguf_file"],
            model_id_or_path,
        )
    # asked first: of a checkpoint without config.json, transformers 4.57 returns the default config of any model
    # type its name contains ("gemma2-lora": a default Gemma2Config)
    adapter = peft_adapter(model_id_or_path, **hub_kwargs)
    if adapter is not None:
        base, keywords = _adapter_base(adapter, hub_kwargs)
        return AutoConfig.from_pretrained(base, **keywords)
    return AutoConfig.from_pretrained(model_id_or_path, **hub_kwargs)


def _merged_adapter(model, adapter_location, adapter: dict, hub_kwargs: dict):
    """`model` (the base model) with the PEFT adapter at `adapter_location` applied and merged into its weights
    (PEFT's `PeftModel.from_pretrained` and `merge_and_unload`): pruning cuts the weights the adapter adapts, and
    every other step of diet-hf reads them as they are. An adapter that cannot be merged (prompt learning: virtual
    tokens, no weight of the model changed) is refused."""
    from peft import PeftModel

    keywords = {k: hub_kwargs[k] for k in _ADAPTER_HUB_KEYWORDS if hub_kwargs.get(k) is not None}
    peft_model = PeftModel.from_pretrained(model, os.fspath(adapter_location), **keywords)
    config = peft_model.active_peft_config
    if config.is_prompt_learning or not hasattr(peft_model.base_model, "merge_and_unload"):
        kind = "prompt-learning adapter (virtual tokens before the input)" if config.is_prompt_learning else "adapter"
        raise ValueError(
            f"{adapter_location} holds a PEFT {config.peft_type.value} {kind} that cannot be merged into the model's "
            f"weights, and diet-hf works on plain weights. Pass its base model, {adapter['base_model_name_or_path']}."
        )
    logger.info("%s holds %s: it is merged into the base model's weights.", adapter_location, adapter_of(adapter))
    return peft_model.merge_and_unload()


def load_pretrained(model_id_or_path: str | os.PathLike, config=None, **from_pretrained_kwargs):
    """`AutoModelForCausalLM.from_pretrained`, except that an image-text Gemma 3 checkpoint loads as the image-text
    model (`Gemma3ForConditionalGeneration`) on every transformers release; `text_causal_lm` gives its text model.

    Args:
        model_id_or_path (`str` or `os.PathLike`): Hub id or local directory.
        config (`PretrainedConfig`, *optional*): the checkpoint's config, if already read.
        from_pretrained_kwargs: passed to `from_pretrained` (`dtype`, `device_map`, `revision`, ...).
    """
    if config is None:
        config = read_config(model_id_or_path, **hub_keywords(from_pretrained_kwargs, "trust_remote_code"))
    adapter = peft_adapter(model_id_or_path, **hub_keywords(from_pretrained_kwargs))
    if adapter is not None:  # the base model read as any model is, then the adapter merged into it
        base, keywords = _adapter_base(adapter, from_pretrained_kwargs)
        model = load_pretrained(base, config, **keywords)
        return _merged_adapter(model, model_id_or_path, adapter, hub_keywords(from_pretrained_kwargs))
    if from_pretrained_kwargs.get("gguf_file"):
        if "quantization_config" not in from_pretrained_kwargs:
            from_pretrained_kwargs = {**from_pretrained_kwargs, **_gguf_dequantized()}
        if from_pretrained_kwargs.keys() <= _LOADING_KEYWORDS:
            # transformers parses a GGUF's whole metadata for its config (20 s and 0.7 GB of Python objects for the
            # 270M's 262k-token vocabulary): the config read above is handed on instead of being parsed again.
            # Not with other keywords: `from_pretrained` applies config attributes among them only when it reads
            # the config itself
            from_pretrained_kwargs = {**from_pretrained_kwargs, "config": config}
    if getattr(config, "model_type", None) != "gemma3" or not is_image_text(config):
        return AutoModelForCausalLM.from_pretrained(model_id_or_path, **from_pretrained_kwargs)
    from transformers import Gemma3ForConditionalGeneration

    logger.info("%s is an image-text model: diet-hf works on its text decoder and LM head", model_id_or_path)
    return Gemma3ForConditionalGeneration.from_pretrained(model_id_or_path, **from_pretrained_kwargs)


# what a tokenizer read from a GGUF file in a Hub repository may read beside the file (Gemma's tokenizers)
_GGUF_TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "additional_chat_templates/*",
)


def load_tokenizer(model_id_or_path: str | os.PathLike, config=None, **from_pretrained_kwargs):
    """`AutoTokenizer.from_pretrained`. Of a GGUF file (`gguf_file=`), `config`, the model's config already read, is
    handed on, as `load_pretrained` hands it on to the model: transformers 4.57 parses the file's metadata again for
    the tokenizer class otherwise (20 s on the 270M). Of a GGUF file in a Hub repository, the file and the tokenizer
    files beside it are read from the repository at `revision`, in the Hub cache the model's load filled
    (`hub.local_checkpoint`, with the load's `local_files_only` and `force_download`): transformers 5.x's tokenizer
    reads the file from the Hub a second time without the revision it was given, so of a repository whose main branch
    has moved on it parsed the main branch's file (another tokenizer, and a download of the whole file). Of a PEFT
    adapter checkpoint saved without a tokenizer (`peft_adapter`), the tokenizer of its base model."""
    from transformers import AutoTokenizer

    from ._io import TOKENIZER_FILES

    path = Path(os.fspath(model_id_or_path)).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        adapter = peft_adapter(model_id_or_path, **hub_keywords(from_pretrained_kwargs))
        if adapter is not None:  # an adapter saved without its tokenizer: the base model's
            base, keywords = _adapter_base(adapter, from_pretrained_kwargs)
            return AutoTokenizer.from_pretrained(base, **keywords)
    gguf_file = from_pretrained_kwargs.get("gguf_file")
    if gguf_file:
        from .hub import local_checkpoint

        if config is not None:
            from_pretrained_kwargs = {**from_pretrained_kwargs, "config": config}
        model_id_or_path = local_checkpoint(
            model_id_or_path,
            **{k: from_pretrained_kwargs.get(k) for k in ("revision", "token", "cache_dir")},
            local_files_only=bool(from_pretrained_kwargs.get("local_files_only")),
            force_download=bool(from_pretrained_kwargs.get("force_download")),
            allow_patterns=[gguf_file, *_GGUF_TOKENIZER_FILES],
        )
    try:
        return AutoTokenizer.from_pretrained(model_id_or_path, **from_pretrained_kwargs)
    except (OSError, ValueError):  # a Hub repository of an adapter without its tokenizer: the base model's
        adapter = None if path.is_dir() or gguf_file else peft_adapter(model_id_or_path, **from_pretrained_kwargs)
        if adapter is None:
            raise
    base, keywords = _adapter_base(adapter, from_pretrained_kwargs)
    return AutoTokenizer.from_pretrained(base, **keywords)


# `from_pretrained`'s keywords that say where and how to load, none of them a config attribute
_LOADING_KEYWORDS = frozenset(
    {
        *HUB_KEYWORDS,
        "attn_implementation",
        "device_map",
        "dtype",
        "low_cpu_mem_usage",
        "max_memory",
        "offload_folder",
        "quantization_config",
        "torch_dtype",
        "trust_remote_code",
    }
)


def _gguf_dequantized() -> dict:
    """`from_pretrained`'s keywords that read a GGUF file into plain float weights: pruning cuts and refits them, so
    they cannot stay in GGUF blocks (which transformers 5 keeps for the architectures its packed GGUF loader knows,
    where a matmul kernel is available); transformers 4.57 always dequantizes and has no such option."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def gguf_commit(
    model_id_or_path,
    revision: str | None = None,
    token: str | None = None,
    *,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> str | None:
    """The commit of the Hub repository a model was read from a GGUF file of at `revision` (transformers records none
    for one, so the pruning record would name no revision); None for a local directory, or where the Hub cannot be
    asked. With `local_files_only` (or `HF_HUB_OFFLINE`) nothing is asked of the Hub: the commit is the one the Hub
    cache holds `gguf_file` at `revision` under."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    from ._io import is_local_location

    if is_local_location(model_id_or_path):
        return None
    if local_files_only or constants.HF_HUB_OFFLINE:
        if gguf_file is None:
            return None
        cached = try_to_load_from_cache(str(model_id_or_path), gguf_file, cache_dir=cache_dir, revision=revision)
        # .../snapshots/<commit>/<gguf_file>
        return Path(cached).parents[len(Path(gguf_file).parts) - 1].name if isinstance(cached, str) else None
    try:
        return HfApi(token=token).model_info(str(model_id_or_path), revision=revision).sha
    except Exception:  # offline, or no permission: the record names no revision, as before
        return None


def load_causal_lm(model_id_or_path: str | os.PathLike, config=None, **from_pretrained_kwargs):
    """`AutoModelForCausalLM.from_pretrained`, except that an image-text Gemma 3 checkpoint (dense, or pruned by
    diet-hf) loads as its text model (`text_causal_lm`). Arguments as `load_pretrained`'s."""
    return text_causal_lm(load_pretrained(model_id_or_path, config, **from_pretrained_kwargs))


def load_processor(model_id_or_path: str | os.PathLike, **hub_kwargs):
    """An image-text checkpoint's processor (its tokenizer and image processor), saved beside a pruned or healed
    image-text model; None, with a warning, where the checkpoint has none that loads. Of a PEFT adapter checkpoint
    (`peft_adapter`) without a processor of its own, its base model's."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model_id_or_path, **hub_kwargs)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        adapter = peft_adapter(model_id_or_path, **hub_kwargs)  # asked only now: a model's load asks the Hub no more
        if adapter is None:
            logger.warning(
                "%s is an image-text model without a processor that loads (%s): the pruned model is saved with its "
                "tokenizer alone.",
                model_id_or_path,
                error,
            )
            return None
    base, keywords = _adapter_base(adapter, hub_kwargs)  # an adapter saved without its processor: the base model's
    return load_processor(base, **keywords)
