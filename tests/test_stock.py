"""A pruned model as a stock transformers checkpoint (`diet_hf.stock`, `diet-hf export stock`): zero padding to one
global size computes what the pruned model computes, and the result loads with stock classes, without remote code."""

import json
import textwrap

import pytest
import torch
import transformers
from conftest import (
    image_text_inputs,
    pruned_then_dense_repo,
    random_batch,
    run_script,
    save_dense_checkpoint,
    tiny_dense_model,
    tiny_pruned_classifier,
    uneven_pruned_model,
)
from huggingface_hub import ModelCard

from diet_hf import build_pruned_model
from diet_hf.cli import main
from diet_hf.hub import save_pruned_model
from diet_hf.info import count_parameters
from diet_hf.plan import PruningPlan
from diet_hf.stock import export_stock, stock_shape, to_stock_model

STOCK_CAUSAL_LM = {"gemma2": transformers.Gemma2ForCausalLM, "gemma3_text": transformers.Gemma3ForCausalLM}


def _uneven_groups_model(family: str):
    """Layer 0: two query heads with a KV head each (groups of 1), width 40; layer 1: two query heads sharing one KV
    head (a group of 2), width 8. The stock shape needs two KV heads of two query heads each, and pads both layers."""
    dense = tiny_dense_model(family)
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(40)), list(range(8, 16))]
    plan.head_kept_indices = [[0, 2], [2, 3]]
    plan.kv_head_kept_indices = [[0, 1], [1]]
    plan.__post_init__()
    return build_pruned_model(dense, plan)


def _everything_removed_model(family: str):
    """Every attention and every MLP removed: embeddings, norms and the head are all that compute. The stock shape
    keeps one channel and one head of all-zero projections (a stock module has no size 0)."""
    dense = tiny_dense_model(family)
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [[], []]
    plan.head_kept_indices = [[], []]
    plan.kv_head_kept_indices = [[], []]
    plan.__post_init__()
    return build_pruned_model(dense, plan)


SHAPES = {
    "removed_sublayers": uneven_pruned_model,
    "uneven_groups": _uneven_groups_model,
    "everything_removed": _everything_removed_model,
}


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_stock_model_computes_what_the_pruned_model_computes(family, shape):
    pruned = SHAPES[shape](family)
    stock = to_stock_model(pruned)
    assert type(stock) is STOCK_CAUSAL_LM[family]
    ids = random_batch(2, 12)
    with torch.no_grad():
        assert (pruned(ids).logits - stock(ids).logits).abs().max().item() <= 1e-5
    # decoding with the KV cache, past the sliding window (4), gives the same tokens
    prompt = ids[:1, :6]
    expected = pruned.generate(prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(stock.generate(prompt, max_new_tokens=8, do_sample=False), expected)
    shape_ = stock_shape(pruned.config)
    assert stock.config.intermediate_size == shape_.intermediate_size
    assert stock.config.num_attention_heads == shape_.num_attention_heads
    assert stock.config.num_key_value_heads == shape_.num_key_value_heads
    assert min(shape_.intermediate_size, shape_.num_key_value_heads) >= 1  # no stock size 0, whatever was removed
    decoder_params = sum(p.numel() for n, p in stock.named_parameters() if "_proj" in n)
    assert decoder_params == shape_.block_parameters + shape_.padded_parameters
    assert stock.config.diet_hf_stock_export == shape_.to_dict()
    assert stock.config.pruning == pruned.config.pruning


def test_stock_shape_pads_to_the_largest_layer_and_keeps_each_layers_groups():
    # removed sublayers: width 22 (layer 0) and 0; heads 0 and 2 sharing one KV head
    shape = stock_shape(uneven_pruned_model("gemma2").config)
    assert (shape.intermediate_size, shape.num_attention_heads, shape.num_key_value_heads) == (22, 2, 1)
    hidden, d = 32, 8
    layer_0, layer_1 = 3 * hidden * 22, 2 * hidden * d * (2 + 1)  # the MLP of layer 0, the attention of layer 1
    assert shape.block_parameters == layer_0 + layer_1
    assert shape.padded_parameters == layer_1 + layer_0  # each layer gains the other's sublayer
    # groups of 1 in layer 0 and of 2 in layer 1: 2 KV heads x 2 query heads each
    shape = stock_shape(_uneven_groups_model("gemma3_text").config)
    assert (shape.intermediate_size, shape.num_attention_heads, shape.num_key_value_heads) == (40, 4, 2)


def test_image_text_and_classifier_models_convert_to_their_stock_classes():
    pruned = uneven_pruned_model("gemma3_text", image_text=True)
    stock = to_stock_model(pruned)
    assert type(stock) is transformers.Gemma3ForConditionalGeneration
    assert stock.model.vision_tower is not pruned.model.vision_tower
    inputs = image_text_inputs(pruned)
    with torch.no_grad():
        assert (pruned(**inputs).logits - stock(**inputs).logits).abs().max().item() <= 1e-5
    classifier = tiny_pruned_classifier()
    stock = to_stock_model(classifier)
    assert type(stock) is transformers.Gemma2ForSequenceClassification
    ids = random_batch()
    with torch.no_grad():
        assert (classifier(ids).logits - stock(ids).logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_a_model_with_attention_biases_exports_them(family):
    """`attention_bias=True` (a config option of both families): the stock layers hold the attention projections'
    biases, padded heads with zero bias, and a removed attention's output bias on all-zero projections; compensation
    biases beside them are still refused."""
    pruned = uneven_pruned_model(family, attention_bias=True)  # layer 0 without attention, layer 1 with fewer heads
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # transformers initializes biases to zero: make them matter
        for name, param in pruned.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=g))
    assert pruned.config.o_proj_bias  # the removed attention keeps the dense output bias
    stock = to_stock_model(pruned)
    assert stock.config.attention_bias
    ids = random_batch(2, 12)
    with torch.no_grad():
        assert (pruned(ids).logits - stock(ids).logits).abs().max().item() <= 1e-5
    assert count_parameters(stock)["total"] == sum(p.numel() for p in stock.parameters())
    compensated = uneven_pruned_model(family, compensated=True, attention_bias=True)
    with pytest.raises(ValueError, match=r"compensation biases \(layer 0: mlp.down_proj.bias\)"):
        to_stock_model(compensated)


