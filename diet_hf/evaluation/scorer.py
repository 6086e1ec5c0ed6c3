"""The model side of scoring: the decoder, then the LM head only at scored positions (`Scorer`), and a queue that puts
the scored hidden states of many batches through the LM head together (`HeadQueue`)."""

import inspect
import math

import torch
import torch.nn.functional as F

from .._batching import pad_rows
from ..constants import FAMILIES

__all__ = ["HeadQueue", "Scorer", "check_scorable", "check_tokenizer", "encode_pair", "left_padded"]


def check_scorable(model, tokenizer, purpose: str) -> None:
    """`TypeError` unless `model` is a loaded model (not None, not a Hub id); then `check_tokenizer`."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"`model` must be a loaded causal LM {purpose}, got {type(model).__name__}"
            + (": load it first (`AutoModelForCausalLM.from_pretrained`)." if isinstance(model, str) else ".")
        )
    check_tokenizer(tokenizer, purpose)


def check_tokenizer(tokenizer, purpose: str) -> None:
    if tokenizer is None:
        raise ValueError(f"`tokenizer` is required {purpose}; pass the model's tokenizer.")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if special and len(tokenizer) <= len(special):
        # transformers 5 builds a tokenizer of special tokens only from a directory without tokenizer files.
        raise ValueError(
            f"`tokenizer` has no vocabulary: its {len(tokenizer)} tokens are all special tokens "
            f"({tokenizer.convert_ids_to_tokens(sorted(special))}). Is the model's tokenizer missing from "
            f"{getattr(tokenizer, 'name_or_path', '') or 'its directory'} (tokenizer.json, tokenizer.model)? "
            "Save it next to the model or pass the model's tokenizer."
        )


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The token ids of a context and of the continuation scored after it, as lm-eval-harness 0.4 encodes a
    log-likelihood request (`_encode_pair`) and as `evaluate` / `loglikelihoods` score it: spaces at the end of the
    context move to the continuation, and the continuation's ids are the tail of the whole string's encoding (so a
    word the tokenizer merges across the boundary is scored as the model reads it). Special tokens (Gemma's BOS) are
    added as the tokenizer adds them, as lm-eval does for Gemma, except to a context that already starts with the BOS
    token (a chat template's rendering), which lm-eval encodes without them. Use it to build training rows that match
    what evaluation scores (`examples/finetune_pruned.py`).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        context (`str`): the prompt, e.g. `"Question: ...\nAnswer:"`.
        continuation (`str`): the answer scored after it, with its delimiter, e.g. `" yes"`.

    Returns:
        `tuple[list[int], list[int]]`: the context's ids and the continuation's ids. The model reads
        `context_ids + continuation_ids`; continuation token `j` is predicted at position `len(context_ids) - 1 + j`.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    bos = tokenizer.bos_token
    special = {"add_special_tokens": False} if bos and context.startswith(bos) else {}
    whole = tokenizer(context + continuation, **special)["input_ids"]
    context_ids = tokenizer(context, **special)["input_ids"]
    return context_ids, whole[len(context_ids) :]


def left_padded(rows: list[list[int]], pad: int):
    input_ids, attention_mask = pad_rows(rows, pad, side="left")
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids, attention_mask, position_ids


class Scorer:
    """Runs the decoder, then the LM head only at scored positions, for Gemma-family models.

    Other causal LMs run whole, with `logits_to_keep`, so any model-specific head transform is respected.
    """

    VOCAB_CHUNK = 4096  # LM-head rows per matmul: the logits of a slice stay small and are reused
    STATE_CHUNK = 512  # hidden states per LM-head pass

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        config = model.config
        model_type = getattr(config, "model_type", "")
        self.split_head = any(model_type in (f.dense_model_type, f.pruned_model_type) for f in FAMILIES)
        signature = inspect.signature(model.forward).parameters
        # transformers 5.x names the cache argument `cache`; 4.x `past_key_values`.
        self.cache_kwarg = "cache" if "cache" in signature else "past_key_values"
        # Packed rows need a 4D mask per layer type, which Gemma's decoders accept as a dict for these two kernels.
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        self.packed = self.split_head and self.attn_implementation in ("sdpa", "eager")
        self.layer_types = sorted(set(getattr(config, "layer_types", None) or ["full_attention"]))
        self.sliding_window = getattr(config, "sliding_window", None)

    def forward(self, input_ids, attention_mask, position_ids, *, cache=None, keep: int):
        """Hidden states (or, for other models, logits) of the last `keep` positions, and the KV cache."""
        kwargs = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "position_ids": position_ids.to(self.device),
            "use_cache": cache is not False,
        }
        if cache is not None and cache is not False:
            kwargs[self.cache_kwarg] = cache
        if self.split_head:
            out = self.model.get_decoder()(**kwargs)
            states = out.last_hidden_state[:, -keep:]
        else:
            out = self.model(**kwargs, logits_to_keep=keep)
            states = out.logits
        # 5.x returns the cache as `cache` (reading `past_key_values` warns there); 4.x as `past_key_values`.
        return states, getattr(out, self.cache_kwarg, None)

    def forward_packed(self, input_ids, position_ids, allowed):
        """Decoder hidden states of packed rows; `allowed` (batch, query, key): the keys each position may see."""
        distance = position_ids[:, :, None] - position_ids[:, None, :]
        dtype = self.model.get_input_embeddings().weight.dtype
        masks = {}
        for layer_type in self.layer_types:
            mask = allowed
            if layer_type == "sliding_attention" and self.sliding_window is not None:
                mask = allowed & (distance < self.sliding_window)  # transformers: key > query - window
            mask = mask[:, None].to(self.device)
            if self.attn_implementation == "eager":  # eager attention adds the mask to the scores
                mask = torch.where(mask, torch.tensor(0.0, dtype=dtype), torch.finfo(dtype).min).to(dtype)
            masks[layer_type] = mask
        out = self.model.get_decoder()(
            input_ids=input_ids.to(self.device),
            attention_mask=masks,
            position_ids=position_ids.to(self.device),
            use_cache=False,
        )
        return out.last_hidden_state

    def logprobs(self, states: torch.Tensor) -> torch.Tensor:
        """Full next-token log-probabilities (positions, vocab) at each of `states`, float32."""
        if not self.split_head:
            return F.log_softmax(states.float(), dim=-1)
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        # on the head's device (a model split across GPUs keeps its tied head with the embeddings, on the first),
        # and back to the states' device
        logits = head(states.to(head.weight.device)).float().to(states.device)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return F.log_softmax(logits, dim=-1)

    def target_logprobs(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) at each of `states` (positions, hidden or vocab) for `targets` (positions,)."""
        return self.pair_logprobs(states, torch.arange(states.shape[0], device=states.device), targets)

    def pair_logprobs(self, states: torch.Tensor, owners: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(`targets[i]`) at `states[owners[i]]`, float32; a state may be scored against several targets."""
        if not self.split_head:
            return F.log_softmax(states.float(), dim=-1)[owners, targets]
        values = torch.empty(len(targets), dtype=torch.float32, device=states.device)
        for start in range(0, states.shape[0], self.STATE_CHUNK):
            chunk = states[start : start + self.STATE_CHUNK]
            picked = (owners >= start) & (owners < start + chunk.shape[0])
            values[picked] = self._head_logprobs(chunk, owners[picked] - start, targets[picked])
        return values

    def _head_logprobs(self, states, owners, targets):
        # The vocabulary in slices: full logits of a few hundred states would take gigabytes, and writing them to
        # fresh memory slows the matmul by about a third; the slice's logits stay in one reused buffer.
        weight = self.model.get_output_embeddings().weight  # Gemma's LM head: tied, no bias
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        # computed on the head's device (a model split across GPUs keeps its tied head with the embeddings, on the
        # first), returned on the states'
        device = states.device
        states, owners, targets = states.to(weight.device), owners.to(weight.device), targets.to(weight.device)
        count, vocab = states.shape[0], weight.shape[0]
        buffer = torch.empty(count * self.VOCAB_CHUNK, dtype=states.dtype, device=states.device)
        normalizer = torch.full((count,), -math.inf, dtype=torch.float32, device=states.device)
        values = torch.empty(len(targets), dtype=torch.float32, device=states.device)
        for start in range(0, vocab, self.VOCAB_CHUNK):
            rows = weight[start : start + self.VOCAB_CHUNK]
            logits = torch.mm(states, rows.t(), out=buffer[: count * rows.shape[0]].view(count, rows.shape[0])).float()
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            normalizer = torch.logaddexp(normalizer, torch.logsumexp(logits, dim=-1))
            inside = (targets >= start) & (targets < start + rows.shape[0])
            values[inside] = logits[owners[inside], targets[inside] - start]
        return (values - normalizer[owners]).to(device)


class HeadQueue:
    """Scored hidden states of many batches, put through the LM head together (an efficient matmul size), each
    log-probability added to its request's result."""

    def __init__(self, scorer, results):
        self.scorer, self.results = scorer, results
        self.states, self.owners, self.targets, self.indices = [], [], [], []
        self.count = 0

    def add(self, states, owners: list[int], targets: list[int], indices: list[int]) -> None:
        """`states` (n, hidden); pair i adds log p(`targets[i]` | `states[owners[i]]`) to result `indices[i]`."""
        self.states.append(states)
        self.owners += [self.count + o for o in owners]
        self.targets += targets
        self.indices += indices
        self.count += states.shape[0]
        # Other models hand over full-vocabulary log-probabilities already: nothing to gain from waiting.
        if self.count >= self.scorer.STATE_CHUNK or not self.scorer.split_head:
            self.flush()

    def flush(self) -> None:
        if not self.states:
            return
        device = self.states[0].device
        values = self.scorer.pair_logprobs(
            torch.cat(self.states),
            torch.tensor(self.owners, device=device),
            torch.tensor(self.targets, device=device),
        ).tolist()
        for index, value in zip(self.indices, values):
            self.results[index] += value
        self.states, self.owners, self.targets, self.indices = [], [], [], []
        self.count = 0
