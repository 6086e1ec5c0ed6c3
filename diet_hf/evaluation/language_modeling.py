"""Language-modelling measures: next-token distributions and the KL between two of them, WikiText-2 perplexity, the
perplexity of your own texts, and LAMBADA's last-word accuracy on them."""

import math
import os

import torch
from tqdm.auto import tqdm

from .._batching import pad_id
from .._checks import check_finite_outputs, check_positive_int, is_int_at_least
from ..loading import text_causal_lm
from ..tasks import wikitext2_text
from .scorer import Scorer, check_scorable, encode_pair, left_padded

__all__ = [
    "kl_divergence",
    "last_word_accuracy",
    "next_token_logprobs",
    "perplexity",
    "perplexity_summary",
    "texts_perplexity",
]


def next_token_logprobs(
    model, tokenizer, prompts: list[str], *, batch_size: int = 16, disable_progress: bool = False
) -> torch.Tensor:
    """Log-probabilities of the token after each prompt, `(len(prompts), vocab)` float32 on the CPU.

    Prompts are tokenized as the evaluator tokenizes contexts (Gemma's BOS included), batched by length with left
    padding; only the last position goes through the LM head. A progress bar counts the prompts unless
    `disable_progress`."""
    check_scorable(model, tokenizer, "to encode the prompts")
    if isinstance(prompts, str):
        raise ValueError("`prompts` must be a list of prompts, got one string (pass `[prompt]`).")
    if not prompts:
        raise ValueError("`prompts` is empty: pass at least one prompt.")
    check_positive_int("batch_size", batch_size)
    model = text_causal_lm(model)  # an image-text Gemma 3 (dense or pruned): its text model
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pad = pad_id(tokenizer)
    scorer = Scorer(model)
    result = [None] * len(prompts)
    progress = tqdm(total=len(prompts), desc="next-token log-probs", unit="prompt", disable=disable_progress)
    with torch.inference_mode(), progress:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            states, _ = scorer.forward(*left_padded([encoded[i] for i in batch], pad), cache=False, keep=1)
            for i, row in zip(batch, scorer.logprobs(states[:, -1]).cpu()):
                result[i] = row
            progress.update(len(batch))
    return torch.stack(result)


