"""The task registry: lm-eval prompts, the local loader on the real data, calibration exclusions, errors."""

import importlib.util
import json

import pytest

from diet_hf.tasks import (
    TASKS,
    custom_calibration,
    get_task,
    load_calibration,
    load_examples,
    wikitext2_last_word_texts,
)


def test_prompts_follow_lm_eval_templates():
    boolq = get_task("boolq").build({"id": "b", "passage": "P", "question": "is it", "label": 1})
    assert boolq.contexts[0] == "P\nQuestion: is it?\nAnswer:" and boolq.continuations == ["no", "yes"]
    arc = get_task("arc_easy").build({"id": "a", "question": "Q?", "choices": {"text": ["x", "y"]}, "label": 1})
    assert arc.contexts[0] == "Question: Q?\nAnswer:"
    wino = get_task("winogrande").build(
        {"id": "w", "sentence": "The cat sat because _ was tired.", "option1": "cat", "option2": "mat", "label": 0}
    )
    assert wino.contexts == ["The cat sat because cat", "The cat sat because mat"]
    assert wino.continuations == ["was tired.", "was tired."]
    hella = get_task("hellaswag").build(
        {"id": "h", "query": "Cooking: [header] He cuts  it.", "label": 0, "endings": ["a [step] b", "c", "d", "e"]}
    )
    assert hella.contexts[0] == "Cooking: He cuts it." and hella.continuations[0] == "a b"
    assert get_task("rte").calibration_text({"id": "r", "premise": "A", "hypothesis": "B", "label": 0}) == (
        "A\nQuestion: B True or False?\nAnswer: True"
    )


@pytest.mark.parametrize("task", list(TASKS))
def test_local_loader_reads_every_task(task, data_dir):
    spec = get_task(task)
    rows = load_examples(task, spec.eval_split, data_dir=data_dir)
    assert rows and all(0 <= spec.build(r).label < len(spec.build(r).continuations) for r in rows[:50])
    calibration = load_calibration(task, num_samples=100, seed=0, data_dir=data_dir)
    assert len(calibration.texts) == 100 and len(set(calibration.example_ids)) == 100
    eval_ids = {str(r["id"]) for r in rows}
    # calibration examples drawn from the evaluation split are exactly those recorded for exclusion
    assert set(calibration.example_ids) & eval_ids == set(calibration.excluded_eval_ids)
    if task in ("hellaswag", "piqa"):  # no train split: everything comes from evaluation and is excluded
        assert len(calibration.excluded_eval_ids) == 100
    if task == "boolq":  # 64 train examples: 36 carved from validation
        assert len(calibration.excluded_eval_ids) == 36
    if task == "arc_easy":
        assert calibration.excluded_eval_ids == []


def test_calibration_is_seeded(data_dir):
    a = load_calibration("rte", num_samples=10, seed=1, data_dir=data_dir)
    b = load_calibration("rte", num_samples=10, seed=1, data_dir=data_dir)
    c = load_calibration("rte", num_samples=10, seed=2, data_dir=data_dir)
    assert a.example_ids == b.example_ids != c.example_ids


def test_asking_more_calibration_examples_than_a_task_has_is_refused(data_dir):
    with pytest.raises(ValueError, match=r"Task 'rte' has only 2767 examples; asked for 3000\."):
        load_calibration("rte", num_samples=3000, data_dir=data_dir)


def test_data_dir_from_environment(monkeypatch, data_dir):
    monkeypatch.setenv("DIET_DATA_DIR", str(data_dir))
    assert len(load_calibration("rte", num_samples=3).texts) == 3


def test_unknown_task_lists_known():
    with pytest.raises(ValueError, match=r"Unknown task 'squad'; known tasks: boolq, rte, hellaswag"):
        get_task("squad")


def test_missing_local_data_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"rte/validation.jsonl does not exist \(data directory"):
        load_examples("rte", "validation", data_dir=tmp_path)


def test_missing_hub_data_names_the_hub_id(monkeypatch):
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"from the Hub dataset 'nyu-mll/glue' \(rte\) and no data directory"):
        load_examples("rte", "validation")


