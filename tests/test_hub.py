"""Publishing through the real huggingface_hub / transformers code against the local Hub server on 127.0.0.1."""

import json
import logging
import os
import stat
import textwrap

import pytest
import torch
from conftest import assert_tables_well_formed, random_batch, run_script, save_dense_checkpoint, tiny_dense_model
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForCausalLM

import diet_hf
from diet_hf import DietPruner, ImportanceScores, build_pruned_model
from diet_hf.card import PLOT_FILE
from diet_hf.cli import main
from diet_hf.hub import push_saved_model, remote_code_files, save_pruned_model
from diet_hf.loading import load_tokenizer

FRESH_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["diet_hf"] = None  # diet_hf cannot be imported in this process
    import torch
    from transformers import AutoModelForCausalLM
    repo, revisions, ids = sys.argv[1], json.loads(sys.argv[2]), torch.tensor(json.loads(sys.argv[3]))
    logits = []
    for revision in revisions:
        model = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True, revision=revision).eval()
        with torch.no_grad():
            logits.append(model(ids).logits.tolist())
    print(json.dumps(logits))
    """
)


def _fresh_load(repo, ids, tmp_path, revisions=(None,)):
    """The logits of `repo` at each of `revisions` (None: its main branch), in order, loaded from the local Hub without
    diet-hf in one new process, with nothing cached."""
    env = {"HF_HOME": str(tmp_path / "empty-hf-home"), "HF_HUB_OFFLINE": "0"}
    stdout = run_script(tmp_path, FRESH_LOAD, repo, json.dumps(list(revisions)), json.dumps(ids.tolist()), env=env)
    return [torch.tensor(each) for each in json.loads(stdout.strip().splitlines()[-1])]


@pytest.fixture
def dense_dir(tmp_path, tiny_tokenizer):
    return save_dense_checkpoint(tmp_path / "dense", "gemma3_text", tiny_tokenizer)


def test_cli_prune_push_then_load_anywhere(local_hub, dense_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "pruned"
    code = main(
        [
            "--quiet",
            "prune",
            str(dense_dir),
            "--sparsity",
            "0.25",
            "--tasks",
            "rte",
            "piqa",
            "--num-samples",
            "4",
            "--data-dir",
            str(data_dir),
            "--output",
            str(out),
            "--push-to-hub",
            "user/tiny-diet",
            "--private",
            "--token",
            "hf_given_on_the_command_line",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert local_hub.state.commit_tokens[-1] == "hf_given_on_the_command_line"  # not the environment's HF_TOKEN
    api = HfApi()
    assert api.model_info("user/tiny-diet").private  # --private
    files = set(api.list_repo_files("user/tiny-diet"))
    expected = {
        "config.json",
        "model.safetensors",
        "README.md",
        PLOT_FILE,
        "diet_pruning.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        *(p.name for p in remote_code_files()),
    }
    assert expected <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    for source in remote_code_files():  # byte-identical remote code in the repository
        assert (out / source.name).read_bytes() == source.read_bytes()
    ids = random_batch(vocab_size=40)
    from transformers import AutoModelForCausalLM

    local = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        expected_logits = local(ids).logits

    # `info` on the repo id reads its structure through the Hub
    assert main(["info", "user/tiny-diet"]) == 0
    assert "mlp width" in capsys.readouterr().out
    # with --token, every read of `info` and `eval` carries it (a private repository read with another account's)
    reads = {
        "info": ["info", "user/tiny-diet"],
        "eval": ["--quiet", "eval", "user/tiny-diet", "--tasks", "rte", "--limit", "2", "--data-dir", str(data_dir)],
    }
    for command, argv in reads.items():
        local_hub.state.read_tokens.clear()
        local_hub.state.read_paths.clear()
        assert main([*argv, "--token", "hf_reader"]) == 0, command
        requests = list(zip(local_hub.state.read_tokens, local_hub.state.read_paths))
        # transformers 5.x's tokenizer also lists the repository's files without the token it was given (an optional
        # look for other tokenizer files; a failure is ignored): not one of the reads a private model needs
        needed = [(token, path) for token, path in requests if not path.endswith("/tree/main")]
        assert needed and all(token == "hf_reader" for token, _ in needed), (command, needed)
    capsys.readouterr()

    # pushing the same model again creates no new commit; `revision=` pins the first one
    first = api.model_info("user/tiny-diet").sha
    assert push_saved_model(out, "user/tiny-diet") == first
    push_saved_model(out, "user/tiny-diet-copy")
    assert local_hub.state.commit_tokens[-1] == os.environ["HF_TOKEN"]  # no token given: the environment's
    assert not api.model_info("user/tiny-diet-copy").private  # public unless asked, as transformers' push_to_hub
    assert api.model_info("user/tiny-diet").sha == first
    # loaded from the Hub without diet-hf, from its main branch and at that commit (one process for both)
    for logits in _fresh_load("user/tiny-diet", ids, tmp_path, revisions=(None, first)):
        assert (logits - expected_logits).abs().max().item() <= 1e-5


def test_your_own_data_on_the_hub_is_read_with_the_token_given(local_hub, hub_dataset, dense_dir, tmp_path, capsys):
    """`--token` also reads your own data from a Hub dataset (a private one, say): `eval --texts` / `--tasks` and
    `prune --tasks` / `--eval-texts` / `--eval-tasks` send it on every read of the dataset's repository."""
    questions = [{"context": f"Question {i}?", "choices": ["yes", "no"], "label": i % 2} for i in range(4)]
    texts = [{"text": f"A text of your own, number {i}."} for i in range(8)]
    repo = hub_dataset("user/own-data", {"texts": {"train": texts}, "questions": {"test": questions}})
    mine, asked = f"mine={repo},texts:train[:6]", f"q={repo},questions"
    commands = {
        "eval": ["eval", str(dense_dir), "--texts", mine, "--tasks", asked],
        "prune": ["prune", str(dense_dir), "--tasks", mine, "--sparsity", "0.2", "--output", str(tmp_path / "p")]
        + ["--eval-texts", f"held={repo},texts:train[6:]", "--eval-tasks", asked],
    }
    for command, argv in commands.items():
        local_hub.state.read_tokens.clear()
        local_hub.state.read_paths.clear()
        assert main(["--quiet", *argv, "--token", "hf_own_data"]) == 0, capsys.readouterr().err
        reads = zip(local_hub.state.read_tokens, local_hub.state.read_paths)
        tokens = [token for token, path in reads if "user/own-data" in path]
        assert tokens and set(tokens) == {"hf_own_data"}, command
    capsys.readouterr()
    # the pruned model records where your texts were read, at the dataset's commit, and its card links the dataset
    commit = HfApi().dataset_info(repo).sha
    record = json.loads((tmp_path / "p" / "config.json").read_text())["pruning"]
    read = {"dataset": repo, "revision": commit, "config": "texts", "split": "train[:6]", "column": "text"}
    assert record["task_sources"] == {"mine": read}
    card = ModelCard.load(tmp_path / "p" / "README.md")
    assert (
        card.data.datasets == [repo]
        and f"| calibration tasks | mine ({repo}@{commit[:7]},texts:train[:6]:text) |" in card.text
    )
    assert f"| held ({repo}@{commit[:7]},texts:train[6:]:text) | 2 |" in card.text  # your held-out texts too
    # and the scores on your questions name the dataset (its config, split and commit) they were read from
    (result,) = [r for r in card.data.eval_results if r.dataset_name.startswith("q ")]
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == (repo, "questions", "test")
    assert result.dataset_revision == commit


