"""Image-text Gemma 3 checkpoints (4B and up): diet-hf prunes, scores and distills from their text decoder."""

import copy
import dataclasses
import json
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import (
    NATIVE_PER_LAYER_CONFIG,
    image_text_inputs,
    random_batch,
    run_script,
    tiny_dense_model,
    tiny_image_text_model,
    uneven_pruned_model,
)
from test_healing import TEXTS, _small
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
)

from diet_hf import DietPruner, ImportanceScores, build_pruned_model, to_pruned_model
from diet_hf.cli import main
from diet_hf.evaluation import evaluate, next_token_logprobs, perplexity
from diet_hf.healing import heal
from diet_hf.info import check_pruned_checkpoint
from diet_hf.loading import image_text_model, load_causal_lm, text_causal_lm, text_config
from diet_hf.plan import PruningPlan, build_plan


@pytest.fixture
def checkpoints(tmp_path, tiny_tokenizer):
    """The same tiny Gemma 3 saved twice: as a text model and inside an image-text model."""
    text = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    for name, model in (("text", text), ("image-text", tiny_image_text_model(text))):
        model.save_pretrained(tmp_path / name)
        tiny_tokenizer.save_pretrained(tmp_path / name)
    return tmp_path / "text", tmp_path / "image-text"


def test_an_image_text_checkpoint_loads_as_its_text_model(checkpoints, tiny_tokenizer, capsys):
    text_dir, image_text_dir = checkpoints
    text = AutoModelForCausalLM.from_pretrained(text_dir).eval()
    full = Gemma3ForConditionalGeneration.from_pretrained(image_text_dir).eval()
    loaded = load_causal_lm(image_text_dir).eval()
    assert type(loaded) is Gemma3ForCausalLM and loaded.diet_source_architecture == "Gemma3ForConditionalGeneration"
    assert not any("vision" in name or "projector" in name for name, _ in loaded.named_parameters())
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert text_config(full.config) is full.config.text_config and text_config(text.config) is text.config
    ids = random_batch(vocab_size=len(tiny_tokenizer) - 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, text(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(loaded(ids).logits, full(input_ids=ids).logits, rtol=0, atol=0)
        generated = loaded.generate(ids[:1, :4], max_new_tokens=6, do_sample=False)
        torch.testing.assert_close(generated, text.generate(ids[:1, :4], max_new_tokens=6, do_sample=False))
    assert text_causal_lm(text) is text  # a text model is left as it is
    unpruned = to_pruned_model(full)  # the pruned format of its text decoder, weights shared
    with torch.no_grad():
        torch.testing.assert_close(unpruned(ids).logits, text(ids).logits)
    full.hf_device_map = {  # a model split by accelerate: the text model's part of the map, in its own names
        "model.vision_tower": "cpu",
        "model.multi_modal_projector": "cpu",
        "model.language_model.embed_tokens": 0,
        "model.language_model.layers": 1,
        "lm_head": 0,
    }
    assert text_causal_lm(full).hf_device_map == {"model.embed_tokens": 0, "model.layers": 1, "lm_head": 0}
    # `diet-hf info` describes the text decoder, the part diet-hf prunes
    assert main(["info", str(image_text_dir), "--json"]) == 0
    description = json.loads(capsys.readouterr().out)
    assert description["model_type"] == "gemma3_text"
    assert description["text_decoder_of"] == "Gemma3ForConditionalGeneration"
    assert main(["info", str(text_dir), "--json"]) == 0
    assert {**description, "text_decoder_of": None} == json.loads(capsys.readouterr().out)


def test_pruning_an_image_text_checkpoint_prunes_its_text_model(checkpoints, tmp_path, data_dir, tiny_tokenizer):
    text_dir, image_text_dir = checkpoints
    profile = dict(tasks=["rte", "boolq"], num_samples=4, batch_size=4, data_dir=data_dir, disable_progress=True)
    reference = DietPruner.from_pretrained(text_dir).profile(**profile)
    pruner = DietPruner.from_pretrained(image_text_dir, device_map="auto").profile(**profile)
    # accelerate's map as the text model sees it (transformers 5.x sets none for a model on the CPU alone)
    assert getattr(pruner.model, "hf_device_map", {"": "cpu"}) == {"": "cpu"}
    pruned, expected = pruner.prune(sparsity=0.3), reference.prune(sparsity=0.3)
    assert type(pruned).__name__ == "PrunedGemma3ForConditionalGeneration"  # the vision tower kept, by default
    assert pruner.plan.to_dict()["mlp_kept_indices"] == reference.plan.to_dict()["mlp_kept_indices"]
    ids = random_batch(vocab_size=len(tiny_tokenizer) - 3)
    with torch.no_grad():
        # to float rounding, not bit for bit: the reconstruction's least-squares solves read moments summed through
        # two different wrappers, and on some CPUs (an AMD EPYC here, 2026-12-06) their sums differ in the last bits
        torch.testing.assert_close(pruned(ids).logits, expected(ids).logits, rtol=0, atol=1e-6)
    # the evaluator scores an image-text model's text model: the same as the text checkpoint's pruned model
    scored = [
        evaluate(m, tiny_tokenizer, ["rte"], limit=4, data_dir=data_dir, disable_progress=True)
        for m in (pruned, expected)
    ]
    assert scored[0]["results"] == scored[1]["results"]
    text = "Question: what is the answer? Answer: yes no " * 8
    scored = [perplexity(m, tiny_tokenizer, text=text, max_length=16) for m in (pruned, expected)]
    assert scored[0]["perplexity"] == pytest.approx(scored[1]["perplexity"], rel=1e-6)  # the same float rounding
    assert scored[0]["nll"] == pytest.approx(scored[1]["nll"], rel=1e-6)
    assert {k: v for k, v in scored[0].items() if k not in ("perplexity", "nll")} == {
        k: v for k, v in scored[1].items() if k not in ("perplexity", "nll")
    }
    prompts = ["Question: what", "Answer:"]
    torch.testing.assert_close(
        next_token_logprobs(pruned, tiny_tokenizer, prompts), next_token_logprobs(expected, tiny_tokenizer, prompts)
    )
    record = pruned.config.pruning
    assert record is pruned.config.text_config.pruning
    assert record["base_model"] == str(image_text_dir)
    assert record["base_model_architecture"] == "Gemma3ForConditionalGeneration" and record["vision_tower"] == "kept"
    assert (
        expected.config.pruning["base_model_architecture"] is None and expected.config.pruning["vision_tower"] is None
    )
    vision = sum(p.numel() for n, p in pruner._image_text.named_parameters() if not n.startswith(("model.lang", "lm")))
    assert record["total_parameters"]["pruned"] == expected.config.pruning["total_parameters"]["pruned"] + vision
    pruner.save_pretrained(tmp_path / "pruned")
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert (
        "| part pruned | the text decoder of this Gemma3ForConditionalGeneration; its vision tower and projector"
        in card
    )
    assert "pipeline_tag: image-text-to-text" in card and "AutoModelForImageTextToText.from_pretrained(" in card
    saved = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert saved["model_type"] == "pruned_gemma3" and saved["text_config"]["model_type"] == "pruned_gemma3_text"
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith(".PrunedGemma3ForConditionalGeneration")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected(ids).logits)
    with pytest.raises(ValueError, match=r"its ONNX export is not supported\. Prune with `text_only=True`"):
        check_pruned_checkpoint(tmp_path / "pruned")
    # `text_only`: the text model alone, as a text checkpoint
    text_only = DietPruner.from_pretrained(image_text_dir, text_only=True).profile(**profile)
    alone = text_only.prune(sparsity=0.3)
    assert type(alone).__name__ == "PrunedGemma3ForCausalLM" and alone.config.pruning["vision_tower"] == "dropped"
    with torch.no_grad():  # to float rounding, as above
        torch.testing.assert_close(alone(ids).logits, expected(ids).logits, rtol=0, atol=1e-6)
    text_only.save_pretrained(tmp_path / "alone")
    card = (tmp_path / "alone" / "README.md").read_text()
    assert "| part pruned | the text decoder of this Gemma3ForConditionalGeneration; no vision tower |" in card
    saved = json.loads((tmp_path / "alone" / "config.json").read_text())
    assert saved["model_type"] == "pruned_gemma3_text" and "vision_config" not in saved
    assert check_pruned_checkpoint(tmp_path / "alone") == "pruned_gemma3_text"
    # `prune --text-only` on the command line: the same text checkpoint
    argv = ["--quiet", "prune", str(image_text_dir), "--sparsity", "0.3", "--tasks", "rte", "boolq"]
    argv += ["--num-samples", "4", "--batch-size", "4", "--data-dir", str(data_dir), "--text-only"]
    assert main([*argv, "--output", str(tmp_path / "cli-alone")]) == 0
    assert check_pruned_checkpoint(tmp_path / "cli-alone") == "pruned_gemma3_text"
    from_cli = AutoModelForCausalLM.from_pretrained(tmp_path / "cli-alone")
    with torch.no_grad():
        torch.testing.assert_close(from_cli(ids).logits, alone(ids).logits, rtol=0, atol=1e-6)
    # a loaded image-text model given to the pruner directly
    full = Gemma3ForConditionalGeneration.from_pretrained(image_text_dir).eval()
    again = DietPruner(full).profile({"a": [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]})
    assert type(again.model) is Gemma3ForCausalLM and again.family.dense_model_type == "gemma3_text"
    assert type(again.prune(sparsity=0.3)).__name__ == "PrunedGemma3ForConditionalGeneration"
    assert type(DietPruner(full, text_only=True).model) is Gemma3ForCausalLM
    with pytest.raises(ValueError, match="`text_only` must be a bool, got 'yes'"):
        DietPruner(full, text_only="yes")


def test_an_image_text_teacher_heals_and_scores_like_its_text_model(checkpoints, tmp_path, data_dir, tiny_tokenizer):
    text_dir, image_text_dir = checkpoints
    pruner = DietPruner.from_pretrained(text_dir).profile(
        tasks=["rte"], num_samples=4, batch_size=4, data_dir=data_dir, disable_progress=True
    )
    config = _small(max_tokens=16 * 2 * 4)
    healed = {}
    for name, teacher in (("text", str(text_dir)), ("image-text", str(image_text_dir))):
        student = pruner.prune(sparsity=0.3)
        healed[name] = heal(
            student,
            teacher,
            tiny_tokenizer,
            TEXTS,
            config=config,
            work_dir=tmp_path / f"heal-{name}",
            disable_progress=True,
        )
    online = heal(  # a loaded image-text teacher, full-vocabulary KL
        pruner.prune(sparsity=0.3),
        Gemma3ForConditionalGeneration.from_pretrained(image_text_dir),
        tiny_tokenizer,
        TEXTS,
        config=dataclasses.replace(config, top_k=None),
        work_dir=tmp_path / "online",
        disable_progress=True,
    )
    assert online.config.pruning["healing"]["steps"] > 0
    ids = random_batch(vocab_size=len(tiny_tokenizer) - 3)
    with torch.no_grad():
        torch.testing.assert_close(healed["image-text"](ids).logits, healed["text"](ids).logits)
    # `diet-hf heal --teacher` an image-text checkpoint, with the full-vocabulary KL (the CLI loads the teacher then)
    student = pruner.prune(sparsity=0.3)
    student.save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", str(image_text_dir), "--top-k", "0"]
    argv += ["--data", "rte", "--data-dir", str(data_dir), "--seq-len", "16", "--batch-size", "2"]
    argv += ["--max-tokens", "64", "--validation-sequences", "2", "--lora-r", "2", "--output", str(tmp_path / "h")]
    assert main(argv) == 0
    healing = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]
    assert healing["teacher"] == str(image_text_dir) and healing["steps"] == 1
    # `diet-hf eval` of the image-text checkpoint scores its text model
    outputs = {}
    for name, directory in (("text", text_dir), ("image-text", image_text_dir)):
        out = tmp_path / f"{name}.json"
        argv = ["--quiet", "eval", str(directory), "--tasks", "rte", "--limit", "4", "--data-dir", str(data_dir)]
        assert main([*argv, "--output", str(out)]) == 0
        outputs[name] = json.loads(out.read_text())["results"]["rte"]
    assert outputs["image-text"] == outputs["text"]