def test_custom_tasks():
    assert custom_calibration("mine", ["a", "b"]).texts == ["a", "b"]
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"text": ["x", "y"]})
    assert custom_calibration("ds", dataset).example_ids == ["ds-0", "ds-1"]
    with pytest.raises(ValueError, match="has no `text` column"):
        custom_calibration("ds", datasets.Dataset.from_dict({"body": ["x"]}))
    # a stream (`load_dataset(..., streaming=True)`, a sample of it taken); one whose columns are known only once it
    # is read (a streamed JSON dataset) is read too, and its columns named from its first row
    assert custom_calibration("ds", dataset.to_iterable_dataset().take(1)).texts == ["x"]
    unknown = datasets.IterableDataset.from_generator(lambda: ({"text": t} for t in ["x", "y", "z"]))
    assert unknown.column_names is None and custom_calibration("ds", unknown.take(2)).texts == ["x", "y"]
    with pytest.raises(ValueError, match=r"has no `text` column; columns: \['body'\]"):
        custom_calibration("ds", datasets.IterableDataset.from_generator(lambda: iter([{"body": "x"}])))
    # `load_dataset(...)` without `split=`: named as what it is, with the split to pass
    splits = datasets.DatasetDict({"train": dataset, "test": dataset})
    split_message = r"The dataset for task 'ds' is a `DatasetDict` of the splits \['train', 'test'\]; pass one split: "
    with pytest.raises(
        ValueError, match=split_message + r"dataset\['train'\] \(or `load_dataset\(\.\.\., split='train'\)`\)\.$"
    ):
        custom_calibration("ds", splits)
    with pytest.raises(ValueError, match=r"The dataset for task 'ds' is a `DatasetDict` of the splits \['train'\]"):
        custom_calibration("ds", datasets.IterableDatasetDict({"train": dataset.to_iterable_dataset()}))
    # as `profile(tasks=)` itself, a mapping of splits rather than of task names
    from diet_hf.calibration import named_tasks

    with pytest.raises(
        ValueError, match=r"`tasks` is a `DatasetDict` of .*; pass one split: \{'mine': dataset\['train'\]\} \(or"
    ):
        named_tasks(splits)
    assert list(named_tasks({"mine": splits["train"]})) == ["mine"]
    with pytest.raises(TypeError, match="must be a list of strings .* one of its texts is a int: 1"):
        custom_calibration("bad", ["a", 1, 2])
    with pytest.raises(TypeError, match="one of its texts is a NoneType: None"):  # a missing text, not skipped
        custom_calibration("bad", ["a", None])
    with pytest.raises(ValueError, match="Custom task 'none' has no texts"):
        custom_calibration("none", [])
    # blank texts (a dataset's empty rows) are left out, as the command line leaves them out; the ids keep positions
    blanks = custom_calibration("mine", ["", "a", " \n", "b"])
    assert (blanks.texts, blanks.example_ids) == (["a", "b"], ["mine-1", "mine-3"])
    with pytest.raises(ValueError, match="Custom task 'mine' has no non-empty texts: every one of its 2 is blank"):
        custom_calibration("mine", ["", "  "])
    # one string (a path, say) is refused, not calibrated on as its characters
    with pytest.raises(TypeError, match=r"Custom task 'mine' is one string \('train.jsonl'\), not a list of texts"):
        custom_calibration("mine", "train.jsonl")


def test_a_task_owns_its_metrics_and_its_headline_is_one_of_them():
    from dataclasses import replace

    from diet_hf.tasks import TASKS

    assert TASKS["winogrande"].metrics == ("acc",) and TASKS["boolq"].metrics == ("acc", "acc_norm")
    assert all(task.headline_metric in task.metrics for task in TASKS.values())
    with pytest.raises(ValueError, match="`headline_metric` 'acc_norm' is not one of its metrics"):
        replace(TASKS["winogrande"], headline_metric="acc_norm")


def test_wikitext2_text_names_what_is_missing(tmp_path, monkeypatch):
    from diet_hf.tasks import wikitext2_text

    monkeypatch.delenv("DIET_DATA_DIR", raising=False)  # the Hub, offline in the tests
    with pytest.raises(FileNotFoundError, match=r"WikiText-2 from the Hub dataset 'Salesforce/wikitext' \(wikitext-2"):
        wikitext2_text("test")
    with pytest.raises(FileNotFoundError, match="WikiText-2 validation split not found"):
        wikitext2_text("validation", data_dir=tmp_path)
    with pytest.raises(ValueError, match="`split` must be 'test' or 'validation', got 'train'"):
        wikitext2_text("train", data_dir=tmp_path)


def test_wikitext2_last_word_texts(data_dir, monkeypatch):
    texts = wikitext2_last_word_texts(limit=50, data_dir=data_dir)
    assert len(texts) == 50 and wikitext2_last_word_texts(limit=5, data_dir=data_dir) == texts[:5]
    for text in texts:
        words = text.split(" ")
        assert len(words) >= 20 and words[-1].isalpha() and not text.startswith(("=", " "))
    assert all(len(t.split(" ")) >= 40 for t in wikitext2_last_word_texts(limit=20, min_words=40, data_dir=data_dir))
    assert len(wikitext2_last_word_texts("validation", limit=3, data_dir=data_dir)) == 3
    with pytest.raises(ValueError, match="`split` must be 'test' or 'validation', got 'train'"):
        wikitext2_last_word_texts("train", data_dir=data_dir)
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="and no data directory is set"):
        wikitext2_last_word_texts()


