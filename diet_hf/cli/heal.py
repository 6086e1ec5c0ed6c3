"""`diet-hf heal`: distill a pruned model from its dense parent and save the healed model."""

import argparse
import logging
from dataclasses import fields

from .common import (
    EXIT_OK,
    _chat_renderer,
    _check_create_pr,
    _dtype,
    _named_as_flags,
    _options_from_flags,
    _pushed_as,
    _read_held_out_flags,
)
from .parser import (
    CREATE_PR_HELP,
    DTYPES,
    SHARD_HELP,
    TOKEN_HELP,
    _add_dataclass_flags,
    _add_task_evaluation_flags,
    _device_map,
    _repo_id,
    _shard_size,
)

logger = logging.getLogger(__name__)


def _add_parser(commands, quiet_after: argparse.ArgumentParser) -> None:
    """The `heal` command's flags, on the subparsers `commands`."""
    from ..healing import HealingConfig

    heal = commands.add_parser(
        "heal",
        parents=[quiet_after],
        help="distill a pruned model from its dense parent (LoRA by default, merged into the weights)",
    )
    heal.add_argument("model", help="local directory (or Hub id) of a pruned model saved by diet-hf")
    heal.add_argument("--revision", default=None, help="branch, tag or commit of MODEL on the Hub (e.g. refs/pr/1)")
    heal.add_argument(
        "--teacher", required=True, help="Hub id or local directory of the dense model it was pruned from"
    )
    heal.add_argument("--teacher-revision", default=None, help="branch, tag or commit of --teacher on the Hub")
    heal.add_argument(
        "--teacher-gguf-file",
        default=None,
        metavar="NAME",
        help="read --teacher from this GGUF file in it (the dense GGUF the model was pruned from with prune "
        "--gguf-file; dequantized on load, needs the gguf package)",
    )
    heal.add_argument("--output", required=True, help="new directory for the healed model (written atomically)")
    heal.add_argument("--max-shard-size", type=_shard_size, default=None, metavar="SIZE", help=SHARD_HELP)
    heal.add_argument(
        "--data",
        nargs="+",
        default=["wikitext2", "tasks"],
        metavar="SOURCE",
        help="training text: wikitext2 (its validation split), task names (their train split), `tasks` (the "
        "calibration tasks the model was pruned on that have a train split), or your own texts as NAME=FILE (.jsonl "
        "with a text field, or conversations in a messages field, rendered by MODEL's chat template; or .txt, one "
        "text per line) or NAME=DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]] (as `prune --tasks` reads it); each "
        "source gets an equal share",
    )
    heal.add_argument(
        "--data-chat-template",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the questions in --data (the registered tasks' train examples and your own questions) in MODEL's "
        "chat template, as `prune --calibration-chat-template` calibrates on them (default: as MODEL was "
        "calibrated, by its config's pruning record)",
    )
    heal.add_argument(
        "--eval-texts",
        nargs="+",
        default=None,
        metavar="NAME=SOURCE",
        help="your own held-out texts (not in --data; sources as `prune --tasks` reads them): their perplexity on the "
        "teacher and the unhealed model before training and on the healed model after, with the healed model's "
        "ratios to both and their 95%% paired-bootstrap intervals, is printed and written into the card",
    )
    _add_task_evaluation_flags(
        heal,
        "on the teacher and the unhealed model before training and on the healed model after (the evaluation "
        "examples the pruning profiled left out): the scores and the healed model's differences to both, with their "
        "95%% paired-bootstrap intervals, are printed and written into the card",
    )
    heal.add_argument(
        "--data-dir",
        default=None,
        help="local data directory of the tasks and WikiText-2 (default: $DIET_DATA_DIR, else the Hub)",
    )
    heal.add_argument("--work-dir", default=None, help="checkpoints for --resume (default: OUTPUT.healing)")
    heal.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last checkpoint (refused if the data, models or options differ "
        "from that run's; --max-time, --chunk-size, --release-memory and --save-steps may change)",
    )
    heal.add_argument(
        "--push-to-hub",
        type=_repo_id,
        default=None,
        metavar="REPO_ID",
        help="also upload the healed model to this Hub repository",
    )
    heal.add_argument("--private", action="store_true", help="create the Hub repository as private")
    heal.add_argument("--create-pr", action="store_true", help=CREATE_PR_HELP)
    heal.add_argument(
        "--token", default=None, help=TOKEN_HELP.format(use="reading MODEL and --teacher and for --push-to-hub")
    )
    heal.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype to load the student and the teacher in (default: float32; bf16 autocast is a separate option)",
    )
    heal.add_argument(
        "--device-map", type=_device_map, default=None, help='e.g. "auto" or "cuda:0" (accelerate device map)'
    )
    _add_dataclass_flags(heal, HealingConfig)


