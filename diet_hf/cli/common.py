"""What the `diet-hf` commands share: exit codes, option values from flags, the quiet switch, your own texts
and tasks read from the command line, and the paired differences printed."""

import contextlib
import functools
import os
import warnings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _options_from_flags(args, options_class, **overrides):
    """`options_class` built from the flags of its fields (`overrides` replace some values); its checks' errors name
    the flag the user typed (`--num-samples`), not the field (`num_samples`)."""
    import dataclasses

    fields = dataclasses.fields(options_class)
    values = {f.name: getattr(args, f.name) for f in fields}
    for name, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], tuple):  # NAME=NUMBER pairs
            values[name] = dict(value)
    try:
        return options_class(**{**values, **overrides})
    except (ValueError, TypeError) as error:
        raise type(error)(_named_as_flags(str(error), [f.name for f in fields])) from error


def _named_as_flags(message: str, names) -> str:
    """`message` with each of the argument `names` it quotes (`num_samples`) as the flag the user typed
    (`--num-samples`)."""
    for name in names:
        message = message.replace(f"`{name}`", f"`--{name.replace('_', '-')}`")
    return message


def _dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


@contextlib.contextmanager
def _quiet():
    """`--quiet` while a command runs: no progress bars and only the libraries' errors, everything restored afterwards
    (`main` also runs in-process: notebooks, tests). Bars that the libraries draw with plain tqdm and no `disable`
    argument (transformers' "Converting and de-quantizing GGUF tensors") are off too: tqdm reads `TQDM_DISABLE` only
    when it is imported, so its `__init__` takes `disable=True` by default meanwhile."""
    import datasets
    import huggingface_hub
    import transformers
    from tqdm import std

    libraries = (huggingface_hub.utils.logging, transformers.utils.logging, datasets.utils.logging)
    progress_bars = (  # (enabled now, off, on)
        (
            not huggingface_hub.utils.are_progress_bars_disabled(),
            huggingface_hub.utils.disable_progress_bars,
            huggingface_hub.utils.enable_progress_bars,
        ),
        (
            transformers.utils.logging.is_progress_bar_enabled(),
            transformers.utils.logging.disable_progress_bar,
            transformers.utils.logging.enable_progress_bar,
        ),
        (datasets.is_progress_bar_enabled(), datasets.disable_progress_bars, datasets.enable_progress_bars),
    )
    with contextlib.ExitStack() as undo:  # each switch beside what restores it
        environ, tqdm_init = os.environ.get("TQDM_DISABLE"), std.tqdm.__dict__["__init__"]
        undo.callback(_set_environ, "TQDM_DISABLE", environ)
        os.environ["TQDM_DISABLE"] = "1"  # for processes started meanwhile (data loader workers)
        undo.callback(setattr, std.tqdm, "__init__", tqdm_init)
        std.tqdm.__init__ = functools.partialmethod(tqdm_init, disable=True)
        # each of these logs through a handler of its own, past the root logger's level (huggingface_hub's "...
        # thrown while requesting HEAD ..." warnings on every retry offline)
        for library in libraries:
            undo.callback(library.set_verbosity, library.get_verbosity())
            library.set_verbosity_error()
        for enabled, off, on in progress_bars:
            if enabled:
                undo.callback(on)
            off()
        undo.enter_context(warnings.catch_warnings())
        # deprecation notices inside the libraries (e.g. PEFT reading transformers' `is_gradient_checkpointing`):
        # nothing the user of the command can act on
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)(\.|$)")
        yield


def _set_environ(name: str, value: str | None) -> None:
    """`os.environ[name] = value`, or `name` unset for None."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _eval_tasks(
    words: list[str], headline_metric: str, flag: str, *, preload: bool = False, data_dir=None, token=None
) -> list:
    """The tasks of `diet-hf eval --tasks` / `prune` and `heal --eval-tasks`: registered names as they are, your own
    multiple-choice questions (`NAME=SOURCE`, read and checked now) as `Task`s with `headline_metric`. With
    `preload` (prune, heal: the scores come after minutes of work) the registered tasks' data is loaded now too (from
    `data_dir`, else as `evaluate` would), so missing data fails before the model loads."""
    from ..tasks import TASKS, evaluation_examples, load_multiple_choice_source

    tasks = []
    for word in words:
        if "=" in word:
            tasks.append(load_multiple_choice_source(word, flag=flag, headline_metric=headline_metric, token=token))
        elif word in TASKS:
            tasks.append(word)
        else:
            raise ValueError(
                f"`{flag}`: {word!r} is not a registered task ({', '.join(TASKS)}); give your own multiple-choice "
                "questions as NAME=FILE.jsonl or NAME=DATASET[@REVISION][,CONFIG][:SPLIT]."
            )
    names = [task if isinstance(task, str) else task.name for task in tasks]
    if len(set(names)) < len(names):
        raise ValueError(f"`{flag}`: a task is named twice: {' '.join(names)}.")
    if preload:
        for task in tasks:
            if isinstance(task, str):
                evaluation_examples(task, data_dir=data_dir)
    return tasks


def _print_task_differences(model_name: str, reference_name: str, result: dict, reference: dict) -> dict:
    """Prints `result` minus `reference` per task (its headline metric) and on the average, with the paired 95%
    intervals (both made with `return_predictions=True`); returns the comparison."""
    from ..evaluation import compare_evaluations

    comparison = compare_evaluations(result, reference)
    print(f"\n{model_name} minus {reference_name} (the same examples; paired bootstrap, 2000 resamples):")
    print(f"{'task':16}{'reference':>10}{'difference':>12}  95% interval")
    for task, row in comparison.items():
        scores = reference["results"].get(task)
        score = reference["average"] if task == "average" else scores[scores["headline_metric"]]
        low, high = row["ci95"]
        print(f"{task:16}{score:>10.4f}{row['difference']:>+12.4f}  [{low:+.4f}, {high:+.4f}]")
    return comparison


def _pushed_as(pushed: str, create_pr: bool) -> str:
    """What a push made, for the line that reports it: the pull request's URL, or the commit."""
    return f"pull request {pushed}" if create_pr else f"commit {pushed}"


