"""`diet-hf export onnx`: a pruned model to ONNX through optimum; `diet-hf export stock`: a pruned model as a stock
transformers checkpoint, every layer zero-padded to the largest layer's sizes (`diet_hf.stock`)."""

import argparse

from .common import EXIT_OK
from .parser import SHARD_HELP, TOKEN_HELP, _positive_int, _shard_size


def _add_parser(commands, quiet_after: argparse.ArgumentParser) -> None:
    """The `export onnx` and `export stock` commands' flags, on the subparsers `commands`."""
    from ..constants import ONNX_TASKS

    export = commands.add_parser("export", help="export a pruned model for deployment")
    formats = export.add_subparsers(dest="format", required=True, metavar="{onnx,stock}")
    onnx = formats.add_parser(
        "onnx",
        parents=[quiet_after],
        help='ONNX through optimum (needs `pip install "diet-hf[onnx]"`); ONNX Runtime loads the result with '
        "ORTModelForCausalLM (or the ORTModel class of --task)",
    )
    _add_source_and_output(onnx, "new directory for model.onnx, config.json and the tokenizer")
    onnx.add_argument(
        "--task",
        choices=tuple(ONNX_TASKS),
        default=None,
        help="optimum's export task (default: the saved class's: text-classification for a sequence classifier, "
        "token-classification for a token classifier, feature-extraction for a base model, else "
        "text-generation-with-past, with the KV cache as inputs and outputs)",
    )
    onnx.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: optimum's for Gemma)")
    onnx.add_argument("--atol", type=float, default=1e-4, help="validation tolerance against PyTorch")
    onnx.add_argument("--no-validation", action="store_true", help="skip optimum's output check")
    stock = formats.add_parser(
        "stock",
        parents=[quiet_after],
        help="a stock transformers checkpoint (Gemma2ForCausalLM, Gemma3ForCausalLM, ...; no remote code), every "
        "layer zero-padded to the largest layer's MLP width and head count, for tools that read stock Gemma "
        "checkpoints only (llama.cpp's convert_hf_to_gguf.py, MLX); a model with compensation biases is refused",
    )
    _add_source_and_output(stock, "new directory for the stock checkpoint and the tokenizer")
    stock.add_argument("--max-shard-size", type=_shard_size, default=None, metavar="SIZE", help=SHARD_HELP)
    stock.add_argument(
        "--no-validation", action="store_true", help="skip comparing the stock model's logits with the pruned one's"
    )


def _add_source_and_output(parser: argparse.ArgumentParser, output_help: str) -> None:
    """What every export reads and writes: MODEL (local or Hub, at a revision, with a token) and OUTPUT."""
    parser.add_argument("model", help="local directory or Hub id of a pruned model saved by diet-hf")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of MODEL on the Hub")
    parser.add_argument("--token", default=None, help=TOKEN_HELP.format(use="reading MODEL"))
    parser.add_argument("output", help=output_help)


def _run_export(args) -> int:
    if args.format == "stock":
        return _run_stock(args)
    from ..hub import local_checkpoint
    from ..info import check_pruned_checkpoint

    model_dir = local_checkpoint(args.model, revision=args.revision, token=args.token)  # a Hub id: downloaded
    check_pruned_checkpoint(model_dir)  # clear errors before importing optimum (slow, and an optional extra)
    from ..constants import ONNX_TASKS
    from ..onnx import default_task, export_onnx

    task = args.task or default_task(model_dir)
    output = export_onnx(
        model_dir, args.output, task=task, opset=args.opset, validate=not args.no_validation, atol=args.atol
    )
    loader = ONNX_TASKS[task]
    print(f"exported {args.model} ({task}) to {output / 'model.onnx'}; load it with {loader}.from_pretrained")
    return EXIT_OK


def _run_stock(args) -> int:
    from ..stock import export_stock

    output, shape = export_stock(
        args.model,
        args.output,
        revision=args.revision,
        token=args.token,
        max_shard_size=args.max_shard_size,
        validate=not args.no_validation,
    )
    share = shape.padded_parameters / shape.block_parameters if shape.block_parameters else 0.0
    print(
        f"exported {args.model} to {output} as a stock checkpoint: every layer at MLP width "
        f"{shape.intermediate_size}, {shape.num_attention_heads} query and {shape.num_key_value_heads} KV heads; the "
        f"zero padding adds {shape.padded_parameters:,} parameters ({share:.1%} of the pruned decoder blocks). "
        "Load it with AutoModelForCausalLM.from_pretrained, no trust_remote_code."
    )
    return EXIT_OK
