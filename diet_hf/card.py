"""The model card (`README.md`) and per-layer plot written beside every saved pruned model."""

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .card_tables import _cell, _eval_results, _evaluation_lines, _healing_lines, _text_lines
from .constants import PROFILE_SUBFOLDER, base_sizes, family_for_model_type, layer_sizes
from .info import count_parameters
from .loading import is_image_text, text_config
from .tasks.own import named_with_source

__all__ = ["PLOT_FILE", "write_model_card", "write_stock_card"]

PLOT_FILE = "diet_layers.png"
_CITATION = """@misc{diet2026,
  title         = {{DIET} (arXiv:2603.23985)},
  eprint        = {2603.23985},
  archivePrefix = {arXiv},
  year          = {2026},
  url           = {https://arxiv.org/abs/2603.23985}
}"""


_CITATION_LINES = ("## Citation", "", "```bibtex", _CITATION, "```", "")  # every card ends with them


def _usage(name: str, image_text: bool) -> list[str]:
    """The card's loading snippet: the causal LM and its tokenizer, or the image-text model and its processor."""
    model_class, reader_class, reader, comment = (
        ("AutoModelForImageTextToText", "AutoProcessor", "processor", "the processor is the base model's")
        if image_text
        else ("AutoModelForCausalLM", "AutoTokenizer", "tokenizer", "the tokenizer is stock")
    )
    return [
        f"from transformers import {model_class}, {reader_class}",
        "",
        'revision = "main"  # replace with the commit hash you reviewed',
        f'model = {model_class}.from_pretrained("{name}", trust_remote_code=True, revision=revision)',
        f"# {comment}; trust_remote_code only lets it read this config without an interactive prompt",
        f'{reader} = {reader_class}.from_pretrained("{name}", revision=revision, trust_remote_code=True)',
    ]


_ATTENTION_TARGETS = ("q_proj", "v_proj")  # what PEFT picks for stock Gemma text models
_MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")


def _lora_targets(config) -> tuple[str, ...]:
    """The LoRA snippet's target module names: the attention's query and value projections, as PEFT picks for stock
    Gemma; the MLP's projections where no layer kept its attention (PEFT refuses targets that match no module); none
    where no layer kept either."""
    rows = _layer_rows(config)
    if any(heads for *_, heads, _ in rows):
        return _ATTENTION_TARGETS
    return _MLP_TARGETS if any(width for _, _, width, *_ in rows) else ()


# the LoRA snippet's comment line, by (image-text checkpoint, adapters on the attention)
_LORA_COMMENTS = {
    (False, True): '# or target_modules="all-linear": every projection of every layer, the MLPs\' too',
    (False, False): "# no layer kept its attention, so the adapters go on the MLPs",
    (True, True): "# the text decoder's attention only: the vision tower is left as it is",
    (True, False): "# the text decoder's MLPs only (no layer kept its attention): the vision tower is left as it is",
}


def _fine_tuning(targets: tuple[str, ...], image_text: bool) -> list[str]:
    """The card's LoRA snippet: PEFT picks default targets by model type and has none for the pruned ones (nor for
    stock image-text Gemma 3), so they are named; in the text decoder only for an image-text model (as PEFT's own
    default for Gemma 4 reads)."""
    if image_text:
        named = f'r".*language_model.*\\.({"|".join(targets)})"'
    else:
        named = "[" + ", ".join(f'"{t}"' for t in targets) + "]"
    return [
        "from peft import LoraConfig, get_peft_model",
        "",
        _LORA_COMMENTS[(image_text, targets == _ATTENTION_TARGETS)],
        f'lora = LoraConfig(task_type="CAUSAL_LM", target_modules={named})',
        "model = get_peft_model(model, lora)",
    ]