def test_cli_heal_pushes_the_healed_model(local_hub, hub_dataset, tmp_path, tiny_tokenizer, data_dir, capsys):
    """`diet-hf heal --push-to-hub`: the healed checkpoint (card naming the repository and the healing) in one
    commit, loadable from the Hub without diet-hf with the logits of the local copy."""
    from test_healing import _pair

    teacher, student = _pair(vocab_size=len(tiny_tokenizer))
    student.save_pretrained(tmp_path / "pruned")
    tiny_tokenizer.save_pretrained(tmp_path / "pruned")
    teacher.save_pretrained(tmp_path / "dense")
    # the teacher read from the Hub, with the token given on the command line
    HfApi().create_repo("user/tiny-teacher")
    HfApi().upload_folder(folder_path=str(tmp_path / "dense"), repo_id="user/tiny-teacher")
    local_hub.state.read_tokens.clear()
    local_hub.state.read_paths.clear()
    out = tmp_path / "healed"
    argv = ["--quiet", "heal", str(tmp_path / "pruned"), "--teacher", "user/tiny-teacher", "--output", str(out)]
    # your own data from a Hub dataset, read with that token too
    texts = [{"text": f"Your own healing text number {i}, a little longer than a few words."} for i in range(6)]
    hub_dataset("user/own-healing-data", {"default": {"train": texts}})
    argv += ["--data", "rte", "mine=user/own-healing-data", "--data-dir", str(data_dir), "--seq-len", "16"]
    argv += ["--max-tokens", "64"]
    argv += ["--gradient-accumulation-steps", "1", "--validation-sequences", "2", "--top-k", "4", "--lora-r", "2"]
    argv += ["--push-to-hub", "user/tiny-healed", "--private", "--token", "hf_healing_token"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "pushed" in capsys.readouterr().out and not (tmp_path / "healed.healing").exists()
    assert local_hub.state.commit_tokens[-1] == "hf_healing_token"
    reads = zip(local_hub.state.read_tokens, local_hub.state.read_paths)
    reads = list(reads)
    teacher_reads = [token for token, path in reads if "tiny-teacher" in path]
    assert teacher_reads and set(teacher_reads) == {"hf_healing_token"}
    data_reads = [token for token, path in reads if "own-healing-data" in path]
    assert data_reads and set(data_reads) == {"hf_healing_token"}
    api = HfApi()
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(
        api.list_repo_files("user/tiny-healed")
    )
    assert api.model_info("user/tiny-healed").private
    card = (out / "README.md").read_text()
    assert 'from_pretrained("user/tiny-healed"' in card and "heal" in card.lower()
    # healed on RTE and your own Hub dataset: both link the model, and the record names the commit it was read at
    assert ModelCard.load(out / "README.md").data.datasets == ["nyu-mll/glue", "user/own-healing-data"]
    commit = api.dataset_info("user/own-healing-data").sha
    own = json.loads((out / "config.json").read_text())["pruning"]["healing"]["data"]["own_sources"]
    read = {"dataset": "user/own-healing-data", "revision": commit, "config": None, "split": "train", "column": "text"}
    assert own == {"mine": read}
    assert f"mine (user/own-healing-data@{commit[:7]}:train:text)" in card
    assert_tables_well_formed(card)
    config = json.loads((out / "config.json").read_text())
    assert config["pruning"]["healing"]["tokens_seen"] == 64
    ids = random_batch(vocab_size=len(tiny_tokenizer))
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    (logits,) = _fresh_load("user/tiny-healed", ids, tmp_path)
    assert (logits - expected).abs().max().item() <= 1e-5


def test_cli_heal_reads_a_pull_request_and_a_teacher_revision(local_hub, tmp_path, data_dir, tiny_tokenizer, capsys):
    """`diet-hf heal MODEL --revision refs/pr/1 --teacher-revision SHA`: a pruned model proposed as a pull request
    (`prune --push-to-hub ... --create-pr`) heals from that ref, with the plan saved beside it, against its dense
    parent at a commit the teacher's main branch has moved past; the record names the teacher's revision."""
    vocab = len(tiny_tokenizer)
    pruner = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="tiny")
    pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.3)
    pruner.push_to_hub("org/heal-pr", create_pr=True)  # its main branch stays empty
    api = HfApi()
    api.create_repo("org/heal-teacher")
    tiny_dense_model("gemma3_text", vocab_size=vocab).save_pretrained(tmp_path / "dense")  # the parent again
    parent = api.upload_folder(folder_path=str(tmp_path / "dense"), repo_id="org/heal-teacher").oid
    tiny_dense_model("gemma3_text", hidden_size=48, vocab_size=vocab).save_pretrained(tmp_path / "other")
    api.upload_folder(folder_path=str(tmp_path / "other"), repo_id="org/heal-teacher")  # main moves on

    argv = ["--quiet", "heal", "org/heal-pr", "--teacher", "org/heal-teacher", "--output"]
    flags = ["--data", "rte", "--data-dir", str(data_dir), "--seq-len", "16", "--max-tokens", "64"]
    flags += ["--gradient-accumulation-steps", "1", "--validation-sequences", "2", "--top-k", "4", "--lora-r", "2"]
    at = ["--revision", "refs/pr/1", "--teacher-revision", parent]
    assert main([*argv, str(tmp_path / "h"), *flags, *at]) == 0, capsys.readouterr().err
    healing = json.loads((tmp_path / "h" / "config.json").read_text())["pruning"]["healing"]
    assert healing["teacher"] == f"org/heal-teacher@{parent}"
    assert f"org/heal-teacher@{parent}" in (tmp_path / "h" / "README.md").read_text()
    online = [*flags[:-4], "--top-k", "0", "--lora-r", "2"]  # the teacher beside the student: loaded by the command
    assert main([*argv, str(tmp_path / "h0"), *online, *at]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "h0" / "config.json").read_text())["pruning"]["healing"]
    assert record["teacher"] == f"org/heal-teacher@{parent}" and record["options"]["top_k"] is None
    proposed = json.loads(local_hub.state.files_at("org/heal-pr", "refs/pr/1")[1]["diet_pruning.json"])
    assert json.loads((tmp_path / "h" / "diet_pruning.json").read_text()) == proposed  # the plan, read from the ref
    assert main([*argv, str(tmp_path / "h2"), *flags, "--revision", "refs/pr/1"]) == 1  # main: another model
    assert "`teacher` is not the dense parent" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "h3"), *flags, "--teacher-revision", parent]) == 1  # no model on main
    assert not (tmp_path / "h2").exists() and not (tmp_path / "h3").exists()


