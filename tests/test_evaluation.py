"""The evaluator scores as lm-eval-harness 0.4 does: checked on hand-computable models and against brute force."""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from conftest import on_second_device, run_script, tiny_dense_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast

from diet_hf.evaluation import (
    compare_evaluations,
    correct_by_task,
    evaluate,
    kl_divergence,
    last_word_accuracy,
    loglikelihoods,
    next_token_logprobs,
    paired_bootstrap,
    paired_bootstrap_perplexity,
    perplexity,
    texts_perplexity,
)
from diet_hf.tasks import load_examples, split_half

TF457_PYTHON = os.environ.get("DIET_TF457_PYTHON")

WORDS = ["<pad>", "<bos>", "<unk>", "Question:", "Answer:", "a", "bbbb", "cc", "The", "cat", "dog", "sat", "ran", "."]


@pytest.fixture(scope="module")
def word_tokenizer():
    """One token per whitespace-separated word, BOS prepended (as Gemma's tokenizer does)."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", unk_token="<unk>")


class BigramLM(nn.Module):
    """log p(next | previous) = `table[previous, next]`: every log-likelihood is a sum of table entries."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(torch.log_softmax(table, dim=-1))
        self.config = SimpleNamespace(max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=False):
        logits = self.table[input_ids]  # (batch, seq_len, vocab)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def _ids(word):
    return WORDS.index(word)


def _write_task(directory, task, split, rows):
    (directory / task).mkdir(parents=True, exist_ok=True)
    with (directory / task / f"{split}.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def test_loglikelihood_is_sum_of_continuation_logprobs(word_tokenizer):
    table = torch.randn(len(WORDS), len(WORDS), generator=torch.Generator().manual_seed(0))
    model = BigramLM(table)
    lp = model.table.detach()
    got = loglikelihoods(model, word_tokenizer, [("The cat", " sat ."), ("The", " dog ran")], disable_progress=True)
    expected = [
        lp[_ids("cat"), _ids("sat")] + lp[_ids("sat"), _ids(".")],
        lp[_ids("The"), _ids("dog")] + lp[_ids("dog"), _ids("ran")],
    ]
    assert got == pytest.approx([float(e) for e in expected], abs=1e-6)


def test_acc_and_acc_norm_decisions(word_tokenizer, tmp_path):
    table = torch.zeros(len(WORDS), len(WORDS))
    table[_ids("Answer:"), _ids("a")] = 2.0  # "a": 1 character, higher log-likelihood
    table[_ids("Answer:"), _ids("bbbb")] = 1.5  # "bbbb": 4 characters, lower total but higher per character
    model = BigramLM(table)
    lp = model.table.detach()[_ids("Answer:")]
    assert lp[_ids("a")] > lp[_ids("bbbb")] and lp[_ids("a")] / 1 < lp[_ids("bbbb")] / 4
    rows = [
        {"id": f"q{i}", "question": "The", "choices": {"text": ["a", "bbbb"], "label": ["A", "B"]}, "label": label}
        for i, label in enumerate([0, 1, 1])
    ]
    _write_task(tmp_path, "arc_easy", "test", rows)
    result = evaluate(
        model, word_tokenizer, ["arc_easy"], data_dir=tmp_path, return_predictions=True, disable_progress=True
    )
    scores = result["results"]["arc_easy"]
    assert [p["acc"] for p in result["predictions"]["arc_easy"]] == [0, 0, 0]
    assert [p["acc_norm"] for p in result["predictions"]["arc_easy"]] == [1, 1, 1]
    assert scores["acc"] == pytest.approx(1 / 3) and scores["acc_norm"] == pytest.approx(2 / 3)
    assert scores["acc_stderr"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 2))
    assert result["average"] == pytest.approx(2 / 3)  # ARC's headline metric is acc_norm


def test_acc_norm_divides_by_the_choice_without_its_delimiter_and_a_tie_picks_the_first(word_tokenizer, tmp_path):
    """lm-eval 0.4.13's decisions at their edges: `acc_norm` divides by `len(choice)`, not by the length of the
    continuation with its leading space (here the two disagree), and equal scores pick the first choice
    (`np.argmax`)."""
    table = torch.zeros(len(WORDS), len(WORDS))
    table[_ids("Answer:"), _ids("bbbb")] = -4.5
    model = BigramLM(table)
    lp = model.table.detach()[_ids("Answer:")]
    a, b = float(lp[_ids("a")]), float(lp[_ids("bbbb")])
    assert a / 1 < b / 4 and a / 2 > b / 5  # per character of the choice: "bbbb"; counting the space: "a"
    rows = [
        {"id": "q0", "question": "The", "choices": {"text": ["a", "bbbb"], "label": ["A", "B"]}, "label": 1},
        {"id": "q1", "question": "The", "choices": {"text": ["cc", "cc"], "label": ["A", "B"]}, "label": 1},
    ]
    _write_task(tmp_path, "arc_easy", "test", rows)
    result = evaluate(
        model, word_tokenizer, ["arc_easy"], data_dir=tmp_path, return_predictions=True, disable_progress=True
    )
    assert [(p["acc"], p["acc_norm"]) for p in result["predictions"]["arc_easy"]] == [(0, 1), (0, 0)]


def test_winogrande_partial_scoring(word_tokenizer, tmp_path):
    table = torch.zeros(len(WORDS), len(WORDS))
    table[_ids("cat"), _ids("sat")] = 3.0  # after "cat" the shared remainder "sat ." is likely
    table[_ids("dog"), _ids("ran")] = 3.0
    model = BigramLM(table)
    rows = [
        {"id": "w1", "sentence": "The _ sat .", "option1": "dog", "option2": "cat", "label": 1},
        {"id": "w2", "sentence": "The _ ran .", "option1": "dog", "option2": "cat", "label": 0},
        {"id": "w3", "sentence": "The _ ran .", "option1": "cat", "option2": "dog", "label": 0},
    ]
    _write_task(tmp_path, "winogrande", "validation", rows)
    result = evaluate(
        model, word_tokenizer, ["winogrande"], data_dir=tmp_path, return_predictions=True, disable_progress=True
    )
    assert [p["acc"] for p in result["predictions"]["winogrande"]] == [1, 0, 1]
    assert result["results"]["winogrande"]["acc"] == pytest.approx(2 / 3)
    assert result["results"]["winogrande"]["acc_norm"] is None


