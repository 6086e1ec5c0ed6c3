"""The pruned model format: config validation and round trip, exactness vs the stock models, generation, training."""

import random

import pytest
import torch
import transformers
from conftest import NATIVE_PER_LAYER_CONFIG, random_batch, tiny_config_kwargs, tiny_dense_model, uneven_pruned_model

from diet_hf import (
    PrunedGemma2Config,
    PrunedGemma2ForCausalLM,
    PrunedGemma2ForSequenceClassification,
    PrunedGemma2ForTokenClassification,
    PrunedGemma3ForCausalLM,
    PrunedGemma3ForTokenClassification,
    PrunedGemma3TextConfig,
    to_pruned_model,
)
from diet_hf._remote_code.configuration_pruned_gemma import PrunedGemma3Config

PRUNED = {
    "gemma2": (PrunedGemma2Config, PrunedGemma2ForCausalLM),
    "gemma3_text": (PrunedGemma3TextConfig, PrunedGemma3ForCausalLM),
}


def pruned_model(family, seed=0, **per_layer):
    config_class, model_class = PRUNED[family]
    extra = {"layer_types": ["sliding_attention", "full_attention"]} if family == "gemma3_text" else {}
    kwargs = {**tiny_config_kwargs(**extra), **per_layer}
    torch.manual_seed(seed)
    model = model_class(config_class(**kwargs)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.3)
    return model


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("config_class", [PrunedGemma2Config, PrunedGemma3TextConfig])
def test_config_round_trip(tmp_path, config_class):
    config = config_class(
        **tiny_config_kwargs(),
        intermediate_size_per_layer=[64, 0],
        num_attention_heads_per_layer=[2, 4],
        num_key_value_heads_per_layer=[1, 2],
        pruning={"method": "DIET", "tasks": ["boolq"]},
    )
    assert config_class.from_dict(config.to_dict()).to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    loaded = config_class.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.intermediate_size_per_layer == [64, 0]
    assert loaded.pruning == {"method": "DIET", "tasks": ["boolq"]}
    assert loaded.auto_map["AutoModelForCausalLM"].startswith("modeling_pruned_gemma.")
    # global fields keep the base model's values
    assert loaded.intermediate_size == 64 and loaded.num_attention_heads == 4


