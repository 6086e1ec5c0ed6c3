"""`diet-hf` subcommands through `main(argv)`: success, usage errors (exit 2) and failures (exit 1)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_tables_well_formed,
    random_batch,
    save_dense_checkpoint,
    save_lora_adapter,
    tiny_dense_model,
)
from transformers import AutoModelForCausalLM, LlamaConfig

from diet_hf import build_pruned_model
from diet_hf.cli import main
from diet_hf.info import count_parameters
from diet_hf.plan import PruningPlan


@pytest.fixture
def dense_dir(tmp_path, tiny_tokenizer):
    return save_dense_checkpoint(tmp_path / "dense", "gemma2", tiny_tokenizer)


def test_prune_several_sparsities_from_one_profile(
    dense_dir, tmp_path, data_dir, capsys, pruned_models_alive_at_surgery
):
    out = tmp_path / "pruned"
    code = main(
        [
            "--quiet",
            "prune",
            str(dense_dir),
            "--sparsity",
            "0.2",
            "0.4",
            "--tasks",
            "rte",
            "boolq",
            "--num-samples",
            "4",
            "--data-dir",
            str(data_dir),
            "--output",
            str(out),
            "--save-scores",
            str(tmp_path / "scores"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert pruned_models_alive_at_surgery == [0, 0]  # each saved model freed before the next one's surgery
    printed = capsys.readouterr().out
    for percent in (20, 40):
        model = AutoModelForCausalLM.from_pretrained(f"{out}-{percent}")
        assert abs(model.config.pruning["achieved_block_sparsity"] - percent / 100) < 0.02
        assert f"{out}-{percent}" in printed
    # reusing the saved profile gives the same plan without profiling again
    code = main(
        [
            "prune",
            str(dense_dir),
            "--sparsity",
            "0.2",
            "--scores",
            str(tmp_path / "scores"),
            "--data-dir",  # the default reconstructs: loaded scores draw their calibration examples again
            str(data_dir),
            "--output",
            str(tmp_path / "again"),
            "--quiet",  # global flags after the subcommand too
        ]
    )
    assert code == 0
    first = json.loads((tmp_path / "pruned-20" / "diet_pruning.json").read_text())
    again = json.loads((tmp_path / "again" / "diet_pruning.json").read_text())
    assert first["mlp_kept_indices"] == again["mlp_kept_indices"]
    # every recipe option from the command line reaches the plan and the model's provenance
    argv = ["prune", str(dense_dir), "--sparsity", "0.3", "--scores", str(tmp_path / "scores"), "--quiet"]
    argv += ["--data-dir", str(data_dir)]
    options = ["--recipe", "paper", "--score", "contribution", "--layer-sparsity-cap", "1.5", "--bias-compensation"]
    assert main([*argv, *options, "--output", str(tmp_path / "options")]) == 0
    record = AutoModelForCausalLM.from_pretrained(tmp_path / "options").config.pruning["options"]
    assert record["recipe"] == "paper" and record["score"] == "contribution"
    assert record["layer_sparsity_cap"] == 1.5 and record["bias_compensation"] is True
    # a baseline through the same pipeline: a loadable model whose card names the method
    assert main([*argv, "--method", "flap", "--bias-compensation", "--output", str(tmp_path / "flap")]) == 0
    flap = AutoModelForCausalLM.from_pretrained(tmp_path / "flap")
    assert flap.config.pruning["method"] == "FLAP" and flap.config.down_proj_bias
    assert (tmp_path / "flap" / "README.md").read_text().count("pruned with FLAP") == 1
    assert main([*argv, "--no-bias-compensation", "--output", str(tmp_path / "no-bias")]) == 0
    assert (
        AutoModelForCausalLM.from_pretrained(tmp_path / "no-bias").config.pruning["options"]["bias_compensation"]
        is False
    )
    # --max-shard-size: the same model in several weight files
    assert (
        main([*argv, "--no-bias-compensation", "--max-shard-size", "40KB", "--output", str(tmp_path / "shards")]) == 0
    )
    assert len(list((tmp_path / "shards").glob("model-*.safetensors"))) >= 2
    one, shards = (
        AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict() for name in ("no-bias", "shards")
    )
    assert one.keys() == shards.keys() and all(torch.equal(one[k], shards[k]) for k in one)


def test_eval_writes_json(dense_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "results.json"
    code = main(
        [
            "--quiet",
            "eval",
            str(dense_dir),
            "--tasks",
            "rte",
            "piqa",
            "--limit",
            "3",
            "--data-dir",
            str(data_dir),
            "--output",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["results"]["rte"]["num_scored"] == 3
    assert "average" in capsys.readouterr().out


def test_prune_and_eval_read_a_lora_adapter_as_its_merged_model(tmp_path, data_dir, tiny_tokenizer, capsys):
    """`diet-hf prune ADAPTER` and `diet-hf eval ADAPTER` (a LoRA fine-tune saved as an adapter alone) read the base
    model the adapter names with the adapter merged, as transformers' `from_pretrained` reads it: the same pruned
    weights and scores as from the merged model saved whole. `diet-hf info ADAPTER` says what it is."""
    adapter, merged = save_lora_adapter(tmp_path, tiny_tokenizer)
    merged.save_pretrained(tmp_path / "merged")
    tiny_tokenizer.save_pretrained(tmp_path / "merged")
    common = ["--quiet", "--data-dir", str(data_dir)]
    for source in (adapter, tmp_path / "merged"):
        argv = ["prune", str(source), "--tasks", "rte", "--num-samples", "3", "--sparsity", "0.25"]
        assert main([*common[:1], *argv, *common[1:], "--output", str(tmp_path / f"{source.name}-pruned")]) == 0
        argv = ["eval", str(source), "--reference", str(tmp_path / "dense"), "--tasks", "rte", "--limit", "4"]
        assert main([*common[:1], *argv, *common[1:], "--output", str(tmp_path / f"{source.name}.json")]) == 0
    pruned = [AutoModelForCausalLM.from_pretrained(tmp_path / f"{name}-pruned") for name in ("gemma2-lora", "merged")]
    torch.testing.assert_close(pruned[0].state_dict(), pruned[1].state_dict(), rtol=0, atol=0)
    assert json.loads((tmp_path / "gemma2-lora-pruned" / "config.json").read_text())["pruning"]["base_model"] == str(
        adapter
    )
    results = [json.loads((tmp_path / f"{name}.json").read_text())["results"] for name in ("gemma2-lora", "merged")]
    assert results[0] == results[1]
    assert main(["info", str(adapter)]) == 1  # no model of its own to describe: the message names the base's command
    assert (
        f"adapter of {tmp_path / 'dense'}, not a model of its own: describe the model it adapts with `diet-hf info"
        in (capsys.readouterr().err)
    )


@pytest.mark.parametrize(
    ("command", "value", "cuda_devices", "message"),
    [
        ("prune", "cuda", 0, "argument --device-map: this machine has no cuda device"),
        ("heal", "cuda:0", 0, "argument --device-map: this machine has no cuda device"),
        ("eval", "cuda", 0, "argument --device-map: this machine has no cuda device"),
        ("eval", "cuda:1", 1, "argument --device-map: this machine has 1 cuda device(s), got 'cuda:1'"),
        (
            "prune",
            "banana",
            0,
            "argument --device-map: expected auto, balanced, balanced_low_0, sequential or a device",
        ),
    ],
)
def test_a_device_map_the_machine_cannot_serve_is_a_usage_error(
    command, value, cuda_devices, message, capsys, monkeypatch
):
    """Before any model loads, not torch's "Torch not compiled with CUDA enabled" assertion from inside
    `from_pretrained`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_devices)
    argv = {
        "prune": ["prune", "m", "--output", "o", "--sparsity", "0.2"],
        "heal": ["heal", "m", "--teacher", "t", "--output", "o"],
        "eval": ["eval", "m"],
    }[command]
    assert main([*argv, "--device-map", value]) == 2
    assert message in capsys.readouterr().err


def test_eval_loads_both_models_where_device_map_says(dense_dir, tmp_path, data_dir, tiny_tokenizer, monkeypatch):
    import diet_hf.loading

    placed = []
    load = diet_hf.loading.load_causal_lm

    def recording(name, config=None, **kwargs):
        model = load(name, config, **kwargs)
        placed.append((kwargs.get("device_map"), next(model.parameters()).device.type))
        return model

    monkeypatch.setattr(diet_hf.loading, "load_causal_lm", recording)
    other = save_dense_checkpoint(tmp_path / "other", "gemma2", tiny_tokenizer, seed=1)
    argv = ["--quiet", "eval", str(other), "--reference", str(dense_dir), "--tasks", "rte", "--limit", "2"]
    assert main([*argv, "--data-dir", str(data_dir), "--device-map", "cpu"]) == 0
    assert main([*argv, "--data-dir", str(data_dir)]) == 0
    assert placed == [("cpu", "cpu")] * 2 + [(None, "cpu")] * 2