def test_compensation_biases_are_refused_unless_all_zero():
    pruned = uneven_pruned_model("gemma3_text", compensated=True)
    with pytest.raises(ValueError, match=r"compensation biases \(layer 0: self_attn.bias\).*bias_compensation=False"):
        to_stock_model(pruned)
    with torch.no_grad():
        for name, param in pruned.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    stock = to_stock_model(pruned)  # all-zero biases add nothing: dropped
    ids = random_batch()
    with torch.no_grad():
        assert (pruned(ids).logits - stock(ids).logits).abs().max().item() <= 1e-5


def test_a_model_that_is_not_pruned_is_refused():
    with pytest.raises(ValueError, match="`model` must be a pruned Gemma model saved by diet-hf"):
        to_stock_model(tiny_dense_model("gemma2"))


FRESH_STOCK_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # diet_hf cannot be imported in this process
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
    model = AutoModelForCausalLM.from_pretrained(path).eval()  # no trust_remote_code
    AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        print(json.dumps({"class": type(model).__name__, "logits": model(ids).logits.tolist()}))
    """
)


def test_cli_export_stock_writes_a_checkpoint_stock_transformers_loads(tmp_path, tiny_tokenizer, capsys):
    pruned = uneven_pruned_model("gemma3_text")
    save_pruned_model(pruned, tmp_path / "pruned", tokenizer=tiny_tokenizer)
    out = tmp_path / "stock"
    assert main(["info", str(tmp_path / "pruned")]) == 0  # says what the export would pad to, before it runs
    assert "(diet-hf export stock): every layer at MLP width 22, 2 query / 1 KV heads, +3,648 parameters" in (
        capsys.readouterr().out
    )
    assert main(["export", "stock", str(tmp_path / "pruned"), str(out), "--max-shard-size", "20KB"]) == 0, (
        capsys.readouterr().err
    )
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    printed = capsys.readouterr().out
    assert "as a stock checkpoint: every layer at MLP width 22, 2 query and 1 KV heads" in printed
    assert "the zero padding adds 3,648 parameters (100.0% of the pruned decoder blocks)" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["architectures"] == ["Gemma3ForCausalLM"]
    assert "auto_map" not in config and "per_layer_config" not in config
    assert not list(out.glob("*.py")) and (out / "tokenizer.json").is_file()
    card = ModelCard.load(out / "README.md")  # a card for the Hub: what it is, the padding, loading, converting
    assert card.data.library_name == "transformers" and "pruned" in card.data.tags
    assert "stock `Gemma3ForCausalLM` checkpoint" in card.text and "adds 3,648 zero parameters" in card.text
    assert "convert_hf_to_gguf.py" in card.text and "trust_remote_code" not in card.text
    assert "| 1 | full_attention | 0 / 64 | 2 / 4 | 1 / 2 |" in card.text  # the pruned sizes, per layer
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    ids = random_batch(1, 9)
    loaded = json.loads(run_script(tmp_path, FRESH_STOCK_LOAD, str(out), json.dumps(ids.tolist())).splitlines()[-1])
    assert loaded["class"] == "Gemma3ForCausalLM"
    with torch.no_grad():
        expected = pruned(ids).logits
    assert (torch.tensor(loaded["logits"]) - expected).abs().max().item() <= 1e-5


def test_cli_export_stock_errors_leave_nothing(tmp_path, tiny_tokenizer, capsys):
    compensated = tmp_path / "compensated"
    save_pruned_model(uneven_pruned_model("gemma2", compensated=True), compensated, tokenizer=tiny_tokenizer)
    assert main(["info", str(compensated)]) == 0
    assert "refused while its compensation biases are non-zero" in capsys.readouterr().out
    assert main(["--quiet", "export", "stock", str(compensated), str(tmp_path / "out")]) == 1
    assert "--no-bias-compensation" in capsys.readouterr().err
    dense = save_dense_checkpoint(tmp_path / "dense", "gemma2", tiny_tokenizer)
    assert main(["--quiet", "export", "stock", str(dense), str(tmp_path / "out")]) == 1
    assert "holds model_type 'gemma2'" in capsys.readouterr().err
    assert main(["--quiet", "export", "stock", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    assert main(["--quiet", "export", "stock", str(compensated), str(tmp_path / "full")]) == 1
    assert "`output` " in (error := capsys.readouterr().err) and "is not empty" in error
    assert main(["--quiet", "export", "stock", str(compensated), str(compensated)]) == 1
    assert main(["--quiet", "export", "stock", str(dense), str(tmp_path / "out"), "--max-shard-size", "lots"]) == 2
    assert "--max-shard-size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_stock_validates_before_writing(tmp_path, tiny_tokenizer, monkeypatch):
    import diet_hf.stock as stock_module

    save_pruned_model(uneven_pruned_model("gemma2"), tmp_path / "pruned", tokenizer=tiny_tokenizer)
    convert = stock_module.to_stock_model

    def broken(model):  # a conversion that got one weight wrong
        stock = convert(model)
        with torch.no_grad():
            stock.model.layers[0].mlp.down_proj.weight.mul_(2)
        return stock

    monkeypatch.setattr(stock_module, "to_stock_model", broken)
    with pytest.raises(RuntimeError, match="differ from the pruned model's"):
        export_stock(tmp_path / "pruned", tmp_path / "out")

    def not_a_number(model):  # outputs that compare as nothing (NaN) are a difference too
        stock = convert(model)
        with torch.no_grad():
            stock.model.norm.weight.fill_(float("nan"))
        return stock

    monkeypatch.setattr(stock_module, "to_stock_model", not_a_number)
    with pytest.raises(RuntimeError, match="differ from the pruned model's by nan"):
        export_stock(tmp_path / "pruned", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # `diet-hf export stock --no-validation` writes it all the same (`validate=False`)
    assert main(["--quiet", "export", "stock", str(tmp_path / "pruned"), str(tmp_path / "out")]) == 1
    assert (
        main(["--quiet", "export", "stock", str(tmp_path / "pruned"), str(tmp_path / "out"), "--no-validation"]) == 0
    )
    assert (tmp_path / "out" / "config.json").is_file()


def test_stock_model_keeps_the_dtype_and_shares_the_unpadded_weights():
    pruned = uneven_pruned_model("gemma3_text").to(torch.bfloat16)
    stock = to_stock_model(pruned)
    assert {p.dtype for p in stock.parameters()} == {torch.bfloat16}
    # embeddings, norms and head are the pruned model's own tensors (no copy); the padded layers are new
    assert stock.model.embed_tokens.weight.data_ptr() == pruned.model.embed_tokens.weight.data_ptr()
    assert stock.lm_head.weight is stock.model.embed_tokens.weight  # tied, as Gemma's is
    layer_weight = stock.model.layers[0].mlp.gate_proj.weight
    assert layer_weight.data_ptr() != pruned.model.layers[0].mlp.gate_proj.weight.data_ptr()
    ids = random_batch()
    with torch.no_grad():
        assert torch.equal(pruned(ids).logits, stock(ids).logits)  # the same operations on the same values
    assert not stock.training


def test_offloaded_or_quantized_models_are_refused():
    pruned = uneven_pruned_model("gemma2")
    gate = pruned.model.layers[0].mlp.gate_proj
    gate.weight = torch.nn.Parameter(torch.empty(gate.weight.shape, device="meta"))
    with pytest.raises(ValueError, match=r"1 weights offloaded to the meta device \(e.g. `model.layers.0.mlp"):
        to_stock_model(pruned)
    pruned = uneven_pruned_model("gemma2")
    gate = pruned.model.layers[0].mlp.gate_proj
    gate.weight = torch.nn.Parameter(gate.weight.to(torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="`model` is quantized: export the float model"):
        to_stock_model(pruned)


def test_export_stock_reads_a_pruned_model_from_the_hub_at_a_revision(local_hub, tmp_path, tiny_tokenizer, capsys):
    """`diet-hf export stock REPO_ID OUT --revision SHA`: the checkpoint at that commit (its main branch has moved on
    to a dense model, which the export refuses)."""
    save_pruned_model(uneven_pruned_model("gemma2"), tmp_path / "model", tokenizer=tiny_tokenizer)
    pruned = pruned_then_dense_repo("org/stock-source", tmp_path / "model", "gemma2", tmp_path)
    argv = ["--quiet", "export", "stock", "org/stock-source"]
    local_hub.state.read_tokens.clear()
    assert main([*argv, str(tmp_path / "out"), "--revision", pruned, "--token", "hf_exporter"]) == 0, (
        capsys.readouterr().err
    )
    assert local_hub.state.read_tokens and set(local_hub.state.read_tokens) == {"hf_exporter"}  # every read
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["Gemma2ForCausalLM"]
    assert main([*argv, str(tmp_path / "out2")]) == 1  # main: the dense model
    assert "holds model_type 'gemma2'" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("how", ["injected", "wrapped"])
def test_unmerged_peft_adapters_are_refused_and_the_merged_model_exports(how):
    """LoRA left beside the weights (PEFT's `inject_adapter_in_model` keeps the model's class, `get_peft_model` wraps
    it): the export pads the base weights alone, so it refuses, naming `model` and the merge; the merged model
    exports and computes what the adapted one did."""
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    config = LoraConfig(r=2, target_modules=["o_proj", "down_proj"], init_lora_weights=False)
    pruned = uneven_pruned_model("gemma2")
    ids = random_batch(2, 12)
    with torch.no_grad():
        plain = pruned(ids).logits
    adapted = inject_adapter_in_model(config, pruned) if how == "injected" else get_peft_model(pruned, config)
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    assert (expected - plain).abs().max() > 1e-3  # the adapters change what it computes
    with pytest.raises(ValueError, match=r"`model` holds unmerged PEFT adapters \(\d+ layers, e.g. `") as error:
        to_stock_model(adapted)
    assert "`merge_and_unload()`" in str(error.value)
    if how == "wrapped":
        stock = to_stock_model(adapted.merge_and_unload())
        with torch.no_grad():
            assert (stock(ids).logits - expected).abs().max().item() <= 1e-4


def test_weights_a_stock_layer_has_no_place_for_are_refused_not_dropped():
    """A weight in a pruned layer that the stock layer has no place for is refused, named, rather than exported
    without it."""
    pruned = uneven_pruned_model("gemma2")
    pruned.model.layers[1].self_attn.register_parameter("extra", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(ValueError, match=r"unexpected weights in a pruned decoder layer: \['self_attn\.extra'\]$"):
        to_stock_model(pruned)
    # and one it needs and does not find is named too
    pruned = uneven_pruned_model("gemma2")
    del pruned.model.layers[1].self_attn.o_proj.weight
    with pytest.raises(ValueError, match=r"layer: \[\], and none of \['self_attn\.o_proj\.weight'\]$"):
        to_stock_model(pruned)


def test_export_stock_keeps_the_class_the_generation_config_and_the_shard_size(tmp_path, tiny_tokenizer):
    """A saved sequence classifier exports as the stock one (`architectures`), `max_shard_size` shards the weights
    and a bad one is refused before anything loads; a causal LM's generation config goes with it."""
    classifier = tiny_pruned_classifier()
    save_pruned_model(classifier, tmp_path / "classifier", tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match=r"`max_shard_size` must be a number of bytes .* got 'lots'"):
        export_stock(tmp_path / "classifier", tmp_path / "bad", max_shard_size="lots")
    out, _ = export_stock(tmp_path / "classifier", tmp_path / "out", max_shard_size="20KB")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Gemma2ForSequenceClassification"]
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    ids = random_batch()
    with torch.no_grad():
        assert (stock(ids).logits - classifier(ids).logits).abs().max().item() <= 1e-5
    pruned = uneven_pruned_model("gemma2")
    pruned.generation_config.max_new_tokens = 7
    assert to_stock_model(pruned).generation_config.max_new_tokens == 7
    assert not (tmp_path / "bad").exists()


def test_export_stock_refuses_a_directory_without_a_config_and_a_failed_write_leaves_nothing(
    tmp_path, tiny_tokenizer, monkeypatch
):
    import diet_hf.card

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"`model` must be a directory with a config.json; .*empty has none"):
        export_stock(tmp_path / "empty", tmp_path / "out")
    save_pruned_model(uneven_pruned_model("gemma2"), tmp_path / "pruned", tokenizer=tiny_tokenizer)

    def disk_full(*args, **kwargs):  # the card is written last, after the weights and the tokenizer
        raise OSError("No space left on device")

    monkeypatch.setattr(diet_hf.card, "write_stock_card", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_stock(tmp_path / "pruned", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
