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
from conftest import REPO_ROOT, random_batch, run_script, run_scripts, tiny_pruned_classifier, uneven_pruned_model

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


@pytest.mark.parametrize("python", [sys.executable, TF457_PYTHON], ids=["this_transformers", "transformers_457"])
def test_every_kind_of_checkpoint_loads_in_a_fresh_process_without_diet_hf(python, tmp_path):
    """Each family, plain and bias-compensated, and a sequence and a token classifier, saved here and loaded back
    through the Auto classes in one new process of `python` (this transformers, or 4.57 as the last 4.x) where
    diet_hf cannot be imported: the same logits to float precision (the new process picks its own default attention,
    sdpa where allowed) and the same greedy continuation. One process for all six: starting one costs more than
    loading them."""
    if python is None:
        pytest.skip("set DIET_TF457_PYTHON to a python with transformers 4.57.x")
    from transformers import AutoModelForTokenClassification

    ids, models, jobs = random_batch(), {}, []
    for family in ("gemma2", "gemma3_text"):
        for compensated in (False, True):
            name = f"{family}-{'bias_compensated' if compensated else 'plain'}"
            models[name] = uneven_pruned_model(family, compensated)
            assert any(n.endswith("mlp.bias") for n, _ in models[name].named_parameters()) == compensated
            models[name].save_pretrained(tmp_path / name)
            jobs.append((tmp_path / name, ids, "causal"))
    models["sequence"] = tiny_pruned_classifier()
    models["sequence"].save_pretrained(tmp_path / "sequence")
    uneven_pruned_model("gemma3_text", compensated=True).save_pretrained(tmp_path / "causal")
    models["token"] = AutoModelForTokenClassification.from_pretrained(tmp_path / "causal", num_labels=4).eval()
    models["token"].save_pretrained(tmp_path / "token")
    jobs += [(tmp_path / "sequence", ids, "cls"), (tmp_path / "token", ids, "tok")]
    results = dict(zip(models, _load_all_in_fresh_process(jobs, tmp_path, python=python), strict=True))

    (version,) = {result["version"] for result in results.values()}
    assert python == sys.executable or version.startswith("4.57")
    assert results["sequence"]["class"] == "PrunedGemma2ForSequenceClassification"
    assert results["token"]["class"] == "PrunedGemma3ForTokenClassification"
    for name, model in models.items():
        with torch.no_grad():
            difference = (torch.tensor(results[name]["logits"]) - model(ids).logits).abs().max().item()
        assert difference <= 1e-5, name
        if "generated" in results[name]:
            model.generation_config.pad_token_id = 0
            generated = model.generate(ids[:1], max_new_tokens=4, min_new_tokens=4, do_sample=False).tolist()
            assert results[name]["generated"] == generated, name


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


