"""`diet-hf heal`: distill a pruned model from its dense parent and save the healed model."""

import logging
import os
from pathlib import Path

from .common import EXIT_OK, _dataclass_values, _dtype, _eval_tasks, _text_sources

logger = logging.getLogger(__name__)


def _prepare(args) -> None:
    """Names the data, reads your own texts and questions and makes the `HealingConfig`, before any model loads
    (`ValueError`: a usage error)."""
    from ..healing import HealingConfig
    from ..tasks import TASKS, load_task_source

    # the data is named and your own texts read before any model loads
    args.own_data = {}
    for word in args.data:
        if "=" in word:
            name, texts = load_task_source(word, flag="--data", registered=False)
            if name in ("wikitext2", "tasks", *TASKS) or name in args.own_data:
                raise ValueError(f"`--data` {name}: the name is taken; give your texts another name.")
            args.own_data[name] = (texts, word.split("=", 1)[1])
        elif word not in ("wikitext2", "tasks", *TASKS):
            raise ValueError(
                f"`--data`: {word!r} is not wikitext2, tasks, a registered task ({', '.join(TASKS)}) or "
                "NAME=SOURCE (your own texts)."
            )
    if "wikitext2" in args.data and args.data_dir is None and not os.environ.get("DIET_DATA_DIR"):
        raise ValueError("`--data` wikitext2 is read from a data directory: pass --data-dir or set DIET_DATA_DIR.")
    args.eval_text_data = _text_sources(args.eval_texts, "--eval-texts")
    args.eval_task_list = _eval_tasks(
        args.eval_tasks or [], args.eval_own_headline, "--eval-tasks", preload=True, data_dir=args.data_dir
    )
    values = _dataclass_values(args, HealingConfig)
    values["top_k"] = values["top_k"] or None  # --top-k 0: the full vocabulary
    args.healing_config = HealingConfig(**values)


def _run_heal(args) -> int:
    """Loads the pruned model, its teacher and the data, heals, saves (and pushes) the healed model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .._io import check_model_location, check_output_is_not_input, check_tokenizer_files
    from ..healing import check_parent, heal, healing_texts
    from ..hub import push_saved_model, register_auto_classes
    from ..loading import is_image_text, load_causal_lm, load_processor, text_config
    from ..plan import PruningPlan
    from ..tasks import TASKS

    config = args.healing_config
    check_model_location(args.model)
    check_model_location(args.teacher, "--teacher")
    check_output_is_not_input(args.output, "--output", {"pruned model": args.model, "teacher": args.teacher})
    check_tokenizer_files(args.model)
    register_auto_classes()
    load = {"dtype": _dtype(args.dtype), "device_map": args.device_map, "token": args.token}
    student = AutoModelForCausalLM.from_pretrained(args.model, **load)
    if not type(student).__name__.startswith("Pruned"):
        raise ValueError(
            f"`model` must be a pruned model saved by diet-hf; {args.model} is a {type(student).__name__}."
        )
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True, token=args.token)
    # a pruned image-text model's processor goes beside the healed one
    image_text = is_image_text(student.config)
    processor = load_processor(args.model, trust_remote_code=True, token=args.token) if image_text else None
    # the teacher is loaded by `heal` for its one pass over the data and freed before training
    teacher_config = AutoConfig.from_pretrained(args.teacher, token=args.token)
    check_parent(text_config(student.config), text_config(teacher_config))  # before any data
    calibration = (student.config.pruning or {}).get("tasks") or []
    own = [t for t in calibration if t not in TASKS and t not in args.own_data]
    if "tasks" in args.data and own:
        logger.warning(
            "`--data tasks` takes the registered calibration tasks only; the model was also calibrated on your own "
            "data (%s), which is not saved with it: pass it as --data NAME=FILE to heal on it too.",
            ", ".join(own),
        )
    data, splits = {}, {}
    for source in args.data:
        if "=" in source:  # your own texts, read before any model loaded
            name = source.split("=", 1)[0]
            data[name], splits[name] = args.own_data[name]
            continue
        # `tasks`: the model's calibration tasks that are registered and have a train split here; others are skipped
        for name in [t for t in calibration if t in TASKS] if source == "tasks" else [source]:
            if name in data:
                continue
            try:
                texts, split = healing_texts([name], data_dir=args.data_dir)
            except ValueError:
                if source == "tasks":
                    continue
                raise
            data[name], splits[name] = texts, split[name]
    if Path(args.model, "diet_pruning.json").is_file():
        student.diet_plan = PruningPlan.from_pretrained(args.model)
    healed = heal(
        student,
        args.teacher if config.top_k is not None else load_causal_lm(args.teacher, **load),
        tokenizer,
        data,
        config=config,
        output_dir=args.output,
        work_dir=args.work_dir,
        resume=args.resume,
        data_record={"sources": list(data), "splits": splits},
        repo_id=args.push_to_hub,
        disable_progress=args.quiet,
        processor=processor,
        eval_texts=args.eval_text_data or None,
        eval_tasks=args.eval_task_list or None,
        eval_options={"limit": args.eval_limit, "half": args.eval_half, "data_dir": args.data_dir}
        if args.eval_task_list
        else None,
        token=args.token,
    )
    record = healed.config.pruning["healing"]
    print(
        f"healed {args.model} -> {args.output}: {record['steps']} steps, {record['tokens_seen']:,} tokens, validation "
        f"KL {record['validation_kl_before']:.4f} -> {record['validation_kl_after']:.4f}"
        + (" (rolled back: healing did not help)" if record["rolled_back"] else "")
    )
    for name, row in (record.get("held_out_texts") or {}).items():
        ratio, low, high = row["healed_over_unhealed"]["ratio"], *row["healed_over_unhealed"]["ci95"]
        print(
            f"  {name}: perplexity {row['unhealed']:.3f} -> {row['healed']:.3f} (teacher {row['teacher']:.3f}), "
            f"healed / unhealed {ratio:.3f} [{low:.3f}, {high:.3f}] ({row['texts']} held-out texts)"
        )
    for task, row in (record.get("held_out_tasks") or {}).items():
        difference, (low, high) = row["healed_minus_unhealed"]["difference"], row["healed_minus_unhealed"]["ci95"]
        scored = f"{row['metric']}, {row['examples']} examples" if task != "average" else "headline average"
        print(
            f"  {task}: {row['unhealed']:.4f} -> {row['healed']:.4f} (teacher {row['teacher']:.4f}; {scored}), "
            f"healed - unhealed {difference:+.4f} [{low:+.4f}, {high:+.4f}]"
        )
    if args.push_to_hub:
        commit = push_saved_model(args.output, args.push_to_hub, private=args.private, token=args.token)
        print(f"pushed {args.output} to {args.push_to_hub} (commit {commit})")
    return EXIT_OK
