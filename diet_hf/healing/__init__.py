"""Healing: knowledge distillation of a pruned model from its dense parent, on transformers' `Trainer` and PEFT.

The student learns the teacher's next-token distribution. On Gemma's 262k vocabulary the full teacher distribution
per token cannot be stored, so by default the teacher runs once over the packed data before training (then it is
freed) and keeps its top-k log-probabilities per position; the loss is the exact KL divergence between the two
distributions coarse-grained to those k tokens plus one "rest of the vocabulary" bucket. That KL is a lower bound of
the full KL; the gap is the teacher's rest mass times the KL of the two rest-conditionals (a test bounds it).
`top_k=None` keeps the teacher in memory and uses the full-vocabulary KL. The precomputed targets of the training
rows are read from their cache file a batch at a time (`_DiskTargets`), so training holds no copy of them. Either way
the student's logits are made position-chunk by chunk and no (tokens x vocabulary) tensor is held for backward: with
a frozen head (LoRA) each chunk's gradient is taken right in forward, so the logits are made once; a trained head
(full fine-tuning) uses activation checkpointing, which makes them again in backward. `position_stride` scores a
subset of the positions (all still feed attention), cutting the head's share of the work in the teacher's pass and in
training.

LoRA (PEFT) is the default and is merged into the weights at the end: the healed checkpoint is the same pruned format
and loads without PEFT. A validation guard scores held-out sequences before training and at every evaluation; the
best state is kept, and if it is no better than the unhealed model the healing is rolled back (and recorded so).

The package, one part per module: `config` (`HealingConfig`), `loss` (the objectives and the passes they share),
`data` (sources and packing), `teacher` (parent check, the teacher's pass and its cached targets), `trainer` (the
`Trainer` subclass and its callbacks, imported when a run starts), `training` (the guard's KL and the loop's other
helpers), `record` (what a run records) and `run` (`heal`: the run itself).
"""

from .config import LORA_MODULES, HealingConfig
from .data import cut_rows, healing_texts, pack_sources, pack_texts
from .loss import (
    coarse_kl,
    distillation_loss,
    document_position_ids,
    layerwise_loss,
    scored_positions,
    teacher_targets,
)
from .run import heal
from .teacher import check_parent
from .training import limit_heap_retention, release_freed_memory

__all__ = [
    "LORA_MODULES",
    "HealingConfig",
    "check_parent",
    "coarse_kl",
    "cut_rows",
    "distillation_loss",
    "document_position_ids",
    "heal",
    "healing_texts",
    "layerwise_loss",
    "limit_heap_retention",
    "pack_sources",
    "pack_texts",
    "release_freed_memory",
    "scored_positions",
    "teacher_targets",
]