def test_exclusions_and_limit(word_tokenizer, tmp_path):
    model = BigramLM(torch.zeros(len(WORDS), len(WORDS)))
    rows = [{"id": f"p{i}", "goal": "The", "sol1": "a", "sol2": "cc", "label": i % 2} for i in range(6)]
    _write_task(tmp_path, "piqa", "validation", rows)
    result = evaluate(
        model,
        word_tokenizer,
        ["piqa"],
        data_dir=tmp_path,
        exclude_ids={"piqa": ["p0", "p2"]},
        limit=3,
        return_predictions=True,
        disable_progress=True,
    )
    assert [p["id"] for p in result["predictions"]["piqa"]] == ["p1", "p3", "p4"]
    assert result["results"]["piqa"]["num_scored"] == 3
    assert result["results"]["piqa"]["excluded_ids"] == ["p0", "p2"]


def test_dev_and_test_halves_partition_the_examples(word_tokenizer, tmp_path):
    model = BigramLM(torch.zeros(len(WORDS), len(WORDS)))
    rows = [{"id": f"p{i}", "goal": "The", "sol1": "a", "sol2": "cc", "label": i % 2} for i in range(40)]
    _write_task(tmp_path, "piqa", "validation", rows)
    scored = {}
    for half in ("dev", "test"):
        result = evaluate(
            model,
            word_tokenizer,
            ["piqa"],
            data_dir=tmp_path,
            exclude_ids={"piqa": ["p0"]},
            half=half,
            return_predictions=True,
            disable_progress=True,
        )
        scored[half] = [p["id"] for p in result["predictions"]["piqa"]]
        assert result["results"]["piqa"]["half"] == half
        assert all(split_half("piqa", i) == half for i in scored[half])
    assert sorted(scored["dev"] + scored["test"]) == sorted(f"p{i}" for i in range(1, 40))
    assert 10 <= len(scored["dev"]) <= 29  # about half and half
    limited = evaluate(
        model,
        word_tokenizer,
        ["piqa"],
        data_dir=tmp_path,
        half="test",
        limit=3,
        return_predictions=True,
        disable_progress=True,
    )
    assert [p["id"] for p in limited["predictions"]["piqa"]] == [i for i in scored["test"] if i != "p0"][:3]
    with pytest.raises(ValueError, match=r"`half` must be one of \('dev', 'test'\) or None, got 'train'"):
        evaluate(model, word_tokenizer, ["piqa"], data_dir=tmp_path, half="train", disable_progress=True)
    with pytest.raises(ValueError, match=r"`tasks` is empty: name at least one task"):  # was a ZeroDivisionError
        evaluate(model, word_tokenizer, [], data_dir=tmp_path, disable_progress=True)


def test_split_half_is_a_fixed_hash_of_task_and_id(data_dir):
    # pinned: changing the rule would silently move examples between the halves of published results
    assert [split_half("boolq", f"boolq-{i}") for i in range(6)] == ["test", "test", "test", "test", "test", "dev"]
    rows = load_examples("arc_easy", "test", data_dir=data_dir)
    dev = sum(split_half("arc_easy", str(r["id"])) == "dev" for r in rows)
    assert abs(dev / len(rows) - 0.5) < 0.03


