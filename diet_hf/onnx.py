"""ONNX export of pruned Gemma models through optimum (`pip install "diet-hf[onnx]"`).

Importing this module registers ONNX export configs for `pruned_gemma2` and `pruned_gemma3_text` with optimum's
`TasksManager`, so `optimum.exporters.onnx.main_export` and `optimum-cli export onnx --trust-remote-code` (which
imports it through the `optimum.commands.register` plug-in file that diet-hf installs) know these model types.

The past key values of a pruned model differ per layer: `config.per_layer_config[i].num_key_value_heads` heads of
`head_dim`, and a `(batch, 1, length, 1)` placeholder for a layer whose attention was removed. The exported graph
therefore declares the head and head-dim axes of its past inputs dynamic and reshapes each layer's past to its own
shape. An empty past
of any head count and width (what `ORTModelForCausalLM` creates for the first step from the config) thus works, and so
do the presents it returned. The exported `config.json` carries the base model type (`gemma2` / `gemma3_text`), with
its `per_layer_config` kept as an extra key, so `ORTModelForCausalLM.from_pretrained(out)` needs neither diet-hf nor
`trust_remote_code`: the architecture is in the ONNX graph.
"""

import functools
import inspect
import json
import os
from pathlib import Path

from ._io import atomic_directory
from .constants import FAMILIES, ONNX_TASKS
from .info import check_pruned_checkpoint

try:
    from optimum.exporters.onnx.model_configs import GemmaOnnxConfig
    from optimum.exporters.onnx.model_patcher import ModelPatcher
    from optimum.exporters.tasks import TasksManager
    from optimum.utils import DummyPastKeyValuesGenerator, DummyTextInputGenerator
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'ONNX export needs optimum\'s ONNX exporter: pip install "diet-hf[onnx]" (it pins transformers 4.57.x, '
        "the newest that optimum-onnx supports)."
    ) from error

__all__ = [
    "PrunedGemma2OnnxConfig",
    "PrunedGemma3TextOnnxConfig",
    "default_task",
    "export_onnx",
    "past_key_value_shapes",
]

TASKS = tuple(ONNX_TASKS)
PRUNED_MODEL_TYPES = {family.pruned_model_type: family for family in FAMILIES}
# the export task a checkpoint's saved class implies (by the end of its name); a causal LM's otherwise
_TASK_BY_CLASS_SUFFIX = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "Model": "feature-extraction",
}


def past_key_value_shapes(config) -> list[tuple[int, int]]:
    """(heads, head_dim) of every layer's cached keys and values; a removed attention caches a 1 x 1 placeholder."""
    shapes = []
    for layer_idx in range(config.num_hidden_layers):
        if config.layer_num_attention_heads(layer_idx) == 0:
            shapes.append((1, 1))
        else:
            shapes.append((config.layer_num_key_value_heads(layer_idx), config.head_dim))
    return shapes


class _PerLayerPastGenerator(DummyPastKeyValuesGenerator):
    """Dummy past key values with each layer's own shape (the stock generator gives every layer the same one)."""

    def __init__(self, task, normalized_config, batch_size=2, sequence_length=16, **kwargs):
        super().__init__(task=task, normalized_config=normalized_config, batch_size=batch_size,
                         sequence_length=sequence_length, **kwargs)  # fmt: skip
        self.shapes = past_key_value_shapes(normalized_config.config)

    def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
        past = []
        for heads, head_dim in self.shapes:
            shape = (self.batch_size, heads, self.sequence_length, head_dim)
            past.append(
                (
                    self.random_float_tensor(shape, framework=framework, dtype=float_dtype),
                    self.random_float_tensor(shape, framework=framework, dtype=float_dtype),
                )
            )
        return past


class _PerLayerPastPatcher(ModelPatcher):
    """optimum's patcher, plus: each layer's incoming past is reshaped to that layer's (heads, head_dim)."""

    def __init__(self, config, model, model_kwargs=None):
        super().__init__(config, model, model_kwargs=model_kwargs)
        shapes = past_key_value_shapes(model.config)
        inner = self.patched_forward
        parameters = list(inspect.signature(self.orig_forward).parameters)

        def reshape(past):
            return tuple(
                tuple(t.reshape(t.shape[0], heads, t.shape[2], head_dim) for t in layer)
                for layer, (heads, head_dim) in zip(past, shapes)
            )

        @functools.wraps(inner)
        def patched_forward(*args, **kwargs):
            index = parameters.index("past_key_values") if "past_key_values" in parameters else None
            if kwargs.get("past_key_values") is not None:
                kwargs["past_key_values"] = reshape(kwargs["past_key_values"])
            elif index is not None and index < len(args) and args[index] is not None:
                args = (*args[:index], reshape(args[index]), *args[index + 1 :])
            return inner(*args, **kwargs)

        self.patched_forward = patched_forward


