"""The options of a healing run (`HealingConfig`), validated when made."""

from dataclasses import dataclass

from .._checks import check_positive_int, is_int_at_least, is_positive_int
from ..options import option

LORA_MODULES = ("all", "mlp", "attention")


@dataclass(frozen=True)
class HealingConfig:
    """Options of `heal`, validated on creation. Each field's `metadata["help"]` is its documentation and the help
    of its `diet-hf heal` flag (the CLI is generated from these fields)."""

    max_tokens: int = option(90_000, "training tokens to see (sequences x seq_len); sets the number of steps")
    max_time: float | None = option(None, "stop training after this many seconds (a CPU budget), if sooner")
    seq_len: int = option(256, "tokens per packed training sequence")
    bos_rows: bool = option(
        False,
        "start every packed sequence with BOS, as every evaluation prompt and perplexity window starts (a row that "
        "does not begin a document gets one inserted): Gemma's first position is its attention sink, and rows cut "
        "mid-document otherwise train the model on a first token it never sees in use",
    )
    separate_documents: bool | None = option(
        None,
        "every document of a packed row attends only to itself, from a BOS token at position 0 (position ids restart "
        "at each BOS; transformers then masks attention across documents), so every scored position sees what it "
        "would see in a prompt of its own, as evaluation prompts are scored; rows are packed as with `bos_rows` (a "
        "document cut at a row's end goes on after a BOS in the next row). Default: on where the tokenizer has a BOS "
        "token (on the 270M under two seeds: held-out perplexity 52.0 against 52.8 and dev-prompt KL 0.152 against "
        "0.162 with documents read together, benchmarks/results/healing_probe.md)",
    )
    batch_size: int = option(2, "sequences per forward and backward pass (per device)")
    gradient_accumulation_steps: int = option(
        2,
        "batches accumulated per optimizer step (2 x 2 sequences: the step of 4 x 1 at a lower peak memory, 3.13 "
        "against 3.45 GB healing the 270M on CPU in bfloat16, and no slower)",
    )
    learning_rate: float = option(
        6e-4, "AdamW peak learning rate (linear warmup and decay); 6e-4 reached the lowest held-out KL in a fixed time"
    )
    warmup_ratio: float = option(0.05, "fraction of the steps spent warming up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    lora: bool = option(
        True, "train LoRA adapters and merge them at the end (--no-lora: full fine-tuning of the decoder layers)"
    )
    train_embeddings: bool = option(
        False,
        "full fine-tuning (--no-lora) trains the input embeddings and the LM head tied to them too; off, only the "
        "decoder layers train (on the 270M the 262k x 640 embedding is 62% of the weights, and the head's weight "
        "gradient costs about as much as its forward)",
    )
    lora_r: int = option(16, "LoRA rank")
    lora_modules: str = option(
        "mlp",
        "projections given LoRA adapters in every layer: 'mlp' (gate/up/down; lower held-out perplexity and KL than "
        "'all' on the 270M under two seeds, benchmarks/results/healing_probe.md), 'all' (q/k/v/o/gate/up/down) or "
        "'attention' (q/k/v/o)",
        choices=LORA_MODULES,
    )
    keep_bos_state: bool | None = option(
        None,
        "LoRA only: keep every adapter's input matrix orthogonal to what its projection reads at a BOS token in "
        "position 0, so healing leaves that token's hidden states in every layer as they were (the attention sink "
        "every prompt starts with; DIET's default reconstruction, anchor_bos, reproduces its dense values). Default: "
        "on with LoRA where the tokenizer has a BOS token, off otherwise",
    )
    lora_alpha: int = option(32, "LoRA scaling numerator")
    lora_dropout: float = option(0.0, "LoRA dropout")
    kd_weight: float = option(1.0, "loss = w * KL(teacher || student) + (1 - w) * next-token cross-entropy")
    temperature: float = option(1.0, "softmax temperature of both distributions (KL scaled by its square)")
    hidden_weight: float = option(
        0.0,
        "weight of a layer-wise loss added to the KD loss: the relative squared error between the student's and the "
        "teacher's residual stream after every decoder layer, at every position (keeps the teacher in memory during "
        "training: its top-k targets are then made online, in the same pass)",
    )
    top_k: int | None = option(
        512,
        "teacher log-probs kept per position, precomputed so the teacher is freed (0 on the CLI: full vocabulary); "
        "512 rather than 64 since 2026-12-02: lower held-out perplexity and dev-prompt KL under two seeds on the 270M "
        "(benchmarks/results/healing_probe.md), for 4 KiB of targets per scored position instead of 0.5",
    )
    chunk_size: int = option(
        64, "positions whose logits (x 262k vocabulary) are materialized at once: memory against matmul efficiency"
    )
    position_stride: int = option(
        4,
        "score every n-th position of each training sequence (a seeded offset per sequence; the rest still feed "
        "attention): the LM head, about two thirds of the work per token on a 262k vocabulary, and the teacher's "
        "pass then run on 1/n of the positions; the guard scores every position",
    )
    validation_sequences: int = option(8, "packed sequences held out for the validation-KL guard")
    eval_steps: int = option(20, "guard evaluation every this many steps")
    save_steps: int = option(20, "resumable checkpoint every this many steps")
    guard: bool = option(
        True, "keep the best evaluated state, rolling back when none beats the unhealed model (--no-guard: the last)"
    )
    seed: int = option(0, "data order, packing and LoRA initialization")
    bf16: bool | None = option(
        None,
        "bfloat16 autocast for the training steps and the teacher's pass (weights, optimizer state and the guard stay "
        "float32). Default: on where bfloat16 matmuls are fast (CUDA GPUs that support it; CPUs with AVX512-BF16 or "
        "AMX, where a training step of the pruned 270M ran 1.6x faster), off elsewhere",
    )
    release_memory: bool = option(
        True,
        "on CPU with glibc: from the start of training, allocations of 1 MiB or more go straight to the OS "
        "(process-wide, from then on) and freed heap is returned after every step and every batch of the teacher's "
        "pass; on the 270M the peak resident size of training fell from 3.70 to 2.98 GB for a tenth more time "
        "(measured); the teacher's pass peaked at 2.36 GiB over 200 batches with it and 2.42 without",
    )

    def __post_init__(self):
        positive_ints = (
            *("max_tokens", "seq_len", "batch_size", "gradient_accumulation_steps", "lora_r", "chunk_size"),
            "position_stride",
        )
        for name in (*positive_ints, "validation_sequences", "eval_steps", "save_steps", "lora_alpha"):
            check_positive_int(name, getattr(self, name))
        if not is_int_at_least(self.seed, 0):
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed!r}.")
        numbers = ("learning_rate", "warmup_ratio", "weight_decay", "lora_dropout", "kd_weight", "temperature")
        for name in (*numbers, "hidden_weight", *(("max_time",) if self.max_time is not None else ())):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"`{name}` must be a number, got {value!r}.")
        for name in ("bos_rows", "lora", "train_embeddings", "guard", "release_memory"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if not (self.bf16 is None or isinstance(self.bf16, bool)):
            raise ValueError(f"`bf16` must be True, False or None, got {self.bf16!r}.")
        if not 0.0 <= self.warmup_ratio <= 1.0:  # more would never reach `learning_rate`
            raise ValueError(f"`warmup_ratio` must be in [0, 1], got {self.warmup_ratio!r}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {self.weight_decay!r}.")
        if self.top_k is not None and not is_positive_int(self.top_k):
            raise ValueError(f"`top_k` must be a positive integer or None, got {self.top_k!r}.")
        if not self.hidden_weight >= 0:  # a number: checked above
            raise ValueError(f"`hidden_weight` must be a number >= 0, got {self.hidden_weight!r}.")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError(f"`kd_weight` must be in [0, 1], got {self.kd_weight!r}.")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)!r}.")
        if self.position_stride >= self.seq_len:
            raise ValueError(
                f"`position_stride` must be smaller than `seq_len` ({self.seq_len}), got {self.position_stride!r}."
            )
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"`max_time` must be > 0 seconds or None, got {self.max_time!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}.")
        if self.lora_modules not in LORA_MODULES:
            raise ValueError(f"`lora_modules` must be one of {LORA_MODULES}, got {self.lora_modules!r}.")
        if self.train_embeddings and self.lora:
            raise ValueError("`train_embeddings=True` applies to full fine-tuning: set `lora=False` too.")
        if not (self.separate_documents is None or isinstance(self.separate_documents, bool)):
            raise ValueError(f"`separate_documents` must be True, False or None, got {self.separate_documents!r}.")
        if not (self.keep_bos_state is None or isinstance(self.keep_bos_state, bool)):
            raise ValueError(f"`keep_bos_state` must be True, False or None, got {self.keep_bos_state!r}.")
        if self.keep_bos_state and not self.lora:
            raise ValueError("`keep_bos_state=True` constrains LoRA adapters: it needs `lora=True`.")

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size * self.gradient_accumulation_steps