def kl_divergence(reference_logprobs: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean over rows of KL(reference || model) in nats, from two `next_token_logprobs` results."""
    if reference_logprobs.shape != logprobs.shape:
        raise ValueError(
            f"`reference_logprobs` {tuple(reference_logprobs.shape)} and `logprobs` {tuple(logprobs.shape)} must "
            "have the same shape (same prompts, same vocabulary)."
        )
    reference = reference_logprobs.double()
    return float((reference.exp() * (reference - logprobs.double())).sum(-1).mean())


@torch.inference_mode()
def perplexity(
    model,
    tokenizer,
    *,
    data_dir: str | os.PathLike | None = None,
    max_length: int | None = None,
    max_windows: int | None = None,
    disable_progress: bool = False,
    text: str | None = None,
) -> dict:
    """WikiText-2 test perplexity (or that of `text`): rows joined with blank lines, non-overlapping windows,
    token-weighted.

    Each window of `max_length` tokens (the model's context, capped at 2048) is scored after a BOS token. Returns
    `perplexity`, `tokens`, `windows`, `max_length`, and per window `nll` (summed negative log-likelihood in nats) and
    `counts` (its predicted tokens): what `paired_bootstrap_perplexity` compares between two models, over windows.
    """
    check_scorable(model, tokenizer, "to encode WikiText-2")
    for name, value, least in (("max_length", max_length, 2), ("max_windows", max_windows, 1)):
        if value is not None and not is_int_at_least(value, least):
            raise ValueError(f"`{name}` must be an integer >= {least} or None, got {value!r}.")
    if text is None:
        text = wikitext2_text("test", data_dir=data_dir)
    model = text_causal_lm(model)  # an image-text Gemma 3 (dense or pruned): its text model
    max_length = max_length or min(getattr(model.config, "max_position_embeddings", 2048), 2048)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    window = max_length - (1 if bos is not None else 0)
    # a last window of one token has nothing to predict without BOS before it
    starts = [start for start in range(0, len(ids), window) if bos is not None or len(ids) - start > 1]
    starts = starts[:max_windows]
    if not starts:
        raise ValueError(f"`text` has {len(ids)} token(s): nothing to predict.")
    scorer = Scorer(model)
    nll, counts = [], []
    for start in tqdm(starts, desc="perplexity", disable=disable_progress):
        chunk = ([bos] if bos is not None else []) + ids[start : start + window]
        input_ids, attention_mask, position_ids = left_padded([chunk[:-1]], 0)
        states, _ = scorer.forward(input_ids, attention_mask, position_ids, cache=False, keep=len(chunk) - 1)
        targets = torch.tensor(chunk[1:], device=states.device)
        nll.append(-float(scorer.target_logprobs(states[0], targets).sum()))
        counts.append(len(targets))
    return _perplexity_result(nll, counts, "windows' log-likelihoods", windows=len(starts), max_length=max_length)


def _perplexity_result(nll: list[float], counts: list[int], what: str, **fields) -> dict:
    """The token-weighted perplexity of the units (windows, texts) whose summed negative log-likelihoods are `nll` and
    token counts `counts`, with `fields` and the per-unit values; `ValueError` where one is not finite (`what`)."""
    check_finite_outputs(nll, what)
    tokens = sum(counts)
    return {"perplexity": math.exp(sum(nll) / tokens), "tokens": tokens, **fields, "nll": nll, "counts": counts}


def perplexity_summary(result: dict) -> dict:
    """A result of `perplexity` or `texts_perplexity` without its per-window or per-text `nll` and `counts`: what a
    report keeps."""
    return {key: value for key, value in result.items() if key not in ("nll", "counts")}


@torch.inference_mode()
def texts_perplexity(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_length: int | None = None,
    batch_size: int = 8,
    disable_progress: bool = False,
) -> dict:
    """Perplexity of `texts` (e.g. held-out examples of your own task), each read alone from its start after a BOS
    token (not predicted; without one in the tokenizer, a text's first token is not predicted), as an evaluation
    prompt is read, token-weighted over all of them.

    Args:
        texts (`list[str]`): the texts; one that leaves no token to predict (empty) is an error.
        max_length (`int`, *optional*): tokens read per text (BOS included); longer texts are cut there and counted
            as `truncated`. Default: the model's context, capped at 2048.
        batch_size (`int`, *optional*, defaults to 8): texts per forward pass (batched by length, left padding).
        disable_progress (`bool`, *optional*): no progress bar.

    Returns:
        `dict` with `perplexity`, `tokens` (predicted), `texts`, `truncated`, and per text `nll` (summed negative
        log-likelihood in nats) and `counts` (its predicted tokens), in the order of `texts`: what
        `paired_bootstrap_perplexity` compares between two models.
    """
    check_scorable(model, tokenizer, "to encode the texts")
    texts = _text_list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("`texts` must hold strings only.")
    check_positive_int("batch_size", batch_size)
    if max_length is not None and not is_int_at_least(max_length, 2):
        raise ValueError(f"`max_length` must be an integer >= 2 or None, got {max_length!r}.")
    model = text_causal_lm(model)  # an image-text Gemma 3 (dense or pruned): its text model
    max_length = max_length or min(getattr(model.config, "max_position_embeddings", 2048), 2048)
    encoded, truncated = _bos_encoded(tokenizer, texts, max_length)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pad = pad_id(tokenizer)
    scorer = Scorer(model)
    nll = [0.0] * len(texts)
    progress = tqdm(total=len(texts), desc="text perplexity", unit="text", disable=disable_progress)
    with progress:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = [encoded[i][:-1] for i in batch]
            width = max(len(row) for row in inputs)
            states, _ = scorer.forward(*left_padded(inputs, pad), cache=False, keep=width)
            # left padding: each row's real positions are its last len(row) columns
            picked = torch.cat([states[j, width - len(row) :] for j, row in enumerate(inputs)])
            targets = torch.tensor([t for i in batch for t in encoded[i][1:]], device=picked.device)
            values = scorer.target_logprobs(picked, targets).cpu().double()
            for i, part in zip(batch, values.split([len(row) for row in inputs])):
                nll[i] = -float(part.sum())
            progress.update(len(batch))
    counts = [len(ids) - 1 for ids in encoded]
    return _perplexity_result(nll, counts, "texts' log-likelihoods", texts=len(texts), truncated=truncated)


def _bos_encoded(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Each text's tokens after BOS, cut to `max_length`, and how many were cut; `ValueError` on an empty text."""
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    encoded = [bos + tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    empty = [i for i, ids in enumerate(encoded) if len(ids) < 2]
    if empty:
        raise ValueError(
            f"{len(empty)} of `texts` leave no token to predict (e.g. text {empty[0]}: {texts[empty[0]]!r}); "
            "remove empty texts."
        )
    truncated = sum(len(ids) > max_length for ids in encoded)
    return [ids[:max_length] for ids in encoded], truncated


def texts_perplexity_by_source(
    model, tokenizer, sources: dict[str, list[str]], *, batch_size: int = 8, disable_progress: bool = False
) -> dict:
    """`texts_perplexity` of each source's texts, `{name: result}` (empty for no sources): what `diet-hf eval
    --texts`, `prune --eval-texts` and healing's held-out texts score. Texts read from a source (`tasks.SourceTexts`)
    name it in their result's `source`, which the card shows."""
    from ..tasks import SourceTexts

    results = {}
    for name, texts in sources.items():
        results[name] = texts_perplexity(
            model, tokenizer, texts, batch_size=batch_size, disable_progress=disable_progress
        )
        if isinstance(texts, SourceTexts) and texts.source:
            results[name]["source"] = texts.source
    return results


def _text_list(texts) -> list:
    """`texts` as a non-empty list (one string by mistake, or nothing, is a `ValueError`)."""
    if isinstance(texts, str):
        raise ValueError("`texts` must be a list of texts, got one string (pass `[text]`).")
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty: pass at least one text.")
    return texts


def split_last_words(texts: list[str], argument: str = "`texts`") -> list[tuple[str, str]]:
    """Each text as LAMBADA's (context, last word): cut at its last space, trailing whitespace ignored. A text that is
    not a string or has no context before a last word is a `ValueError` naming `argument` and the text."""
    pairs = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{argument} must hold strings only; text {i} is a {type(text).__name__}.")
        context, _, word = text.rstrip().rpartition(" ")
        if not context.strip() or not word:
            raise ValueError(
                f"{argument}: text {i} ({text[:60]!r}) has no context before a last word (a space-separated word is "
                "predicted from the text before it)."
            )
        pairs.append((context, word))
    return pairs


@torch.inference_mode()
def last_word_accuracy(
    model, tokenizer, texts: list[str], *, batch_size: int = 8, disable_progress: bool = False
) -> dict:
    """LAMBADA's measure on `texts`: each text's last word predicted from everything before it.

    A text is cut at its last space into a context and a target word, encoded as lm-eval 0.4 encodes LAMBADA's pairs
    (`lambada_openai`: context = all but the last space-separated word, target = " " + that word; Gemma's BOS before
    the context). A text is correct when greedy decoding gives the target: every one of its tokens is the most
    probable token after the context and the target's tokens before it (lm-eval's `is_greedy`; a tie counts for the
    target). Texts are batched by length with left padding.

    Args:
        texts (`list[str]`): the texts, each ending in the word to predict (trailing whitespace is ignored); a text
            without a space before its last word is an error.
        batch_size (`int`, *optional*, defaults to 8): texts per forward pass.
        disable_progress (`bool`, *optional*): no progress bar.

    Returns:
        `dict` with `accuracy`, `perplexity` (lm-eval's LAMBADA perplexity: exp of minus the mean target
        log-likelihood per text), `texts`, and per text `correct` (1 or 0; what `paired_bootstrap` compares between
        two models) and `loglikelihood` (of its target, in nats), in the order of `texts`.
    """
    check_scorable(model, tokenizer, "to encode the texts")
    texts = _text_list(texts)
    check_positive_int("batch_size", batch_size)
    pairs = [encode_pair(tokenizer, context, " " + word) for context, word in split_last_words(texts)]
    model = text_causal_lm(model)  # an image-text Gemma 3 (dense or pruned): its text model
    rows = [context + target[:-1] for context, target in pairs]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    pad = pad_id(tokenizer)
    scorer = Scorer(model)
    correct, loglikelihood = [0] * len(texts), [0.0] * len(texts)
    progress = tqdm(total=len(texts), desc="last-word accuracy", unit="text", disable=disable_progress)
    with progress:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            keep = max(len(pairs[i][1]) for i in batch)
            states, _ = scorer.forward(*left_padded([rows[i] for i in batch], pad), cache=False, keep=keep)
            for j, i in enumerate(batch):
                target = torch.tensor(pairs[i][1], device=states.device)
                logprobs = scorer.logprobs(states[j, keep - len(target) :])  # the target's positions
                picked = logprobs.gather(-1, target[:, None]).squeeze(-1)
                loglikelihood[i] = float(picked.cpu().double().sum())
                correct[i] = int(bool((picked >= logprobs.max(-1).values).all()))
            progress.update(len(batch))
    check_finite_outputs(loglikelihood, "last words' log-likelihoods")
    return {
        "accuracy": sum(correct) / len(texts),
        "perplexity": math.exp(-sum(loglikelihood) / len(texts)),
        "texts": len(texts),
        "correct": correct,
        "loglikelihood": loglikelihood,
    }
