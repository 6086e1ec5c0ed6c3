"""The registered tasks: each one's data (Hub id, splits), how an example becomes lm-eval-harness 0.4's zero-shot
prompt, its metrics; and the dev/test halves of the evaluation examples."""

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# The two halves of every task's evaluation examples (DESIGN.md section 5): recipes and defaults are chosen on `dev`,
# reported numbers come from `test`.
HALVES = ("dev", "test")
# Which answer a registered task's calibration text ends in (`ProfileOptions.calibration_answer`): `"any"`, one of
# the example's choices drawn uniformly from the task's name and the example's id (what the evaluator reads: every
# choice, distractors included), or `"gold"`, the correct one (the paper's; diet-hf's default before 2026-12-05).
CALIBRATION_ANSWERS = ("any", "gold")
DEFAULT_CALIBRATION_ANSWER = "any"  # chosen on dev examples: docs/choosing_the_default.md


def split_half(task: str, example_id: str) -> str:
    """`"dev"` or `"test"`: the half of `task`'s evaluation examples that `example_id` belongs to.

    The first 8 bytes of SHA-256 of `"{task}/{example_id}"`, read as a big-endian integer: even is dev, odd is test.
    Deterministic, independent of file order and of which examples calibration excluded, and about half and half.
    """
    digest = hashlib.sha256(f"{task}/{example_id}".encode()).digest()
    return HALVES[int.from_bytes(digest[:8], "big") % 2]


@dataclass(frozen=True)
class MultipleChoiceRequest:
    """One question as lm-eval scores it: `contexts[i]` + `delimiter` + `continuations[i]` for every choice `i`."""

    example_id: str
    contexts: list[str]
    continuations: list[str]
    label: int
    delimiter: str = " "


@dataclass(frozen=True)
class Task:
    """A multiple-choice task: its data sources and its prompt (lm-eval-harness 0.4 default template)."""

    name: str
    hub_path: str
    hub_name: str | None
    eval_split: str
    train_split: str | None
    build: Callable[[dict], MultipleChoiceRequest] = field(repr=False)
    from_hub: Callable[[dict, int], dict] = field(repr=False)
    # Headline metric (DESIGN.md section 4): `acc` for BoolQ, RTE, WinoGrande, `acc_norm` for the others.
    headline_metric: str = "acc_norm"
    # The metrics lm-eval 0.4 reports for the task: `acc` (highest log-likelihood) and `acc_norm` (per character);
    # WinoGrande scores one shared continuation after different contexts, so lm-eval reports `acc` only.
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    # Your own task (`multiple_choice_task`): its evaluation examples, held in memory instead of a data source.
    examples: tuple[dict, ...] | None = field(default=None, repr=False, compare=False)
    # where your own task's questions were read (`load_multiple_choice_source`; `SourceTexts.source`), for the record
    data_source: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.headline_metric not in self.metrics:
            raise ValueError(
                f"Task {self.name!r}: `headline_metric` {self.headline_metric!r} is not one of its metrics "
                f"{self.metrics}."
            )

    def calibration_text(self, doc: dict, answer: str = "gold", render=None) -> str:
        """The scored prompt followed by an answer, as one calibration text: the gold one (`answer="gold"`), or with
        `answer="any"` one of the example's choices, drawn uniformly from the task's name and the example's id (the
        same example always ends in the same choice, whatever else is drawn). `render` (a request to a request, e.g.
        `chat_calibration_request`) changes the prompt as evaluation will."""
        request = self.build(doc)
        return answer_text(self.name, render(request) if render is not None else request, answer)


def answer_text(task: str, request: MultipleChoiceRequest, answer: str) -> str:
    """`task`'s calibration text of `request`: the context and continuation of its gold choice (`answer="gold"`), or of
    one drawn from `task` and the request's example id (`"any"`), joined by the request's delimiter."""
    check_calibration_answer(answer)
    if answer == "gold":
        choice = request.label
    else:
        choice = random.Random(f"{task}/{request.example_id}").randrange(len(request.continuations))
    return request.contexts[choice] + request.delimiter + request.continuations[choice]


