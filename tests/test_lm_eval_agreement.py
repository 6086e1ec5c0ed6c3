"""Slow: our evaluator chooses the same answers as lm-eval-harness 0.4.13 itself on the real Gemma 3 270M."""

import importlib.util
import json
import sys

import pytest
from conftest import REPO_ROOT


def _agreement_module():
    """benchmarks/lm_eval_agreement.py as a module; the test is skipped where lm-eval is not installed."""
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip('needs `pip install "diet-hf[lm-eval]"` (scripts/test.sh -m slow installs it)')
    spec = importlib.util.spec_from_file_location("agreement", REPO_ROOT / "benchmarks" / "lm_eval_agreement.py")
    agreement = importlib.util.module_from_spec(spec)
    sys.modules["agreement"] = agreement
    spec.loader.exec_module(agreement)
    return agreement


@pytest.mark.slow
def test_every_choice_agrees_with_lm_eval(tmp_path, data_dir):
    agreement = _agreement_module()
    code = agreement.main(["--data-dir", str(data_dir), "--limit", "20", "--output", str(tmp_path / "agree")])
    report = json.loads((tmp_path / "agree.json").read_text())
    assert code == 0 and report["all_choices_agree"], report["tasks"]


@pytest.mark.slow
def test_scoring_in_the_chat_template_agrees_with_lm_evals_apply_chat_template(tmp_path, data_dir):
    """An instruction-tuned model's scoring: the real 270M, its tokenizer given a chat template of Gemma's form (the
    converted base model has none), scored by lm-eval with `apply_chat_template=True` and by `evaluate` with it; every
    chosen answer agrees."""
    from conftest import GEMMA_STYLE_CHAT_TEMPLATE
    from transformers import AutoTokenizer

    from diet_hf.real_model import load_gemma3_270m

    agreement = _agreement_module()
    source, chat = load_gemma3_270m()[2], tmp_path / "chat-model"
    chat.mkdir()
    for name in ("config.json", "generation_config.json"):
        (chat / name).write_bytes((source / name).read_bytes())
    (chat / "model.safetensors").symlink_to(source / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = GEMMA_STYLE_CHAT_TEMPLATE
    tokenizer.save_pretrained(chat)
    code = agreement.main(
        ["--data-dir", str(data_dir), "--model-dir", str(chat), "--limit", "10", "--apply-chat-template"]
        + ["--output", str(tmp_path / "agree")]
    )
    report = json.loads((tmp_path / "agree.json").read_text())
    assert code == 0 and report["all_choices_agree"] and report["apply_chat_template"], report["tasks"]


@pytest.mark.slow
def test_lm_eval_scores_a_pruned_checkpoint_without_diet_hf_as_our_evaluator_does(
    tmp_path, data_dir, real_pruned_dir, monkeypatch
):
    """How anyone scores a published model on tasks we do not have: lm-eval's `hf` model with `trust_remote_code=True`,
    in a process where diet-hf cannot be imported. On the real 270M pruned at 20% it loads and chooses what our
    evaluator chooses."""
    agreement = _agreement_module()
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    code = agreement.main(
        ["--data-dir", str(data_dir), "--model-dir", str(real_pruned_dir), "--limit", "10"]
        + ["--output", str(tmp_path / "agree")]
    )
    report = json.loads((tmp_path / "agree.json").read_text())
    assert code == 0 and report["all_choices_agree"], report["tasks"]


@pytest.mark.slow
def test_last_word_accuracy_agrees_with_lm_evals_lambada_scoring(data_dir, real_pruned_dir):
    """`last_word_accuracy` against lm-eval's own `HFLM.loglikelihood` on lambada_openai's requests (context = all but
    the last space-separated word, continuation = " " + that word): the same greedy verdict and log-likelihood per
    text, on the real 270M dense and pruned (remote code)."""
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip('needs `pip install "diet-hf[lm-eval]"` (scripts/test.sh -m slow installs it)')
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diet_hf.evaluation import last_word_accuracy
    from diet_hf.real_model import load_gemma3_270m
    from diet_hf.tasks import wikitext2_last_word_texts

    texts = wikitext2_last_word_texts(limit=24, data_dir=data_dir)
    requests = [
        Instance(
            request_type="loglikelihood", doc={}, arguments=(t.rpartition(" ")[0], " " + t.rpartition(" ")[2]), idx=0
        )
        for t in texts
    ]
    for path in (load_gemma3_270m()[2], real_pruned_dir):
        lm = HFLM(pretrained=str(path), dtype="float32", device="cpu", batch_size=8, trust_remote_code=True)
        theirs = lm.loglikelihood(requests, disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=True).eval()
        ours = last_word_accuracy(model, AutoTokenizer.from_pretrained(path), texts, disable_progress=True)
        assert ours["correct"] == [int(greedy) for _, greedy in theirs], path
        assert ours["loglikelihood"] == pytest.approx([ll for ll, _ in theirs], abs=2e-3), path
        assert 0 < sum(ours["correct"]) < len(texts)  # both verdicts occur