def test_wikitext2_from_the_hub_is_the_data_directorys(data_dir, hub_dataset, monkeypatch):
    """Without a data directory WikiText-2 comes from the Hub (`Salesforce/wikitext`, config `wikitext-2-raw-v1`: the
    same rows as the shared data's files), read by `datasets.load_dataset` from a repository on the local Hub that
    holds those rows beside another config's."""
    from diet_hf.tasks import wikitext2_text

    rows = {
        split: [json.loads(line) for line in (data_dir / "wikitext2" / f"{split}.jsonl").read_text().splitlines()]
        for split in ("test", "validation")
    }
    hub_dataset(
        "Salesforce/wikitext",
        {
            "wikitext-103-raw-v1": {split: [{"text": "not WikiText-2"}] for split in rows},
            "wikitext-2-raw-v1": {split: [{"text": row["text"]} for row in rows[split]] for split in rows},
        },
    )
    local = {split: wikitext2_text(split, data_dir=data_dir) for split in ("test", "validation")}
    last_words = wikitext2_last_word_texts(limit=30, data_dir=data_dir)
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)
    assert {split: wikitext2_text(split) for split in ("test", "validation")} == local
    assert wikitext2_last_word_texts(limit=30) == last_words


def test_your_own_data_from_a_config_and_a_slice_of_a_hub_dataset(hub_dataset, local_hub, tmp_path):
    """`NAME=ID,CONFIG[:SPLIT[:COLUMN]]` reads a config (subset) of a Hub dataset through `datasets.load_dataset`
    (here from the local Hub), and a split may be sliced as `datasets` reads it (`train[:3]`), in a saved dataset's
    splits too; a split's first rows are streamed, reading only the files that hold them. A dataset of several
    configs with none named is refused, with its configs and how to name one."""
    import datasets

    from diet_hf.tasks import load_multiple_choice_source, load_task_source

    questions = [{"context": f"Q{i}", "choices": ["a", "b"], "label": i % 2} for i in range(4)]
    repo = hub_dataset(
        "org/mine",
        {
            "short": {"train": [{"text": f"short {i}"} for i in range(3)]},
            "long": {"train": [{"text": f"long {i}", "other": f"other {i}"} for i in range(20)]},
            "shards": {"train": tuple([{"text": f"shard {k} row {i}"} for i in range(5)] for k in range(3))},
            "questions": {"test": questions},
        },
    )
    assert load_task_source(f"mine={repo},short") == ("mine", ["short 0", "short 1", "short 2"])
    assert load_task_source(f"mine={repo},long:train[:2]") == ("mine", ["long 0", "long 1"])
    assert load_task_source(f"mine={repo},long:train[18:]:other") == ("mine", ["other 18", "other 19"])
    texts = load_task_source(f"mine={repo},long:train[:10%]", flag="--texts", registered=False)[1]
    assert texts == ["long 0", "long 1"]
    chosen = load_multiple_choice_source(f"q={repo},questions:test[1:3]").examples
    assert [q["context"] for q in chosen] == ["Q1", "Q2"]
    # the first rows of a split are streamed: of a split in three files, the third is not read for rows of the first
    # (`datasets` opens one file ahead, with range requests)
    reads = len(local_hub.state.read_paths)
    expected = ["shard 0 row 1", "shard 0 row 2"]
    assert load_task_source(f"mine={repo},shards:train[1:3]") == ("mine", expected)
    assert not any("train-00002-of-00003" in path for path in local_hub.state.read_paths[reads:])
    assert load_task_source(f"mine={repo},shards:train[:60%]")[1][-1] == "shard 1 row 3"  # read whole, then sliced
    assert any("train-00002-of-00003" in path for path in local_hub.state.read_paths[reads:])
    assert load_task_source(f"mine={repo},long:train[18:30]")[1] == ["long 18", "long 19"]
    configs = rf"dataset '{repo}' has several configs \(subsets\): short, long, shards, questions; name one"
    configs += " after a comma"
    refused = [
        (load_task_source, f"mine={repo},long:train[30:40]", r"`--tasks` mine: .*\[30:40\] holds no non-empty texts"),
        (
            load_task_source,
            f"mine={repo}:train",
            rf"`--tasks` mine: {configs}: mine={repo},CONFIG\[:SPLIT\[:COLUMN\]\]\.$",
        ),
        (load_multiple_choice_source, f"q={repo}", rf"`--tasks` q: {configs}: q={repo},CONFIG"),
        (load_task_source, f"mine={repo},nope", r"`--tasks` mine: dataset 'org/mine': .*nope"),
        (
            load_task_source,
            f"mine={repo},long:train[:2",
            r"`--tasks` mine: an unmatched bracket in the split of '.*\[:2'",
        ),
    ]
    # a saved dataset's splits, sliced and joined as `datasets.load_dataset` would
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"text": f"train {i}"} for i in range(3)]),
            "validation": datasets.Dataset.from_list([{"text": f"validation {i}"} for i in range(2)]),
        }
    ).save_to_disk(str(saved))
    assert load_task_source(f"mine={saved}:train[:1]+validation[1:]") == ("mine", ["train 0", "validation 1"])
    refused += [
        (load_task_source, f"mine={saved}:test[:1]", r"mine: .*saved has no split 'test\[:1\]'; splits: \['train',"),
        (load_task_source, f"mine={saved},x", r"mine: .*saved is a saved dataset, which has no configs; got 'x'"),
        (load_task_source, f"mine={saved}:train[5:]", r"mine: .*saved:train\[5:\] holds no non-empty texts"),
    ]
    for load, word, message in refused:
        with pytest.raises(ValueError, match=message):
            load(word)