def _zeroed(full, plan):
    """The dense image-text model with every removed MLP dimension and query head zeroed where it enters the
    residual (a copy)."""
    zeroed = copy.deepcopy(full)
    d = plan.head_dim
    with torch.no_grad():
        for layer_idx, layer in enumerate(zeroed.model.language_model.layers):
            removed = sorted(set(range(plan.intermediate_size)) - set(plan.mlp_kept_indices[layer_idx]))
            layer.mlp.down_proj.weight[:, removed] = 0
            for head in set(range(plan.num_attention_heads)) - set(plan.head_kept_indices[layer_idx]):
                layer.self_attn.o_proj.weight[:, head * d : (head + 1) * d] = 0
    return zeroed


def test_a_pruned_image_text_model_computes_the_zeroed_dense_model_on_images(tmp_path):
    text = tiny_dense_model("gemma3_text", vocab_size=64)
    full = tiny_image_text_model(text)
    inputs = image_text_inputs(full)
    # unpruned: the stock model's logits and greedy decoding, from image and text
    unpruned = to_pruned_model(full)
    assert type(unpruned).__name__ == "PrunedGemma3ForConditionalGeneration"
    assert unpruned.model.vision_tower is full.model.vision_tower  # shared, not copied
    with torch.no_grad():
        torch.testing.assert_close(unpruned(**inputs).logits, full(**inputs).logits, rtol=0, atol=0)
        first = {name: value[:1] for name, value in inputs.items()}
        generated = unpruned.generate(**first, max_new_tokens=5, do_sample=False)
        torch.testing.assert_close(generated, full.generate(**first, max_new_tokens=5, do_sample=False))
    # pruned (MLP width and heads): the dense model with the removed dimensions zeroed
    g = torch.Generator().manual_seed(0)
    layers, config = text.config.num_hidden_layers, text.config
    scores = ImportanceScores(
        {"t": torch.rand(layers, config.intermediate_size, generator=g)},
        {"t": torch.rand(layers, config.num_attention_heads, generator=g)},
    )
    plan = build_plan(scores, config, mlp_sparsity=0.4, attention_sparsity=0.5)
    pruned = build_pruned_model(full, plan)
    assert type(pruned).__name__ == "PrunedGemma3ForConditionalGeneration"
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in full.parameters())
    reference = _zeroed(full, plan)
    with torch.no_grad():
        expected = reference(**inputs).logits
        torch.testing.assert_close(pruned(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, full(**inputs).logits)  # the plan changed something
    # saved and loaded through either Auto class with the remote code
    pruned.save_pretrained(tmp_path / "pruned")
    for auto_class in (AutoModelForImageTextToText, AutoModelForCausalLM):
        reloaded = auto_class.from_pretrained(tmp_path / "pruned", trust_remote_code=True).eval()
        assert type(reloaded).__name__ == "PrunedGemma3ForConditionalGeneration"
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="`text_model` must be a pruned Gemma 3 text model"):
        image_text_model(full, text)
    with pytest.raises(ValueError, match="`source` must be an image-text Gemma 3, got a Gemma3ForCausalLM"):
        image_text_model(text, text_causal_lm(pruned))