def test_batched_padded_scoring_equals_one_by_one_on_gemma(tiny_tokenizer):
    model = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    pairs = [
        ("Question: what is the answer?\nAnswer:", " yes"),
        ("Question:", " no True False"),
        ("Answer: yes", " no"),
        ("what", " is the answer? Answer: True"),
    ]
    batched = loglikelihoods(model, tiny_tokenizer, pairs, batch_size=4, disable_progress=True)
    for pair, value in zip(pairs, batched):
        context_ids = tiny_tokenizer(pair[0])["input_ids"]
        whole = tiny_tokenizer(pair[0] + pair[1])["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0], dim=-1)
        targets = whole[len(context_ids) :]
        expected = sum(logprobs[len(context_ids) - 1 + i, t].item() for i, t in enumerate(targets))
        assert value == pytest.approx(expected, abs=1e-4)


def test_errors(word_tokenizer, tmp_path):
    model = BigramLM(torch.zeros(len(WORDS), len(WORDS)))
    with pytest.raises(ValueError, match=r"Unknown task 'squad'"):
        evaluate(model, word_tokenizer, ["squad"], data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`tokenizer` is required"):
        evaluate(model, None, ["piqa"], data_dir=tmp_path)
    specials_only = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS[:3])}, unk_token="<unk>"))
    specials_only = PreTrainedTokenizerFast(
        tokenizer_object=specials_only, pad_token="<pad>", bos_token="<bos>", unk_token="<unk>"
    )
    for call in (
        lambda: evaluate(model, specials_only, ["piqa"], data_dir=tmp_path),
        lambda: loglikelihoods(model, specials_only, [("The", " cat")]),
        lambda: perplexity(model, specials_only, data_dir=tmp_path),
        lambda: next_token_logprobs(model, specials_only, ["The"]),
    ):
        with pytest.raises(ValueError, match=r"`tokenizer` has no vocabulary: its 3 tokens are all special tokens"):
            call()
    # a model that is not loaded: named, before anything reads it
    for call in (
        lambda: evaluate(None, word_tokenizer, ["piqa"], data_dir=tmp_path),
        lambda: loglikelihoods("org/model", word_tokenizer, [("The", " cat")]),
        lambda: perplexity("org/model", word_tokenizer, data_dir=tmp_path),
        lambda: next_token_logprobs(None, word_tokenizer, ["The"]),
        lambda: texts_perplexity("org/model", word_tokenizer, ["The cat"]),
    ):
        with pytest.raises(TypeError, match=r"`model` must be a loaded causal LM to .*, got (NoneType|str: load it)"):
            call()
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "validation.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"The `validation` split of task 'piqa' is empty"):
        evaluate(model, word_tokenizer, ["piqa"], data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`limit` must be >= 1"):
        evaluate(model, word_tokenizer, ["piqa"], data_dir=tmp_path, limit=0)
    with pytest.raises(ValueError, match=r"`limit` must be >= 1, got '5'"):
        evaluate(model, word_tokenizer, ["piqa"], data_dir=tmp_path, limit="5")
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer, got 0"):
        evaluate(model, word_tokenizer, ["piqa"], data_dir=tmp_path, batch_size=0)
    with pytest.raises(ValueError, match=r"The `validation` split of task 'piqa' is empty"):
        evaluate(model, word_tokenizer, "piqa", data_dir=tmp_path)  # one name, not its letters


# Groups of choices behind one context: several choices of 2 to 5 tokens after one another in a packed row (so a
# choice that could see another's tokens, or sat at the wrong positions, would score differently), contexts longer
# than the sliding window (3), rows of different lengths (padding, and the 3/4 rule that splits batches), a context
# with a single choice.
PACKED_PAIRS = [
    ("Question: what is the answer?\nAnswer:", c) for c in (" True False is", " yes", " no yes True", " the answer")
]
PACKED_PAIRS += [("Answer:", " no yes"), ("Answer:", " yes yes what is the"), ("what", " is")]
PACKED_PAIRS += [
    ("Question: what is the answer? Answer: yes no True False Question:", c) for c in (" no", " yes False")
]


# Gemma-2's attention soft-capping has no SDPA kernel in transformers (5.x refuses `sdpa` for it).
ATTENTION_KERNELS = [("gemma2", "eager"), ("gemma3_text", "eager"), ("gemma3_text", "sdpa")]


def _set_attention(model, attn: str):
    if hasattr(model, "set_attn_implementation"):  # transformers 5.x
        model.set_attn_implementation(attn)
    else:
        model.config._attn_implementation = attn
    return model


def _uneven_plan(dense):
    from diet_hf.plan import PruningPlan

    plan = PruningPlan.keep_all(dense.config)
    plan.head_kept_indices, plan.kv_head_kept_indices = [[], [0, 1]], [[], [0]]  # layer 0 without attention
    plan.mlp_kept_indices = [list(range(10)), []]  # layer 1 without MLP
    return plan


def _alone(model, tokenizer, pairs):
    """Each pair scored on its own: one full forward of context + continuation through the stock masks."""
    values = []
    for context, continuation in pairs:
        context_ids = tokenizer(context)["input_ids"]
        whole = tokenizer(context + continuation)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0].double(), dim=-1)
        targets = whole[len(context_ids) :]
        values.append(sum(logprobs[len(context_ids) - 1 + i, t].item() for i, t in enumerate(targets)))
    return values


@pytest.mark.parametrize("family, attn", ATTENTION_KERNELS)
def test_packed_choices_equal_scoring_each_pair_alone(tiny_tokenizer, family, attn, monkeypatch):
    from diet_hf import build_pruned_model
    from diet_hf.evaluation.scorer import Scorer

    # Small slices so the LM head crosses state-chunk and vocabulary-slice boundaries.
    monkeypatch.setattr(Scorer, "VOCAB_CHUNK", 7)
    monkeypatch.setattr(Scorer, "STATE_CHUNK", 5)
    dense = tiny_dense_model(family, vocab_size=len(tiny_tokenizer), sliding_window=3, final_logit_softcapping=3.0)
    for model in (dense, build_pruned_model(dense, _uneven_plan(dense))):
        _set_attention(model, attn)
        assert Scorer(model).packed
        expected = _alone(model, tiny_tokenizer, PACKED_PAIRS)
        for batch_size in (1, 2, 16):
            got = loglikelihoods(model, tiny_tokenizer, PACKED_PAIRS, batch_size=batch_size, disable_progress=True)
            assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed_rows", "kv_cache_copies"])
def test_shared_context_equals_separate_scoring(tiny_tokenizer, family, packed, monkeypatch):
    from diet_hf import build_pruned_model
    from diet_hf.evaluation.scorer import Scorer

    if not packed:  # the path for attention kernels that take no custom mask: the context's KV cache, copied
        init = Scorer.__init__

        def without_packing(self, model):
            init(self, model)
            self.packed = False

        monkeypatch.setattr(Scorer, "__init__", without_packing)
    dense = tiny_dense_model(family, vocab_size=len(tiny_tokenizer), sliding_window=4)
    for model in (dense, build_pruned_model(dense, _uneven_plan(dense))):
        assert Scorer(model).packed == packed
        shared = loglikelihoods(model, tiny_tokenizer, PACKED_PAIRS, batch_size=2, disable_progress=True)
        separate = loglikelihoods(
            model, tiny_tokenizer, PACKED_PAIRS, batch_size=3, share_context=False, disable_progress=True
        )
        assert shared == pytest.approx(separate, abs=1e-4)


TF457_SCRIPT = """
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from diet_hf.evaluation import loglikelihoods
from diet_hf.evaluation.scorer import Scorer
jobs, pairs, results = json.loads(sys.argv[1]), json.loads(sys.argv[2]), []
for path, attn in jobs:
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, trust_remote_code=True).eval()
    assert Scorer(model).packed
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{path}/tokenizer.json", pad_token="<pad>")  # 5.x's config
    results.append(loglikelihoods(model, tokenizer, pairs, batch_size=2, disable_progress=True))
print(json.dumps({"version": transformers.__version__, "values": results}))
"""


