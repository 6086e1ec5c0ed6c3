"""DietPruner end to end on tiny models and the real local data; call-order and input errors."""

import copy
import functools
import hashlib
import json
import logging

import pytest
import torch
from conftest import random_batch, save_dense_checkpoint, save_lora_adapter, tiny_dense_model, uneven_pruned_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import diet_hf.importance
from diet_hf import DietPruner, ImportanceScores, PrunedGemma3ForCausalLM, build_pruned_model
from diet_hf.baselines import BASELINE_PRUNE_OPTIONS, baseline_scores
from diet_hf.plan import build_plan
from diet_hf.profiler import _ChannelMasks
from diet_hf.recipes import output_weight_norms, weighted_scores

PAPER_PLAN_OPTIONS = {"merge": "vote", "mlp_normalize": "none", "head_normalize": "layer", "allocation": "global"}


def test_profile_prune_save_load(tmp_path, data_dir, tiny_tokenizer):
    dense = tiny_dense_model("gemma3_text")
    pruner = DietPruner(dense, tiny_tokenizer, model_id="tiny/gemma3")
    pruned = pruner.profile(
        tasks=["rte", "boolq", "winogrande"], num_samples=6, batch_size=4, data_dir=data_dir, disable_progress=True
    ).prune(sparsity=0.2)
    assert isinstance(pruned, PrunedGemma3ForCausalLM)
    assert abs(pruner.plan.sparsity - 0.2) <= 0.01
    record = pruned.config.pruning
    assert record["method"] == "DIET" and record["tasks"] == ["rte", "boolq", "winogrande"]
    assert record["total_parameters"]["pruned"] == sum(p.numel() for p in pruned.parameters())
    assert pruner.scores.provenance["excluded_eval_ids"]["boolq"] == []
    assert len(pruner.scores.provenance["sample_ids"]["rte"]) == 6
    pruned.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    ids = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits)


def test_a_pruned_model_saved_with_its_profile_prunes_its_base_again(tmp_path, data_dir, tiny_tokenizer):
    """`save_pretrained(save_profile=True)` writes the profile the model was pruned from (the tasks it was pruned on,
    your own texts beside them) into `diet_profile/`, and the card says how to prune from it; `load_scores(MODEL_DIR)`
    reads it back and prunes the base model to the same weights (the default's reconstruction reading the saved
    texts and drawing the registered task again). A later save without it removes it; loading scores from the model
    then says why there are none."""
    mine = [f"My own calibration text number {i}, about invoices." for i in range(4)]
    vocab = len(tiny_tokenizer)
    pruner = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="org/dense")
    tasks = {"rte": None, "boolq": None, "mine": mine}
    pruner.profile(tasks=tasks, num_samples=3, data_dir=data_dir, disable_progress=True)
    expected = pruner.prune(sparsity=0.3, tasks=["rte", "mine"]).state_dict()  # leave one task out
    out = tmp_path / "model"
    pruner.save_pretrained(out, save_profile=True)
    profile = out / "diet_profile"
    assert {path.name for path in profile.iterdir()} == {
        "importance_scores.safetensors",
        "importance_scores.json",
        "calibration_texts.json",
    }
    assert json.loads((profile / "calibration_texts.json").read_text())["tasks"] == {"mine": mine}
    card = (out / "README.md").read_text()
    assert "`diet_profile/` holds the DIET profile this model was pruned from" in card
    assert "diet-hf prune org/dense --scores path/to/this/model --sparsity 0.4 --output model-40" in card  # not 0.3

    (profile / "stale.txt").write_text("from an earlier save")
    pruner.save_pretrained(out, save_profile=True)  # over the folder of an earlier save: replaced whole
    assert not (profile / "stale.txt").exists() and (profile / "importance_scores.json").is_file()

    fresh = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="org/dense")
    fresh.load_scores(out, data_dir=data_dir)
    assert sorted(fresh.scores.tasks) == ["mine", "rte"]
    again = fresh.prune(sparsity=0.3).state_dict()
    assert again.keys() == expected.keys()
    assert all(torch.equal(again[k], v) for k, v in expected.items())

    pruner.save_pretrained(out)  # the same directory, without it: an earlier save's profile does not outlive it
    assert not profile.exists() and "diet_profile" not in (out / "README.md").read_text()
    assert AutoModelForCausalLM.from_pretrained(out).config.pruning == pruner.pruned_model.config.pruning
    with pytest.raises(FileNotFoundError, match=f"No importance scores in {out}: it holds a model and no profile"):
        fresh.load_scores(out)
    with pytest.raises(ValueError, match="`save_profile` must be a bool, got 'yes'"):
        pruner.save_pretrained(tmp_path / "x", save_profile="yes")
    assert not (tmp_path / "x").exists()


