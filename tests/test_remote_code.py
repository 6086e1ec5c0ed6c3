"""Saved checkpoints load anywhere with stock transformers: fresh process, `diet_hf` unimportable, 4.57 too."""

import ast
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, random_batch, run_script, tiny_pruned_classifier, uneven_pruned_model

from diet_hf.hub import remote_code_dir, remote_code_files, save_pruned_model

ALLOWED_TOP_LEVEL = {"torch", "transformers"}
# A second interpreter with transformers 4.57.x (built by .ci/run); the 4.57 test is skipped without it.
TF457_PYTHON = os.environ.get("DIET_TF457_PYTHON")

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    import torch, transformers
    import transformers as tf
    AUTO = {
        "causal": tf.AutoModelForCausalLM,
        "cls": tf.AutoModelForSequenceClassification,
        "tok": tf.AutoModelForTokenClassification,
    }
    results = []
    for path, ids, kind in json.load(open(sys.argv[1])):
        ids = torch.tensor(ids)
        auto = AUTO[kind]
        model = auto.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(ids).logits
        result = {"logits": logits.tolist(), "class": type(model).__name__, "version": transformers.__version__}
        result["module"] = type(model).__module__
        if kind == "causal":
            model.generation_config.pad_token_id = 0
            generated = model.generate(ids[:1], max_new_tokens=4, min_new_tokens=4, do_sample=False)
            result["generated"] = generated.tolist()
        results.append(result)
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def _load_in_fresh_process(path, ids, tmp_path, kind="causal", python=sys.executable):
    return _load_all_in_fresh_process([(path, ids, kind)], tmp_path, python=python)[0]


def _load_all_in_fresh_process(jobs, tmp_path, python=sys.executable):
    """Loads each (checkpoint folder, input ids, "causal", "cls" or "tok": the Auto class) in turn in one new process
    where `diet_hf` cannot be imported, and returns each one's logits (and greedy continuation). Remote code is
    cached per folder name: give checkpoints with different code different names."""
    jobs_path, out_path = tmp_path / "jobs.json", tmp_path / "out.json"
    jobs_path.write_text(json.dumps([(str(path), ids.tolist(), kind) for path, ids, kind in jobs]))
    run_script(tmp_path, LOAD_SCRIPT, str(jobs_path), str(out_path), python=python)
    return json.loads(out_path.read_text())


@pytest.fixture(scope="module")
def saved_pruned(tmp_path_factory):
    pruned = uneven_pruned_model("gemma3_text")
    path = save_pruned_model(pruned, tmp_path_factory.mktemp("pruned") / "model")  # the taught save: card included
    return pruned, path


def test_save_writes_auto_map_and_byte_identical_code(saved_pruned):
    _, path = saved_pruned
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "pruned_gemma3_text"
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    for source in remote_code_files():
        assert (path / source.name).read_bytes() == source.read_bytes()
    assert not list(path.glob("*.bin")), "weights must be safetensors"


FAMILIES_AND_BIASES = [(family, compensated) for family in ("gemma2", "gemma3_text") for compensated in (False, True)]


def _loaded_elsewhere(tmp_path_factory, python):
    """Each family, plain and bias-compensated, saved and loaded back in one fresh process of `python` (one start
    of the interpreter instead of four): {(family, compensated): (the pruned model, its input ids, what came back)}."""
    root, ids, models = tmp_path_factory.mktemp("elsewhere"), random_batch(), {}
    for family, compensated in FAMILIES_AND_BIASES:
        models[family, compensated] = uneven_pruned_model(family, compensated)
        models[family, compensated].save_pretrained(root / f"{family}-{compensated}")
    jobs = [(root / f"{family}-{compensated}", ids, "causal") for family, compensated in FAMILIES_AND_BIASES]
    results = _load_all_in_fresh_process(jobs, root, python=python)
    return {key: (models[key], ids, result) for key, result in zip(FAMILIES_AND_BIASES, results)}


@pytest.fixture(scope="module")
def loaded_in_fresh_process(tmp_path_factory):
    return _loaded_elsewhere(tmp_path_factory, sys.executable)


@pytest.fixture(scope="module")
def loaded_on_transformers_457(tmp_path_factory):
    return _loaded_elsewhere(tmp_path_factory, TF457_PYTHON)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("compensated", [False, True], ids=["plain", "bias_compensated"])
