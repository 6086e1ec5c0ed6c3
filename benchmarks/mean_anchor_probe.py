"""Probe (issue 13): the BOS-anchored reconstruction with its residual kept at zero mean.

    python benchmarks/mean_anchor_probe.py --data-dir ../shared/data

The default (`"uniform_mlp_mean_ls_bos"`) fits each cut `down_proj` by least squares with a bias, constrained to
reproduce the BOS token's output exactly: b = y(a) - U a_K, U fitted on E[(x - a)(x - a)^T], a the BOS input. That is
the least-squares optimum under the constraint, but its residual over the other calibration tokens no longer has zero
mean: E[y - y'] = (E[y] - y(a)) - U (E[x_K] - a_K), an offset added to every token's MLP output. Its predecessor
(`"uniform_mlp_mean_ls"`) has the zero-mean residual and an inexact BOS; on the test halves it read 0.001-0.011 higher
in the seven-task average at 10-40% (one calibration draw; 0.002-0.003 over five draws), which the dev halves did not
show beyond noise. This probe has both properties at once: the predecessor's mean-centred fit U0 = W_R S_RK S_KK^-1
(S the covariance, the same ridge), moved by the least change that makes BOS exact, U = U0 + (W_R v_R - U0 v_K)
(S_KK^-1 v_K)^T / (v_K^T S_KK^-1 v_K) with v = a - E[x] (the constraint in mean-centred coordinates), and the
mean-centred bias b = W_R E[x_R] - U E[x_K]. Then y'(a) = y(a) and E[y - y'] = 0. No knob; same channels, widths,
damping and anchor input as the default.

The rule, written before any row: the candidate goes on to dev accuracy only if its KL(dense || pruned) after the
first 40 dev prompts of each of 8 tasks is at most 5% above the default's at both 20% and 40% (it must keep what the
anchor bought). On dev accuracy (500 dev examples per task, the examples and profile of
`benchmarks/results/dev_sweep_500.json`, whose default rows it is paired with) it replaces the default only if its
paired difference in the seven-task average is above zero (point estimate) at both 20% and 40%, with neither interval
below zero. The profile multiplies x x^T in float32 here (`moments_dtype="float32"`), as when those rows were made,
and the default's KL is recomputed and must match theirs (a check that the pairing holds).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

import diet_hf.surgery as surgery  # noqa: E402
from diet_hf.reconstruction import least_squares_update  # noqa: E402


@torch.no_grad()
def mean_anchored_update(weight, kept_channels, mean, second_moment, *, centered, damping, anchor=None):
    """`least_squares_update` with a centred, anchored fit replaced by the mean-centred one moved to make the anchor
    exact (see the docstring); every other case is the library's."""
    if not (centered and anchor is not None):
        return least_squares_update(
            weight, kept_channels, mean, second_moment, centered=centered, damping=damping, anchor=anchor
        )
    w = weight.double()
    kept = kept_channels.to(w.device)
    removed = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    removed[kept] = False
    mean, anchor = mean.to(w.device, torch.float64), anchor.to(w.device, torch.float64)
    rows = second_moment.to(w.device)[kept].double()
    cov_kk = rows[:, kept] - torch.outer(mean[kept], mean[kept])
    cov_kr = rows[:, removed] - torch.outer(mean[kept], mean[removed])
    cov_kk.diagonal().add_(damping * cov_kk.diagonal().mean())
    w_removed = w[:, removed]
    update = torch.linalg.solve(cov_kk, cov_kr @ w_removed.T).T  # the predecessor's fit
    shift = anchor - mean
    direction = torch.linalg.solve(cov_kk, shift[kept])
    update += torch.outer(w_removed @ shift[removed] - update @ shift[kept], direction) / (shift[kept] @ direction)
    bias = w_removed @ mean[removed] - update @ mean[kept]
    return (w[:, kept] + update).to(weight.dtype), bias


def main(argv=None) -> int:
    parser = dev_sweep.probe_parser(__doc__.splitlines()[0], "benchmarks/results/mean_anchor_probe")
    args = parser.parse_args(argv)
    start = dev_sweep.paired_probe_start(args)
    pruner = start[0][2]
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": []}

    def prune(variant: str, sparsity: float):
        if variant == "mean-anchored":
            surgery.least_squares_update = mean_anchored_update
        try:
            return pruner.prune(sparsity=sparsity, disable_progress=True)
        finally:
            surgery.least_squares_update = least_squares_update

    dev_sweep.guarded_probe(args, start, report, "mean-anchored", prune, lambda r: _write(Path(args.output), r))
    return 0


def _write(output: Path, report: dict) -> None:
    dev_sweep.write_probe_json(output, report)
    title = "The BOS-anchored reconstruction with a zero-mean residual"
    lines = dev_sweep.probe_heading(title, [report["command"]], report["kl_prompts_per_task"], "mean_anchor_probe.py")
    lines += dev_sweep.probe_tables(report["rows"], "reconstruction", "mean-anchored")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