@pytest.fixture(scope="module")
def scored_on_transformers_457(tiny_tokenizer, tmp_path_factory):
    """Every (family, attention) pair's dense and pruned model scored by 4.57, all in one fresh process (one start of
    the second interpreter instead of six), with the 5.x reference scores: {(family, attn, name): (457's, 5.x's)}."""
    from diet_hf import build_pruned_model

    root, jobs, expected = tmp_path_factory.mktemp("tf457_packed"), [], {}
    for family, attn in ATTENTION_KERNELS:
        dense = tiny_dense_model(family, vocab_size=len(tiny_tokenizer), sliding_window=3, final_logit_softcapping=3.0)
        for name, model in (("dense", dense), ("pruned", build_pruned_model(dense, _uneven_plan(dense)))):
            path = root / f"{family}-{attn}-{name}"  # one folder name each: remote code is cached per folder name
            model.save_pretrained(path)
            tiny_tokenizer.save_pretrained(path)
            jobs.append((str(path), attn))
            expected[family, attn, name] = _alone(_set_attention(model, attn), tiny_tokenizer, PACKED_PAIRS)
    stdout = run_script(root, TF457_SCRIPT, json.dumps(jobs), json.dumps(PACKED_PAIRS), python=TF457_PYTHON)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["version"].startswith("4.57")
    return {key: (got, expected[key]) for key, got in zip(expected, result["values"])}


@pytest.mark.skipif(not TF457_PYTHON, reason="set DIET_TF457_PYTHON to a python with transformers 4.57.x")
@pytest.mark.parametrize("family, attn", ATTENTION_KERNELS)
def test_packed_scoring_on_transformers_457(scored_on_transformers_457, family, attn):
    """The packed rows hand Gemma's decoder a dict of 4D masks; transformers 4.57 must take it as 5.x does."""
    for name in ("dense", "pruned"):
        got, expected = scored_on_transformers_457[family, attn, name]
        assert got == pytest.approx(expected, abs=1e-4)


