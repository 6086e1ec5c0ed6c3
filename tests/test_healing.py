"""Healing by distillation: the loss against brute force, the Trainer run (merge, resume, guard), bad input, CLI."""

import copy
import json
import logging
import math
import textwrap
from dataclasses import replace

import datasets
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    assert_tables_well_formed,
    on_second_device,
    overflowing,
    random_batch,
    run_script,
    save_lora_adapter,
    tiny_dense_model,
)
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModelForCausalLM

from diet_hf import build_pruned_model
from diet_hf.healing import (
    HealingConfig,
    check_parent,
    coarse_kl,
    cut_rows,
    distillation_loss,
    document_position_ids,
    heal,
    healing_texts,
    layerwise_loss,
    pack_sources,
    pack_texts,
    scored_positions,
    teacher_targets,
)
from diet_hf.plan import PruningPlan

pytest.importorskip("peft")


def _patch_healing(monkeypatch, name: str, wrap) -> None:
    """Replaces `name` by `wrap(original)` in every module of `diet_hf.healing` that calls it (every module imported
    first: one imported later, as `trainer` is when a run starts, would keep the wrapped name past the test)."""
    import importlib
    import pkgutil
    import sys

    import diet_hf.healing

    for info in pkgutil.iter_modules(diet_hf.healing.__path__):
        importlib.import_module(f"diet_hf.healing.{info.name}")
    modules = [m for key, m in sys.modules.items() if key.startswith("diet_hf.healing.") and hasattr(m, name)]
    assert modules, name
    for module in modules:
        monkeypatch.setattr(module, name, wrap(getattr(module, name)))


TEXTS = [
    "Question: is the answer yes? Answer: yes",
    "Question: what is the answer? Answer: no",
    "True or False: the answer is True",
] * 12


def _pair(vocab_size=128, seed=0):
    """A tiny dense Gemma 3 teacher and an uneven pruned student made from it."""
    dense = tiny_dense_model("gemma3_text", seed=seed, vocab_size=vocab_size)
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(0, 64, 2)), list(range(40))]
    plan.head_kept_indices, plan.kv_head_kept_indices = [[0, 1], [0, 1, 2, 3]], [[0], [0, 1]]
    plan.__post_init__()
    return dense, build_pruned_model(dense, plan)


def _small(**overrides):
    values = dict(
        max_tokens=16 * 2 * 6,
        seq_len=16,
        batch_size=2,
        gradient_accumulation_steps=1,
        validation_sequences=2,
        eval_steps=2,
        save_steps=2,
        learning_rate=1e-2,
        lora_r=4,
        lora_alpha=8,
        top_k=8,
        chunk_size=5,
        position_stride=1,  # the 16-token rows are short; the stride has its own tests
        bf16=False,  # float32 wherever the suite runs (the default follows the CPU); bfloat16 has its own tests
    )
    values.update(overrides)
    return HealingConfig(**values)


# ------------------------------------------------------------------------------------------------------- losses


def test_coarse_kl_is_exact_at_full_k_and_short_by_the_rest_term():
    g = torch.Generator().manual_seed(0)
    teacher = F.log_softmax(torch.randn(6, 40, generator=g) * 2, dim=-1)
    student = F.log_softmax(torch.randn(6, 40, generator=g) * 2, dim=-1)
    full = (teacher.exp() * (teacher - student)).sum(-1)
    everything = teacher.topk(40, dim=-1)
    assert torch.allclose(coarse_kl(everything.values, student, everything.indices), full, atol=1e-5)
    for k in (1, 5, 20):
        top = teacher.topk(k, dim=-1)
        coarse = coarse_kl(top.values, student, top.indices)
        # the gap is exactly the teacher's rest mass times KL(teacher | rest || student | rest) >= 0
        rest = torch.ones_like(teacher, dtype=torch.bool).scatter(-1, top.indices, False)
        t_rest = torch.where(rest, teacher, -torch.inf)
        s_rest = torch.where(rest, student, -torch.inf)
        t_mass = torch.logsumexp(t_rest, -1, keepdim=True)
        t_cond, s_cond = t_rest - t_mass, s_rest - torch.logsumexp(s_rest, -1, keepdim=True)
        gap = t_mass.squeeze(-1).exp() * torch.where(rest, t_cond.exp() * (t_cond - s_cond), 0.0).sum(-1)
        assert torch.all(coarse <= full + 1e-6)
        assert torch.allclose(full - coarse, gap, atol=1e-5)
        assert torch.all(full - coarse <= t_mass.squeeze(-1).exp() * (full.max() + 10))


def test_the_rest_buckets_log_mass_is_accurate_in_float32_when_the_top_k_hold_almost_everything():
    """log(1 - exp(x)) of the top-k's log mass x: near 0 (a confident model's top-k hold nearly all the mass) and far
    from it, float32 within 1e-4 relative of float64 (`log1p(-exp(x))` alone is 1e-3 off at x = -1e-6)."""
    from diet_hf.healing.loss import _log1mexp

    x = torch.tensor([-1e-6, -1e-4, -0.01, -0.5, -0.7, -2.0, -20.0], dtype=torch.float64)
    exact = torch.log(-torch.expm1(x))
    torch.testing.assert_close(_log1mexp(x.float()).double(), exact, rtol=1e-4, atol=0)


@pytest.mark.parametrize("top_k", [None, 128, 7])
@pytest.mark.parametrize("kd_weight", [1.0, 0.4])
@pytest.mark.parametrize("frozen_head", [True, False])
@pytest.mark.parametrize("softcap", [None, 3.0], ids=["no_softcap", "softcap"])
def test_distillation_loss_matches_brute_force(top_k, kd_weight, frozen_head, softcap, monkeypatch):
    """Both backward paths: a frozen head (LoRA) takes each chunk's gradient in forward (no checkpointing), a trained
    head recomputes the chunk's logits in backward; each equals the whole-vocabulary loss and its gradients, with
    Gemma 2's final soft-capping too."""
    import diet_hf.healing.loss as healing_loss

    checkpointed = []
    monkeypatch.setattr(healing_loss, "checkpoint", lambda *a, **k: checkpointed.append(1) or checkpoint(*a, **k))
    teacher, student = _pair()
    teacher.config.final_logit_softcapping = student.config.final_logit_softcapping = softcap
    student.lm_head.weight.requires_grad_(not frozen_head)
    ids = random_batch(2, 9)
    temperature = 1.5
    targets = teacher_targets(teacher, ids, top_k=top_k, temperature=temperature, chunk_size=4)
    hidden = student.model(input_ids=ids).last_hidden_state[:, :-1].reshape(-1, 32)
    labels = ids[:, 1:].reshape(-1)
    loss, parts = distillation_loss(
        student,
        hidden,
        teacher_ids=None if top_k is None else targets["ids"].long(),
        teacher_logprobs=targets["logprobs"],
        labels=labels,
        kd_weight=kd_weight,
        temperature=temperature,
        chunk_size=5,
    )
    loss.backward()
    chunked_grad = student.model.layers[0].mlp.down_proj.weight.grad.clone()
    student.zero_grad()
    # brute force: the whole vocabulary at once, no chunks, no checkpointing
    logits = student(input_ids=ids).logits[:, :-1].reshape(-1, 128)
    t = F.log_softmax(teacher(input_ids=ids).logits[:, :-1].reshape(-1, 128).detach() / temperature, dim=-1)
    s = F.log_softmax(logits / temperature, dim=-1)
    if top_k in (None, 128):
        kd = (t.exp() * (t - s)).sum(-1).mean() * temperature**2
    else:
        top = t.topk(top_k, dim=-1)
        kd = coarse_kl(top.values, s, top.indices).mean() * temperature**2
    expected = kd_weight * kd + (1 - kd_weight) * F.cross_entropy(logits, labels) if kd_weight < 1 else kd
    expected.backward()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert abs(parts["kd"] - float(kd.detach())) < 1e-5
    # the language-modelling part is computed only where it weighs (a 262k-token cross-entropy is not free)
    assert parts["lm"] == (0.0 if kd_weight == 1 else pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-5))
    assert torch.allclose(chunked_grad, student.model.layers[0].mlp.down_proj.weight.grad, atol=1e-6)
    assert bool(checkpointed) is not frozen_head


def test_distillation_loss_refuses_what_it_cannot_score():
    """Labels missing for a loss with a language-modelling part, teacher targets missing for one with a KD part, and
    no positions at all: each a `ValueError` saying what is missing, not a NaN loss."""
    _, student = _pair()
    hidden, labels = torch.randn(6, 32), torch.randint(0, 128, (6,))
    logprobs = torch.randn(6, 128).log_softmax(-1)
    with pytest.raises(ValueError, match=r"`labels` are needed when `kd_weight` < 1"):
        distillation_loss(student, hidden, teacher_ids=None, teacher_logprobs=logprobs, kd_weight=0.5)
    with pytest.raises(ValueError, match=r"`teacher_logprobs` are needed when `kd_weight` > 0"):
        distillation_loss(student, hidden, teacher_ids=None, teacher_logprobs=None, labels=labels, kd_weight=0.5)
    with pytest.raises(ValueError, match="No positions to score"):
        distillation_loss(student, hidden[:0], teacher_ids=None, teacher_logprobs=logprobs[:0], labels=labels[:0])
    loss, parts = distillation_loss(
        student, hidden, teacher_ids=None, teacher_logprobs=None, labels=labels, kd_weight=0
    )
    assert parts["kd"] == 0 and loss.item() == pytest.approx(parts["lm"])  # language modelling alone needs no teacher


def test_scored_positions_and_teacher_targets_at_them():
    assert scored_positions(4, 16, 1) is None
    positions = scored_positions(50, 16, 3, seed=1)
    assert positions.shape == (50, 5) and positions.min() >= 0 and positions.max() <= 14  # 15 next-token positions
    assert torch.equal(positions, scored_positions(50, 16, 3, seed=1))
    assert torch.all(positions.diff(dim=1) == 3) and len(set(positions[:, 0].tolist())) == 3  # every offset drawn
    teacher, _ = _pair()
    ids = random_batch(4, 16)
    full = teacher_targets(teacher, ids, top_k=6, chunk_size=7)
    some = teacher_targets(teacher, ids, top_k=6, chunk_size=7, positions=positions[:4])
    rows = (torch.arange(4).unsqueeze(1) * 15 + positions[:4]).reshape(-1)
    assert torch.equal(some["ids"], full["ids"][rows])
    assert torch.allclose(some["logprobs"], full["logprobs"][rows], atol=1e-6)


@pytest.mark.parametrize("stride", [1, 3])
def test_the_teachers_pass_in_batches_equals_one_pass_over_all_rows(stride):
    """`_precompute` writes each batch's targets into tensors made once (not a list concatenated at the end)."""
    from diet_hf.healing.teacher import _precompute

    teacher, _ = _pair()
    ids = random_batch(5, 16)  # batches of 2: the last holds one row
    positions = scored_positions(5, 16, stride, seed=2)
    config = _small(position_stride=stride, top_k=6, chunk_size=7)
    batched = _precompute(lambda: teacher, ids, config, None, positions)
    whole = teacher_targets(teacher, ids, top_k=6, chunk_size=7, positions=positions)
    assert batched.keys() == whole.keys() and torch.equal(batched["ids"], whole["ids"])
    assert torch.allclose(batched["logprobs"], whole["logprobs"], atol=1e-6)


