"""The one door to `modeling/`: locating the remote-code files, loading the pruned classes from them, registering
them with the Auto classes (no patching: the pruned classes' `save_pretrained` / `push_to_hub` are transformers'
own). Saving with card and plan is one function, `save_pruned_model` (`DietPruner.save_pretrained` / `push_to_hub`
call it); `push_pruned_model` and `push_saved_model` upload what it writes."""

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

from huggingface_hub import HfApi
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from ._checks import check_path, check_shard_size
from ._io import atomic_directory, check_output_is_not_input
from .constants import PROFILE_SUBFOLDER, REMOTE_CODE_FILES

__all__ = [
    "check_repo_id",
    "modeling_module",
    "push_pruned_model",
    "push_saved_model",
    "register_auto_classes",
    "remote_code_dir",
    "remote_code_files",
    "save_pruned_model",
]

_PACKAGE = "diet_hf._remote_code"
# weight files an earlier save into the same directory may have left that a new save does not overwrite (other shards)
_WEIGHT_FILES = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)


_AUTO_CLASSES = {
    cls.__name__: cls
    for cls in (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )
}


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


@cache
def register_auto_classes() -> None:
    """Registers the pruned classes with the Auto classes, so in-process use needs no `trust_remote_code`."""
    module = modeling_module()
    for config_class in (module.PrunedGemma2Config, module.PrunedGemma3TextConfig, module.PrunedGemma3Config):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        # the same Auto class -> model class mapping the saved `config.json`'s `auto_map` names
        for auto_name, model_name in config_class._auto_map_models.items():
            _AUTO_CLASSES[auto_name].register(config_class, getattr(module, model_name), exist_ok=True)


def save_pruned_model(
    model,
    save_directory,
    *,
    tokenizer=None,
    plan=None,
    evaluation: dict | None = None,
    dense_evaluation: dict | None = None,
    text_evaluation: dict | None = None,
    dense_text_evaluation: dict | None = None,
    repo_id: str | None = None,
    max_shard_size: int | str | None = None,
    profile=None,
    profile_texts: dict[str, list[str]] | None = None,
) -> Path:
    """Saves a pruned model (safetensors, config with `auto_map`, remote code), its tokenizer and plan, atomically.

    Everything is written into a temporary directory beside `save_directory` and its files are moved into place at
    the end, so an interrupted save changes nothing there. Into an existing directory (a clone of a Hub repository,
    an earlier save) the files move beside those already there, as `save_pretrained` does: the others (`.git`, your
    own files) stay, an earlier save's files of the same names are replaced, and weight files of an earlier save that
    this one does not write (other shards, an index) are removed. The directory of the dense model it was pruned
    from (the plan's `base_model`, where that is a local directory) is refused.
    The model card (`README.md`, with the evaluation table when `evaluation` is given, beside the base model's when
    `dense_evaluation` is given; the perplexity of your held-out texts with `text_evaluation`, beside the base model's
    with `dense_text_evaluation`, see `write_model_card`) and its plot are written too;
    `plan` defaults to the one surgery attached to the model. `max_shard_size` (e.g. `"2GB"`): the largest weight
    file, as in transformers' `save_pretrained` (default: its default). `profile` (the `ImportanceScores` the model
    was pruned from; `profile_texts`, your own tasks' calibration texts) goes into the folder `diet_profile`, where
    `DietPruner.load_scores(save_directory)` reads it, and the card says how to prune again from it; a save without
    one removes an earlier save's.
    """
    from .card import write_model_card

    check_path("save_directory", save_directory)
    check_shard_size("max_shard_size", max_shard_size)
    check_card_results(evaluation, dense_evaluation, text_evaluation, dense_text_evaluation)
    if repo_id is not None:  # the card's usage snippet names it
        check_repo_id(repo_id)
    target = Path(save_directory)
    base = (getattr(model.config, "pruning", None) or {}).get("base_model")
    if base:
        check_output_is_not_input(target, "save_directory", {"dense model this one was pruned from": base})
    with atomic_directory(target, merge=True, stale=(*_WEIGHT_FILES, PROFILE_SUBFOLDER)) as tmp:
        shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
        model.save_pretrained(tmp, **shards)  # the stock save: weights, config with auto_map, remote code
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        plan = plan if plan is not None else getattr(model, "diet_plan", None)  # the plan surgery attached
        if plan is not None:
            plan.save_pretrained(tmp)
        for source in remote_code_files():  # transformers copies them too; make sure they are byte-identical
            shutil.copyfile(source, tmp / source.name)
        if profile is not None:
            profile.save_pretrained(tmp / PROFILE_SUBFOLDER, calibration_texts=profile_texts)
        write_model_card(
            tmp,
            model.config,
            evaluation=evaluation,
            dense_evaluation=dense_evaluation,
            text_evaluation=text_evaluation,
            dense_text_evaluation=dense_text_evaluation,
            repo_id=repo_id,
            profile=profile is not None,
        )
    return target