PROCESSOR_FRESH = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # diet-hf cannot be imported in this process
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    path = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    inputs = processor(text=["<boi> yes no"], images=[[image]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    print(json.dumps({"type": type(model).__name__, "ids": inputs["input_ids"].tolist(), "logits": logits.tolist()}))
    """
)


def test_a_pruned_image_text_checkpoint_ships_its_processor_and_runs_without_diet_hf(tmp_path, data_dir):
    # a tokenizer with Gemma 3's image tokens, its processor, and a model whose image token ids are theirs
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<boi>", "<eoi>", "<img>"]
    trainer = trainers.BpeTrainer(vocab_size=128, special_tokens=special, initial_alphabet=[], show_progress=False)
    backend.train_from_iterator(["Question: what is the answer? Answer: yes no True False"] * 4, trainer=trainer)
    images = {"boi_token": "<boi>", "eoi_token": "<eoi>", "image_token": "<img>"}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        extra_special_tokens=images,
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 28, "width": 28}), tokenizer=tokenizer, image_seq_length=4
    )
    text = tiny_dense_model("gemma3_text", vocab_size=len(tokenizer))
    full = tiny_image_text_model(text)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in images.items()}
    full.config.boi_token_index, full.config.eoi_token_index = ids["boi_token"], ids["eoi_token"]
    full.config.image_token_index = ids["image_token"]
    full.save_pretrained(tmp_path / "dense")
    processor.save_pretrained(tmp_path / "dense")
    # a LoRA fine-tune of its text decoder saved as the adapter alone: read as the base with the adapter merged, the
    # base's processor beside it (the adapter has none, only the tokenizer)
    from peft import LoraConfig, get_peft_model

    base = Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "dense")
    lora = LoraConfig(r=2, target_modules=r".*language_model.*down_proj", init_lora_weights=False)
    adapted = get_peft_model(base, lora)
    adapted.save_pretrained(tmp_path / "lora")
    tokenizer.save_pretrained(tmp_path / "lora")  # as a fine-tune's output holds it: a tokenizer, no image processor
    merged = text_causal_lm(adapted.merge_and_unload())
    from_adapter = DietPruner.from_pretrained(tmp_path / "lora")
    assert type(from_adapter.processor).__name__ == "Gemma3Processor"
    torch.testing.assert_close(from_adapter.model.state_dict(), merged.state_dict(), rtol=0, atol=0)
    pruner = DietPruner.from_pretrained(tmp_path / "dense").profile(
        tasks=["rte"], num_samples=4, batch_size=4, data_dir=data_dir, disable_progress=True
    )
    assert type(pruner.processor).__name__ == "Gemma3Processor"
    pruned = pruner.prune(sparsity=0.3)
    pruner.save_pretrained(tmp_path / "pruned")
    out = json.loads(run_script(tmp_path, PROCESSOR_FRESH, str(tmp_path / "pruned")).strip().splitlines()[-1])
    assert out["type"] == "PrunedGemma3ForConditionalGeneration"
    assert out["ids"][0].count(ids["image_token"]) == 4  # the processor expanded the image into its tokens
    # the same processed inputs in this process, through the pruned model it saved
    local = AutoProcessor.from_pretrained(tmp_path / "pruned")
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    inputs = local(text=["<boi> yes no"], images=[[image]], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(out["logits"]), pruned(**inputs).logits, rtol=1e-5, atol=1e-5)
    # healed with the CLI: the processor goes beside the healed image-text model too
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"), "--data", "rte"]
    argv += ["--data-dir", str(data_dir), "--seq-len", "16", "--batch-size", "2", "--max-tokens", "64"]
    argv += ["--validation-sequences", "2", "--lora-r", "2", "--output", str(tmp_path / "healed")]
    assert main(argv) == 0
    assert type(AutoProcessor.from_pretrained(tmp_path / "healed")).__name__ == "Gemma3Processor"
    assert json.loads((tmp_path / "healed" / "config.json").read_text())["model_type"] == "pruned_gemma3"


def test_healing_a_pruned_image_text_model_keeps_its_vision_tower(checkpoints, tmp_path, data_dir, tiny_tokenizer):
    text_dir, image_text_dir = checkpoints
    profile = dict(tasks=["rte"], num_samples=4, batch_size=4, data_dir=data_dir, disable_progress=True)
    with_vision = DietPruner.from_pretrained(image_text_dir).profile(**profile)
    text_only = DietPruner.from_pretrained(image_text_dir, text_only=True).profile(**profile)
    config = _small(max_tokens=16 * 2 * 4)
    student = with_vision.prune(sparsity=0.3)
    vision = student.model.vision_tower
    held_out = ["Question: is it yes? Answer: no", "the answer is True"]  # scored on the text models
    healed = heal(
        student,
        str(text_dir),
        tiny_tokenizer,
        TEXTS,
        config=config,
        output_dir=tmp_path / "h",
        disable_progress=True,
        eval_texts=held_out,
    )
    alone = heal(
        text_only.prune(sparsity=0.3),
        str(text_dir),
        tiny_tokenizer,
        TEXTS,
        config=config,
        work_dir=tmp_path / "alone",
        disable_progress=True,
        eval_texts=held_out,
    )
    scored = healed.config.pruning["healing"]["held_out_texts"]["texts"]
    for key in ("teacher", "unhealed", "healed"):
        assert scored[key] == pytest.approx(alone.config.pruning["healing"]["held_out_texts"]["texts"][key], rel=1e-4)
    assert scored["healed"] != pytest.approx(scored["unhealed"], rel=1e-4)
    assert type(healed).__name__ == "PrunedGemma3ForConditionalGeneration" and healed.model.vision_tower is vision
    assert healed.config.pruning["healing"]["steps"] == alone.config.pruning["healing"]["steps"] > 0
    ids = random_batch(vocab_size=len(tiny_tokenizer) - 3)
    with torch.no_grad():  # the text model healed as the text-only one was
        torch.testing.assert_close(healed(ids).logits, alone(ids).logits)
    saved = json.loads((tmp_path / "h" / "config.json").read_text())
    assert saved["model_type"] == "pruned_gemma3" and "healing" in saved["text_config"]["pruning"]
    assert "## Healing" in (tmp_path / "h" / "README.md").read_text()
    assert PruningPlan.from_pretrained(tmp_path / "h").to_dict() == with_vision.plan.to_dict()  # the plan file too
    # the CLI's heal, eval and info read the saved image-text checkpoint's text model
    with_vision.save_pretrained(tmp_path / "pruned")
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", str(image_text_dir), "--data", "rte"]
    argv += ["--data-dir", str(data_dir), "--seq-len", "16", "--batch-size", "2", "--max-tokens", "64"]
    argv += ["--validation-sequences", "2", "--lora-r", "2", "--output", str(tmp_path / "cli")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["model_type"] == "pruned_gemma3"
    argv = ["--quiet", "eval", str(tmp_path / "pruned"), "--tasks", "rte", "--limit", "4", "--data-dir", str(data_dir)]
    assert main([*argv, "--output", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["results"]["rte"]
    assert main(["info", str(tmp_path / "pruned"), "--json"]) == 0


def test_an_image_text_model_with_removed_sublayers_and_biases_decodes_from_images(tmp_path):
    # layer 0 without attention, layer 1 without MLP, compensation biases on both: the stand-ins under the stock
    # image-text forward, its image-token mask and its cache
    pruned = uneven_pruned_model("gemma3_text", compensated=True, image_text=True)
    assert type(pruned).__name__ == "PrunedGemma3ForConditionalGeneration"
    inputs = image_text_inputs(pruned)
    with torch.no_grad():
        logits = pruned(**inputs).logits
        first = {name: value[:1] for name, value in inputs.items()}
        generated = pruned.generate(**first, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        # decoding step by step with the cache gives the logits of the whole sequence at once
        whole = pruned(input_ids=generated[:, :-1], pixel_values=first["pixel_values"]).logits[0, -1]
    assert generated.shape[1] == first["input_ids"].shape[1] + 4
    pruned.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "pruned", trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, logits, rtol=1e-5, atol=1e-5)
        again = reloaded.generate(**first, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        step = reloaded(input_ids=generated[:, :-1], pixel_values=first["pixel_values"]).logits[0, -1]
    torch.testing.assert_close(again, generated)
    torch.testing.assert_close(step, whole, rtol=1e-5, atol=1e-5)


def test_an_inplace_prune_of_an_image_text_model_keeps_its_vision_tower(checkpoints, data_dir):
    _, image_text_dir = checkpoints
    profile = dict(tasks=["rte"], num_samples=4, batch_size=4, data_dir=data_dir, disable_progress=True)
    expected = DietPruner.from_pretrained(image_text_dir).profile(**profile).prune(sparsity=0.3)
    pruner = DietPruner.from_pretrained(image_text_dir).profile(**profile)
    pruned = pruner.prune(sparsity=0.3, inplace=True)
    assert type(pruned).__name__ == "PrunedGemma3ForConditionalGeneration"
    assert pruned.model.vision_tower is pruner._image_text.model.vision_tower
    inputs = image_text_inputs(pruned)
    with torch.no_grad():
        torch.testing.assert_close(pruned(**inputs).logits, expected(**inputs).logits, rtol=0, atol=0)


@pytest.mark.skipif(not NATIVE_PER_LAYER_CONFIG, reason="this transformers has no per-layer configs of its own")
def test_the_image_text_config_never_reads_the_text_models_per_layer_sizes_globally(tmp_path, monkeypatch):
    # the stock composite validator (on init and on save) reads every text config attribute it can; a global read of
    # a per-layer size logs transformers' warning (or, with strict checking, raises inside a `getattr` default)
    from transformers.integrations.heterogeneity import configuration_utils

    reads = []
    monkeypatch.setattr(configuration_utils.logger, "warning_once", lambda message, *a, **k: reads.append(message))
    pruned = uneven_pruned_model("gemma3_text", image_text=True)
    pruned.save_pretrained(tmp_path / "pruned")
    again = type(pruned.config)(text_config=pruned.config.text_config, vision_config=pruned.config.vision_config)
    assert again.text_config.is_heterogeneous and again.text_config.per_layer_config[1].intermediate_size == 0
    assert [m for m in reads if "Reading global config value" in m] == []


@pytest.mark.parametrize("image_text", [False, True])
@pytest.mark.parametrize("kept", ["mlp", "nothing"])
def test_the_cards_lora_block_names_targets_that_exist(tmp_path, image_text, kept):
    """PEFT refuses `target_modules` that match no module, so a checkpoint that kept no attention in any layer gets a
    LoRA block on its MLPs, and the block runs: adapters on every kept MLP projection and nowhere else. One that kept
    neither gets no LoRA block."""
    from diet_hf.card import write_model_card
    from diet_hf.plan import PruningPlan

    dense = tiny_dense_model("gemma3_text")
    plan = PruningPlan.keep_all(dense.config)
    plan.head_kept_indices = [[] for _ in plan.head_kept_indices]
    plan.kv_head_kept_indices = [[] for _ in plan.kv_head_kept_indices]
    plan.mlp_kept_indices = [[], []] if kept == "nothing" else [[0, 3], [1]]
    plan.__post_init__()
    pruned = build_pruned_model(tiny_image_text_model(dense) if image_text else dense, plan)
    write_model_card(tmp_path, pruned.config)
    blocks = [b.split("```", 1)[0] for b in (tmp_path / "README.md").read_text().split("```python\n")[1:]]
    lora = [b for b in blocks if "LoraConfig" in b]
    if kept == "nothing":
        assert lora == [] and "LoRA" not in (tmp_path / "README.md").read_text()
        return
    assert len(lora) == 1 and "q_proj" not in lora[0] and "gate_proj" in lora[0]
    text = (tmp_path / "README.md").read_text()
    assert "The module names are Gemma's:" in text and "the ones PEFT picks" not in text  # not PEFT's default ones
    namespace = {"model": pruned}
    exec(lora[0], namespace)
    adapted = {n.split(".lora_A")[0] for n, _ in namespace["model"].named_parameters() if ".lora_A." in n}
    expected = {
        "base_model.model." + n
        for n, _ in pruned.named_modules()
        if n.endswith(("gate_proj", "up_proj", "down_proj")) and "vision" not in n
    }
    assert adapted == expected and len(expected) == 6  # both layers' three projections


def test_the_image_text_cards_lora_targets_adapt_the_text_decoders_attention_only():
    """The card's LoRA block for an image-text checkpoint (PEFT has no default targets for it, nor for stock image-text
    Gemma 3) puts adapters on the text decoder's q_proj / v_proj, in every layer that kept its attention, and none in
    the vision tower, whose attention has the same module names."""
    from diet_hf.card import _ATTENTION_TARGETS, _fine_tuning

    pruned = uneven_pruned_model("gemma3_text", image_text=True)
    names = [n for n, _ in pruned.named_modules() if n.endswith(("q_proj", "v_proj"))]
    assert any(n.startswith("model.vision_tower.") for n in names)
    namespace = {"model": pruned}
    exec("\n".join(_fine_tuning(_ATTENTION_TARGETS, image_text=True)), namespace)
    adapted = {n.split(".lora_A")[0] for n, _ in namespace["model"].named_parameters() if ".lora_A." in n}
    expected = {"base_model.model." + n for n in names if n.startswith("model.language_model.")}
    assert adapted == expected and expected