def _hub_model_id(name) -> str | None:
    """`name` when it can be the `base_model` of the card's metadata: a Hub model id, not a local directory. The Hub
    rejects a card whose `base_model` is not a model id (a local path, as a model pruned from a directory records),
    and `push_to_hub` would fail on it after the upload. A snapshot directory of the Hub cache
    (`.../models--google--gemma-3-270m/snapshots/<commit>`, what `snapshot_download` returns) names its model."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name:
        return None
    path = Path(str(name)).expanduser()
    if path.exists():
        parts = path.resolve().parts
        if len(parts) < 3 or parts[-2] != "snapshots" or not parts[-3].startswith("models--"):
            return None
        name = parts[-3].removeprefix("models--").replace("--", "/")
    try:
        validate_repo_id(str(name))
    except HFValidationError:
        return None
    return str(name)


def _title_name(name) -> str | None:
    """The base model as the card's title names it: its Hub id, or a local directory's last component."""
    return _hub_model_id(name) or (Path(str(name)).name if name else None)


def _reference_name(name) -> str:
    """The base model as a command on the card names it: its Hub id, or for a local directory (a path on the machine
    that pruned it, meaningless to a reader) a placeholder with its name."""
    return _hub_model_id(name) or f"path/to/{Path(str(name)).name}"


def _gguf_flag(record: dict, flag: str) -> str:
    """` FLAG NAME` where the base model was read from a GGUF file (`base_model_gguf_file`), for the card's commands
    that read it (`eval --reference-gguf-file`, `prune --gguf-file`); empty otherwise."""
    name = record.get("base_model_gguf_file")
    return f" {flag} {name}" if name else ""


def _layer_rows(config) -> list[tuple[int, str, int, int, int]]:
    return [(i, config.layer_types[i], *layer_sizes(config, i)) for i in range(config.num_hidden_layers)]


# the card's words for `ProfileOptions.calibration_answer`
CALIBRATION_ANSWER_TEXT = {
    "any": "each question's prompt followed by one of its choices, drawn per question",
    "gold": "each question's prompt followed by its correct answer",
}


def _samples_text(record: dict) -> str:
    """`num_samples` where every task read that many (or the record predates per-task counts), else each task's."""
    counts = record.get("samples_per_task") or {}
    if not counts or all(count == record.get("num_samples") for count in counts.values()):
        return str(record.get("num_samples"))
    return ", ".join(f"{task} {'token batches' if count is None else count}" for task, count in counts.items())