def test_auto_map_names_the_file_the_config_class_came_from_and_keeps_other_classes_entries(tmp_path):
    """`config.auto_map`: ours in the module names of the file the config class was loaded from (diet-hf 0.1's
    checkpoints ship `configuration_pruned_gemma2.py`), an `AutoConfig` entry replaced, entries of other Auto classes
    (a tokenizer shipped as code beside the weights) kept."""
    import importlib.util
    import inspect
    import shutil

    copy = tmp_path / "configuration_pruned_gemma2.py"
    shutil.copyfile(inspect.getfile(PrunedGemma2Config), copy)
    spec = importlib.util.spec_from_file_location("configuration_pruned_gemma2", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = [None, "shipped_tokenizer.ShippedTokenizer"]
    config = module.PrunedGemma2Config(
        **tiny_config_kwargs(), auto_map={"AutoTokenizer": tokenizer, "AutoConfig": "a.B"}
    )
    assert config.auto_map == {
        "AutoConfig": "configuration_pruned_gemma2.PrunedGemma2Config",
        **{key: f"modeling_pruned_gemma2.{name}" for key, name in PrunedGemma2Config._auto_map_models.items()},
        "AutoTokenizer": tokenizer,
    }


def test_base_model_size_and_the_image_text_config_refuse_what_they_cannot_hold():
    config = PrunedGemma2Config(**tiny_config_kwargs(), intermediate_size_per_layer=[8, 64])
    assert config.base_model_size("intermediate_size") == 64
    with pytest.raises(ValueError, match=r"`name` must be one of \['intermediate_size', .*got 'hidden_size'"):
        config.base_model_size("hidden_size")
    with pytest.raises(
        ValueError, match=r"`text_config` must be a `PrunedGemma3TextConfig` or its dict, got Gemma3Te"
    ):
        PrunedGemma3Config(text_config=transformers.Gemma3TextConfig(**tiny_config_kwargs()))


def test_the_image_text_config_keeps_its_text_configs_layers_pruning_record_and_checks():
    """`PrunedGemma3Config`: the text config's per-layer sizes survive the stock composite `__init__` (which reads the
    text config globally), the pruning record given to it is the text config's, and `validate()` (run by
    `save_pretrained`) checks the text layers' heads."""
    text = {**tiny_config_kwargs(), "per_layer_config": {1: {"skip": ["mlp"]}}}
    config = PrunedGemma3Config(text_config=text, pruning={"method": "DIET"})
    assert config.text_config.per_layer_config[1].intermediate_size == 0
    assert config.text_config.intermediate_size_per_layer == [64, 0]
    assert config.pruning == config.text_config.pruning == {"method": "DIET"}
    if NATIVE_PER_LAYER_CONFIG:  # transformers' setter: any overrides, checked on validation (5.x only)
        config.validate()
        config.text_config.per_layer_config = {0: {"num_attention_heads": 3}}
        with pytest.raises(ValueError, match=r"Layer 0: 3 query heads"):
            config.validate()


def test_a_layers_config_has_its_own_sizes_and_shares_every_other_setting_with_the_models():
    """A stock decoder layer's `config` gives that layer's sizes; every other read and every write reach the model's
    config (a switch set through one layer, as some stock modules set theirs, holds for the model and every layer)."""
    model = uneven_pruned_model("gemma3_text")
    first, second = (layer.self_attn.config for layer in model.model.layers)  # a removed one's stand-in keeps it
    # a removed sublayer is built at size 1, then replaced
    assert [(c.intermediate_size, c.num_attention_heads, c.num_key_value_heads) for c in (first, second)] == [
        (22, 1, 1),
        (1, 2, 1),
    ]
    first.use_cache = False
    assert model.config.use_cache is False and second.use_cache is False
    model.config.output_hidden_states = True
    assert first.output_hidden_states and second.output_hidden_states


def test_config_absent_lists_mean_unpruned():
    config = PrunedGemma2Config(**tiny_config_kwargs())
    assert [config.layer_intermediate_size(i) for i in range(2)] == [64, 64]
    assert [config.layer_num_key_value_heads(i) for i in range(2)] == [2, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"intermediate_size_per_layer": [64]}, r"`intermediate_size_per_layer` must have one entry per layer"),
        (
            {"intermediate_size_per_layer": "64"},
            r"`intermediate_size_per_layer` must be a list of ints, one per layer",
        ),
        ({"num_attention_heads_per_layer": [4, 4, 4]}, r"`num_attention_heads_per_layer` must have one entry"),
        ({"intermediate_size_per_layer": [64, -1]}, r"`intermediate_size_per_layer`\[1\] must be >= 0.*layer 1"),
        ({"num_attention_heads_per_layer": [3, 4]}, r"Layer 0: 3 query heads .* do not split into 2 KV groups"),
        ({"num_attention_heads_per_layer": [4, 0]}, r"Layer 1: 2 KV heads but 0 query heads"),
        ({"num_key_value_heads_per_layer": [0, 2]}, r"Layer 0: 4 query heads but 0 KV heads"),
        ({"o_proj_bias": "yes"}, r"`o_proj_bias` must be a bool, got 'yes'"),
        ({"down_proj_bias": 1}, r"`down_proj_bias` must be a bool, got 1"),
    ],
)
@pytest.mark.parametrize("config_class", [PrunedGemma2Config, PrunedGemma3TextConfig])
def test_config_validation_errors(config_class, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config_class(**tiny_config_kwargs(), **kwargs)


# ------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_unpruned_equals_stock(family, attn):
    # sdpa has no logit soft-capping; compare both sides without it so sdpa is exact (Gemma-2 caps by default)
    dense = tiny_dense_model(family, attn_logit_softcapping=None)
    pruned = to_pruned_model(dense)
    if hasattr(pruned, "set_attn_implementation"):  # transformers 5.x
        pruned.set_attn_implementation(attn)
    assert pruned.config._attn_implementation == attn
    ids = random_batch()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on the second row
    with torch.no_grad():
        expected = dense(ids, attention_mask=mask).logits
        got = pruned(ids, attention_mask=mask).logits
    assert type(pruned).__name__.startswith("Pruned")
    real = mask.bool()  # padded positions attend to nothing; eager and sdpa fill them differently
    assert (expected[real] - got[real]).abs().max().item() <= 1e-5


def test_a_pruned_model_computes_the_same_under_flex_attention(tmp_path):
    """A pruned model loaded with transformers' FlexAttention (`attn_implementation="flex_attention"`), over layers of
    other head counts, one without attention, one sliding: the logits of eager attention, on a padded batch."""
    layers = ["full_attention", "sliding_attention"]  # layer 0 has no attention: layer 1 slides (4 of 10 tokens)
    model = uneven_pruned_model("gemma3_text", attn_logit_softcapping=None, layer_types=layers).eval()
    model.save_pretrained(tmp_path)
    flex = type(model).from_pretrained(tmp_path, attn_implementation="flex_attention").eval()
    assert flex.model.layers[1].self_attn.config._attn_implementation == "flex_attention"
    ids = random_batch()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        expected, got = model(ids, attention_mask=mask).logits, flex(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_unpruned_equals_stock_with_softcapping(family):
    dense = tiny_dense_model(family, attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
    pruned = to_pruned_model(dense)
    ids = random_batch()
    with torch.no_grad():
        assert (dense(ids).logits - pruned(ids).logits).abs().max().item() <= 1e-5


def test_to_pruned_model_shares_weights():
    dense = tiny_dense_model("gemma2")
    pruned = to_pruned_model(dense)
    assert (
        pruned.model.layers[0].mlp.down_proj.weight.data_ptr() == dense.model.layers[0].mlp.down_proj.weight.data_ptr()
    )
    assert pruned.lm_head.weight.data_ptr() == pruned.model.embed_tokens.weight.data_ptr()


# ------------------------------------------------------------------------------------------------ uneven configs


def _random_uneven(rng: random.Random):
    widths, heads, kv = [], [], []
    for _ in range(2):
        widths.append(rng.choice([0, 1, 7, 33, 64]))
        kv_count = rng.choice([0, 1, 2])
        kv.append(kv_count)
        heads.append(kv_count * rng.choice([1, 2]))
    return {
        "intermediate_size_per_layer": widths,
        "num_attention_heads_per_layer": heads,
        "num_key_value_heads_per_layer": kv,
    }


UNEVEN_CASES = [
    {
        "intermediate_size_per_layer": [0, 17],
        "num_attention_heads_per_layer": [2, 0],
        "num_key_value_heads_per_layer": [1, 0],
    },  # a layer with no MLP and a layer with no attention
    {
        "intermediate_size_per_layer": [5, 64],
        "num_attention_heads_per_layer": [0, 3],
        "num_key_value_heads_per_layer": [0, 1],
    },  # layer 0 (whose cache length generate reads) has no attention
] + [_random_uneven(random.Random(seed)) for seed in range(4)]


def _greedy_by_full_forward(model, ids, steps):
    for _ in range(steps):
        with torch.no_grad():
            next_token = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
    return ids


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("case", range(len(UNEVEN_CASES)))
def test_uneven_generation_matches_full_forward(family, case):
    model = pruned_model(family, seed=case, **UNEVEN_CASES[case])
    model.generation_config.pad_token_id = 0
    ids = random_batch(1, 7, seed=case)
    expected = _greedy_by_full_forward(model, ids, 6)
    dynamic = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    static = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6, cache_implementation="static")
    assert dynamic.tolist() == expected.tolist()
    assert static.tolist() == expected.tolist()


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("case", [0, 1], ids=["no_attention_in_layer_1", "no_attention_in_layer_0"])
def test_output_attentions_has_one_entry_per_layer(family, case):
    """`output_attentions=True` (eager) gives entry i to layer i, with that layer's head count (0 for a removed
    attention), in a forward pass and at every step of generation; before, a removed attention's entry was left out
    and every later layer's weights moved up one place."""
    model = pruned_model(family, **UNEVEN_CASES[case])
    model.config._attn_implementation = "eager"
    heads = UNEVEN_CASES[case]["num_attention_heads_per_layer"]
    ids = random_batch(2, 7)
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
    assert [a.shape for a in attentions] == [(2, h, 7, 7) for h in heads]
    for a, h in zip(attentions, heads):
        if h:
            torch.testing.assert_close(a.sum(-1), torch.ones(2, h, 7))  # probabilities over the keys
    # in generation: at every step the stock dense model's shapes (sliding layers see their window), with each
    # layer's own head count
    shapes = []
    for candidate in (model, tiny_dense_model(family)):
        candidate.config._attn_implementation = "eager"
        candidate.generation_config.pad_token_id = 0
        out = candidate.generate(
            ids,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            output_attentions=True,
            return_dict_in_generate=True,
        )
        shapes.append([[tuple(a.shape) for a in per_layer] for per_layer in out.attentions])
    pruned_shapes, dense_shapes = shapes
    assert len(pruned_shapes) == 3
    assert pruned_shapes == [[(b, h, q, k) for (b, _, q, k), h in zip(step, heads)] for step in dense_shapes]


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_a_cache_built_without_a_config_decodes_exactly(family):
    """`DynamicCache()` without a config adds its layers as they are first updated (on 4.57; how its assisted
    generation builds the draft model's cache): a model whose first layer has no attention fills it and decodes step
    by step as a full forward computes."""
    from transformers import DynamicCache

    model = pruned_model(family, **UNEVEN_CASES[1])  # layer 0 has no attention
    ids = random_batch(1, 9)
    cache = DynamicCache()
    with torch.no_grad():
        model(ids[:, :6], past_key_values=cache, use_cache=True)
        for position in range(6, 9):
            step = model(ids[:, position : position + 1], past_key_values=cache, use_cache=True).logits[:, -1]
            full = model(ids[:, : position + 1]).logits[:, -1]
            torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == 9


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_speculative_decoding_with_a_pruned_draft_is_exact(family):
    """A pruned model is a natural draft for its dense parent (same tokenizer, cheaper): assisted generation with it
    gives the dense model's greedy output, as prompt-lookup decoding of the pruned model gives its own."""
    dense, pruned = tiny_dense_model(family), uneven_pruned_model(family)  # layer 0 of the draft has no attention
    for model in (dense, pruned):
        model.generation_config.pad_token_id = 0
    ids = random_batch(1, 7)
    greedy = dense.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(dense.generate(ids, max_new_tokens=12, do_sample=False, assistant_model=pruned), greedy)
    own = pruned.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(pruned.generate(ids, max_new_tokens=12, do_sample=False, prompt_lookup_num_tokens=3), own)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("case", [0, 1])
def test_beam_search_and_sampling_with_the_cache_equal_without_it(family, case):
    """Beam search reorders every layer's cache entries (the removed attention's placeholders included); sampling
    draws from the cached logits: both give what recomputing the whole sequence gives."""
    model = pruned_model(family, **UNEVEN_CASES[case])
    model.generation_config.pad_token_id = 0
    ids = random_batch(2, 7)
    beams = dict(max_new_tokens=6, min_new_tokens=6, num_beams=3, do_sample=False)
    assert torch.equal(model.generate(ids, **beams), model.generate(ids, use_cache=False, **beams))
    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        sampled.append(model.generate(ids, max_new_tokens=6, do_sample=True, top_k=5, use_cache=use_cache))
    assert torch.equal(*sampled)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_left_padded_batch_generation_equals_one_by_one(family):
    model = pruned_model(family, **UNEVEN_CASES[0])
    model.generation_config.pad_token_id = 0
    prompts = [random_batch(1, 5, seed=1)[0], random_batch(1, 8, seed=2)[0]]
    width = max(len(p) for p in prompts)
    ids = torch.zeros((2, width), dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    for row, prompt in enumerate(prompts):
        single = model.generate(prompt[None], max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert batched[row, width:].tolist() == single[0, len(prompt) :].tolist()


def test_parameter_count_follows_per_layer_sizes():
    model = pruned_model(
        "gemma2",
        intermediate_size_per_layer=[10, 0],
        num_attention_heads_per_layer=[2, 4],
        num_key_value_heads_per_layer=[1, 2],
    )
    assert model.model.layers[0].mlp.gate_proj.weight.shape == (10, 32)
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (16, 32)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (8, 32)
    assert not any(name.startswith("model.layers.1.mlp.") for name, _ in model.named_parameters())


# ------------------------------------------------------------------------------------------------ training


def test_gradients_finite_and_checkpointing_matches():
    model = pruned_model("gemma2", **UNEVEN_CASES[0]).train()
    ids = random_batch()
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    model.zero_grad()
    enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
    enable()
    assert model.model.gradient_checkpointing
    model(ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("bias", [False, True], ids=["plain", "compensated"])
def test_every_weight_receives_a_gradient(family, bias):
    """A removed sublayer's input norm fed nothing: a weight no loss reaches, on which DistributedDataParallel without
    `find_unused_parameters` (Trainer's setting under gradient checkpointing) stops. No such weight is left."""
    model = pruned_model(family, **UNEVEN_CASES[0], down_proj_bias=bias, o_proj_bias=bias).train()
    ids = random_batch()
    model(ids, labels=ids).loss.backward()
    assert [name for name, param in model.named_parameters() if param.grad is None] == []
    assert "model.layers.0.pre_feedforward_layernorm.weight" not in model.state_dict()
    assert "model.layers.1.input_layernorm.weight" not in model.state_dict()


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_torch_compile_traces_the_whole_uneven_model(family):
    """`torch.compile(model, fullgraph=True)` traces a model with a removed MLP and a removed attention (their
    stand-ins, the cache placeholder included) without a graph break, forward with the cache and backward, and
    computes what eager does. The aot_eager backend checks the tracing, which is our code's part, without the minutes
    of a C++ build (inductor also ran here by hand, equal to 2e-7). Where the stock model of the family does not
    trace either (transformers 5.1 under torch 2.6: dynamo cannot read the `co_varnames` its input decorator looks
    up), there is nothing of ours to check, and the test says so."""
    model = pruned_model(family, **UNEVEN_CASES[0])
    ids = random_batch()
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            torch.compile(tiny_dense_model(family).eval(), backend="aot_eager", fullgraph=True)(ids)
    except torch._dynamo.exc.Unsupported as error:
        reason = str(error).splitlines()[0]
        pytest.skip(f"the stock {family} model does not trace with fullgraph=True here either: {reason}")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
    model.train()
    model(ids, labels=ids).loss.backward()
    eager = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled(ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, eager[name], rtol=1e-5, atol=1e-6)
    # transformers' recipe for fast decoding: a compiled forward over a static cache, greedy as eager decoding
    model.eval().generation_config.pad_token_id = 0
    expected = model.generate(ids[:1], max_new_tokens=5, min_new_tokens=5, do_sample=False)
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, backend="aot_eager", fullgraph=True)
    static = model.generate(
        ids[:1], max_new_tokens=5, min_new_tokens=5, do_sample=False, cache_implementation="static"
    )
    assert torch.equal(static, expected)


def _ddp_steps(rank, world_size, path, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model = PrunedGemma2ForCausalLM.from_pretrained(path).train()
        model.gradient_checkpointing_enable()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        for step in range(3):
            ids = random_batch(seed=10 * rank + step)
            ddp(ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        torch.save(model.state_dict(), f"{out}.{rank}")
        # DDP's reducer freed after its process group was destroyed hung one run in about ten (gloo, 2 CPU ranks)
        del ddp, optimizer
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel_without_unused_parameters(tmp_path):
    """Two CPU ranks (gloo) train a model with a removed MLP and a removed attention under DDP as Trainer sets it up
    with gradient checkpointing, and end with the same weights."""
    import socket
    import time

    import torch.multiprocessing as mp

    pruned_model("gemma2", **UNEVEN_CASES[0]).save_pretrained(tmp_path / "model")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = mp.spawn(
        _ddp_steps, args=(2, str(tmp_path / "model"), port, str(tmp_path / "state")), nprocs=2, join=False
    )
    deadline = time.monotonic() + 180  # a hung rank fails the test instead of stalling the suite
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the two DDP ranks did not finish within 180 s")
    first, second = (torch.load(tmp_path / f"state.{rank}") for rank in (0, 1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_peft_lora_trains(family):
    peft = pytest.importorskip("peft")
    model = pruned_model(
        family,
        intermediate_size_per_layer=[16, 40],
        num_attention_heads_per_layer=[2, 4],
        num_key_value_heads_per_layer=[1, 2],
    )
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    losses = _train(peft.get_peft_model(model, lora).train(), random_batch(2, 12), steps=8, lr=1e-2)
    assert losses[-1] < losses[0] - 0.1


def _train(model, ids, steps: int, lr: float) -> list[float]:
    """The language-modelling loss of each of `steps` AdamW steps on `ids`, over the trainable parameters."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_embeddings_given_directly_and_a_grown_vocabulary(tmp_path, family):
    """What fine-tuning users do before training: feed embeddings (prompt tuning, soft prompts) and add tokens."""
    model = pruned_model(family, **UNEVEN_CASES[0])
    ids = random_batch(2, 9)
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        embedded = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(embedded, reference, rtol=0, atol=0)

    vocab = model.config.vocab_size
    model.resize_token_embeddings(vocab + 12)
    assert model.config.vocab_size == vocab + 12
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with torch.no_grad():
        grown = model(input_ids=ids).logits
    assert grown.shape[-1] == vocab + 12
    torch.testing.assert_close(grown[..., :vocab], reference, rtol=0, atol=0)
    model.save_pretrained(tmp_path)
    reloaded = PRUNED[family][1].from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, grown)

    peft = pytest.importorskip("peft")
    tuned = peft.get_peft_model(reloaded, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    losses = _train(tuned, ids, steps=6, lr=0.1)
    assert losses[-1] < losses[0]
    assert tuned.generate(input_ids=ids, max_new_tokens=2, do_sample=False).shape == (2, 11)


def test_load_bfloat16_and_device_map(tmp_path):
    model = pruned_model("gemma2", **UNEVEN_CASES[0])
    model.save_pretrained(tmp_path)
    loaded = PrunedGemma2ForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.model.layers[1].mlp.down_proj.weight.dtype == torch.bfloat16
    assert torch.isfinite(loaded(random_batch()).logits.float()).all()
    mapped = PrunedGemma2ForCausalLM.from_pretrained(tmp_path, device_map="auto")
    assert {p.device.type for p in mapped.parameters()} == {"cpu"}
    with torch.no_grad():
        torch.testing.assert_close(mapped(random_batch()).logits, model(random_batch()).logits)


def test_sequence_classification_runs():
    config = PrunedGemma2Config(**tiny_config_kwargs(), intermediate_size_per_layer=[8, 16], num_labels=3)
    model = PrunedGemma2ForSequenceClassification(config).eval()
    ids = random_batch()
    assert model(ids).logits.shape == (2, 3)


TOKEN_CLASSIFIERS = {"gemma2": PrunedGemma2ForTokenClassification, "gemma3_text": PrunedGemma3ForTokenClassification}


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_unpruned_token_classifier_equals_the_stock_head_on_the_stock_decoder(family):
    dense = tiny_dense_model(family)
    config_class, _ = PRUNED[family]
    # without the dense config's labels (4.57 writes id2label, which would set 2 labels)
    kwargs = {k: v for k, v in dense.config.to_dict().items() if k not in ("model_type", "id2label", "label2id")}
    config = config_class(**kwargs, num_labels=5)
    classifier = TOKEN_CLASSIFIERS[family](config).eval()
    missing, unexpected = classifier.load_state_dict(dense.state_dict(), strict=False)
    assert set(missing) == {"score.weight", "score.bias"} and unexpected == ["lm_head.weight"]
    assert classifier.dropout.p == 0.1 and classifier.score.bias is not None  # GenericForTokenClassification's head
    ids = random_batch()
    with torch.no_grad():
        logits = classifier(ids).logits
        expected = classifier.score(dense.model(ids).last_hidden_state)
    assert logits.shape == (2, 10, 5)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    if family == "gemma2":  # transformers has a Gemma-2 token classifier: the same module names, the same logits
        from transformers import Gemma2ForTokenClassification

        stock = Gemma2ForTokenClassification(dense.config.__class__(**kwargs, num_labels=5)).eval()
        stock.load_state_dict(classifier.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(stock(ids).logits, logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("head", "dropout"),
    [
        ({"classifier_dropout": 0.3, "hidden_dropout": 0.2}, 0.3),
        ({"hidden_dropout": 0.2}, 0.2),
        ({"classifier_dropout": 0.0, "hidden_dropout": 0.2}, 0.0),
        ({"token_classification_bias": False}, 0.1),
    ],
)
def test_a_token_classifiers_head_follows_the_config_as_transformers_does(head, dropout):
    """Dropout (`classifier_dropout`, else `hidden_dropout`, else 0.1) and the score's bias (unless
    `token_classification_bias` is false) as transformers' own Gemma-2 token classifier reads them."""
    from transformers import Gemma2Config, Gemma2ForTokenClassification

    pruned = PrunedGemma2ForTokenClassification(PrunedGemma2Config(**tiny_config_kwargs(), **head))
    stock = Gemma2ForTokenClassification(Gemma2Config(**tiny_config_kwargs(), **head))
    assert pruned.dropout.p == stock.dropout.p == dropout
    biased = head.get("token_classification_bias", True)
    assert (pruned.score.bias is not None) == biased
    if int(transformers.__version__.split(".")[0]) >= 5:  # 4.57's head always has a bias
        assert (stock.score.bias is not None) == biased


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_token_classifier_from_a_pruned_checkpoint_reads_its_decoder_and_trains(tmp_path, family):
    from transformers import AutoModelForTokenClassification

    pruned = uneven_pruned_model(family, compensated=True)
    pruned.save_pretrained(tmp_path)
    classifier = AutoModelForTokenClassification.from_pretrained(tmp_path, num_labels=3)
    assert type(classifier) is TOKEN_CLASSIFIERS[family]
    ids = random_batch()
    with torch.no_grad():  # the pruned decoder's hidden states, the new head on top
        torch.testing.assert_close(
            classifier.eval()(ids).logits, classifier.score(pruned.model(ids).last_hidden_state), rtol=0, atol=1e-5
        )
    labels = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(0))
    labels[:, :2] = -100  # ignored positions, as a tokenizer's special tokens are labelled
    output = classifier.train()(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(output.logits[labels != -100], labels[labels != -100])
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert classifier.score.weight.grad.abs().sum() > 0
    assert classifier.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0


def test_speed_comparison_takes_turns_and_keeps_each_models_best_round():
    from diet_hf.speed import compare_tokens_per_second

    # the measurement draws token ids below 20000
    models = {
        "dense": tiny_dense_model("gemma2", vocab_size=20000),
        "pruned": to_pruned_model(tiny_dense_model("gemma2", vocab_size=20000)),
    }
    order = []
    for name, model in models.items():  # the prefill pass: ids passed positionally, a batch of 4 (generate: 1)
        model.register_forward_pre_hook(
            lambda module, args, kwargs, name=name: order.append(name) if args and args[0].shape[0] == 4 else None,
            with_kwargs=True,
        )
    result = compare_tokens_per_second(models, rounds=3, prompt_len=8, new_tokens=2, pad_token_id=0)
    assert order == ["dense", "pruned", "pruned", "dense", "dense", "pruned"]
    assert set(result) == {"dense", "pruned"}
    assert all(value > 0 for speeds in result.values() for value in speeds.values())
    with pytest.raises(ValueError, match="`rounds` must be a positive integer, got 0"):
        compare_tokens_per_second(models, rounds=0)


def test_take_turns_measures_in_alternating_order_and_keeps_each_best():
    from diet_hf.speed import take_turns

    calls, readings = [], {"a": iter([1.0, 3.0, 2.0]), "b": iter([5.0, 4.0, 6.0])}

    def measure(name):
        calls.append(name)
        return {"rate": next(readings[name])}

    best = take_turns({name: (lambda n=name: measure(n)) for name in "ab"}, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert best == {"a": {"rate": 3.0}, "b": {"rate": 6.0}}
    with pytest.raises(ValueError, match="`rounds` must be a positive integer, got 0"):
        take_turns({"a": lambda: {}}, rounds=0)


def test_speed_clock_waits_for_an_asynchronous_device(monkeypatch):
    """A GPU runs its work after the call returns: the clock waits for it (on the CPU it has nothing to wait for)."""
    from diet_hf.speed import _clock

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: waited.append("cuda"))
    monkeypatch.setattr(torch.mps, "synchronize", lambda *args: waited.append("mps"))
    _clock(torch.device("cpu"))
    assert waited == []
    _clock(torch.device("cuda", 0))
    _clock(torch.device("mps"))
    assert waited == ["cuda", "mps"]


def _int8_quantization(quantizer):
    """transformers' config for int8 weights through `quantizer` (`diet_hf.quantization`), and a check that a
    projection is quantized."""
    from diet_hf.quantization import quantization_config

    if quantizer == "quanto":
        pytest.importorskip("optimum.quanto", reason="the test extra installs optimum-quanto")
        return quantization_config("quanto-int8"), lambda module: type(module).__name__ == "QLinear"
    pytest.importorskip("torchao", reason="the torchao extra installs it (scripts/test.sh: in the 4.57 environment)")
    return quantization_config("torchao-int8"), lambda module: "Int8" in type(module.weight).__name__


@pytest.mark.parametrize("quantizer", ["quanto", "torchao"])
@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_a_pruned_checkpoint_quantizes_with_a_transformers_quantizer_and_is_not_pruned_again(
    family, quantizer, tmp_path
):
    """Prune, then quantize for deployment: a pruned checkpoint (uneven layers, a removed attention and MLP,
    compensation biases) loads through transformers' quanto and torchao integrations with int8 weights, every linear
    layer of its decoder quantized, its logits within int8 rounding of the float model's, and generates. A dense model
    loaded that way is refused by the pruner (it slices and refits full-precision weights)."""
    from transformers import AutoModelForCausalLM

    from diet_hf import DietPruner

    config, is_quantized = _int8_quantization(quantizer)
    pruned = uneven_pruned_model(family, compensated=True)
    pruned.save_pretrained(tmp_path / "pruned")
    quantized = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", quantization_config=config)
    linears = [
        (name, module)
        for name, module in quantized.model.layers.named_modules()
        if name.rsplit(".", 1)[-1].endswith("_proj")
    ]
    assert linears and all(is_quantized(module) for _, module in linears), [
        (name, type(module).__name__, type(module.weight).__name__) for name, module in linears
    ]
    ids = random_batch(vocab_size=pruned.config.vocab_size)
    with torch.no_grad():
        reference, logits = pruned(ids).logits, quantized(ids).logits
    assert not torch.equal(logits, reference)  # int8 weights, not the float ones
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    generated = quantized.generate(ids[:1], max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 4

    tiny_dense_model(family).save_pretrained(tmp_path / "dense")
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", quantization_config=config)
    with pytest.raises(ValueError, match="`model` is quantized"):
        DietPruner(dense).check_targets(sparsity=0.2)
    if quantizer == "torchao":  # quantized by hand, without a transformers quantizer on the model
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        by_hand = tiny_dense_model(family)
        quantize_(by_hand, Int8WeightOnlyConfig())
        assert getattr(by_hand, "hf_quantizer", None) is None
        with pytest.raises(ValueError, match=r"`model` is quantized \(e\.g\. `model\.layers\.0\."):
            DietPruner(by_hand).check_targets(sparsity=0.2)