def test_a_hub_users_first_steps_run_without_diet_hf(saved_pruned, tiny_tokenizer, tmp_path):
    """What a Hub user runs first, each with stock transformers and PEFT, no diet-hf (in one new process: starting one
    costs more than the three steps):
    - `pipeline("text-generation", model=repo, trust_remote_code=True)` continues a prompt as the pruned model's own
      greedy decoding does;
    - the card's code blocks, run as written (no terminal to answer on): loading, then LoRA through PEFT with the
      targets the card names (PEFT has no default for the pruned model types), trained a step's worth: a loss, and
      gradients in the adapters only;
    - after fine-tuning: the adapter saved and read back by `AutoPeftModelForCausalLM` (which loads the pruned base
      through its remote code), then merged, saved with `save_pretrained` and loaded again. Both give the adapted
      model's logits, and the merged save carries the remote code beside its weights;
    - the same through transformers' own PEFT integration (`add_adapter`, an adapter-only save read back by
      `AutoModelForCausalLM.from_pretrained` and by `load_adapter`, `disable_adapters`)."""
    import shutil

    from transformers import PreTrainedTokenizerFast

    pruned, saved = saved_pruned
    with_tokenizer = Path(shutil.copytree(saved, tmp_path / "with-tokenizer"))
    tiny_tokenizer.save_pretrained(with_tokenizer)
    prompt = "the cat sat on"
    ids = tiny_tokenizer(prompt, return_tensors="pt").input_ids
    pruned.generation_config.pad_token_id = tiny_tokenizer.pad_token_id
    expected = pruned.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)[0, ids.shape[1] :]

    for_card = Path(shutil.copytree(saved, tmp_path / "for-card"))
    PreTrainedTokenizerFast(
        tokenizer_object=__import__("tokenizers").Tokenizer(__import__("tokenizers").models.WordLevel({"a": 0}, "a"))
    ).save_pretrained(for_card)
    card = (for_card / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in card.split("```python\n")[1:]]
    assert len(blocks) == 2 and "LoraConfig" in blocks[1]
    snippet = "\n".join(blocks).replace("path/to/this/model", str(for_card))

    parts = {
        "pipeline": (PIPELINE_SCRIPT, [str(with_tokenizer), prompt]),
        # no terminal: a prompt to trust the code would end the script with an error (EOF on its input)
        "card": (snippet + LORA_STEP, []),
        "adapter": (LORA_ROUND_TRIP, [str(saved)]),
        "integration": (TRANSFORMERS_ADAPTER, [str(saved)]),
    }
    stdout = run_scripts(tmp_path, parts)
    assert "Do you wish to run the custom code" not in stdout["card"]
    printed = {name: json.loads(out.strip().splitlines()[-1]) for name, out in stdout.items()}

    assert printed["pipeline"]["class"] == "PrunedGemma3ForCausalLM"
    assert printed["pipeline"]["text"] == tiny_tokenizer.decode(expected, skip_special_tokens=True)

    card = printed["card"]
    assert card["tokenizer"]  # AutoTokenizer read the stock tokenizer files beside it
    assert (
        card["adapters"] > 0 and card["trainable_elsewhere"] == [] and card["adapters_with_grad"] == card["adapters"]
    )

    adapter = printed["adapter"]
    assert adapter["moved"] > 1e-3  # the adapter changes the model, so the equalities below say something
    assert adapter["adapter"] == 0.0
    assert adapter["merged"] < 1e-5
    assert adapter["class"] == "PrunedGemma3ForCausalLM"
    assert {"configuration_pruned_gemma.py", "modeling_pruned_gemma.py", "model.safetensors"} <= set(adapter["files"])

    integration = printed["integration"]  # transformers' own PEFT integration, on the remote-code class
    assert integration["moved"] > 1e-3
    assert integration["base"] == str(saved) and "model.safetensors" not in integration["files"]  # the adapter alone
    assert integration["from_adapter_dir"] == 0.0 and integration["class"] == "PrunedGemma3ForCausalLM"
    assert integration["load_adapter"] == 0.0 and integration["disabled"] == 0.0
    assert integration["trainable"] == integration["adapter_parameters"] > 0


# the start of the fine-tuning scripts: the pruned checkpoint `sys.argv[1]` loaded without diet-hf, and its logits
PRUNED_LOADED_ALONE = textwrap.dedent(
    """
    import json, os, sys, torch
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base = model(ids).logits
    """
)


# transformers' PEFT integration: `add_adapter` on the loaded pruned model, `save_pretrained` of the adapter alone,
# `AutoModelForCausalLM.from_pretrained(adapter_dir)` (which finds the pruned base through the adapter's config),
# `load_adapter` and `disable_adapters`
TRANSFORMERS_ADAPTER = PRUNED_LOADED_ALONE + textwrap.dedent(
    """
    from peft import LoraConfig
    model.add_adapter(LoraConfig(target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    with torch.no_grad():
        want = model(ids).logits
    model.save_pretrained("integration-adapter")
    again = AutoModelForCausalLM.from_pretrained("integration-adapter", trust_remote_code=True).eval()
    other = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    other.load_adapter("integration-adapter")
    with torch.no_grad():
        from_adapter_dir, loaded = again(ids).logits, other(ids).logits
        other.disable_adapters()
        disabled = other(ids).logits
    other.enable_adapters()
    print(json.dumps({
        "moved": (want - base).abs().max().item(),
        "base": json.load(open("integration-adapter/adapter_config.json"))["base_model_name_or_path"],
        "files": sorted(os.listdir("integration-adapter")),
        "from_adapter_dir": (from_adapter_dir - want).abs().max().item(),
        "class": type(again).__name__,
        "load_adapter": (loaded - want).abs().max().item(),
        "disabled": (disabled - base).abs().max().item(),
        "trainable": sum(p.numel() for p in other.parameters() if p.requires_grad),
        "adapter_parameters": sum(p.numel() for n, p in other.named_parameters() if "lora_" in n),
    }))
    """
)


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


