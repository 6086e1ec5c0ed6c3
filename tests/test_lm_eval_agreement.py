"""Slow: our evaluator chooses the same answers as lm-eval-harness 0.4.13 itself on the real Gemma 3 270M."""

import importlib.util
import json
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_every_choice_agrees_with_lm_eval(tmp_path, data_dir):
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip('needs `pip install "diet-hf[lm-eval]"` (scripts/test.sh -m slow installs it)')
    spec = importlib.util.spec_from_file_location("agreement", REPO_ROOT / "benchmarks" / "lm_eval_agreement.py")
    agreement = importlib.util.module_from_spec(spec)
    sys.modules["agreement"] = agreement
    spec.loader.exec_module(agreement)
    code = agreement.main(["--data-dir", str(data_dir), "--limit", "20", "--output", str(tmp_path / "agree")])
    report = json.loads((tmp_path / "agree.json").read_text())
    assert code == 0 and report["all_choices_agree"], report["tasks"]
