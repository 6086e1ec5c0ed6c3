"""What a healing run records: the objective in words, held-out texts and tasks scored on the teacher, the
unhealed and the healed model, and the curves thinned for the card."""

import logging
import math
from dataclasses import asdict

from .config import HealingConfig
from .data import _text_list

logger = logging.getLogger(__name__)


def _objective_text(config: HealingConfig) -> str:
    kl = (
        f"KL(teacher || student) on top-{config.top_k} teacher log-probs + rest bucket"
        if config.top_k
        else "KL(teacher || student) on the full vocabulary"
    )
    layers = (
        f" + {config.hidden_weight:g} x relative squared error of every layer's output"
        if config.hidden_weight > 0
        else ""
    )
    if config.kd_weight == 0:
        return "next-token loss only (the teacher is used for the guard's validation KL)" + layers
    if config.kd_weight == 1:
        return kl + layers
    return f"{config.kd_weight:g} x {kl} + {1 - config.kd_weight:g} x next-token loss" + layers


def _held_out_sources(eval_texts, sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """`heal`'s `eval_texts` as `{name: texts}`, checked (non-empty strings); warns of texts also in the healing
    data."""
    if eval_texts is None:
        return {}
    held_out = {
        name: _text_list(texts, "eval_texts")
        for name, texts in (eval_texts if isinstance(eval_texts, dict) else {"texts": eval_texts}).items()
    }
    if not held_out:
        raise ValueError("`eval_texts` is an empty dict: pass at least one source of texts, or None.")
    trained = {text for texts in sources.values() for text in texts}
    for name, texts in held_out.items():
        if not texts:
            raise ValueError(f"`eval_texts` {name!r} is empty: pass at least one text.")
        if not all(isinstance(text, str) and text for text in texts):
            raise ValueError(f"`eval_texts` {name!r} must hold non-empty strings only.")
        seen = sum(text in trained for text in texts)
        if seen:
            logger.warning(
                "%d of the %d held-out texts %r are also in the healing data: their perplexity is not a held-out "
                "measure.",
                seen,
                len(texts),
                name,
            )
    return held_out


def _held_out_record(teacher: dict, unhealed: dict, healed: dict) -> dict:
    """Per source: the three perplexities and the healed model's ratios to the unhealed one and to the teacher, with
    their paired-bootstrap intervals, and the share of the unhealed model's gap to the teacher that healing closed
    (on log-perplexity)."""
    from ..evaluation import paired_bootstrap_perplexity

    record = {}
    for name, result in healed.items():
        gap = math.log(unhealed[name]["perplexity"]) - math.log(teacher[name]["perplexity"])
        closed = math.log(unhealed[name]["perplexity"]) - math.log(result["perplexity"])
        record[name] = {
            "texts": result["texts"],
            "tokens": result["tokens"],
            "teacher": round(teacher[name]["perplexity"], 4),
            "unhealed": round(unhealed[name]["perplexity"], 4),
            "healed": round(result["perplexity"], 4),
            "healed_over_unhealed": _rounded_ratio(paired_bootstrap_perplexity(result, unhealed[name])),
            "healed_over_teacher": _rounded_ratio(paired_bootstrap_perplexity(result, teacher[name])),
            "gap_closed": round(closed / gap, 4) if gap > 0 else None,
        }
    return record


def _task_scorer(eval_tasks, eval_options: dict | None, student, tokenizer, disable_progress: bool):
    """`heal`'s `eval_tasks` as a function of a model (`evaluate` on the same examples each time, with per-example
    answers), or None; the tasks and options are checked now, before anything runs."""
    from ..evaluation import evaluate
    from ..tasks import Task, check_chat_template, evaluation_examples

    if eval_tasks is None:
        if eval_options:
            raise ValueError("`eval_options` is set but `eval_tasks` is not: name the tasks to score.")
        return None
    tasks = [eval_tasks] if isinstance(eval_tasks, (str, Task)) else list(eval_tasks)
    if not tasks:
        raise ValueError("`eval_tasks` is empty: name at least one task, or pass None.")
    options = dict(eval_options or {})
    unknown = set(options) - {"limit", "half", "data_dir", "batch_size", "apply_chat_template"}
    if unknown:
        raise ValueError(
            "`eval_options` takes limit, half, data_dir, batch_size and apply_chat_template; got "
            f"{', '.join(sorted(unknown))}."
        )
    if options.get("apply_chat_template"):
        check_chat_template(tokenizer, "eval_options['apply_chat_template']")
    for task in tasks:  # an unknown name or missing data fails now, not after training
        evaluation_examples(task, data_dir=options.get("data_dir"))
    # the evaluation examples the student's pruning profiled are scored for no model
    options["exclude_ids"] = (getattr(student.config, "pruning", None) or {}).get("calibration_eval_ids")

    def score(model):
        return evaluate(model, tokenizer, tasks, return_predictions=True, disable_progress=disable_progress, **options)

    return score


def _held_out_tasks_record(teacher: dict, unhealed: dict, healed: dict) -> dict:
    """Per task and on the average: the three models' headline scores and the healed model's differences to the
    unhealed one and to the teacher, with their paired-bootstrap intervals over the same examples."""
    from ..evaluation import compare_evaluations

    to_unhealed, to_teacher = compare_evaluations(healed, unhealed), compare_evaluations(healed, teacher)
    record = {}
    for task in [*healed["results"], "average"]:
        if task == "average":
            row = {"teacher": teacher["average"], "unhealed": unhealed["average"], "healed": healed["average"]}
        else:
            metric = healed["results"][task]["headline_metric"]
            row = {"examples": healed["results"][task]["num_scored"], "metric": metric}
            row["own_questions"] = healed["results"][task].get("own_questions", False)
            row.update(
                {
                    name: result["results"][task][metric]
                    for name, result in (("teacher", teacher), ("unhealed", unhealed), ("healed", healed))
                }
            )
        row = {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
        for key, comparison in (("healed_minus_unhealed", to_unhealed), ("healed_minus_teacher", to_teacher)):
            low, high = comparison[task]["ci95"]
            row[key] = {
                "difference": round(comparison[task]["difference"], 4),
                "ci95": [round(low, 4), round(high, 4)],
            }
        record[task] = row
    return record


def _rounded_ratio(ratio: dict) -> dict:
    return {"ratio": round(ratio["ratio"], 4), "ci95": [round(value, 4) for value in ratio["ci95"]]}


def _thin(points: list, limit: int) -> list:
    if len(points) <= limit:
        return [list(p) for p in points]
    stride = len(points) / limit
    picked = [points[int(i * stride)] for i in range(limit - 1)] + [points[-1]]
    return [list(p) for p in picked]


def _held_out_records(teacher: dict, unhealed: dict, healed: dict) -> dict:
    """The record's `held_out_texts` / `held_out_tasks` from the three models' `_scored_on_held_out` (none of either
    where none was asked for)."""
    record = {}
    if healed["texts"] is not None:
        record["held_out_texts"] = _held_out_record(teacher["texts"], unhealed["texts"], healed["texts"])
    if healed["tasks"] is not None:
        record["held_out_tasks"] = _held_out_tasks_record(teacher["tasks"], unhealed["tasks"], healed["tasks"])
    return record


def _scored_on_held_out(model, tokenizer, held_out, score_tasks, disable_progress: bool) -> dict:
    """`model`'s perplexity on the held-out texts and scores on the held-out tasks (None where there are none)."""
    from ..evaluation.language_modeling import texts_perplexity_by_source

    if held_out or score_tasks:
        model.eval()
    return {
        "texts": texts_perplexity_by_source(model, tokenizer, held_out, disable_progress=disable_progress)
        if held_out
        else None,
        "tasks": score_tasks(model) if score_tasks else None,
    }


def _run_record(
    config: HealingConfig, rows, trainer, guard, before: float, seconds: float, merge_error: float,
    rolled_back: bool,
) -> dict:  # fmt: skip
    """The run's part of the healing record: rows, steps, tokens, objective, adapter, options, the guard's KLs, the
    merge's check, the loss curve."""
    steps = trainer.state.global_step
    after = guard.best if config.guard else guard.history[-1]["validation_kl"]
    curve = [(entry["step"], round(entry["loss"], 5)) for entry in trainer.state.log_history if "loss" in entry]
    if config.lora:
        adapter = f"LoRA r={config.lora_r} alpha={config.lora_alpha} on {config.lora_modules} projections"
        adapter += (", orthogonal to the BOS token's inputs" if config.keep_bos_state else "") + ", merged"
    else:
        adapter = "full fine-tuning" + ("" if config.train_embeddings else " of the decoder layers")
    return {
        "training_sequences": int(rows.train.shape[0]),
        "validation_sequences": int(rows.validation.shape[0]),
        "steps": steps,
        "tokens_seen": steps * config.tokens_per_step,
        "scored_positions_per_sequence": config.seq_len - 1
        if rows.positions is None
        else int(rows.positions.shape[1]),
        "train_seconds": round(seconds, 1),
        "objective": _objective_text(config),
        "adapter": adapter,
        "options": asdict(config),
        "validation_kl_before": round(before, 5),
        "validation_kl_after": round(after, 5),
        "validation_kl_history": [{**e, "validation_kl": round(e["validation_kl"], 5)} for e in guard.history],
        "best_step": guard.best_step if config.guard else steps,
        "merge_max_abs_logit_diff": merge_error,
        "rolled_back": rolled_back,
        "loss_curve": _thin(curve, 60),
    }