def test_saved_scores_prune_without_forward_pass(tmp_path, monkeypatch):
    dense = tiny_dense_model("gemma2")
    batches = [
        {"input_ids": random_batch(2, 8, seed=i), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
        for i in range(2)
    ]
    pruner = DietPruner(dense).profile({"a": batches, "b": batches[:1]}, disable_progress=True)
    first = pruner.prune(sparsity=0.3, reconstruct=False)  # the default reconstructs, on the calibration data
    pruner.save_scores(tmp_path / "scores")
    again = DietPruner(dense)
    monkeypatch.setattr("diet_hf.profiling.collect_activation_stats", None)  # any forward pass would now fail
    monkeypatch.setattr("diet_hf.profiling.collect_input_moments", None)
    second = again.load_scores(tmp_path / "scores").prune(sparsity=0.3, reconstruct=False)
    assert again.plan.to_dict() == pruner.plan.to_dict()
    assert again.scores.provenance == pruner.scores.provenance
    ids = random_batch()
    with torch.no_grad():
        assert torch.equal(first(ids).logits, second(ids).logits)


def test_prune_before_profile():
    with pytest.raises(RuntimeError, match=r"call `profile\(\)` \(or `load_scores\(\)`\) before `prune\(\)`"):
        DietPruner(tiny_dense_model("gemma2")).prune(sparsity=0.2)


def test_unsupported_model_is_refused(tmp_path):
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match=r"Unsupported `model_type` 'llama'; diet-hf supports gemma2, gemma3_text"):
        DietPruner(llama)
    llama.config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Unsupported `model_type` 'llama'"):
        DietPruner.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match=r"`model` must be a transformers Gemma-2 / Gemma 3 model .*got Linear"):
        DietPruner(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_an_already_pruned_model_is_refused(family):
    """Pruning a pruned model again would profile and slice the wrong classes: the pruner asks for the dense one."""
    pruned = uneven_pruned_model(family)
    with pytest.raises(
        ValueError,
        match=rf"`model` is already pruned \(`model_type` '{pruned.config.model_type}'\); pass the dense "
        rf"`{family}` model\.",
    ):
        DietPruner(pruned)
    pruned.config.pruning = {"base_model": "org/dense"}  # what `prune()` records
    with pytest.raises(ValueError, match=rf"pass the dense `{family}` model it was pruned from, org/dense \(`load_"):
        DietPruner(pruned)


def test_scores_for_another_model(tmp_path):
    small = tiny_dense_model("gemma2")
    batches = [{"input_ids": random_batch(), "attention_mask": torch.ones(2, 10, dtype=torch.long)}]
    DietPruner(small).profile({"a": batches}, disable_progress=True).save_scores(tmp_path / "scores")
    other = tiny_dense_model("gemma2", intermediate_size=48)
    with pytest.raises(ValueError, match=r"importance scores were made for another model"):
        DietPruner(other).load_scores(tmp_path / "scores")
    gemma3 = tiny_dense_model("gemma3_text")
    with pytest.raises(ValueError, match=r"made for `model_type` 'gemma2', not 'gemma3_text'"):
        DietPruner(gemma3).load_scores(tmp_path / "scores")


def test_unknown_task_and_bad_arguments(data_dir):
    pruner = DietPruner(tiny_dense_model("gemma2"))
    with pytest.raises(ValueError, match=r"Unknown task 'squad'; known tasks"):
        pruner.profile(tasks=["squad"], data_dir=data_dir)
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer, got 0"):
        pruner.profile(tasks=["rte"], batch_size=0, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"needs a tokenizer"):
        pruner.profile(tasks=["rte"], num_samples=2, data_dir=data_dir, disable_progress=True)
    ids = random_batch(2, 8)
    with pytest.raises(TypeError, match=r"Custom task 'a': token batch 0 must be a mapping .* got Tensor"):
        pruner.profile({"a": [ids]})
    with pytest.raises(TypeError, match=r"token batch 1 must be a mapping with `input_ids` and `attention_mask`"):
        pruner.profile({"a": [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}, {"input_ids": ids}]})
    with pytest.raises(ValueError, match=r"token batch 0 needs 2-D .* got \(8,\) and \(2, 8\)"):
        pruner.profile({"a": [{"input_ids": ids[0], "attention_mask": torch.ones_like(ids)}]})
    with pytest.raises(ValueError, match=r"Custom task 'a': no token batches"):
        pruner.profile({"a": iter([])})
    # rows with a `text` field: named as such, with the texts to pass
    with pytest.raises(TypeError, match=r"token batch 0 .* got a mapping of \['text'\]; .* `\[row\['text'\] for row"):
        pruner.profile({"a": [{"text": "a text"}]})
    with pytest.raises(
        TypeError, match=r"`tasks` must be task names, a dict of task name to data, or a `Task`, got int"
    ):
        pruner.profile(tasks=3)
    with pytest.raises(ValueError, match=r"`tokenizer` must be a transformers tokenizer, got str"):
        DietPruner(tiny_dense_model("gemma2"), "google/gemma-2-2b")
    # a location that is not a path: named (a bare `os.fspath` error before)
    with pytest.raises(TypeError, match=r"`model_id_or_path` must be a Hub repository id or a local directory"):
        DietPruner.from_pretrained(None)
    with pytest.raises(TypeError, match=r"`data_dir` must be a path \(a `str` or `os.PathLike`\), got int: 3"):
        pruner.profile(tasks=["rte"], data_dir=3)
    with pytest.raises(TypeError, match=r"`directory` must be a path .* got NoneType"):
        pruner.load_scores(None)
    pruner.profile({"a": [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]}, disable_progress=True)
    with pytest.raises(TypeError, match=r"prune\(options=\) must be a `diet_hf.options.PruneOptions`, got dict: pass"):
        pruner.prune(sparsity=0.2, options={"merge": "mean"})
    from diet_hf import build_pruned_model

    with pytest.raises(TypeError, match=r"`plan` must be a `PruningPlan` .*, got str: read a saved one with"):
        build_pruned_model(tiny_dense_model("gemma2"), "pruned/diet_pruning.json")


def test_failed_score_save_leaves_nothing(tmp_path, monkeypatch):
    scores = ImportanceScores({"a": torch.ones(2, 4)}, {"a": torch.ones(2, 2)})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(diet_hf.importance, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        scores.save_pretrained(tmp_path / "scores")
    assert list(tmp_path.iterdir()) == []


def test_from_pretrained_with_device_map(tmp_path, data_dir, tiny_tokenizer):
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    dense.save_pretrained(tmp_path / "dense")
    tiny_tokenizer.save_pretrained(tmp_path / "dense")
    pruner = DietPruner.from_pretrained(tmp_path / "dense", device_map="auto", dtype=torch.float32)
    pruned = pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.2)
    assert pruner.scores.provenance["model_id"] == str(tmp_path / "dense")
    assert torch.isfinite(pruned(random_batch(vocab_size=len(tiny_tokenizer))).logits).all()


def test_the_pruned_model_is_dispatched_on_the_dense_models_device_map():
    """The pruned model is dispatched on the dense model's `hf_device_map` as `from_pretrained` dispatches a split
    model (accelerate's `dispatch_model`: on several GPUs, the hooks that move inputs between devices). The map is set
    by hand here, as transformers sets it on a split load (this machine has one device, the CPU, so only the map and
    the numbers are checked: the same logits as without a map)."""
    batch = random_batch()
    expected = build_pruned_model(tiny_dense_model("gemma2"), _half_plan(tiny_dense_model("gemma2").config))(batch)
    dense = tiny_dense_model("gemma2")
    modules = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "model.rotary_emb", "lm_head"]
    dense.hf_device_map = dict.fromkeys(modules, "cpu")
    pruned = build_pruned_model(dense, _half_plan(dense.config))
    assert pruned.hf_device_map == dense.hf_device_map
    torch.testing.assert_close(pruned(batch).logits, expected.logits)


def _half_plan(config):
    """Every layer keeps the even MLP channels and every head."""
    from diet_hf.plan import PruningPlan

    plan = PruningPlan.keep_all(config)
    plan.mlp_kept_indices = [list(range(0, config.intermediate_size, 2))] * config.num_hidden_layers
    plan.__post_init__()
    return plan


def test_a_quantized_model_is_refused_before_any_work(caplog):
    """Pruning slices and refits full-precision weights: a linear layer holding int8 weights (as bitsandbytes' 8-bit
    layers hold), or a model a transformers quantizer loaded (`hf_quantizer`), is refused by `check_targets`,
    `prune()` and `build_pruned_model`, and `DietPruner` warns when it is given one."""
    model = tiny_dense_model("gemma2")
    down = model.model.layers[1].mlp.down_proj
    down.weight = torch.nn.Parameter(down.weight.detach().mul(100).to(torch.int8), requires_grad=False)
    with caplog.at_level(logging.WARNING, logger="diet_hf.pruner"):
        pruner = DietPruner(model)
    assert "The model is quantized" in caplog.text
    quantized = r"`model` is quantized \(e\.g\. `model\.layers\.1\.mlp\.down_proj`\): .* bfloat16 or float32"
    with pytest.raises(ValueError, match=quantized):
        pruner.check_targets(sparsity=0.2)
    with pytest.raises(ValueError, match=quantized):
        pruner.prune(sparsity=0.2)
    with pytest.raises(ValueError, match=quantized):
        build_pruned_model(model)
    loaded_quantized = tiny_dense_model("gemma2")
    loaded_quantized.hf_quantizer = object()  # what transformers sets on a model its quantizer loaded
    with pytest.raises(ValueError, match=r"`model` is quantized: pruning slices and refits"):
        build_pruned_model(loaded_quantized)
    assert build_pruned_model(tiny_dense_model("gemma2")) is not None  # full precision: no complaint