def check_calibration_answer(answer) -> None:
    """`ValueError` unless `answer` is one of `CALIBRATION_ANSWERS`."""
    if answer not in CALIBRATION_ANSWERS:
        raise ValueError(f"`calibration_answer` must be one of {CALIBRATION_ANSWERS}, got {answer!r}.")


def _hellaswag_preprocess(text: str) -> str:
    # lm-eval's hellaswag `preprocess`.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _single_context(doc_id: str, context: str, choices: list[str], label: int) -> MultipleChoiceRequest:
    return MultipleChoiceRequest(doc_id, [context] * len(choices), list(choices), int(label))


def _boolq(doc):
    return _single_context(
        doc["id"], f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"], doc["label"]
    )


def _rte(doc):
    context = f"{doc['premise']}\nQuestion: {doc['hypothesis']} True or False?\nAnswer:"
    return _single_context(doc["id"], context, ["True", "False"], doc["label"])


def _hellaswag(doc):
    context = _hellaswag_preprocess(doc["query"])
    return _single_context(doc["id"], context, [_hellaswag_preprocess(e) for e in doc["endings"]], doc["label"])


def _winogrande(doc):
    # Partial scoring: each option fills the blank of the context; the shared remainder is the scored continuation.
    sentence = doc["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + doc["option1"], sentence[:blank] + doc["option2"]]
    remainder = sentence[blank + 1 :].strip()
    return MultipleChoiceRequest(doc["id"], contexts, [remainder, remainder], int(doc["label"]))


def _arc(doc):
    return _single_context(doc["id"], f"Question: {doc['question']}\nAnswer:", doc["choices"]["text"], doc["label"])


def _openbookqa(doc):
    return _single_context(doc["id"], doc["question_stem"], doc["choices"]["text"], doc["label"])


def _piqa(doc):
    return _single_context(doc["id"], f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"])


# Hub rows -> the normalized schema of the local JSONL files (`shared/data/README.md`). The Hub datasets are the ones
# lm-eval-harness 0.4.13 reads (a slow test compares them with its task configs): `aps/super_glue`, where the
# `super_glue` id moved, and `baber/piqa`, since `ybisk/piqa` is a loading script, which `datasets` 4 no longer runs.
# Where a Hub dataset has no id the local file has (HellaSwag, WinoGrande, PIQA), ids are made from a row's `ind` or
# position, so the dev/test halves of Hub-loaded examples are not the local files' halves.
def _hub_boolq(row, idx):
    return {**row, "id": f"boolq-{row.get('idx', idx)}"}


def _hub_rte(row, idx):
    return {
        "id": f"rte-{row.get('idx', idx)}",
        "premise": row["sentence1"],
        "hypothesis": row["sentence2"],
        "label": row["label"],
    }


def _hub_hellaswag(row, idx):
    query = row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "id": f"hellaswag-{row.get('ind', idx)}",
        "query": query,
        "endings": row["endings"],
        "label": int(row["label"]),
    }


def _hub_winogrande(row, idx):
    return {**row, "id": f"winogrande-{idx}", "label": int(row["answer"]) - 1}


def _hub_keyed_choices(row, idx):
    return {**row, "id": row.get("id", str(idx)), "label": row["choices"]["label"].index(row["answerKey"])}


def _hub_piqa(row, idx):
    return {**row, "id": f"piqa-{idx}"}


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("boolq", "aps/super_glue", "boolq", "validation", "train", _boolq, _hub_boolq, "acc"),
        Task("rte", "nyu-mll/glue", "rte", "validation", "train", _rte, _hub_rte, "acc"),
        Task("hellaswag", "Rowan/hellaswag", None, "validation", "train", _hellaswag, _hub_hellaswag),
        Task(
            "winogrande",
            "allenai/winogrande",
            "winogrande_xl",
            "validation",
            "train",
            _winogrande,
            _hub_winogrande,
            "acc",
            metrics=("acc",),
        ),
        Task("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test", "train", _arc, _hub_keyed_choices),
        Task("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test", "train", _arc, _hub_keyed_choices),
        Task("openbookqa", "allenai/openbookqa", "main", "test", "train", _openbookqa, _hub_keyed_choices),
        Task("piqa", "baber/piqa", None, "validation", "train", _piqa, _hub_piqa),
    )
}


PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def get_task(name: str) -> Task:
    """Returns the registered task `name`; `ValueError` lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]
