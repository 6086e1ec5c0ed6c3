"""The int8 quantizations of a pruned model that run on a CPU, by name: transformers' own quantization configs (no
diet-hf needed to load the result), for scoring what you deploy (`diet-hf eval --quantization`) and for
`benchmarks/quantization_benchmark.py`. Prune the dense model in full precision first: the pruner refuses a quantized
one."""

import importlib.util

__all__ = ["QUANTIZATIONS", "check_quantization", "quantization_config"]

# name: (the module it imports, the package that installs it, what it does)
QUANTIZATIONS = {
    "quanto-int8": (
        "optimum.quanto",
        "optimum-quanto",
        "optimum-quanto's int8 weights, float activations (QuantoConfig)",
    ),
    "torchao-int8": ("torchao", "torchao", "torchao's int8 weights per channel, float activations (TorchAoConfig)"),
    "torchao-int8-dynamic": (
        "torchao",
        "torchao",
        "torchao's int8 weights and int8 activations with per-token scales taken at run time (TorchAoConfig)",
    ),
}


def check_quantization(name: str, argument: str = "quantization") -> None:
    """Raises `ValueError` naming `argument` if `name` is not one of `QUANTIZATIONS`, and `ImportError` if the
    package it needs is not installed (both before any model loads)."""
    if name not in QUANTIZATIONS:
        raise ValueError(f"`{argument}` must be one of {', '.join(QUANTIZATIONS)}; got {name!r}.")
    module, package, _ = QUANTIZATIONS[name]
    # the parent first: `find_spec("optimum.quanto")` raises where `optimum` itself is missing
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        raise ImportError(f"`{argument}` {name!r} needs {package}: `pip install {package}`.")


def quantization_config(name: str):
    """transformers' quantization config for one of `QUANTIZATIONS`, to pass as
    `AutoModelForCausalLM.from_pretrained(..., quantization_config=...)`.

    Args:
        name (`str`): `"quanto-int8"` (`QuantoConfig(weights="int8")`), `"torchao-int8"`
            (`TorchAoConfig(Int8WeightOnlyConfig())`) or `"torchao-int8-dynamic"`
            (`TorchAoConfig(Int8DynamicActivationInt8WeightConfig())`).

    Raises:
        `ValueError`: an unknown name. `ImportError`: its package is not installed.
    """
    check_quantization(name)
    if name == "quanto-int8":
        from transformers import QuantoConfig

        return QuantoConfig(weights="int8")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    dynamic = name == "torchao-int8-dynamic"
    return TorchAoConfig(quant_type=Int8DynamicActivationInt8WeightConfig() if dynamic else Int8WeightOnlyConfig())