def test_a_model_with_unmerged_peft_adapters_is_refused_and_the_merged_one_prunes():
    """A dense model fine-tuned with LoRA and not yet merged: pruning would cut the base weights and drop the adapters
    (it failed with a `KeyError` or an `AttributeError` before). Refused, naming `model` and the merge, whether PEFT
    wrapped the model (`get_peft_model`) or kept its class (`inject_adapter_in_model`, here after the pruner was
    made: `check_targets`, `prune()` and `build_pruned_model` refuse it too). The merged model prunes."""
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    config = LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False)
    refused = r"`model` holds unmerged PEFT adapters \(2 layers, e\.g\. `[\w.]*model\.layers\.0\.mlp\.down_proj`\)"
    wrapped = get_peft_model(tiny_dense_model("gemma2"), config)
    with pytest.raises(ValueError, match=refused + r": pruning cuts the base weights alone .*`merge_and_unload\(\)`"):
        DietPruner(wrapped)
    model = tiny_dense_model("gemma2")
    pruner = DietPruner(model)
    inject_adapter_in_model(config, model)
    with pytest.raises(ValueError, match=refused):
        pruner.check_targets(sparsity=0.2)
    with pytest.raises(ValueError, match=refused):
        pruner.prune(sparsity=0.2)
    with pytest.raises(ValueError, match=refused):
        build_pruned_model(model)
    merged = wrapped.merge_and_unload()
    batches = [{"input_ids": random_batch(2, 8), "attention_mask": torch.ones(2, 8, dtype=torch.long)}]
    pruned = DietPruner(merged).profile({"a": batches}, disable_progress=True).prune(sparsity=0.25)
    assert sum(layer.mlp.down_proj.in_features for layer in pruned.model.layers) < 2 * merged.config.intermediate_size


def test_a_lora_adapter_checkpoint_loads_as_its_base_with_the_adapter_merged(tmp_path, data_dir, tiny_tokenizer):
    """`AutoModelForCausalLM.from_pretrained(ADAPTER)` loads the base model an adapter names with the adapter
    applied; so does `DietPruner.from_pretrained`, merging it (pruning cuts plain weights), where it failed in
    `AutoConfig` ("Unrecognized model") before. The tokenizer is the adapter's, else the base model's; the record
    names the adapter. A prompt-tuning adapter, which changes no weight, is refused, naming its base."""
    from peft import PromptTuningConfig, get_peft_model

    adapter, merged = save_lora_adapter(tmp_path, tiny_tokenizer)
    pruner = DietPruner.from_pretrained(adapter)
    assert type(pruner.model) is type(merged) and not [
        m for m in pruner.model.modules() if "lora" in type(m).__name__.lower()
    ]
    torch.testing.assert_close(pruner.model.state_dict(), merged.state_dict(), rtol=0, atol=0)
    ids = random_batch(vocab_size=merged.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(pruner.model(ids).logits, merged(ids).logits)
    assert pruner.tokenizer("Answer: yes").input_ids == tiny_tokenizer("Answer: yes").input_ids  # the base's
    pruner.profile(["rte"], num_samples=3, data_dir=data_dir, disable_progress=True)
    expected = DietPruner(merged, tiny_tokenizer).profile(
        ["rte"], num_samples=3, data_dir=data_dir, disable_progress=True
    )
    torch.testing.assert_close(pruner.scores.mlp["rte"], expected.scores.mlp["rte"])
    pruned = pruner.prune(sparsity=0.25)
    assert pruned.config.pruning["base_model"] == str(adapter)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, expected.prune(sparsity=0.25)(ids).logits)
    # an adapter saved with its tokenizer (as a fine-tune's output usually is) keeps it
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_tokens(["<mine>"])
    tokenizer.save_pretrained(adapter)
    assert len(DietPruner.from_pretrained(adapter).tokenizer) == len(tiny_tokenizer) + 1
    prompt = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tmp_path / "dense"),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2),
    )
    prompt.save_pretrained(tmp_path / "gemma2-prompt")  # transformers 4.57 read a default Gemma2Config of the name
    refused = rf"holds a PEFT PROMPT_TUNING prompt-learning adapter .* Pass its base model, {tmp_path / 'dense'}\."
    with pytest.raises(ValueError, match=refused):
        DietPruner.from_pretrained(tmp_path / "gemma2-prompt")


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_a_model_bitsandbytes_loaded_is_refused_before_any_work(bits, tmp_path):
    """The same refusal for a dense model loaded through `BitsAndBytesConfig` itself (bitsandbytes runs on the CPU),
    from `DietPruner.from_pretrained`, whose keyword arguments go to transformers."""
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    tiny_dense_model("gemma3_text", hidden_size=128, intermediate_size=256, head_dim=64).save_pretrained(tmp_path)
    bits = BitsAndBytesConfig(load_in_4bit=True) if bits == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
    pruner = DietPruner.from_pretrained(tmp_path, quantization_config=bits)
    with pytest.raises(ValueError, match=r"`model` is quantized.*bfloat16 or float32"):
        pruner.check_targets(sparsity=0.2)
    with pytest.raises(ValueError, match=r"`model` is quantized.*bfloat16 or float32"):
        pruner.prune(sparsity=0.2)


def test_an_offloaded_model_profiles_and_is_pruned_from_its_saved_profile(tmp_path, data_dir, tiny_tokenizer, caplog):
    """A `device_map` with "disk" modules (or, beside a GPU, "cpu" ones) keeps their weights on the meta device and
    loads them per forward pass: profiling works, pruning is refused before any work (it used to fail inside the
    surgery, after the profile), and the way out the error gives, the saved profile pruned where the model fits
    whole, gives the model that profiling it in memory gives."""
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    dense.save_pretrained(tmp_path / "dense")
    tiny_tokenizer.save_pretrained(tmp_path / "dense")
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk"}
    device_map.update({"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"})
    with caplog.at_level(logging.WARNING, logger="diet_hf.pruner"):
        offloaded = DietPruner.from_pretrained(
            tmp_path / "dense", device_map=device_map, offload_folder=str(tmp_path / "offload"), dtype=torch.float32
        )
    assert "weights of the model are offloaded" in caplog.text
    offloaded_error = r"`model` has \d+ weights offloaded to the meta device \(e\.g\. `model\.layers\.1\..*load_scores"
    with pytest.raises(ValueError, match=offloaded_error):
        offloaded.check_targets(sparsity=0.2)  # what `diet-hf prune` calls before profiling
    calibration = {"tasks": ["rte"], "num_samples": 3, "data_dir": data_dir, "disable_progress": True}
    offloaded.profile(**calibration)
    with pytest.raises(ValueError, match=offloaded_error):
        offloaded.prune(sparsity=0.2)
    with pytest.raises(ValueError, match=offloaded_error):
        build_pruned_model(offloaded.model)
    offloaded.save_scores(tmp_path / "scores")
    whole = DietPruner.from_pretrained(tmp_path / "dense", dtype=torch.float32)
    whole.load_scores(tmp_path / "scores", data_dir=data_dir)
    in_memory = DietPruner.from_pretrained(tmp_path / "dense", dtype=torch.float32).profile(**calibration)
    batch = random_batch(vocab_size=len(tiny_tokenizer))
    torch.testing.assert_close(
        whole.prune(sparsity=0.2, disable_progress=True)(batch).logits,
        in_memory.prune(sparsity=0.2, disable_progress=True)(batch).logits,
    )


