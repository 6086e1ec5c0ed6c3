"""ONNX export of pruned models (optimum) and ONNX Runtime parity with PyTorch.

optimum-onnx caps transformers below 4.58, so the export runs in the second environment that scripts/test.sh builds
(`.venv-tf457`: transformers 4.57.6 with `diet-hf[onnx]`), named by DIET_ONNX_PYTHON. The checks on bad input run
here, without optimum.
"""

import json
import os
import subprocess
import textwrap

import pytest
import torch
from conftest import (
    pruned_then_dense_repo,
    random_batch,
    save_dense_checkpoint,
    tiny_pruned_classifier,
    uneven_pruned_model,
)

from diet_hf.cli import main

ONNX_PYTHON = os.environ.get("DIET_ONNX_PYTHON")
needs_onnx_env = pytest.mark.skipif(not ONNX_PYTHON, reason="set DIET_ONNX_PYTHON to a python with diet-hf[onnx]")


def _run_in_onnx_env(tmp_path, script: str, *args) -> dict:
    """Runs `script` (one of the scripts below) in the ONNX environment with `args` and `result.json` after them, in a
    modules cache of its own and offline; returns what it wrote there."""
    (tmp_path / "script.py").write_text(script)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [ONNX_PYTHON, str(tmp_path / "script.py"), *map(str, args), str(tmp_path / "result.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads((tmp_path / "result.json").read_text())


# Runs in the ONNX environment: export (diet-hf CLI or optimum-cli), then ONNX Runtime against PyTorch there.
PARITY_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM
    model_dir, out_dir, ids_path, exporter, quantize, result_path = sys.argv[1:7]
    if exporter == "diet-hf":
        command = [sys.executable, "-m", "diet_hf.cli", "--quiet", "export", "onnx", model_dir, out_dir]
    else:  # optimum's own CLI finds diet-hf's export config through its plug-in namespace; it cannot infer the
        # task of a local directory, so it is given
        optimum_cli = str(__import__("pathlib").Path(sys.executable).parent / "optimum-cli")
        command = [optimum_cli, "export", "onnx", "--model", model_dir, "--trust-remote-code",
                   "--task", "text-generation-with-past", out_dir]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    config = json.load(open(out_dir + "/config.json"))
    import onnx
    graph = onnx.load(out_dir + "/model.onnx", load_external_data=False).graph
    past_inputs = [i.name for i in graph.input if i.name.startswith("past_key_values.")]
    consumers = {name: sorted({n.op_type for n in graph.node if name in n.input}) for name in past_inputs}
    if quantize == "int8":  # optimum's stock quantizer, dynamic int8 (the recipe `onnx_benchmark.py --int8` measures)
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
        dynamic = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(out_dir).quantize(save_dir=out_dir + "-int8", quantization_config=dynamic)
    sys.modules["diet_hf"] = None  # ONNX Runtime needs neither diet-hf nor remote code
    ort = ORTModelForCausalLM.from_pretrained(out_dir)
    torch_model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    ids = torch.tensor(json.load(open(ids_path)))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        onnx_logits = ort(input_ids=ids, attention_mask=mask).logits
        torch_logits = torch_model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    int8 = {}
    if quantize == "int8":
        quantized = ORTModelForCausalLM.from_pretrained(out_dir + "-int8", file_name="model_quantized.onnx")
        int8 = {
            "logits": quantized(input_ids=ids, attention_mask=mask).logits[mask.bool()].tolist(),
            "generated": quantized.generate(ids[:1], **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4}).tolist(),
            "files": sorted(p.name for p in __import__("pathlib").Path(out_dir + "-int8").iterdir()),
        }
    json.dump(
        {
            "config": config,
            "int8": int8,
            "past_consumers": consumers,
            "onnx_logits": onnx_logits[mask.bool()].tolist(),
            "torch_logits": torch_logits[mask.bool()].tolist(),
            "onnx_generated": ort.generate(ids[:1], **kwargs).tolist(),
            "torch_generated": torch_model.generate(ids[:1], **kwargs).tolist(),
            "onnx_batch_generated": ort.generate(ids, attention_mask=mask, **kwargs).tolist(),
            "torch_batch_generated": torch_model.generate(ids, attention_mask=mask, **kwargs).tolist(),
        },
        open(result_path, "w"),
    )
    """
)


def _export_and_compare(tmp_path, family, exporter, compensated=False, quantize="none"):
    pruned = uneven_pruned_model(family, compensated)
    pruned.save_pretrained(tmp_path / "model")
    ids = random_batch(2, 10)
    (tmp_path / "ids.json").write_text(json.dumps(ids.tolist()))
    args = (tmp_path / "model", tmp_path / "onnx", tmp_path / "ids.json", exporter, quantize)
    result = _run_in_onnx_env(tmp_path, PARITY_SCRIPT, *args)
    onnx_logits, torch_logits = torch.tensor(result["onnx_logits"]), torch.tensor(result["torch_logits"])
    # the checkpoint's logits here (transformers 5.x) are those of the ONNX environment's PyTorch (4.57)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        here = pruned(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits[mask.bool()]
    scale = torch_logits.abs().max()
    assert (onnx_logits - torch_logits).abs().max() <= 1e-4 * scale
    assert (here - torch_logits).abs().max() <= 1e-4 * scale
    assert result["onnx_generated"] == result["torch_generated"]
    # every layer's past input is first reshaped to that layer's (heads, head_dim): valid ONNX for any empty past
    assert len(result["past_consumers"]) == 2 * 2
    assert all("Reshape" in ops and "Concat" not in ops for ops in result["past_consumers"].values()), result[
        "past_consumers"
    ]
    assert result["onnx_batch_generated"] == result["torch_batch_generated"]
    return result


@needs_onnx_env
@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_diet_hf_export_onnx_matches_pytorch_and_quantizes(family, tmp_path):
    """`diet-hf export onnx` of a pruned model (uneven layers, a removed attention and MLP; compensation biases in
    gemma3_text's) against PyTorch in ONNX Runtime without diet-hf; then the export through optimum's stock
    `ORTQuantizer` (dynamic int8, the recipe `onnx_benchmark.py --int8` measures on the real model): int8 logits near
    the float32 export's, not equal to them, and greedy generation with past key values."""
    result = _export_and_compare(tmp_path, family, "diet-hf", compensated=family == "gemma3_text", quantize="int8")
    float32, int8 = torch.tensor(result["onnx_logits"]), torch.tensor(result["int8"]["logits"])
    assert not torch.equal(int8, float32)
    assert (int8 - float32).abs().max() < 0.25 * float32.abs().max()
    assert len(result["int8"]["generated"][0]) == 10 + 4
    assert "model_quantized.onnx" in result["int8"]["files"]
    config = result["config"]
    # ONNX Runtime reads the base type; the per-layer sizes stay in the config (format v2: transformers'
    # `per_layer_config`, no second copy), the structure is in the graph
    assert config["model_type"] == family and config["diet_hf_pruned_model_type"] == f"pruned_{family}"
    assert "auto_map" not in config and "num_attention_heads_per_layer" not in config
    assert config["per_layer_config"]["0"]["skip"][-1] == "attention"
    assert config["per_layer_config"]["1"]["num_attention_heads"] == 2


@needs_onnx_env
def test_optimum_cli_export_onnx_matches_pytorch(tmp_path):
    _export_and_compare(tmp_path, "gemma3_text", "optimum-cli")


# Runs in the ONNX environment: `diet-hf` with each argument list of the JSON list in argv[1], in turn in this process;
# prints what each printed
EXPORTS_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from diet_hf.cli import main
    stdouts = []
    for argv in json.loads(sys.argv[1]):
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            assert main(argv) == 0, argv
        stdouts.append(stdout.getvalue())
    print(json.dumps(stdouts))
    """
)


# Runs in the ONNX environment: each checkpoint exported by the diet-hf CLI (its default task, or the one given),
# loaded by the ONNX Runtime class of that task without diet-hf, and compared with PyTorch there (left padding).
HEADS_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys
    import torch
    import optimum.onnxruntime as ort
    import transformers
    jobs, ids_path, exports, result_path = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
    # the three exports by the command's own `main`, in one process of their own (not this one, which has no diet-hf)
    argvs = [["--quiet", "export", "onnx", model_dir, out_dir] + (["--task", task] if task else [])
             for model_dir, out_dir, task, *_ in jobs]
    done = subprocess.run([sys.executable, exports, json.dumps(argvs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    stdouts = json.loads(done.stdout.strip().splitlines()[-1])
    ids = torch.tensor(json.load(open(ids_path)))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    results = []
    for (model_dir, out_dir, task, ort_class, auto_class, output), stdout in zip(jobs, stdouts):
        onnx_model = getattr(ort, ort_class).from_pretrained(out_dir)
        torch_model = getattr(transformers, auto_class).from_pretrained(model_dir, trust_remote_code=True).eval()
        with torch.no_grad():
            onnx_out = getattr(onnx_model(input_ids=ids, attention_mask=mask), output)
            torch_out = getattr(torch_model(input_ids=ids, attention_mask=mask, position_ids=position_ids), output)
        if onnx_out.dim() == 3:  # per token: the real tokens only
            onnx_out, torch_out = onnx_out[mask.bool()], torch_out[mask.bool()]
        results.append(
            {
                "config": json.load(open(out_dir + "/config.json")),
                "stdout": stdout,
                "difference": (onnx_out - torch_out).abs().max().item(),
                "scale": torch_out.abs().max().item(),
                "class": type(onnx_model).__name__,
            }
        )
    json.dump(results, open(result_path, "w"))
    """
)


@needs_onnx_env
def test_classifiers_and_the_decoder_alone_export_with_their_task(tmp_path):
    from transformers import AutoModelForTokenClassification

    tiny_pruned_classifier().save_pretrained(tmp_path / "sequence")
    uneven_pruned_model("gemma3_text", compensated=True).save_pretrained(tmp_path / "causal")
    AutoModelForTokenClassification.from_pretrained(tmp_path / "causal", num_labels=4).save_pretrained(
        tmp_path / "token"
    )
    jobs = [  # model, output, --task (None: the default), ONNX Runtime class, Auto class, output compared
        (
            "sequence",
            "sequence-onnx",
            None,
            "ORTModelForSequenceClassification",
            "AutoModelForSequenceClassification",
            "logits",
        ),
        ("token", "token-onnx", None, "ORTModelForTokenClassification", "AutoModelForTokenClassification", "logits"),
        (
            "causal",
            "decoder-onnx",
            "feature-extraction",
            "ORTModelForFeatureExtraction",
            "AutoModel",
            "last_hidden_state",
        ),
    ]
    jobs = [(str(tmp_path / model), str(tmp_path / out), *rest) for model, out, *rest in jobs]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "ids.json").write_text(json.dumps(random_batch(2, 10).tolist()))
    (tmp_path / "exports.py").write_text(EXPORTS_SCRIPT)
    sequence, token, decoder = _run_in_onnx_env(
        tmp_path, HEADS_SCRIPT, tmp_path / "jobs.json", tmp_path / "ids.json", tmp_path / "exports.py"
    )
    for result in (sequence, token, decoder):
        assert result["difference"] <= 1e-4 * result["scale"], result
    assert "(text-classification)" in sequence["stdout"] and "ORTModelForSequenceClassification" in sequence["stdout"]
    assert "(token-classification)" in token["stdout"] and "(feature-extraction)" in decoder["stdout"]
    # the stock class of each task, under the base model type ONNX Runtime reads; Gemma 3 has no token classifier
    assert sequence["config"]["architectures"] == ["Gemma2ForSequenceClassification"]
    assert "architectures" not in token["config"] and token["config"]["model_type"] == "gemma3_text"
    assert decoder["config"]["architectures"] == ["Gemma3TextModel"]


