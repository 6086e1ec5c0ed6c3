"""Locating the remote-code files, loading the pruned classes from them, and registering them with the Auto classes."""

import importlib
from functools import cache
from pathlib import Path
from types import ModuleType

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from .constants import REMOTE_CODE_FILES

__all__ = ["modeling_module", "register_auto_classes", "remote_code_dir", "remote_code_files"]

_PACKAGE = "diet_hf._remote_code"


def remote_code_dir() -> Path:
    """Directory of the two remote-code files (`modeling/` in the source tree, `diet_hf/_remote_code` installed)."""
    return Path(importlib.import_module(_PACKAGE).__file__).parent


def remote_code_files() -> list[Path]:
    """The remote-code files copied beside every saved `config.json`."""
    return [remote_code_dir() / name for name in REMOTE_CODE_FILES]


@cache
def modeling_module() -> ModuleType:
    """The module that defines the pruned config and model classes."""
    return importlib.import_module(f"{_PACKAGE}.modeling_pruned_gemma2")


@cache
def register_auto_classes() -> None:
    """Registers the pruned classes with the Auto classes, so in-process use needs no `trust_remote_code`."""
    module = modeling_module()
    for config_class in (module.PrunedGemma2Config, module.PrunedGemma3TextConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        names = config_class._auto_map_models
        AutoModel.register(config_class, getattr(module, names["AutoModel"]), exist_ok=True)
        AutoModelForCausalLM.register(config_class, getattr(module, names["AutoModelForCausalLM"]), exist_ok=True)
        AutoModelForSequenceClassification.register(
            config_class, getattr(module, names["AutoModelForSequenceClassification"]), exist_ok=True
        )
