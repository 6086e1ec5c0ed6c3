"""Atomic writes: a directory or file appears complete, with the permissions the user's umask gives, or not at all."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ._checks import check_path
from .constants import ADAPTER_CONFIG_FILE, CONFIG_FILE

__all__ = ["atomic_directory", "atomic_write_text", "current_umask", "apply_umask"]


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Gives `path` and everything below it the modes a plain `mkdir` / `open` would: 0o777 / 0o666 less the umask.

    `tempfile` creates 0700 directories and some writers 0600 files; a saved model must be readable by whoever the
    user's umask allows (a teammate, a container with another uid, a web server), as `save_pretrained` is."""
    mask = current_umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if item.is_symlink():
            continue
        item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, *, merge: bool = False, stale: tuple[str, ...] = (), argument: str = "save_directory"
) -> Iterator[Path]:
    """Yields a temporary directory beside `target`; on success it becomes `target` (umask permissions), replacing an
    existing one, or with `merge` its files move into an existing `target` beside the others there (after the files
    and folders there matching a `stale` glob pattern that this write does not replace are removed; a folder it
    writes replaces the one of that name whole); on any error it is removed and `target` is untouched. A `target`
    that exists and is not a directory is refused (`argument` names it) before anything is written."""
    target = Path(os.path.abspath(target))  # "." and "dir/." get a name to put the temporary directory beside
    check_not_a_file(target, argument)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        apply_umask(tmp)
        if target.exists() and merge:
            written = {item.name for item in tmp.iterdir()}
            for pattern in stale:  # e.g. the shards of an earlier, differently sharded save
                for old in target.glob(pattern):
                    if old.name in written:
                        continue
                    if old.is_dir() and not old.is_symlink():
                        shutil.rmtree(old)
                    elif old.is_file():
                        old.unlink()
            for item in tmp.iterdir():  # each file appears whole (a rename); the moves take microseconds
                _replace(item, target / item.name)
        else:  # the whole directory, replacing an existing one
            _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(source: Path, destination: Path) -> None:
    """`os.replace`, and for a folder onto a folder (which `os.replace` refuses unless empty): the old one moved
    aside, the new one into its place, the old one removed."""
    if source.is_dir() and destination.is_dir() and not destination.is_symlink():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, old)
        try:
            os.replace(source, destination)
        except BaseException:
            os.replace(old, destination)  # the old one back in place
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, destination)


def check_not_a_file(path: str | os.PathLike, argument: str) -> None:
    """Raises `NotADirectoryError` naming `argument` when `path`, meant as a directory, exists as something else, or
    cannot be made because something other than a directory stands where one of its parents would be."""
    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"`{argument}`: {path} exists and is not a directory.")
    check_parents(path, argument)