def test_your_own_data_records_where_it_was_read(hub_dataset, tmp_path, tiny_tokenizer, monkeypatch):
    """Texts and questions read from a source carry it: a Hub dataset at the commit read (a revision named after `@`,
    a branch or a commit, is read there), its config, split and column; a local file or saved dataset without its
    path. A profile records the sources; `source_label` writes one as the command line names it."""
    import datasets
    from conftest import tiny_dense_model
    from huggingface_hub import HfApi

    from diet_hf import DietPruner
    from diet_hf.tasks import SourceTexts, load_multiple_choice_source, load_task_source, source_label

    questions = [{"context": f"Q{i}", "choices": ["a", "b"], "label": i % 2} for i in range(2)]
    repo = hub_dataset(
        "org/sourced", {"texts": {"train": [{"text": "old 0"}, {"text": "old 1"}]}, "q": {"test": questions}}
    )
    first = HfApi().dataset_info(repo).sha
    hub_dataset(repo, {"texts": {"train": [{"text": "new 0"}, {"text": "new 1"}]}, "q": {"test": questions}})
    latest = HfApi().dataset_info(repo).sha
    assert first != latest
    texts = load_task_source(f"mine={repo},texts:train[:1]")[1]
    assert isinstance(texts, SourceTexts) and texts == ["new 0"]
    read = {"dataset": repo, "revision": latest, "config": "texts", "split": "train[:1]", "column": "text"}
    assert texts.source == read
    assert source_label(texts.source) == f"{repo}@{latest[:7]},texts:train[:1]:text"
    # at a revision: the data of that commit, streamed or read whole
    assert load_task_source(f"mine={repo}@{first},texts:train[1:2]")[1] == ["old 1"]
    pinned = load_task_source(f"mine={repo}@{first},texts")[1]
    assert pinned == ["old 0", "old 1"] and pinned.source == {**read, "revision": first, "split": "train"}
    assert load_task_source(f"mine={repo}@main,texts")[1].source["revision"] == latest  # a branch: its commit
    with monkeypatch.context() as offline:  # datasets' cache, read at no commit the Hub can confirm
        offline.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        cached = load_task_source(f"mine={repo},texts")[1]
        assert cached == ["new 0", "new 1"] and cached.source["revision"] is None
    asked = load_multiple_choice_source(f"q={repo},q")
    assert asked.data_source == {"dataset": repo, "revision": latest, "config": "q", "split": "test", "column": None}
    for word in (f"mine={repo}@,texts", "mine=@main"):
        with pytest.raises(ValueError, match=r"`--tasks` mine: expected DATASET@REVISION \(a branch, tag or commit\)"):
            load_task_source(word)
    # local sources: what they were, not where (the path would go into a published config and card)
    (tmp_path / "mine.txt").write_text("a local text\n")
    assert load_task_source(f"mine={tmp_path / 'mine.txt'}")[1].source == {"local": "file"}
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "saved"}])}).save_to_disk(str(tmp_path / "d"))
    saved = load_task_source(f"mine={tmp_path / 'd'}:train")[1].source
    assert saved == {"local": "directory", "split": "train", "column": "text"}
    assert [source_label(s) for s in (saved, {"local": "file"})] == ["a local dataset", "a local file"]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    assert load_multiple_choice_source(f"q={tmp_path / 'q.jsonl'}").data_source == {"local": "file"}
    # a profile records each of your tasks' source (texts, questions); data given as plain lists has none
    pruner = DietPruner(tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer)), tiny_tokenizer)
    pruner.profile(tasks={"mine": texts, "q": asked, "plain": ["a text of unknown source"]}, disable_progress=True)
    assert pruner.scores.provenance["sources"] == {"mine": read, "q": asked.data_source}