class _PrunedGemmaOnnxConfigMixin:
    DUMMY_INPUT_GENERATOR_CLASSES = (DummyTextInputGenerator, _PerLayerPastGenerator)
    DUMMY_PKV_GENERATOR_CLASS = _PerLayerPastGenerator
    _MODEL_PATCHER = _PerLayerPastPatcher

    def add_past_key_values(self, inputs_or_outputs, direction: str):
        super().add_past_key_values(inputs_or_outputs, direction)
        if direction == "inputs":  # any head count / width in, reshaped per layer inside the graph
            for name, axes in inputs_or_outputs.items():
                if name.startswith("past_key_values."):
                    layer = name.split(".")[1]
                    axes[1] = f"past_heads_{layer}"
                    axes[3] = f"past_head_dim_{layer}"

    def post_process_exported_models(self, path, models_and_onnx_configs, onnx_files_subpaths):
        models_and_onnx_configs, onnx_files_subpaths = super().post_process_exported_models(
            path, models_and_onnx_configs, onnx_files_subpaths
        )
        write_base_type_config(Path(path) / "config.json", self.task)
        return models_and_onnx_configs, onnx_files_subpaths


def write_base_type_config(path: Path, task: str = "text-generation") -> None:
    """Rewrites an exported `config.json` to the base model type (`per_layer_config` kept), so ONNX Runtime loads it
    without remote code; `diet_hf_pruned_model_type` records what it was. `architectures` names the stock class of
    the export `task` (dropped where transformers has none: a Gemma 3 token classifier)."""
    values = json.loads(path.read_text())
    family = PRUNED_MODEL_TYPES.get(values.get("model_type"))
    if family is None:
        return
    values["diet_hf_pruned_model_type"] = values["model_type"]
    values["model_type"] = family.dense_model_type
    stock_class = {
        "text-classification": family.dense_sequence_classifier_class,
        "token-classification": family.dense_token_classifier_class,
        "feature-extraction": family.dense_base_model_class,
    }.get(task.removesuffix("-with-past"), family.dense_causal_lm_class)
    if stock_class is None:
        values.pop("architectures", None)
    else:
        values["architectures"] = [stock_class]
    values.pop("auto_map", None)
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def default_task(model_dir: str | os.PathLike) -> str:
    """The export task of a saved pruned model's class (`architectures` in its config.json): `text-classification`
    for a sequence classifier, `token-classification` for a token classifier, `feature-extraction` for a base model,
    else `text-generation-with-past`."""
    architectures = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or [""]
    return next(
        (task for suffix, task in _TASK_BY_CLASS_SUFFIX.items() if architectures[0].endswith(suffix)),
        "text-generation-with-past",
    )


register = TasksManager.create_register("onnx", overwrite_existing=True)


@register("pruned_gemma2", *TASKS)
class PrunedGemma2OnnxConfig(_PrunedGemmaOnnxConfigMixin, GemmaOnnxConfig):
    """ONNX export config of the pruned Gemma-2 classes (per-layer past key values where the task has them)."""


@register("pruned_gemma3_text", *TASKS)
class PrunedGemma3TextOnnxConfig(_PrunedGemmaOnnxConfigMixin, GemmaOnnxConfig):
    """ONNX export config of the pruned Gemma 3 text classes (per-layer past key values where the task has them)."""


def export_onnx(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    task: str | None = None,
    opset: int | None = None,
    validate: bool = True,
    atol: float = 1e-4,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Exports a pruned Gemma model saved by diet-hf to ONNX (optimum's `main_export` with diet-hf's export config).

    `model_dir` is a local directory or a Hub repository, read at `revision` (default: its default branch) with
    `token`.

    `task` is optimum's export task (`TASKS`; each loads with the ONNX Runtime class `constants.ONNX_TASKS` names);
    by default the one the saved class implies (`default_task`): a sequence classifier exports as
    `text-classification`, a token classifier as `token-classification`, a causal LM with its KV cache. The export
    is written into a temporary folder beside `output` and moved into place when it succeeded, so a failure leaves
    nothing half-written. Returns the output directory (model.onnx, config.json, tokenizer files).
    """
    from optimum.exporters.onnx import main_export

    from .hub import local_checkpoint

    model_dir = local_checkpoint(model_dir, revision=revision, token=token)
    check_pruned_checkpoint(model_dir)
    if task is None:
        task = default_task(model_dir)
    elif task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    output = Path(output)
    if output.is_dir() and any(output.iterdir()):
        raise ValueError(f"`output` {output} exists and is not empty; choose a new directory.")
    # an existing empty `output` is replaced only on success; a file there is refused
    with atomic_directory(output, argument="output") as tmp:
        main_export(
            str(model_dir),
            output=tmp,
            task=task,
            opset=opset,
            trust_remote_code=True,
            do_validation=validate,
            atol=atol,
            device="cpu",
        )
    return output