def test_fresh_process_without_diet_hf_gives_same_logits(loaded_in_fresh_process, family, compensated):
    pruned, ids, result = loaded_in_fresh_process[family, compensated]
    assert any(n.endswith("mlp.bias") for n, _ in pruned.named_parameters()) == compensated
    with torch.no_grad():
        expected = pruned(ids).logits
    # the fresh process picks its own default attention (sdpa where allowed): equal to float precision
    assert (torch.tensor(result["logits"]) - expected).abs().max().item() <= 1e-5
    pruned.generation_config.pad_token_id = 0
    assert (
        result["generated"] == pruned.generate(ids[:1], max_new_tokens=4, min_new_tokens=4, do_sample=False).tolist()
    )


@pytest.mark.parametrize("python", [sys.executable, TF457_PYTHON], ids=["this_transformers", "transformers_457"])
def test_classifiers_load_in_fresh_process(tmp_path, python):
    if python is None:
        pytest.skip("set DIET_TF457_PYTHON to a python with transformers 4.57.x")
    from transformers import AutoModelForTokenClassification

    sequence = tiny_pruned_classifier()
    sequence.save_pretrained(tmp_path / "sequence")
    uneven_pruned_model("gemma3_text", compensated=True).save_pretrained(tmp_path / "causal")
    token = AutoModelForTokenClassification.from_pretrained(tmp_path / "causal", num_labels=4).eval()
    token.save_pretrained(tmp_path / "token")
    ids = random_batch()
    jobs = [(tmp_path / "sequence", ids, "cls"), (tmp_path / "token", ids, "tok")]
    results = _load_all_in_fresh_process(jobs, tmp_path, python=python)
    classes = ["PrunedGemma2ForSequenceClassification", "PrunedGemma3ForTokenClassification"]
    assert [result["class"] for result in results] == classes
    with torch.no_grad():
        for model, result in zip((sequence, token), results):
            assert (torch.tensor(result["logits"]) - model(ids).logits).abs().max().item() <= 1e-5


@pytest.mark.skipif(not TF457_PYTHON, reason="set DIET_TF457_PYTHON to a python with transformers 4.57.x")
@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("compensated", [False, True], ids=["plain", "bias_compensated"])
def test_same_checkpoint_loads_on_transformers_457(loaded_on_transformers_457, family, compensated):
    pruned, ids, result = loaded_on_transformers_457[family, compensated]
    assert result["version"].startswith("4.57")
    with torch.no_grad():
        expected = pruned(ids).logits
    assert (torch.tensor(result["logits"]) - expected).abs().max().item() <= 1e-5


def test_remote_code_imports_only_stdlib_torch_transformers():
    for path in remote_code_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:  # the one relative import: the config module beside it
                    assert node.module == "configuration_pruned_gemma", ast.dump(node)
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_TOP_LEVEL or top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_remote_code_on_a_too_old_transformers_names_the_version_it_needs(monkeypatch):
    """4.53 and older lack stock classes the pruned ones build on, 4.54 and 4.55 fail on static caches of uneven KV
    heads (benchmarks/transformers_compat.py): the remote code says which transformers it needs instead of failing on
    a missing import or in the middle of generation."""
    import importlib.util

    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.55.4")
    path = REPO_ROOT / "modeling" / "configuration_pruned_gemma.py"
    spec = importlib.util.spec_from_file_location("pruned_config_on_old_transformers", path)
    with pytest.raises(ImportError, match=r"needs transformers >= 4\.56, found 4\.55\.4"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_remote_code_files_are_the_repository_modeling_folder():
    assert remote_code_dir().resolve() == (REPO_ROOT / "modeling").resolve() or Path(remote_code_dir()).is_dir()
    for path in remote_code_files():
        assert path.is_file()


PIPELINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    from transformers import pipeline
    generator = pipeline("text-generation", model=sys.argv[1], trust_remote_code=True)
    out = generator(sys.argv[2], max_new_tokens=5, min_new_tokens=5, do_sample=False, return_full_text=False)
    print(json.dumps({"text": out[0]["generated_text"], "class": type(generator.model).__name__}))
    """
)


def test_text_generation_pipeline_runs_the_checkpoint_without_diet_hf(saved_pruned, tiny_tokenizer, tmp_path):
    """`pipeline("text-generation", model=repo, trust_remote_code=True)`, the first thing many users run, continues a
    prompt as the pruned model's own greedy decoding does."""
    import shutil

    pruned, saved = saved_pruned
    path = Path(shutil.copytree(saved, tmp_path / "model"))
    tiny_tokenizer.save_pretrained(path)
    prompt = "the cat sat on"
    ids = tiny_tokenizer(prompt, return_tensors="pt").input_ids
    pruned.generation_config.pad_token_id = tiny_tokenizer.pad_token_id
    expected = pruned.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)[0, ids.shape[1] :]
    out = json.loads(run_script(tmp_path, PIPELINE_SCRIPT, str(path), prompt).strip().splitlines()[-1])
    assert out["class"] == "PrunedGemma3ForCausalLM"
    assert out["text"] == tiny_tokenizer.decode(expected, skip_special_tokens=True)