def test_model_card_parses_with_metadata_and_plot(tmp_path, data_dir, tiny_tokenizer):
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    dense.config._name_or_path = "google/gemma-2-2b"
    pruner = DietPruner(dense, tiny_tokenizer, model_id="google/gemma-2-2b")
    model = pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.3)
    evaluation = {"results": {"rte": {"acc": 0.5, "acc_norm": 0.5, "num_scored": 10, "half": "test"}}, "average": 0.5}
    save_pruned_model(model, tmp_path / "m", tokenizer=tiny_tokenizer, plan=pruner.plan, evaluation=evaluation)
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.base_model == "google/gemma-2-2b"
    assert card.data.datasets == ["nyu-mll/glue"]  # calibrated on RTE: its Hub dataset, which links the model
    from diet_hf.card import _card_datasets

    record = {"tasks": ["boolq", "rte", "arc_easy", "arc_challenge", "mine"]}  # ARC's two tasks: one dataset
    record["healing"] = {
        "data": {"sources": ["wikitext2", "rte", "own"]}
    }  # your own data of unknown source: not named
    expected = ["aps/super_glue", "nyu-mll/glue", "allenai/ai2_arc", "Salesforce/wikitext"]
    assert _card_datasets(record) == expected and _card_datasets({"tasks": ["mine"]}) is None
    # your own data read from a Hub dataset is named, in its place; a local file is not
    record["task_sources"] = {"mine": {"dataset": "org/texts", "split": "train"}}
    record["healing"]["data"]["own_sources"] = {"own": {"local": "file"}}
    record["healing"]["data"]["sources"].insert(0, "more")
    record["healing"]["data"]["own_sources"]["more"] = {"dataset": "org/more"}
    assert _card_datasets(record) == [*expected[:3], "org/texts", "org/more", *expected[3:]]
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"diet", "pruned", "structured-pruning"} <= set(card.data.tags)
    assert card.data.license == "gemma"
    assert f"]({PLOT_FILE})" in card.text and "trust_remote_code=True" in card.text and "2603.23985" in card.text
    assert "| rte | 10 |" in card.text and "| layer | type |" in card.text
    # options as readable rows, the target in words, the scored half named
    assert "| target sparsity | 30% of the decoder blocks' attention + MLP parameters |" in card.text
    assert "| samples per task | 3 (seed 0) |" in card.text
    assert "| calibration answers | each question's prompt followed by one of its choices, drawn per question |" in (
        card.text
    )
    assert "Perplexity on held-out texts" not in card.text  # none given
    # the headline metrics as `model-index` metadata, the examples scored named beside the dataset
    (result,) = card.data.eval_results
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == ("nyu-mll/glue", "rte", "validation")
    assert (result.metric_type, result.metric_value) == ("acc", 0.5)
    assert result.dataset_name == "rte (10 examples of its test half)" and result.task_type == "text-generation"
    assert card.data.model_name == "google/gemma-2-2b pruned with DIET"
    own = {"results": {"mine": {"acc": 0.25, "acc_norm": 0.75, "num_scored": 4, "own_questions": True}}}
    save_pruned_model(model, tmp_path / "o", plan=pruner.plan, evaluation={**own, "average": 0.25}, repo_id="me/x")
    (mine,) = ModelCard.load(tmp_path / "o" / "README.md").data.eval_results
    assert (mine.dataset_type, mine.dataset_name, mine.metric_type, mine.metric_value) == (
        "mine",
        "mine (4 examples)",
        "acc",
        0.25,
    )
    assert ModelCard.load(tmp_path / "o" / "README.md").data.model_name == "x"
    assert "half of each task" not in (tmp_path / "o" / "README.md").read_text()  # scored on no half: none named
    held = {"mine": {"perplexity": 12.5, "tokens": 1200, "texts": 40, "truncated": 0, "nll": [1.0], "counts": [3]}}
    save_pruned_model(model, tmp_path / "t", plan=pruner.plan, text_evaluation=held)  # without the base model's
    assert (
        "| texts | count | tokens | perplexity |\n|---|---|---|---|\n| mine | 40 | 1,200 | 12.500 |"
        in (tmp_path / "t" / "README.md").read_text()
    )
    assert f"| recipe | {pruner.plan.provenance['recipe']} |" in card.text and "| allocation |" in card.text
    assert "on the test half of each task's evaluation examples" in card.text
    assert "{'" not in card.text  # no Python dicts
    assert card.text.strip().splitlines()[0] == "# google/gemma-2-2b pruned with DIET"
    assert "(revision None)" not in card.text
    # pruned from a local directory: no `base_model` metadata (the Hub rejects a card whose base_model is a path)
    dense.save_pretrained(tmp_path / "my-dense")
    tiny_tokenizer.save_pretrained(tmp_path / "my-dense")
    local = DietPruner.from_pretrained(tmp_path / "my-dense")
    local.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.3)
    local.save_pretrained(tmp_path / "l")
    local_card = ModelCard.load(tmp_path / "l" / "README.md")
    assert local_card.data.base_model is None and "base_model" not in local_card.content.split("---")[1]
    assert local_card.text.strip().splitlines()[0] == "# my-dense pruned with DIET"
    assert f"| base model | {tmp_path / 'my-dense'} |" in local_card.text
    assert "--reference path/to/my-dense --half test" in local_card.text  # not the path on the pruning machine
    # a snapshot of the Hub cache (what `snapshot_download` returns) names its model
    snapshot = tmp_path / "hub" / "models--google--gemma-2-2b" / "snapshots" / "0123abcd"
    dense.save_pretrained(snapshot)
    tiny_tokenizer.save_pretrained(snapshot)
    cached = DietPruner.from_pretrained(snapshot)
    cached.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.3)
    cached.save_pretrained(tmp_path / "c")
    cached_card = ModelCard.load(tmp_path / "c" / "README.md")
    assert cached_card.data.base_model == "google/gemma-2-2b"
    assert cached_card.text.strip().splitlines()[0] == "# google/gemma-2-2b pruned with DIET"
    assert "--reference google/gemma-2-2b --half test" in cached_card.text
    png = (tmp_path / "m" / PLOT_FILE).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    with Image.open(tmp_path / "m" / PLOT_FILE) as image:
        image.verify()
    # with the dense model's scores on the same examples: side by side
    dense_eval = {
        "results": {"rte": {"acc": 0.6, "acc_norm": 0.6, "num_scored": 10, "headline_metric": "acc"}},
        "average": 0.6,
    }
    evaluation["results"]["rte"]["headline_metric"] = "acc"
    save_pruned_model(model, tmp_path / "m2", evaluation=evaluation, dense_evaluation=dense_eval)
    text = (tmp_path / "m2" / "README.md").read_text()
    assert "| task | examples | metric | google/gemma-2-2b | this model |" in text
    assert "| rte | 10 | acc | 0.6000 | 0.5000 |" in text and "| headline average | | | 0.6000 | 0.5000 |" in text
    assert "paired-bootstrap 95% interval [" not in text  # no per-example answers given: no interval
    # with them (evaluate(..., return_predictions=True)): the average's difference and its paired interval, and the
    # command that scores the model against its base
    labels = [0, 1] * 5
    evaluation["predictions"] = {"rte": [{"id": str(i), "acc": 0, "label": y} for i, y in enumerate(labels)]}
    dense_eval["predictions"] = {  # right on the first 6 of 10, as its acc of 0.6 says; the pruned model on 5
        "rte": [{"id": str(i), "acc": y if i < 6 else 1 - y, "label": y} for i, y in enumerate(labels)]
    }
    save_pruned_model(model, tmp_path / "m3", evaluation=evaluation, dense_evaluation=dense_eval, repo_id="me/m3")
    text = (tmp_path / "m3" / "README.md").read_text()
    assert "Difference of the headline average: -0.1000, paired-bootstrap 95% interval [" in text
    assert "diet-hf eval me/m3 --reference google/gemma-2-2b --half test" in text
    assert_tables_well_formed(text)


@pytest.mark.parametrize("fault", ["fail_commits", "drop_commits"])
def test_failed_push_keeps_local_copy_and_says_how_to_retry(local_hub, tmp_path, fault, monkeypatch):
    from diet_hf import build_pruned_model

    model = build_pruned_model(tiny_dense_model("gemma2"))
    out = save_pruned_model(model, tmp_path / "m")
    setattr(local_hub.state, fault, 100)
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # skip retry back-off waits
    with pytest.raises(RuntimeError, match=r"(?s)failed: .*local copy in .* is complete and loadable; retry with"):
        push_saved_model(out, f"user/broken-{fault}")
    setattr(local_hub.state, fault, 0)
    from transformers import AutoModelForCausalLM

    ids = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(out)(ids).logits, model(ids).logits)
    push_saved_model(out, f"user/broken-{fault}")  # the advertised retry works
    assert "config.json" in HfApi().list_repo_files(f"user/broken-{fault}")


def test_unknown_routes_answer_404(local_hub):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{local_hub.endpoint}/api/unknown/route")
    assert error.value.code == 404


def test_card_counts_the_samples_of_each_task_where_they_differ(tmp_path, data_dir, tiny_tokenizer):
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    pruner = DietPruner(dense, tiny_tokenizer)
    mine = ["Question: what is the answer? Answer: yes", "the answer is no", "True False", "what is it", "no"]
    pruner.profile(tasks={"rte": None, "mine": mine}, num_samples=3, data_dir=data_dir, disable_progress=True)
    pruner.prune(sparsity=0.3)
    assert pruner.pruned_model.config.pruning["samples_per_task"] == {"rte": 3, "mine": 5}
    pruner.save_pretrained(tmp_path / "m")
    assert "| samples per task | rte 3, mine 5 (seed 0) |" in (tmp_path / "m" / "README.md").read_text()


