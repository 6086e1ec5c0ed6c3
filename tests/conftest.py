"""Shared fixtures: tiny random Gemma models, seeded batches, the local benchmark data. No network."""

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

from hub_server import LocalHub

# Before transformers / datasets / huggingface_hub are imported anywhere: the only Hub the tests can reach is the
# local Hub-compatible server on 127.0.0.1 (tests/hub_server.py), with an empty cache of its own.
LOCAL_HUB = LocalHub()
os.environ["HF_ENDPOINT"] = LOCAL_HUB.endpoint
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="diet-hf-tests-hf-home-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)  # no test leftovers in the temp dir
os.environ["HF_TOKEN"] = "hf_local_test_token"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DIET_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))

FAMILIES = {"gemma2": (Gemma2Config, Gemma2ForCausalLM), "gemma3_text": (Gemma3TextConfig, Gemma3ForCausalLM)}
# transformers' own per-layer configs (`integrations/heterogeneity`, from 5.14 on; the remote code parses the same JSON
# itself on older releases)
NATIVE_PER_LAYER_CONFIG = importlib.util.find_spec("transformers.integrations.heterogeneity") is not None


def tiny_config_kwargs(**overrides) -> dict:
    """Sizes of the tiny test models (STYLE.md section 7)."""
    values = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,
        max_position_embeddings=64,
        query_pre_attn_scalar=8,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        attn_implementation="eager",
    )
    values.update(overrides)
    return values


def tiny_gemma2_config(**overrides) -> Gemma2Config:
    return Gemma2Config(**tiny_config_kwargs(**overrides))


def tiny_dense_model(family: str = "gemma2", seed: int = 0, **overrides):
    """A tiny random dense model of `family`, float32, eval mode, with non-trivial norm weights."""
    config_class, model_class = FAMILIES[family]
    if family == "gemma3_text":
        overrides.setdefault("layer_types", ["sliding_attention", "full_attention"])
    torch.manual_seed(seed)
    model = model_class(config_class(**tiny_config_kwargs(**overrides))).eval()
    with torch.no_grad():  # norms start at zero (scale 1); randomize them so they matter in the comparisons
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.3)
    return model


def save_dense_checkpoint(path: Path, family: str, tokenizer, seed: int = 0) -> Path:
    """Saves a tiny dense model of `family` sized to `tokenizer`, with the tokenizer, as a loadable checkpoint."""
    tiny_dense_model(family, seed=seed, vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_lora_adapter(tmp_path: Path, tokenizer, family: str = "gemma2"):
    """A dense checkpoint of `family` in `tmp_path / "dense"` (with `tokenizer`) and a LoRA adapter of it saved alone
    in `tmp_path / "gemma2-lora"`, as `PeftModel.save_pretrained` (a LoRA fine-tune) leaves it: no config.json, no
    tokenizer (and a name in which transformers 4.57's `AutoConfig` finds a model type). Returns the adapter's
    directory and the adapted model with the adapter merged, what loading the adapter must give."""
    from peft import LoraConfig, get_peft_model

    save_dense_checkpoint(tmp_path / "dense", family, tokenizer)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "dense")  # so that the adapter names its base's path
    config = LoraConfig(r=2, target_modules=["down_proj", "q_proj"], init_lora_weights=False)
    adapted = get_peft_model(base, config)
    adapted.save_pretrained(tmp_path / "gemma2-lora")
    assert not (tmp_path / "gemma2-lora" / "config.json").exists()
    return tmp_path / "gemma2-lora", adapted.merge_and_unload().eval()


# llama.cpp's tensor names of a Gemma decoder layer's modules (convert_hf_to_gguf.py's), as transformers reads them
_GGUF_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@contextlib.contextmanager
def gguf_parses():
    """The names of the GGUF files whose metadata is parsed inside the block (gguf's `GGUFReader`, which transformers
    reads a file with), one entry per parse: a parse of the real 270M takes 20 s."""
    import gguf

    parses, reader_init = [], gguf.GGUFReader.__init__

    def counting_init(self, path, *args, **kwargs):
        parses.append(Path(path).name)
        reader_init(self, path, *args, **kwargs)

    gguf.GGUFReader.__init__ = counting_init
    try:
        yield parses
    finally:
        gguf.GGUFReader.__init__ = reader_init


