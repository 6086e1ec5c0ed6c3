"""diet-hf: DIET task-aware structured pruning of Gemma models for Hugging Face Transformers."""

from .hub import modeling_module as _modeling_module
from .hub import register_auto_classes as _register_auto_classes

__version__ = "0.2.0"  # pyproject.toml reads it; CHANGELOG.md says what each release changed

_module = _modeling_module()
PrunedGemma2Config = _module.PrunedGemma2Config
PrunedGemma3TextConfig = _module.PrunedGemma3TextConfig
PrunedGemma2PreTrainedModel = _module.PrunedGemma2PreTrainedModel
PrunedGemma2Model = _module.PrunedGemma2Model
PrunedGemma2ForCausalLM = _module.PrunedGemma2ForCausalLM
PrunedGemma2ForSequenceClassification = _module.PrunedGemma2ForSequenceClassification
PrunedGemma2ForTokenClassification = _module.PrunedGemma2ForTokenClassification
PrunedGemma3PreTrainedModel = _module.PrunedGemma3PreTrainedModel
PrunedGemma3TextModel = _module.PrunedGemma3TextModel
PrunedGemma3ForCausalLM = _module.PrunedGemma3ForCausalLM
PrunedGemma3ForSequenceClassification = _module.PrunedGemma3ForSequenceClassification
PrunedGemma3ForTokenClassification = _module.PrunedGemma3ForTokenClassification
_register_auto_classes()

from .importance import ImportanceScores  # noqa: E402
from .plan import PruningPlan  # noqa: E402
from .pruner import DietPruner  # noqa: E402
from .stock import export_stock, to_stock_model  # noqa: E402
from .surgery import build_pruned_model, to_pruned_model  # noqa: E402

__all__ = [
    "DietPruner",
    "ImportanceScores",
    "PrunedGemma2Config",
    "PrunedGemma2ForCausalLM",
    "PrunedGemma2ForSequenceClassification",
    "PrunedGemma2ForTokenClassification",
    "PrunedGemma2Model",
    "PrunedGemma2PreTrainedModel",
    "PrunedGemma3ForCausalLM",
    "PrunedGemma3ForSequenceClassification",
    "PrunedGemma3ForTokenClassification",
    "PrunedGemma3PreTrainedModel",
    "PrunedGemma3TextConfig",
    "PrunedGemma3TextModel",
    "PruningPlan",
    "build_pruned_model",
    "export_stock",
    "to_pruned_model",
    "to_stock_model",
]
