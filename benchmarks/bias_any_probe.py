"""Probe (issue 13): bias compensation against none, on calibration texts that end in any answer choice.

    python benchmarks/bias_any_probe.py --data-dir ../shared/data

The default keeps the removed MLP channels' mean as a bias (`bias_compensation=True`; with the least-squares
reconstruction, the fit is centred on the mean and the mean goes into the bias). It was kept on dev on 2026-11-30
against the reconstruction fitted on the second moment without a bias (0.438 / KL 0.226 against 0.444 / 0.189 at 20%,
gold-answer texts, `docs/choosing_the_default.md`). Since 2026-12-05 the calibration texts end in a choice drawn per
example (`calibration_answer="any"`), and on those texts it was not measured on dev.

The rule, written here before any row of this script and the same as the BOS anchor's (`anchor_any_probe.py`):
bias compensation stays the default only if its paired 95% interval against the default without it (`recipe=
"uniform_mlp_mean_ls_bos", bias_compensation=False`) includes zero or lies above it at both 20% and 40%, over 500 dev
examples per task; otherwise the default drops it and it stays an option. Said plainly: the test-half row had been
seen when this was written (without it +0.004 [−0.002, +0.010] at 20%, `benchmark_test500_any_answer.md`; KL 0.173
against the default's 0.167); it was not measured at 40% on test.

It is paired with the anchored default's dev rows on "any" texts, the candidate rows of
`benchmarks/results/choice_calibration_probe.json`, as `anchor_any_probe.py` is: the same profile (float32 x xᵀ
products), the pairing checked (the default's dev-prompt KL recomputed equal to the stored one), the candidate scored
on the same dev examples, the difference reported as the rule reads it (with minus without).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import anchor_any_probe  # noqa: E402

BIAS = {
    "title": "Bias compensation on any-answer calibration texts",
    "script": "bias_any_probe.py",
    "variant": f"{anchor_any_probe.ANCHORED}, no bias",
    "options": {"recipe": anchor_any_probe.ANCHORED, "bias_compensation": False},
    "names": ("with bias", "without bias"),
    "prefix": "with_bias",
    "reference": "the default's, with bias,",
    "difference": "with_minus_without_bias",
    "verdict": "bias_stays",
    "verdicts": (
        "bias compensation **stays the default**",
        "bias compensation **goes: the default becomes `bias_compensation=False`**",
    ),
}


def main(argv=None) -> int:
    return anchor_any_probe.run(__doc__, BIAS, "benchmarks/results/bias_any_probe", argv)


if __name__ == "__main__":
    raise SystemExit(main())
