"""Format v2: the per-layer sizes are transformers' own sparse `per_layer_config`, read by stock transformers (5.x
natively, 4.57 through the remote code), by caches sized from the config and by registered attention backends; v1
checkpoints keep loading and re-save as v2."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from conftest import NATIVE_PER_LAYER_CONFIG, random_batch, run_script, tiny_config_kwargs
from safetensors import safe_open
from test_modeling import pruned_model
from test_remote_code import TF457_PYTHON, _load_all_in_fresh_process

from diet_hf import PrunedGemma2Config, PrunedGemma3ForCausalLM, PrunedGemma3TextConfig
from diet_hf.hub import save_pruned_model

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
V1_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1-pruned-gemma3"
V01_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v0.1-pruned-gemma3"
LEGACY_FIELDS = ("intermediate_size_per_layer", "num_attention_heads_per_layer", "num_key_value_heads_per_layer")

# four layers: pruned MLP and heads, no MLP, no attention, untouched (absent from the sparse form)
UNEVEN = {
    "num_hidden_layers": 4,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    "intermediate_size_per_layer": [22, 0, 40, 64],
    "num_attention_heads_per_layer": [2, 4, 0, 4],
    "num_key_value_heads_per_layer": [1, 2, 0, 2],
}
SPARSE = {
    "0": {"intermediate_size": 22, "num_attention_heads": 2, "num_key_value_heads": 1},
    "1": {"intermediate_size": 0, "skip": ["mlp"]},
    "2": {"intermediate_size": 40, "num_attention_heads": 0, "num_key_value_heads": 0, "skip": ["attention"]},
}


def _uneven_model(**extra):
    model = pruned_model("gemma3_text", seed=3, **UNEVEN, **extra)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.3)
    return model


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("config_class", [PrunedGemma2Config, PrunedGemma3TextConfig])
def test_config_json_holds_the_sparse_per_layer_config_and_no_second_copy(tmp_path, config_class):
    extra = {} if config_class is PrunedGemma2Config else {"layer_types": UNEVEN["layer_types"]}
    config = config_class(**tiny_config_kwargs(**{**UNEVEN, **extra}))
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["per_layer_config"] == SPARSE
    assert not set(LEGACY_FIELDS) & set(saved)
    assert "allow_global_per_layer_attribute_access" not in saved
    # the global sizes stay the base model's
    assert (saved["intermediate_size"], saved["num_attention_heads"], saved["num_key_value_heads"]) == (64, 4, 2)
    loaded = config_class.from_pretrained(tmp_path)
    assert loaded.is_heterogeneous
    assert [loaded.intermediate_size_per_layer, loaded.num_attention_heads_per_layer] == [
        [22, 0, 40, 64],
        [2, 4, 0, 4],
    ]
    assert loaded.num_key_value_heads_per_layer == [1, 2, 0, 2]
    assert [layer.skip for layer in loaded.per_layer_config] == [[], ["mlp"], ["attention"], []]


@pytest.mark.parametrize("config_class", [PrunedGemma2Config, PrunedGemma3TextConfig])
def test_to_dict_from_dict_round_trip_through_transformers_serialization_keeps_the_sparse_form(config_class):
    config = config_class(**tiny_config_kwargs(), per_layer_config={1: {"skip": ["mlp"]}})
    assert config.layer_intermediate_size(1) == 0 and config.intermediate_size_per_layer == [64, 0]
    for serialized in (config.to_dict(), config.to_diff_dict(), json.loads(config.to_json_string())):
        assert serialized["per_layer_config"] == {"1": {"intermediate_size": 0, "skip": ["mlp"]}}
        again = config_class.from_dict(serialized)
        assert again.to_dict() == config.to_dict()
        assert again.to_dict()["per_layer_config"] == {"1": {"intermediate_size": 0, "skip": ["mlp"]}}


def test_v1_lists_and_per_layer_config_build_the_same_config():
    by_lists = PrunedGemma3TextConfig(**tiny_config_kwargs(**UNEVEN))
    by_sparse = PrunedGemma3TextConfig(
        **tiny_config_kwargs(num_hidden_layers=4, layer_types=UNEVEN["layer_types"]), per_layer_config=SPARSE
    )
    # a `skip` alone implies size 0; integer keys work as well as transformers' zero-padded strings
    by_skips = PrunedGemma3TextConfig(
        **tiny_config_kwargs(num_hidden_layers=4, layer_types=UNEVEN["layer_types"]),
        per_layer_config={
            0: SPARSE["0"],
            1: {"skip": ["mlp"]},
            2: {"intermediate_size": 40, "skip": ["attention"]},
        },
    )
    assert by_lists.to_dict() == by_sparse.to_dict() == by_skips.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_layer_config": {"0": {"head_dim": 4}}}, r"`per_layer_config`\['0'\] overrides \['head_dim'\]"),
        ({"per_layer_config": {"2": {"intermediate_size": 8}}}, r"layer indices in \[0, 2\).*got '2'"),
        ({"per_layer_config": {"x": {}}}, r"keys must be layer indices, got 'x'"),
        ({"per_layer_config": {"-1": {"intermediate_size": 8}}}, r"layer indices in \[0, 2\).*got '-1'"),
        ({"per_layer_config": {0: 8}}, r"`per_layer_config`\[0\] must be a dict of attribute overrides, got 8"),
        ({"per_layer_config": {0: {"skip": ""}}}, r"\['skip'\] must be a list of 'attention' and/or 'mlp', got ''"),
        ({"per_layer_config": {0: {"skip": ["mlp"], "intermediate_size": 8}}}, r"skips the mlp but gives it"),
        ({"per_layer_config": {0: {"skip": "mlp"}}}, r"\['skip'\] must be a list of 'attention' and/or 'mlp'"),
        ({"per_layer_config": {0: {"intermediate_size": -1}}}, r"must be >= 0, got -1 \(layer 0\)"),
        ({"per_layer_config": {0: {"intermediate_size": True}}}, r"must be an int >= 0, got True \(layer 0\)"),
        ({"per_layer_config": {0: {"num_key_value_heads": 0}}}, r"Layer 0: 4 query heads but 0 KV heads"),
        ({"per_layer_config": {}, "intermediate_size_per_layer": [1, 2]}, r"either as `per_layer_config` or"),
        ({"per_layer_config": [1, 2]}, r"`per_layer_config` must be a dict"),
    ],
)
def test_bad_per_layer_config_names_the_argument_and_the_layer(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrunedGemma2Config(**tiny_config_kwargs(), **kwargs)


def _sizes(layer) -> tuple:
    return layer.intermediate_size, layer.num_attention_heads, layer.num_key_value_heads, sorted(layer.skip or ())


def test_per_layer_config_is_indexed_like_a_list_on_every_transformers():
    """`config.per_layer_config` (transformers' list on 5.14+, the remote code's view before): negative indices and
    slices give the same layers, an index past either end is an `IndexError`, and iterating it stops at the last
    layer."""
    config = PrunedGemma3TextConfig(**tiny_config_kwargs(**UNEVEN))
    layers = config.per_layer_config
    assert [_sizes(layer) for layer in layers] == [
        (22, 2, 1, []),
        (0, 4, 2, ["mlp"]),
        (40, 0, 0, ["attention"]),
        (64, 4, 2, []),
    ]
    assert _sizes(layers[-1]) == (64, 4, 2, []) and _sizes(layers[-3]) == (0, 4, 2, ["mlp"])
    assert [_sizes(layer) for layer in layers[1:3]] == [(0, 4, 2, ["mlp"]), (40, 0, 0, ["attention"])]
    assert [_sizes(layer) for layer in layers[::-2]] == [(64, 4, 2, []), (0, 4, 2, ["mlp"])]
    for index in (4, -5):
        with pytest.raises(IndexError):
            layers[index]


@pytest.mark.skipif(not NATIVE_PER_LAYER_CONFIG, reason="this transformers has no per_layer_config setter")
def test_per_layer_sizes_set_after_construction_are_checked_when_validated_and_saved(tmp_path):
    """transformers' `per_layer_config` setter takes any overrides; `validate()`, which `save_pretrained` runs, checks
    each layer's heads as the constructor does, and a refused save writes no config.json."""
    config = PrunedGemma3TextConfig(**tiny_config_kwargs())
    config.per_layer_config = {1: {"num_attention_heads": 3}}
    message = r"Layer 1: 3 query heads \(`num_attention_heads`\) do not split into 2 KV groups"
    with pytest.raises(ValueError, match=message):
        config.validate()
    with pytest.raises(ValueError, match=message):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_the_json_form_is_transformers_own_on_every_transformers():
    """As transformers 5 writes it, also on 4.x: keys zero-padded to the widest index (so that a JSON sorted by key
    lists the layers in order), and `per_layer_attributes` None for a config whose layers all keep the global sizes,
    else the names some layer overrides."""
    kwargs = tiny_config_kwargs(num_hidden_layers=12)
    config = PrunedGemma2Config(**kwargs, intermediate_size_per_layer=[8] * 11 + [64])
    written = json.loads(config.to_json_string())["per_layer_config"]
    assert list(written) == [f"{i:02d}" for i in range(11)] and written["03"] == {"intermediate_size": 8}
    assert config.per_layer_attributes == {"intermediate_size"}
    assert PrunedGemma2Config.from_dict(config.to_dict()).intermediate_size_per_layer == [8] * 11 + [64]
    assert PrunedGemma2Config(**kwargs).per_layer_attributes is None