def test_card_describes_the_steps_of_the_recipe_that_ran(tmp_path, data_dir, tiny_tokenizer):
    """The default recipe is not the paper's: the card's first paragraph says what was done, from the options."""
    dense = tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer))
    pruner = DietPruner(dense, tiny_tokenizer)
    pruner.profile(tasks=["rte", "boolq"], num_samples=4, data_dir=data_dir, disable_progress=True)
    texts = {}
    for recipe in ("uniform_mlp_mean_ls_bos", "paper"):
        pruner.prune(sparsity=0.3, recipe=recipe, disable_progress=True)
        pruner.save_pretrained(tmp_path / recipe)
        texts[recipe] = (tmp_path / recipe / "README.md").read_text().split("## How it was pruned")[0]
    default, paper = texts["uniform_mlp_mean_ls_bos"], texts["paper"]
    assert "(recipe `uniform_mlp_mean_ls_bos`)" in default and "merged by their mean rank" in default
    assert "every layer lost the same share of its MLP width" in default and "every attention head was kept" in default
    assert "refitted by least squares" in default and "reproducing the BOS token's output exactly" in default
    assert "majority vote" not in default
    # the steps in order, each once, the last after "and"
    steps = default.split("(recipe `uniform_mlp_mean_ls_bos`): ")[1].split("\n")[0]
    assert steps.count("least squares") == 1 and "; and each cut output projection was refitted" in steps
    card = (tmp_path / "uniform_mlp_mean_ls_bos" / "README.md").read_text()
    assert "The module names are Gemma's (these are the ones PEFT picks for stock Gemma text models):" in card
    assert "| target sparsity | 30% of the decoder blocks' attention + MLP parameters |" in card
    assert "(recipe `paper`)" in paper and "merged by majority vote" in paper and "and attention head" in paper
    assert "one ranking across all layers" in paper and "least squares" not in paper
    card = (tmp_path / "paper" / "README.md").read_text()
    assert f"| pruned with | diet-hf {diet_hf.__version__} |" in card  # the release, beside the options it ran
    options = {"score": "contribution", "keep_layers": [0], "steps": 2}
    pruner.prune(sparsity=0.1, **options, disable_progress=True)
    pruner.save_pretrained(tmp_path / "options")
    text = (tmp_path / "options" / "README.md").read_text().split("## How it was pruned")[0]
    assert "activation magnitudes times the norms of each unit's output-projection columns were profiled" in text
    assert "layers 0 were left whole" in text
    assert "the target was reached in 2 steps, profiling again after each" in text
    # the MLP and attention targets set apart
    pruner.prune(mlp_sparsity=0.25, attention_sparsity=0.0, recipe="paper", disable_progress=True)
    pruner.save_pretrained(tmp_path / "apart")
    assert "| target sparsity | MLP 25%, attention 0% |" in (tmp_path / "apart" / "README.md").read_text()


def test_pruner_save_pretrained_and_push_to_hub_carry_card_plan_and_tokenizer(
    local_hub, tmp_path, data_dir, tiny_tokenizer
):
    """The taught way: `pruner.save_pretrained` / `pruner.push_to_hub`, both through `save_pruned_model`. The pruned
    classes' own `save_pretrained` stays transformers' (no patching): weights, config and remote code only."""
    pruner = DietPruner(tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer)), tiny_tokenizer, model_id="tiny")
    with pytest.raises(RuntimeError, match="Nothing to save: call `prune\\(\\)` first"):
        pruner.save_pretrained(tmp_path / "early")
    assert not (tmp_path / "early").exists()
    model = pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.3)
    saved = pruner.save_pretrained(tmp_path / "m")
    names = {p.name for p in saved.iterdir()}
    assert {"README.md", PLOT_FILE, "diet_pruning.json", "config.json", "tokenizer.json"} <= names
    assert {p.name for p in remote_code_files()} <= names
    commit = pruner.push_to_hub("user/direct")
    files = set(HfApi().list_repo_files("user/direct"))
    assert {
        "README.md",
        PLOT_FILE,
        "diet_pruning.json",
        "tokenizer.json",
        *(p.name for p in remote_code_files()),
    } <= files
    card = ModelCard.load("user/direct")
    assert "structured-pruning" in card.data.tags and "user/direct" in card.text
    assert pruner.push_to_hub("user/direct") == commit  # same content again: no new commit
    # the card's evaluation tables travel with a push as with a save
    evaluation = {"results": {"rte": {"acc": 0.5, "acc_norm": 0.5, "num_scored": 10, "half": "test"}}, "average": 0.5}
    held = {"mine": {"perplexity": 12.5, "tokens": 1200, "texts": 40, "truncated": 0, "nll": [1.0], "counts": [3]}}
    pruner.save_pretrained(tmp_path / "evaluated", evaluation=evaluation, text_evaluation=held, repo_id="user/direct")
    assert pruner.push_to_hub("user/direct", evaluation=evaluation, text_evaluation=held) != commit
    pushed = ModelCard.load("user/direct").text
    assert "| rte | 10 |" in pushed and "| mine | 40 | 1,200 | 12.500 |" in pushed
    assert pushed == ModelCard.load(tmp_path / "evaluated" / "README.md").text
    pruner.push_to_hub("user/direct-2", token="hf_api_token")
    assert local_hub.state.commit_tokens[-1] == "hf_api_token"
    # stock save of the pruned class: loadable, with remote code, but no card or plan of ours
    assert "save_pretrained" not in vars(type(model)) and not hasattr(type(model).save_pretrained, "__wrapped__")
    model.save_pretrained(tmp_path / "stock")
    stock = {p.name for p in (tmp_path / "stock").iterdir()}
    assert {"config.json", "model.safetensors", *(p.name for p in remote_code_files())} <= stock
    assert not {"diet_pruning.json", PLOT_FILE} & stock


def test_failed_push_of_a_model_leaves_nothing_and_says_how_to_retry(local_hub, tmp_path, monkeypatch):
    from diet_hf.hub import push_pruned_model

    local_hub.state.fail_commits = 100
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)
    with pytest.raises(
        RuntimeError, match=r"(?s)Pushing to 'user/broken' failed: .*Nothing was written locally"
    ) as info:
        push_pruned_model(build_pruned_model(tiny_dense_model("gemma2")), "user/broken")
    local_hub.state.fail_commits = 0
    # the HTTP error itself, not the message of a local copy: the temporary folder it names is gone
    assert "local copy" not in str(info.value) and str(info.value).count("failed:") == 1
    # once the Hub answers: a commit on the main branch of a public repository (`create_pr`, `private` to change it)
    commit = push_pruned_model(build_pruned_model(tiny_dense_model("gemma2")), "user/broken")
    info = HfApi().model_info("user/broken")
    assert commit == info.sha and not info.private


def test_max_shard_size_splits_the_weights_and_a_later_save_removes_the_shards(tmp_path):
    """`max_shard_size` as in transformers' `save_pretrained`: several weight files and an index, loaded back exactly;
    saved again in one file into the same directory, the shards and their index are gone."""
    model = build_pruned_model(tiny_dense_model("gemma2"))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    save_pruned_model(model, tmp_path / "m", max_shard_size=size // 3)
    shards = sorted(p.name for p in (tmp_path / "m").glob("model-*.safetensors"))
    assert len(shards) >= 3 and (tmp_path / "m" / "model.safetensors.index.json").is_file()
    ids = random_batch()
    with torch.no_grad():
        expected = model(ids).logits
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "m")(ids).logits, expected)
    for bad in ("2XB", 0, -5, "big"):  # refused before anything is written
        with pytest.raises(ValueError, match=r"`max_shard_size` must be a number of bytes or a size such as '2GB'"):
            save_pruned_model(model, tmp_path / "bad", max_shard_size=bad)
    assert not (tmp_path / "bad").exists()
    save_pruned_model(model, tmp_path / "m")
    assert not list((tmp_path / "m").glob("model-*.safetensors"))
    assert not (tmp_path / "m" / "model.safetensors.index.json").exists()
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "m")(ids).logits, expected)