def _check_create_pr(args) -> None:
    """`--create-pr` only with `--push-to-hub` (a usage error naming both)."""
    if args.create_pr and not args.push_to_hub:
        raise ValueError("`--create-pr` opens a pull request with the upload, so it needs `--push-to-hub REPO_ID`.")


class _ChatRenderer:
    """`load_task_source`'s `render_chat` for the command line: your conversations rendered by the chat template of
    the command's MODEL (`tasks.chat_text`). The tokenizer is loaded at the first conversation, so data without one
    loads nothing before the model; a tokenizer that cannot be loaded is a usage error naming MODEL."""

    def __init__(
        self, model: str, *, revision: str | None = None, token: str | None = None, gguf_file: str | None = None
    ):
        self.model, self.revision, self.token, self.gguf_file = model, revision, token, gguf_file
        self._tokenizer = None

    def __call__(self, messages: list) -> str:
        from ..tasks import chat_text

        return chat_text(self._loaded(), messages)

    def question(self, request, flag: str = "--calibration-chat-template"):
        """A question's prompt in the chat template (`tasks.chat_calibration_request`), for `flag`
        (`prune --calibration-chat-template`, `heal --data-chat-template`)."""
        from ..tasks import chat_calibration_request

        self.check_template(flag)
        return chat_calibration_request(self._loaded(), request)

    def check_template(self, flag: str) -> None:
        """A usage error naming `flag` unless MODEL's tokenizer has a chat template."""
        from ..tasks import check_chat_template

        check_chat_template(self._loaded(), flag, self.model)

    @property
    def tokenizer(self):
        """MODEL's tokenizer where a conversation or a question has loaded it, else `None` (the pruner then takes
        it instead of loading it again)."""
        return self._tokenizer

    def _loaded(self):
        if self._tokenizer is None:
            from .._io import check_model_location
            from ..loading import load_tokenizer

            check_model_location(self.model, gguf_file=self.gguf_file, gguf_argument="--gguf-file")
            try:  # a GGUF file holds its tokenizer
                self._tokenizer = load_tokenizer(
                    self.model, revision=self.revision, token=self.token, gguf_file=self.gguf_file
                )
            except OSError as error:
                raise ValueError(
                    f"Your data is rendered by the chat template of `model` ({self.model}), but its tokenizer could "
                    f"not be loaded: {error}"
                ) from error
        return self._tokenizer


def _chat_renderer(args) -> _ChatRenderer:
    """The `_ChatRenderer` of a command's `model` (with its `--revision`, `--token` and `--gguf-file` where it has
    them)."""
    return _ChatRenderer(
        args.model,
        revision=getattr(args, "revision", None),
        token=getattr(args, "token", None),
        gguf_file=getattr(args, "gguf_file", None),
    )


def _text_sources(words: list[str] | None, flag: str, render_chat=None, token=None) -> dict[str, list[str]]:
    """`NAME=SOURCE` words of `flag` read as `prune --tasks` reads them (`ValueError` naming the flag), each name
    once; conversations rendered by `render_chat`."""
    from ..tasks import load_task_source

    # questions read with their correct answers: these texts are scored or trained on, not calibrated on
    sources = [
        load_task_source(word, flag=flag, registered=False, answer="gold", render_chat=render_chat, token=token)
        for word in words or []
    ]
    names = [name for name, _ in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"`{flag}`: each NAME once; repeated: {', '.join(repeated)}.")
    return dict(sources)


def _read_held_out_flags(args, render_chat: _ChatRenderer) -> None:
    """`prune` and `heal`'s `--eval-texts` and `--eval-tasks`: your texts and questions read and checked, and the
    registered tasks' data loaded, before any model loads (`args.eval_text_data`, `args.eval_task_list`);
    conversations rendered by `render_chat`, the command's own (one tokenizer load for all of its data)."""
    args.eval_text_data = _text_sources(args.eval_texts, "--eval-texts", render_chat, args.token)
    args.eval_task_list = _eval_tasks(
        args.eval_tasks or [],
        args.eval_own_headline,
        "--eval-tasks",
        preload=True,
        data_dir=args.data_dir,
        token=args.token,
    )
    if args.eval_apply_chat_template:  # before any model loads, not after the profile or the training
        if not args.eval_task_list:
            raise ValueError(
                "`--eval-apply-chat-template` scores the --eval-tasks in the model's chat template; give --eval-tasks."
            )
        render_chat.check_template("--eval-apply-chat-template")