def test_card_usage_snippet_runs_without_a_prompt(saved_pruned, tmp_path):
    """The card's code blocks, run as a user would (stock transformers, no diet-hf, no terminal to answer on): loading,
    then LoRA through PEFT with the targets the card names (PEFT has no default for the pruned model types), trained a
    step's worth: a loss, and gradients in the adapters only."""
    import shutil

    from transformers import PreTrainedTokenizerFast

    path = Path(shutil.copytree(saved_pruned[1], tmp_path / "model"))
    PreTrainedTokenizerFast(
        tokenizer_object=__import__("tokenizers").Tokenizer(__import__("tokenizers").models.WordLevel({"a": 0}, "a"))
    ).save_pretrained(path)
    card = (path / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in card.split("```python\n")[1:]]
    assert len(blocks) == 2 and "LoraConfig" in blocks[1]
    snippet = "\n".join(blocks).replace("path/to/this/model", str(path))
    # no terminal: a prompt to trust the code would end the script with an error (EOF on its input)
    stdout = run_script(tmp_path, 'import sys\nsys.modules["diet_hf"] = None\n' + snippet + LORA_STEP)
    assert "Do you wish to run the custom code" not in stdout
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["tokenizer"]  # AutoTokenizer read the stock tokenizer files beside it
    assert out["adapters"] > 0 and out["trainable_elsewhere"] == [] and out["adapters_with_grad"] == out["adapters"]


# after the card's blocks: one forward and backward of the PEFT model, and where the gradients went
LORA_STEP = """
import json, torch
ids = torch.tensor([[0, 0, 0, 0]])
model(input_ids=ids, labels=ids).loss.backward()
trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
print(json.dumps({
    "tokenizer": type(tokenizer).__name__,
    "adapters": sum("lora_" in n for n in trainable),
    "adapters_with_grad": sum("lora_" in n and p.grad is not None for n, p in trainable.items()),
    "trainable_elsewhere": [n for n in trainable if "lora_" not in n],
}))
"""


LORA_ROUND_TRIP = textwrap.dedent(
    """
    import json, os, sys, torch
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base = model(ids).logits
    lora = LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(model, lora).eval()
    with torch.no_grad():
        want = adapted(ids).logits
    adapted.save_pretrained("adapter")
    again = AutoPeftModelForCausalLM.from_pretrained("adapter", trust_remote_code=True).eval()
    with torch.no_grad():
        from_adapter = again(ids).logits
    again.merge_and_unload().save_pretrained("merged")
    merged = AutoModelForCausalLM.from_pretrained("merged", trust_remote_code=True).eval()
    with torch.no_grad():
        from_merged = merged(ids).logits
    print(json.dumps({
        "adapter": (from_adapter - want).abs().max().item(),
        "merged": (from_merged - want).abs().max().item(),
        "moved": (want - base).abs().max().item(),
        "class": type(merged).__name__,
        "files": sorted(os.listdir("merged")),
    }))
    """
)


def test_a_lora_adapter_round_trips_through_peft_without_diet_hf(saved_pruned, tmp_path):
    """What a Hub user does after fine-tuning: the adapter saved and read back by `AutoPeftModelForCausalLM` (which
    loads the pruned base through its remote code), then merged, saved with `save_pretrained` and loaded again. Both
    give the adapted model's logits, and the merged save carries the remote code beside its weights."""
    out = json.loads(run_script(tmp_path, LORA_ROUND_TRIP, str(saved_pruned[1])).strip().splitlines()[-1])
    assert out["moved"] > 1e-3  # the adapter changes the model, so the equalities below say something
    assert out["adapter"] == 0.0
    assert out["merged"] < 1e-5
    assert out["class"] == "PrunedGemma3ForCausalLM"
    assert {"configuration_pruned_gemma.py", "modeling_pruned_gemma.py", "model.safetensors"} <= set(out["files"])


V01_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v0.1-pruned-gemma3"