def test_training_targets_are_read_from_their_cache_file(tmp_path):
    """With `on_disk`, `_precompute` returns the cache file's tensors read a slice at a time: each slice (and each
    dataset item built on them) equals the targets held in memory, on the first run and on a resumed one; a cache made
    for other rows is not used."""
    from diet_hf.healing.data import _PackedDataset
    from diet_hf.healing.teacher import _DiskTargets, _precompute

    teacher, _ = _pair()
    ids = random_batch(5, 16)
    positions = scored_positions(5, 16, 3, seed=2)
    config = _small(position_stride=3, top_k=6, chunk_size=7)
    path = tmp_path / "targets.safetensors"
    in_memory = _precompute(lambda: teacher, ids, config, None, positions)
    calls = []

    def get_teacher():
        calls.append(1)
        return teacher

    for run in ("first", "resumed"):
        calls.clear()
        on_disk = _precompute(get_teacher, ids, config, path, positions, on_disk=True)
        assert calls == ([1] if run == "first" else [])  # a resumed run reads the cache, without the teacher
        assert all(isinstance(value, _DiskTargets) for value in on_disk.values())
        for name, value in in_memory.items():
            assert torch.equal(on_disk[name][3:11], value[3:11]) and torch.equal(on_disk[name][0:25], value)
        items = _PackedDataset(ids, on_disk, positions), _PackedDataset(ids, in_memory, positions)
        for i in range(5):
            a, b = (dataset[i] for dataset in items)
            assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    calls.clear()
    other = ids.roll(1, dims=0)  # other rows: the cache is not theirs
    fresh = _precompute(get_teacher, other, config, path, positions, on_disk=True)
    assert calls == [1] and not torch.equal(fresh["ids"][0:25], in_memory["ids"])
    held = _precompute(lambda: teacher, other, config, path, positions)  # the cache, in memory
    assert isinstance(held["ids"], torch.Tensor) and torch.equal(held["ids"], fresh["ids"][0:25])


@pytest.mark.parametrize("top_k", [8, None])
def test_position_stride_scores_a_subset_and_still_heals(tmp_path, tiny_tokenizer, top_k):
    teacher, student = _pair()
    config = _small(position_stride=4, top_k=top_k)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert record["scored_positions_per_sequence"] == 3 and record["tokens_seen"] == 6 * 2 * 16
    assert not record["rolled_back"] and record["validation_kl_after"] < record["validation_kl_before"]
    with pytest.raises(ValueError, match="`position_stride` must be smaller than `seq_len` \\(16\\), got 16"):
        _small(position_stride=16)


@pytest.mark.parametrize("bos_rows", [False, True])
def test_heal_trains_and_guards_on_bos_started_rows(tmp_path, tiny_tokenizer, monkeypatch, bos_rows):
    teacher, student = _pair()
    first_tokens = []
    _patch_healing(
        monkeypatch,
        "teacher_targets",
        lambda original: lambda m, ids, **k: first_tokens.extend(ids[:, 0].tolist()) or original(m, ids, **k),
    )
    config = _small(bos_rows=bos_rows, separate_documents=False)  # separate_documents starts rows with BOS too
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path)
    # every row the teacher scores (the training rows' targets and the guard's validation rows) starts with BOS
    assert first_tokens and all(t == tiny_tokenizer.bos_token_id for t in first_tokens) == bos_rows
    assert healed.config.pruning["healing"]["options"]["bos_rows"] is bos_rows


def test_teacher_of_itself_gives_zero_loss():
    teacher, _ = _pair()
    ids = random_batch(1, 7)
    targets = teacher_targets(teacher, ids, top_k=None)
    hidden = teacher.model(input_ids=ids).last_hidden_state[:, :-1].reshape(-1, 32)
    loss, _ = distillation_loss(teacher, hidden, teacher_ids=None, teacher_logprobs=targets["logprobs"])
    assert abs(float(loss)) < 1e-6


# --------------------------------------------------------------------------------------------------------- data


def test_pack_texts_rows_and_errors(tiny_tokenizer):
    rows = pack_texts(TEXTS, tiny_tokenizer, 16, seed=3)
    assert rows.dtype == torch.long and rows.shape[1] == 16 and rows.shape[0] > 4
    assert torch.equal(rows, pack_texts(TEXTS, tiny_tokenizer, 16, seed=3))
    assert (rows == tiny_tokenizer.bos_token_id).any() and (rows == tiny_tokenizer.eos_token_id).any()
    with pytest.raises(ValueError, match="healing data is empty"):
        pack_texts([], tiny_tokenizer, 16)
    with pytest.raises(ValueError, match="fewer than one sequence of 4096"):
        pack_texts(["short"], tiny_tokenizer, 4096)


def test_cut_rows_with_bos_starts_every_row_with_it_and_keeps_the_stream():
    b, e = 2, 1
    stream = [b, 10, 11, 12, e, b, 13, 14, e, b, 15, 16, 17, 18, e]
    assert cut_rows(stream, 4).tolist() == [[b, 10, 11, 12], [e, b, 13, 14], [e, b, 15, 16]]
    rows = cut_rows(stream, 4, b).tolist()
    # a row at a document start keeps its own BOS; the others get one inserted before seq_len - 1 stream tokens
    assert rows == [[b, 10, 11, 12], [b, e, b, 13], [b, 14, e, b], [b, 15, 16, 17]]
    assert sum((row[1:] if i else row for i, row in enumerate(rows)), []) == stream[:13]


def test_pack_texts_bos_rows(tiny_tokenizer):
    bos = tiny_tokenizer.bos_token_id
    plain = pack_texts(TEXTS, tiny_tokenizer, 16, seed=3)
    rows = pack_texts(TEXTS, tiny_tokenizer, 16, seed=3, bos_rows=True)
    assert (plain[:, 0] != bos).any() and (rows[:, 0] == bos).all()
    # the same tokens: what the inserted BOS tokens displace is at most one extra row's worth
    assert (rows != bos).sum() <= (plain != bos).sum() + 16 and rows.shape[0] >= plain.shape[0]
    assert (pack_sources({"a": TEXTS, "b": TEXTS[:3]}, tiny_tokenizer, 16, bos_rows=True)[:, 0] == bos).all()

    class NoBos:  # a tokenizer without a BOS token
        bos_token_id, eos_token_id = None, 1

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5] * len(text)}

    with pytest.raises(ValueError, match="`bos_rows=True` needs a tokenizer with a BOS token"):
        pack_texts(["abcdef"], NoBos(), 4, bos_rows=True)
    assert pack_texts(["abcdef"], NoBos(), 4).shape == (1, 4)


def test_healing_texts_never_read_evaluation_splits(data_dir):
    texts, splits = healing_texts(["wikitext2", "rte"], data_dir=data_dir)
    assert splits == {"wikitext2": "validation", "rte": "train"}
    assert len(texts) > 1000 and "Homarus gammarus" in texts[0]
    with pytest.raises(ValueError, match="'piqa': its train split is not available"):
        healing_texts(["piqa"], data_dir=data_dir)


def test_healing_texts_in_the_chat_template(data_dir, tiny_tokenizer):
    """`healing_texts(render=...)` writes each task example's prompt as `render` makes it, before its gold answer:
    with `chat_calibration_request`, the text a model calibrated in the chat template profiled (WikiText-2 as is)."""
    from conftest import chat_tokenizer

    from diet_hf.tasks import chat_calibration_request, get_task, load_examples

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    render = lambda request: chat_calibration_request(tokenizer, request)  # noqa: E731
    plain, _ = healing_texts(["wikitext2", "rte"], data_dir=data_dir)
    chat, splits = healing_texts(["wikitext2", "rte"], data_dir=data_dir, render=render)
    assert splits == {"wikitext2": "validation", "rte": "train"} and chat[0] == plain[0]
    spec = get_task("rte")
    docs = load_examples(spec, "train", data_dir=data_dir)
    assert chat[1:] == [spec.calibration_text(doc, "gold", render) for doc in docs]
    assert chat[1].startswith("<start_of_turn>user\n") and "<start_of_turn>model\n" in chat[1]
    assert "<bos>" not in chat[1]  # packing adds BOS itself
    assert chat[1].endswith(plain[1].rsplit(" ", 1)[-1])  # the same gold answer


def test_healing_config_validation():
    with pytest.raises(ValueError, match="`seq_len` must be a positive integer, got 0"):
        HealingConfig(seq_len=0)
    with pytest.raises(ValueError, match=r"`kd_weight` must be in \[0, 1\], got 1.5"):
        HealingConfig(kd_weight=1.5)
    with pytest.raises(ValueError, match="`top_k` must be a positive integer or None"):
        HealingConfig(top_k=0)
    with pytest.raises(ValueError, match=r"`lora_modules` must be one of \('all', 'mlp', 'attention'\), got 'qkv'"):
        HealingConfig(lora_modules="qkv")
    for field, value, message in [
        ("seed", -1, r"`seed` must be a non-negative integer, got -1"),
        ("hidden_weight", -0.5, r"`hidden_weight` must be a number >= 0, got -0.5"),
        ("learning_rate", 0, r"`learning_rate` must be > 0, got 0"),
        ("temperature", -1.0, r"`temperature` must be > 0, got -1.0"),
        ("position_stride", 512, r"`position_stride` must be smaller than `seq_len` \(512\), got 512"),
        ("max_time", 0, r"`max_time` must be > 0 seconds or None, got 0"),
        ("lora_dropout", 1.0, r"`lora_dropout` must be in \[0, 1\), got 1.0"),
        # warmup longer than training would never reach the learning rate
        ("warmup_ratio", 1.5, r"`warmup_ratio` must be in \[0, 1\], got 1.5"),
        ("weight_decay", -0.01, r"`weight_decay` must be >= 0, got -0.01"),
        ("kd_weight", "0.5", r"`kd_weight` must be a number, got '0.5'"),
        ("max_time", "20m", r"`max_time` must be a number, got '20m'"),
        ("guard", "yes", r"`guard` must be True or False, got 'yes'"),
        ("release_memory", 1, r"`release_memory` must be True or False, got 1"),
        ("bf16", "auto", r"`bf16` must be True, False or None, got 'auto'"),
    ]:
        with pytest.raises(ValueError, match=message):
            HealingConfig(**{field: value, **({"seq_len": 512} if field == "position_stride" else {})})


# ------------------------------------------------------------------------------------------------------ training

