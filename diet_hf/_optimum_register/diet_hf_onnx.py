# Installed as `optimum/commands/register/diet_hf_onnx.py` (see pyproject.toml): optimum-cli imports every module
# of that namespace at start-up, which lets diet-hf register the ONNX export configs of its pruned model types, so
# `optimum-cli export onnx --model DIR --trust-remote-code OUT` knows `pruned_gemma2` and `pruned_gemma3_text`.
# No new subcommand; without the onnx extra (no optimum-onnx) nothing is registered.
try:
    import diet_hf.onnx  # noqa: F401
except ImportError:
    pass

REGISTER_COMMANDS = []