@pytest.mark.parametrize("python", [sys.executable, TF457_PYTHON], ids=["current", "tf457"])
def test_a_checkpoint_of_diet_hf_0_1_keeps_loading(tmp_path, python):
    """Saved by diet-hf 0.1 (remote code named `*_pruned_gemma2.py`, uneven widths, compensation biases): stock
    transformers with its own remote code and diet-hf both give the logits it was saved with; re-saving through
    diet-hf writes the current file names and loads the same way."""
    if python is None:
        pytest.skip("DIET_TF457_PYTHON not set (scripts/test.sh sets it)")
    expected = json.loads((V01_FIXTURE / "expected_logits.json").read_text())
    ids, logits = torch.tensor(expected["input_ids"]), torch.tensor(expected["logits"])
    if python != sys.executable:
        remote = _load_in_fresh_process(V01_FIXTURE, ids, tmp_path, python=python)
        assert (torch.tensor(remote["logits"]) - logits).abs().max().item() <= 1e-5
        return
    from transformers import AutoModelForCausalLM

    from diet_hf.hub import save_pruned_model

    model = AutoModelForCausalLM.from_pretrained(V01_FIXTURE).eval()  # diet-hf's in-process classes
    with torch.no_grad():
        assert (model(ids).logits - logits).abs().max().item() <= 1e-5
    resaved = save_pruned_model(model, tmp_path / "resaved")
    assert sorted(p.name for p in resaved.glob("*.py")) == [
        "configuration_pruned_gemma.py",
        "modeling_pruned_gemma.py",
    ]
    auto_map = json.loads((resaved / "config.json").read_text())["auto_map"]
    assert all(
        value.split(".")[0] in ("configuration_pruned_gemma", "modeling_pruned_gemma") for value in auto_map.values()
    )
    # the 0.1 checkpoint through its own remote code, and the re-saved one through the current code, in one process
    remote, again = _load_all_in_fresh_process([(V01_FIXTURE, ids, "causal"), (resaved, ids, "causal")], tmp_path)
    assert remote["module"] != again["module"]  # each ran its own code
    assert (torch.tensor(remote["logits"]) - logits).abs().max().item() <= 1e-5
    assert (torch.tensor(again["logits"]) - logits).abs().max().item() <= 1e-5


QLORA_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    bits = {
        "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
        "8bit": BitsAndBytesConfig(load_in_8bit=True),
    }[sys.argv[2]]
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, quantization_config=bits)
    quantized = sorted({type(m).__name__ for n, m in model.named_modules() if n.endswith(("proj", "proj.base_layer"))})
    model = prepare_model_for_kbit_training(model)  # before any inference pass: see the test's docstring
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    model.eval()
    generated = model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    print(json.dumps({
        "quantized": quantized,
        "loss": loss.item(),
        "lora": len(lora),
        "lora_with_grad": sum(p.grad is not None for p in lora.values()),
        # B starts at zero, so only its gradient is nonzero at the first step
        "lora_b_moved": sum(bool(p.grad.abs().sum() > 0) for n, p in lora.items() if "lora_B" in n),
        "trainable_elsewhere": [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n],
        "generated": generated.shape[1],
    }))
    """
)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_qlora_through_bitsandbytes_without_diet_hf(family, bits, tmp_path):
    """QLoRA as a Hub user runs it, on the CPU (where bitsandbytes 0.50 runs): a pruned checkpoint with uneven
    layers and compensation biases loaded through `BitsAndBytesConfig` (4-bit NF4 or 8-bit), every projection
    quantized, `prepare_model_for_kbit_training`, LoRA on the card's targets, one backward pass reaching every adapter
    and nothing else, then greedy decoding. The shapes are multiples of 64: bitsandbytes' CPU 4-bit kernels need whole
    blocks, as real checkpoints' are. Training starts before any inference pass because bitsandbytes 0.50.2 on a CPU
    repacks 4-bit weights for inference at the first one, after which a layer with a bias fails its backward pass (an
    in-place add on a leaf; shown on a bare `Linear4bit` with a bias, no diet-hf code involved)."""
    pytest.importorskip("bitsandbytes")
    sizes = {"hidden_size": 128, "intermediate_size": 256, "head_dim": 64, "query_pre_attn_scalar": 64}
    pruned = uneven_pruned_model(family, compensated=True, mlp_stride=2, **sizes)  # layer 0's MLP: 128 of 256
    path = save_pruned_model(pruned, tmp_path / "model")
    out = json.loads(run_script(tmp_path, QLORA_SCRIPT, str(path), bits).strip().splitlines()[-1])
    assert out["quantized"] == (["Linear4bit"] if bits == "4bit" else ["Linear8bitLt"])
    assert math.isfinite(out["loss"])
    assert out["lora"] == 4 and out["lora_with_grad"] == 4 and out["lora_b_moved"] == 2
    assert out["trainable_elsewhere"] == []
    assert out["generated"] == 9