FRESH = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # neither diet-hf nor PEFT can be imported in this process
    sys.modules["peft"] = None
    import torch
    from transformers import AutoModelForCausalLM
    path, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    with torch.no_grad():
        print(json.dumps(model(ids).logits.tolist()))
    """
)


def test_heal_lora_merges_saves_and_reloads_without_diet_hf_or_peft(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    ids = random_batch(1, 8)
    with torch.no_grad():
        unhealed_logits = student(ids).logits
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "healed")
    record = healed.config.pruning["healing"]
    assert not record["rolled_back"] and record["validation_kl_after"] < record["validation_kl_before"]
    assert record["steps"] == 6 and record["tokens_seen"] == 6 * 2 * 16
    assert record["merge_max_abs_logit_diff"] <= 1e-5
    assert len(record["loss_curve"]) == 6
    assert [entry["step"] for entry in record["validation_kl_history"]] == [0, 2, 4, 6]  # every `eval_steps`
    assert not any("lora" in name for name, _ in healed.named_parameters())
    assert type(healed).__name__ == "PrunedGemma3ForCausalLM"
    with torch.no_grad():
        healed_logits = healed(ids).logits
    assert not torch.allclose(healed_logits, unhealed_logits)
    saved = tmp_path / "healed"
    assert (saved / "model.safetensors").is_file() and not (tmp_path / "healed.healing").exists()
    card = (saved / "README.md").read_text()
    assert "## Healing" in card and "tokens seen" in card
    stdout = run_script(tmp_path, FRESH, str(saved), json.dumps(ids.tolist()))
    assert torch.allclose(torch.tensor(json.loads(stdout)), healed_logits, atol=1e-5)


class _Interrupt:
    """A `TrainerCallback` stand-in that raises after `step` steps (an interrupted run)."""

    def __init__(self, step):
        from transformers import TrainerCallback

        class Raise(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt("interrupted by the test")

        self.callback = Raise()


def test_the_packed_rows_hold_the_guards_rows_and_as_many_training_rows_as_the_token_budget_takes(tiny_tokenizer):
    """The data packed into rows: the guard's `validation_sequences` first, then the training rows, cut to the steps
    `max_tokens` makes (one batch at least); with fewer rows than that, the steps the rows make, no epoch twice; data
    that leaves no training row is refused, saying how many rows it makes."""
    from diet_hf.healing.data import pack_sources
    from diet_hf.healing.run import _packed_rows

    total = pack_sources({"data": TEXTS}, tiny_tokenizer, 16).shape[0]
    assert total >= 8
    rows = _packed_rows({"data": TEXTS}, tiny_tokenizer, _small(max_tokens=16 * 2 * 2))  # 2 steps of 2 rows
    assert (rows.validation.shape[0], rows.train.shape[0], rows.max_steps) == (2, 4, 2)
    rows = _packed_rows({"data": TEXTS}, tiny_tokenizer, _small(max_tokens=10**6, validation_sequences=total - 3))
    assert (rows.train.shape[0], rows.max_steps) == (3, 2)  # 3 rows: 2 steps of 2 rows, the last with one
    with pytest.raises(
        ValueError, match=rf"packs into {total} sequences of 16 tokens; at least {total + 1} are needed"
    ):
        _packed_rows({"data": TEXTS}, tiny_tokenizer, _small(validation_sequences=total))


def test_a_students_fingerprint_sees_a_change_that_keeps_each_weights_sum_and_a_change_of_config():
    """What `resume` compares a student by: its weights' sums and sums of squares and its config. A change that keeps
    a weight's sum (one entry up, another down by as much) or the weights (a config value) is another student."""
    from diet_hf.healing.resume import fingerprint

    student = _pair()[1]
    before = fingerprint(student)
    assert fingerprint(_pair()[1]) == before  # the same student, built again
    with torch.no_grad():
        weight = student.model.layers[0].mlp.down_proj.weight
        weight[0, 0] += 0.25
        weight[0, 1] -= 0.25
    changed = fingerprint(student)
    assert changed != before
    student.config.rms_norm_eps *= 10
    assert fingerprint(student) != changed


@pytest.mark.parametrize("stride", [1, 3])
def test_resume_gives_the_same_weights_and_interrupted_output_is_absent(tmp_path, tiny_tokenizer, stride):
    config = _small(lora_dropout=0.1, position_stride=stride)
    teacher, student = _pair()
    straight = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, output_dir=tmp_path / "a")
    teacher, student = _pair()
    with pytest.raises(KeyboardInterrupt):
        heal(
            student,
            teacher,
            tiny_tokenizer,
            TEXTS,
            config=config,
            output_dir=tmp_path / "b",
            callbacks=[_Interrupt(3).callback],
        )
    assert not (tmp_path / "b").exists()  # absent, not half-written
    assert (tmp_path / "b.healing" / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(FileExistsError, match="pass `resume=True`"):
        heal(*_pair()[::-1], tiny_tokenizer, TEXTS, config=config, output_dir=tmp_path / "b")
    # a resumed run must train what the interrupted one did: other options, models or data are refused
    for change, other in (
        (r"learning_rate \(0.01 there, 0.02 now\) differ", dict(config=replace(config, learning_rate=2e-2))),
        (r"student; teacher \('None \(\w+\)' there, 'None \(\w+\)' now\) differ", dict(models=_pair(seed=1))),
        ("data differ", dict(data=TEXTS[::-1])),
    ):
        teacher, student = other.get("models", _pair())
        with pytest.raises(ValueError, match=rf"`resume`: .*b.healing holds a run that trained otherwise: {change}"):
            heal(
                student,
                teacher,
                tiny_tokenizer,
                other.get("data", TEXTS),
                config=other.get("config", config),
                output_dir=tmp_path / "b",
                resume=True,
            )
    assert (tmp_path / "b.healing" / "checkpoints" / "checkpoint-2").is_dir() and not (tmp_path / "b").exists()
    teacher, student = _pair()
    longer = replace(config, max_time=3600.0, save_steps=3)  # how long and how often it saves may change
    resumed = heal(student, teacher, tiny_tokenizer, TEXTS, config=longer, output_dir=tmp_path / "b", resume=True)
    assert resumed.config.pruning["healing"]["steps"] == 6
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_the_run_fingerprint_sums_the_weights_a_slice_at_a_time(monkeypatch):
    """`run.json`'s fingerprint of a model reads its weights in float64 slices (a 9B model's embedding is 7 GB in
    float64): slices of 5 give the fingerprint of one slice per tensor, and any weight's change moves it."""
    import diet_hf.healing.resume as resume

    teacher, student = _pair()
    whole = resume.fingerprint(student)
    monkeypatch.setattr(resume, "_FINGERPRINT_CHUNK", 5)
    assert resume.fingerprint(student) == whole
    with torch.no_grad():
        next(student.parameters()).view(-1)[7] += 1e-3
    assert resume.fingerprint(student) != whole


@pytest.mark.parametrize("wrapped", [True, False])
def test_unmerged_peft_adapters_on_the_student_or_the_teacher_are_refused_before_any_work(tmp_path, wrapped):
    """A student fine-tuned with LoRA and not merged: healing's own adapters would be added beside (with the same
    adapter name when injected) or fail on the wrapper; a teacher with adapters is not the merged model the pruner
    pruned. Both refused, naming the argument and `merge_and_unload()`, before any data is read or work made."""
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    def adapted(model):
        config = LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False)
        return get_peft_model(model, config) if wrapped else inject_adapter_in_model(config, model)

    dense = tiny_dense_model("gemma3_text", seed=0, vocab_size=128)
    student = build_pruned_model(dense, PruningPlan.keep_all(dense.config))
    refused = r"holds unmerged PEFT adapters \(2 layers, e\.g\. `[\w.]*model\.layers\.0\.mlp\.down_proj`\): "
    with pytest.raises(ValueError, match=r"`student` " + refused + r"healing adds LoRA .*`merge_and_unload\(\)`"):
        heal(adapted(student), dense, None, None, work_dir=tmp_path / "w")
    dense = tiny_dense_model("gemma3_text", seed=0, vocab_size=128)
    with pytest.raises(ValueError, match=r"`teacher` " + refused + "the student was pruned from the merged model"):
        heal(build_pruned_model(dense, PruningPlan.keep_all(dense.config)), adapted(dense), None, None)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("lora", [True, False])
def test_healing_leaves_the_dense_parent_untouched(tmp_path, tiny_tokenizer, lora):
    """A pruned model shares its unsliced weights (here every attention projection and norm) with the dense model it
    was built from, which is usually the teacher: merging LoRA or training in full must not write through to it."""
    dense = tiny_dense_model("gemma3_text", seed=0, vocab_size=128)
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(0, 64, 2)), list(range(40))]
    plan.__post_init__()
    student = build_pruned_model(dense, plan)
    shared = student.model.layers[0].self_attn.q_proj.weight
    assert shared.data_ptr() == dense.model.layers[0].self_attn.q_proj.weight.data_ptr()
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    # LoRA on every projection, so that the merge touches the attention weights the two models share
    config = _small(lora=lora, lora_modules="all", learning_rate=3e-3 if lora else 1e-3)
    healed = heal(student, dense, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    assert not healed.config.pruning["healing"]["rolled_back"]
    assert not torch.equal(
        healed.model.layers[0].self_attn.q_proj.weight, before["model.layers.0.self_attn.q_proj.weight"]
    )
    for name, value in dense.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert healed.lm_head.weight is healed.model.embed_tokens.weight or not dense.config.tie_word_embeddings


def test_the_guards_scoring_builds_no_autograd_graph(tmp_path, tiny_tokenizer, monkeypatch):
    """The guard scores held-out rows between training steps: under autograd it would keep the decoder's activations
    and take the head's gradient for nothing (a misplaced decorator did that for a while)."""
    grad_modes = []
    _patch_healing(
        monkeypatch, "_scored", lambda scored: lambda *a: grad_modes.append(torch.is_grad_enabled()) or scored(*a)
    )
    teacher, student = _pair()
    heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "w")
    # one forward with autograd per training step (6 steps of one batch); the guard's (before training and every
    # second step) and the teacher's passes without
    assert grad_modes.count(True) == 6 and grad_modes.count(False) >= 4