def test_saving_into_an_existing_directory_keeps_what_is_not_a_save(tmp_path):
    """A clone of a Hub repository (`.git`), the user's own files: they stay, as with transformers' `save_pretrained`;
    an earlier save's files are replaced and its weight shards that the new save does not write are removed."""
    target = tmp_path / "clone"
    (target / ".git").mkdir(parents=True)
    (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (target / "notes.txt").write_text("mine")
    (target / "model-00001-of-00002.safetensors").write_bytes(b"old shard")
    (target / "model.safetensors.index.json").write_text("{}")
    (target / "config.json").write_text("{}")
    model = build_pruned_model(tiny_dense_model("gemma2"))
    save_pruned_model(model, target)
    assert (target / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (target / "notes.txt").read_text() == "mine"
    assert not (target / "model-00001-of-00002.safetensors").exists()
    assert not (target / "model.safetensors.index.json").exists()
    ids = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(target)(ids).logits, model(ids).logits)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clone"]  # no temporary directory left


def test_save_targets_that_are_not_a_new_or_model_directory(tmp_path, monkeypatch):
    model = build_pruned_model(tiny_dense_model("gemma2"))
    (tmp_path / "file").write_text("keep")
    with pytest.raises(NotADirectoryError, match=r"`save_directory`: .*file exists and is not a directory"):
        save_pruned_model(model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep"
    monkeypatch.chdir(tmp_path)  # "." is the directory it names
    save_pruned_model(model, ".")
    assert (tmp_path / "config.json").is_file() and (tmp_path / "file").read_text() == "keep"
    dense = tmp_path / "dense"
    tiny_dense_model("gemma2").save_pretrained(dense)
    model.config.pruning = {**(model.config.pruning or {}), "base_model": str(dense)}
    with pytest.raises(ValueError, match="is the dense model this one was pruned from"):
        save_pruned_model(model, dense)


def test_what_the_card_shows_is_checked_before_anything_is_saved(tmp_path):
    """The card's results and the repository its snippet names, of the wrong type or alone: named before the save
    (they failed while the card was written: "string indices must be integers", `AttributeError`; a base model's
    evaluation without this model's, or an invalid repository id, went into the card unremarked)."""
    model = build_pruned_model(tiny_dense_model("gemma2"))
    evaluation = {"results": {"rte": {"acc": 0.5, "acc_norm": 0.5, "num_scored": 4}}, "average": 0.5}
    texts = {"mine": {"perplexity": 12.0, "texts": 2, "tokens": 10}}
    for kwargs, error, message in [
        ({"evaluation": "rte 0.5"}, TypeError, r"`evaluation` must be what `diet_hf.evaluation.evaluate` returns"),
        ({"evaluation": [0.5]}, TypeError, r"`evaluation` must be .* got list: \[0.5\]"),
        (
            {"dense_evaluation": evaluation},
            ValueError,
            r"`dense_evaluation` is the base model's, .* pass `evaluation`",
        ),
        ({"text_evaluation": [12.0]}, TypeError, r"`text_evaluation` must be `\{name: diet_hf.evaluation.texts_perp"),
        ({"text_evaluation": {"mine": 12.0}}, TypeError, r"`text_evaluation` must be .* got dict"),
        ({"dense_text_evaluation": texts}, ValueError, r"pass `text_evaluation` too"),
        ({"repo_id": "not a repo!"}, ValueError, r"`repo_id` 'not a repo!' is not a valid Hub repository id"),
    ]:
        with pytest.raises(error, match=message):
            save_pruned_model(model, tmp_path / "m", **kwargs)
    for where in (None, 3):
        with pytest.raises(TypeError, match=r"`save_directory` must be a path \(a `str` or `os.PathLike`\), got"):
            save_pruned_model(model, where)
    assert list(tmp_path.iterdir()) == []
    save_pruned_model(model, tmp_path / "m", evaluation=evaluation, dense_evaluation=evaluation, text_evaluation=texts)


def test_an_invalid_repo_id_fails_before_anything_is_saved(tmp_path, monkeypatch):
    from diet_hf.hub import push_pruned_model

    monkeypatch.setattr("diet_hf.hub.save_pruned_model", lambda *args, **kwargs: pytest.fail("saved first"))
    with pytest.raises(ValueError, match=r"`repo_id` 'not a repo!' is not a valid Hub repository id"):
        push_pruned_model(build_pruned_model(tiny_dense_model("gemma2")), "not a repo!")
    with pytest.raises(ValueError, match=r"`repo_id` 'a/b/c' is not a valid Hub repository id"):
        push_saved_model(tmp_path, "a/b/c")
    with pytest.raises(ValueError, match=r"`repo_id` must be a Hub repository id like 'you/model-name', got None"):
        push_saved_model(tmp_path, None)


def test_saved_directories_and_files_follow_the_umask(tmp_path):
    model = build_pruned_model(tiny_dense_model("gemma2"))
    old = os.umask(0o027)
    try:
        target = save_pruned_model(model, tmp_path / "model")
        scores_dir = tmp_path / "scores"
        scores_dir.mkdir()
        (scores_dir / "notes.txt").write_text("mine")  # saving scores into a folder keeps what else is there
        ImportanceScores({"a": torch.ones(2, 64)}, {"a": torch.ones(2, 4)}, {"model_type": "gemma2"}).save_pretrained(
            scores_dir
        )
    finally:
        os.umask(old)
    assert (scores_dir / "notes.txt").read_text() == "mine"
    (scores_dir / "notes.txt").chmod(0o640)
    for directory in (target, scores_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in files), [
            (p.name, oct(p.stat().st_mode)) for p in files
        ]


def test_atomic_directory_replaces_merges_or_leaves_the_target_untouched(tmp_path):
    """The one write path of every directory diet-hf saves: whole on success, untouched on failure."""
    from diet_hf._io import atomic_directory

    target = tmp_path / "out"
    with atomic_directory(target) as tmp:  # a new directory
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_directory(target) as tmp:  # replacing an existing one
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    (target / "model-00001-of-00002.safetensors").write_text("old shard")
    (target / "notes.md").write_text("the user's")
    with atomic_directory(target, merge=True, stale=("model-*.safetensors",)) as tmp:
        (tmp / "b.txt").write_text("3")
        (tmp / "model.safetensors").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt", "model.safetensors", "notes.md"]
    assert (target / "b.txt").read_text() == "3"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt", "model.safetensors", "notes.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old directory left beside it
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"`output`: .*file exists and is not a directory"):
        with atomic_directory(tmp_path / "file", argument="output"):
            pass


def test_atomic_directory_merges_folders_whole_and_restores_one_it_could_not_replace(tmp_path, monkeypatch):
    """Merging, a folder the write holds replaces the one of that name whole (an earlier save's profile), a stale
    folder it does not hold is removed, and a folder whose replacement fails is put back as it was."""
    import os
    from pathlib import Path

    from diet_hf._io import atomic_directory

    target = tmp_path / "out"
    (target / "diet_profile").mkdir(parents=True)
    (target / "diet_profile" / "old.json").write_text("old")
    (target / "other").mkdir()
    (target / "other" / "x").write_text("the user's")
    with atomic_directory(target, merge=True) as tmp:
        (tmp / "diet_profile").mkdir()
        (tmp / "diet_profile" / "new.json").write_text("new")
    assert [p.name for p in (target / "diet_profile").iterdir()] == ["new.json"]
    with atomic_directory(target, merge=True, stale=("diet_profile",)) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "other"]

    (target / "diet_profile").mkdir()
    (target / "diet_profile" / "kept.json").write_text("kept")
    replace = os.replace

    def failing(source, destination):
        if Path(source).name == "diet_profile" and Path(source).parent != target:  # the new folder's move
            raise OSError("disk full")
        return replace(source, destination)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        with atomic_directory(target, merge=True) as tmp:
            (tmp / "diet_profile").mkdir()
    monkeypatch.setattr(os, "replace", replace)
    assert [p.name for p in (target / "diet_profile").iterdir()] == ["kept.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_replaces_a_file_whole_or_leaves_it_untouched(tmp_path):
    """The one write path of every single file diet-hf writes (a plan, an evaluation record, the teacher's cache):
    the new content appears whole, and a failed write leaves the old file and no temporary file beside it."""
    from diet_hf._io import atomic_write, atomic_write_text

    target = tmp_path / "sub" / "record.json"
    atomic_write_text(target, "first")  # its folder made
    atomic_write_text(target, "second")
    assert target.read_text() == "second"

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


@pytest.mark.parametrize("pipelined", [True, False])
def test_create_pr_opens_a_pull_request_and_leaves_the_main_branch(
    pipelined, local_hub, tmp_path, data_dir, tiny_tokenizer, capsys, monkeypatch
):
    """`push_to_hub(create_pr=True)` / `--create-pr` commit to a new pull request's ref and return (print) its URL;
    the main branch is untouched. huggingface_hub opens the pull request first and commits to it where `hf_xet` is
    installed, and opens it with a single commit (`create_pr=1`) where not: both. A revision other than main, or
    `--create-pr` without `--push-to-hub`, is refused before anything is saved."""
    import huggingface_hub.hf_api

    from diet_hf.hub import push_saved_model

    if not pipelined:
        monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False, raising=False)
    repo = f"org/reviewed-{pipelined}"  # the local Hub lives for the session

    pruner = DietPruner(tiny_dense_model("gemma2", vocab_size=len(tiny_tokenizer)), tiny_tokenizer, model_id="tiny")
    pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=0.3)
    first = pruner.push_to_hub(repo)
    main_before = local_hub.state.files_at(repo, "main")
    # `revision="main"` says what a pull request is opened against anyway
    url = pruner.push_to_hub(repo, evaluation={"results": {}, "average": 0.5}, create_pr=True, revision="main")
    assert url.endswith(f"/{repo}/discussions/1")
    assert local_hub.state.files_at(repo, "main") == main_before  # the branch is as it was
    _, proposed = local_hub.state.files_at(repo, "refs/pr/1")
    assert set(proposed) == set(main_before[1]) and proposed["README.md"] != main_before[1]["README.md"]
    assert first != url
    with pytest.raises(ValueError, match="`create_pr` opens a pull request against the main branch"):
        push_saved_model(tmp_path, repo, revision="dev", create_pr=True)
    # without `create_pr`, `revision` is the branch the commit goes to
    HfApi().create_branch(repo, branch="dev")
    pruner.push_to_hub(repo, evaluation={"results": {}, "average": 0.25}, revision="dev")
    assert local_hub.state.files_at(repo, "main") == main_before
    card = local_hub.state.files_at(repo, "dev")[1]["README.md"]
    assert card not in (main_before[1]["README.md"], proposed["README.md"])
    # the command line: --create-pr with --push-to-hub, and refused without it before any model loads
    saved = pruner.save_pretrained(tmp_path / "m")
    argv = ["--quiet", "prune", str(saved), "--output", str(tmp_path / "never"), "--sparsity", "0.2", "--create-pr"]
    assert main(argv) == 2
    assert "`--create-pr` opens a pull request with the upload, so it needs `--push-to-hub" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_cli_create_pr_prints_the_pull_request(local_hub, dense_dir, tmp_path, data_dir, capsys):
    argv = ["prune", str(dense_dir), "--sparsity", "0.25", "--tasks", "rte", "--num-samples", "3"]
    argv += [
        "--data-dir",
        str(data_dir),
        "--output",
        str(tmp_path / "p"),
        "--push-to-hub",
        "org/cli-pr",
        "--create-pr",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert "to org/cli-pr (pull request http://" in capsys.readouterr().out
    assert local_hub.state.files_at("org/cli-pr", "refs/pr/1") is not None
    assert local_hub.state.files_at("org/cli-pr", "main")[1] == {}  # created empty; the upload is the pull request's


def test_a_profile_pushed_to_the_hub_prunes_anywhere_at_any_revision(
    local_hub, tmp_path, data_dir, tiny_tokenizer, capsys, caplog
):
    """`DietPruner.push_scores_to_hub` uploads the profile (your own tasks' texts beside it, and a card) in one commit;
    `load_scores(repo_id, revision=)` on another pruner gives the same pruned model, the default's reconstruction
    reading the uploaded texts and drawing the registered tasks again; a repository without a profile, or a local
    path that is not there, is a `FileNotFoundError` naming it (with `missing_ok`, a model without a profile is
    `None`; a path that is not there, or a profile without its weights, is still the error)."""
    from diet_hf.importance import scores_directory
    from diet_hf.tasks import SourceTexts

    mine = [f"My own calibration text number {i}, about support tickets." for i in range(4)]
    vocab = len(tiny_tokenizer)

    def profiled(seed):
        pruner = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="org/dense")
        tasks = {"rte": None, "mine": SourceTexts(mine, {"dataset": "org/tickets", "split": "train"})}
        return pruner.profile(tasks=tasks, num_samples=3, seed=seed, data_dir=data_dir, disable_progress=True)

    first = profiled(0)
    commit = first.push_scores_to_hub("org/profile")
    # the scores' own push commits to the main branch too (a pull request only with `create_pr=True`)
    direct = first.scores.push_to_hub("org/profile-direct")
    assert direct == HfApi().model_info("org/profile-direct").sha
    expected = first.prune(sparsity=0.3).state_dict()
    profiled(1).push_scores_to_hub("org/profile")  # the main branch moves on
    files = local_hub.state.files_at("org/profile", commit)[1]
    assert {"importance_scores.safetensors", "importance_scores.json", "calibration_texts.json", "README.md"} <= set(
        files
    )
    assert json.loads(files["calibration_texts.json"])["tasks"] == {"mine": mine}
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "org/dense" and "pruning-profile" in card.data.tags
    assert 'load_scores("org/profile")' in card.text and "| rte | 3 |" in card.text
    # the datasets it was calibrated on: RTE's, and yours where its source is stated
    assert card.data.datasets == ["nyu-mll/glue", "org/tickets"] and "| mine (org/tickets:train) | 4 |" in card.text

    fresh = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="org/dense")
    pruned = fresh.load_scores("org/profile", revision=commit, data_dir=data_dir).prune(sparsity=0.3)
    assert pruned.state_dict().keys() == expected.keys()
    assert all(torch.equal(pruned.state_dict()[k], v) for k, v in expected.items())
    latest = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="org/dense")
    assert latest.load_scores("org/profile", data_dir=data_dir).scores.provenance["seed"] == 1
    # a profile of one commit of the model, loaded into another: said, since the weights may differ
    other = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="org/dense")
    first.scores.provenance["revision"], other.model.config._commit_hash = "a" * 40, "b" * 40
    first.save_scores(tmp_path / "old-commit")
    with caplog.at_level(logging.WARNING, logger="diet_hf.profiling"):
        other.load_scores(tmp_path / "old-commit")
    assert f"made on org/dense at commit {'a' * 40}; this model (org/dense) is at commit {'b' * 40}" in caplog.text
    caplog.clear()
    other.model.config._commit_hash = "a" * 40
    with caplog.at_level(logging.WARNING, logger="diet_hf.profiling"):
        other.load_scores(tmp_path / "old-commit")
    assert "at commit" not in caplog.text
    assert main(["info", "org/profile", "--revision", commit, "--json"]) == 0  # `info` on a profile in the Hub
    assert json.loads(capsys.readouterr().out)["tasks"] == {"rte": 3, "mine": 4}
    HfApi().create_repo("org/no-profile")  # a repository without a profile
    HfApi().upload_file(path_or_fileobj=b"# a model\n", path_in_repo="README.md", repo_id="org/no-profile")
    HfApi().upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="org/no-profile")
    with pytest.raises(ValueError, match="`repo_id` org/no-profile holds a model .config.json.: the profile's card"):
        first.push_scores_to_hub("org/no-profile")
    assert local_hub.state.files_at("org/no-profile", "main")[1]["README.md"] == b"# a model\n"
    with pytest.raises(FileNotFoundError, match="No importance scores in the Hub repository org/no-profile: "):
        scores_directory("org/no-profile")
    assert scores_directory("org/no-profile", missing_ok=True) is None  # a model without one: `heal` reads on
    assert scores_directory("org/profile", revision=commit, missing_ok=True).name != "diet_profile"
    with pytest.raises(FileNotFoundError, match="No importance scores at ./nowhere: the directory does not exist"):
        scores_directory("./nowhere", missing_ok=True)  # neither a model nor a profile: still an error
    HfApi().create_repo("org/half-profile")  # a record without its weights: still an error, not "no profile"
    for name, content in (("config.json", b"{}"), ("diet_profile/importance_scores.json", b"{}")):
        HfApi().upload_file(path_or_fileobj=content, path_in_repo=name, repo_id="org/half-profile")
    with pytest.raises(FileNotFoundError, match="importance_scores.safetensors is missing"):
        scores_directory("org/half-profile", missing_ok=True)


