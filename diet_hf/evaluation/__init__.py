"""Zero-shot multiple-choice accuracy scored as lm-eval-harness 0.4 scores it, and WikiText-2 perplexity.

The package: `harness` (`evaluate`: tasks, halves, metrics), `strategies` (`loglikelihoods` and the three scoring
strategies behind one signature), `scorer` (the model: decoder, then LM head at scored positions; `encode_pair`: a
request's tokens as lm-eval encodes them), `language_modeling` (`next_token_logprobs`, `kl_divergence`, `perplexity`,
`texts_perplexity`, `perplexity_summary`, `last_word_accuracy`), `statistics` (`paired_bootstrap`, `correct_by_task`,
`compare_evaluations`: two models compared on the same examples; `paired_bootstrap_perplexity`: on the same texts).

Any causal LM that transformers loads works. The LM head runs only at the scored positions (for Gemma models on the
gathered hidden states, for others through `logits_to_keep`): Gemma's vocabulary is 256k, so full logits at every
position would dominate time and memory.

For Gemma-family models (dense or pruned, `sdpa` or `eager` attention) the choices of one question are packed into one
row behind their shared context, with an attention mask that lets each choice see the context and itself only, and
position ids that continue the context for every choice: the same computation as scoring each pair on its own, with
the context run once and almost no padding. The scored hidden states of many rows then go through the LM head
together, one slice of the vocabulary at a time, with a running log-sum-exp.
"""

from .harness import evaluate
from .language_modeling import (
    kl_divergence,
    last_word_accuracy,
    next_token_logprobs,
    perplexity,
    perplexity_summary,
    texts_perplexity,
)
from .scorer import encode_pair
from .statistics import compare_evaluations, correct_by_task, paired_bootstrap, paired_bootstrap_perplexity
from .strategies import loglikelihoods

__all__ = [
    "compare_evaluations",
    "correct_by_task",
    "encode_pair",
    "evaluate",
    "kl_divergence",
    "last_word_accuracy",
    "loglikelihoods",
    "next_token_logprobs",
    "paired_bootstrap",
    "paired_bootstrap_perplexity",
    "perplexity",
    "perplexity_summary",
    "texts_perplexity",
]