@pytest.mark.parametrize("task", ["hellaswag", "winogrande", "boolq"])
def test_calibration_texts_end_in_a_choice_drawn_per_example(task, data_dir):
    """`answer="any"` (the default) ends each text in one of its example's choices, drawn from the task's name and
    the example's id: the same examples (and exclusions) as `"gold"`, the same text for an example whatever else is
    drawn, and distractors as well as gold answers."""
    spec = get_task(task)
    gold = load_calibration(task, num_samples=40, seed=0, data_dir=data_dir, answer="gold")
    drawn = load_calibration(task, num_samples=40, seed=0, data_dir=data_dir)
    assert (drawn.example_ids, drawn.excluded_eval_ids) == (gold.example_ids, gold.excluded_eval_ids)
    docs = {str(d["id"]): d for d in load_examples(spec, spec.eval_split, data_dir=data_dir)}
    if drawn.excluded_eval_ids != drawn.example_ids:  # a train split to draw from (HellaSwag's is not in the files)
        docs.update({str(d["id"]): d for d in load_examples(spec, spec.train_split, data_dir=data_dir)})
    ended_in_gold = 0
    for example_id, text in zip(drawn.example_ids, drawn.texts):
        request = spec.build(docs[example_id])
        endings = [c + request.delimiter + e for c, e in zip(request.contexts, request.continuations)]
        assert text in endings  # a prompt and one of its choices, as the evaluator scores it
        ended_in_gold += text == endings[request.label]
    assert 0 < ended_in_gold < len(drawn.texts)  # gold answers and distractors
    # an example's text depends on nothing else: made alone, in another order, it is the same
    alone = [spec.calibration_text(docs[i], "any") for i in reversed(drawn.example_ids)]
    assert alone[::-1] == drawn.texts
    assert load_calibration(task, num_samples=40, seed=0, data_dir=data_dir).texts == drawn.texts
    with pytest.raises(ValueError, match=r"`calibration_answer` must be one of \('any', 'gold'\), got 'best'"):
        load_calibration(task, num_samples=3, data_dir=data_dir, answer="best")


def test_your_own_questions_calibrate_on_context_and_an_answer(tmp_path, data_dir):
    from diet_hf.tasks import evaluation_examples, load_task_source, multiple_choice_task

    docs = evaluation_examples("piqa", limit=5, data_dir=data_dir)
    spec = get_task("piqa")
    questions = []
    for doc in docs:
        request = spec.build(doc)
        questions.append(
            {"id": doc["id"], "context": request.contexts[0], "choices": request.continuations, "label": request.label}
        )
    expected = [spec.calibration_text(doc) for doc in docs]
    # in Python: the task as calibration data
    calibration = custom_calibration("mine", multiple_choice_task("mine", questions), answer="gold")
    assert calibration.texts == expected and calibration.example_ids == [d["id"] for d in docs]
    # from the command line: the same rows in a file, beside plain texts
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [*questions, {"text": "a plain text"}]))
    assert load_task_source(f"mine={path}", answer="gold") == ("mine", [*expected, "a plain text"])
    # the default, `answer="any"`: a choice drawn from the task's name and the question's id, the same in Python and
    # from a file (with and without ids: the file's rows count as `multiple_choice_task` counts them)
    drawn = custom_calibration("mine", multiple_choice_task("mine", questions)).texts
    assert load_task_source(f"mine={path}") == ("mine", [*drawn, "a plain text"])
    assert all(text.startswith(q["context"] + " ") for text, q in zip(drawn, questions))
    anonymous = [{k: v for k, v in q.items() if k != "id"} for q in questions]
    path.write_text("".join(json.dumps(row) + "\n" for row in [{"text": "first"}, {"text": " \n "}, *anonymous]))
    by_position = custom_calibration("mine", multiple_choice_task("mine", anonymous)).texts
    assert load_task_source(f"mine={path}") == ("mine", ["first", *by_position])  # a blank text left out
    path.write_text(json.dumps({"context": "Q", "choices": ["a", "b"], "label": 5}) + "\n")
    with pytest.raises(ValueError, match=r"`--tasks` mine: .* line 1: `label` must be"):
        load_task_source(f"mine={path}")
    # a dataset of such questions (no text column) likewise; a column named reads that column
    import datasets

    saved = tmp_path / "questions"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(questions)}).save_to_disk(str(saved))
    assert load_task_source(f"mine={saved}", answer="gold") == ("mine", expected)
    assert load_task_source(f"mine={saved}") == ("mine", drawn)
    assert load_task_source(f"mine={saved}:train:context") == ("mine", [q["context"] for q in questions])