def _profiled(family="gemma2", channel_stats=True):
    dense = tiny_dense_model(family)
    batches = [
        {"input_ids": random_batch(2, 8, seed=i), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
        for i in range(2)
    ]
    return DietPruner(dense).profile({"a": batches, "b": batches[:1]}, channel_stats=channel_stats)


def test_a_new_prune_lets_the_previous_pruned_model_go_before_surgery(pruned_models_alive_at_surgery):
    pruner = _profiled()
    pruner.prune(sparsity=0.2)  # not held by the caller: the pruner's reference alone must not keep it
    held = pruner.prune(sparsity=0.3)
    pruner.prune(sparsity=0.4)
    assert pruned_models_alive_at_surgery == [0, 0, 1] and held is not None
    assert pruner.pruned_model is not held  # the last one, for save_pretrained


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_an_inplace_prune_gives_the_same_model_and_consumes_the_dense_one(family, tmp_path):
    reference = _profiled(family).prune(sparsity=0.4, attention_ratio=1)  # reconstruction, BOS anchor, heads cut
    pruner = _profiled(family)
    pruned = pruner.prune(sparsity=0.4, attention_ratio=1, inplace=True)
    ids = random_batch(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, reference(ids).logits, rtol=0, atol=0)
    assert pruned.config.pruning["total_parameters"] == reference.config.pruning["total_parameters"]
    pruner.save_pretrained(tmp_path / "pruned")  # the pruned model stays for saving and pushing
    with pytest.raises(RuntimeError, match=r"pruned in place \(`prune\(inplace=True\)`\) and is gone"):
        pruner.prune(sparsity=0.2)
    with pytest.raises(RuntimeError, match="Cannot profile"):
        pruner.profile({"a": [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]})
    with pytest.raises(ValueError, match="`inplace` must be a bool"):
        _profiled(family).prune(sparsity=0.2, inplace="yes")


def test_the_reconstruction_shows_its_passes_and_solves_unless_disabled(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the CLI's --quiet sets it for its process
    pruner = _profiled()
    capsys.readouterr()
    pruner.prune(sparsity=0.4, attention_ratio=1)  # heads cut: their o_proj moments take a pass of their own
    shown = capsys.readouterr().err
    assert "reconstruction solves" in shown and "reconstruction:" in shown
    cut = len(pruner.plan.cut_modules())
    assert f"{cut}/{cut}" in shown.split("reconstruction solves")[-1]  # one step per solved module
    pruner.prune(sparsity=0.3, attention_ratio=1, disable_progress=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("recipe", ["uniform_mlp_mean_ls_bos", "paper"])
def test_a_bfloat16_model_prunes_as_its_float32_self(family, recipe):
    # the design's user path loads the dense model in bfloat16: statistics are summed in float32 and the
    # reconstruction solved in float64 either way, so the plan is the same and the weights differ by rounding only
    batches = [
        {"input_ids": random_batch(4, 12, seed=i), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
        for i in range(3)
    ]
    pruned = {}
    for dtype in (torch.float32, torch.bfloat16):
        pruner = DietPruner(tiny_dense_model(family).to(dtype)).profile({"a": batches, "b": batches[:2]})
        pruned[dtype] = (pruner.prune(sparsity=0.3, recipe=recipe), pruner.plan.to_dict())
    (full, full_plan), (half, half_plan) = pruned[torch.float32], pruned[torch.bfloat16]
    assert half_plan == full_plan and {p.dtype for p in half.parameters()} == {torch.bfloat16}
    ids = random_batch(2, 10, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(half(ids).logits.float(), full(ids).logits, rtol=0, atol=0.03)


def test_paper_recipe_is_the_published_method():
    pruner = _profiled()
    pruner.prune(sparsity=0.3, recipe="paper")
    expected = build_plan(pruner.scores, pruner.model.config, sparsity=0.3, **PAPER_PLAN_OPTIONS)
    assert pruner.plan.mlp_kept_indices == expected.mlp_kept_indices
    assert pruner.plan.head_kept_indices == expected.head_kept_indices
    assert pruner.plan.provenance["recipe"] == "paper" and pruner.plan.provenance["score"] == "activation"


def test_contribution_score_weights_activations_by_output_columns():
    pruner = _profiled()
    model = pruner.model
    norms = output_weight_norms(model)
    layer = model.model.layers[1]
    # by hand: column j of down_proj; the o_proj columns of head h (head_dim wide)
    assert torch.allclose(norms["mlp"][1, 5], layer.mlp.down_proj.weight[:, 5].norm())
    head_dim = model.config.head_dim
    assert torch.allclose(norms["heads"][1, 2], layer.self_attn.o_proj.weight[:, 2 * head_dim : 3 * head_dim].norm())
    pruner.prune(sparsity=0.3, recipe="paper", score="contribution")
    weighted = weighted_scores(pruner.scores, norms)
    assert torch.equal(weighted.mlp["a"], pruner.scores.mlp["a"] * norms["mlp"])
    expected = build_plan(weighted, model.config, sparsity=0.3, **PAPER_PLAN_OPTIONS)
    assert pruner.plan.mlp_kept_indices == expected.mlp_kept_indices
    assert pruner.plan.provenance["score"] == "contribution"


def test_explicit_options_override_the_recipe_and_are_recorded():
    pruner = _profiled()
    pruned = pruner.prune(sparsity=0.3, recipe="paper", allocation="uniform", bias_compensation=True)
    assert len(set(pruner.plan.intermediate_size_per_layer)) == 1
    options = pruned.config.pruning["options"]
    assert options["recipe"] == "paper" and options["allocation"] == "uniform" and options["bias_compensation"]
    assert pruned.config.down_proj_bias


def test_recipe_errors():
    pruner = _profiled(channel_stats=False)
    with pytest.raises(ValueError, match=r"`recipe` must be one of \[.*'paper'.*\], got 'best'"):
        pruner.prune(sparsity=0.2, recipe="best")
    with pytest.raises(ValueError, match=r"`score` must be one of \('activation', 'contribution'\), got 'grad'"):
        pruner.prune(sparsity=0.2, score="grad")
    with pytest.raises(ValueError, match=r"`bias_compensation=True` \(passed\) needs per-channel statistics"):
        pruner.prune(sparsity=0.2, bias_compensation=True)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("bias", [False, True])
def test_masks_of_iterative_pruning_compute_the_pruned_model(family, bias):
    pruner = _profiled(family)
    plan = build_plan(pruner.scores, pruner.model.config, sparsity=0.4)
    fill = pruner.scores.channel_means() if bias else None
    pruned = build_pruned_model(pruner.model, plan, channel_means=fill)
    ids = random_batch()
    with torch.no_grad(), _ChannelMasks(pruner.model, pruner.family, plan, fill):
        masked = pruner.model(ids).logits
    with torch.no_grad():
        torch.testing.assert_close(masked, pruned(ids).logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(pruner.model(ids).logits, masked)  # the hooks are gone again


def test_iterative_pruning_reprofiles_and_nests():
    pruner = _profiled()
    one_shot = pruner.prune(sparsity=0.4, recipe="paper", steps=1)
    one_plan = pruner.plan
    calls = []
    original = pruner._reprofile

    def spy(plan, *args, **kwargs):
        calls.append(plan.sparsity)
        return original(plan, *args, **kwargs)

    pruner._reprofile = spy
    pruned = pruner.prune(sparsity=0.4, recipe="paper", steps=3, bias_compensation=True)
    assert calls == pytest.approx([0.4 / 3, 0.8 / 3], abs=0.01)
    assert abs(pruner.plan.sparsity - 0.4) <= 0.01
    assert pruner.plan.provenance["steps"] == 3 and pruner.plan.provenance["sparsity"] == 0.4
    assert pruned.config.pruning["options"]["steps"] == 3
    assert pruner.plan.mlp_kept_indices != one_plan.mlp_kept_indices  # the re-profiles changed the choice
    assert one_shot.config.pruning["options"]["steps"] == 1


def test_pruning_or_saving_scores_before_profiling_says_what_to_call(tmp_path):
    pruner = DietPruner(tiny_dense_model("gemma2"))
    with pytest.raises(RuntimeError, match=r"call `profile\(\)` \(or `load_scores\(\)`\) before `prune\(\)`"):
        pruner.prune(sparsity=0.2)
    with pytest.raises(RuntimeError, match=r"before `save_scores\(\)`"):
        pruner.save_scores(tmp_path / "scores")
    assert not (tmp_path / "scores").exists()


def test_iterative_pruning_errors(tmp_path):
    pruner = _profiled()
    with pytest.raises(ValueError, match=r"`steps` must be a positive integer, got 0"):
        pruner.prune(sparsity=0.2, steps=0)
    with pytest.raises(ValueError, match=r"`standardize` does not"):
        pruner.prune(sparsity=0.2, steps=2, mlp_normalize="standardize")
    with pytest.raises(ValueError, match=r"`tasks` must name at least one profiled task, got an empty list"):
        pruner.prune(sparsity=0.2, tasks=[])
    with pytest.raises(ValueError, match=r"`tasks` must be profiled tasks \(\['a', 'b'\]\), got \['c'\]"):
        pruner.prune(sparsity=0.2, tasks=["a", "c"])
    assert pruner.prune(sparsity=0.2, tasks="a").config.pruning["tasks"] == ["a"]  # one name, as profile() takes
    for steps in (1, 2):  # a sparsity that is not a number is named before the steps scale it
        with pytest.raises(ValueError, match=r"`sparsity` must be in \(0, 1\), got '0.2'"):
            pruner.prune(sparsity="0.2", steps=steps)
        with pytest.raises(ValueError, match=r"`sparsity` must be in \(0, 1\), got True"):
            pruner.prune(sparsity=True, steps=steps)
    pruner.save_scores(tmp_path / "scores")
    loaded = DietPruner(pruner.model).load_scores(tmp_path / "scores")
    with pytest.raises(ValueError, match=r"`steps=2` profiles again .* not profiled in this session"):
        loaded.prune(sparsity=0.2, steps=2)


# Plans pinned by a hash of their kept indices. The "paper" hashes equal those of diet-hf before recipes existed
# (`prune(sparsity=s)` at commit 56a642e): a refactoring that changes a plan fails here.
PINNED_PLANS = {
    ("gemma2", 0.2, "paper"): "97dabc53e21cb75f",
    ("gemma2", 0.4, "paper"): "2ca15520a66662e0",
    ("gemma3_text", 0.2, "paper"): "0307190451cce7a3",
    ("gemma3_text", 0.4, "paper"): "c8fd376a81c02d3d",
    ("gemma2", 0.2, "uniform+bias"): "e28e9e1daac2c1c1",
    ("gemma2", 0.4, "uniform+bias"): "400412581ed68647",
    ("gemma3_text", 0.2, "uniform+bias"): "5a549343d1a1b671",
    ("gemma2", 0.2, "balanced"): "e28e9e1daac2c1c1",  # the 0.1 default: uniform allocation + bias compensation
    ("gemma3_text", 0.2, "balanced"): "5a549343d1a1b671",
    # "uniform_mlp_mean" ("uniform_mlp" with the mean-rank merge, widths rounded to multiples of 64: on these tiny
    # models of width 64, multiples of 4): the default; without the rounding, with these two nested profiles the
    # merges order alike, so "uniform_mlp" (the vote) pins the same plans as "default_round1";
    # `test_default_recipe_merges_by_mean_rank` tells the merges apart
    ("gemma2", 0.2, "default"): "64868f04784e6fc6",
    ("gemma3_text", 0.4, "default"): "33ac86ed1e63895b",
    ("gemma2", 0.2, "default_round1"): "9c9ef00b1d759ba6",
    ("gemma3_text", 0.4, "default_round1"): "d003175f0f13fd58",
    ("gemma2", 0.2, "uniform_mlp"): "9c9ef00b1d759ba6",
    ("gemma2", 0.2, "contribution+cap"): "fa5ea39cbacaaa06",
    ("gemma3_text", 0.4, "contribution+cap"): "37e929690e505c8c",
}
PINNED_OPTIONS = {
    "default": {},
    "default_round1": {"round_to": 1},
    "uniform_mlp": {"recipe": "uniform_mlp"},
    "balanced": {"recipe": "balanced"},
    "paper": {"recipe": "paper"},
    "uniform+bias": {"recipe": "paper", "allocation": "uniform", "bias_compensation": True},
    "contribution+cap": {"recipe": "paper", "score": "contribution", "layer_sparsity_cap": 1.5},
}


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_plans_are_pinned(family):
    pruner = _profiled(family)
    for (pinned_family, sparsity, name), expected in PINNED_PLANS.items():
        if pinned_family != family:
            continue
        pruner.prune(sparsity=sparsity, **PINNED_OPTIONS[name])
        plan = pruner.plan
        kept = [plan.mlp_kept_indices, plan.head_kept_indices, plan.kv_head_kept_indices]
        assert hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16] == expected, (family, sparsity, name)
        if name == "default":  # the default keeps every head; the MLP width pays the whole budget, in multiples
            assert plan.num_attention_heads_per_layer == [pruner.model.config.num_attention_heads] * len(kept[1])
            assert abs(plan.sparsity - sparsity) < 0.02
            assert all(width % 4 == 0 for width in plan.intermediate_size_per_layer)


@pytest.mark.parametrize("method", ["flap", "wanda_sp", "magnitude", "random"])
def test_baseline_methods_through_the_pipeline(method):
    pruner = _profiled()
    pruned = pruner.prune(sparsity=0.3, method=method)
    expected = build_plan(
        baseline_scores(method, pruner.model, pruner.scores),
        pruner.model.config,
        sparsity=0.3,
        **BASELINE_PRUNE_OPTIONS[method],
    )
    assert pruner.plan.mlp_kept_indices == expected.mlp_kept_indices
    assert pruner.plan.head_kept_indices == expected.head_kept_indices
    record = pruned.config.pruning
    assert record["method"] == {"flap": "FLAP", "wanda_sp": "Wanda-sp"}.get(method, method)
    assert record["options"]["recipe"] is None and record["tasks"] == ["a", "b"]
    assert pruned.config.down_proj_bias == (method == "flap")  # FLAP comes with its bias compensation
    with pytest.raises(ValueError, match=r"`score` and `steps` belong to DIET"):
        pruner.prune(sparsity=0.3, method=method, steps=2)
    with pytest.raises(ValueError, match=r"`method` must be one of \('diet', 'random'"):
        pruner.prune(sparsity=0.3, method="sparsegpt")


def test_prune_takes_an_options_object_and_names_unknown_options():
    from diet_hf.options import PruneOptions

    pruner = _profiled()
    by_keywords = pruner.prune(sparsity=0.3, allocation="uniform", attention_ratio=0.0)
    by_object = pruner.prune(sparsity=0.3, options=PruneOptions(allocation="uniform", attention_ratio=0.0))
    assert by_keywords.config.intermediate_size_per_layer == by_object.config.intermediate_size_per_layer
    record = by_object.config.pruning["options"]
    assert list(record) == ["recipe", *PruneOptions.names()]
    assert record["attention_ratio"] == 0.0 and record["allocation"] == "uniform"
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['alocation'\]"):
        pruner.prune(sparsity=0.3, alocation="uniform")
    with pytest.raises(ValueError, match=r"`allocation` must be one of \('global', 'uniform'\), got 'even'"):
        pruner.prune(sparsity=0.3, allocation="even")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"keep_layers": 3}, r"`keep_layers` must be a list of layer indices, got 3"),
        ({"keep_layers": [0, True]}, r"`keep_layers` must be a list of layer indices, got \[0, True\]"),
        (
            {"task_weights": [("a", 1.0)]},
            r"`task_weights` must be a dict of task name to weight, got \[\('a', 1.0\)\]",
        ),
        ({"attention_ratio": -1}, r"`attention_ratio` must be a number >= 0, got -1"),
        ({"min_mlp_fraction": 1.5}, r"`min_mlp_fraction` must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_prune_options_name_the_bad_field(values, message):
    from diet_hf.options import PruneOptions

    with pytest.raises(ValueError, match=message):
        PruneOptions(**values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": 1.0}, r"`seed` must be an integer, got 1.0"),
        ({"seed": True}, r"`seed` must be an integer, got True"),
        ({"moments_memory_gib": 0}, r"`moments_memory_gib` must be a number > 0, got 0"),
        ({"channel_stats": "yes"}, r"`channel_stats` must be True or False, got 'yes'"),
        # one token is the BOS alone: every text the same state
        (
            {"max_length": 1},
            r"`max_length` must be an integer >= 2 \(BOS and at least one token of each text\), got 1",
        ),
    ],
)
def test_profile_options_name_the_bad_field(values, message):
    from diet_hf.options import ProfileOptions

    with pytest.raises(ValueError, match=message):
        ProfileOptions(**values)


def test_a_registered_scoring_method_prunes_through_the_pipeline():
    from diet_hf.methods import METHODS, ScoringMethod, register_method

    def reversed_diet(model, profile):  # DIET's scores turned upside down: a method the pipeline has never seen
        return ImportanceScores(
            {"rev": -profile.mlp["a"]}, {"rev": -profile.heads["a"]}, {"model_type": model.config.model_type}
        )

    register_method(ScoringMethod("reverse", "Reverse", reversed_diet, plan_options={"score": "reverse"}))
    try:
        pruner = _profiled()
        pruned = pruner.prune(sparsity=0.3, method="reverse")
        assert pruned.config.pruning["method"] == "Reverse" and pruned.config.pruning["paper"] is None
        diet_keep = set(pruner.prune(sparsity=0.3, allocation="global").diet_plan.mlp_kept_indices[0])
        assert pruned.diet_plan.mlp_kept_indices[0] != sorted(diet_keep)
    finally:
        METHODS.pop("reverse")


def test_profile_options_as_one_object_or_as_keywords(data_dir, tiny_tokenizer):
    from diet_hf.options import ProfileOptions

    pruner = DietPruner(tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer)), tiny_tokenizer)
    with pytest.raises(ValueError, match="`num_samples` must be a positive integer, got 0"):
        pruner.profile(["rte"], num_samples=0, data_dir=data_dir)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['samples'\]; its options are"):
        pruner.profile(["rte"], samples=3, data_dir=data_dir)
    by_object = pruner.profile(["rte"], options=ProfileOptions(num_samples=3, seed=1), data_dir=data_dir).scores
    by_keywords = pruner.profile(["rte"], num_samples=3, seed=1, data_dir=data_dir).scores
    assert by_object.provenance == by_keywords.provenance and by_object.provenance["num_samples"] == 3
    assert torch.equal(by_object.mlp["rte"], by_keywords.mlp["rte"])


def test_from_pretrained_of_a_directory_without_tokenizer_files(tmp_path, caplog):
    tiny_dense_model("gemma2").save_pretrained(tmp_path / "dense")
    with caplog.at_level("WARNING", logger="diet_hf.pruner"):
        pruner = DietPruner.from_pretrained(tmp_path / "dense")
    assert pruner.tokenizer is None
    assert "has no tokenizer files" in caplog.text
    with pytest.raises(ValueError, match="needs a tokenizer"):
        pruner.profile(["rte"], num_samples=2)


def test_from_pretrained_reads_a_local_subfolder_and_refuses_a_hub_one(tmp_path, data_dir, tiny_tokenizer):
    """transformers' `subfolder=`: of a local directory, the checkpoint in that folder, the record naming it (it was
    refused as "no config.json" in the directory above before); of a Hub repository refused before any request, with
    the download that gives a path to pass."""
    save_dense_checkpoint(tmp_path / "repo" / "step-100", "gemma2", tiny_tokenizer)
    pruner = DietPruner.from_pretrained(tmp_path / "repo", subfolder="step-100")
    assert pruner.tokenizer is not None and pruner.model_id == str(tmp_path / "repo" / "step-100")
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "repo", subfolder="step-100")
    torch.testing.assert_close(pruner.model.state_dict(), expected.state_dict(), rtol=0, atol=0)
    pruner.profile(["rte"], num_samples=2, data_dir=data_dir, disable_progress=True)
    assert pruner.prune(sparsity=0.25).config.pruning["base_model"] == str(tmp_path / "repo" / "step-100")
    with pytest.raises(
        ValueError, match=r"`subfolder` is supported for a local directory only; org/repo is read as a Hub"
    ):
        DietPruner.from_pretrained("org/repo", subfolder="step-100")