def test_the_v1_names_are_read_only_views():
    config = PrunedGemma2Config(**tiny_config_kwargs(), intermediate_size_per_layer=[8, 64])
    with pytest.raises(AttributeError):
        config.intermediate_size_per_layer = [1, 1]
    view = config.intermediate_size_per_layer
    view[0] = 99
    assert config.intermediate_size_per_layer == [8, 64]


@pytest.mark.skipif(not NATIVE_PER_LAYER_CONFIG, reason="this transformers has no HeterogeneousConfigMixin")
def test_global_reads_give_the_base_model_sizes_unless_strict_checking_is_asked_for():
    from transformers.integrations.heterogeneity.configuration_utils import AmbiguousGlobalPerLayerAttributeError

    config = PrunedGemma2Config(**tiny_config_kwargs(), intermediate_size_per_layer=[8, 64])
    assert config.per_layer_attributes == {"intermediate_size"}
    assert config.intermediate_size == 64 and config.base_model_size("intermediate_size") == 64
    config.allow_global_per_layer_attribute_access = False
    with pytest.raises(AmbiguousGlobalPerLayerAttributeError):
        config.intermediate_size  # noqa: B018
    assert config.base_model_size("intermediate_size") == 64  # diet-hf's own reads never raise


# ------------------------------------------------------------------------------------------------ stock readers