def test_perplexity_matches_full_logits(tiny_tokenizer, tmp_path):
    model = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer), final_logit_softcapping=3.0)
    rows = [
        {"id": f"w{i}", "text": text} for i, text in enumerate(["", " = Question =\n", "", " what is the answer\n"])
    ]
    _write_task(tmp_path, "wikitext2", "test", rows)
    result = perplexity(model, tiny_tokenizer, data_dir=tmp_path, max_length=8)
    ids = tiny_tokenizer("\n\n".join(r["text"] for r in rows), add_special_tokens=False)["input_ids"]
    nll, counts = [], []
    for start in range(0, len(ids), 7):
        chunk = torch.tensor([[tiny_tokenizer.bos_token_id] + ids[start : start + 7]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(chunk).logits[0, :-1], dim=-1)
        nll.append(-logprobs.gather(-1, chunk[0, 1:, None]).sum().item())
        counts.append(chunk.shape[1] - 1)
    assert result["tokens"] == sum(counts) and result["windows"] == len(counts)
    assert result["perplexity"] == pytest.approx(math.exp(sum(nll) / sum(counts)), rel=1e-5)
    # per window, for `paired_bootstrap_perplexity` over windows
    assert result["counts"] == counts and result["nll"] == pytest.approx(nll, rel=1e-5)
    # any text, read from nowhere: the same windows over it
    given_text = "\n\n".join(r["text"] for r in rows)
    given = perplexity(model, tiny_tokenizer, text=given_text, max_length=8)
    assert given == result
    other = perplexity(model, tiny_tokenizer, text=" = Answer =\n\n the question is what\n", max_length=8)
    assert other["perplexity"] != result["perplexity"]
    assert perplexity(model, tiny_tokenizer, text=given_text, max_length=8, max_windows=1)["windows"] == 1
    for kwargs, match in (
        ({"max_length": 1}, r"`max_length` must be an integer >= 2 or None, got 1"),
        ({"max_windows": 0}, r"`max_windows` must be an integer >= 1 or None, got 0"),
        ({"text": ""}, r"`text` has 0 token\(s\): nothing to predict"),
    ):
        with pytest.raises(ValueError, match=match):
            perplexity(model, tiny_tokenizer, **{"text": given_text, **kwargs})


TEXTS = ["Question: what is the answer?\nAnswer: yes", "what", "the answer is no\n\nwhat is", "is it", "no"]


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_texts_perplexity_matches_each_text_read_alone(tiny_tokenizer, family):
    model = tiny_dense_model(family, vocab_size=len(tiny_tokenizer), final_logit_softcapping=3.0)
    result = texts_perplexity(model, tiny_tokenizer, TEXTS, batch_size=2, disable_progress=True)  # padded batches
    nll, counts = [], []
    for text in TEXTS:
        ids = torch.tensor([[tiny_tokenizer.bos_token_id] + tiny_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
        nll.append(-logprobs.gather(-1, ids[0, 1:, None]).sum().item())
        counts.append(ids.shape[1] - 1)
    assert result["counts"] == counts and result["tokens"] == sum(counts) and result["texts"] == len(TEXTS)
    assert result["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(sum(nll) / sum(counts)), rel=1e-5)
    assert result["truncated"] == 0
    one_by_one = texts_perplexity(model, tiny_tokenizer, TEXTS, batch_size=1, disable_progress=True)
    assert one_by_one["nll"] == pytest.approx(result["nll"], rel=1e-5)
    cut = texts_perplexity(model, tiny_tokenizer, TEXTS, max_length=3, disable_progress=True)
    assert cut["counts"] == [min(c, 2) for c in counts] and cut["truncated"] == sum(c > 2 for c in counts)
    assert cut["nll"][1] == pytest.approx(nll[1], rel=1e-5)  # "what" fits: read as before
    # one text that fits in one window: what `perplexity(text=...)` computes of it
    assert texts_perplexity(model, tiny_tokenizer, TEXTS[:1], disable_progress=True)["perplexity"] == pytest.approx(
        perplexity(model, tiny_tokenizer, text=TEXTS[0], max_length=64)["perplexity"], rel=1e-5
    )
    for texts, kwargs, match in (
        ("what", {}, r"`texts` must be a list of texts, got one string"),
        ([], {}, r"`texts` is empty"),
        (["what", 3], {}, r"`texts` must hold strings only"),
        (["what", ""], {}, r"1 of `texts` leave no token to predict \(e.g. text 1: ''\)"),
        (TEXTS, {"max_length": 1}, r"`max_length` must be an integer >= 2 or None, got 1"),
        (TEXTS, {"batch_size": 0}, r"`batch_size` must be a positive integer, got 0"),
    ):
        with pytest.raises(ValueError, match=match):
            texts_perplexity(model, tiny_tokenizer, texts, **kwargs)


def _last_word_brute_force(model, tokenizer, text):
    from diet_hf.evaluation.scorer import encode_pair

    context, _, word = text.rstrip().rpartition(" ")
    context_ids, target = encode_pair(tokenizer, context, " " + word)
    ids = torch.tensor([context_ids + target])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)[len(context_ids) - 1 : -1]
    picked = logprobs[torch.arange(len(target)), target]
    return int(bool((logprobs.argmax(-1) == torch.tensor(target)).all())), float(picked.sum())


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_last_word_accuracy_matches_each_text_scored_alone(tiny_tokenizer, family):
    model = tiny_dense_model(family, vocab_size=len(tiny_tokenizer), final_logit_softcapping=3.0)
    texts = ["Question: what is the answer? Answer: yes", "the answer is no", "is it True", "what is the Answer"]
    # texts the model gets right by construction: a context and its greedy next token, when that token is a word
    for context in ("Question: what is", "the answer is", "Answer: no", "what is the", "is it", "True or", "no no"):
        ids = torch.tensor([tiny_tokenizer(context)["input_ids"]])
        with torch.no_grad():
            word = tiny_tokenizer.decode([int(model(ids).logits[0, -1].argmax())])
        if word.startswith(" ") and word[1:].isalpha():
            texts.append(context + word)
    assert len(texts) > 4  # at least one text made right
    result = last_word_accuracy(model, tiny_tokenizer, texts, batch_size=3, disable_progress=True)  # padded
    expected = [_last_word_brute_force(model, tiny_tokenizer, text) for text in texts]
    assert result["correct"] == [c for c, _ in expected] and result["texts"] == len(texts)
    assert all(result["correct"][4:])
    assert result["loglikelihood"] == pytest.approx([ll for _, ll in expected], rel=1e-5)
    assert result["accuracy"] == pytest.approx(sum(result["correct"]) / len(texts))
    assert result["perplexity"] == pytest.approx(math.exp(-sum(ll for _, ll in expected) / len(texts)), rel=1e-5)
    one_by_one = last_word_accuracy(model, tiny_tokenizer, texts, batch_size=1, disable_progress=True)
    assert one_by_one["correct"] == result["correct"]
    for bad, match in (
        ("is it", r"`texts` must be a list of texts, got one string"),
        ([], r"`texts` is empty"),
        (["is it", 3], r"`texts` must hold strings only; text 1 is a int"),
        (["is it", "what"], r"text 1 \('what'\) has no context before a last word"),
        ([" what  "], r"text 0 \(' what  '\) has no context"),
    ):
        with pytest.raises(ValueError, match=match):
            last_word_accuracy(model, tiny_tokenizer, bad)


def test_paired_bootstrap_perplexity(tiny_tokenizer):
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    other = tiny_dense_model("gemma2", seed=1, vocab_size=len(tiny_tokenizer))
    mine = texts_perplexity(other, tiny_tokenizer, TEXTS * 4, disable_progress=True)
    theirs = texts_perplexity(dense, tiny_tokenizer, TEXTS * 4, disable_progress=True)
    compared = paired_bootstrap_perplexity(mine, theirs)
    assert compared["ratio"] == pytest.approx(mine["perplexity"] / theirs["perplexity"], rel=1e-9)
    low, high = compared["ci95"]
    assert low < compared["ratio"] < high and compared["num_texts"] == 20
    assert paired_bootstrap_perplexity(mine, theirs) == compared  # seeded: reproducible
    same = paired_bootstrap_perplexity(theirs, theirs)
    assert same["ratio"] == 1.0 and same["ci95"] == [1.0, 1.0]
    shorter = texts_perplexity(dense, tiny_tokenizer, TEXTS, disable_progress=True)
    with pytest.raises(ValueError, match=r"must score the same texts"):
        paired_bootstrap_perplexity(mine, shorter)
    with pytest.raises(ValueError, match=r"`before` must be a `texts_perplexity` result"):
        paired_bootstrap_perplexity(mine, {"perplexity": 3.0})


def test_next_token_logprobs_progress(tiny_tokenizer, capsys):
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    shown = next_token_logprobs(dense, tiny_tokenizer, ["what", "is", "it"], batch_size=2)
    err = capsys.readouterr().err
    assert "next-token log-probs" in err and "3/3" in err
    quiet = next_token_logprobs(dense, tiny_tokenizer, ["what", "is", "it"], batch_size=2, disable_progress=True)
    assert capsys.readouterr().err == ""
    torch.testing.assert_close(shown, quiet)


def test_next_token_logprobs_and_kl(tiny_tokenizer):
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer), final_logit_softcapping=3.0)
    with pytest.raises(ValueError, match=r"`prompts` must be a list of prompts, got one string"):
        next_token_logprobs(dense, tiny_tokenizer, "what")  # not its letters
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer, got 0"):
        next_token_logprobs(dense, tiny_tokenizer, ["what"], batch_size=0)
    other = tiny_dense_model("gemma2", seed=1, vocab_size=len(tiny_tokenizer), final_logit_softcapping=3.0)
    prompts = ["Question: what is the answer?\nAnswer:", "what", "Answer: yes no", "is"]
    got = next_token_logprobs(dense, tiny_tokenizer, prompts, batch_size=3)  # padded, reordered batches
    for prompt, row in zip(prompts, got):
        with torch.no_grad():
            logits = dense(torch.tensor([tiny_tokenizer(prompt)["input_ids"]])).logits[0, -1]
        torch.testing.assert_close(row, torch.log_softmax(logits, dim=-1), rtol=1e-5, atol=1e-5)
    assert kl_divergence(got, got) == 0.0
    theirs = next_token_logprobs(other, tiny_tokenizer, prompts)
    expected = sum((p.exp() * (p - q)).sum().item() for p, q in zip(got, theirs)) / len(prompts)
    assert kl_divergence(got, theirs) == pytest.approx(expected, rel=1e-6) and expected > 0
    with pytest.raises(ValueError, match=r"must have the same shape"):
        kl_divergence(got, theirs[:2])
    with pytest.raises(ValueError, match=r"`prompts` is empty"):
        next_token_logprobs(dense, tiny_tokenizer, [])


def test_paired_bootstrap_one_list():
    result = paired_bootstrap([1, 1, 0, 1], [0, 1, 0, 1])
    assert result["difference"] == 0.25 and result["num_examples"] == 4
    # One of four examples changed: a resample's difference is Binomial(4, 1/4) / 4, whose 2.5% and 97.5% points are 0
    # and 3/4.
    assert result["ci95"] == [0.0, 0.75]
    assert paired_bootstrap([0, 1, 1], [0, 1, 1])["ci95"] == [0.0, 0.0]
    # Seeded: the same interval twice; a generator passed in is drawn from.
    assert paired_bootstrap([1, 0, 1, 0, 1], [0, 0, 1, 1, 1]) == paired_bootstrap([1, 0, 1, 0, 1], [0, 0, 1, 1, 1])
    generator = torch.Generator().manual_seed(0)
    paired_bootstrap([1, 0], [0, 0], generator=generator)
    assert generator.get_state().ne(torch.Generator().manual_seed(0).get_state()).any()


def test_paired_bootstrap_weights_tasks_equally():
    # The average over tasks moves by the mean of the tasks' changes (2 examples gained all, 8 unchanged): 0.5, where a
    # pooled count would say 2 / 10. Each task is resampled apart, so the unchanged task adds no spread.
    result = paired_bootstrap({"a": [1, 1], "b": [0] * 8}, {"a": [0, 0], "b": [0] * 8})
    assert result["difference"] == 0.5 and result["ci95"] == [0.5, 0.5]
    assert result["num_examples"] == {"a": 2, "b": 8}
    # One task's change spread as the one-list case, halved by the second (unchanged) task.
    mixed = paired_bootstrap({"a": [1, 1, 0, 1], "b": [1, 0]}, {"a": [0, 1, 0, 1], "b": [1, 0]})
    assert mixed["difference"] == 0.125 and mixed["ci95"] == [0.0, 0.375]


def test_the_bootstrap_intervals_are_95_percent_intervals():
    """On 600 examples the bootstraps' intervals are as wide as the normal approximation's 95% interval (mean +- 1.96
    standard errors), for an accuracy difference and for the log of a perplexity ratio: not a 90% one (1.645)."""
    g = torch.Generator().manual_seed(3)
    after = (torch.rand(600, generator=g) < 0.6).int()
    before = (torch.rand(600, generator=g) < 0.5).int()
    difference = (after - before).double()
    standard_error = difference.std(unbiased=False) / math.sqrt(600)
    low, high = paired_bootstrap(after.tolist(), before.tolist())["ci95"]
    assert 0.93 < (high - low) / (2 * 1.96 * standard_error) < 1.07
    nll = torch.randn(600, generator=g, dtype=torch.float64) + 0.5  # per text, the same 10 tokens each
    compared = paired_bootstrap_perplexity(
        {"nll": (30 + nll).tolist(), "counts": [10] * 600}, {"nll": [30.0] * 600, "counts": [10] * 600}
    )
    low, high = compared["ci95"]
    log_standard_error = nll.std(unbiased=False) / math.sqrt(600) / 10
    assert 0.93 < (math.log(high) - math.log(low)) / (2 * 1.96 * log_standard_error) < 1.07


@pytest.mark.parametrize(
    "after, before, kwargs, message",
    [
        ([1, 0], [1], {}, "got 2 and 1"),
        ([], [], {}, "non-empty"),
        ({"a": [1]}, {"b": [1]}, {}, "same tasks"),
        ({"a": [1]}, [1], {}, "both be"),
        ({}, {}, {}, "no tasks"),
        ([1, 2], [1, 0], {}, "0 or 1"),
        ([1], [1], {"resamples": 0}, "`resamples` must be a positive int; got 0"),
    ],
)
def test_paired_bootstrap_refuses_bad_input(after, before, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        paired_bootstrap(after, before, **kwargs)


def test_paired_bootstrap_of_evaluate_results_is_the_change_of_its_average(word_tokenizer, tmp_path):
    # The README's recipe: per-example results from `evaluate(..., return_predictions=True)`, compared task by task;
    # the difference is exactly the change of `evaluate`'s average (tasks of 3 and 2 examples weigh the same).
    arc = [
        {"id": f"q{i}", "question": "The", "choices": {"text": ["a", "bbbb"], "label": ["A", "B"]}, "label": label}
        for i, label in enumerate([0, 1, 1])
    ]
    winogrande = [
        {"id": "w1", "sentence": "The _ sat .", "option1": "dog", "option2": "cat", "label": 1},
        {"id": "w2", "sentence": "The _ ran .", "option1": "dog", "option2": "cat", "label": 0},
    ]
    _write_task(tmp_path, "arc_easy", "test", arc)
    _write_task(tmp_path, "winogrande", "validation", winogrande)
    table = torch.zeros(len(WORDS), len(WORDS))
    table[_ids("Answer:"), _ids("a")] = 2.0
    table[_ids("Answer:"), _ids("bbbb")] = 1.5
    table[_ids("cat"), _ids("sat")] = 3.0
    other = table.clone()
    other[_ids("Answer:"), _ids("bbbb")] = -3.0  # "bbbb" now loses per character too
    other[_ids("dog"), _ids("ran")] = 3.0

    results = [
        evaluate(
            BigramLM(t),
            word_tokenizer,
            ["arc_easy", "winogrande"],
            data_dir=tmp_path,
            return_predictions=True,
            disable_progress=True,
        )
        for t in (table, other)
    ]
    comparison = paired_bootstrap(correct_by_task(results[1]), correct_by_task(results[0]))
    assert correct_by_task(results[0]) == {"arc_easy": [0, 1, 1], "winogrande": [1, 1]}
    assert comparison["difference"] == pytest.approx(results[1]["average"] - results[0]["average"])
    assert comparison["difference"] != 0 and comparison["num_examples"] == {"arc_easy": 3, "winogrande": 2}
    low, high = comparison["ci95"]
    assert low <= comparison["difference"] <= high
    with pytest.raises(ValueError, match="return_predictions=True"):
        correct_by_task({key: value for key, value in results[0].items() if key != "predictions"})
    # compare_evaluations: the same comparison per task and on the average, refused on different examples
    compared = compare_evaluations(results[1], results[0])
    assert compared["average"] == comparison and set(compared) == {"arc_easy", "winogrande", "average"}
    assert compared["winogrande"] == paired_bootstrap(
        correct_by_task(results[1])["winogrande"], correct_by_task(results[0])["winogrande"]
    )
    results[0]["predictions"]["arc_easy"].reverse()
    with pytest.raises(ValueError, match="arc_easy: the two evaluations did not score the same examples"):
        compare_evaluations(results[1], results[0])


def _as_questions(task: str, docs: list[dict]) -> list[dict]:
    """A registered single-context task's examples as your own questions: the same prompts, choices and gold."""
    from diet_hf.tasks import get_task

    requests = [get_task(task).build(doc) for doc in docs]
    return [
        {"id": r.example_id, "context": r.contexts[0], "choices": r.continuations, "label": r.label} for r in requests
    ]


def test_your_own_multiple_choice_task_scores_as_a_registered_one(tiny_tokenizer, data_dir):
    from diet_hf.tasks import evaluation_examples, multiple_choice_task

    model = tiny_dense_model("gemma3_text", vocab_size=len(tiny_tokenizer))
    docs = evaluation_examples("arc_easy", limit=10, data_dir=data_dir)
    mine = multiple_choice_task("mine", _as_questions("arc_easy", docs))
    result = evaluate(model, tiny_tokenizer, ["arc_easy", mine], limit=10, data_dir=data_dir, return_predictions=True)
    registered, own = result["predictions"]["arc_easy"], result["predictions"]["mine"]
    assert [p["id"] for p in own] == [d["id"] for d in docs]
    assert [(p["acc"], p["acc_norm"]) for p in own] == [(p["acc"], p["acc_norm"]) for p in registered]
    assert result["results"]["mine"]["acc_norm"] == result["results"]["arc_easy"]["acc_norm"]
    assert result["results"]["mine"]["headline_metric"] == "acc"
    assert result["average"] == pytest.approx(
        (result["results"]["arc_easy"]["acc_norm"] + result["results"]["mine"]["acc"]) / 2
    )
    # the headline metric is yours to choose; without ids a question is named by its position
    rows = [{k: v for k, v in q.items() if k != "id"} for q in _as_questions("arc_easy", docs)]
    normed = multiple_choice_task("mine", rows, headline_metric="acc_norm")
    alone = evaluate(model, tiny_tokenizer, normed, return_predictions=True, disable_progress=True)
    assert alone["average"] == result["results"]["arc_easy"]["acc_norm"]
    assert [p["id"] for p in alone["predictions"]["mine"]] == [str(i) for i in range(10)]
    # the halves hash the task's name and each id, as for the registered tasks, and partition the questions
    halves = {h: evaluate(model, tiny_tokenizer, normed, half=h, return_predictions=True) for h in ("dev", "test")}
    for half, scored in halves.items():
        ids = [p["id"] for p in scored["predictions"]["mine"]]
        assert ids and all(split_half("mine", i) == half for i in ids)
    assert sum(scored["results"]["mine"]["num_scored"] for scored in halves.values()) == 10
    with pytest.raises(ValueError, match="names a task twice"):
        evaluate(model, tiny_tokenizer, [mine, normed])
    one = multiple_choice_task("one", rows[:1])
    empty_half = "dev" if split_half("one", "0") == "test" else "test"
    with pytest.raises(ValueError, match=f"No examples of task 'one' left to score in its {empty_half} half"):
        evaluate(model, tiny_tokenizer, one, half=empty_half)


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        ([], {}, "holds no questions"),
        ([{"context": "Q", "choices": ["a", "b"]}], {}, r"row 0: no 'label' field"),
        ([{"context": "Q", "choices": ["a", "b"], "label": 2}], {}, r"row 0: `label` must be .* from 0 to 1, got 2"),
        ([{"context": "Q", "choices": ["a", "b"], "label": True}], {}, r"`label` must be .* got True"),
        ([{"context": "Q", "choices": ["a", "b"], "label": -1}], {}, r"`label` must be .* from 0 to 1, got -1"),
        (
            [{"context": "Q", "choices": ["a", " "], "label": 0}],
            {},
            r"`choices` must be a list of at least two non-empty",
        ),
        (
            [{"id": True, "context": "Q", "choices": ["a", "b"], "label": 0}],
            {},
            r"`id` must be a string or an .* True",
        ),
        ([{"context": "Q", "choices": ["a"], "label": 0}], {}, r"`choices` must be a list of at least two"),
        ([{"context": " ", "choices": ["a", "b"], "label": 0}], {}, r"`context` must be a non-empty string"),
        ([{"id": 1, "context": "Q", "choices": ["a", "b"], "label": 0}] * 2, {}, r"`id` '1' appears twice"),
        (["Q a b"], {}, r"row 0: expected an object with context, choices, label, got str"),
        ([{"context": "Q", "choices": ["a", "b"], "label": 0}], {"headline_metric": "f1"}, r"`headline_metric`"),
    ],
)
def test_your_own_multiple_choice_task_refuses_bad_questions(rows, kwargs, message):
    from diet_hf.tasks import multiple_choice_task

    with pytest.raises(ValueError, match=message):
        multiple_choice_task("mine", rows, **kwargs)