def _prepare(args) -> None:
    """Names the data, reads your own texts and questions and makes the `HealingConfig`, before any model loads
    (`ValueError`: a usage error)."""
    from ..healing import HealingConfig
    from ..tasks import TASKS, load_task_source

    # the data is named and your own texts read before any model loads
    _check_create_pr(args)
    args.own_data = {}
    render_chat = args.render_chat = _chat_renderer(args)  # conversations: the pruned model's chat template
    if args.data_chat_template:
        render_chat.check_template("--data-chat-template")  # before any model loads
    args.question_form = _QuestionForm(args, render_chat)
    for word in args.data:
        if "=" in word:
            # questions are trained on with their correct answers (a distractor would teach a wrong one)
            name, texts = load_task_source(
                word,
                flag="--data",
                registered=False,
                answer="gold",
                render_chat=render_chat,
                render_question=args.question_form,
                token=args.token,
            )
            if name in ("wikitext2", "tasks", *TASKS) or name in args.own_data:
                raise ValueError(f"`--data` {name}: the name is taken; give your texts another name.")
            args.own_data[name] = texts  # its `source` goes into the record, a local path left out
        elif word not in ("wikitext2", "tasks", *TASKS):
            raise ValueError(
                f"`--data`: {word!r} is not wikitext2, tasks, a registered task ({', '.join(TASKS)}) or "
                "NAME=SOURCE (your own texts)."
            )
    _read_held_out_flags(args, render_chat)
    # --top-k 0: the full vocabulary
    args.healing_config = _options_from_flags(args, HealingConfig, top_k=args.top_k or None)