def test_cli_prune_pushes_and_reads_a_profile_on_the_hub(local_hub, dense_dir, tmp_path, data_dir, capsys):
    """`prune --push-scores-to-hub REPO_ID` uploads the profile it made; `prune --scores REPO_ID` prunes from it with
    no profiling pass, to the same weights; `--scores-revision` without `--scores` is a usage error."""
    from safetensors.torch import load_file

    argv = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.25", "--data-dir", str(data_dir)]
    made = [*argv, "--tasks", "rte", "--num-samples", "3", "--output", str(tmp_path / "a")]
    assert main([*made, "--push-scores-to-hub", "org/cli-profile", "--private"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "pushed the profile to org/cli-profile (commit " in printed
    first = printed.split("pushed the profile to org/cli-profile (commit ")[1].split(")")[0]
    assert HfApi().model_info("org/cli-profile").private
    # another profile pushed over it: --scores-revision reads the first one
    other = [*argv, "--tasks", "piqa", "--num-samples", "3", "--output", str(tmp_path / "other")]
    assert main([*other, "--push-scores-to-hub", "org/cli-profile"]) == 0
    assert HfApi().model_info("org/cli-profile").sha != first
    at = ["--scores", "org/cli-profile", "--scores-revision", first]
    assert main([*argv, *at, "--output", str(tmp_path / "b")]) == 0
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main([*argv, "--scores-revision", "main", "--tasks", "rte", "--output", str(tmp_path / "c")]) == 2
    assert "`--scores-revision` reads --scores at a revision" in capsys.readouterr().err
    both = ["--push-to-hub", "org/m", "--push-scores-to-hub", "org/m", "--output", str(tmp_path / "c")]
    assert main([*made[:-2], *both]) == 2  # one repository for both: the profile's card would replace the model's
    assert "`--push-scores-to-hub` org/m is where --push-to-hub uploads a pruned model" in capsys.readouterr().err
    # with several sparsities the models go to org/m-20 and org/m-30: a profile there would replace one of their cards
    several = ["--push-to-hub", "org/m", "--push-scores-to-hub", "org/m-30", "--output", str(tmp_path / "c")]
    assert main([*made[:-2], *several, "--sparsity", "0.2", "0.3"]) == 2
    assert "`--push-scores-to-hub` org/m-30 is where --push-to-hub uploads a pruned model" in capsys.readouterr().err
    assert main([*argv, "--scores", "org/not-a-profile", "--output", str(tmp_path / "c")]) == 1
    assert "No importance scores at org/not-a-profile" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_model_pushed_with_its_profile_prunes_its_base_again_from_the_hub(
    local_hub, dense_dir, tmp_path, data_dir, capsys
):
    """`prune --include-profile --push-to-hub REPO_ID` uploads the profile in the model's `diet_profile/`; `prune
    --scores REPO_ID` prunes the base model again from it with no profiling pass, to the same weights; `info` says it
    is there; a model pushed over it without one deletes it in the same commit (it would be another model's)."""
    from safetensors.torch import load_file

    argv = ["--quiet", "prune", str(dense_dir), "--sparsity", "0.25", "--data-dir", str(data_dir)]
    made = [*argv, "--tasks", "rte", "--num-samples", "3"]
    pushed = [*made, "--include-profile", "--push-to-hub", "org/with-profile", "--output", str(tmp_path / "a")]
    assert main(pushed) == 0, capsys.readouterr().err
    files = local_hub.state.files_at("org/with-profile", "main")[1]
    assert {"config.json", "diet_profile/importance_scores.json", "diet_profile/calibration_texts.json"} <= set(files)
    assert "--scores org/with-profile --sparsity 0.3" in files["README.md"].decode()
    local_hub.state.read_paths.clear()
    assert main([*argv, "--scores", "org/with-profile", "--output", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    # the profile's files are downloaded, not the pruned model's weights beside them
    assert not [
        path for path in local_hub.state.read_paths if path.endswith(".safetensors") and "/diet_profile/" not in path
    ]
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["info", "org/with-profile"]) == 0
    assert "the profile it was pruned from is in diet_profile/; prune again from it: diet-hf prune " in (
        capsys.readouterr().out
    )
    assert main(["info", str(tmp_path / "a"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "diet_profile"

    assert main([*made, "--push-to-hub", "org/with-profile", "--output", str(tmp_path / "c")]) == 0  # without it
    files = local_hub.state.files_at("org/with-profile", "main")[1]
    assert "config.json" in files and not any(name.startswith("diet_profile/") for name in files)
    assert main([*argv, "--scores", "org/with-profile", "--output", str(tmp_path / "d")]) == 1
    assert "No importance scores in the Hub repository org/with-profile: it holds a model and no profile" in (
        capsys.readouterr().err
    )
    assert main(["info", "org/with-profile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] is None


def test_eval_compares_two_revisions_of_one_repository(local_hub, tmp_path, data_dir, tiny_tokenizer, capsys):
    """`diet-hf eval REPO --revision A --reference REPO --reference-revision B`: one repository at two commits is two
    models, each read at its own (here a model pruned at 30% and the same dense model pruned at 50%); each reads as
    its local copy does, and the printout and the JSON name both revisions. `--reference-revision` without
    `--reference` is a usage error."""
    vocab = len(tiny_tokenizer)
    commits = {}
    api = HfApi()
    api.create_repo("org/two-commits")
    for sparsity in (0.3, 0.5, 0.4):  # main ends at neither compared commit
        pruner = DietPruner(tiny_dense_model("gemma3_text", vocab_size=vocab), tiny_tokenizer, model_id="tiny")
        pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True).prune(sparsity=sparsity)
        pruner.save_pretrained(tmp_path / f"m{sparsity}")
        commits[sparsity] = pruner.push_to_hub("org/two-commits")
    (tmp_path / "texts.txt").write_text("\n".join(f"A sentence of my own, number {i}." for i in range(5)) + "\n")
    texts = ["--texts", f"mine={tmp_path / 'texts.txt'}"]
    local = {}
    for sparsity in commits:  # each commit's local copy, main's too
        assert (
            main(["--quiet", "eval", str(tmp_path / f"m{sparsity}"), *texts, "--output", str(tmp_path / "l.json")])
            == 0
        )
        local[sparsity] = json.loads((tmp_path / "l.json").read_text())["texts"]["mine"]["perplexity"]
    assert len(set(local.values())) == 3
    argv = ["--quiet", "eval", "org/two-commits", "--revision", commits[0.3], "--reference", "org/two-commits"]
    argv += ["--reference-revision", commits[0.5], *texts, "--output", str(tmp_path / "r.json")]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"org/two-commits@{commits[0.3]} over org/two-commits@{commits[0.5]}" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["revision"] == commits[0.3]
    assert report["texts"]["mine"]["perplexity"] == pytest.approx(local[0.3], rel=1e-6)
    assert report["reference_texts"]["mine"]["perplexity"] == pytest.approx(local[0.5], rel=1e-6)
    assert main(["--quiet", "eval", "org/two-commits", "--reference-revision", commits[0.5], *texts]) == 2
    assert "`--reference-revision` reads --reference at a revision" in capsys.readouterr().err


def test_a_gguf_file_in_a_hub_repository_prunes_and_its_record_names_it(local_hub, tmp_path, data_dir, capsys):
    """`DietPruner.from_pretrained(REPO, gguf_file=NAME)` and `prune REPO --gguf-file NAME` read the dense model from a
    GGUF file in a Hub repository at a revision (no config.json there), as from a local directory; the pruned model
    is pushed as an ordinary checkpoint whose card names the file."""
    pytest.importorskip("gguf")
    from conftest import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "source" / "tiny.gguf")
    HfApi().create_repo("org/tiny-gguf")
    commit = HfApi().upload_file(path_or_fileobj=str(path), path_in_repo="tiny.gguf", repo_id="org/tiny-gguf").oid
    # the main branch moves on to other weights and another tokenizer (a chat template): the revision is read
    later = write_tiny_gguf(tmp_path / "later" / "tiny.gguf", seed=1, chat_template="{{ 'later' }}")
    HfApi().upload_file(path_or_fileobj=str(later), path_in_repo="tiny.gguf", repo_id="org/tiny-gguf")
    local_hub.state.read_paths.clear()
    pruner = DietPruner.from_pretrained("org/tiny-gguf", gguf_file="tiny.gguf", revision=commit)
    assert pruner.tokenizer.chat_template is None
    assert not [path for path in local_hub.state.read_paths if "main/tiny.gguf" in path]  # nor a download of it
    # the tokenizer keeps the load's cache keywords: from the cache alone, or downloaded again
    local_hub.state.read_paths.clear()
    keywords = {"config": pruner.model.config, "gguf_file": "tiny.gguf", "revision": commit}
    load_tokenizer("org/tiny-gguf", **keywords, local_files_only=True)
    with pytest.raises(FileNotFoundError, match="could not be read"):  # the main branch never reached the cache
        load_tokenizer("org/tiny-gguf", **{**keywords, "revision": None}, local_files_only=True)
    assert not local_hub.state.read_paths
    # the whole load from the cache, its record naming the commit the cache holds (transformers' Auto classes look for
    # a PEFT adapter's adapter_config.json on the Hub even so)
    offline = DietPruner.from_pretrained(
        "org/tiny-gguf", gguf_file="tiny.gguf", revision=commit, local_files_only=True
    )
    assert not [path for path in local_hub.state.read_paths if not path.endswith("/adapter_config.json")]
    assert offline.model.config._commit_hash == commit
    load_tokenizer("org/tiny-gguf", **keywords, force_download=True)
    assert [path for path in local_hub.state.read_paths if path.endswith(f"{commit}/tiny.gguf")]
    pruner.profile(tasks=["rte"], num_samples=3, data_dir=data_dir, disable_progress=True)
    expected = pruner.prune(sparsity=0.3)
    assert expected.config.pruning["base_model"] == "org/tiny-gguf"
    assert expected.config.pruning["base_model_revision"] == commit
    argv = ["--quiet", "prune", "org/tiny-gguf", "--gguf-file", "tiny.gguf", "--revision", commit, "--tasks", "rte"]
    argv += ["--num-samples", "3", "--data-dir", str(data_dir), "--sparsity", "0.3", "--output", str(tmp_path / "p")]
    local_hub.state.read_tokens.clear()
    assert main([*argv, "--push-to-hub", "org/tiny-gguf-diet", "--token", "hf_cli"]) == 0, capsys.readouterr().err
    assert local_hub.state.commit_tokens[-1] == "hf_cli"
    assert local_hub.state.read_tokens and set(local_hub.state.read_tokens) == {"hf_cli"}  # the model read with it too
    card = local_hub.state.files_at("org/tiny-gguf-diet", "main")[1]["README.md"].decode()
    assert "| base model | org/tiny-gguf (revision " in card and "read from its GGUF file tiny.gguf" in card
    # the card's commands read the base model from its file, as this one did
    assert "--reference org/tiny-gguf --reference-gguf-file tiny.gguf --half test" in card
    pushed = AutoModelForCausalLM.from_pretrained("org/tiny-gguf-diet", trust_remote_code=True)
    ids = random_batch(vocab_size=expected.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(pushed(ids).logits, expected(ids).logits)


def test_a_lora_adapter_on_the_hub_prunes_as_its_base_at_its_revision_with_the_adapter_merged(
    local_hub, dense_dir, tiny_tokenizer
):
    """A LoRA adapter pushed alone (no config.json, no tokenizer), of a base model on the Hub that has moved on since:
    `DietPruner.from_pretrained(ADAPTER)` reads the base at the revision the adapter names (as PEFT does), merges
    the adapter, and takes the base's tokenizer; `revision=` is the adapter's own."""
    from peft import LoraConfig, get_peft_model

    api = HfApi()
    api.create_repo("org/tiny-base")
    commit = api.upload_folder(folder_path=str(dense_dir), repo_id="org/tiny-base").oid
    base = AutoModelForCausalLM.from_pretrained("org/tiny-base", revision=commit)
    adapted = get_peft_model(base, LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False))
    adapted.peft_config["default"].revision = commit  # what `get_peft_model(..., revision=)` records
    adapted.save_pretrained(dense_dir.parent / "adapter")
    api.create_repo("org/tiny-lora")
    first = api.upload_folder(folder_path=str(dense_dir.parent / "adapter"), repo_id="org/tiny-lora").oid
    merged = adapted.merge_and_unload()
    save_dense_checkpoint(dense_dir.parent / "later", "gemma3_text", tiny_tokenizer, seed=3)
    api.upload_folder(folder_path=str(dense_dir.parent / "later"), repo_id="org/tiny-base")  # main moves on
    pruner = DietPruner.from_pretrained("org/tiny-lora")
    torch.testing.assert_close(pruner.model.state_dict(), merged.state_dict(), rtol=0, atol=0)
    assert pruner.tokenizer("Answer: yes").input_ids == tiny_tokenizer("Answer: yes").input_ids
    assert pruner.model_id == "org/tiny-lora"
    # the adapter trained further and pushed again: `revision` reads the adapter's earlier commit (its base still
    # at the revision that adapter names)
    base = AutoModelForCausalLM.from_pretrained("org/tiny-base", revision=commit)
    again = get_peft_model(base, LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False))
    again.peft_config["default"].revision = commit
    again.save_pretrained(dense_dir.parent / "adapter-2")
    api.upload_folder(folder_path=str(dense_dir.parent / "adapter-2"), repo_id="org/tiny-lora")
    at_first = DietPruner.from_pretrained("org/tiny-lora", revision=first)
    torch.testing.assert_close(at_first.model.state_dict(), merged.state_dict(), rtol=0, atol=0)
    latest = DietPruner.from_pretrained("org/tiny-lora")
    torch.testing.assert_close(latest.model.state_dict(), again.merge_and_unload().state_dict(), rtol=0, atol=0)


def test_a_dense_model_on_the_hub_loads_from_the_cache_alone_or_downloads_again(local_hub, dense_dir):
    """`DietPruner.from_pretrained(REPO, local_files_only=True)` reads config, weights and tokenizer from the cache an
    earlier load filled, asking the Hub nothing that transformers' own loads with it would not (transformers' Auto
    classes look for a PEFT adapter's `adapter_config.json` on the Hub even so), and `force_download=True` reads the
    files again, as in transformers."""
    from transformers import AutoTokenizer

    HfApi().create_repo("org/tiny-cached")
    HfApi().upload_folder(folder_path=str(dense_dir), repo_id="org/tiny-cached")
    online = DietPruner.from_pretrained("org/tiny-cached")
    local_hub.state.read_paths.clear()
    AutoModelForCausalLM.from_pretrained("org/tiny-cached", local_files_only=True)
    AutoTokenizer.from_pretrained("org/tiny-cached", local_files_only=True)
    stock_reads = set(local_hub.state.read_paths)
    assert not [path for path in stock_reads if path.endswith((".safetensors", "/config.json", "tokenizer.json"))]
    local_hub.state.read_paths.clear()
    offline = DietPruner.from_pretrained("org/tiny-cached", local_files_only=True)
    assert set(local_hub.state.read_paths) <= stock_reads
    assert offline.tokenizer("a b").input_ids == online.tokenizer("a b").input_ids
    torch.testing.assert_close(offline.model.state_dict(), online.model.state_dict(), rtol=0, atol=0)
    DietPruner.from_pretrained("org/tiny-cached", force_download=True)
    downloaded = {path.rsplit("/", 1)[-1] for path in local_hub.state.read_paths if "/resolve/" in path}
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= downloaded