def test_your_own_multiple_choice_task_cannot_take_a_registered_name():
    from diet_hf.tasks import multiple_choice_task

    with pytest.raises(ValueError, match="'piqa' is a registered task"):
        multiple_choice_task("piqa", [{"context": "Q", "choices": ["a", "b"], "label": 0}])


def test_encode_pair_is_lm_evals_encoding(tiny_tokenizer):
    """`encode_pair`, public for training rows that match evaluation: a context's trailing spaces move to the
    continuation (lm-eval 0.4's `_encode_pair`), the context is encoded as the tokenizer encodes it alone (special
    tokens included), and the continuation's ids are the tail of the whole string's."""
    from diet_hf.evaluation import encode_pair

    context_ids, continuation_ids = encode_pair(tiny_tokenizer, "Question: is it true? Answer: ", "yes")
    assert context_ids == tiny_tokenizer("Question: is it true? Answer:")["input_ids"]
    assert context_ids + continuation_ids == tiny_tokenizer("Question: is it true? Answer: yes")["input_ids"]
    assert tiny_tokenizer.decode(continuation_ids) == " yes"


def test_head_log_probs_of_states_on_another_device_than_the_head():
    """A model split across GPUs keeps its tied LM head with the embeddings, on the first GPU, and hands the head the
    last layer's states from another: the head runs on its own device, the result comes back to the states'. (Fake
    meta-device weights stand in for the first GPU: a CPU tensor meeting them raises the same device mismatch.)"""
    from diet_hf.evaluation.scorer import Scorer

    model = on_second_device(tiny_dense_model("gemma2"))
    states = torch.randn(3, model.config.hidden_size)  # on the CPU, the stand-in for the last layer's GPU
    logprobs = Scorer(model).logprobs(states)
    assert logprobs.device.type == "cpu" and tuple(logprobs.shape) == (3, model.config.vocab_size)