def test_your_own_data_errors_name_the_flag_and_what_was_wrong(tmp_path):
    """Every way a `NAME=SOURCE` word of your own data can be wrong is refused with the flag, the name and the fix."""
    import datasets

    from diet_hf.tasks import load_multiple_choice_source, load_task_source, multiple_choice_task

    question = {"context": "Q", "choices": ["a", "b"], "label": 1}
    files = {
        "texts.txt": "a text\n",
        "blank.txt": "\n  \n",
        "notext.jsonl": json.dumps({"title": "no text"}) + "\n",
        "texts.csv": "text\na\n",
        "questions.jsonl": json.dumps(question) + "\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    rows = [{**question, "id": i} for i in range(2)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "split"))
    datasets.Dataset.from_list([{"text": "a", "n": 1}]).save_to_disk(str(tmp_path / "single"))
    d = tmp_path
    calibration = [
        ("=x", r"`--tasks`: expected NAME=SOURCE, got '=x'"),
        (f"mine={d / 'texts.txt'}:train", r"`--tasks` mine: a file takes no config, split or column, got '.*:train'"),
        (f"mine={d / 'blank.txt'}", r"`--tasks` mine: .*blank.txt holds no non-empty texts"),
        (f"mine={d / 'notext.jsonl'}", r"`--tasks` mine: .*notext.jsonl line 1 has no string `text` field"),
        (
            f"mine={d / 'texts.csv'}",
            r"`--tasks` mine: .*texts.csv must be .jsonl, .json \(one object per line\) or .txt",
        ),
        (f"mine={d / 'split'}:train:nope", r"`--tasks` mine: no column 'nope'; columns: \["),
        (f"mine={d / 'split'}:train:label", r"`--tasks` mine: column 'label' does not hold strings"),
        (f"mine={d / 'split'}:valid", r"`--tasks` mine: .*split has no split 'valid'; splits: \['train'\]"),
        (f"mine={d / 'single'}:train", r"`--tasks` mine: .*single is a single dataset; it has no split 'train'"),
    ]
    with pytest.raises(FileNotFoundError, match=r"`--texts` mine: no file or directory at \./missing"):
        load_task_source("mine=./missing", flag="--texts")
    # a path is whole where it exists (a colon in a file name) and keeps its Windows drive where it does not
    (d / "notes:v2.txt").write_text("first\nsecond\n")
    assert load_task_source(f"mine={d / 'notes:v2.txt'}") == ("mine", ["first", "second"])
    with pytest.raises(FileNotFoundError, match=r"`--tasks` mine: no file or directory at C:/data/texts\.$"):
        load_task_source("mine=C:/data/texts:train")
    questions = [
        ("=x", r"`--tasks`: expected NAME=SOURCE, got '=x'"),
        (f"q={d / 'questions.jsonl'}:test", r"`--tasks` q: a file takes no config or split, got '.*jsonl:test"),
        (f"q={d / 'texts.txt'}", r"`--tasks` q: .*texts.txt must be .jsonl or .json \(one question object per line\)"),
        (f"q={d / 'single'}", r"`--tasks` q: no 'context', 'choices', 'label' column \(a question needs"),
        (f"q={d / 'split'}:train:context", r"`--tasks` q: questions are read from whole rows; give no column"),
    ]
    cases = [(load_task_source, *c) for c in calibration] + [(load_multiple_choice_source, *c) for c in questions]
    for load, word, message in cases:
        with pytest.raises(ValueError, match=message):
            load(word)
    assert load_multiple_choice_source(f"q={d / 'split'}:train").name == "q"
    with pytest.raises(ValueError, match=r"`name` must be a non-empty string, got ''"):
        multiple_choice_task("", [question])
    with pytest.raises(ValueError, match=r"row 0: `id` must be a string or an integer, got 1.5"):
        multiple_choice_task("q", [{**question, "id": 1.5}])
    rows = __import__("datasets").Dataset.from_list([question])
    assert multiple_choice_task("q", rows).examples[0]["choices"] == question["choices"]
    with pytest.raises(ValueError, match=r"`rows` of task 'q' is a `DatasetDict` of the splits \['test'\]"):
        multiple_choice_task("q", __import__("datasets").DatasetDict({"test": rows}))


# One row of each task's Hub dataset in that dataset's own schema, and the request lm-eval 0.4.13's template makes
# of it (contexts, continuations, gold); HellaSwag's query is lm-eval's: `ctx_b` capitalized, `[...]` markers cut.
_HUB_ROWS = {
    "boolq": (
        {"question": "is the sky blue", "passage": "Sky -- The sky is blue.", "idx": 7, "label": 1},
        ["Sky -- The sky is blue.\nQuestion: is the sky blue?\nAnswer:"] * 2,
        ["no", "yes"],
        1,
    ),
    "rte": (
        {"sentence1": "A dog runs.", "sentence2": "An animal moves.", "label": 0, "idx": 3},
        ["A dog runs.\nQuestion: An animal moves. True or False?\nAnswer:"] * 2,
        ["True", "False"],
        0,
    ),
    "hellaswag": (
        {
            "ind": 24,
            "activity_label": "Home and Garden",
            "ctx_a": "[header] How to clean a pan [title] Fill it.",
            "ctx_b": "then",
            "ctx": "",
            "endings": ["rinse [step] it.", "b", "c", "d"],
            "source_id": "x",
            "split": "val",
            "split_type": "indomain",
            "label": "3",
        },
        ["Home and Garden: How to clean a pan. Fill it. Then"] * 4,
        ["rinse it.", "b", "c", "d"],
        3,
    ),
    "winogrande": (
        {"sentence": "Sarah beat Maria so _ won.", "option1": "Sarah", "option2": "Maria", "answer": "2"},
        ["Sarah beat Maria so Sarah", "Sarah beat Maria so Maria"],
        ["won.", "won."],
        1,
    ),
    "arc_easy": (
        {
            "id": "Mercury_1",
            "question": "Q?",
            "choices": {"text": list("abcd"), "label": list("1234")},
            "answerKey": "4",
        },
        ["Question: Q?\nAnswer:"] * 4,
        list("abcd"),
        3,
    ),
    "arc_challenge": (
        {
            "id": "Mercury_2",
            "question": "Q?",
            "choices": {"text": list("abcd"), "label": list("ABCD")},
            "answerKey": "C",
        },
        ["Question: Q?\nAnswer:"] * 4,
        list("abcd"),
        2,
    ),
    "openbookqa": (
        {
            "id": "8-343",
            "question_stem": "To save",
            "choices": {"text": list("abcd"), "label": list("ABCD")},
            "answerKey": "B",
        },
        ["To save"] * 4,
        list("abcd"),
        1,
    ),
    "piqa": (
        {"goal": "How do I X?", "sol1": "a", "sol2": "b", "label": 1},
        ["Question: How do I X?\nAnswer:"] * 2,
        ["a", "b"],
        1,
    ),
}

# The Hub datasets lm-eval-harness 0.4.13 reads (its task configs; `test_hub_sources_are_lm_evals` checks them there)
# and the split it scores: the test split where a task has one, else validation.
_LM_EVAL_SOURCES = {
    "boolq": ("aps/super_glue", "boolq", "validation"),
    "rte": ("nyu-mll/glue", "rte", "validation"),
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "openbookqa": ("allenai/openbookqa", "main", "test"),
    "piqa": ("baber/piqa", None, "validation"),
}


def test_examples_from_the_hub_make_lm_evals_requests(hub_dataset, monkeypatch):
    """Without a data directory every registered task reads lm-eval's Hub dataset, and a row in that dataset's own
    schema becomes the request lm-eval makes of it, read by `datasets.load_dataset` from repositories on the local Hub
    that hold each task's row in its configuration and evaluation split (ARC's two configurations in one
    repository, as on the Hub; a task without a configuration reads the repository's default one)."""
    from diet_hf.tasks import evaluation_examples

    repositories = {}
    for task, (path, name, split) in _LM_EVAL_SOURCES.items():
        repositories.setdefault(path, {})[name or "default"] = {split: [_HUB_ROWS[task][0]]}
    for path, configs in repositories.items():
        hub_dataset(path, configs)
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)
    assert set(_HUB_ROWS) == set(TASKS) == set(_LM_EVAL_SOURCES)
    for name, (_, contexts, continuations, label) in _HUB_ROWS.items():
        (doc,) = load_examples(name, get_task(name).eval_split)
        request = get_task(name).build(doc)
        assert (request.contexts, request.continuations, request.label) == (contexts, continuations, label), name
        halves = [evaluation_examples(name, half=half) for half in ("dev", "test")]
        assert sorted(len(h) for h in halves) == [0, 1]  # the Hub row's id falls in one half