def test_eval_wikitext2_perplexity_against_a_reference(dense_dir, tmp_path, data_dir, tiny_tokenizer, capsys):
    """The measure the benchmarks report (`perplexity`: windows of the joined test split), from the command line,
    with the ratio's paired interval over windows; no tasks unless asked for."""
    from diet_hf.evaluation import paired_bootstrap_perplexity, perplexity

    other = save_dense_checkpoint(tmp_path / "other", "gemma2", tiny_tokenizer, seed=1)
    out = tmp_path / "ppl.json"
    argv = ["--quiet", "eval", str(other), "--reference", str(dense_dir), "--wikitext2", "--limit", "3"]
    assert main([*argv, "--data-dir", str(data_dir), "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert "results" not in record and "average" not in record
    direct = [
        perplexity(AutoModelForCausalLM.from_pretrained(path), tiny_tokenizer, data_dir=data_dir, max_windows=3)
        for path in (other, dense_dir)
    ]
    for key, result in (("wikitext2", direct[0]), ("reference_wikitext2", direct[1])):
        assert set(record[key]) == {"perplexity", "tokens", "windows", "max_length"}  # not the per-window values
        assert record[key]["windows"] == 3 and record[key]["tokens"] == result["tokens"]
        assert record[key]["perplexity"] == pytest.approx(result["perplexity"], rel=1e-6)
    expected = paired_bootstrap_perplexity(*direct)
    assert record["wikitext2_ratio"]["ratio"] == pytest.approx(expected["ratio"], rel=1e-6)
    assert record["wikitext2_ratio"]["ci95"] == pytest.approx(expected["ci95"], rel=1e-6)
    printed = capsys.readouterr().out
    assert "paired bootstrap over windows" in printed and f"{expected['ratio']:.3f}" in printed
    # the data is read before any model loads: a directory without it is a usage error
    capsys.readouterr()
    assert main(["--quiet", "eval", "m", "--wikitext2", "--data-dir", str(tmp_path)]) == 2
    assert f"WikiText-2 test split not found at {tmp_path / 'wikitext2' / 'test.jsonl'}" in capsys.readouterr().err


def test_eval_against_a_reference(dense_dir, tmp_path, data_dir, tiny_tokenizer, capsys):
    other = save_dense_checkpoint(tmp_path / "other", "gemma2", tiny_tokenizer, seed=1)
    out = tmp_path / "compared.json"
    argv = ["--quiet", "eval", str(other), "--tasks", "rte", "piqa", "--limit", "6", "--data-dir", str(data_dir)]
    assert main([*argv, "--reference", str(dense_dir), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{other} minus {dense_dir}" in printed and "95% interval" in printed
    result = json.loads(out.read_text())
    assert result["reference"]["model"] == str(dense_dir) and "predictions" not in result
    difference = result["difference"]
    assert set(difference) == {"rte", "piqa", "average"}
    assert difference["average"]["difference"] == pytest.approx(result["average"] - result["reference"]["average"])
    for task in ("rte", "piqa"):
        model_score = result["results"][task][result["results"][task]["headline_metric"]]
        reference_score = result["reference"]["results"][task][result["results"][task]["headline_metric"]]
        assert difference[task]["difference"] == pytest.approx(model_score - reference_score)
    # a model against itself: no difference, no spread
    assert (
        main(
            [
                "--quiet",
                "eval",
                str(dense_dir),
                "--tasks",
                "rte",
                "--limit",
                "4",
                "--data-dir",
                str(data_dir),
                "--reference",
                str(dense_dir),
            ]
        )
        == 0
    )
    assert "+0.0000  [+0.0000, +0.0000]" in capsys.readouterr().out
    # a missing reference is named before anything is scored
    missing = str(tmp_path / "nowhere")
    assert (
        main(
            ["--quiet", "eval", str(dense_dir), "--tasks", "rte", "--data-dir", str(data_dir), "--reference", missing]
        )
        == 1
    )
    error = capsys.readouterr().err
    assert "--reference" in error and "nowhere" in error


def test_eval_of_a_quantized_model_against_its_float_reference(dense_dir, tmp_path, data_dir, capsys, monkeypatch):
    """`--quantization` loads MODEL, not --reference, through transformers' quantizer, so that what is deployed is
    what is scored; the package it needs is checked before any model loads."""
    pytest.importorskip("optimum.quanto", reason="the test extra installs optimum-quanto")
    import diet_hf.loading
    import diet_hf.quantization

    loaded, load = [], diet_hf.loading.load_causal_lm

    def recording(name, *args, **kwargs):
        model = load(name, *args, **kwargs)
        loaded.append(type(model.model.layers[0].mlp.down_proj).__name__)
        return model

    monkeypatch.setattr(diet_hf.loading, "load_causal_lm", recording)
    out = tmp_path / "quantized.json"
    argv = ["--quiet", "eval", str(dense_dir), "--tasks", "rte", "--limit", "4", "--data-dir", str(data_dir)]
    assert main([*argv, "--reference", str(dense_dir), "--quantization", "quanto-int8", "--output", str(out)]) == 0
    assert loaded == ["QLinear", "Linear"]  # MODEL quantized, the reference as saved
    assert f"{dense_dir} (quanto-int8) minus {dense_dir}" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["quantization"] == "quanto-int8" and set(result["difference"]) == {"rte", "average"}

    loaded.clear()
    real_find_spec = diet_hf.quantization.importlib.util.find_spec
    monkeypatch.setattr(
        diet_hf.quantization.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "torchao" else real_find_spec(name, *args),
    )
    assert main([*argv, "--quantization", "torchao-int8"]) == 2
    assert "`--quantization` 'torchao-int8' needs torchao: `pip install torchao`." in capsys.readouterr().err
    assert loaded == []  # refused before any model loads
    assert main([*argv, "--quantization", "int4"]) == 2
    assert "argument --quantization: invalid choice: 'int4'" in capsys.readouterr().err


def test_quantization_configs_by_name():
    from diet_hf.quantization import QUANTIZATIONS, quantization_config

    pytest.importorskip("optimum.quanto", reason="the test extra installs optimum-quanto")
    assert type(quantization_config("quanto-int8")).__name__ == "QuantoConfig"
    assert set(QUANTIZATIONS) == {"quanto-int8", "torchao-int8", "torchao-int8-dynamic"}
    with pytest.raises(ValueError, match="`quantization` must be one of quanto-int8, torchao-int8, torchao-int8-dyn"):
        quantization_config("int4")
    if importlib.util.find_spec("torchao"):  # the torchao extra (scripts/test.sh: the 4.57 environment)
        dynamic = quantization_config("torchao-int8-dynamic").quant_type
        assert type(dynamic).__name__ == "Int8DynamicActivationInt8WeightConfig"
        assert type(quantization_config("torchao-int8").quant_type).__name__ == "Int8WeightOnlyConfig"


def test_eval_of_your_own_texts(dense_dir, tmp_path, data_dir, tiny_tokenizer, capsys, monkeypatch):
    from diet_hf.evaluation import paired_bootstrap_perplexity, texts_perplexity

    other = save_dense_checkpoint(tmp_path / "other", "gemma2", tiny_tokenizer, seed=1)
    texts = ["Question: what is the answer? Answer: yes", "the answer is no", "what is it", "True False"] * 3
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "short.txt").write_text("\n".join(texts[:2]) + "\n")
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)  # no task is scored, so no benchmark data is needed
    out = tmp_path / "texts.json"
    argv = [
        "--quiet",
        "eval",
        str(other),
        "--texts",
        f"mine={tmp_path / 'mine.jsonl'}",
        f"short={tmp_path / 'short.txt'}",
    ]
    assert main([*argv, "--reference", str(dense_dir), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and f"{other} over {dense_dir}" in printed and "acc_norm" not in printed
    result = json.loads(out.read_text())
    assert "results" not in result and set(result["texts"]) == {"mine", "short"}
    model = AutoModelForCausalLM.from_pretrained(other)
    reference = AutoModelForCausalLM.from_pretrained(dense_dir)
    mine = texts_perplexity(model, tiny_tokenizer, texts, disable_progress=True)
    theirs = texts_perplexity(reference, tiny_tokenizer, texts, disable_progress=True)
    assert result["texts"]["mine"]["perplexity"] == pytest.approx(mine["perplexity"], rel=1e-6)
    assert result["texts"]["mine"]["texts"] == 12 and result["texts"]["short"]["texts"] == 2
    assert result["reference_texts"]["mine"]["perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-6)
    expected = paired_bootstrap_perplexity(mine, theirs)
    assert result["texts_ratio"]["mine"]["ratio"] == pytest.approx(expected["ratio"], rel=1e-6)
    assert result["texts_ratio"]["mine"]["ci95"] == pytest.approx(expected["ci95"], rel=1e-6)
    # --limit takes the first texts of each source; tasks and texts together
    assert main([*argv[:5], "--limit", "3", "--tasks", "rte", "--data-dir", str(data_dir), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["texts"]["mine"]["texts"] == 3 and set(result["results"]) == {"rte"}
    capsys.readouterr()
    for bad, message in (
        (
            ["--texts", "mine"],
            "`--texts`: expected NAME=FILE or NAME=DATASET[@REVISION][,CONFIG][:SPLIT[:COLUMN]], got",
        ),
        (["--texts", f"a={tmp_path / 'nope.jsonl'}"], "`--texts` a: no file or directory at"),
        (["--texts", f"a={tmp_path / 'short.txt'}", f"a={tmp_path / 'mine.jsonl'}"], "each NAME once; repeated: a"),
    ):
        assert main(["--quiet", "eval", str(other), *bad]) == 2
        assert message in capsys.readouterr().err


def test_eval_last_word_accuracy_of_your_texts(dense_dir, tmp_path, tiny_tokenizer, capsys, monkeypatch):
    from diet_hf.evaluation import last_word_accuracy, paired_bootstrap

    other = save_dense_checkpoint(tmp_path / "other", "gemma2", tiny_tokenizer, seed=1)
    texts = ["Question: what is the answer? Answer: yes", "the answer is no", "what is it", "True or False"] * 3
    (tmp_path / "words.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)  # no task is scored, so no benchmark data is needed
    out = tmp_path / "words.json"
    argv = ["--quiet", "eval", str(other), "--last-word", f"words={tmp_path / 'words.jsonl'}"]
    assert main([*argv, "--reference", str(dense_dir), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LAMBADA's measure" in printed and f"{other} minus {dense_dir}" in printed and "acc_norm" not in printed
    result = json.loads(out.read_text())
    mine = last_word_accuracy(
        AutoModelForCausalLM.from_pretrained(other), tiny_tokenizer, texts, disable_progress=True
    )
    theirs = last_word_accuracy(
        AutoModelForCausalLM.from_pretrained(dense_dir), tiny_tokenizer, texts, disable_progress=True
    )
    assert "results" not in result and "correct" not in result["last_word"]["words"]
    assert result["last_word"]["words"]["accuracy"] == pytest.approx(mine["accuracy"])
    assert result["last_word"]["words"]["perplexity"] == pytest.approx(mine["perplexity"], rel=1e-6)
    assert result["reference_last_word"]["words"]["accuracy"] == pytest.approx(theirs["accuracy"])
    expected = paired_bootstrap(mine["correct"], theirs["correct"])
    assert result["last_word_difference"]["words"]["difference"] == pytest.approx(expected["difference"])
    assert result["last_word_difference"]["words"]["ci95"] == pytest.approx(expected["ci95"])
    assert main([*argv, "--limit", "2", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["last_word"]["words"]["texts"] == 2
    capsys.readouterr()
    (tmp_path / "oneword.txt").write_text("fine\nyes\n")
    for bad, message in (
        (["--last-word", "words"], "`--last-word`: expected NAME=FILE or NAME=DATASET[@REVISION][,CONFIG]"),
        (["--last-word", f"w={tmp_path / 'oneword.txt'}"], "`--last-word` w: text 0 ('fine') has no context"),
    ):
        assert main(["--quiet", "eval", str(other), *bad]) == 2  # a usage error, before any model loads
        assert message in capsys.readouterr().err


def test_eval_leaves_out_the_examples_the_pruning_profiled(dense_dir, tmp_path, data_dir, capsys):
    # HellaSwag has no train split: its calibration examples are carved from the evaluation split, recorded in the
    # pruned model's provenance, and scored by `diet-hf eval` for neither the model nor its reference
    argv = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.2", "--tasks", "hellaswag", "rte"]
    assert main([*argv, "--num-samples", "3", "--data-dir", str(data_dir), "--output", str(tmp_path / "p")]) == 0
    recorded = AutoModelForCausalLM.from_pretrained(tmp_path / "p").config.pruning["calibration_eval_ids"]
    assert list(recorded) == ["hellaswag"] and len(recorded["hellaswag"]) == 3  # RTE drew from its train split
    out = tmp_path / "eval.json"
    argv = ["eval", str(tmp_path / "p"), "--tasks", "hellaswag", "rte", "--limit", "2", "--data-dir", str(data_dir)]
    assert main([*argv, "--reference", str(dense_dir), "--output", str(out)]) == 0
    assert "left out the evaluation examples the pruning profiled (3 of hellaswag" in capsys.readouterr().out
    result = json.loads(out.read_text())
    for scored in (result, result["reference"]):
        assert sorted(scored["results"]["hellaswag"]["excluded_ids"]) == sorted(recorded["hellaswag"])
        assert scored["results"]["rte"]["excluded_ids"] == []
    # a pruned reference drawn with another seed: the examples either profile read are scored for neither
    argv = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.2", "--tasks", "hellaswag", "--seed", "1"]
    assert main([*argv, "--num-samples", "3", "--data-dir", str(data_dir), "--output", str(tmp_path / "q")]) == 0
    other = AutoModelForCausalLM.from_pretrained(tmp_path / "q").config.pruning["calibration_eval_ids"]["hellaswag"]
    assert set(other) != set(recorded["hellaswag"])
    argv = ["eval", str(tmp_path / "p"), "--tasks", "hellaswag", "--limit", "2", "--data-dir", str(data_dir)]
    assert main([*argv, "--reference", str(tmp_path / "q"), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    for scored in (result, result["reference"]):
        assert set(scored["results"]["hellaswag"]["excluded_ids"]) == {*recorded["hellaswag"], *other}
    # tasks the profile read nothing of: nothing said, nothing left out
    capsys.readouterr()
    argv = ["eval", str(tmp_path / "p"), "--tasks", "rte", "--limit", "2", "--data-dir", str(data_dir)]
    assert main([*argv, "--output", str(out)]) == 0
    assert "left out" not in capsys.readouterr().out
    assert json.loads(out.read_text())["results"]["rte"]["excluded_ids"] == []


def test_eval_of_a_model_without_tokenizer_files(tmp_path, data_dir, capsys):
    tiny_dense_model("gemma2").save_pretrained(tmp_path / "no-tokenizer")
    argv = ["--quiet", "eval", str(tmp_path / "no-tokenizer"), "--tasks", "piqa", "--data-dir", str(data_dir)]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "diet-hf eval: error:" in error and "tokenizer" in error


def test_info_on_pruned_checkpoint(tmp_path, capsys):
    dense = tiny_dense_model("gemma3_text")
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(10)), []]
    plan.head_kept_indices, plan.kv_head_kept_indices = [[0, 1], [0, 1, 2, 3]], [[0], [0, 1]]
    pruned = build_pruned_model(dense, plan)
    pruned.save_pretrained(tmp_path / "m")
    assert main(["info", str(tmp_path / "m"), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [row["intermediate_size"] for row in described["layers"]] == [10, 0]
    assert described["parameters"]["total"] == sum(p.numel() for p in pruned.parameters())
    assert described["parameters"]["base_total"] == sum(p.numel() for p in dense.parameters())
    assert described["format"] == "v2"
    assert main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "mlp width" in out and "format v2" in out
    # provenance for reading: a key per line, long lists shown by their length, nested records indented
    pruned.config.pruning = {
        "method": "DIET",
        "calibration_eval_ids": {"hellaswag": [f"hellaswag-validation-{i}" for i in range(100)]},
        "healing": {"steps": 8, "loss_curve": [[step, 0.5] for step in range(60)], "options": {"lora_r": 16}},
    }
    pruned.save_pretrained(tmp_path / "m2")
    assert main(["info", str(tmp_path / "m2")]) == 0
    lines = capsys.readouterr().out.split("provenance (`--json` prints all of it):\n")[1].splitlines()
    assert lines == [
        "  calibration_eval_ids:",
        '    hellaswag: [100 items: "hellaswag-validation-0", "hellaswag-validation-1", '
        '"hellaswag-validation-2", ...]',
        "  healing:",
        "    loss_curve: [60 items: [0, 0.5], [1, 0.5], [2, 0.5], ...]",
        '    options: {"lora_r": 16}',
        "    steps: 8",
        '  method: "DIET"',
    ]


def test_info_on_a_saved_profile(tmp_path, data_dir, tiny_tokenizer, capsys):
    """`diet-hf info DIR` on what `--save-scores` wrote: the model it was made on, each task's calibration examples
    (your own texts marked), the shapes, how questions were written, and the command that prunes from it."""
    import diet_hf
    from diet_hf import DietPruner
    from diet_hf.tasks import SourceTexts

    pruner = DietPruner(
        tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer)), tiny_tokenizer, model_id="o/m"
    )
    # your texts, with where you read them stated (`load_task_source` states it for what it reads)
    texts = SourceTexts([f"My own text {i}." for i in range(3)], {"dataset": "org/texts", "split": "train"})
    pruner.profile(tasks={"rte": None, "mine": texts}, num_samples=3, data_dir=data_dir, disable_progress=True)
    pruner.save_scores(tmp_path / "scores")
    assert main(["info", str(tmp_path / "scores"), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["profile_of"] == "o/m" and described["tasks"] == {"rte": 3, "mine": 3}
    assert described["own_tasks"] == ["mine"]
    assert (described["num_hidden_layers"], described["intermediate_size"]) == (2, 64)
    assert described["calibration_answer"] == "any" and described["calibration_chat_template"] is False
    assert "sample_ids" not in described["provenance"] and described["provenance"]["seed"] == 0
    assert described["provenance"]["diet_hf_version"] == diet_hf.__version__  # the release that made it (CHANGELOG.md)
    assert main(["info", str(tmp_path / "scores")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'scores'}: a DIET profile of o/m, model_type gemma3_text, 2 layers x 64")
    assert "\nrte                                         3\n" in out
    assert "\nmine (your data)                            3\nmine was read from org/texts:train\n" in out
    assert "questions' calibration texts end in a choice drawn per example" in out
    assert f"prune from it: diet-hf prune o/m --scores {tmp_path / 'scores'} --sparsity S --output DIR" in out


def test_info_reads_a_v1_checkpoint_and_says_so(capsys):
    fixture = Path(__file__).resolve().parent / "fixtures" / "v1-pruned-gemma3"
    assert main(["info", str(fixture), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["format"] == "v1"
    assert [row["intermediate_size"] for row in described["layers"]] == [22, 0, 64]
    assert [row["num_attention_heads"] for row in described["layers"]] == [2, 4, 0]


def test_version_names_the_libraries_it_runs_on(capsys):
    import transformers

    import diet_hf

    assert main(["--version"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"diet-hf {diet_hf.__version__} (transformers {transformers.__version__}, torch ")


def test_count_parameters_matches_models():
    dense = tiny_dense_model("gemma2")
    assert count_parameters(dense.config)["total"] == sum(p.numel() for p in dense.parameters())
    pruned = build_pruned_model(dense, PruningPlan.keep_all(dense.config))
    assert count_parameters(pruned) == count_parameters(pruned.config)  # a model: its config
    with pytest.raises(TypeError, match="`config` must be a model config or a model, got dict"):
        count_parameters({"hidden_size": 8})
    with pytest.raises(ValueError, match="llama"):
        count_parameters(LlamaConfig())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "m", "--output", "o", "--sparsity", "1.5"], "argument --sparsity: expected a number in (0, 1)"),
        (["prune", "m", "--output", "o", "--tasks", "squad"], "`--tasks`: 'squad' is not a registered task"),
        (["prune", "m"], "the following arguments are required: --output"),
        (["eval", "m", "--limit", "0"], "argument --limit: expected a positive integer"),
        (
            ["prune", "m", "--output", "o", "--sparsity", "0.2", "--push-to-hub", "not a repo!"],
            "argument --push-to-hub: expected a Hub repository id like you/model-name, got 'not a repo!'",
        ),
        (
            ["prune", "m", "--output", "o", "--max-shard-size", "2XB"],
            "argument --max-shard-size: expected a number of bytes or a size such as 2GB, got '2XB'",
        ),
        (["heal", "m", "--teacher", "t", "--output", "o", "--max-shard-size", "0"], "argument --max-shard-size"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        # an option's own check names the flag typed, not the field behind it (prune's: below)
        (
            ["heal", "m", "--teacher", "t", "--output", "o", "--data", "rte", "--kd-weight", "3"],
            "`--kd-weight` must be",
        ),
        ([], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["prune", "--help"]) == 0
    assert "--num-samples" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [[], ["prune"], ["heal"], ["eval"], ["info"], ["export"], ["export", "onnx"], ["export", "stock"]],
)
def test_every_subcommands_help_renders(command, capsys):
    # a "%" in a generated flag's help (HealingConfig's "62% of the weights") made `diet-hf heal --help` crash
    assert main([*command, "--help"]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: diet-hf") and "%%" not in help_text
    if command == ["heal"]:
        assert "62% of the weights" in help_text and "--no-bf16" in help_text


def test_every_flag_has_help():
    # `--mlp-sparsity` and `--attention-sparsity` were listed in `diet-hf prune --help` with no word on what they do
    import argparse

    from diet_hf.cli.parser import _build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    bare = [
        f"{parser.prog} {action.option_strings[0]}"
        for parser in parsers(_build_parser())
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert not bare


def test_quiet_silences_the_libraries_deprecation_notices():
    import warnings

    from diet_hf.cli.common import _quiet

    model = tiny_dense_model("gemma2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.is_gradient_checkpointing  # noqa: B018  (what PEFT reads; transformers 5 warns that it is deprecated)
        loud = len(caught)
        if not loud:
            pytest.skip("this transformers does not deprecate `is_gradient_checkpointing`")
        with _quiet():
            model.is_gradient_checkpointing  # noqa: B018
        model.is_gradient_checkpointing  # noqa: B018  (the notices are back once the command returns)
    assert len(caught) == 2 * loud


def _restore_switches(state) -> None:
    import datasets
    import huggingface_hub
    import transformers

    tf_level, tf_bars, hub_level, hub_off, ds_level, ds_bars, _ = state
    transformers.utils.logging.set_verbosity(tf_level)
    huggingface_hub.utils.logging.set_verbosity(hub_level)
    datasets.utils.logging.set_verbosity(ds_level)
    (transformers.utils.logging.enable_progress_bar if tf_bars else transformers.utils.logging.disable_progress_bar)()
    (huggingface_hub.utils.disable_progress_bars if hub_off else huggingface_hub.utils.enable_progress_bars)()
    (datasets.enable_progress_bars if ds_bars else datasets.disable_progress_bars)()


def test_quiet_silences_every_progress_bar_while_the_command_runs_and_restores_the_libraries(monkeypatch, request):
    """`--quiet`: a plain tqdm bar that a library draws without a `disable` argument is off while the command runs
    (tqdm reads `TQDM_DISABLE` only at import), as are the libraries' own bars and log messages; afterwards every
    switch is as it was (`main` runs in-process too)."""
    import datasets
    import huggingface_hub
    import transformers
    from tqdm.auto import tqdm

    from diet_hf import cli

    def switches():
        return (
            transformers.utils.logging.get_verbosity(),
            transformers.utils.logging.is_progress_bar_enabled(),
            huggingface_hub.utils.logging.get_verbosity(),
            huggingface_hub.utils.are_progress_bars_disabled(),
            datasets.utils.logging.get_verbosity(),
            datasets.is_progress_bar_enabled(),
            os.environ.get("TQDM_DISABLE"),
        )

    # every switch on, whatever an earlier test in this process left (restored afterwards)
    state = switches()
    for library in (transformers.utils.logging, huggingface_hub.utils.logging, datasets.utils.logging):
        library.set_verbosity_warning()
    transformers.utils.logging.enable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()
    datasets.enable_progress_bars()
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    request.addfinalizer(lambda: _restore_switches(state))
    seen = {}

    def run(args):
        with tqdm(range(2)) as bar, tqdm(range(2), disable=False) as asked_for:
            seen.update(bar=bar.disable, asked_for=asked_for.disable, switches=switches())
        return 0

    before = switches()
    monkeypatch.setitem(cli.COMMANDS, "info", (None, run))
    assert main(["--quiet", "info", "x"]) == 0
    assert seen["bar"] and not seen["asked_for"]  # diet-hf's own bars pass `disable=args.quiet`
    error = transformers.utils.logging.ERROR
    assert seen["switches"] == (error, False, error, True, error, False, "1")
    assert switches() == before
    with tqdm(range(2)) as bar:
        assert not bar.disable
    assert main(["info", "x"]) == 0
    assert not seen["bar"] and seen["switches"] == before


def test_failures_exit_1(tmp_path, capsys):
    assert main(["--quiet", "info", str(tmp_path / "missing")]) == 1
    assert "diet-hf info: error:" in capsys.readouterr().err
    assert main(["--quiet", "prune", str(tmp_path), "--output", str(tmp_path / "o"), "--sparsity", "0.2"]) == 1
    assert "diet-hf prune: error:" in capsys.readouterr().err  # not a model directory
    assert not (tmp_path / "o").exists()


def test_interrupted_save_leaves_no_loadable_directory(tmp_path, monkeypatch):
    from diet_hf.hub import save_pruned_model

    model = build_pruned_model(tiny_dense_model("gemma2"))
    ids = random_batch()

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save_pretrained", broken)
    with pytest.raises(KeyboardInterrupt):
        save_pruned_model(model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    save_pruned_model(model, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "m")(ids).logits, model(ids).logits)
    # with no `plan=`, the plan surgery attached to the model is saved beside it
    assert PruningPlan.from_pretrained(tmp_path / "m").to_dict() == model.diet_plan.to_dict()


def test_an_interrupted_save_over_an_earlier_one_leaves_the_earlier_one(tmp_path, monkeypatch):
    from diet_hf.hub import save_pruned_model

    model = build_pruned_model(tiny_dense_model("gemma2"))
    save_pruned_model(model, tmp_path / "m")
    before = {path.name: path.read_bytes() for path in (tmp_path / "m").iterdir()}

    def broken(self, directory, **kwargs):
        Path(directory, "config.json").write_text("{}")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save_pretrained", broken)
    with pytest.raises(KeyboardInterrupt):
        save_pruned_model(build_pruned_model(tiny_dense_model("gemma2", seed=1)), tmp_path / "m")
    assert {path.name: path.read_bytes() for path in (tmp_path / "m").iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["m"]  # no temporary directory left beside it


def test_prune_and_heal_refuse_to_write_over_their_input(dense_dir, tmp_path, capsys):
    before = {path.name: path.stat().st_mtime_ns for path in dense_dir.iterdir()}
    assert main(["--quiet", "prune", str(dense_dir), "--output", str(dense_dir), "--sparsity", "0.2"]) == 1
    assert f"`--output` {dense_dir} is the model being pruned" in capsys.readouterr().err
    pruned = tmp_path / "pruned"
    build_pruned_model(tiny_dense_model("gemma2")).save_pretrained(pruned)
    argv = ["--quiet", "heal", str(pruned), "--teacher", str(dense_dir), "--output"]
    assert main([*argv, str(dense_dir)]) == 1
    assert f"`--output` {dense_dir} is the teacher" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in dense_dir.iterdir()} == before


@pytest.mark.parametrize("command", ["eval", "info", "prune"])
def test_a_missing_local_directory_is_named_as_such(tmp_path, capsys, command):
    missing = str(tmp_path / "no-such-model")
    extra = {"eval": [], "info": [], "prune": ["--output", str(tmp_path / "o"), "--sparsity", "0.2"]}[command]
    assert main(["--quiet", command, missing, *extra]) == 1
    error = capsys.readouterr().err
    assert f"`model`: the local directory {missing} does not exist" in error  # the CLI's name for it
    assert "repo id" not in error.lower()
    empty = tmp_path / "not-a-model"
    (empty / "subdir").mkdir(parents=True)  # a directory without a saved model (transformers: "Unrecognized model")
    assert main(["--quiet", command, str(empty), *extra]) == 1
    assert f"`model`: the local directory {empty} has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_every_prune_option_is_a_flag_a_record_field_and_a_readme_row(capsys):
    from diet_hf.options import PruneOptions

    assert main(["prune", "--help"]) == 0
    help_text = capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in PruneOptions.names():
        assert "--" + name.replace("_", "-") in help_text, name
        assert f"| `{name}`" in readme or f"`{name}` †" in readme or f", `{name}`" in readme, name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "`--steps` must be a positive integer, got 0"),
        (["--layer-sparsity-cap", "0.5"], "`--layer-sparsity-cap` must be a number >= 1, got 0.5"),
        (["--task-weights", "boolq"], "argument --task-weights: expected NAME=NUMBER, got 'boolq'"),
        (["--merge", "max"], "argument --merge: invalid choice: 'max'"),
        (["--task-weights", "boolq=-1"], "`--task-weights` must give each task a finite weight >= 0, got boolq=-1.0"),
        (  # a misspelt task: refused before the model loads, not after profiling (it would weigh nothing)
            ["--tasks", "boolq", "rte", "--task-weights", "bolq=2", "rte=1"],
            "`--task-weights` names ['bolq'], not among the profile's tasks ['boolq', 'rte']",
        ),
    ],
)
def test_bad_prune_options_are_usage_errors(flags, message, capsys):
    assert main(["prune", "m", "--output", "o", "--sparsity", "0.2", *flags]) == 2
    assert message in capsys.readouterr().err


def test_prune_with_the_users_own_task_sources(tmp_path, data_dir, tiny_tokenizer, capsys):
    import datasets

    save_dense_checkpoint(tmp_path / "dense", "gemma3_text", tiny_tokenizer)
    (tmp_path / "mine.jsonl").write_text(
        "\n".join(json.dumps({"text": f"Question {i}? Answer: yes"}) for i in range(6))
    )
    (tmp_path / "lines.txt").write_text("one text\n\nanother text\na third\n")
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"body": [f"support ticket {i}" for i in range(5)]})}
    ).save_to_disk(str(tmp_path / "ds"))
    tasks = [
        "rte",
        f"mine={tmp_path / 'mine.jsonl'}",
        f"lines={tmp_path / 'lines.txt'}",
        f"tickets={tmp_path / 'ds'}:train:body",
    ]
    argv = ["--quiet", "prune", str(tmp_path / "dense"), "--output", str(tmp_path / "out"), "--sparsity", "0.2"]
    argv += ["--num-samples", "3", "--data-dir", str(data_dir), "--tasks", *tasks]
    assert main(argv) == 0
    record = json.loads((tmp_path / "out" / "config.json").read_text())["pruning"]
    assert record["tasks"] == ["rte", "mine", "lines", "tickets"]
    assert "mine" in (tmp_path / "out" / "README.md").read_text()
    capsys.readouterr()
    # bad sources fail before the model loads (the model path does not even exist), naming what was wrong
    bad = {
        f"x={tmp_path / 'nope.jsonl'}": "no file or directory at",
        f"x={tmp_path / 'ds'}:test": "has no split 'test'; splits: ['train']",
        f"x={tmp_path / 'ds'}:train:text": "no column 'text'; columns: ['body']",
        f"rte={tmp_path / 'lines.txt'}": "'rte' is a registered task",
    }
    for word, message in bad.items():
        assert (
            main(["prune", str(tmp_path / "missing-model"), "--output", "o", "--sparsity", "0.2", "--tasks", word])
            == 2
        )
        assert message in capsys.readouterr().err, word


@pytest.mark.parametrize("answer", ["any", "gold"])
def test_your_questions_calibrate_on_the_answers_of_calibration_answer(answer, tmp_path, data_dir, tiny_tokenizer):
    """`prune --tasks NAME=FILE` with questions ends each in the answer `--calibration-answer` names, as the
    registered tasks' texts end (the default: a choice drawn per question), and the profile records it."""
    from diet_hf.constants import SCORES_META_FILE, SCORES_TEXTS_FILE
    from diet_hf.tasks import custom_calibration, multiple_choice_task

    save_dense_checkpoint(tmp_path / "dense", "gemma3_text", tiny_tokenizer)
    choices = ["yes", "no", "maybe"]
    rows = [{"context": f"Question {i}?\nAnswer:", "choices": choices, "label": i % 3} for i in range(8)]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--quiet", "prune", str(tmp_path / "dense"), "--output", str(tmp_path / "out"), "--sparsity", "0.2"]
    argv += ["--num-samples", "3", "--data-dir", str(data_dir), "--tasks", "rte", f"mine={tmp_path / 'mine.jsonl'}"]
    argv += ["--save-scores", str(tmp_path / "scores")]
    argv += ["--calibration-answer", answer] if answer == "gold" else []  # "any": the default
    assert main(argv) == 0
    saved = json.loads((tmp_path / "scores" / SCORES_TEXTS_FILE).read_text())["tasks"]["mine"]
    assert saved == custom_calibration("mine", multiple_choice_task("mine", rows), answer=answer).texts
    provenance = json.loads((tmp_path / "scores" / SCORES_META_FILE).read_text())["provenance"]
    assert provenance["calibration_answer"] == answer
    record = json.loads((tmp_path / "out" / "config.json").read_text())["pruning"]
    assert record["calibration_answer"] == answer


def test_calibration_flags_come_from_profile_options(capsys):
    from dataclasses import fields

    from diet_hf.options import ProfileOptions

    assert main(["prune", "--help"]) == 0
    help_text = capsys.readouterr().out
    for spec in fields(ProfileOptions):
        assert "--" + spec.name.replace("_", "-") in help_text
    assert "--no-channel-stats" in help_text
    assert main(["prune", "m", "--output", "o", "--num-samples", "0"]) == 2
    assert "`--num-samples` must be a positive integer, got 0" in capsys.readouterr().err


def test_a_method_registered_after_import_is_a_choice_of_the_cli(capsys):
    from diet_hf.methods import METHODS, ScoringMethod, get_method, register_method

    register_method(ScoringMethod("mine", "Mine", get_method("magnitude").scores, plan_options={}))
    try:
        assert main(["prune", "--help"]) == 0
        assert "mine" in capsys.readouterr().out
    finally:
        METHODS.pop("mine")


def test_prune_refuses_a_sparsity_out_of_reach_before_profiling(dense_dir, tmp_path, data_dir, capsys, monkeypatch):
    from diet_hf import DietPruner

    def no_profile(*args, **kwargs):
        raise AssertionError("profiled before the targets were checked")

    monkeypatch.setattr(DietPruner, "profile", no_profile)
    argv = ["--quiet", "prune", str(dense_dir), "--tasks", "rte", "--data-dir", str(data_dir)]
    assert main([*argv, "--sparsity", "0.2", "0.97", "--output", str(tmp_path / "p")]) == 1
    error = capsys.readouterr().err
    assert "`sparsity`=0.97 is out of reach of these options" in error and "every head is kept" in error
    assert not any(tmp_path.glob("p*"))
    # the paper's recipe removes heads too, down to one per layer
    assert main([*argv, "--sparsity", "0.97", "--recipe", "paper", "--output", str(tmp_path / "p")]) == 1
    error = capsys.readouterr().err
    assert "the heads removed make 22.2% of the decoder-block parameters, so at most 0.847 can be removed" in error


def test_prune_inplace_takes_one_sparsity(dense_dir, tmp_path, data_dir, capsys):
    argv = ["--quiet", "prune", str(dense_dir), "--tasks", "rte", "--num-samples", "4", "--data-dir", str(data_dir)]
    assert main([*argv, "--sparsity", "0.2", "0.4", "--inplace", "--output", str(tmp_path / "two")]) == 2
    assert "`--inplace` consumes the dense model, so it takes one --sparsity; got 2" in capsys.readouterr().err
    assert not any(tmp_path.glob("two*"))  # refused before any work
    assert main([*argv, "--sparsity", "0.2", "--inplace", "--output", str(tmp_path / "one")]) == 0
    assert main([*argv, "--sparsity", "0.2", "--output", str(tmp_path / "copied")]) == 0
    ids = random_batch(2, 8, vocab_size=60)
    logits = [AutoModelForCausalLM.from_pretrained(tmp_path / name)(ids).logits for name in ("one", "copied")]
    torch.testing.assert_close(*logits, rtol=0, atol=0)


def test_prune_puts_the_perplexity_of_held_out_texts_in_the_card(
    dense_dir, tmp_path, data_dir, tiny_tokenizer, capsys
):
    from diet_hf.evaluation import paired_bootstrap_perplexity, texts_perplexity

    texts = ["Question: what is the answer? Answer: yes", "the answer is no", "what is it", "True False"] * 3
    (tmp_path / "held.txt").write_text("\n".join(texts) + "\n")
    argv = ["prune", str(dense_dir), "--tasks", "rte", "--num-samples", "4", "--data-dir", str(data_dir)]
    argv += ["--eval-texts", f"held={tmp_path / 'held.txt'}", "--sparsity", "0.2", "0.4", "--output"]
    assert main(["--quiet", *argv, str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    dense = texts_perplexity(AutoModelForCausalLM.from_pretrained(dense_dir), tiny_tokenizer, texts)
    for name in ("m-20", "m-40"):
        pruned = texts_perplexity(AutoModelForCausalLM.from_pretrained(tmp_path / name), tiny_tokenizer, texts)
        ratio = paired_bootstrap_perplexity(pruned, dense)
        low, high = ratio["ci95"]
        row = (
            f"| held (a local file) | 12 | {pruned['tokens']:,} | {dense['perplexity']:.3f} | "
            f"{pruned['perplexity']:.3f} | {ratio['ratio']:.3f} [{low:.3f}, {high:.3f}] |"
        )
        assert row in (tmp_path / name / "README.md").read_text()
        assert (
            f"held: perplexity {pruned['perplexity']:.3f} against the dense model's {dense['perplexity']:.3f}, ratio "
            f"{ratio['ratio']:.3f} [{low:.3f}, {high:.3f}] (12 held-out texts)"
        ) in printed
    assert main(["--quiet", *argv[:-4], "--eval-texts", "held", "--sparsity", "0.2", "--output", "x"]) == 2
    assert "`--eval-texts`: expected NAME=FILE" in capsys.readouterr().err


def test_eval_of_your_own_multiple_choice_questions(dense_dir, tmp_path, data_dir, tiny_tokenizer, capsys):
    import datasets

    from diet_hf.tasks import evaluation_examples, get_task

    spec = get_task("piqa")
    questions = []
    for doc in evaluation_examples("piqa", limit=6, data_dir=data_dir):
        request = spec.build(doc)
        questions.append(
            {"id": doc["id"], "context": request.contexts[0], "choices": request.continuations, "label": request.label}
        )
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    saved = tmp_path / "questions_dataset"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(questions)}).save_to_disk(str(saved))
    other = save_dense_checkpoint(tmp_path / "other", "gemma2", tiny_tokenizer, seed=1)
    out = tmp_path / "results.json"
    argv = ["--quiet", "eval", str(other), "--tasks", "piqa", f"mine={path}", f"saved={saved}", "--limit", "6"]
    assert main([*argv, "--data-dir", str(data_dir), "--reference", str(dense_dir), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mine" in printed and "saved" in printed
    result = json.loads(out.read_text())
    # the same prompts as the registered task: the same scores, for the model and its reference alike
    for entry in (result, result["reference"]):
        for name in ("mine", "saved"):
            assert entry["results"][name]["num_scored"] == 6
            for metric in ("acc", "acc_norm"):
                assert entry["results"][name][metric] == entry["results"]["piqa"][metric]
    assert set(result["difference"]) == {"piqa", "mine", "saved", "average"}
    # your task's headline is acc (piqa's is acc_norm)
    mine_difference = result["results"]["mine"]["acc"] - result["reference"]["results"]["mine"]["acc"]
    assert result["difference"]["mine"]["difference"] == pytest.approx(mine_difference)
    # --own-headline acc_norm: your task's headline as piqa's, so the same difference
    assert (
        main(
            [
                *argv,
                "--data-dir",
                str(data_dir),
                "--reference",
                str(dense_dir),
                "--own-headline",
                "acc_norm",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["results"]["mine"]["headline_metric"] == "acc_norm"
    assert result["difference"]["mine"] == result["difference"]["piqa"]
    # bad questions, names and sources are usage errors, named before any model loads
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(questions[0]) + "\n" + json.dumps({"context": "Q", "choices": ["a", "b"]}) + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(questions[0]) + "\n{context: Q}\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out_of_range = tmp_path / "out_of_range"
    datasets.Dataset.from_dict({"context": ["Q"], "choices": [["a", "b"]], "label": [5]}).save_to_disk(out_of_range)
    for tasks, message in (
        ([f"mine={bad}"], "line 2: no 'label' field"),
        ([f"mine={broken}"], "broken.jsonl line 2 is not JSON"),
        ([f"mine={empty}"], f"`--tasks` mine: {empty} holds no questions"),  # each error names the flag
        ([f"mine={out_of_range}"], f"`--tasks` mine: {out_of_range} row 0"),
        (["squad"], "'squad' is not a registered task"),
        ([f"piqa={path}"], "'piqa' is a registered task"),
        ([f"mine={path}", f"mine={saved}"], "a task is named twice"),
        ([f"mine={saved}:validation"], "has no split 'validation'"),
        ([f"mine={tmp_path / 'nowhere.jsonl'}"], "no file or directory"),
    ):
        assert main(["--quiet", "eval", str(dense_dir), "--tasks", *tasks]) == 2, tasks
        assert message in capsys.readouterr().err, tasks


def test_prune_scores_its_tasks_without_the_examples_it_calibrated_on(tmp_path, data_dir, dense_dir, capsys):
    """`prune --eval-tasks` leaves out the evaluation examples the profile drew for calibration (a task without a
    train split, HellaSwag here, calibrates on its evaluation split) and scores the half `--eval-half` names, as
    `diet-hf eval --half` of the saved model does."""
    from diet_hf.tasks import split_half

    rows = (data_dir / "hellaswag" / "validation.jsonl").read_text().splitlines()[:12]
    small = tmp_path / "data" / "hellaswag"
    small.mkdir(parents=True)
    (small / "validation.jsonl").write_text("\n".join(rows) + "\n")  # and no train split
    out = tmp_path / "pruned"
    argv = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.25", "--tasks", "hellaswag", "--num-samples", "4"]
    argv += ["--eval-tasks", "hellaswag", "--eval-half", "test", "--data-dir", str(tmp_path / "data")]
    assert main([*argv, "--output", str(out)]) == 0, capsys.readouterr().err
    drawn = json.loads((out / "config.json").read_text())["pruning"]["calibration_eval_ids"]["hellaswag"]
    left = [json.loads(row)["id"] for row in rows if json.loads(row)["id"] not in drawn]
    tested = sum(split_half("hellaswag", i) == "test" for i in left)
    assert len(drawn) == 4 and 0 < tested < 8  # both the exclusions and the half change what is scored
    report = tmp_path / "eval.json"
    argv = ["--quiet", "eval", str(out), "--tasks", "hellaswag", "--half", "test", "--data-dir", str(small.parent)]
    assert main([*argv, "--output", str(report)]) == 0
    scored = json.loads(report.read_text())["results"]["hellaswag"]
    assert (scored["num_scored"], scored["half"]) == (tested, "test")
    score = scored["acc_norm"]
    row = next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("| hellaswag |"))
    assert row.startswith(f"| hellaswag | {tested} | acc_norm | ") and f" | {score:.4f} |" in row


@pytest.mark.parametrize("inplace", [False, True])
def test_prune_scores_tasks_into_the_card(tmp_path, data_dir, tiny_tokenizer, capsys, inplace):
    """`prune --eval-tasks`: the dense model's scores (before any cut, so `--inplace` too) and each pruned model's,
    with the paired differences, printed and in the card; the same numbers `diet-hf eval` gives."""
    dense_dir = tmp_path / "dense"  # weights large enough that the cut changes answers
    tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer), initializer_range=0.5).save_pretrained(dense_dir)
    tiny_tokenizer.save_pretrained(dense_dir)
    questions = tmp_path / "questions.jsonl"
    rows = [
        {"context": "Question: is the cat on the mat?\nAnswer:", "choices": ["yes", "no"], "label": 0},
        {"context": "The dog", "choices": ["ran", "sat", "is"], "label": 1},
        {"context": "True or False?", "choices": ["True", "False"], "label": 1},
        {"context": "Question: what is it?\nAnswer:", "choices": ["a cat", "a dog"], "label": 0},
    ]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "pruned"
    argv = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.5", "--tasks", "rte", "--num-samples", "4"]
    argv += ["--eval-tasks", "piqa", f"mine={questions}", "--eval-limit", "20", "--data-dir", str(data_dir)]
    argv += ["--output", str(out)] + (["--inplace"] if inplace else [])
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"{out} minus the dense model" in printed and "95% interval" in printed
    scored = {}
    for model in (dense_dir, out):
        report = tmp_path / f"{model.name}.json"
        eval_argv = ["--quiet", "eval", str(model), "--tasks", "piqa", f"mine={questions}", "--limit", "20"]
        assert main([*eval_argv, "--data-dir", str(data_dir), "--output", str(report)]) == 0
        scored[model] = json.loads(report.read_text())["results"]
        scored[model]["average"] = json.loads(report.read_text())["average"]
    differences = printed.split(f"{out} minus the dense model")[1].splitlines()
    for task, metric in (("piqa", "acc_norm"), ("mine", "acc"), ("average", None)):
        dense_score, pruned_score = (scored[m][task] if task == "average" else scored[m][task][metric] for m in scored)
        row = next(line for line in differences if line.startswith(f"{task:16}"))
        assert row.startswith(f"{task:16}{dense_score:>10.4f}{pruned_score - dense_score:>+12.4f}  [")
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card
    for task, metric, n in (("piqa", "acc_norm", 20), ("mine", "acc", 4)):
        row = f"| {task} | {n} | {metric} | {scored[dense_dir][task][metric]:.4f} | {scored[out][task][metric]:.4f} |"
        assert row in card
    assert scored[dense_dir] != scored[out]
    assert "Difference of the headline average:" in card and "paired-bootstrap 95% interval" in card
    assert "mine: the publisher's own multiple-choice questions" in card and "piqa:" not in card
    assert_tables_well_formed(card)
    # a bad task is a usage error before any model loads
    assert (
        main(
            [
                "--quiet",
                "prune",
                str(dense_dir),
                "--sparsity",
                "0.3",
                "--output",
                str(tmp_path / "x"),
                "--eval-tasks",
                "squad",
            ]
        )
        == 2
    )
    assert "`--eval-tasks`: 'squad' is not a registered task" in capsys.readouterr().err
    # a registered task's missing data too, not after the profile
    nothing = tmp_path / "no_data"
    nothing.mkdir()
    bad = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.3", "--output", str(tmp_path / "y")]
    assert main([*bad, "--tasks", f"mine={questions}", "--eval-tasks", "rte", "--data-dir", str(nothing)]) == 2
    assert "No `validation` split for task 'rte'" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_prune_again_from_a_saved_profile_of_your_own_data(dense_dir, tmp_path, data_dir, capsys):
    """The default recipe reconstructs from the calibration data: a profile of your own texts, saved with
    `--save-scores`, prunes again with `--scores` to the same model (the texts are saved beside the scores)."""
    texts = tmp_path / "mine.txt"
    texts.write_text("Question: what is it? Answer: yes\nthe answer is no\nTrue or False? True\nwhat is the answer\n")
    common = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.3", "--data-dir", str(data_dir)]
    profiled = [*common, "--tasks", "rte", f"mine={texts}", "--num-samples", "3"]
    assert main([*profiled, "--save-scores", str(tmp_path / "scores"), "--output", str(tmp_path / "a")]) == 0
    texts.unlink()  # the saved profile does not read your file again
    assert main([*common, "--scores", str(tmp_path / "scores"), "--output", str(tmp_path / "b")]) == 0, (
        capsys.readouterr().err
    )
    models = [AutoModelForCausalLM.from_pretrained(tmp_path / name) for name in ("a", "b")]
    ids = random_batch(vocab_size=models[0].config.vocab_size)
    with torch.no_grad():
        logits = [model(ids).logits for model in models]
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-5)
    # the moments' options reach a prune from saved scores: its passes over the data and their products' precision
    for dtype in ("float32", "bfloat16"):
        again = [*common[1:], "--scores", str(tmp_path / "scores"), "--output", str(tmp_path / dtype)]
        assert main([*again, "--moments-dtype", dtype, "--moments-memory-gib", "0.00001"]) == 0
        assert AutoModelForCausalLM.from_pretrained(tmp_path / dtype).config.pruning["moments_dtype"] == dtype
        assert "reconstruction (1/2)" in capsys.readouterr().err  # 10 KiB at a time: a pass per layer


def test_heal_keeps_the_profile_the_model_was_pruned_from(dense_dir, tmp_path, data_dir, capsys):
    """A model pruned with `--include-profile` and healed keeps the profile in the healed model's `diet_profile/`,
    byte for byte (healing does not change the dense parent's scores), so `--scores HEALED` prunes the base model
    again; a model saved without one heals without one. `heal(profile=)` without `output_dir` is refused."""
    from diet_hf import DietPruner
    from diet_hf.healing import heal

    common = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.3", "--data-dir", str(data_dir)]
    profiled = [*common, "--tasks", "rte", "--num-samples", "3"]
    assert main([*profiled, "--include-profile", "--output", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert main([*profiled, "--output", str(tmp_path / "plain")]) == 0
    flags = ["--data", "rte", "--data-dir", str(data_dir), "--seq-len", "16", "--batch-size", "2", "--max-tokens"]
    flags += ["32", "--validation-sequences", "2", "--eval-steps", "1", "--top-k", "4", "--lora-r", "2", "--quiet"]
    for name in ("a", "plain"):
        argv = ["heal", str(tmp_path / name), "--teacher", str(dense_dir), "--output", str(tmp_path / f"{name}-h")]
        assert main([*argv, *flags]) == 0, capsys.readouterr().err
    saved = {path.name: path.read_bytes() for path in (tmp_path / "a" / "diet_profile").iterdir()}
    assert {path.name: path.read_bytes() for path in (tmp_path / "a-h" / "diet_profile").iterdir()} == saved
    assert "`diet_profile/` holds the DIET profile" in (tmp_path / "a-h" / "README.md").read_text()
    assert not (tmp_path / "plain-h" / "diet_profile").exists()
    assert main([*common, "--scores", str(tmp_path / "a-h"), "--output", str(tmp_path / "b")]) == 0
    with pytest.raises(ValueError, match="`profile` is saved beside the healed model: pass `output_dir` too"):
        heal(AutoModelForCausalLM.from_pretrained(tmp_path / "a"), dense_dir, None, ["x"], profile=tmp_path / "a")
    other = DietPruner(tiny_dense_model("gemma3_text"))  # a profile of another model
    batches = [{"input_ids": random_batch(2, 8), "attention_mask": torch.ones(2, 8, dtype=torch.long)}]
    other.profile({"mine": batches}, disable_progress=True).save_scores(tmp_path / "o")
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match="These scores were made for"):
        heal(student, dense_dir, None, ["x"], output_dir=tmp_path / "x", profile=tmp_path / "o")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "targets, expected",
    [
        (["--sparsity", "0.2", "--mlp-sparsity", "0.2"], "Pass either `--sparsity` or `--mlp-sparsity` / `--atten"),
        ([], "Nothing to prune: pass `--sparsity` in (0, 1), or `--mlp-sparsity` / `--attention-sparsity` > 0."),
        (["--attention-sparsity", "1.0"], "`--attention-sparsity` must be in [0, 1), got 1.0."),
    ],
)
def test_prune_target_errors_name_the_flags_before_any_model_loads(targets, expected, tmp_path, capsys, monkeypatch):
    from diet_hf import DietPruner

    monkeypatch.setattr(DietPruner, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["--quiet", "prune", str(tmp_path / "none"), "--output", str(tmp_path / "out"), *targets]) == 2
    assert expected in capsys.readouterr().err


def test_heal_never_runs_code_shipped_with_the_pruned_checkpoints_tokenizer(
    dense_dir, tmp_path, tiny_tokenizer, data_dir
):
    """A checkpoint given to `diet-hf heal` is data: a tokenizer class shipped as code beside it (an `auto_map` in its
    tokenizer_config.json) is not imported without the user's consent (transformers asks for `trust_remote_code`).
    Checkpoints diet-hf saves have stock tokenizers and need none."""
    pruned = tmp_path / "pruned"
    build_pruned_model(tiny_dense_model("gemma2")).save_pretrained(pruned)
    tiny_tokenizer.save_pretrained(pruned)
    marker = tmp_path / "shipped-code-ran"
    (pruned / "shipped_tokenizer.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class ShippedTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((pruned / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "ShippedTokenizer"
    config["auto_map"] = {"AutoTokenizer": [None, "shipped_tokenizer.ShippedTokenizer"]}
    (pruned / "tokenizer_config.json").write_text(json.dumps(config))
    argv = ["--quiet", "heal", str(pruned), "--teacher", str(dense_dir), "--output", str(tmp_path / "healed")]
    assert main([*argv, "--data", "rte", "--data-dir", str(data_dir)]) != 0
    assert not marker.exists() and not (tmp_path / "healed").exists()


def test_conversations_of_your_own_render_with_the_models_chat_template(tmp_path, data_dir, tiny_tokenizer, capsys):
    """`prune --tasks NAME=FILE` and `eval --texts NAME=FILE` with conversations (`messages` rows): each is rendered by
    the chat template of MODEL's tokenizer, with one BOS, and calibrated on or scored as that text; a MODEL whose
    tokenizer has no chat template is a usage error before any model loads."""
    from conftest import chat_tokenizer

    from diet_hf.constants import SCORES_TEXTS_FILE
    from diet_hf.tasks import chat_text

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    save_dense_checkpoint(tmp_path / "dense", "gemma3_text", tokenizer)
    conversations = [
        [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Answer: yes"}]
        for i in range(4)
    ]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    argv = ["--quiet", "prune", str(tmp_path / "dense"), "--output", str(tmp_path / "out"), "--sparsity", "0.2"]
    argv += ["--tasks", f"chats={tmp_path / 'chats.jsonl'}", "--save-scores", str(tmp_path / "scores")]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "scores" / SCORES_TEXTS_FILE).read_text())["tasks"]["chats"]
    assert saved == [chat_text(tokenizer, m) for m in conversations]
    assert all(text.startswith("<start_of_turn>user\n") for text in saved)
    # the pruned checkpoint keeps the chat template, so it chats as the dense model did
    from conftest import GEMMA_STYLE_CHAT_TEMPLATE
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == GEMMA_STYLE_CHAT_TEMPLATE
    report = tmp_path / "eval.json"
    eval_argv = ["--quiet", "eval", str(tmp_path / "out"), "--texts", f"chats={tmp_path / 'chats.jsonl'}"]
    assert main([*eval_argv, "--output", str(report)]) == 0
    from diet_hf.evaluation import texts_perplexity

    scored = json.loads(report.read_text())["texts"]["chats"]
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True)
    expected = texts_perplexity(pruned, tokenizer, saved, disable_progress=True)
    assert scored["texts"] == len(conversations)
    assert scored["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-6)
    # your questions scored in the chat template, as lm-eval's --apply_chat_template
    questions = [{"context": f"Question {i}?", "choices": ["yes", "no"], "label": i % 2} for i in range(4)]
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    chat_argv = ["--quiet", "eval", str(tmp_path / "out"), "--tasks", f"q={tmp_path / 'questions.jsonl'}"]
    assert main([*chat_argv, "--apply-chat-template", "--output", str(report)]) == 0
    assert json.loads(report.read_text())["apply_chat_template"] is True
    capsys.readouterr()
    save_dense_checkpoint(tmp_path / "plain", "gemma3_text", tiny_tokenizer)  # no chat template
    plain_argv = ["--quiet", "eval", str(tmp_path / "plain"), "--tasks", f"q={tmp_path / 'questions.jsonl'}"]
    # every model to be scored has a template, checked before any model loads; only --tasks are read in it
    for bad, message in (
        (plain_argv, "`--apply-chat-template`: the tokenizer of"),
        ([*chat_argv, "--reference", str(tmp_path / "plain")], "`--apply-chat-template`: the tokenizer of"),
        ([*chat_argv[:3], "--texts", f"chats={tmp_path / 'chats.jsonl'}"], "`--apply-chat-template` scores --tasks"),
    ):
        assert main([*bad, "--apply-chat-template"]) == 2
        err = capsys.readouterr().err
        assert message in err and ("plain" in err) == (message.endswith("tokenizer of"))
    argv = ["prune", str(tmp_path / "plain"), "--output", str(tmp_path / "o2"), "--sparsity", "0.2"]
    assert main([*argv, "--tasks", f"chats={tmp_path / 'chats.jsonl'}"]) == 2
    assert "has no chat template, so conversations cannot be rendered" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_prune_scores_eval_tasks_in_the_chat_template(tmp_path, tiny_tokenizer, capsys):
    """`prune --eval-tasks ... --eval-apply-chat-template` scores the dense and the pruned model in the chat template
    and the card says so; a tokenizer without a template is a usage error before any model loads."""
    from conftest import chat_tokenizer
    from huggingface_hub import ModelCard

    save_dense_checkpoint(tmp_path / "dense", "gemma3_text", chat_tokenizer(tiny_tokenizer, adds_bos=True))
    questions = [{"context": f"Question {i}?", "choices": ["yes", "no"], "label": i % 2} for i in range(4)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"Question {i}? Answer: yes" for i in range(6)) + "\n")
    argv = ["--quiet", "prune", str(tmp_path / "dense"), "--output", str(tmp_path / "out"), "--sparsity", "0.2"]
    argv += ["--tasks", f"mine={texts}", "--eval-tasks", f"q={tmp_path / 'q.jsonl'}", "--eval-apply-chat-template"]
    assert main(argv) == 0, capsys.readouterr().err
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert "scored as lm-eval-harness 0.4 scores it with the model's chat template" in card.text
    assert card.data.eval_results[0].task_name.endswith("with the chat template")
    save_dense_checkpoint(tmp_path / "plain", "gemma3_text", tiny_tokenizer)
    argv[2], argv[4] = str(tmp_path / "plain"), str(tmp_path / "out2")
    assert main(argv) == 2  # a usage error, before any model loads
    assert "`--eval-apply-chat-template`: the tokenizer of" in capsys.readouterr().err
    assert main([*argv[:9], "--eval-apply-chat-template"]) == 2  # without --eval-tasks
    assert "`--eval-apply-chat-template` scores the --eval-tasks" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_prune_calibration_chat_template_renders_your_questions(
    tmp_path, data_dir, tiny_tokenizer, capsys, monkeypatch
):
    """`prune --calibration-chat-template`: your questions (`--tasks NAME=FILE`) calibrate in the chat template of
    MODEL's tokenizer, as they are scored with `--apply-chat-template`; a tokenizer without one is a usage error
    before any model loads."""
    from conftest import chat_tokenizer

    from diet_hf.constants import SCORES_TEXTS_FILE
    from diet_hf.tasks import chat_calibration_request, custom_calibration, multiple_choice_task

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    save_dense_checkpoint(tmp_path / "dense", "gemma3_text", tokenizer)
    rows = [{"context": f"Question {i}?", "choices": ["yes", "no"], "label": i % 2} for i in range(4)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--quiet", "prune", str(tmp_path / "dense"), "--output", str(tmp_path / "out"), "--sparsity", "0.2"]
    argv += ["--num-samples", "3", "--data-dir", str(data_dir), "--tasks", "rte", f"q={tmp_path / 'q.jsonl'}"]
    argv += ["--calibration-chat-template", "--save-scores", str(tmp_path / "scores")]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "scores" / SCORES_TEXTS_FILE).read_text())["tasks"]["q"]
    render = lambda request: chat_calibration_request(tokenizer, request)  # noqa: E731
    assert saved == custom_calibration("q", multiple_choice_task("q", rows), render=render).texts
    assert all(text.startswith("<start_of_turn>user\nQuestion") for text in saved)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| calibration prompts | each question in the model's chat template" in card
    save_dense_checkpoint(tmp_path / "plain", "gemma3_text", tiny_tokenizer)
    argv[2], argv[4] = str(tmp_path / "plain"), str(tmp_path / "out2")
    assert main(argv) == 2
    assert "`--calibration-chat-template`: the tokenizer of" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    # the same with registered tasks alone (no question of yours to render first)
    from diet_hf import DietPruner

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(DietPruner, "from_pretrained", loaded)
    assert main([*argv[: argv.index("--tasks") + 2], *argv[argv.index("--tasks") + 3 :]]) == 2
    assert "`--calibration-chat-template`: the tokenizer of" in capsys.readouterr().err


LOGGING_PROBE = """
import logging, sys
from diet_hf import cli

def run(args):
    import datasets.utils.logging, huggingface_hub.utils.logging

    logging.getLogger("httpx").info("library info")
    logging.getLogger("bitsandbytes.backends").warning("library warning")
    # these two log through handlers of their own
    huggingface_hub.utils.logging.get_logger("huggingface_hub.utils._http").warning("hub warning")
    datasets.utils.logging.get_logger("datasets.load").warning("datasets warning")
    logging.getLogger("diet_hf.plan").info("own info")
    logging.getLogger("diet_hf.profiling").warning("own warning")
    return 0

cli.COMMANDS["info"] = (None, run)
# what importing the libraries printed comes before this line (torchao's failed CUDA-kernel loads, where installed)
print("<main>", file=sys.stderr, flush=True)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("quiet", "shown"),
    [
        (False, ["library warning", "hub warning", "datasets warning", "own info", "own warning"]),
        (True, ["own warning"]),
    ],
)
def test_the_command_logs_its_own_messages_not_the_libraries_info(quiet, shown):
    """httpx logs "HTTP Request: ..." at INFO for every Hub call, and a library may warn on import: the command shows
    diet-hf's own INFO and warnings, the libraries' warnings only without --quiet, their INFO never."""
    import subprocess
    import sys

    argv = [sys.executable, "-c", LOGGING_PROBE, *(["--quiet"] if quiet else []), "info", "m"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    lines = done.stderr.splitlines()
    assert lines[lines.index("<main>") + 1 :] == shown


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["prune", "{dense}", "--output", "{file}/out", "--sparsity", "0.2"],
            1,
            "`--output`: {file}/out cannot be made",
        ),
        (["prune", "{dense}", "--output", "{file}", "--sparsity", "0.2"], 1, "`--output`: {file} exists and is not a"),
        (
            ["prune", "{dense}", "--output", "{tmp}/o", "--save-scores", "{file}/s", "--sparsity", "0.2"],
            1,
            "`--save-scores`: {file}/s cannot be made",
        ),
        (
            ["heal", "{dense}", "--teacher", "{dense}", "--output", "{file}/h"],
            1,
            "`--output`: {file}/h cannot be made",
        ),
        (["eval", "{dense}", "--output", "{file}/r.json"], 2, "`--output`: {file}/r.json cannot be made"),
        (["eval", "{dense}", "--output", "{tmp}"], 2, "`--output`: {tmp} is a directory; give a file name"),
    ],
)
def test_an_output_that_cannot_be_written_fails_before_any_model_loads(
    argv, code, message, dense_dir, tmp_path, capsys, monkeypatch
):
    """A file where the output directory (or one of its parents) would go: refused before the model loads, not
    after profiling, healing or scoring, and nothing is written."""
    import diet_hf.loading
    from diet_hf import DietPruner

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(DietPruner, "from_pretrained", loaded)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", loaded)
    monkeypatch.setattr(diet_hf.loading, "load_causal_lm", loaded)
    (tmp_path / "file").write_text("not a directory")
    names = {"dense": str(dense_dir), "file": str(tmp_path / "file"), "tmp": str(tmp_path)}
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["--quiet", *(word.format(**names) for word in argv)]) == code
    assert message.format(**names) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_prune_reads_the_dense_model_from_a_gguf_file(tmp_path, data_dir, capsys):
    """`prune DIR --gguf-file NAME`: the model and tokenizer read from the GGUF file, pruned and saved as an ordinary
    checkpoint (the same model as `DietPruner.from_pretrained(DIR, gguf_file=NAME)` prunes, the file in its record);
    your questions calibrate in the chat template the file holds; a name that is not in the directory is refused
    naming --gguf-file, before any model loads, and writes nothing."""
    pytest.importorskip("gguf")
    import transformers
    from conftest import GEMMA_STYLE_CHAT_TEMPLATE, gguf_parses, write_tiny_gguf

    from diet_hf import DietPruner
    from diet_hf.constants import SCORES_TEXTS_FILE

    gguf_path = tmp_path / "source" / "tiny.gguf"
    source = write_tiny_gguf(gguf_path, chat_template=GEMMA_STYLE_CHAT_TEMPLATE).parent
    argv = ["--quiet", "prune", str(source), "--tasks", "rte", "--num-samples", "3", "--data-dir", str(data_dir)]
    argv += ["--sparsity", "0.3"]
    assert main([*argv, "--gguf-file", "nope.gguf", "--output", str(tmp_path / "bad")]) == 1
    assert f"`--gguf-file`: the local directory {source} holds no file nope.gguf" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*argv, "--output", str(tmp_path / "bad")]) == 1  # without the flag: the directory holds no model
    assert f"the local directory {source} has no config.json" in capsys.readouterr().err

    assert main([*argv, "--gguf-file", "tiny.gguf", "--output", str(tmp_path / "pruned")]) == 0, (
        capsys.readouterr().err
    )
    assert "GGUF tensors" not in capsys.readouterr().err  # transformers' conversion bar is plain tqdm: off too
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert saved.config.pruning["base_model_gguf_file"] == "tiny.gguf"
    assert not hasattr(saved.config, "quantization_config")
    pruner = DietPruner.from_pretrained(source, gguf_file="tiny.gguf")
    pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True)
    expected = pruner.prune(sparsity=0.3)
    ids = random_batch(2, 8, vocab_size=expected.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, expected(ids).logits)

    rows = [{"context": f"Question {i}?", "choices": ["yes", "no"], "label": i % 2} for i in range(3)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    chat = [*argv[:5], f"q={tmp_path / 'q.jsonl'}", *argv[5:], "--gguf-file", "tiny.gguf"]
    chat += ["--calibration-chat-template", "--save-scores", str(tmp_path / "scores"), "--output", str(tmp_path / "c")]
    with gguf_parses() as parses:
        assert main(chat) == 0, capsys.readouterr().err
    # the tokenizer that rendered the questions is the pruner's: the file's config and weights are the only other
    # parses (transformers 4.57's tokenizer load parses the file twice: for its class, then for the tokenizer)
    rendered = 1 if int(transformers.__version__.split(".")[0]) >= 5 else 2
    assert parses == ["tiny.gguf"] * (rendered + 2), parses
    texts = json.loads((tmp_path / "scores" / SCORES_TEXTS_FILE).read_text())["tasks"]["q"]
    assert len(texts) == 3 and all(text.startswith("<start_of_turn>user\nQuestion") for text in texts)


def test_eval_reads_a_model_and_its_reference_from_gguf_files(tmp_path, data_dir, capsys):
    """`eval DIR --gguf-file NAME` and `--reference DIR --reference-gguf-file NAME` score the models read from GGUF
    files as they score the checkpoints `convert_gguf` makes of them; the JSON names the files;
    `--reference-gguf-file` without `--reference` is a usage error. Each file is parsed three times, for its config,
    its weights and its tokenizer (20 s a parse on the real 270M); with `--apply-chat-template` the tokenizer that
    checked the template is the one that scores."""
    pytest.importorskip("gguf")
    import transformers
    from conftest import GEMMA_STYLE_CHAT_TEMPLATE, gguf_parses, write_tiny_gguf

    from diet_hf.real_model import convert_gguf

    source = write_tiny_gguf(tmp_path / "source" / "tiny.gguf", chat_template=GEMMA_STYLE_CHAT_TEMPLATE).parent
    other = write_tiny_gguf(tmp_path / "other" / "other.gguf", seed=1, chat_template=GEMMA_STYLE_CHAT_TEMPLATE).parent
    converted = [
        convert_gguf(d / name, tmp_path / f"{d.name}-c") for d, name in ((source, "tiny.gguf"), (other, "other.gguf"))
    ]
    argv = ["--quiet", "eval", "--tasks", "rte", "boolq", "--limit", "4", "--data-dir", str(data_dir), "--output"]

    def scored(*models: str) -> dict:
        assert main([*argv, str(tmp_path / "r.json"), *models]) == 0, capsys.readouterr().err
        return json.loads((tmp_path / "r.json").read_text())

    with gguf_parses() as parses:
        read = scored(
            str(source), "--gguf-file", "tiny.gguf", "--reference", str(other), "--reference-gguf-file", "other.gguf"
        )
    assert sorted(parses) == ["other.gguf"] * 3 + ["tiny.gguf"] * 3, parses
    expected = scored(str(converted[0]), "--reference", str(converted[1]))
    assert read["gguf_file"] == "tiny.gguf" and read["reference"]["gguf_file"] == "other.gguf"
    assert read["results"] == expected["results"] and read["reference"]["results"] == expected["reference"]["results"]
    assert read["difference"] == expected["difference"]
    gguf_models = [str(source), "--gguf-file", "tiny.gguf", "--reference", str(other), "--reference-gguf-file"]
    with gguf_parses() as parses:
        chat = scored(*gguf_models, "other.gguf", "--apply-chat-template")
    # the template check loads each tokenizer (transformers 4.57 parses the file twice for one): not loaded again
    rendered = 1 if int(transformers.__version__.split(".")[0]) >= 5 else 2
    assert sorted(parses) == ["other.gguf"] * (rendered + 2) + ["tiny.gguf"] * (rendered + 2), parses
    expected = scored(str(converted[0]), "--reference", str(converted[1]), "--apply-chat-template")
    assert chat["results"] == expected["results"] and chat["reference"]["results"] == expected["reference"]["results"]
    assert main([*argv, str(tmp_path / "x.json"), str(converted[0]), "--reference-gguf-file", "other.gguf"]) == 2
    assert "`--reference-gguf-file` reads --reference from a GGUF file; give --reference MODEL." in (
        capsys.readouterr().err
    )