def test_guard_rolls_back_when_healing_hurts(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    ids = random_batch(1, 8)
    with torch.no_grad():
        before = student(ids).logits
    # documents packed together: read apart, the tiny pair's loss starts near 0.001, and a learning rate of 50 then
    # neither clearly hurts nor keeps the LoRA weights small enough for an exact merge
    config = _small(learning_rate=50.0, separate_documents=False)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert record["rolled_back"] and record["validation_kl_after"] == record["validation_kl_before"]
    with torch.no_grad():
        assert torch.allclose(healed(ids).logits, before, atol=1e-6)


def test_the_time_budget_stops_training_and_the_guard_measures_where_it_stopped(tmp_path, tiny_tokenizer):
    """`max_time`: once it has passed at the end of a step, training stops there (here after the first of 6 steps),
    and the guard measures that step, so the healing it keeps is one it has seen."""
    teacher, student = _pair()
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(max_time=1e-9), work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert record["steps"] == 1 and [entry["step"] for entry in record["validation_kl_history"]] == [0, 1]


def test_full_finetuning_option(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    embedding = student.get_input_embeddings().weight.detach().clone()
    layer = student.model.layers[0].mlp.down_proj.weight.detach().clone()
    dense_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    healed = heal(
        student, teacher, tiny_tokenizer, TEXTS, config=_small(lora=False, learning_rate=1e-3), work_dir=tmp_path / "w"
    )
    record = healed.config.pruning["healing"]
    assert record["adapter"] == "full fine-tuning of the decoder layers" and not record["rolled_back"]
    # the decoder trained, the embedding (and the head tied to it) did not, and the parent is untouched
    assert not torch.equal(healed.model.layers[0].mlp.down_proj.weight, layer)
    assert torch.equal(healed.get_input_embeddings().weight, embedding)
    assert all(torch.equal(v, dense_state[k]) for k, v in teacher.state_dict().items())

    teacher, student = _pair()
    config = _small(lora=False, train_embeddings=True, learning_rate=1e-3)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w2")
    assert healed.config.pruning["healing"]["adapter"] == "full fine-tuning"
    assert not torch.equal(healed.get_input_embeddings().weight, embedding)
    assert healed.get_output_embeddings().weight is healed.get_input_embeddings().weight  # still tied
    assert all(torch.equal(v, dense_state[k]) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize("modules", [None, "mlp", "attention", "all"])
def test_lora_modules_adapts_only_the_named_projections(tmp_path, tiny_tokenizer, modules):
    teacher, student = _pair()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    config = _small(**({} if modules is None else {"lora_modules": modules}), learning_rate=3e-3)
    modules = modules or "mlp"  # the default
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert not record["rolled_back"] and f"on {modules} projections" in record["adapter"]
    changed = {k for k, v in healed.state_dict().items() if not torch.equal(v, before[k])}
    mlp, attention = ("gate_proj", "up_proj", "down_proj"), ("q_proj", "k_proj", "v_proj", "o_proj")
    projections = {"mlp": mlp, "attention": attention, "all": mlp + attention}[modules]
    expected = {k for k in before if k.endswith(".weight") and k.rsplit(".", 2)[-2] in projections}
    assert changed == expected


@pytest.mark.parametrize("keep", [False, True])
def test_keep_bos_state_leaves_the_bos_tokens_hidden_states_as_they_were(tmp_path, tiny_tokenizer, keep):
    """With `keep_bos_state` every LoRA input matrix stays orthogonal to its projection's input at a BOS token in
    position 0, so no layer's output there moves, while the other positions train; without it the BOS token's states
    move too (so this test can fail)."""
    teacher, student = _pair()
    bos = torch.tensor([[tiny_tokenizer.bos_token_id]])
    ids = torch.cat([bos, random_batch(1, 7)], dim=1)
    with torch.no_grad():
        before = student(ids, output_hidden_states=True)
    config = _small(lora_modules="all", keep_bos_state=keep, learning_rate=3e-3)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert not record["rolled_back"]
    assert ("orthogonal to the BOS token's inputs" in record["adapter"]) == keep
    with torch.no_grad():
        after = healed(ids, output_hidden_states=True)
    bos_moved = max(float((a[:, 0] - b[:, 0]).abs().max()) for a, b in zip(after.hidden_states, before.hidden_states))
    rest_moved = float((after.logits[:, 1:] - before.logits[:, 1:]).abs().max())
    assert rest_moved > 1e-3
    if keep:
        assert bos_moved < 1e-5
    else:
        assert bos_moved > 1e-3


def test_keep_bos_state_default_and_bad_input(tmp_path, tiny_tokenizer):
    """On by default with LoRA and a tokenizer with BOS (the record says what ran), off for full fine-tuning and for
    a tokenizer without BOS unless asked for, which then fails before anything is written."""
    with pytest.raises(ValueError, match=r"`keep_bos_state=True` constrains LoRA adapters: it needs `lora=True`"):
        HealingConfig(keep_bos_state=True, lora=False)
    with pytest.raises(ValueError, match=r"`keep_bos_state` must be True, False or None, got 1"):
        HealingConfig(keep_bos_state=1)
    no_bos = copy.deepcopy(tiny_tokenizer)  # the fixture is shared by the session
    no_bos.bos_token = None
    for tokenizer, lora, expected in [
        (tiny_tokenizer, True, True),
        (tiny_tokenizer, False, False),
        (no_bos, True, False),
    ]:
        teacher, student = _pair()
        config = _small(lora=lora, learning_rate=3e-3 if lora else 1e-3)
        healed = heal(student, teacher, tokenizer, TEXTS, config=config, work_dir=tmp_path / f"w{lora}{expected}")
        assert healed.config.pruning["healing"]["options"]["keep_bos_state"] is expected
    teacher, student = _pair()
    with pytest.raises(ValueError, match="needs a tokenizer with a BOS token"):
        heal(student, teacher, no_bos, TEXTS, config=_small(keep_bos_state=True), work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_document_position_ids_read_every_packed_document_as_if_alone(tiny_tokenizer):
    """Position ids restarting at every BOS make a packed row's documents attend only to themselves: the pruned
    student's hidden states and the teacher's targets equal those of each document run alone (and differ without)."""
    teacher, student = _pair()
    bos = tiny_tokenizer.bos_token_id
    docs = [torch.cat([torch.tensor([[bos]]), random_batch(1, n, seed=n)], dim=1) for n in (6, 4, 3)]
    row = torch.cat(docs, dim=1)
    assert document_position_ids(row, bos).tolist() == [[*range(7), *range(5), *range(4)]]
    assert document_position_ids(row[:, 2:], bos).tolist() == [[*range(5), *range(5), *range(4)]]  # no BOS first
    with torch.no_grad():
        # no cache: transformers reads packed documents from the position ids only without one
        positions = document_position_ids(row, bos)
        packed = student.model(input_ids=row, position_ids=positions, use_cache=False).last_hidden_state
        plain = student.model(input_ids=row).last_hidden_state
        alone = torch.cat([student.model(input_ids=d).last_hidden_state for d in docs], dim=1)
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(plain[:, 7:], alone[:, 7:], atol=1e-2)
    targets = teacher_targets(teacher, row, top_k=None, document_bos=bos)["logprobs"]
    for start, doc in zip((0, 7, 12), docs):
        own = teacher_targets(teacher, doc, top_k=None)["logprobs"]
        assert torch.allclose(targets[start : start + doc.shape[1] - 1], own, atol=1e-5)


@pytest.mark.parametrize("separate", [None, True])
def test_heal_with_separate_documents(tmp_path, tiny_tokenizer, separate):
    """`separate_documents` (the default with a BOS token): rows start with BOS, the teacher's cached targets (and the
    guard) read every document apart, training runs and the record says so; a tokenizer without BOS fails before
    anything is written when it is asked for, and resolves it off by default."""
    teacher, student = _pair()
    bos = tiny_tokenizer.bos_token_id
    config = _small(separate_documents=separate, learning_rate=3e-3)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert record["options"]["separate_documents"] is True and not record["rolled_back"]
    from safetensors.torch import load_file

    cached = load_file(tmp_path / "w" / "teacher_validation.safetensors")
    rows = cached["rows"]
    assert (rows[:, 0] == bos).all() and ((rows == bos).sum(dim=1) > 1).any()  # rows hold several documents
    own = teacher_targets(teacher, rows, top_k=8, document_bos=bos)
    assert torch.allclose(cached["logprobs"], own["logprobs"], atol=1e-5)
    assert not torch.allclose(cached["logprobs"], teacher_targets(teacher, rows, top_k=8)["logprobs"], atol=1e-3)
    no_bos = copy.deepcopy(tiny_tokenizer)  # the fixture is shared by the session
    no_bos.bos_token = None
    if separate:
        with pytest.raises(ValueError, match="`separate_documents=True` needs a tokenizer with a BOS token"):
            heal(student, teacher, no_bos, TEXTS, config=config, work_dir=tmp_path / "v")
        assert not (tmp_path / "v").exists()
        with pytest.raises(ValueError, match="`separate_documents` must be True, False or None, got 1"):
            HealingConfig(separate_documents=1)
    else:
        _, student = _pair()
        healed = heal(student, teacher, no_bos, TEXTS, config=config, work_dir=tmp_path / "v")
        assert healed.config.pruning["healing"]["options"]["separate_documents"] is False


def test_layerwise_loss_against_brute_force_and_zero_for_the_teacher_itself():
    torch.manual_seed(0)
    student = [torch.randn(2, 5, 8) for _ in range(3)]
    teacher = [torch.randn(2, 5, 8) for _ in range(3)]
    expected = sum(
        float(((s - t).norm(dim=-1) ** 2 / t.norm(dim=-1) ** 2).mean()) for s, t in zip(student, teacher)
    ) / len(teacher)
    assert float(layerwise_loss(student, teacher)) == pytest.approx(expected, rel=1e-5)
    assert float(layerwise_loss(teacher, teacher)) == 0.0
    with pytest.raises(ValueError, match="2 student layer outputs for 3"):
        layerwise_loss(student[:2], teacher)


def test_layerwise_healing_runs_the_teacher_beside_the_student(tmp_path, tiny_tokenizer, monkeypatch):
    teacher, student = _pair()
    reference = [p.detach().clone() for p in student.parameters()]
    passes = []
    _patch_healing(
        monkeypatch,
        "teacher_targets",
        lambda original: lambda *a, **k: passes.append(k.get("layer_outputs")) or original(*a, **k),
    )
    healed = heal(
        student, teacher, tiny_tokenizer, TEXTS, config=_small(hidden_weight=0.5, position_stride=3), work_dir=tmp_path
    )
    record = healed.config.pruning["healing"]
    assert "0.5 x relative squared error of every layer's output" in record["objective"]
    # no precomputed pass over the training rows: the teacher's top-k targets and layer outputs come with every step
    training_passes = [layers for layers in passes if layers is not None]
    assert len(training_passes) == record["steps"]  # one batch per step (no accumulation in `_small`)
    assert all(len(layers) == teacher.config.num_hidden_layers for layers in training_passes)
    assert record["validation_kl_after"] < record["validation_kl_before"]
    assert any(not torch.equal(a, b) for a, b in zip(reference, healed.parameters()))
    # the same run without the layer-wise term: the first step's loss (same data, same start) is the KL alone, lower
    teacher, student = _pair()
    plain = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(position_stride=3), work_dir=tmp_path / "p")
    first, first_plain = record["loss_curve"][0][1], plain.config.pruning["healing"]["loss_curve"][0][1]
    assert first > first_plain + 1e-3
    with pytest.raises(ValueError, match="`hidden_weight` must be a number >= 0"):
        HealingConfig(hidden_weight=-1)


def test_train_embeddings_needs_full_finetuning():
    with pytest.raises(ValueError, match="`train_embeddings=True` applies to full fine-tuning"):
        HealingConfig(train_embeddings=True)


def test_online_full_vocabulary_teacher(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(top_k=None), work_dir=tmp_path / "w")
    assert "full vocabulary" in healed.config.pruning["healing"]["objective"]


# ----------------------------------------------------------------------------------------------------- bad input


def test_a_teacher_that_is_not_the_parent_fails_before_training(tmp_path, tiny_tokenizer):
    _, student = _pair()
    for other in (tiny_dense_model("gemma3_text", hidden_size=48), tiny_dense_model("gemma3_text", vocab_size=96)):
        with pytest.raises(ValueError, match="`teacher` is not the dense parent"):
            heal(student, other, tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="model_type: student pruned_gemma3_text, teacher gemma2"):
        check_parent(student.config, tiny_dense_model("gemma2").config)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.healing").exists()


def test_rows_longer_than_the_models_context_are_refused_before_training(tmp_path, tiny_tokenizer, capsys):
    """`--seq-len 100000` on a small model ran the teacher's pass over rows of that length until the process was
    killed for memory."""
    teacher, student = _pair()
    context = student.config.max_position_embeddings
    with pytest.raises(ValueError, match=rf"`seq_len` {context + 1} is longer than the model's context"):
        heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(seq_len=context + 1), output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.healing").exists()
    # rows of exactly the context are what it was trained to read
    config = _small(seq_len=context, max_tokens=context * 2 * 2, validation_sequences=1, eval_steps=1)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS * 4, config=config, work_dir=tmp_path / "w")
    assert healed.config.pruning["healing"]["options"]["seq_len"] == context
    assert "healing: 100%" in capsys.readouterr().err  # a progress bar by default


def test_heal_arguments_of_the_wrong_type_are_named_before_any_work(tmp_path, tiny_tokenizer):
    """Each failed deep inside before (`AttributeError` on None, a bare `os.fspath` or `dict()` error)."""
    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    out = tmp_path / "healed"
    for kwargs, error, message in [
        ({"student": None}, TypeError, r"`student` must be a pruned model made by diet-hf, got NoneType"),
        ({"teacher": 3}, TypeError, r"`teacher` must be the dense parent: a model, a Hub id or a directory, got int"),
        ({"output_dir": 3}, TypeError, r"`output_dir` must be a path \(a `str` or `os.PathLike`\), got int: 3"),
        ({"work_dir": ""}, ValueError, r"`work_dir` is an empty path"),
        ({"resume": "yes"}, TypeError, r"`resume` must be True or False, got 'yes'"),
        ({"eval_options": "limit=5"}, TypeError, r"`eval_options` must be a dict, got str: 'limit=5'"),
        ({"data_record": ["rte"]}, TypeError, r"`data_record` must be a dict, got list"),
        ({"callbacks": [print]}, TypeError, r"`callbacks` must be a list of transformers `TrainerCallback`s"),
    ]:
        given = {"student": student, "teacher": teacher, "output_dir": out, **kwargs}
        with pytest.raises(error, match=message):
            heal(given.pop("student"), given.pop("teacher"), tiny_tokenizer, TEXTS, config=_small(), **given)
    assert list(tmp_path.iterdir()) == []


def test_a_dense_student_is_refused_by_name_before_training(tmp_path, tiny_tokenizer):
    """Not "`teacher` is not the dense parent ... (the card names None)": the student is what is wrong."""
    dense, _ = _pair()
    for teacher in (dense, tiny_dense_model("gemma2")):
        with pytest.raises(
            ValueError, match=r"`student` must be a pruned model made by diet-hf, got a Gemma3ForCausalLM"
        ):
            heal(copy.deepcopy(dense), teacher, tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.healing").exists()


def test_the_student_itself_as_teacher_fails_and_a_pruned_teacher_warns(tmp_path, tiny_tokenizer, caplog):
    dense, student = _pair()
    with pytest.raises(ValueError, match="`teacher` is a pruned model with this student's own per-layer sizes"):
        heal(student, student, tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.healing").exists()
    student.save_pretrained(tmp_path / "pruned")  # the CLI's case: the same checkpoint passed twice
    with pytest.raises(ValueError, match="the card names"):
        check_parent(student.config, AutoConfig.from_pretrained(tmp_path / "pruned", trust_remote_code=True))
    plan = PruningPlan.keep_all(dense.config)  # a teacher pruned less than the student: allowed, with a warning
    plan.mlp_kept_indices = [list(range(48)), list(range(56))]
    plan.__post_init__()
    with caplog.at_level(logging.WARNING, logger="diet_hf.healing"):
        check_parent(student.config, build_pruned_model(dense, plan).config)
    assert "`teacher` is itself pruned (pruned_gemma3_text)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diet_hf.healing"):
        check_parent(student.config, dense.config)  # the dense parent: silent
    assert caplog.text == ""


def test_empty_or_tiny_data_fails_clearly(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    with pytest.raises(ValueError, match="healing data is empty"):
        heal(student, teacher, tiny_tokenizer, [], config=_small(), output_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="at least 3 are needed"):
        heal(student, teacher, tiny_tokenizer, TEXTS[:2], config=_small(), output_dir=tmp_path / "x")
    # blank texts (a dataset's empty rows) are not trained on as BOS and EOS alone: left out, as on the command line
    from diet_hf.healing.data import training_texts

    assert training_texts(["", *TEXTS[:2], " \n"]) == TEXTS[:2]
    assert training_texts(datasets.Dataset.from_dict({"text": ["", TEXTS[0]]})) == TEXTS[:1]
    with pytest.raises(ValueError, match="healing data is empty"):
        heal(student, teacher, tiny_tokenizer, ["", " "], config=_small(), output_dir=tmp_path / "x")
    # texts that are not strings, no data, options not a `HealingConfig`: each named
    with pytest.raises(TypeError, match=r"The healing data must be texts \(strings\); one of them is a int: 3"):
        heal(student, teacher, tiny_tokenizer, [*TEXTS, 3], config=_small(), output_dir=tmp_path / "x")
    with pytest.raises(TypeError, match=r"`data` is None: pass the healing texts"):
        heal(student, teacher, tiny_tokenizer, None, config=_small(), output_dir=tmp_path / "x")
    with pytest.raises(
        TypeError, match=r"`config` must be a `HealingConfig`, got dict: pass `HealingConfig\(\*\*config\)`"
    ):
        heal(student, teacher, tiny_tokenizer, TEXTS, config={"max_tokens": 64}, output_dir=tmp_path / "x")
    untexted = datasets.Dataset.from_dict({"sentence": TEXTS})
    with pytest.raises(ValueError, match=r"`data` is a dataset without a `text` column; columns: \['sentence'\]"):
        heal(student, teacher, tiny_tokenizer, untexted, config=_small(), output_dir=tmp_path / "x")
    # a stream whose columns are known only once it is read (a streamed JSON dataset): its first row's
    streamed = datasets.IterableDataset.from_generator(lambda: ({"sentence": text} for text in TEXTS))
    assert streamed.column_names is None
    with pytest.raises(ValueError, match=r"`data` is a dataset without a `text` column; columns: \['sentence'\]"):
        heal(student, teacher, tiny_tokenizer, streamed, config=_small(), output_dir=tmp_path / "x")
    splits = datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": TEXTS})})
    with pytest.raises(ValueError, match=r"`data` is a `DatasetDict` of the splits \['validation'\]; pass one split"):
        heal(student, teacher, tiny_tokenizer, splits, config=_small(), output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_teacher_or_student_that_overflowed_its_dtype_fails_before_training(tmp_path, tiny_tokenizer):
    """Distilling from NaN targets, or guarding with a NaN KL, would train on nothing or keep anything: the run stops
    before any step, naming the fix; no healed model is written."""
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"The teacher's logits are not finite: .*bfloat16 or float32"):
        heal(student, overflowing(teacher), tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "a")
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"The student's KL to the teacher on the guard's rows is nan: .*bfloat16"):
        heal(overflowing(student), teacher, tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_teacher_revision_is_for_a_teacher_given_by_name(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"`teacher_revision` is for a teacher given as a Hub id or directory; .*"
                       r"loaded model .*load it at the revision you want instead"):  # fmt: skip
        heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), teacher_revision="v1")
    with pytest.raises(ValueError, match=r"`teacher_revision` must be a branch, tag or commit name; got ''"):
        heal(student, "org/teacher", tiny_tokenizer, TEXTS, config=_small(), teacher_revision="")
    with pytest.raises(ValueError, match=r"`teacher_gguf_file` is for a teacher given as a Hub id or directory; .*"
                       r"load it from the GGUF file"):  # fmt: skip
        heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), teacher_gguf_file="dense.gguf")
    with pytest.raises(ValueError, match=r"`teacher_gguf_file` must be the name of a GGUF file; got 3"):
        heal(student, "org/teacher", tiny_tokenizer, TEXTS, config=_small(), teacher_gguf_file=3)
    assert list(tmp_path.iterdir()) == []


