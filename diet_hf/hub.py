"""Locating the remote-code files, loading the pruned classes from them, and registering them with the Auto classes."""

import functools
import importlib
import shutil
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

from huggingface_hub import HfApi
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from ._io import atomic_directory
from .constants import REMOTE_CODE_FILES

__all__ = [
    "modeling_module",
    "push_saved_model",
    "register_auto_classes",
    "remote_code_dir",
    "remote_code_files",
    "save_pruned_model",
]

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
    return importlib.import_module(f"{_PACKAGE}.modeling_pruned_gemma")


def _with_card(stock_save):
    @functools.wraps(
        stock_save
    )  # keeps `__wrapped__`: save_pruned_model calls the stock save and writes the rest once
    def save_pretrained(self, save_directory, *args, **kwargs):
        """The stock `save_pretrained`, then the model card, its plot and the plan (`diet_pruning.json`)."""
        from .card import write_model_card

        result = stock_save(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_model_card(save_directory, self.config)
            if getattr(self, "diet_plan", None) is not None:
                self.diet_plan.save_pretrained(save_directory)
        return result

    return save_pretrained


def _push_to_hub(
    self,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload DIET-pruned model",
    tokenizer=None,
    **kwargs,
):
    """`push_to_hub` of the in-process pruned classes: saves everything (card, plot, plan) and uploads one commit."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_pruned_model(self, Path(tmp) / "model", tokenizer=tokenizer, repo_id=repo_id)
        return push_saved_model(path, repo_id, private=bool(private), revision=revision, commit_message=commit_message)


def _install_publishing(module: ModuleType) -> None:
    """Gives the in-process pruned classes (not the remote-code copies) diet-hf's card-writing save and push."""
    for base in (module.PrunedGemma2PreTrainedModel, module.PrunedGemma3PreTrainedModel):
        if "save_pretrained" not in base.__dict__:
            base.save_pretrained = _with_card(base.save_pretrained)
            base.push_to_hub = _push_to_hub


@cache
def register_auto_classes() -> None:
    """Registers the pruned classes with the Auto classes, so in-process use needs no `trust_remote_code`."""
    module = modeling_module()
    _install_publishing(module)
    for config_class in (module.PrunedGemma2Config, module.PrunedGemma3TextConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        names = config_class._auto_map_models
        AutoModel.register(config_class, getattr(module, names["AutoModel"]), exist_ok=True)
        AutoModelForCausalLM.register(config_class, getattr(module, names["AutoModelForCausalLM"]), exist_ok=True)
        AutoModelForSequenceClassification.register(
            config_class, getattr(module, names["AutoModelForSequenceClassification"]), exist_ok=True
        )


def save_pruned_model(
    model,
    save_directory,
    *,
    tokenizer=None,
    plan=None,
    evaluation: dict | None = None,
    dense_evaluation: dict | None = None,
    repo_id: str | None = None,
) -> Path:
    """Saves a pruned model (safetensors, config with `auto_map`, remote code), its tokenizer and plan, atomically.

    Everything is written into a temporary directory beside `save_directory` and moved into place at the end, so an
    interrupted save never leaves a directory that half-loads; an existing directory is replaced only on success.
    The model card (`README.md`, with the evaluation table when `evaluation` is given, beside the base model's when
    `dense_evaluation` is given) and its plot are written too;
    `plan` defaults to the one surgery attached to the model.
    """
    from .card import write_model_card

    target = Path(save_directory)
    with atomic_directory(target) as tmp:
        # The stock save: the in-process classes' own save would write the card and plan that are written below.
        stock_save = getattr(type(model).save_pretrained, "__wrapped__", type(model).save_pretrained)
        stock_save(model, tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        plan = plan if plan is not None else getattr(model, "diet_plan", None)  # the plan surgery attached
        if plan is not None:
            plan.save_pretrained(tmp)
        for source in remote_code_files():  # transformers copies them too; make sure they are byte-identical
            shutil.copyfile(source, tmp / source.name)
        write_model_card(tmp, model.config, evaluation=evaluation, dense_evaluation=dense_evaluation, repo_id=repo_id)
    return target


def push_saved_model(
    save_directory,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DIET-pruned model",
) -> str:
    """Uploads a directory written by `save_pruned_model` as one commit; returns the commit id.

    Raises:
        RuntimeError: the upload failed; the local directory is untouched and the message says how to retry.
    """
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(save_directory), repo_id=repo_id, revision=revision, commit_message=commit_message
        )
    except Exception as error:  # HTTP, connection and validation errors all end the same way for the user
        raise RuntimeError(
            f"Pushing {save_directory} to {repo_id!r} failed: {error}. The local copy in {save_directory} is complete "
            f"and loadable; retry with `hf upload {repo_id} {save_directory}` or "
            f"`diet_hf.hub.push_saved_model({str(save_directory)!r}, {repo_id!r})`."
        ) from error
    return getattr(info, "oid", None) or str(info)