def test_log_likelihoods_that_are_not_finite_are_an_error(word_tokenizer, tmp_path):
    """A model whose outputs overflowed (a float16 Gemma: see the profile's test) gives NaN log-likelihoods, and a
    NaN would pick an answer, or a perplexity, silently."""
    table = torch.zeros(len(WORDS), len(WORDS))
    table[_ids("The")] = table[_ids("Answer:")] = float("nan")
    model = BigramLM(table)
    rows = [{"id": f"p{i}", "goal": "The", "sol1": "a", "sol2": "cc", "label": i % 2} for i in range(2)]
    _write_task(tmp_path, "piqa", "validation", rows)
    with pytest.raises(
        ValueError,
        match=r"4 of 4 task 'piqa''s choice log-likelihoods are not finite: most likely the model overflowed",
    ):
        evaluate(model, word_tokenizer, ["piqa"], data_dir=tmp_path, disable_progress=True)
    with pytest.raises(ValueError, match=r"1 of 2 texts' log-likelihoods are not finite: .*bfloat16 or float32"):
        texts_perplexity(model, word_tokenizer, ["The a", "a cc"], disable_progress=True)
    with pytest.raises(ValueError, match=r"1 of 2 windows' log-likelihoods are not finite: most likely"):
        perplexity(model, word_tokenizer, text="a cc The a", max_length=3, disable_progress=True)