def push_pruned_model(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    plan=None,
    evaluation: dict | None = None,
    dense_evaluation: dict | None = None,
    text_evaluation: dict | None = None,
    dense_text_evaluation: dict | None = None,
    max_shard_size: int | str | None = None,
    profile=None,
    profile_texts: dict[str, list[str]] | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DIET-pruned model",
    token: str | None = None,
    create_pr: bool = False,
) -> str:
    """`save_pruned_model` into a temporary directory, then `push_saved_model`: one commit with weights, config,
    remote code, tokenizer, plan and card (its evaluation tables from `evaluation`, `dense_evaluation`,
    `text_evaluation` and `dense_text_evaluation`, as `save_pruned_model` writes them; weight files of at most
    `max_shard_size`; the profile in `diet_profile/` with `profile`). Returns the commit id, or with `create_pr` the
    pull request's URL. `token` and `create_pr`: as `push_saved_model`'s."""
    check_repo_id(repo_id)
    _check_pull_request(create_pr, revision)

    def write(directory: Path) -> None:
        save_pruned_model(
            model,
            directory,
            tokenizer=tokenizer,
            plan=plan,
            evaluation=evaluation,
            dense_evaluation=dense_evaluation,
            text_evaluation=text_evaluation,
            dense_text_evaluation=dense_text_evaluation,
            repo_id=repo_id,
            max_shard_size=max_shard_size,
            profile=profile,
            profile_texts=profile_texts,
        )

    return push_written_folder(
        write,
        repo_id,
        retry="save first (`save_pruned_model` / `DietPruner.save_pretrained`) and upload the folder with "
        "`push_saved_model`",
        private=private,
        revision=revision,
        commit_message=commit_message,
        token=token,
        create_pr=create_pr,
    )