def test_an_output_dir_that_cannot_take_the_model_fails_before_training(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    (tmp_path / "file").write_text("keep")
    with pytest.raises(NotADirectoryError, match=r"`output_dir`: .*file exists and is not a directory"):
        heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "file")
    teacher.save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match=r"`output_dir` .*dense is the teacher"):
        heal(student, str(tmp_path / "dense"), tiny_tokenizer, TEXTS, config=_small(), output_dir=tmp_path / "dense")
    assert (tmp_path / "file").read_text() == "keep"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dense", "file"]  # no work directory: nothing ran


# ----------------------------------------------------------------------------------------------------------- CLI


def test_cli_heal(tmp_path, tiny_tokenizer, data_dir, capsys):
    from diet_hf.cli import main

    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    student.save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    teacher.save_pretrained(tmp_path / "dense")
    flags = [
        "--data",
        "rte",
        "--data-dir",
        str(data_dir),
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--max-tokens",
        "64",
    ]
    flags += [
        "--gradient-accumulation-steps",
        "1",
        "--validation-sequences",
        "2",
        "--eval-steps",
        "1",
        "--top-k",
        "4",
        "--lora-r",
        "2",
        "--quiet",
    ]
    argv = ["heal", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"), "--output", str(tmp_path / "h")]
    size = sum(p.numel() * p.element_size() for p in student.parameters())
    assert main([*argv, *flags, "--max-shard-size", str(size // 3)]) == 0
    assert len(list((tmp_path / "h").glob("model-*.safetensors"))) >= 3  # the healed weights in files of that size
    out, err = capsys.readouterr()
    assert "2 steps, 64 tokens" in out
    assert "healing:" not in err and "teacher top-k" not in err  # --quiet: no progress bars
    assert "'loss'" not in out  # transformers' raw log dicts are not printed (the loss is on the progress bar)
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    healing = config["pruning"]["healing"]
    assert healing["data"] == {"sources": ["rte"], "splits": {"rte": "train"}}
    assert healing["options"]["top_k"] == 4 and healing["options"]["lora_r"] == 2
    other = tiny_dense_model("gemma3_text", hidden_size=48, vocab_size=len(tiny_tokenizer))
    other.save_pretrained(tmp_path / "other")
    argv[3] = str(tmp_path / "other")
    argv[5] = str(tmp_path / "h2")
    assert main(argv + flags) == 1
    assert "`teacher` is not the dense parent" in capsys.readouterr().err
    assert not (tmp_path / "h2").exists()
    tiny_tokenizer.save_pretrained(tmp_path / "dense")  # the dense model given as the model to heal
    dense_as_model = ["heal", str(tmp_path / "dense"), "--teacher", str(tmp_path / "dense"), "--output"]
    assert main([*dense_as_model, str(tmp_path / "h3"), *flags]) == 1
    assert "`model` must be a pruned model saved by diet-hf;" in capsys.readouterr().err
    assert not (tmp_path / "h3").exists()
    assert main(argv[:2] + ["--output", "x"]) == 2  # --teacher is required


def test_cli_heal_on_your_own_texts(tmp_path, tiny_tokenizer, capsys, monkeypatch, caplog):
    from diet_hf.cli import main

    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    student.save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    teacher.save_pretrained(tmp_path / "dense")
    (tmp_path / "mine.txt").write_text("\n".join(TEXTS) + "\n")
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)  # your own texts need no benchmark data
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"), "--output"]
    flags = ["--seq-len", "16", "--batch-size", "2", "--max-tokens", "64", "--gradient-accumulation-steps", "1"]
    flags += ["--validation-sequences", "2", "--eval-steps", "1", "--top-k", "4", "--lora-r", "2"]
    data = ["--data", f"mine={tmp_path / 'mine.txt'}"]
    assert main([*argv, str(tmp_path / "h"), *data, *flags]) == 0
    assert "2 steps, 64 tokens" in capsys.readouterr().out
    healing = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]
    # where your texts were read, without the local path: the record goes into a config and card that get published
    assert healing["data"] == {"sources": ["mine"], "splits": {}, "own_sources": {"mine": {"local": "file"}}}
    saved = [(tmp_path / "h" / name).read_text() for name in ("config.json", "README.md")]
    assert all("mine.txt" not in text for text in saved) and "| data | mine (a local file) |" in saved[1]
    # `tasks` names the model's own calibration data, which is not saved with it
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    config["pruning"] = {"tasks": ["rte", "support"]}
    (tmp_path / "pruned" / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="diet_hf.cli"):
        assert main([*argv[1:], str(tmp_path / "h3"), *data, "tasks", *flags]) == 0  # not --quiet
    assert "also calibrated on your own data (support)" in caplog.text
    assert json.loads((tmp_path / "h3" / "config.json").read_text())["pruning"]["healing"]["data"]["sources"] == [
        "mine"
    ]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    for bad, message in (
        (["--data", "nosuch"], "`--data`: 'nosuch' is not wikitext2, tasks, a registered task"),
        (["--data", f"a={tmp_path / 'nope.txt'}"], "`--data` a: no file or directory at"),
        (["--data", f"rte={tmp_path / 'mine.txt'}"], "`--data` rte: the name is taken"),
        # conversations are rendered by the pruned model's tokenizer, which here has no chat template
        (["--data", f"chats={chats}"], "has no chat template, so conversations cannot be rendered"),
        (["--create-pr"], "`--create-pr` opens a pull request with the upload, so it needs `--push-to-hub"),
    ):
        assert main([*argv, str(tmp_path / "h2"), *bad, *flags]) == 2  # a usage error, before any model loads
        assert message in capsys.readouterr().err
    assert not (tmp_path / "h2").exists()
    # rows longer than the model's context: refused before training, named as the flag
    context = json.loads((tmp_path / "pruned" / "config.json").read_text())["max_position_embeddings"]
    assert main([*argv, str(tmp_path / "h2"), *data, *flags, "--seq-len", str(context + 1)]) == 1
    assert f"`--seq-len` {context + 1} is longer than the model's context" in capsys.readouterr().err
    # a task without a train split in the data directory: refused before any model loads, named as the flag
    from transformers import AutoModelForCausalLM

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", loaded)
    (tmp_path / "data" / "piqa").mkdir(parents=True)
    piqa = ["--data", "piqa", "--data-dir", str(tmp_path / "data")]
    assert main([*argv, str(tmp_path / "h2"), *piqa, *flags]) == 1
    assert "its train split is not available" in (err := capsys.readouterr().err) and "out of `--data`" in err
    assert not (tmp_path / "h2").exists()


def test_cli_heal_writes_questions_as_the_model_was_calibrated(
    tmp_path, tiny_tokenizer, data_dir, capsys, monkeypatch
):
    """`heal --data`'s questions (a registered task's train examples, your own) are written in MODEL's chat template
    where its pruning record says it was calibrated so (`calibration_chat_template`), or with `--data-chat-template`;
    plain with `--no-data-chat-template` or without the record; the card says so. `--data-chat-template` on a
    tokenizer without a template is a usage error before any model loads."""
    from conftest import chat_tokenizer

    import diet_hf.healing
    from diet_hf.cli import main
    from diet_hf.tasks import chat_calibration_request, custom_calibration, multiple_choice_task

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    teacher, student = _pair(vocab_size=len(tokenizer))
    student.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    teacher.save_pretrained(tmp_path / "dense")
    config_file = tmp_path / "pruned" / "config.json"
    config = json.loads(config_file.read_text())
    config["pruning"] = {"tasks": ["rte"], "calibration_chat_template": True}
    config_file.write_text(json.dumps(config))
    question = {"context": "Is two an even number, as four and six are? " * 3, "choices": ["yes", "no"], "label": 0}
    (tmp_path / "q.jsonl").write_text(json.dumps(question) + "\n")
    real_heal, seen = diet_hf.healing.heal, []
    monkeypatch.setattr(diet_hf.healing, "heal", lambda *a, **k: seen.append(a[3]) or real_heal(*a, **k))
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"), "--output"]
    flags = ["--data", "tasks", f"mine={tmp_path / 'q.jsonl'}", "--data-dir", str(data_dir), "--seq-len", "16"]
    flags += ["--batch-size", "2", "--max-tokens", "64", "--gradient-accumulation-steps", "1"]
    flags += ["--validation-sequences", "2", "--eval-steps", "1", "--top-k", "4", "--lora-r", "2"]

    render = lambda request: chat_calibration_request(tokenizer, request)  # noqa: E731
    chat_rte, _ = healing_texts(["rte"], data_dir=data_dir, render=render)
    plain_rte, _ = healing_texts(["rte"], data_dir=data_dir)
    mine = multiple_choice_task("mine", [question])
    chat_mine, plain_mine = (custom_calibration("mine", mine, answer="gold", render=r).texts for r in (render, None))
    assert chat_mine != plain_mine and chat_rte != plain_rte
    from transformers import AutoTokenizer

    loads, load_tokenizer = [], AutoTokenizer.from_pretrained.__func__
    monkeypatch.setattr(  # the tokenizer that rendered the questions is the one heal uses: loaded once
        AutoTokenizer,
        "from_pretrained",
        classmethod(lambda cls, *a, **k: loads.append(a[0]) or load_tokenizer(cls, *a, **k)),
    )
    assert main([*argv, str(tmp_path / "h"), *flags]) == 0  # by the pruning record
    assert seen[-1] == {"rte": chat_rte, "mine": chat_mine}
    assert [str(path) for path in loads].count(str(tmp_path / "pruned")) == 1, loads
    healing = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]
    assert healing["data"]["questions_in_chat_template"] is True
    assert "; questions in the model's chat template" in (tmp_path / "h" / "README.md").read_text()
    assert main([*argv, str(tmp_path / "h2"), *flags, "--no-data-chat-template"]) == 0
    assert seen[-1] == {"rte": plain_rte, "mine": plain_mine}
    assert (
        "questions_in_chat_template"
        not in json.loads((tmp_path / "h2" / "config.json").read_text())["pruning"]["healing"]["data"]
    )
    config["pruning"] = {"tasks": ["rte"]}  # calibrated on plain texts (or saved before the option)
    config_file.write_text(json.dumps(config))
    assert main([*argv, str(tmp_path / "h3"), *flags]) == 0
    assert seen[-1] == {"rte": plain_rte, "mine": plain_mine}
    assert main([*argv, str(tmp_path / "h4"), *flags, "--data-chat-template"]) == 0
    assert seen[-1] == {"rte": chat_rte, "mine": chat_mine}
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        (tmp_path / "pruned" / name).unlink(missing_ok=True)
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")  # no chat template
    assert main([*argv, str(tmp_path / "h5"), *flags, "--data-chat-template"]) == 2
    assert "`--data-chat-template`: the tokenizer of" in capsys.readouterr().err
    assert len(seen) == 4 and not (tmp_path / "h5").exists()


HELD_OUT = ["Question: is the sky green? Answer: no", "True or False: two is even. True", "The answer was yes"]


@pytest.mark.parametrize("how", ["precomputed", "by_path", "online"])
def test_heal_scores_held_out_texts_on_teacher_unhealed_and_healed(tmp_path, tiny_tokenizer, how, caplog):
    from diet_hf.evaluation import paired_bootstrap_perplexity, texts_perplexity

    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    unhealed = copy.deepcopy(student)
    given = teacher
    if how == "by_path":
        teacher.save_pretrained(tmp_path / "dense")
        given = str(tmp_path / "dense")
    config = _small(top_k=None) if how == "online" else _small()
    texts = {"mine": HELD_OUT, "overlap": [TEXTS[0], *HELD_OUT[:1]]}
    with caplog.at_level(logging.WARNING, logger="diet_hf.healing"):
        healed = heal(
            student, given, tiny_tokenizer, TEXTS, config=config, output_dir=tmp_path / "h", eval_texts=texts
        )
    assert "1 of the 2 held-out texts 'overlap' are also in the healing data" in caplog.text
    assert "'mine'" not in caplog.text
    record = healed.config.pruning["healing"]["held_out_texts"]
    assert list(record) == ["mine", "overlap"]
    for name, held_out in texts.items():
        expected = {
            key: texts_perplexity(model, tiny_tokenizer, held_out, disable_progress=True)
            for key, model in (("teacher", teacher), ("unhealed", unhealed), ("healed", healed))
        }
        row = record[name]
        assert (row["texts"], row["tokens"]) == (len(held_out), expected["healed"]["tokens"])
        for key in ("teacher", "unhealed", "healed"):
            assert row[key] == pytest.approx(expected[key]["perplexity"], rel=1e-3)
        assert row["healed"] != pytest.approx(row["unhealed"], rel=1e-4)  # healing changed the model
        for key, base in (("healed_over_unhealed", "unhealed"), ("healed_over_teacher", "teacher")):
            ratio = paired_bootstrap_perplexity(expected["healed"], expected[base])
            assert row[key]["ratio"] == pytest.approx(ratio["ratio"], rel=1e-3)
            assert row[key]["ci95"] == pytest.approx(ratio["ci95"], rel=1e-3)
        gap = row["unhealed"] / row["teacher"]
        assert row["gap_closed"] == pytest.approx(math.log(row["unhealed"] / row["healed"]) / math.log(gap), abs=1e-3)
    card = (tmp_path / "h" / "README.md").read_text()
    line = next(x for x in card.splitlines() if x.startswith("| mine |"))
    mine = record["mine"]
    assert f"| {mine['teacher']:.3f} | {mine['unhealed']:.3f} | {mine['healed']:.3f} |" in line
    assert "healed / unhealed" in card and "gap closed" in card
    assert "| objective | KL(teacher \\|\\| student) on " in card  # the pipes escaped, not cell borders
    assert_tables_well_formed(card)


def test_a_resumed_run_loads_the_teacher_to_score_the_held_out_texts(tmp_path, tiny_tokenizer):
    """A resumed run finds the teacher's cached targets and needs no teacher for training; the held-out texts are
    still scored on it (loaded for that alone), and the record equals an uninterrupted run's."""
    vocab = len(tiny_tokenizer)
    teacher, student = _pair(vocab_size=vocab)
    teacher.save_pretrained(tmp_path / "dense")
    straight = heal(
        student, teacher, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "a", eval_texts=HELD_OUT
    )
    by_path = [str(tmp_path / "dense"), tiny_tokenizer, TEXTS]
    options = {"config": _small(), "output_dir": tmp_path / "b", "eval_texts": HELD_OUT}
    with pytest.raises(KeyboardInterrupt):
        heal(_pair(vocab_size=vocab)[1], *by_path, callbacks=[_Interrupt(3).callback], **options)
    assert (tmp_path / "b.healing" / "teacher_train.safetensors").is_file()
    resumed = heal(_pair(vocab_size=vocab)[1], *by_path, resume=True, **options)
    expected = straight.config.pruning["healing"]["held_out_texts"]["texts"]
    got = resumed.config.pruning["healing"]["held_out_texts"]["texts"]
    for key in ("teacher", "unhealed", "healed", "gap_closed"):
        assert got[key] == pytest.approx(expected[key], rel=1e-3), key


def test_heal_held_out_texts_bad_input_fails_before_training(tmp_path, tiny_tokenizer):
    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    for bad, error, message in (
        ("one text", TypeError, "`eval_texts` must be a list of strings"),
        ([], ValueError, "`eval_texts` 'texts' is empty"),
        ({}, ValueError, "`eval_texts` is an empty dict"),
        ({"a": ["ok", ""]}, ValueError, "`eval_texts` 'a' must hold non-empty strings"),
        ({"a": ["ok", 3]}, ValueError, "`eval_texts` 'a' must hold non-empty strings"),
    ):
        with pytest.raises(error, match=message):
            heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "w", eval_texts=bad)
        assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="`max_shard_size` must be a number of bytes or a size such as '2GB'"):
        heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "w", max_shard_size="2XB")
    assert not (tmp_path / "w").exists()