LORA_ROUND_TRIP = PRUNED_LOADED_ALONE + textwrap.dedent(
    """
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
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


QLORA_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    BITS = {
        "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
        "8bit": BitsAndBytesConfig(load_in_8bit=True),
    }
    results = []
    for path, bits in json.loads(sys.argv[1]):
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, quantization_config=BITS[bits])
        quantized = sorted(
            {type(m).__name__ for n, m in model.named_modules() if n.endswith(("proj", "proj.base_layer"))}
        )
        model = prepare_model_for_kbit_training(model)  # before any inference pass: see the test's docstring
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]))
        ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
        model.eval()
        generated = model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        results.append({
            "quantized": quantized,
            "loss": loss.item(),
            "lora": len(lora),
            "lora_with_grad": sum(p.grad is not None for p in lora.values()),
            # B starts at zero, so only its gradient is nonzero at the first step
            "lora_b_moved": sum(bool(p.grad.abs().sum() > 0) for n, p in lora.items() if "lora_B" in n),
            "trainable_elsewhere": [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n],
            "generated": generated.shape[1],
        })
    print(json.dumps(results))
    """
)


def test_qlora_through_bitsandbytes_without_diet_hf(tmp_path):
    """QLoRA as a Hub user runs it, on the CPU (where bitsandbytes 0.50 runs): a pruned checkpoint of each family with
    uneven layers and compensation biases loaded through `BitsAndBytesConfig` (4-bit NF4 and 8-bit), every projection
    quantized, `prepare_model_for_kbit_training`, LoRA on the card's targets, one backward pass reaching every adapter
    and nothing else, then greedy decoding (the four in one process: its imports cost more than the four runs). The
    shapes are multiples of 64: bitsandbytes' CPU 4-bit kernels need whole blocks, as real checkpoints' are. Training
    starts before any inference pass because bitsandbytes 0.50.2 on a CPU repacks 4-bit weights for inference at the
    first one, after which a layer with a bias fails its backward pass (an in-place add on a leaf; shown on a bare
    `Linear4bit` with a bias, no diet-hf code involved)."""
    pytest.importorskip("bitsandbytes")
    sizes = {"hidden_size": 128, "intermediate_size": 256, "head_dim": 64, "query_pre_attn_scalar": 64}
    jobs = []
    for family in ("gemma2", "gemma3_text"):
        pruned = uneven_pruned_model(family, compensated=True, mlp_stride=2, **sizes)  # layer 0's MLP: 128 of 256
        path = save_pruned_model(pruned, tmp_path / family)
        jobs += [(str(path), "4bit"), (str(path), "8bit")]
    results = json.loads(run_script(tmp_path, QLORA_SCRIPT, json.dumps(jobs)).strip().splitlines()[-1])
    assert len(results) == len(jobs)
    for (path, bits), out in zip(jobs, results, strict=True):
        job = f"{Path(path).name}, {bits}"
        assert out["quantized"] == (["Linear4bit"] if bits == "4bit" else ["Linear8bitLt"]), job
        assert math.isfinite(out["loss"]), job
        assert (out["lora"], out["lora_with_grad"], out["lora_b_moved"]) == (4, 4, 2), job
        assert out["trainable_elsewhere"] == [], job
        assert out["generated"] == 9, job