def test_default_recipe_merges_by_mean_rank():
    from diet_hf.recipes import DEFAULT_RECIPE, RECIPES

    assert DEFAULT_RECIPE == "uniform_mlp_mean_ls_bos"
    assert RECIPES["uniform_mlp_mean"] == {**RECIPES["uniform_mlp"], "merge": "mean", "round_to": 64}
    assert RECIPES["uniform_mlp_mean_ls"] == {**RECIPES["uniform_mlp_mean"], "reconstruct": True}
    assert RECIPES[DEFAULT_RECIPE] == {**RECIPES["uniform_mlp_mean_ls"], "anchor_bos": True}
    dense = tiny_dense_model("gemma2")
    g = torch.Generator().manual_seed(5)
    shape = (dense.config.num_hidden_layers, dense.config.intermediate_size)
    heads = (dense.config.num_hidden_layers, dense.config.num_attention_heads)
    scores = ImportanceScores(
        {t: torch.rand(shape, generator=g) for t in "abc"}, {t: torch.rand(heads, generator=g) for t in "abc"}
    )
    pruner = DietPruner(dense)
    pruner.scores = scores
    # the same widths as the vote's: the merge differs (no calibration data here to reconstruct from)
    pruner.prune(sparsity=0.3, bias_compensation=False, round_to=1, reconstruct=False)
    by_mean = pruner.plan.mlp_kept_indices
    assert pruner.plan.provenance["merge"] == "mean"
    pruner.prune(sparsity=0.3, recipe="uniform_mlp", bias_compensation=False)
    assert pruner.plan.provenance["merge"] == "vote" and pruner.plan.mlp_kept_indices != by_mean