def _saved_pair_for_cli(tmp_path, tokenizer) -> tuple[list[str], list[str]]:
    """A saved pruned student and its dense teacher, healing texts in `mine.txt`; `diet-hf heal`'s arguments up to
    `--output` and the flags of a seconds-long run on them."""
    teacher, student = _pair(vocab_size=len(tokenizer))
    student.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    teacher.save_pretrained(tmp_path / "dense")
    (tmp_path / "mine.txt").write_text("\n".join(TEXTS) + "\n")
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"), "--output"]
    flags = ["--seq-len", "16", "--batch-size", "2", "--max-tokens", "64", "--gradient-accumulation-steps", "1"]
    flags += ["--validation-sequences", "2", "--eval-steps", "1", "--top-k", "4", "--lora-r", "2"]
    return argv, [*flags, "--data", f"mine={tmp_path / 'mine.txt'}"]


def test_cli_heal_eval_texts(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    from diet_hf.cli import main

    argv, flags = _saved_pair_for_cli(tmp_path, tiny_tokenizer)
    (tmp_path / "held.txt").write_text("\n".join(HELD_OUT) + "\n")
    monkeypatch.delenv("DIET_DATA_DIR", raising=False)
    assert main([*argv, str(tmp_path / "h"), *flags, "--eval-texts", f"held={tmp_path / 'held.txt'}"]) == 0
    out = capsys.readouterr().out
    row = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]["held_out_texts"]["held"]
    ratio = row["healed_over_unhealed"]
    assert (
        f"  held: perplexity {row['unhealed']:.3f} -> {row['healed']:.3f} (teacher {row['teacher']:.3f}), healed / "
        f"unhealed {ratio['ratio']:.3f} [{ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}] (3 held-out texts)"
    ) in out
    assert "| held | 3 |" in (tmp_path / "h" / "README.md").read_text()
    for bad, message in (
        (["--eval-texts", f"a={tmp_path / 'nope.txt'}"], "`--eval-texts` a: no file or directory at"),
        (["--eval-texts", f"a={tmp_path / 'held.txt'}", f"a={tmp_path / 'held.txt'}"], "each NAME once"),
    ):
        assert main([*argv, str(tmp_path / "h2"), *flags, *bad]) == 2  # a usage error, before any model loads
        assert message in capsys.readouterr().err
    assert not (tmp_path / "h2").exists()


