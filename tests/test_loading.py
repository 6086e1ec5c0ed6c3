"""Image-text Gemma 3 checkpoints (4B and up): diet-hf prunes, scores and distills from their text decoder."""

import dataclasses
import json

import pytest
import torch
from conftest import random_batch, tiny_dense_model
from test_healing import TEXTS, _small
from transformers import (
    AutoModelForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    SiglipVisionConfig,
)

from diet_hf import DietPruner, to_pruned_model
from diet_hf.cli import main
from diet_hf.healing import heal
from diet_hf.loading import load_causal_lm, text_causal_lm, text_config


def _image_text(text_model, seed=1):
    """A tiny `Gemma3ForConditionalGeneration` whose language model carries `text_model`'s weights."""
    vocab = text_model.config.vocab_size
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = Gemma3Config(
        text_config=text_model.config.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        boi_token_index=vocab - 3,
        eoi_token_index=vocab - 2,
        image_token_index=vocab - 1,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    model.model.language_model.load_state_dict(text_model.model.state_dict())
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied, as Gemma's is
    return model


@pytest.fixture
def checkpoints(tmp_path, tiny_tokenizer):
    """The same tiny Gemma 3 saved twice: as a text model and inside an image-text model."""
    text = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    for name, model in (("text", text), ("image-text", _image_text(text))):
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
    assert pruner.plan.to_dict()["mlp_kept_indices"] == reference.plan.to_dict()["mlp_kept_indices"]
    ids = random_batch(vocab_size=len(tiny_tokenizer) - 3)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, expected(ids).logits, rtol=0, atol=0)
    record = pruned.config.pruning
    assert record["base_model"] == str(image_text_dir)
    assert record["base_model_architecture"] == "Gemma3ForConditionalGeneration"
    assert expected.config.pruning["base_model_architecture"] is None
    pruner.save_pretrained(tmp_path / "pruned")
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert "| part pruned | the text decoder of this Gemma3ForConditionalGeneration; no vision tower |" in card
    index = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert index["model_type"] == "pruned_gemma3_text" and "vision_config" not in index
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected(ids).logits)
    # a loaded image-text model given to the pruner directly
    full = Gemma3ForConditionalGeneration.from_pretrained(image_text_dir).eval()
    again = DietPruner(full).profile({"a": [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]})
    assert type(again.model) is Gemma3ForCausalLM and again.family.dense_model_type == "gemma3_text"


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