def push_written_folder(write: Callable[[Path], None], repo_id: str, *, retry: str, **push_kwargs) -> str:
    """`write(directory)` into a temporary directory, then `push_saved_model(directory, repo_id, **push_kwargs)`: one
    commit, and nothing written locally. A failed upload says so, and how to retry (`retry`: to save first and
    upload that folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "upload"
        write(directory)
        try:
            return push_saved_model(directory, repo_id, **push_kwargs)
        except RuntimeError as error:
            cause = error.__cause__ or error
            raise RuntimeError(
                f"Pushing to {repo_id!r} failed: {str(cause).rstrip('.')}. Nothing was written locally; call this "
                f"again, or {retry}."
            ) from cause


def push_saved_model(
    save_directory,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DIET-pruned model",
    token: str | None = None,
    create_pr: bool = False,
) -> str:
    """Uploads a directory written by `save_pruned_model` as one commit; returns the commit id. `token`: the Hub
    token to write with (default: `HF_TOKEN`, else the login `hf auth login` saved), as transformers' `push_to_hub`.
    `create_pr`: open a pull request with the commit instead of committing to the main branch (a repository you may
    not write to, or a review before the model is published), as transformers' `push_to_hub(create_pr=True)`; the
    pull request's URL is returned instead of the commit id. A profile in the repository's `diet_profile/` that the
    directory does not hold is deleted in the same commit (it belongs to another model).

    Raises:
        ValueError: `create_pr` with a `revision` other than the main branch (pull requests are opened against it).
        RuntimeError: the upload failed; the local directory is untouched and the message says how to retry.
    """
    check_repo_id(repo_id)
    _check_pull_request(create_pr, revision)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(save_directory),
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            delete_patterns=[f"{PROFILE_SUBFOLDER}/*"],  # what the directory holds there is uploaded, not deleted
        )
    except Exception as error:  # HTTP, connection and validation errors all end the same way for the user
        raise RuntimeError(
            f"Pushing {save_directory} to {repo_id!r} failed: {str(error).rstrip('.')}. The local copy in "
            f"{save_directory} is complete and loadable; retry with `hf upload {repo_id} {save_directory}` or "
            f"`diet_hf.hub.push_saved_model({str(save_directory)!r}, {repo_id!r})`."
        ) from error
    if create_pr:
        return info.pr_url
    return getattr(info, "oid", None) or str(info)


def _check_pull_request(create_pr: bool, revision: str | None) -> None:
    if create_pr and revision not in (None, "main"):
        raise ValueError(
            f"`create_pr` opens a pull request against the main branch, so `revision` must be None or 'main'; got "
            f"{revision!r}."
        )


def local_checkpoint(
    model_id_or_path,
    *,
    revision: str | None = None,
    token: str | None = None,
    argument: str = "model",
    allow_patterns: list[str] | None = None,
    subject: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """The local directory of a checkpoint: `model_id_or_path` itself where it is read as a local directory
    (`_io.is_local_location`), else the Hub repository's files at `revision` (those matching `allow_patterns`, default
    all) downloaded into the Hub cache (`snapshot_download`; `cache_dir`: another cache, `local_files_only`: the cache
    alone, asking nothing of the Hub, `force_download`: downloaded again, each as `from_pretrained`'s).
    `FileNotFoundError` where neither is there, opening with `subject` (default: `argument`'s name)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    from ._io import is_local_location

    text = os.fspath(model_id_or_path)
    opening = subject or f"`{argument}`"
    # a subject that names the location already refers back to it
    directory, it = ("the directory", "it") if subject else (f"the local directory {text}", text)
    if is_local_location(model_id_or_path):
        local = Path(text).expanduser()
        if not local.is_dir():
            raise FileNotFoundError(f"{opening}: {directory} does not exist.")
        return local
    try:
        return Path(
            snapshot_download(
                text,
                revision=revision,
                token=token,
                allow_patterns=allow_patterns,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                force_download=force_download,
            )
        )
    except (HfHubHTTPError, HFValidationError, OSError) as error:
        at = f" at revision {revision}" if revision else ""
        raise FileNotFoundError(
            f"{opening}: {it} is no local directory, and the Hub repository{at} could not be read "
            f"({str(error).splitlines()[0]})."
        ) from error


def check_card_results(evaluation, dense_evaluation, text_evaluation, dense_text_evaluation) -> None:
    """Raises naming the argument, before anything is saved, unless each of the card's results is None (or empty:
    no section) or what its function returns: `evaluation` / `dense_evaluation` what `evaluation.evaluate` returns,
    `text_evaluation` / `dense_text_evaluation` `{name: texts_perplexity(...)}`; the base model's results only beside
    this model's (alone they would go into no table)."""
    for name, value in (("evaluation", evaluation), ("dense_evaluation", dense_evaluation)):
        if value and not (isinstance(value, dict) and isinstance(value.get("results"), dict)):
            raise TypeError(
                f"`{name}` must be what `diet_hf.evaluation.evaluate` returns (a dict with `results` and `average`), "
                f"got {type(value).__name__}: {value!r:.80}."
            )
    for name, value in (("text_evaluation", text_evaluation), ("dense_text_evaluation", dense_text_evaluation)):
        if value and not (
            isinstance(value, dict) and all(isinstance(r, dict) and "perplexity" in r for r in value.values())
        ):
            raise TypeError(
                f"`{name}` must be `{{name: diet_hf.evaluation.texts_perplexity(...)}}`, one result per set of texts, "
                f"got {type(value).__name__}: {value!r:.80}."
            )
    pairs = (("evaluation", evaluation, dense_evaluation), ("text_evaluation", text_evaluation, dense_text_evaluation))
    for name, own, dense in pairs:
        if dense and not own:
            raise ValueError(f"`dense_{name}` is the base model's, shown beside `{name}`: pass `{name}` too.")


def check_repo_id(repo_id) -> None:
    """Raises `ValueError` naming `repo_id` when it is not a valid Hub repository id, before anything is saved."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str):
        raise ValueError(f"`repo_id` must be a Hub repository id like 'you/model-name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`repo_id` {repo_id!r} is not a valid Hub repository id: {error}") from None