@pytest.mark.slow
def test_hub_sources_are_lm_evals():
    """The Hub datasets, configurations and evaluation splits of the registered tasks are the ones lm-eval-harness
    itself reads (its task configs), so a machine with Hub access scores what lm-eval scores."""
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip('needs `pip install "diet-hf[lm-eval]"` (scripts/test.sh -m slow installs it)')
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader `TaskManager` reads task configs with (0.4.13)

    index = TaskManager().task_index
    for name, task in TASKS.items():
        config = load_yaml(index[name].yaml_path, resolve_func=False, recursive=True)
        theirs = (
            config["dataset_path"],
            config.get("dataset_name"),
            config.get("test_split") or config["validation_split"],
        )
        assert (task.hub_path, task.hub_name, task.eval_split) == theirs == _LM_EVAL_SOURCES[name], name
        assert task.train_split == config["training_split"], name


CONVERSATION = [{"role": "user", "content": "Is it late?"}, {"role": "assistant", "content": "Yes"}]


@pytest.mark.parametrize("adds_bos", [True, False])
def test_a_conversation_renders_with_the_chat_template_and_one_bos(adds_bos, tiny_tokenizer):
    """`chat_text` renders a conversation with the tokenizer's chat template, without the BOS the template writes:
    a conversation is then a text like any other, and where the tokenizer adds BOS (Gemma's does, and its template
    writes one too) the text tokenizes to exactly the template's tokens, with one BOS; healing's packing, which adds
    BOS per document itself, gets the same tokens."""
    from conftest import chat_tokenizer

    from diet_hf.healing.data import pack_texts
    from diet_hf.tasks import chat_text

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=adds_bos)
    text = chat_text(tokenizer, CONVERSATION)
    assert text == "<start_of_turn>user\nIs it late?<end_of_turn>\n<start_of_turn>model\nYes<end_of_turn>\n"
    template = tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)
    ids = tokenizer(text)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == (1 if adds_bos else 0)
    if adds_bos:
        assert ids == template["input_ids"]
    packed = pack_texts([text], tokenizer, seq_len=len(template["input_ids"]))
    assert packed[0].tolist() == template["input_ids"]  # BOS + the conversation, the remainder (EOS) cut