def _write_plot(config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _layer_rows(config)
    layers = [r[0] for r in rows]
    figure, (mlp_axis, head_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    mlp_axis.bar(layers, [r[2] for r in rows], color="tab:blue", label="kept")
    base_width, base_heads, _ = base_sizes(config)
    mlp_axis.axhline(base_width, color="black", linestyle="--", label="base model")
    mlp_axis.set(title="MLP width per layer", xlabel="layer", ylabel="intermediate size")
    mlp_axis.legend(loc="lower left")
    head_axis.bar(layers, [r[3] for r in rows], color="tab:orange", label="query heads kept")
    head_axis.plot(layers, [r[4] for r in rows], "ko", label="KV heads kept")
    head_axis.axhline(base_heads, color="black", linestyle="--", label="base model")
    head_axis.set(title="Attention heads per layer", xlabel="layer", ylabel="heads")
    head_axis.legend(loc="lower left")
    from matplotlib.ticker import MaxNLocator

    for axis in (mlp_axis, head_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    head_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


_DIET_INTRO = (
    "Structurally pruned without training by [DIET](https://arxiv.org/abs/2603.23985) with "
    "[diet-hf](https://pypi.org/project/diet-hf/)"
)
_PAPER_STEPS = (
    "activation magnitudes were profiled on calibration examples of each task, every MLP dimension and attention "
    "head was ranked per task, the per-task rankings were merged by majority vote into one plan, and the dropped "
    "dimensions were physically removed."
)


def _diet_text(record: dict) -> str:
    """What DIET did to this model, in words, from the options it ran with (`record["options"]`, the recipe's values
    resolved): the default recipe is not the paper's, and the card must not describe the paper's steps for it."""
    options = record.get("options") or {}
    if not options.get("merge"):  # a record of diet-hf 0.1: the paper's steps, the only ones it had
        return f"{_DIET_INTRO}: {_PAPER_STEPS}"
    recipe = f" (recipe `{options['recipe']}`)" if options.get("recipe") else ""
    score = (
        "activation magnitudes times the norms of each unit's output-projection columns"
        if options.get("score") == "contribution"
        else "activation magnitudes"
    )
    heads_kept = options.get("attention_ratio") == 0
    units = "every MLP dimension" + ("" if heads_kept else " and attention head")
    merge = "by majority vote" if options["merge"] == "vote" else "by their mean rank"
    steps = [
        f"{score} were profiled on calibration examples of each task",
        f"{units} was ranked per task",
        f"the per-task rankings were merged {merge} into one plan",
    ]
    if options.get("allocation") == "uniform":
        steps.append(
            "every layer lost the same share of its MLP width"
            + (
                f" (widths rounded to multiples of {options['round_to']})"
                if (options.get("round_to") or 1) > 1
                else ""
            )
        )
    elif options.get("allocation") == "global":
        steps.append("one ranking across all layers set each layer's width")
    if heads_kept:
        steps.append("every attention head was kept")
    if options.get("keep_layers"):
        steps.append(f"layers {', '.join(str(i) for i in options['keep_layers'])} were left whole")
    if (options.get("steps") or 1) > 1:
        steps.append(f"the target was reached in {options['steps']} steps, profiling again after each")
    steps.append("the dropped dimensions were physically removed")
    if options.get("reconstruct"):
        steps.append(
            "each cut output projection was refitted by least squares so that the kept channels carry what the "
            "removed ones wrote on the calibration tokens"
            + (", reproducing the BOS token's output exactly" if options.get("anchor_bos") else "")
            + (", with an output bias" if options.get("bias_compensation") else "")
        )
    elif options.get("bias_compensation"):
        steps.append("the removed channels' mean contribution was kept as an output bias (FLAP's compensation)")
    return f"{_DIET_INTRO}{recipe}: " + "; ".join(steps[:-1]) + "; and " + steps[-1] + "."


_OTHER_METHOD_TEXT = (
    "Structurally pruned without training by the {method} baseline in the pipeline of "
    "[diet-hf](https://pypi.org/project/diet-hf/): {method}'s importance scores and allocation, computed on the "
    "calibration examples below, chose the MLP dimensions and attention heads to drop, which were physically removed."
)


def _target_text(target: dict) -> str:
    if target.get("sparsity") is not None:
        return f"{target['sparsity']:.0%} of the decoder blocks' attention + MLP parameters"
    named = (("mlp_sparsity", "MLP"), ("attention_sparsity", "attention"))
    return ", ".join(f"{name} {target[key]:.0%}" for key, name in named if target.get(key) is not None) or "–"


def _option_text(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _card_subject(config) -> tuple[dict, bool, object, str, str]:
    """What a card describes: the pruning record, whether the model is an image-text one (its text decoder pruned,
    the vision tower kept), the text decoder's config (its sizes, plot and family are the card's), the method and
    the title."""
    record = getattr(config, "pruning", None) or {}
    image_text = is_image_text(config)
    config = text_config(config)
    method = record.get("method") or "DIET"
    base_type = type(config).model_type.removeprefix("pruned_")
    return (
        record,
        image_text,
        config,
        method,
        f"{_title_name(record.get('base_model')) or base_type} pruned with {method}",
    )


def _card_datasets(record: dict) -> list[str] | None:
    """The Hub datasets the model was calibrated on and then healed on, in that order, each once: the card's
    `datasets`, which the Hub links the model from. A registered task or source (WikiText-2) by its name; your own
    data where its source was recorded as a Hub dataset (`task_sources`, healing's `own_sources`)."""
    from .tasks import TASKS
    from .tasks.data import WIKITEXT2_HUB

    hub = {**{name: task.hub_path for name, task in TASKS.items()}, "wikitext2": WIKITEXT2_HUB[0]}
    healing = (record.get("healing") or {}).get("data") or {}
    datasets = []
    for names, own in (
        (record.get("tasks"), record.get("task_sources")),
        (healing.get("sources"), healing.get("own_sources")),
    ):
        own = own or {}
        for name in names or []:
            dataset = own[name].get("dataset") if name in own else hub.get(name)
            if dataset:
                datasets.append(dataset)
    return list(dict.fromkeys(datasets)) or None


def _card_data(record: dict, config, image_text: bool, **extra) -> ModelCardData:
    """A card's metadata: base model, calibration and healing datasets, library, pipeline, tags, license (and
    `extra` fields)."""
    return ModelCardData(
        base_model=_hub_model_id(record.get("base_model")),
        datasets=_card_datasets(record),
        library_name="transformers",
        pipeline_tag="image-text-to-text" if image_text else "text-generation",
        tags=["diet", "pruned", "structured-pruning", type(config).model_type.removeprefix("pruned_")],
        license=family_for_model_type(config.model_type).license,
        **extra,
    )


def write_model_card(
    save_directory,
    config,
    *,
    evaluation: dict | None = None,
    dense_evaluation: dict | None = None,
    text_evaluation: dict | None = None,
    dense_text_evaluation: dict | None = None,
    repo_id: str | None = None,
    profile: bool = False,
) -> Path:
    """Writes `README.md` (Hugging Face model card with YAML metadata) and `diet_layers.png` into `save_directory`.
    With `dense_evaluation` (the base model on the same examples) the evaluation table shows both side by side.
    `text_evaluation` (`{name: texts_perplexity result}`, your held-out texts) adds their perplexity; with
    `dense_text_evaluation` (the base model on the same texts) the ratio and its paired-bootstrap interval. `profile`:
    the checkpoint holds the profile it was pruned from (`diet_profile/`); the card says how to prune again from it."""
    directory = Path(save_directory)
    record, image_text, config, method, title = _card_subject(config)
    eval_results = _eval_results(evaluation) if evaluation else []
    data = _card_data(
        record,
        config,
        image_text,
        # the evaluation's headline metrics as `model-index`, which the Hub shows beside the model
        model_name=(repo_id.split("/")[-1] if repo_id else title) if eval_results else None,
        eval_results=eval_results or None,
    )
    _write_plot(config, directory / PLOT_FILE)
    name = repo_id or "path/to/this/model"
    lines = [
        f"# {title}",
        "",
        _diet_text(record) if method == "DIET" else _OTHER_METHOD_TEXT.format(method=method),
        "",
        *_how_it_was_pruned_lines(record, config, image_text),
        *_layer_lines(config),
    ]
    lines += _healing_lines(record.get("healing"))
    if evaluation:
        lines += _evaluation_lines(evaluation, dense_evaluation, record)
    if text_evaluation:
        lines += _text_lines(text_evaluation, dense_text_evaluation, _cell(record.get("base_model") or "dense model"))
    lines += _usage_and_citation_lines(record, name, image_text, _lora_targets(config), profile)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = directory / "README.md"
    card.save(path)
    return path


def write_stock_card(save_directory, config, shape, stock_class: str) -> Path:
    """Writes `README.md` and `diet_layers.png` beside a stock export (`diet_hf.stock.export_stock`) of the pruned
    model whose `config` it was: what it is, the one size every layer is padded to (`shape`, a `StockShape`) and what
    that added, how it was pruned, and how to load it (no remote code) and convert it to GGUF."""
    directory = Path(save_directory)
    record, image_text, config, method, title = _card_subject(config)
    title += ", as a stock checkpoint"
    data = _card_data(record, config, image_text)
    _write_plot(config, directory / PLOT_FILE)
    share = shape.padded_parameters / shape.block_parameters if shape.block_parameters else 0.0
    model_class, reader_class, reader = (
        ("AutoModelForImageTextToText", "AutoProcessor", "processor")
        if image_text
        else ("AutoModelForCausalLM", "AutoTokenizer", "tokenizer")
    )
    lines = [
        f"# {title}",
        "",
        _diet_text(record) if method == "DIET" else _OTHER_METHOD_TEXT.format(method=method),
        "",
        "## Stock export",
        "",
        f"Written by `diet-hf export stock`: every decoder layer is zero-padded to one size (MLP width "
        f"{shape.intermediate_size}, {shape.num_attention_heads} query and {shape.num_key_value_heads} KV heads), so "
        f"this is a stock `{stock_class}` checkpoint, which transformers loads without remote code and tools that "
        "read stock checkpoints convert (llama.cpp's `convert_hf_to_gguf.py`, MLX). The padding changes nothing the "
        "model computes (a zero MLP channel or head adds zero) and adds "
        f"{shape.padded_parameters:,} zero parameters ({share:.1%} of the pruned decoder blocks' "
        f"{shape.block_parameters:,}). Each layer's pruned sizes, which the padding fills up, are under \"Per-layer "
        'structure".',
        "",
        "```python",
        f"from transformers import {model_class}, {reader_class}",
        "",
        f'model = {model_class}.from_pretrained("path/to/this/model")',
        f'{reader} = {reader_class}.from_pretrained("path/to/this/model")',
        "```",
        "",
        "```bash",
        "python llama.cpp/convert_hf_to_gguf.py path/to/this/model --outfile model.gguf --outtype q8_0",
        "```",
        "",
        *_how_it_was_pruned_lines(record, config, image_text),
        *_layer_lines(config),
        *_healing_lines(record.get("healing")),
        *_CITATION_LINES,
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = directory / "README.md"
    card.save(path)
    return path


def _how_it_was_pruned_lines(record: dict, config, image_text: bool) -> list[str]:
    """The card's "How it was pruned" table: base model, part pruned, calibration, targets, sizes and options."""
    counts, base = count_parameters(config), count_parameters(config, dense=True)
    target = record.get("target") or {}
    sources = record.get("task_sources") or {}
    tasks = ", ".join(named_with_source(task, sources.get(task)) for task in record.get("tasks") or []) or "unknown"
    return [
        "## How it was pruned",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {_cell(record.get('base_model'))}"
        + (f" (revision {_cell(record['base_model_revision'])})" if record.get("base_model_revision") else "")
        + (
            f", read from its GGUF file {_cell(record['base_model_gguf_file'])} (dequantized to float on load)"
            if record.get("base_model_gguf_file")
            else ""
        )
        + " |",
        *(
            [
                f"| part pruned | the text decoder of this {record['base_model_architecture']}; "
                + ("its vision tower and projector kept unchanged |" if image_text else "no vision tower |")
            ]
            if record.get("base_model_architecture")
            else []
        ),
        f"| calibration tasks | {_cell(tasks)} |",
        f"| samples per task | {_cell(_samples_text(record))} (seed {record.get('seed')}) |",
        *(
            [f"| calibration answers | {CALIBRATION_ANSWER_TEXT[record['calibration_answer']]} |"]
            if record.get("calibration_answer") in CALIBRATION_ANSWER_TEXT
            else []
        ),
        *(
            [
                "| calibration prompts | each question in the model's chat template (the user's message, the model's "
                "turn opened), as it is scored with `--apply-chat-template` |"
            ]
            if record.get("calibration_chat_template")
            else []
        ),  # fmt: skip
        f"| target sparsity | {_target_text(target)} |",
        f"| achieved decoder-block sparsity | {record.get('achieved_block_sparsity', 0.0):.2%} |",
        f"| parameters{' of the text model' if image_text else ''} | {base['total']:,} before, {counts['total']:,} "
        "after |",
        f"| decoder-block attention + MLP parameters | {base['decoder_blocks']:,} before, "
        f"{counts['decoder_blocks']:,} after |",
        *[
            f"| {key.replace('_', ' ')} | {_cell(_option_text(value))} |"
            for key, value in (record.get("options") or {}).items()
        ],
        # the release that pruned it (CHANGELOG.md says what each changed; 0.1.0 used other defaults)
        *([f"| pruned with | diet-hf {_cell(record['diet_hf_version'])} |"] if record.get("diet_hf_version") else []),
        "",
    ]


def _layer_lines(config) -> list[str]:
    """The card's "Per-layer structure" section: the plot and each layer's kept sizes against the base model's."""
    base_width, base_heads, base_kv_heads = base_sizes(config)
    return [
        "## Per-layer structure",
        "",
        f"![Kept MLP width and heads per layer against the base model]({PLOT_FILE})",
        "",
        "| layer | type | MLP width | query heads | KV heads |",
        "|---|---|---|---|---|",
        *[
            f"| {i} | {t} | {w} / {base_width} | {h} / {base_heads} | {kv} / {base_kv_heads} |"
            for i, t, w, h, kv in _layer_rows(config)
        ],
        "",
    ]


def _profile_lines(record: dict, name: str) -> list[str]:
    """The card's words on the profile saved in `diet_profile/`: what it is, and the command that prunes from it."""
    base = _reference_name(record.get("base_model") or "base-model")
    pruned_at = (record.get("target") or {}).get("sparsity")
    other = 0.4 if pruned_at and abs(pruned_at - 0.3) < 0.025 else 0.3  # a sparsity other than its own
    return [
        f"`{PROFILE_SUBFOLDER}/` holds the DIET profile this model was pruned from: the base model's per-task "
        "importance scores of every MLP channel and attention head (and your own tasks' calibration texts, if any). "
        "It prunes the base model again, at another sparsity or with another recipe, with no profiling pass "
        "(`pip install diet-hf`; a reconstruction reads the calibration examples again, the registered tasks' from "
        "the Hub or `--data-dir`):",
        "",
        "```bash",
        f"diet-hf prune {base}{_gguf_flag(record, '--gguf-file')} --scores {name} --sparsity {other:g} "
        f"--output {Path(name).name}-{round(other * 100)}",
        "```",
        "",
    ]


def _lora_lines(targets: tuple[str, ...], image_text: bool) -> list[str]:
    """The card's paragraph on LoRA: PEFT's targets named (none where no layer kept a projection to adapt)."""
    if not targets:
        return []
    default = targets == _ATTENTION_TARGETS
    return [
        "To fine-tune it with LoRA: PEFT picks default target modules by model type and knows none for this "
        "checkpoint's, so name them. The module names are Gemma's"
        + (
            " (these are the ones PEFT picks for stock Gemma text models"
            + (", here in the text decoder only" if image_text else "")
            + "):"
            if default
            else ":"
        ),
        "",
        "```python",
        *_fine_tuning(targets, image_text),
        "```",
        "",
    ]


def _usage_and_citation_lines(
    record: dict, name: str, image_text: bool, lora_targets: tuple[str, ...], profile: bool = False
) -> list[str]:
    """The card's "Usage" (loading with remote code; fine-tuning `lora_targets` with LoRA; scoring against the base
    model; with `profile`, pruning the base model again from the profile in `diet_profile/`) and "Citation"
    sections."""
    return [
        "## Usage",
        "",
        f"`config.json`{' (its `text_config`)' if image_text else ''} states the per-layer sizes as transformers' "
        "own sparse `per_layer_config` (layers that differ "
        "from the base model; `skip` for a removed MLP or attention). Building the layers needs the model code "
        "shipped in this repository (`trust_remote_code=True`); it imports only torch and transformers. Pin the "
        "revision you reviewed, so the code you run cannot change under you:",
        "",
        "```python",
        *_usage(name, image_text),
        "```",
        "",
        *_lora_lines(lora_targets, image_text),
        *(
            [
                "To score it against its base model on the same examples, with the difference's paired-bootstrap "
                "95% interval per task (`pip install diet-hf`; the evaluation examples its profile read are left "
                "out):",
                "",
                "```bash",
                f"diet-hf eval {name} --reference {_reference_name(record['base_model'])}"
                f"{_gguf_flag(record, '--reference-gguf-file')} --half test --limit 500",
                "```",
                "",
            ]
            if record.get("base_model")
            else []
        ),
        *(_profile_lines(record, name) if profile else []),
        *_CITATION_LINES,
    ]