def write_tiny_gguf(path: Path, family: str = "gemma3_text", seed: int = 0, chat_template: str | None = None) -> Path:
    """Writes a tiny random model of `family` (Gemma 3 text or Gemma-2) as a GGUF file of float32 tensors, the way
    llama.cpp lays one out (its tensor names, norm weights stored as 1 + w, a SentencePiece-style vocabulary of the
    special tokens, the 256 byte tokens and a few words; `chat_template` in its tokenizer metadata), for the tests of
    pruning a model read with `gguf_file=`. Needs the `gguf` package."""
    import gguf
    import numpy as np

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", *(f"<0x{i:02X}>" for i in range(256))]
    words = ["▁the", "▁a", "▁is", "▁yes", "▁no", "▁answer", "▁question", "e", "t", "a"]
    types = [3, 3, 3, 2, *[6] * 256, *[1] * len(words)]  # control, unknown, byte, normal
    model = tiny_dense_model(family, seed=seed, vocab_size=len(tokens) + len(words))
    config = model.config
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), {"gemma3_text": "gemma3", "gemma2": "gemma2"}[family])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_sliding_window(config.sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([*tokens, *words])
    writer.add_token_scores([0.0] * len(tokens) + [-float(i) for i in range(len(words))])
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied to the embedding
            continue
        if name in ("model.embed_tokens.weight", "model.norm.weight"):
            target = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm"}[name]
        else:
            _, _, layer, *module, _ = name.split(".")
            target = f"blk.{layer}.{_GGUF_LAYER_TENSORS['.'.join(module)]}"
        array = tensor.detach().float().numpy()
        writer.add_tensor(f"{target}.weight", np.ascontiguousarray(array + 1 if "norm" in target else array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def overflowing(model):
    """`model` (in place) in float16 with its first MLP scaled up until its gated products pass float16's range, as
    Gemma 3 270M's do on ordinary text (NaN from there on)."""
    model.to(torch.float16)
    with torch.no_grad():
        model.model.layers[0].mlp.gate_proj.weight.mul_(1e4)
        model.model.layers[0].mlp.up_proj.weight.mul_(1e4)
    return model


def tiny_image_text_model(text_model, seed: int = 1):
    """A tiny `Gemma3ForConditionalGeneration` whose language model carries `text_model`'s weights."""
    vocab = text_model.config.vocab_size
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        vision_use_head=False,  # as in Gemma 3, whose projector reads the last hidden state, not a pooled one
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


def image_text_inputs(model, batch: int = 2, seq_len: int = 12, seed: int = 0) -> dict:
    """Text ids with one image's placeholder tokens (its `mm_tokens_per_image`) in each row, `token_type_ids` marking
    them (the image tokens attend to each other both ways), and random pixels."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    ids = torch.randint(3, config.boi_token_index - 1, (batch, seq_len), generator=g)
    ids[:, 0] = 2  # BOS
    ids[:, 2] = config.boi_token_index
    ids[:, 3 : 3 + config.mm_tokens_per_image] = config.image_token_index
    ids[:, 3 + config.mm_tokens_per_image] = config.eoi_token_index
    size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=g)
    return {"input_ids": ids, "pixel_values": pixels, "token_type_ids": (ids == config.image_token_index).long()}


def uneven_pruned_model(
    family: str = "gemma2", compensated: bool = False, image_text: bool = False, mlp_stride: int = 3, **sizes
):
    """`tiny_dense_model(family, **sizes)` pruned so that every per-layer shape differs: layer 0 without attention
    and with every `mlp_stride`-th MLP channel, layer 1 without MLP and with fewer heads and KV heads; `compensated`
    adds FLAP bias compensation (biases on kept and on removed sublayers); `image_text` (Gemma 3) prunes it inside
    `tiny_image_text_model`, keeping the vision tower."""
    from diet_hf import build_pruned_model
    from diet_hf.plan import PruningPlan

    dense = tiny_dense_model(family, **sizes)
    source = tiny_image_text_model(dense) if image_text else dense
    plan = PruningPlan.keep_all(dense.config)
    plan.mlp_kept_indices = [list(range(0, dense.config.intermediate_size, mlp_stride)), []]
    plan.head_kept_indices = [[], [2, 3]]
    plan.kv_head_kept_indices = [[], [1]]
    plan.__post_init__()
    means = None
    if compensated:
        g = torch.Generator().manual_seed(1)
        width = dense.config.num_attention_heads * dense.config.head_dim
        means = {
            "mlp": torch.randn(2, dense.config.intermediate_size, generator=g),
            "attn": torch.randn(2, width, generator=g),
        }
    return build_pruned_model(source, plan, channel_means=means)


def tiny_pruned_classifier(num_labels: int = 3):
    """A random pruned Gemma-2 sequence classifier (layer 1 without MLP)."""
    from diet_hf import PrunedGemma2Config, PrunedGemma2ForSequenceClassification

    config = PrunedGemma2Config(
        **{k: v for k, v in tiny_dense_model("gemma2").config.to_dict().items() if k != "model_type"},
        intermediate_size_per_layer=[8, 0],
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    return PrunedGemma2ForSequenceClassification(config).eval()


def on_second_device(model):
    """`model` with its parameters and buffers replaced by fake tensors on the meta device: a second device, without
    data, on a CPU-only machine. A CPU tensor meeting one of them in an op raises PyTorch's device-mismatch error, as
    it would meeting a GPU tensor; `.cpu()` and `.to(device)` work, and ops on real tensors alone run as usual.
    Values derived from the model are not computed (only shapes, dtypes and devices), and data-dependent ops on them
    (`.item()`, boolean masks) raise, so it checks where tensors go in code without those."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        for module in model.modules():
            for name, tensor in list(module._parameters.items()):
                if tensor is not None:
                    module._parameters[name] = torch.nn.Parameter(
                        torch.empty(tensor.shape, dtype=tensor.dtype, device="meta"), requires_grad=False
                    )
            for name, tensor in list(module._buffers.items()):
                if tensor is not None:
                    module._buffers[name] = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
    return model


def run_script(
    tmp_path: Path,
    source: str,
    *args: str,
    python: str = sys.executable,
    env: dict | None = None,
    timeout: float = 300,
) -> str:
    """Runs the Python `source` in a new process in `tmp_path` (its own remote-code module cache there, offline, no
    PYTHONPATH, no terminal to answer a prompt on; `env` overrides those) with `args`, for at most `timeout` seconds;
    returns its stdout, failing the test with its stderr's end if it fails."""
    script = tmp_path / "fresh.py"
    script.write_text(source)
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
        **(env or {}),
    }
    result = subprocess.run(
        [python, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# Runs each (name, source, args) of the JSON list in argv[1] in this one process, each in a namespace and working
# directory of its own (its name, under the current one), with `diet_hf` made unimportable first; prints
# {name: its stdout, or the traceback it ended with}
_PARTS_DRIVER = """
import contextlib, io, json, os, sys, traceback
sys.modules["diet_hf"] = None
out = {}
for name, source, args in json.load(open(sys.argv[1])):
    os.makedirs(name)
    os.chdir(name)
    sys.argv, buffer = [name, *args], io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            exec(compile(source, name, "exec"), {"__name__": "__main__"})
        out[name] = {"stdout": buffer.getvalue()}
    except BaseException:
        out[name] = {"error": traceback.format_exc()}
    os.chdir("..")
print(json.dumps(out))
"""


def run_scripts(tmp_path: Path, parts: dict[str, tuple[str, list[str]]], **kwargs) -> dict[str, str]:
    """`run_script` for several scripts that each need a new process without diet-hf but not one of their own
    (starting the interpreter and importing torch and transformers costs more than most such scripts): {name: (source,
    arguments)} run in turn in one process, each in its own namespace and in the working directory `tmp_path / name`;
    returns each one's stdout, failing the test with the traceback of any that failed."""
    (tmp_path / "parts.json").write_text(json.dumps([(name, source, args) for name, (source, args) in parts.items()]))
    printed = run_script(tmp_path, _PARTS_DRIVER, str(tmp_path / "parts.json"), **kwargs)
    results = json.loads(printed.strip().splitlines()[-1])
    failed = {name: result["error"] for name, result in results.items() if "error" in result}
    assert not failed, "\n".join(f"{name}:\n{error}" for name, error in failed.items())
    return {name: result["stdout"] for name, result in results.items()}


def assert_tables_well_formed(markdown: str) -> None:
    """Every row of every Markdown table in `markdown` has as many cell borders as the table's header: a `|` left
    unescaped in a value (as in "KL(teacher || student)") would shift the row's columns."""
    import re

    borders = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            borders = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line))
        borders = count if borders is None else borders
        assert count == borders, f"a table row with {count} cell borders instead of {borders}: {line}"


def random_batch(batch_size: int = 2, seq_len: int = 10, vocab_size: int = 128, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (batch_size, seq_len), generator=generator)


@pytest.fixture(autouse=True, scope="session")
def float32_moment_products():
    """`ProfileOptions.moments_dtype="auto"` multiplies the reconstruction's x x^T in bfloat16 on CPUs with fast
    bfloat16 and in float32 on others: tests run as on the others, so that their exact comparisons hold on every
    machine (for the whole session: module fixtures profile too); the tests of the bfloat16 products ask for them
    (`moments_dtype="bfloat16"`) or patch this back."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("diet_hf.moments.fast_bf16", lambda device: False)
        yield


@pytest.fixture
def pruned_models_alive_at_surgery(monkeypatch):
    """Wraps the pruner's surgery: the returned list gets, at every call, how many models built by earlier calls are
    still alive (after a garbage collection)."""
    import gc
    import weakref

    import diet_hf.pruner

    built, alive = [], []
    real = diet_hf.pruner.build_pruned_model

    def watched(*args, **kwargs):
        gc.collect()
        alive.append(sum(ref() is not None for ref in built))
        model = real(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(diet_hf.pruner, "build_pruned_model", watched)
    return alive


@pytest.fixture
def local_hub():
    """The session's local Hub server, with faults reset after each test."""
    yield LOCAL_HUB
    LOCAL_HUB.state.fail_commits = LOCAL_HUB.state.drop_commits = 0


def pruned_then_dense_repo(repo_id: str, pruned_dir: Path, family: str, tmp_path: Path) -> str:
    """A local Hub repository whose first commit is the pruned checkpoint in `pruned_dir` and whose main branch has
    moved on to a dense model of `family` (its remote code deleted); returns the pruned commit."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id)
    pruned = api.upload_folder(folder_path=str(pruned_dir), repo_id=repo_id).oid
    tiny_dense_model(family).save_pretrained(tmp_path / "dense")
    api.upload_folder(folder_path=str(tmp_path / "dense"), repo_id=repo_id, delete_patterns=["*.py"])
    return pruned


@pytest.fixture
def hub_dataset(local_hub, monkeypatch):
    """`hub_dataset(repo_id, {config: {split: rows}})` creates a dataset repository on the local Hub as the Hub holds
    one of several configs (subsets), each split one parquet file `<config>/<split>-00000-of-00001.parquet` (or, for
    a tuple of row lists, one file each) and the README's `configs` naming them, and returns its id; `datasets` may
    ask the Hub during the test (the suite sets `HF_DATASETS_OFFLINE`)."""
    import io

    import datasets
    from huggingface_hub import CommitOperationAdd, HfApi

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def create(repo_id: str, configs: dict[str, dict[str, list[dict]]]) -> str:
        card, files = ["---", "configs:"], {}
        for config, splits in configs.items():
            card += [f"- config_name: {config}", "  data_files:"]
            for split, rows in splits.items():
                shards = rows if isinstance(rows, tuple) else (rows,)
                for i, shard in enumerate(shards):
                    buffer = io.BytesIO()
                    datasets.Dataset.from_list(shard).to_parquet(buffer)
                    files[f"{config}/{split}-{i:05d}-of-{len(shards):05d}.parquet"] = buffer.getvalue()
                card += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
        files["README.md"] = "\n".join([*card, "---", ""]).encode()
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)  # the worker's Hub may hold it from a test before
        operations = [CommitOperationAdd(path, content) for path, content in files.items()]
        api.create_commit(repo_id, operations, commit_message="data", repo_type="dataset")
        return repo_id

    return create


def _require_data() -> Path:
    if not (DATA_DIR / "boolq").is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR} (set DIET_DATA_DIR)")
    return DATA_DIR


@pytest.fixture
def data_dir() -> Path:
    return _require_data()


@pytest.fixture(scope="session")
def real_pruned_dir(tmp_path_factory) -> Path:
    """Slow tests: the real Gemma 3 270M pruned by the default recipe at 20% from 10 calibration examples per task and
    saved (weights, config, remote code, tokenizer, plan, card), once per session."""
    from diet_hf import DietPruner
    from diet_hf.real_model import load_gemma3_270m

    data = _require_data()
    model, tokenizer, _ = load_gemma3_270m()
    pruner = DietPruner(model, tokenizer, model_id="google/gemma-3-270m")
    pruner.profile(num_samples=10, data_dir=data, disable_progress=True).prune(sparsity=0.2)
    path = tmp_path_factory.mktemp("real_pruned") / "m"
    pruner.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 128-token BPE tokenizer trained in-process on a few sentences (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=128, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], initial_alphabet=[], show_progress=False
    )
    corpus = ["Question: what is the answer? Answer: yes no True False"] * 4
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


# A chat template of Gemma's form (it writes the BOS token itself), for tests of conversations as texts
GEMMA_STYLE_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def chat_tokenizer(tokenizer, *, adds_bos: bool):
    """A copy of `tokenizer` with `GEMMA_STYLE_CHAT_TEMPLATE`, adding BOS before every text it encodes when
    `adds_bos` (as Gemma's tokenizer does)."""
    import copy

    from tokenizers import processors

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = GEMMA_STYLE_CHAT_TEMPLATE
    if adds_bos:
        bos = chat.bos_token_id
        chat.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
        )
    return chat


# The files whose tests take longest run first (their order within a file kept, so module fixtures are set up once
# per worker): with pytest-xdist handing out two tests at a time (`scripts/test.sh`: `--maxschedchunk 2`), the short
# tests come last and fill in, so neither worker sits idle while the other finishes a long one. A file not listed
# runs after these, in collection order.
_LONGEST_FILES_FIRST = (
    "test_onnx.py",
    "test_packaging.py",
    "test_remote_code.py",
    "test_format_v2.py",
    "test_hub.py",
    "test_loading.py",
    "test_healing.py",
    "test_cli.py",
    "test_modeling.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order inside a file is kept