CONFIG_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # `import diet_hf` fails in this process
    import transformers
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
    names = ("intermediate_size", "num_attention_heads", "num_key_value_heads")
    layers = [{name: getattr(layer, name) for name in names} | {"skip": list(layer.skip)}
              for layer in config.per_layer_config]
    print(json.dumps({"heterogeneous": config.is_heterogeneous, "layers": layers,
                      "module": type(config).__module__, "version": transformers.__version__}))
    """
)


def _weight_sizes(path: Path, num_layers: int, head_dim: int) -> list[dict]:
    """Each layer's sizes as its saved weights have them (0 where a weight is absent)."""
    with safe_open(str(path / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())

        def rows(name):
            return weights.get_slice(name).get_shape()[0] if name in names else 0

        return [
            {
                "intermediate_size": rows(f"model.layers.{i}.mlp.up_proj.weight"),
                "num_attention_heads": rows(f"model.layers.{i}.self_attn.q_proj.weight") // head_dim,
                "num_key_value_heads": rows(f"model.layers.{i}.self_attn.k_proj.weight") // head_dim,
            }
            for i in range(num_layers)
        ]


@pytest.mark.parametrize("python", [sys.executable, TF457_PYTHON], ids=["current", "tf457"])
def test_stock_autoconfig_without_diet_hf_reports_each_layers_weight_shapes(tmp_path, python):
    if python is None:
        pytest.skip("DIET_TF457_PYTHON not set (scripts/test.sh sets it)")
    path = save_pruned_model(_uneven_model(), tmp_path / "model")
    report = json.loads(run_script(tmp_path, CONFIG_SCRIPT, str(path), python=python).strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules")
    assert report["heterogeneous"] is True
    sizes = [{k: v for k, v in layer.items() if k != "skip"} for layer in report["layers"]]
    assert sizes == _weight_sizes(path, 4, 8)
    assert [layer["skip"] for layer in report["layers"]] == [[], ["mlp"], ["attention"], []]
    # the layers the sparse form leaves out have the global (base model) sizes, and a weight of that size
    assert sizes[3] == {"intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}


def test_a_reference_attention_backend_sees_each_layers_configured_heads_and_gives_eager_logits(tmp_path):
    """What a serving engine's backend relies on: selected with `attn_implementation=` at load time, it is called
    once per layer with attention, with exactly that layer's `per_layer_config` head counts."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    seen = {}

    def reference(module, query, key, value, attention_mask, **kwargs):
        seen[module.layer_idx] = (query.shape[1], key.shape[1])
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("diet_reference", reference)
    AttentionMaskInterface.register("diet_reference", sdpa_mask)
    model = _uneven_model()
    ids = random_batch(2, 9)
    with torch.no_grad():
        eager = model(ids).logits
        model.set_attn_implementation("sdpa")
        sdpa = model(ids).logits
    config = model.config
    reloaded = PrunedGemma3ForCausalLM.from_pretrained(
        save_pruned_model(model, tmp_path / "model"), attn_implementation="diet_reference"
    ).eval()
    with torch.no_grad():
        referenced = reloaded(ids).logits
    assert (referenced - eager).abs().max().item() <= 1e-5 and (referenced - sdpa).abs().max().item() <= 1e-5
    expected = {
        i: (layer.num_attention_heads, layer.num_key_value_heads)
        for i, layer in enumerate(config.per_layer_config)
        if "attention" not in layer.skip
    }
    assert seen == expected == {0: (2, 1), 1: (4, 2), 3: (4, 2)}


def _decodes_as_the_full_forward_pass(model, cache, ids, steps: int) -> None:
    """Greedy decoding of `steps` tokens into `cache`: every step's logits are the full forward pass's on the same
    sequence (no argmax near-ties involved), and the cache's layers keep their shapes."""
    from transformers.generation import utils as generation

    # generate's cache argument: `cache` since 5.2x (`past_key_values` deprecated), `past_key_values` before
    cache_argument = "cache" if "cache" in getattr(generation, "ALL_CACHE_NAMES", ()) else "past_key_values"
    model.generation_config.pad_token_id = 0
    shapes = [tuple(layer.keys.shape) for layer in cache.layers]
    out = model.generate(
        ids,
        **{cache_argument: cache},
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        full = model(out.sequences).logits[0, ids.shape[1] - 1 : ids.shape[1] - 1 + steps]
    assert (torch.stack(out.logits, dim=1)[0] - full).abs().max().item() <= 1e-5
    assert [tuple(layer.keys.shape) for layer in cache.layers] == shapes


@pytest.mark.skipif(
    not hasattr(transformers.configuration_utils, "get_head_shapes"),
    reason="per-layer StaticCache initialization (`get_head_shapes`) arrived in transformers 5.18",
)
def test_a_static_cache_sized_from_the_config_alone_has_each_layers_kv_shape_and_decodes_exactly():
    from transformers import StaticCache
    from transformers.configuration_utils import get_head_shapes

    model = _uneven_model()
    cache = StaticCache(config=model.config, max_cache_len=16)
    num_kv_heads, head_dim = get_head_shapes(model.config)
    assert num_kv_heads == [1, 2, 0, 2] and head_dim == 8
    cache.early_initialization(
        batch_size=1, num_heads=num_kv_heads, head_dim=head_dim, dtype=torch.float32, device="cpu"
    )
    # sliding-window layers hold `sliding_window` (4) positions, full-attention layers `max_cache_len`
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [
        (1, 1, 4, 8),
        (1, 2, 16, 8),
        (1, 0, 4, 8),
        (1, 2, 16, 8),
    ]
    _decodes_as_the_full_forward_pass(model, cache, random_batch(1, 7, seed=5), steps=6)


def test_a_static_cache_sized_alike_for_every_layer_decodes_exactly_past_a_removed_attention():
    """A static cache allocated before decoding with one KV shape for every layer (transformers 4.57's
    `early_initialization` takes one head count, as its export wrappers call it; 5.x accepts one too): a removed
    attention writes its placeholder in that layer's shape, so it decodes as the full forward pass."""
    from transformers import StaticCache

    # the attention removed from a full-attention layer (a sliding one's static layer returns a long prompt's states
    # without storing them)
    sizes = {**UNEVEN, "num_attention_heads_per_layer": [4, 4, 4, 0], "num_key_value_heads_per_layer": [2, 2, 2, 0]}
    model = pruned_model("gemma3_text", seed=4, **sizes)
    cache = StaticCache(config=model.config, max_cache_len=16)
    cache.early_initialization(batch_size=1, num_heads=2, head_dim=8, dtype=torch.float32, device="cpu")
    assert tuple(cache.layers[3].keys.shape) == (1, 2, 16, 8)  # the removed attention's layer too
    _decodes_as_the_full_forward_pass(model, cache, random_batch(1, 7, seed=6), steps=5)


# ------------------------------------------------------------------------------------------------ v1 checkpoints


@pytest.mark.parametrize("python", [sys.executable, TF457_PYTHON], ids=["current", "tf457"])
def test_v1_and_v0_1_checkpoints_keep_loading_and_resave_as_v2_with_equal_logits(tmp_path, python):
    """A format-v1 checkpoint (the three lists) and one of diet-hf 0.1 (also remote code named `*_pruned_gemma2.py`,
    uneven widths, compensation biases) load with the logits they were saved with through diet-hf and, in a new
    process of `python` without diet-hf, through their own remote code; re-saved through diet-hf each is v2, with the
    current remote code's file names, and loads the same way on both transformers versions."""
    if python is None:
        pytest.skip("DIET_TF457_PYTHON not set (scripts/test.sh sets it)")
    from transformers import AutoModelForCausalLM

    jobs, expected_logits = [], []
    for fixture in (V1_FIXTURE, V01_FIXTURE):
        assert set(LEGACY_FIELDS) <= set(json.loads((fixture / "config.json").read_text()))
        expected = json.loads((fixture / "expected_logits.json").read_text())
        ids, logits = torch.tensor(expected["input_ids"]), torch.tensor(expected["logits"])
        model, loading = AutoModelForCausalLM.from_pretrained(fixture, output_loading_info=True)  # diet-hf's classes
        model.eval()
        # its removed sublayers' input norms are saved in it, unread and no longer part of the model: not reported
        assert not loading["unexpected_keys"] and not loading["missing_keys"], (fixture.name, loading)
        with torch.no_grad():
            assert (model(ids).logits - logits).abs().max().item() <= 1e-5, fixture.name
        resaved = save_pruned_model(model, tmp_path / f"resaved-{fixture.name}")
        saved = json.loads((resaved / "config.json").read_text())
        assert "per_layer_config" in saved and not set(LEGACY_FIELDS) & set(saved)
        sizes = [model.config.intermediate_size_per_layer, model.config.num_attention_heads_per_layer]
        assert sizes == [json.loads((fixture / "config.json").read_text())[name] for name in LEGACY_FIELDS[:2]]
        assert sorted(p.name for p in resaved.glob("*.py")) == [
            "configuration_pruned_gemma.py",
            "modeling_pruned_gemma.py",
        ]
        assert all(
            value.split(".")[0] in ("configuration_pruned_gemma", "modeling_pruned_gemma")
            for value in saved["auto_map"].values()
        )
        jobs += [(fixture, ids, "causal"), (resaved, ids, "causal")]
        expected_logits += [logits, logits]
    # each checkpoint through its own remote code, and each re-saved one through the current code, in one process
    loaded = _load_all_in_fresh_process(jobs, tmp_path, python)
    assert loaded[0]["module"] != loaded[1]["module"] and loaded[2]["module"] != loaded[3]["module"]  # their own code
    for (path, _, _), result, logits in zip(jobs, loaded, expected_logits, strict=True):
        assert (torch.tensor(result["logits"]) - logits).abs().max().item() <= 1e-5, path


QUIET_SCRIPT = textwrap.dedent(
    """
    import sys, tempfile, torch
    sys.path.insert(0, sys.argv[1])
    from test_format_v2 import _uneven_model
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    from diet_hf.hub import save_pruned_model
    from diet_hf.info import describe_checkpoint
    path = save_pruned_model(_uneven_model(), tempfile.mkdtemp() + "/model")
    model = AutoModelForCausalLM.from_pretrained(path)
    model.generation_config.pad_token_id = 0
    model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, cache_implementation="static")
    describe_checkpoint(str(path))
    get_peft_model(model, LoraConfig(target_modules=["q_proj", "up_proj"]))(torch.tensor([[5, 6, 7]]))
    print("ok")
    """
)


@pytest.mark.skipif(not TRANSFORMERS_5, reason="the warning is transformers 5's")
def test_diet_hf_itself_never_reads_a_per_layer_size_globally(tmp_path):
    """Saving (card, plot), loading, static-cache generation, `info` and PEFT LoRA log none of transformers'
    warnings about global reads of per-layer attributes (a fresh process: the warning is logged once per process)."""
    script = tmp_path / "quiet.py"
    script.write_text(QUIET_SCRIPT)
    tests_dir = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, str(script), tests_dir], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout
    assert "Reading global config value" not in result.stderr, result.stderr[-3000:]
