"""`diet-hf info`: a checkpoint's per-layer structure, parameter counts and provenance."""

import argparse
import json

from .common import EXIT_OK
from .parser import TOKEN_HELP


def _add_parser(commands, quiet_after: argparse.ArgumentParser) -> None:
    """The `info` command's flags, on the subparsers `commands`."""
    info = commands.add_parser(
        "info",
        parents=[quiet_after],
        help="per-layer structure, parameter counts and provenance of a checkpoint (or what a saved profile holds)",
    )
    info.add_argument("model", help="Hub id or local directory of a checkpoint, or of a profile (--save-scores)")
    info.add_argument("--revision", default=None, help="branch, tag or commit of the checkpoint on the Hub")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--token", default=None, help=TOKEN_HELP.format(use="reading a private checkpoint"))


def _run_info(args) -> int:
    from ..card import _gguf_flag
    from ..info import describe_checkpoint, is_profile

    if is_profile(args.model, revision=args.revision, token=args.token):
        return _print_profile(args)
    description = describe_checkpoint(args.model, revision=args.revision, token=args.token)
    if args.json:
        print(json.dumps(description, indent=1))
        return EXIT_OK
    fmt = f", format {description['format']}" if description.get("format") else ""
    print(f"{args.model}: model_type {description['model_type']}{fmt}, {description['num_hidden_layers']} layers")
    if description.get("text_decoder_of"):
        print(f"(the text decoder of this {description['text_decoder_of']}; its vision tower is not counted)")
    print(f"{'layer':>5}  {'type':18}{'mlp width':>10}{'heads':>7}{'kv heads':>9}")
    for row in description["layers"]:
        print(
            f"{row['layer']:>5}  {row['type']:18}{row['intermediate_size']:>10}{row['num_attention_heads']:>7}"
            f"{row['num_key_value_heads']:>9}"
        )
    params = description["parameters"]
    print(
        f"parameters: {params['total']:,} total, {params['decoder_blocks']:,} in decoder-block attention + MLP "
        f"(base model {params['base_total']:,} / {params['base_decoder_blocks']:,})"
    )
    stock = description.get("stock_export")
    if stock:
        share = stock["padded_parameters"] / stock["block_parameters"] if stock["block_parameters"] else 0.0
        refused = (
            "; refused while its compensation biases are non-zero (prune with --no-bias-compensation)"
            if stock["compensation_biases"]
            else ""
        )
        print(
            f"as a stock checkpoint (diet-hf export stock): every layer at MLP width {stock['intermediate_size']}, "
            f"{stock['num_attention_heads']} query / {stock['num_key_value_heads']} KV heads, "
            f"+{stock['padded_parameters']:,} parameters of zero padding ({share:.1%}){refused}"
        )
    if description.get("pruning"):
        print("provenance (`--json` prints all of it):")
        print("\n".join(_provenance_lines(description["pruning"])))
    if description.get("profile"):
        record = description.get("pruning") or {}
        base = record.get("base_model") or "BASE_MODEL"
        print(
            f"the profile it was pruned from is in {description['profile']}/; prune again from it: "
            f"diet-hf prune {base}{_gguf_flag(record, '--gguf-file')} --scores {args.model} --sparsity S --output DIR"
        )
    return EXIT_OK


def _print_profile(args) -> int:
    """A saved profile: the model it was made on, its tasks and their calibration examples, its shapes."""
    from ..info import describe_profile
    from ..tasks import source_label

    description = describe_profile(args.model, revision=args.revision, token=args.token)
    if args.json:
        print(json.dumps(description, indent=1))
        return EXIT_OK
    at = f" (revision {description['model_revision']})" if description.get("model_revision") else ""
    print(
        f"{args.model}: a DIET profile of {description['profile_of']}{at}, model_type {description['model_type']}, "
        f"{description['num_hidden_layers']} layers x {description['intermediate_size']} MLP dimensions and "
        f"{description['num_attention_heads']} heads"
    )
    print(f"{'task':24}{'calibration examples':>21}")
    for task, count in description["tasks"].items():
        own = " (your data)" if task in description["own_tasks"] else ""
        print(f"{task + own:24}{'?' if count is None else count:>21}")
    for task, source in (description["provenance"].get("sources") or {}).items():
        print(f"{task} was read from {source_label(source)}")
    ending = "the gold answer" if description["calibration_answer"] == "gold" else "a choice drawn per example"
    chat = ", in the model's chat template" if description["calibration_chat_template"] else ""
    print(f"questions' calibration texts end in {ending}{chat}")
    print("provenance (`--json` prints all of it):")
    print("\n".join(_provenance_lines(description["provenance"])))
    print(f"prune from it: diet-hf prune {description['profile_of']} --scores {args.model} --sparsity S --output DIR")
    return EXIT_OK


def _provenance_lines(record: dict, indent: int = 2, width: int = 100) -> list[str]:
    """`config.pruning` for reading: one key per line, sorted; a dict too long for one line opens its own indented
    block; a long list shows its length and first items (the calibration ids, the loss curve)."""
    lines = []
    for key in sorted(record):
        value = record[key]
        text = json.dumps(value, sort_keys=True)
        if isinstance(value, dict) and value and len(text) > width:
            lines += [f"{' ' * indent}{key}:", *_provenance_lines(value, indent + 2, width)]
            continue
        if isinstance(value, list) and len(text) > width:
            shown = ", ".join(json.dumps(item, sort_keys=True) for item in value[:3])
            text = f"[{len(value)} items: {shown}, ...]"
        lines.append(f"{' ' * indent}{key}: {text if len(text) <= width else text[: width - 3] + '...'}")
    return lines