def test_scoring_with_the_chat_template_is_lm_evals_apply_chat_template(tiny_tokenizer):
    """`evaluate(apply_chat_template=True)`, lm-eval's `--apply_chat_template` (zero-shot): each context is the user's
    message in the chat template with the model's turn opened, the choices follow with no delimiter, and a context the
    template starts with BOS is encoded without a second one (lm-eval's `tok_encode`). Checked against the
    log-likelihoods of those pairs scored directly; without a chat template it is refused."""
    from conftest import chat_tokenizer

    from diet_hf.evaluation import encode_pair
    from diet_hf.tasks import multiple_choice_task

    tokenizer = chat_tokenizer(tiny_tokenizer, adds_bos=True)
    rendered = "<bos><start_of_turn>user\nQuestion: what is it?<end_of_turn>\n<start_of_turn>model\n"
    context_ids, answer_ids = encode_pair(tokenizer, rendered, "yes")
    assert context_ids.count(tokenizer.bos_token_id) == 1 and context_ids[0] == tokenizer.bos_token_id
    assert context_ids + answer_ids == tokenizer(rendered + "yes", add_special_tokens=False)["input_ids"]
    rows = [
        {"context": "Question: what is it?", "choices": ["yes", "no"], "label": 1},
        {"context": "True or False?", "choices": ["True", "False", "what"], "label": 0},
        {"context": "The answer", "choices": ["is yes", "is no"], "label": 0},
    ]
    task = multiple_choice_task("mine", rows)
    model = tiny_dense_model("gemma3_text", vocab_size=len(tokenizer)).eval()
    result = evaluate(model, tokenizer, [task], apply_chat_template=True, return_predictions=True)
    assert result["apply_chat_template"] is True
    pairs = [
        (f"<bos><start_of_turn>user\n{row['context']}<end_of_turn>\n<start_of_turn>model\n", choice)
        for row in rows
        for choice in row["choices"]
    ]
    lls = iter(loglikelihoods(model, tokenizer, pairs))
    expected = []
    for row in rows:
        values = [next(lls) for _ in row["choices"]]
        expected.append(max(range(len(values)), key=lambda i: (values[i], -i)))
    assert [p["acc"] for p in result["predictions"]["mine"]] == expected
    plain = evaluate(model, tokenizer, [task], return_predictions=True)
    assert "apply_chat_template" not in plain
    with pytest.raises(ValueError, match="`apply_chat_template`: the tokenizer has no chat template"):
        evaluate(model, tiny_tokenizer, [task], apply_chat_template=True)