def test_cli_heal_refuses_a_fine_tuned_pruned_model_saved_as_its_adapter_and_heals_it_merged(
    tmp_path, tiny_tokenizer, capsys
):
    """A pruned model fine-tuned with LoRA and saved as the adapter alone: `diet-hf heal ADAPTER` says what it is and
    how to merge it (it failed with "Unrecognized model" before); done as the message says, the merged model heals."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from diet_hf.cli import main

    argv, flags = _saved_pair_for_cli(tmp_path, tiny_tokenizer)
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True)
    config = LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False)
    get_peft_model(pruned, config).save_pretrained(tmp_path / "pruned-lora")
    argv[argv.index(str(tmp_path / "pruned"))] = str(tmp_path / "pruned-lora")
    assert main([*argv, str(tmp_path / "h"), *flags]) == 1
    assert (
        f"`model` {tmp_path / 'pruned-lora'} holds a PEFT LORA adapter of {tmp_path / 'pruned'}, not a pruned model"
        ": healing trains a pruned model's own weights. Merge the adapter into them first (`PeftModel.from_pretrained("
        f"AutoModelForCausalLM.from_pretrained('{tmp_path / 'pruned'}', trust_remote_code=True), "
        f"'{tmp_path / 'pruned-lora'}').merge_and_unload()`)"
    ) in " ".join(capsys.readouterr().err.split())
    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "pruned"), trust_remote_code=True)
    PeftModel.from_pretrained(base, str(tmp_path / "pruned-lora")).merge_and_unload().save_pretrained(
        tmp_path / "merged"
    )
    tiny_tokenizer.save_pretrained(tmp_path / "merged")
    argv[argv.index(str(tmp_path / "pruned-lora"))] = str(tmp_path / "merged")
    assert main([*argv, str(tmp_path / "h"), *flags]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]["steps"] > 0


def test_teacher_by_path_is_loaded_for_its_pass_only(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    teacher.save_pretrained(tmp_path / "dense")
    healed = heal(student, str(tmp_path / "dense"), tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert record["teacher"] == str(tmp_path / "dense") and not record["rolled_back"]
    with pytest.raises(FileNotFoundError, match="`teacher`: the local directory .* does not exist"):
        heal(student, str(tmp_path / "nowhere"), tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "v")


def test_checkpoints_never_load_the_dense_parents_config_into_the_pruned_class(tmp_path, tiny_tokenizer, monkeypatch):
    # PEFT's save looked up `name_or_path` (the dense parent's directory) and loaded its `gemma3_text` config through
    # the pruned config class: a confusing "instantiate a model of type pruned_gemma3_text" warning at every checkpoint
    teacher, student = _pair()
    teacher.save_pretrained(tmp_path / "dense")
    student.name_or_path = student.config._name_or_path = str(tmp_path / "dense")  # as a pruned real model has

    def refuse(*args, **kwargs):
        raise AssertionError(f"the pruned config class was asked to load {args}")

    monkeypatch.setattr(type(student.config), "from_pretrained", refuse)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "w")
    assert healed.config.pruning["healing"]["steps"] > 2  # checkpoints were saved (every 2 steps)
    assert healed.name_or_path == str(tmp_path / "dense")  # hidden during training only


def test_next_token_loss_alone_needs_no_teacher_pass_over_the_training_data(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    config = _small(kd_weight=0.0, guard=False, eval_steps=4)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert "next-token loss" in record["objective"] and record["steps"] == 6
    # the guard's measure is still reported: before, every `eval_steps`, and at the last step
    assert [entry["step"] for entry in record["validation_kl_history"]] == [0, 4, 6]
    # the teacher ran over the guard's rows alone (the work directory stays: no output_dir)
    cached = sorted(path.name for path in (tmp_path / "w").glob("teacher_*"))
    assert cached == ["teacher_validation.safetensors"]
    # three saves (every 2 of 6 steps), the last two kept
    checkpoints = sorted(path.name for path in (tmp_path / "w" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-4", "checkpoint-6"]


def test_bf16_autocasts_the_training_steps_and_the_teachers_pass_on_cpu(tmp_path, tiny_tokenizer):
    # the loss calls the decoder and the head directly, not through the forward accelerate wraps in autocast: without
    # an autocast of its own, `bf16=True` trained in float32 (as it did before this test)
    teacher, student = _pair()
    seen = {"student": set(), "teacher": set()}
    for name, model in (("student", student), ("teacher", teacher)):
        model.model.layers[1].mlp.down_proj.register_forward_hook(
            lambda module, args, out, name=name: seen[name].add(out.dtype)
        )
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(bf16=True), work_dir=tmp_path / "w")
    record = healed.config.pruning["healing"]
    assert torch.bfloat16 in seen["student"] and torch.bfloat16 in seen["teacher"]
    assert torch.float32 in seen["student"]  # the guard's held-out scoring stays float32
    assert record["options"]["bf16"] is True and record["steps"] == 6
    assert next(healed.parameters()).dtype == torch.float32  # weights (and the merged LoRA) stay float32
    assert record["merge_max_abs_logit_diff"] < 2e-3


def test_bf16_default_follows_the_hardware_and_is_recorded(tmp_path, tiny_tokenizer, monkeypatch):
    from diet_hf._devices import fast_bf16

    assert HealingConfig().bf16 is None  # "auto"
    for fast in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda fast=fast: fast)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert fast_bf16("cpu") is fast
        teacher, student = _pair()
        config = _small(bf16=None, max_tokens=16 * 2 * 2)
        healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=config, work_dir=tmp_path / f"w{fast}")
        assert healed.config.pruning["healing"]["options"]["bf16"] is fast


def test_frozen_head_is_cast_once_and_again_only_when_it_changes():
    import diet_hf.healing.loss as healing

    _, student = _pair()
    hidden = torch.randn(5, student.config.hidden_size)
    weight = student.lm_head.weight
    weight.requires_grad_(False)
    cap = student.config.final_logit_softcapping
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = student.lm_head(hidden).float()  # autocast's own cast, made at every call
        reference = torch.tanh(reference / cap) * cap if cap else reference
        with healing._cast_heads_once():
            first = healing._output_logits(student, hidden)
            copy = healing._HEAD_COPIES.get(weight, "cpu")
            assert copy.dtype == torch.bfloat16 and healing._HEAD_COPIES.get(weight, "cpu") is copy  # made once
            assert torch.equal(first, reference)
            with torch.no_grad():
                weight.mul_(2.0)  # an in-place change (a new version): the copy is made again
            assert healing._HEAD_COPIES.get(weight, "cpu") is not copy
            assert not torch.equal(healing._output_logits(student, hidden), first)
            weight.requires_grad_(True)  # a trained head is left to autocast
            assert healing._HEAD_COPIES.get(weight, "cpu") is None
            with torch.no_grad():  # ... but not a head that gets no gradient here (the teacher's pass)
                assert healing._HEAD_COPIES.get(weight, "cpu") is not None
        assert healing._HEAD_COPIES is None  # nothing held after the context
    with torch.no_grad():
        weight.div_(2.0)
    assert healing._output_logits(student, hidden).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_heal_bf16_on_cuda(tmp_path, tiny_tokenizer):
    teacher, student = _pair()
    teacher, student = teacher.to("cuda", torch.bfloat16), student.to("cuda", torch.bfloat16)
    healed = heal(student, teacher, tiny_tokenizer, TEXTS, config=_small(bf16=True), output_dir=tmp_path / "h")
    record = healed.config.pruning["healing"]
    assert next(healed.parameters()).is_cuda and record["steps"] == 6
    assert record["validation_kl_after"] <= record["validation_kl_before"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "h", trust_remote_code=True)
    assert type(reloaded).__name__ == "PrunedGemma3ForCausalLM"


def test_heap_retention_is_limited_on_glibc_and_optional():
    import platform

    from diet_hf.healing import HealingConfig, limit_heap_retention, release_freed_memory

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert limit_heap_retention() is True
    release_freed_memory()  # never raises, glibc or not
    assert HealingConfig().release_memory is True and HealingConfig(release_memory=False).release_memory is False


def test_the_same_seed_heals_alike_whether_the_teacher_is_given_loaded_or_by_path(
    tmp_path, tiny_tokenizer, monkeypatch
):
    # loading a teacher by name may draw from torch's generator (transformers 4.57 does for an image-text Gemma 3);
    # the LoRA start drawn after the teacher's pass must not depend on that
    import diet_hf.healing.teacher

    real = diet_hf.healing.teacher.load_causal_lm

    def drawing_loader(*args, **kwargs):
        torch.rand(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(diet_hf.healing.teacher, "load_causal_lm", drawing_loader)
    teacher, student = _pair()
    teacher.save_pretrained(tmp_path / "dense")
    by_path = heal(student, str(tmp_path / "dense"), tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "a")
    loaded = heal(_pair()[1], teacher, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "b")
    ids = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(by_path(ids).logits, loaded(ids).logits)


def test_a_teacher_given_as_a_lora_adapter_is_its_base_with_the_adapter_merged(tmp_path, tiny_tokenizer):
    """A dense model fine-tuned with LoRA and saved as an adapter alone (no config.json), the student pruned from the
    merged model: the adapter's directory as the teacher heals as the merged model given loaded does, where reading
    its config failed ("Unrecognized model") before. A missing tokenizer is refused by name before any work."""
    adapter, merged = save_lora_adapter(tmp_path, tiny_tokenizer, family="gemma3_text")

    def student():
        plan = PruningPlan.keep_all(merged.config)
        plan.mlp_kept_indices = [list(range(0, 64, 2)), list(range(40))]
        plan.__post_init__()
        return build_pruned_model(merged, plan)

    by_path = heal(student(), str(adapter), tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "a")
    loaded = heal(student(), merged, tiny_tokenizer, TEXTS, config=_small(), work_dir=tmp_path / "b")
    assert by_path.config.pruning["healing"]["teacher"] == str(adapter)
    ids = random_batch(vocab_size=merged.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(by_path(ids).logits, loaded(ids).logits)
    with pytest.raises(ValueError, match="`tokenizer` must be the transformers tokenizer .*, got NoneType"):
        heal(student(), merged, None, TEXTS, config=_small(), work_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


QUESTIONS = [
    {"context": "Question: is the answer yes?\nAnswer:", "choices": ["yes", "no"], "label": 0},
    {"context": "True or False: the answer is", "choices": ["True", "False"], "label": 1},
    {"context": "Question: what is the answer?\nAnswer:", "choices": ["no", "yes", "True"], "label": 2},
    {"context": "The answer was", "choices": ["yes", "no"], "label": 1},
]


@pytest.mark.parametrize("how", ["precomputed", "online"])
def test_heal_scores_tasks_on_teacher_unhealed_and_healed(tmp_path, tiny_tokenizer, data_dir, how):
    from diet_hf.evaluation import compare_evaluations, evaluate
    from diet_hf.tasks import multiple_choice_task

    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    unhealed = copy.deepcopy(student)
    # the evaluation examples the pruning profiled (recorded in its config) are scored for no model
    student.config.pruning = {"calibration_eval_ids": {"mine": ["0"]}}
    mine = multiple_choice_task("mine", QUESTIONS)
    options = {"limit": 6, "data_dir": data_dir}
    config = _small(top_k=None) if how == "online" else _small()
    healed = heal(
        student,
        teacher,
        tiny_tokenizer,
        TEXTS,
        config=config,
        output_dir=tmp_path / "h",
        eval_tasks=["piqa", mine],
        eval_options=options,
    )
    record = healed.config.pruning["healing"]["held_out_tasks"]
    assert list(record) == ["piqa", "mine", "average"]
    scored = {
        key: evaluate(
            model, tiny_tokenizer, ["piqa", mine], exclude_ids={"mine": ["0"]}, return_predictions=True, **options
        )
        for key, model in (("teacher", teacher), ("unhealed", unhealed), ("healed", healed))
    }
    for task, metric in (("piqa", "acc_norm"), ("mine", "acc")):
        row = record[task]
        assert (row["examples"], row["metric"]) == (len(scored["healed"]["predictions"][task]), metric)
        for key in ("teacher", "unhealed", "healed"):
            assert row[key] == pytest.approx(scored[key]["results"][task][metric], abs=1e-4), (task, key)
    for key, base in (("healed_minus_unhealed", "unhealed"), ("healed_minus_teacher", "teacher")):
        expected = compare_evaluations(scored["healed"], scored[base])
        for task in ("piqa", "mine", "average"):
            assert record[task][key]["difference"] == pytest.approx(expected[task]["difference"], abs=1e-4)
            assert record[task][key]["ci95"] == pytest.approx(expected[task]["ci95"], abs=1e-4)
    card = (tmp_path / "h" / "README.md").read_text()
    line = next(x for x in card.splitlines() if x.startswith("| mine |"))
    assert line.startswith(f"| mine | 3 | acc | {record['mine']['teacher']:.4f} | {record['mine']['unhealed']:.4f} |")
    assert "| headline average |" in card and "healed − unhealed" in card
    assert "mine: the publisher's own multiple-choice questions" in card
    assert record["mine"]["own_questions"] and not record["piqa"]["own_questions"]
    assert_tables_well_formed(card)


def test_heal_eval_tasks_bad_input_fails_before_training(tmp_path, tiny_tokenizer):
    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    for tasks, options, message in (
        (["squad"], None, "Unknown task 'squad'"),
        ([], None, "`eval_tasks` is empty"),
        (["piqa"], {"limt": 3}, "`eval_options` takes limit, half, data_dir, batch_size and apply_chat_template"),
        (None, {"limit": 3}, "`eval_options` is set but `eval_tasks` is not"),
        (
            ["piqa"],
            {"apply_chat_template": True},
            r"`eval_options\['apply_chat_template'\]`: the tokenizer has no chat",
        ),
        (["rte"], {"data_dir": tmp_path / "no_data"}, "No `validation` split for task 'rte'"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            heal(
                student,
                teacher,
                tiny_tokenizer,
                TEXTS,
                config=_small(),
                work_dir=tmp_path / "w",
                eval_tasks=tasks,
                eval_options=options,
            )
        assert not (tmp_path / "w").exists()


def test_cli_heal_eval_tasks(tmp_path, tiny_tokenizer, data_dir, capsys):
    from diet_hf.cli import main

    argv, flags = _saved_pair_for_cli(tmp_path, tiny_tokenizer)
    flags += ["--data-dir", str(data_dir)]
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    tasks = ["--eval-tasks", "rte", f"questions={tmp_path / 'questions.jsonl'}", "--eval-limit", "5"]
    assert main([*argv, str(tmp_path / "h"), *flags, *tasks, "--eval-own-headline", "acc_norm"]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]["held_out_tasks"]
    row = record["questions"]
    assert (row["metric"], row["examples"]) == ("acc_norm", 4) and record["rte"]["examples"] == 5
    difference = row["healed_minus_unhealed"]
    assert (
        f"  questions: {row['unhealed']:.4f} -> {row['healed']:.4f} (teacher {row['teacher']:.4f}; acc_norm, 4 "
        f"examples), healed - unhealed {difference['difference']:+.4f} [{difference['ci95'][0]:+.4f}, "
        f"{difference['ci95'][1]:+.4f}]"
    ) in out
    assert "| questions | 4 | acc_norm |" in (tmp_path / "h" / "README.md").read_text()
    assert main([*argv, str(tmp_path / "h2"), *flags, "--eval-tasks", "squad"]) == 2  # before any model loads
    assert "`--eval-tasks`: 'squad' is not a registered task" in capsys.readouterr().err
    # scoring in the chat template: MODEL's tokenizer has none, and the option scores --eval-tasks only
    assert main([*argv, str(tmp_path / "h2"), *flags, *tasks, "--eval-apply-chat-template"]) == 2
    assert "`--eval-apply-chat-template`: the tokenizer of" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "h2"), *flags, "--eval-apply-chat-template"]) == 2
    assert "`--eval-apply-chat-template` scores the --eval-tasks" in capsys.readouterr().err
    assert not (tmp_path / "h2").exists()


def test_student_logits_come_back_to_the_states_device():
    """A model split across GPUs keeps its tied LM head on the first GPU: the distillation's logits are made there and
    come back to the device of the states (and of the teacher's targets, moved there). (Fake meta-device weights stand
    in for the first GPU.)"""
    from diet_hf.healing.loss import _output_logits

    model = on_second_device(tiny_dense_model("gemma2"))
    logits = _output_logits(model, torch.randn(5, model.config.hidden_size))
    assert logits.device.type == "cpu" and tuple(logits.shape) == (5, model.config.vocab_size)


@pytest.mark.parametrize("top_k", ["4", "0"], ids=["teacher-pass", "teacher-beside"])
def test_cli_heal_reads_the_teacher_from_its_gguf_file(tmp_path, data_dir, capsys, top_k):
    """`heal PRUNED --teacher DIR --teacher-gguf-file NAME`: the dense teacher read from the GGUF file the model was
    pruned from (`prune --gguf-file`), by `heal` for its one pass (top-k targets) or by the command beside the
    student (--top-k 0); the record names it `DIR/NAME`. Without the flag the directory holds no model: refused
    naming --teacher; a name not there: refused naming --teacher-gguf-file. Both before any training, nothing
    written. The teacher's file is parsed twice, for its config and its weights: the config read first, to check
    the student's parentage, is handed on to the load (a parse is 20 s on the real 270M)."""
    pytest.importorskip("gguf")
    from conftest import gguf_parses, write_tiny_gguf

    from diet_hf.cli import main

    source = write_tiny_gguf(tmp_path / "source" / "tiny.gguf").parent
    prune = ["--quiet", "prune", str(source), "--gguf-file", "tiny.gguf", "--tasks", "rte", "--num-samples", "3"]
    assert main([*prune, "--data-dir", str(data_dir), "--sparsity", "0.3", "--output", str(tmp_path / "pruned")]) == 0
    flags = ["--data", "rte", "--data-dir", str(data_dir), "--seq-len", "16", "--batch-size", "2", "--max-tokens"]
    flags += ["64", "--validation-sequences", "2", "--eval-steps", "1", "--top-k", top_k, "--lora-r", "2", "--quiet"]
    argv = ["heal", str(tmp_path / "pruned"), "--teacher", str(source), "--output", str(tmp_path / "h"), *flags]
    assert main(argv) == 1
    assert f"`--teacher`: the local directory {source} has no config.json" in capsys.readouterr().err
    assert main([*argv, "--teacher-gguf-file", "nope.gguf"]) == 1
    assert f"`--teacher-gguf-file`: the local directory {source} holds no file nope.gguf" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
    with gguf_parses() as parses:
        assert main([*argv, "--teacher-gguf-file", "tiny.gguf"]) == 0, capsys.readouterr().err
    assert parses == ["tiny.gguf"] * 2, parses
    healing = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]
    assert healing["teacher"] == f"{source}/tiny.gguf"


def test_the_loss_bar_counts_the_steps_done_from_where_a_resumed_run_starts():
    """`LossBar` (drawn where the run is not quiet) shows the steps done out of `max_steps`, starting at a resumed
    run's step, and the latest training loss."""
    from types import SimpleNamespace

    from diet_hf.healing.trainer import LossBar

    bar = LossBar()
    state = SimpleNamespace(max_steps=10, global_step=4)
    bar.on_train_begin(None, state, None)
    for step in (5, 6, 7):
        state.global_step = step
        bar.on_step_end(None, state, None)
    bar.on_log(None, state, None, logs={"loss": 1.23456})
    assert (bar.bar.n, bar.bar.total) == (7, 10) and bar.bar.postfix == "loss=1.2346"
    bar.on_train_end(None, state, None)