def _run_heal(args) -> int:
    """Loads the pruned model, its teacher and the data, heals, saves (and pushes) the healed model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .._io import (
        check_model_location,
        check_not_a_file,
        check_output_is_not_input,
        check_tokenizer_files,
        source_name,
    )
    from ..healing import HealingConfig, check_parent, heal
    from ..hub import push_saved_model, register_auto_classes
    from ..importance import scores_directory
    from ..loading import (
        adapter_of,
        is_image_text,
        load_causal_lm,
        load_processor,
        peft_adapter,
        read_config,
        text_config,
    )
    from ..plan import PruningPlan

    config = args.healing_config
    check_model_location(args.model)
    adapter = peft_adapter(args.model, revision=args.revision, token=args.token)
    if adapter is not None:  # a fine-tune of a pruned model saved as its adapter alone
        base = adapter["base_model_name_or_path"]
        raise ValueError(
            f"`model` {args.model} holds {adapter_of(adapter)}, not a pruned model: healing trains a pruned "
            "model's own weights. Merge the adapter into them first (`PeftModel."
            f"from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}, trust_remote_code=True), "
            f"{str(args.model)!r}).merge_and_unload()`), save that with `save_pretrained` beside its tokenizer, and "
            "heal that directory."
        )
    check_model_location(
        args.teacher, "--teacher", gguf_file=args.teacher_gguf_file, gguf_argument="--teacher-gguf-file"
    )
    check_not_a_file(args.output, "--output")  # before any model loads, not after training
    check_output_is_not_input(args.output, "--output", {"pruned model": args.model, "teacher": args.teacher})
    check_tokenizer_files(args.model)
    register_auto_classes()
    # the data before any model loads: a task without a train split here fails now, not after loading the student
    student_config = AutoConfig.from_pretrained(args.model, revision=args.revision, token=args.token)
    data, splits = _healing_data(args, (getattr(student_config, "pruning", None) or {}).get("tasks") or [])
    load = {"dtype": _dtype(args.dtype), "device_map": args.device_map, "token": args.token}
    student = AutoModelForCausalLM.from_pretrained(args.model, revision=args.revision, **load)
    if not type(student).__name__.startswith("Pruned"):
        raise ValueError(
            f"`model` must be a pruned model saved by diet-hf; {args.model} is a {type(student).__name__}."
        )
    hub = {"revision": args.revision, "token": args.token}
    # the tokenizer that rendered your data in the chat template, where one did, is not loaded again
    tokenizer = args.render_chat.tokenizer or AutoTokenizer.from_pretrained(args.model, **hub)
    # a pruned image-text model's processor goes beside the healed one
    image_text = is_image_text(student.config)
    processor = load_processor(args.model, **hub) if image_text else None
    try:  # the plan goes beside the healed model (a checkpoint saved without one heals without it)
        student.diet_plan = PruningPlan.from_pretrained(args.model, **hub)
    except FileNotFoundError:
        pass
    # the profile it was pruned from, where it was saved with one, goes beside the healed model too
    profile = scores_directory(args.model, **hub, missing_ok=True)
    data_record = {"sources": list(data), "splits": splits}
    if args.question_form.rendered:
        data_record["questions_in_chat_template"] = True
    # with top_k, `heal` checks the teacher's config (that it is the student's dense parent) before anything else,
    # loads it for its one pass over the data and frees it before training
    teacher = args.teacher
    if config.top_k is None:  # beside the student at every step: loaded here, with --device-map
        teacher_config = read_config(
            args.teacher, token=args.token, revision=args.teacher_revision, gguf_file=args.teacher_gguf_file
        )
        check_parent(text_config(student.config), text_config(teacher_config))  # before its weights load
        teacher = load_causal_lm(  # the config handed on: a GGUF file's metadata is not parsed again
            args.teacher, teacher_config, revision=args.teacher_revision, gguf_file=args.teacher_gguf_file, **load
        )
        # the record names the teacher as `heal` names one it loads: ID@REVISION, /FILE read from a GGUF file
        teacher.config._name_or_path = source_name(args.teacher, args.teacher_revision, args.teacher_gguf_file)
    try:
        healed = heal(
            student,
            teacher,
            tokenizer,
            data,
            config=config,
            output_dir=args.output,
            work_dir=args.work_dir,
            resume=args.resume,
            data_record=data_record,
            repo_id=args.push_to_hub,
            disable_progress=args.quiet,
            processor=processor,
            eval_texts=args.eval_text_data or None,
            eval_tasks=args.eval_task_list or None,
            eval_options={
                "limit": args.eval_limit,
                "half": args.eval_half,
                "data_dir": args.data_dir,
                "apply_chat_template": args.eval_apply_chat_template,
            }
            if args.eval_task_list
            else None,
            token=args.token,
            max_shard_size=args.max_shard_size,
            teacher_revision=args.teacher_revision if config.top_k is not None else None,
            teacher_gguf_file=args.teacher_gguf_file if config.top_k is not None else None,
            profile=profile,
        )
    except ValueError as error:  # an option's name as the flag the user typed (`--seq-len`, not `seq_len`)
        raise ValueError(_named_as_flags(str(error), [f.name for f in fields(HealingConfig)])) from error
    _print_record(args.model, args.output, healed.config.pruning["healing"])
    if args.push_to_hub:
        pushed = push_saved_model(
            args.output, args.push_to_hub, private=args.private, token=args.token, create_pr=args.create_pr
        )
        print(f"pushed {args.output} to {args.push_to_hub} ({_pushed_as(pushed, args.create_pr)})")
    return EXIT_OK


def _healing_data(args, calibration: list[str]) -> tuple[dict, dict]:
    """The training texts of each `--data` source and the split each was read from: your own texts (read before any
    model loaded), a registered task's train split, WikiText-2 validation, or for `tasks` the model's registered
    calibration tasks that have a train split here."""
    from ..healing import healing_texts
    from ..tasks import TASKS

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
            data[name] = args.own_data[name]  # its source in words: the record's `own_sources` (heal records them)
            continue
        # `tasks`: the model's calibration tasks that are registered and have a train split here; others are skipped
        for name in [t for t in calibration if t in TASKS] if source == "tasks" else [source]:
            if name in data:
                continue
            try:
                texts, split = healing_texts([name], data_dir=args.data_dir, render=args.question_form)
            except ValueError as error:
                if source == "tasks":
                    continue
                raise ValueError(str(error).replace("`sources`", "`--data`")) from error  # the flag, not the argument
            data[name], splits[name] = texts, split[name]
    return data, splits


class _QuestionForm:
    """`render_question` of heal's `--data`: a question (a registered task's train example or your own) written in
    MODEL's chat template with `--data-chat-template`, as it is with `--no-data-chat-template`; by default as MODEL was
    calibrated (its config's `pruning["calibration_chat_template"]`), read at the first question, so data without
    one reads nothing more. `rendered`: a question was written in the chat template."""

    def __init__(self, args, renderer):
        self.args, self.renderer = args, renderer
        self.chat, self.rendered = args.data_chat_template, False

    def __call__(self, request):
        if self.chat is None:
            self.chat = _calibrated_in_chat_template(self.args)
            if self.chat:
                logger.info(
                    "%s was calibrated in its chat template: --data's questions are written in it too.",
                    self.args.model,
                )
        if not self.chat:
            return request
        self.rendered = True
        return self.renderer.question(request, "--data-chat-template")


def _calibrated_in_chat_template(args) -> bool:
    """Whether MODEL's pruning record says its questions were calibrated in the chat template (False where the
    config has no record); a config that cannot be read is a usage error naming MODEL."""
    from transformers import PretrainedConfig

    from .._io import check_model_location

    check_model_location(args.model)
    try:
        raw, _ = PretrainedConfig.get_config_dict(args.model, revision=args.revision, token=args.token)
    except OSError as error:
        raise ValueError(
            f"`--data-chat-template` follows how `model` ({args.model}) was calibrated, but its config could not be "
            f"read: {error}. Pass --data-chat-template or --no-data-chat-template."
        ) from error
    return bool((raw.get("pruning") or {}).get("calibration_chat_template", False))


def _print_record(model: str, output: str, record: dict) -> None:
    """What the healing did: steps, tokens and validation KL, and the held-out texts' and tasks' scores."""
    print(
        f"healed {model} -> {output}: {record['steps']} steps, {record['tokens_seen']:,} tokens, validation "
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