def test_check_targets_refuses_before_any_profile_what_prune_would_refuse(data_dir, tiny_tokenizer):
    from diet_hf import DietPruner

    pruner = DietPruner(tiny_dense_model("gemma3_text"), tiny_tokenizer)
    pruner.check_targets(sparsity=0.5)
    with pytest.raises(ValueError, match=r"`sparsity`=0.95 is out of reach of these options"):
        pruner.check_targets(sparsity=0.95)
    pruner.check_targets(sparsity=0.95, attention_ratio=1.0, allow_sublayer_removal=True)
    with pytest.raises(ValueError, match=r"`mlp_sparsity`=0.9 is out of reach.*layers \[0\] are kept whole"):
        pruner.check_targets(mlp_sparsity=0.9, keep_layers=[0], recipe="paper")
    with pytest.raises(TypeError, match=r"check_targets\(\) got unexpected keyword argument\(s\) \['sparsty'\]"):
        pruner.check_targets(sparsty=0.2)
    pruner.profile(tasks=["rte"], num_samples=2, data_dir=data_dir, disable_progress=True)
    with pytest.raises(ValueError, match=r"`sparsity`=0.95 is out of reach of these options"):
        pruner.prune(sparsity=0.95)


def test_profile_on_your_own_multiple_choice_questions(tiny_tokenizer):
    """Your own questions calibrate as their texts (context and gold choice) do."""
    from diet_hf.tasks import multiple_choice_task

    questions = [
        {"context": "Question: what is it?\nAnswer:", "choices": ["yes", "no"], "label": 1},
        {"context": "The cat", "choices": ["sat", "ran", "is"], "label": 0},
        {"context": "True or False?", "choices": ["True", "False"], "label": 0},
    ]
    texts = ["Question: what is it?\nAnswer: no", "The cat sat", "True or False? True"]
    dense = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    task = multiple_choice_task("mine", questions)
    profiles = [
        DietPruner(dense, tiny_tokenizer).profile(tasks, disable_progress=True).scores
        for tasks in ({"mine": texts}, {"mine": task}, [task], task)  # in a list or alone: under its own name
    ]
    for profile in profiles[1:]:
        assert list(profile.mlp) == ["mine"]
        for layer, (a, b) in enumerate(zip(profile.mlp["mine"], profiles[0].mlp["mine"])):
            assert torch.equal(a, b), layer


