"""Least-squares reconstruction of a cut layer's output projection: pure tensor functions, no modules or hooks.

A pruned `down_proj` (or `o_proj`) keeps the input channels K of the dense weight W and loses R. Slicing alone
drops `W_R x_R` from the layer's output; FLAP's bias compensation replaces it by its mean `W_R E[x_R]`. The
reconstruction also keeps what the kept channels predict of it: the kept columns become

    W_K' = W_K + W_R S_RK (S_KK + lambda I)^-1

where S is the covariance of the input over the calibration tokens (with bias compensation; the bias is then
`W_R E[x_R] - (W_K' - W_K) E[x_K]`) or its second moment (without: no bias). This is the minimum over W_K' (and the
bias) of E||W x - W_K' x_K - b||^2 on the calibration tokens, i.e. the layer's output on the dense model's inputs
matched as closely as a linear map of the kept channels can (the weight update of Kwon et al. 2022, "A Fast
Post-Training Pruning Framework for Transformers", and of SlimGPT / ZipLM-style structured pruning, without their
sequential propagation: refitting each layer on the pruned model's own inputs raised the KL to dense on dev prompts,
`benchmarks/reconstruction_damping.py --sequential-dampings`). `lambda` is `damping` times the mean of S_KK's
diagonal (as SparseGPT's dampening), so the solve stays well posed for channels the calibration data barely moves.

An `anchor` input a is reproduced exactly: the fit is constrained to W_K' a_K (+ b) = W a, the limit of counting a
infinitely often among the calibration tokens. The BOS token is such an input (`PruneOptions.anchor_bos`): position 0
attends only to itself, so its hidden state is the same vector at the start of every input, and Gemma's attention
sink, read by every later token; the plain fit weighs it as one calibration token of about 60. With the bias the
constrained fit is the same solve about a instead of the mean (b = W_R a_R - U a_K, U fitted on E[(x - a)(x - a)^T]);
without, the unconstrained U moves along S^-1 a_K (a Lagrange multiplier) until the constraint holds. Either way the
ridge stays `damping` times the mean variance of the kept channels.
"""

import torch

from ._devices import to_float64

__all__ = ["DEFAULT_DAMPING", "least_squares_update"]

DEFAULT_DAMPING = 0.01


def _spd_solver(matrix: torch.Tensor):
    """`solve(b)`: `matrix^-1 b` for a symmetric positive definite `matrix` (a damped second moment), through one
    Cholesky factorization for every right-hand side (half the work of an LU solve); through LU where the factorization
    fails (no damping and a singular or numerically indefinite matrix)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if info.item() == 0:
        return lambda b: torch.cholesky_solve(b, factor)
    return lambda b: torch.linalg.solve(matrix, b)


@torch.no_grad()
def least_squares_update(
    weight: torch.Tensor,
    kept_channels: torch.Tensor,
    mean: torch.Tensor,
    second_moment: torch.Tensor,
    *,
    centered: bool,
    damping: float = DEFAULT_DAMPING,
    anchor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kept columns of `weight` updated to carry the removed channels' output, and the output bias.

    Args:
        weight (`torch.Tensor`): the dense `(out_features, in_features)` weight.
        kept_channels (`torch.Tensor`): sorted indices of the kept input channels (long).
        mean (`torch.Tensor`): E[x], `(in_features,)`.
        second_moment (`torch.Tensor`): E[x x^T], `(in_features, in_features)`.
        centered (`bool`): fit the covariance and return a bias (bias compensation), or the second moment and no
            bias.
        damping (`float`): ridge term as a fraction of the mean diagonal of the kept channels' (co)variance.
        anchor (`torch.Tensor`, *optional*): an `(in_features,)` input whose output the result reproduces exactly.

    Returns:
        `(kept_weight, bias)`: `(out_features, len(kept_channels))` in `weight`'s dtype and on its device, and
        `(out_features,)` float64 (the compensation, to add to any dense bias; on the CPU where `weight`'s device has
        no float64, Apple's MPS) or `None` when not `centered`.
    """
    if damping < 0:
        raise ValueError(f"`damping` must be >= 0, got {damping!r}.")
    if anchor is not None and tuple(anchor.shape) != (weight.shape[1],):
        raise ValueError(f"`anchor` must have shape ({weight.shape[1]},), got {tuple(anchor.shape)}.")
    w = to_float64(weight)  # on the CPU for a device without float64 (Apple's MPS); the result goes back
    device = w.device
    removed = torch.ones(w.shape[1], dtype=torch.bool, device=device)
    kept = kept_channels.to(device)
    removed[kept] = False
    mean = to_float64(mean).to(device)
    anchor = None if anchor is None else to_float64(anchor).to(device)
    # the point the fit is centred on (its bias holds the removed channels' output there): the anchor, or the mean
    center = anchor if centered and anchor is not None else mean
    w_removed = w[:, removed]
    update = torch.zeros(w.shape[0], len(kept), dtype=torch.float64, device=device)
    if len(kept) and removed.any():
        # only the kept rows of S, in float64 (the full matrix in float64 would be 33 MB at 2048 channels)
        rows = to_float64(second_moment.to(device)[kept])
        cov_kk, cov_kr = rows[:, kept], rows[:, removed]
        del rows
        if centered:
            cov_kk -= torch.outer(mean[kept], mean[kept])
            cov_kr -= torch.outer(mean[kept], mean[removed])
        ridge = damping * cov_kk.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
        if centered and anchor is not None:
            # E[(x - a)(x - a)^T] = covariance + (m - a)(m - a)^T
            shift = mean - anchor
            cov_kk += torch.outer(shift[kept], shift[kept])
            cov_kr += torch.outer(shift[kept], shift[removed])
        cov_kk.diagonal().add_(ridge)
        # (K, out): S_KK^-1 S_KR W_R^T, the transpose of the update
        solve = _spd_solver(cov_kk)
        update = solve(cov_kr @ w_removed.T).T
        if anchor is not None and not centered:
            # the least change of the fit that makes U a_K = W_R a_R: along S_KK^-1 a_K
            direction = solve(anchor[kept][:, None])[:, 0]
            curvature = anchor[kept] @ direction
            if curvature > 0:
                residual = w_removed @ anchor[removed] - update @ anchor[kept]
                update += torch.outer(residual, direction) / curvature
    kept_weight = (w[:, kept] + update).to(weight.dtype).to(weight.device)
    if not centered:
        return kept_weight, None
    bias = w_removed @ center[removed] - update @ center[kept]
    return kept_weight, bias
