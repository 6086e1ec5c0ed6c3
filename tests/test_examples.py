"""The offline example runs as the README says."""

import importlib.util

import torch
from conftest import REPO_ROOT
from transformers import AutoModelForCausalLM


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
