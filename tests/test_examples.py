"""The offline example runs as the README says."""

import importlib.util
import json

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


@pytest.mark.parametrize("head", ["causal", "classification"])
def test_finetune_pruned_example_offline(tmp_path, data_dir, tiny_tokenizer, head, capsys):
    pytest.importorskip("peft")
    from conftest import tiny_dense_model

    from diet_hf import build_pruned_model
    from diet_hf.plan import PruningPlan

    dense = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(0, 64, 2)), list(range(40))]
    plan.__post_init__()
    build_pruned_model(dense, plan).save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    spec = importlib.util.spec_from_file_location("finetune_pruned", REPO_ROOT / "examples" / "finetune_pruned.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = [str(tmp_path / "pruned"), "--task", "rte", "--head", head, "--data-dir", str(data_dir)]
    argv += ["--max-steps", "3", "--train-examples", "12", "--eval-limit", "6", "--batch-size", "4", "--lora-r", "2"]
    argv += ["--max-length", "64", "--output", str(tmp_path / "tuned")]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    assert "rte (" + head + ") before fine-tuning:" in out and "after fine-tuning:" in out
    result = json.loads((tmp_path / "tuned" / "finetune_result.json").read_text())
    assert 0 <= result["before"] <= 1 and 0 <= result["after"] <= 1
    auto = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
    reloaded = auto.from_pretrained(tmp_path / "tuned", trust_remote_code=True)
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