def check_output_file(path: str | os.PathLike, argument: str) -> None:
    """Raises naming `argument` unless a file can be written at `path`: `IsADirectoryError` where a directory is
    there, `NotADirectoryError` where one of its parents is not a directory."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"`{argument}`: {path} is a directory; give a file name.")
    check_parents(path, argument)


def check_parents(path: str | os.PathLike, argument: str) -> None:
    """Raises `NotADirectoryError` naming `argument` when the nearest existing parent of `path` is not a directory
    (a file where a folder of the path would be made): checked before any work, not when the result is written."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"`{argument}`: {path} cannot be made: {parent} is not a directory.")
            return


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes a temporary file beside `path`, which then replaces `path`: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        apply_umask(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through a temporary file beside it, so the file is never half-written."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def looks_like_local_path(text: str) -> bool:
    """Whether `text` is written as a local path (absolute, `./`, `../`, `~`, a backslash, or more than one `/`)
    rather than a Hub id (`name` or `org/name`)."""
    return (
        text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or text.count("/") > 1 or "\\" in text
    )


def is_local_location(model_id_or_path) -> bool:
    """Whether `model_id_or_path` is read as a local directory: it is one, or it is written as a path (an
    `os.PathLike`, or text `looks_like_local_path` accepts); otherwise it names a Hub repository."""
    text = os.fspath(model_id_or_path)
    return Path(text).expanduser().is_dir() or isinstance(model_id_or_path, os.PathLike) or looks_like_local_path(text)


def source_name(name, revision: str | None = None, gguf_file: str | None = None) -> str:
    """A model as records and printouts name it: `NAME`, `NAME@REVISION` read at a revision, and `/FILE` after it
    where it was read from a GGUF file in it."""
    label = f"{name}@{revision}" if revision else str(name)
    return f"{label}/{gguf_file}" if gguf_file else label


def check_model_location(
    model_id_or_path, argument: str = "model", *, gguf_file=None, gguf_argument: str = "gguf_file"
) -> None:
    """Raises `FileNotFoundError` naming `argument` when `model_id_or_path` is written as a local path (absolute,
    `./`, `../`, `~`, or more than one `/`) and no directory is there, or names a local directory (which transformers
    reads before the Hub) that holds no `config.json` (nor a PEFT adapter's `adapter_config.json`); a Hub id
    (`org/name`) passes through, so a missing local directory is not reported as an invalid Hub repo id. With
    `gguf_file` (a GGUF file's name inside the directory or repository, as transformers' `from_pretrained` takes it;
    `gguf_argument` names it in errors), a local directory must hold that file instead."""
    check_path(argument, model_id_or_path, "a Hub repository id or a local directory")
    text = os.fspath(model_id_or_path)
    path = Path(text).expanduser()
    if gguf_file is not None and (not isinstance(gguf_file, str | os.PathLike) or not os.fspath(gguf_file)):
        raise ValueError(f"`{gguf_argument}` must be the name of a GGUF file, got {gguf_file!r}.")
    if is_local_location(model_id_or_path) and not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"`{argument}`: the local directory {text} {what}.")
    if gguf_file is not None:
        if path.is_dir() and not (path / gguf_file).is_file():
            raise FileNotFoundError(f"`{gguf_argument}`: the local directory {text} holds no file {gguf_file}.")
        return
    if path.is_dir() and not any((path / name).is_file() for name in (CONFIG_FILE, ADAPTER_CONFIG_FILE)):
        raise FileNotFoundError(
            f"`{argument}`: the local directory {text} has no config.json, so it holds no saved model; pass the "
            "directory a model was saved to (`save_pretrained`), or a Hub repository id."
        )


def check_output_is_not_input(output, argument: str, inputs: dict) -> None:
    """Raises `ValueError` naming `argument` when the directory `output` is one of `inputs` (`{what: path}`), before
    any work: a save there would replace the model read from it."""
    target = Path(os.fspath(output)).expanduser()
    if not target.is_dir():
        return
    for what, source in inputs.items():
        path = Path(os.fspath(source)).expanduser()
        if path.is_dir() and path.resolve() == target.resolve():
            raise ValueError(
                f"`{argument}` {output} is the {what} ({source}); saving there would replace it. Choose another "
                "directory."
            )


# What transformers' tokenizers are loaded from (fast, SentencePiece, BPE vocabularies); `tokenizer_config.json` alone
# does not make a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def is_adapter_directory(path: Path) -> bool:
    """Whether the local directory `path` holds a PEFT adapter saved alone: `adapter_config.json` and no
    `config.json` (a model with an adapter saved beside it loads as the model, as in transformers)."""
    return (path / ADAPTER_CONFIG_FILE).is_file() and not (path / CONFIG_FILE).is_file()


def check_tokenizer_files(model_id_or_path, argument: str = "model") -> None:
    """Raises `ValueError` naming `argument` when `model_id_or_path` is a local directory without tokenizer files (a
    model saved without `tokenizer.save_pretrained`): transformers 4.57 then fails deep inside the tokenizer
    conversion and 5.x builds a tokenizer of special tokens only. A Hub id passes through, and so does a PEFT
    adapter's directory, whose base model's tokenizer is read where it holds none (`loading.load_tokenizer`)."""
    path = Path(os.fspath(model_id_or_path)).expanduser()
    if (
        path.is_dir()
        and not is_adapter_directory(path)
        and not any((path / name).is_file() for name in TOKENIZER_FILES)
    ):
        raise ValueError(
            f"`{argument}`: {path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}). Save the model's "
            "tokenizer there (`tokenizer.save_pretrained(dir)`; `DietPruner.save_pretrained` does it)."
        )