def test_profiling_many_texts_of_your_own_says_all_are_read(tiny_tokenizer, caplog):
    import logging

    dense = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    texts = [f"text number {i}" for i in range(31)]
    with caplog.at_level(logging.WARNING, logger="diet_hf.pruner"):
        DietPruner(dense, tiny_tokenizer).profile({"mine": texts}, num_samples=3, disable_progress=True)
    assert (
        "Task 'mine': all 31 of your texts are profiled (`num_samples`=3 applies to registered tasks)" in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diet_hf.pruner"):
        DietPruner(dense, tiny_tokenizer).profile({"mine": texts}, num_samples=4, disable_progress=True)
    assert "your texts are profiled" not in caplog.text


def test_profile_on_conversations_renders_them_with_the_chat_template(tiny_tokenizer):
    """Conversations (a list of message lists, or a dataset's or a stream's `messages` column) profile as the texts the
    tokenizer's chat template renders; without a tokenizer the error says what is needed."""
    import datasets
    from conftest import chat_tokenizer

    from diet_hf.tasks import chat_text

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    conversations = [
        [{"role": "user", "content": "Question: what is it?"}, {"role": "assistant", "content": "yes"}],
        [{"role": "user", "content": "True or False?"}, {"role": "assistant", "content": "False"}],
    ]
    texts = [chat_text(tokenizer, m) for m in conversations]
    dense = tiny_dense_model("gemma3_text", vocab_size=len(tokenizer))
    dataset = datasets.Dataset.from_list([{"messages": m} for m in conversations])
    # and a stream of them whose columns are known only once it is read (a streamed JSON dataset)
    streamed = datasets.IterableDataset.from_generator(lambda: ({"messages": m} for m in conversations))
    rendered = datasets.Dataset.from_dict({"text": texts, "messages": conversations})  # a text column is read as is
    profiles = [
        DietPruner(dense, tokenizer).profile({"mine": data}, disable_progress=True).scores
        for data in (texts, conversations, dataset, streamed, rendered)
    ]
    for profile in profiles[1:]:
        for layer, (a, b) in enumerate(zip(profile.mlp["mine"], profiles[0].mlp["mine"])):
            assert torch.equal(a, b), layer
    with pytest.raises(ValueError, match="Task 'mine' holds conversations: rendering them needs the chat template"):
        DietPruner(dense).profile({"mine": conversations}, disable_progress=True)


def test_calibration_chat_template_profiles_questions_as_they_are_scored(tiny_tokenizer, data_dir, tmp_path):
    """`calibration_chat_template=True`: every question's calibration text (a registered task's and your own) is its
    prompt in the chat template, as `evaluate(apply_chat_template=True)` scores it, then the answer with no
    delimiter and no second BOS; plain texts stay as they are. The profile records it, `load_scores` draws the
    registered tasks again in that form for a reconstruction, and a tokenizer without a template is refused."""
    from conftest import chat_tokenizer

    from diet_hf.tasks import chat_calibration_request, load_calibration, multiple_choice_task

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    rows = [{"context": "Question: what is it?", "choices": ["yes", "no"], "label": 1}]
    tasks = {"rte": None, "mine": multiple_choice_task("mine", rows), "plain": ["a plain text"]}
    dense = tiny_dense_model("gemma3_text", vocab_size=len(tokenizer))
    pruner = DietPruner(dense, tokenizer)
    pruner.profile(tasks, num_samples=3, data_dir=data_dir, calibration_chat_template=True, disable_progress=True)
    texts = {name: data.texts for name, data in pruner._calibration["data"].items()}
    (mine,) = texts["mine"]
    prompt = "<start_of_turn>user\nQuestion: what is it?<end_of_turn>\n<start_of_turn>model\n"
    assert mine.startswith(prompt) and mine[len(prompt) :] in ("yes", "no")  # no delimiter, no BOS
    assert texts["plain"] == ["a plain text"]
    render = functools.partial(chat_calibration_request, tokenizer)
    expected = load_calibration("rte", num_samples=3, data_dir=data_dir, render=render).texts
    assert texts["rte"] == expected and all(t.startswith("<start_of_turn>user\n") for t in expected)
    assert all("<end_of_turn>\n<start_of_turn>model\n" in t and "\nAnswer:<end" in t for t in expected)
    assert pruner.scores.chat_template
    # saved and loaded: the registered task drawn again in the chat template, so the reconstruction reads the same
    pruner.save_scores(tmp_path / "scores")
    direct = pruner.prune(sparsity=0.3, disable_progress=True)
    again = DietPruner(dense, tokenizer).load_scores(tmp_path / "scores", data_dir=data_dir)
    assert again.scores.chat_template
    reloaded = again.prune(sparsity=0.3, disable_progress=True)
    for name, tensor in direct.state_dict().items():
        assert torch.allclose(tensor, reloaded.state_dict()[name], atol=1e-5), name
    assert direct.config.pruning["calibration_chat_template"] is True
    with pytest.raises(ValueError, match="`calibration_chat_template`: the tokenizer has no chat template"):
        DietPruner(dense, tiny_tokenizer).profile(["rte"], data_dir=data_dir, calibration_chat_template=True)


@pytest.mark.parametrize("family", ["gemma3_text", "gemma2"])
def test_a_dense_model_read_from_a_gguf_file_prunes_as_its_converted_checkpoint_does(
    tmp_path, data_dir, caplog, capsys, family
):
    """`DietPruner.from_pretrained(DIR, gguf_file=NAME)`: the model transformers dequantizes from a GGUF file (its
    quantizer attached) profiles and prunes with its tokenizer from the file, to the same weights as the checkpoint
    `convert_gguf` makes of that file; the saved pruned model carries no GGUF quantization config, loads with stock
    transformers, and its record and card name the file. A file that is not there is refused, naming `gguf_file`.
    The file's metadata is parsed three times, for the config, the weights and the tokenizer, here and in
    `convert_gguf`, not again for the config (20 s a parse on the real 270M, whose vocabulary is 262k strings)."""
    pytest.importorskip("gguf")
    from conftest import gguf_parses, write_tiny_gguf

    from diet_hf.real_model import convert_gguf

    source = write_tiny_gguf(tmp_path / "source" / "tiny.gguf", family).parent
    with pytest.raises(FileNotFoundError, match=r"`gguf_file`: the local directory .*source holds no file nope.gguf"):
        DietPruner.from_pretrained(source, gguf_file="nope.gguf")
    with pytest.raises(ValueError, match=r"`gguf_file` must be the name of a GGUF file, got 3"):
        DietPruner.from_pretrained(source, gguf_file=3)

    def pruned(pruner):
        pruner.profile(tasks=["rte", "boolq"], num_samples=3, data_dir=data_dir, disable_progress=True)
        return pruner.prune(sparsity=0.3)

    with gguf_parses() as parses, caplog.at_level(logging.INFO, logger="diet_hf"):
        from_gguf = DietPruner.from_pretrained(source, gguf_file="tiny.gguf")
    assert parses == ["tiny.gguf"] * 3, parses
    # the wait is said before it (transformers' parses show no progress bar)
    said = [r.getMessage() for r in caplog.records if "parses a GGUF file's whole metadata" in r.getMessage()]
    assert said == [f"Reading tiny.gguf from {source}: " + said[0].split(": ", 1)[1]], said
    caplog.clear()
    assert from_gguf.tokenizer is not None and from_gguf.gguf_file == "tiny.gguf"
    with gguf_parses() as parses:  # a tokenizer already loaded (the CLI's, which rendered your chat texts)
        again = DietPruner.from_pretrained(source, gguf_file="tiny.gguf", tokenizer=from_gguf.tokenizer)
    assert parses == ["tiny.gguf"] * 2 and again.tokenizer is from_gguf.tokenizer, parses
    with pytest.raises(ValueError, match="`tokenizer` must be a transformers tokenizer, got str"):
        DietPruner.from_pretrained(source, gguf_file="tiny.gguf", tokenizer="tiny.gguf")
    assert getattr(from_gguf.model, "hf_quantizer", None) is None  # read into float weights, no quantizer kept
    direct = AutoModelForCausalLM.from_pretrained(source, gguf_file="tiny.gguf")
    # transformers 5 attaches its GGUF quantizer, whose config names the file; 4.57 dequantizes without one
    attached = getattr(direct, "hf_quantizer", None) is not None
    with caplog.at_level(logging.WARNING, logger="diet_hf"):  # a model read from GGUF, passed in
        assert DietPruner(direct, from_gguf.tokenizer).gguf_file == ("tiny.gguf" if attached else None)
    assert "quantized" not in caplog.text  # its weights are plain floats, not what `prune()` refuses
    model = pruned(from_gguf)
    assert model.config.model_type == f"pruned_{family}"
    with gguf_parses() as parses:  # the checkpoint the main job converts the real model's file into
        converted_dir = convert_gguf(source / "tiny.gguf", tmp_path / "converted")
    assert parses == ["tiny.gguf"] * 3, parses
    converted = DietPruner.from_pretrained(converted_dir)
    expected = pruned(converted).state_dict()
    assert model.state_dict().keys() == expected.keys()
    for name, weight in expected.items():  # the same math on tensors laid out differently: float32's rounding
        torch.testing.assert_close(model.state_dict()[name], weight, rtol=1e-5, atol=1e-7)
    assert model.config.pruning["base_model_gguf_file"] == "tiny.gguf"
    assert converted.pruned_model.config.pruning["base_model_gguf_file"] is None
    in_place = DietPruner.from_pretrained(source, gguf_file="tiny.gguf")
    in_place.profile(tasks=["rte", "boolq"], num_samples=3, data_dir=data_dir, disable_progress=True)
    pruned_in_place = in_place.prune(sparsity=0.3, inplace=True)  # the dequantized weights are the raw material
    assert all(torch.equal(pruned_in_place.state_dict()[k], v) for k, v in model.state_dict().items())

    from_gguf.save_pretrained(tmp_path / "pruned", save_profile=True)
    saved = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert "quantization_config" not in saved and saved["pruning"]["base_model"] == str(source)
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert "read from its GGUF file tiny.gguf (dequantized to float on load)" in card
    assert "diet-hf prune path/to/source --gguf-file tiny.gguf --scores " in card  # pruning again reads the file too
    assert "--reference path/to/source --reference-gguf-file tiny.gguf" in card
    from diet_hf.cli import main

    assert main(["info", str(tmp_path / "pruned")]) == 0  # `info` says the same
    assert f"diet-hf prune {source} --gguf-file tiny.gguf --scores {tmp_path / 'pruned'}" in capsys.readouterr().out
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
    ids = random_batch(vocab_size=model.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_a_gguf_model_whose_weights_transformers_kept_packed_is_refused_with_the_way_to_read_it(tmp_path, data_dir):
    """transformers 5 keeps a GGUF file's quantized weights in GGUF blocks (`GgufLinear`, uint8) for the architectures
    its packed loader knows; pruning cannot cut those, so such a model is refused as quantized, saying how to read the
    file into float weights (as `DietPruner.from_pretrained(..., gguf_file=)` does), before any work."""
    pytest.importorskip("gguf")
    gguf_utils = pytest.importorskip("transformers.integrations.gguf.utils")  # transformers 5 only
    from conftest import write_tiny_gguf

    from diet_hf.surgery import is_quantized, quantized_modules

    source = write_tiny_gguf(tmp_path / "source" / "tiny.gguf").parent
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file="tiny.gguf")
    assert not is_quantized(model)  # transformers read gemma3's file into float weights: prunable
    tokenizer = DietPruner.from_pretrained(source, gguf_file="tiny.gguf").tokenizer
    pruner = DietPruner(model, tokenizer).profile(
        tasks=["rte"], num_samples=2, data_dir=data_dir, disable_progress=True
    )
    mlp = model.model.layers[0].mlp  # as the packed loader leaves it: the weight in GGUF blocks
    mlp.down_proj = gguf_utils.GgufLinear(mlp.down_proj.in_features, mlp.down_proj.out_features, ggml_type=8)
    assert quantized_modules(model) == ["model.layers.0.mlp.down_proj"] and is_quantized(model)
    message = r"`model` is quantized \(e.g. `model.layers.0.mlp.down_proj`\).*Read the GGUF file into float weights"
    with pytest.raises(ValueError, match=message + r": .*GgufConfig\(dequantize=True\)"):
        pruner.prune(sparsity=0.3)