def test_default_task_follows_the_saved_class(tmp_path):
    pytest.importorskip("optimum.exporters.onnx")
    from diet_hf.onnx import default_task

    for architecture, task in [
        ("PrunedGemma2ForSequenceClassification", "text-classification"),
        ("PrunedGemma3ForTokenClassification", "token-classification"),
        ("PrunedGemma3TextModel", "feature-extraction"),
        ("PrunedGemma3ForCausalLM", "text-generation-with-past"),
    ]:
        (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
        assert default_task(tmp_path) == task
    (tmp_path / "config.json").write_text("{}")
    assert default_task(tmp_path) == "text-generation-with-past"


def test_export_refuses_a_dense_model(tmp_path, tiny_tokenizer, capsys):
    dense_dir = save_dense_checkpoint(tmp_path / "dense", "gemma2", tiny_tokenizer)
    assert main(["--quiet", "export", "onnx", str(dense_dir), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "`model` must be a pruned Gemma model (pruned_gemma2, pruned_gemma3_text)" in error
    assert "holds model_type 'gemma2'" in error
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_directory_without_remote_code(tmp_path, capsys):
    uneven_pruned_model("gemma2").save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "modeling_pruned_gemma.py").unlink()
    assert main(["--quiet", "export", "onnx", str(tmp_path / "model"), str(tmp_path / "out")]) == 1
    assert "has no remote code (modeling_pruned_gemma.py missing beside config.json)" in capsys.readouterr().err
    assert main(["--quiet", "export", "onnx", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "`model`: the local directory" in (error := capsys.readouterr().err) and "does not exist" in error
    assert main(["--quiet", "export", "onnx", "org/not-a-model", str(tmp_path / "out")]) == 1
    assert "`model`: org/not-a-model is no local directory, and the Hub repository could not be read" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_export_reads_a_pruned_model_from_the_hub_at_a_revision(local_hub, tmp_path, capsys):
    """`diet-hf export onnx REPO_ID OUT --revision SHA`: the checkpoint is downloaded at that commit (its main branch
    has moved on to a dense model, which the export would refuse) and exported, validated against PyTorch."""
    pytest.importorskip("optimum.exporters.onnx")
    uneven_pruned_model("gemma3_text").save_pretrained(tmp_path / "model")
    pruned = pruned_then_dense_repo("org/onnx-source", tmp_path / "model", "gemma3_text", tmp_path)
    argv = ["--quiet", "export", "onnx", "org/onnx-source"]
    assert main([*argv, str(tmp_path / "out"), "--revision", pruned]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "model.onnx").is_file()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["diet_hf_pruned_model_type"] == "pruned_gemma3_text"
    assert main([*argv, str(tmp_path / "out2")]) == 1  # main: the dense model
    assert "`model` must be a pruned Gemma model" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_export_refuses_an_output_that_is_a_file(tmp_path, capsys):
    pytest.importorskip("optimum.exporters.onnx")
    uneven_pruned_model("gemma2").save_pretrained(tmp_path / "model")
    (tmp_path / "out").write_text("keep")
    assert main(["--quiet", "export", "onnx", str(tmp_path / "model"), str(tmp_path / "out")]) == 1
    assert "`output`: " in (error := capsys.readouterr().err) and "exists and is not a directory" in error
    assert (tmp_path / "out").read_text() == "keep"


def test_export_usage_errors(tmp_path):
    assert main(["export"]) == 2
    assert main(["export", "tflite", str(tmp_path), str(tmp_path / "o")]) == 2


def test_onnx_extra_missing_is_a_clear_error(tmp_path, capsys):
    try:
        import optimum.exporters.onnx  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("optimum's ONNX exporter is installed in this environment")
    uneven_pruned_model("gemma2").save_pretrained(tmp_path / "model")
    assert main(["--quiet", "export", "onnx", str(tmp_path / "model"), str(tmp_path / "out")]) == 1
    assert 'pip install "diet-hf[onnx]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
