"""Loading a dense model as the causal LM diet-hf prunes, scores and distills from.

Gemma 3 from 4B up is published as an image-text model (`Gemma3ForConditionalGeneration`, `model_type` `"gemma3"`,
its decoder's config as `text_config`). diet-hf prunes its text decoder: `text_causal_lm` wraps the loaded model's
language model and LM head (the same modules, no copy) as a `Gemma3ForCausalLM`, and the vision tower is dropped.
Loading the checkpoint into `Gemma3ForCausalLM` directly does not do this on every transformers release (5.x leaves
every decoder weight freshly initialized, only warning), so it is done here, the same way on all of them.
"""

import logging
import os

import torch
from transformers import AutoConfig, AutoModelForCausalLM

__all__ = ["load_causal_lm", "text_causal_lm", "text_config"]

logger = logging.getLogger(__name__)

# model_type of an image-text checkpoint -> model_type of its text decoder, which diet-hf prunes
_MULTIMODAL_TEXT_TYPES = {"gemma3": "gemma3_text"}


def _is_multimodal(config) -> bool:
    text = getattr(config, "text_config", None)
    return (
        getattr(config, "model_type", None) in _MULTIMODAL_TEXT_TYPES
        and getattr(text, "model_type", None) == _MULTIMODAL_TEXT_TYPES[config.model_type]
    )


def text_config(config):
    """The config of the text decoder diet-hf works on: an image-text Gemma 3's `text_config`, else `config`."""
    return config.text_config if _is_multimodal(config) else config


def text_causal_lm(model):
    """`model` itself, or an image-text Gemma 3's decoder and LM head as a `Gemma3ForCausalLM` (the same modules)."""
    if not _is_multimodal(model.config):
        return model
    from transformers import Gemma3ForCausalLM

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
        causal = Gemma3ForCausalLM(config)
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


def load_causal_lm(model_id_or_path: str | os.PathLike, config=None, **from_pretrained_kwargs):
    """`AutoModelForCausalLM.from_pretrained`, except that an image-text Gemma 3 checkpoint loads as its text model.

    Args:
        model_id_or_path (`str` or `os.PathLike`): Hub id or local directory.
        config (`PretrainedConfig`, *optional*): the checkpoint's config, if already read.
        from_pretrained_kwargs: passed to `from_pretrained` (`dtype`, `device_map`, `revision`, ...).
    """
    if config is None:
        keys = ("revision", "token", "cache_dir", "trust_remote_code")
        hub = {k: from_pretrained_kwargs[k] for k in keys if from_pretrained_kwargs.get(k) is not None}
        config = AutoConfig.from_pretrained(model_id_or_path, **hub)
    if not _is_multimodal(config):
        return AutoModelForCausalLM.from_pretrained(model_id_or_path, **from_pretrained_kwargs)
    from transformers import Gemma3ForConditionalGeneration

    logger.info("%s is an image-text model: loading it and keeping its text decoder and LM head", model_id_or_path)
    model = Gemma3ForConditionalGeneration.from_pretrained(model_id_or_path, **from_pretrained_kwargs)
    return text_causal_lm(model)