def test_conversations_are_refused_with_what_was_wrong(tiny_tokenizer):
    from conftest import chat_tokenizer

    from diet_hf.tasks import chat_text

    with pytest.raises(ValueError, match="has no chat template, so conversations cannot be rendered"):
        chat_text(tiny_tokenizer, CONVERSATION)
    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    for messages, message in [
        ([], "`messages` must be a non-empty list of messages"),
        ("hello", "`messages` must be a non-empty list of messages"),
        ([{"role": "user", "content": "a"}, {"content": "b"}], "message 1 must be an object with a string `role`"),
        ([{"role": "user", "content": 3}], "message 0 must be an object with a string `role` and a `content`"),
    ]:
        with pytest.raises(ValueError, match=message):
            chat_text(tokenizer, messages)


def test_your_own_data_may_hold_conversations(tmp_path, tiny_tokenizer):
    """A `.jsonl` row with `messages` (and no `text`), or a dataset's `messages` column (or a named column of
    conversations), is one text rendered by `render_chat`; without one, the error says how to give it."""
    import datasets
    from conftest import chat_tokenizer

    from diet_hf.tasks import chat_text, load_task_source

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    rendered = chat_text(tokenizer, CONVERSATION)
    rows = [{"messages": CONVERSATION}, {"text": "a plain text"}, {"messages": CONVERSATION[:1]}]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"messages": CONVERSATION, "id": 0}, {"messages": CONVERSATION, "id": 1}]
            )
        }
    ).save_to_disk(str(tmp_path / "chats"))
    datasets.Dataset.from_list([{"turns": CONVERSATION, "text": "not read"}]).save_to_disk(str(tmp_path / "named"))

    def render(messages):
        return chat_text(tokenizer, messages)

    assert load_task_source(f"mine={tmp_path / 'chats.jsonl'}", render_chat=render) == (
        "mine",
        [rendered, "a plain text", chat_text(tokenizer, CONVERSATION[:1])],
    )
    assert load_task_source(f"mine={tmp_path / 'chats'}", render_chat=render) == ("mine", [rendered, rendered])
    assert load_task_source(f"mine={tmp_path / 'named'}::turns", render_chat=render) == ("mine", [rendered])
    with pytest.raises(ValueError, match=r"`--data` mine: .*chats.jsonl line 1 is a conversation \(`messages`\)"):
        load_task_source(f"mine={tmp_path / 'chats.jsonl'}", flag="--data", registered=False)
    with pytest.raises(ValueError, match=r"`--tasks` mine: row 0 is a conversation"):
        load_task_source(f"mine={tmp_path / 'chats'}")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl line 1: message 0 must be an object with a string `role`"):
        load_task_source(f"mine={tmp_path / 'bad.jsonl'}", render_chat=render)
