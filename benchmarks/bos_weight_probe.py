"""Probe (dev prompts, KL only): the least-squares reconstruction with the first position (BOS) weighted more.

    python benchmarks/bos_weight_probe.py --data-dir ../shared/data --weights 4 16 1000

Every calibration row starts with BOS, whose hidden state is the same vector in every row (position 0 sees nothing
else) and, in Gemma, the attention sink that every later token reads. The reconstruction weighs it as one token of
~60. Here the BOS token's contribution to the sums of x and x x^T (`MomentSums.add`, patched for this script only)
counts `weight` times, so the fit reproduces the BOS position's output more closely. The option that came of it,
`prune(anchor_bos=True)`, is the limit `weight` -> infinity (an equality constraint in `least_squares_update`; the
KL saturated by weight 16 here); `dev_sweep.py` measures it.

`--post-norm` adds two rows on the anchored default (`uniform_mlp_mean_ls_bos`): the default itself, and every
token weighted by 1 / rms(y)^2, y its dense MLP output (`down_proj`'s): the first-order error after Gemma's
post-feedforward RMSNorm, which rescales each token's MLP output to unit RMS before the residual add (the plain fit
minimises the error before it). It records, per layer, the share of that weight which falls on BOS.

One profile per row (the moments are summed while profiling; 7 paper tasks x 100 calibration examples); the BOS
weights on the recipe they were measured with, `uniform_mlp_mean_ls` (the default then); KL(dense || pruned) after
the first 40 dev prompts of each of the 8 evaluation tasks, as `reconstruction_damping.py` (whose damping-0.01 rows
are weight 1). `--resume` keeps the saved rows and measures the missing ones.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf import moments as profiler  # noqa: E402
from diet_hf.evaluation import next_token_logprobs  # noqa: E402
from diet_hf.real_model import load_gemma3_270m  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

BEFORE_ANCHOR, ANCHORED = "uniform_mlp_mean_ls", "uniform_mlp_mean_ls_bos"
_ADD = profiler.MomentSums.add
_MOMENTS = profiler.MomentSums.moments


def _first_tokens(mask: torch.Tensor) -> torch.Tensor:
    """Each row's first real token (BOS, right padding), as a mask shaped like `mask`."""
    first = torch.zeros_like(mask)
    first[:, 0] = mask[:, 0]
    return first


def _add_weighted(sums, key, x: torch.Tensor, weights: torch.Tensor) -> None:
    """Adds sum_t w_t x_t and sum_t w_t x_t x_t^T over the rows of `x` (tokens, channels) to `sums[key]`, the x x^T
    sums held as `MomentSums.add` holds them (the upper part of each block row)."""
    first, rows = sums.sums[key]
    weighted = x * weights[:, None]
    first += weighted.sum(0)
    for (start, stop), row in zip(profiler._block_rows(x.shape[1]), rows):
        row.addmm_(weighted[:, start:stop].T, x[:, start:])


def _weighted_add(weight: float):
    """`MomentSums.add` with each row's first real token (BOS, right padding) counted `weight` times."""

    def add(self, key, x, mask):
        _ADD(self, key, x, mask)
        if self.sums is None or key not in self.sums or weight == 1:
            return
        first = _first_tokens(mask)
        xb = x[first.to(x.device)].float()
        _add_weighted(self, key, xb, torch.full((len(xb),), weight - 1.0, device=xb.device))
        if key == next(iter(self.sums)):  # once per batch: the extra weight in the token count
            self.num_tokens += (weight - 1) * int(first.sum())

    return add


class _PostNormWeighting:
    """`MomentSums.add` / `moments` with each token weighted by 1 / rms(W x)^2 (W the dense `down_proj`), normalised
    per module so the weights sum to the token count; keeps each layer's weight on BOS and in all."""

    def __init__(self, model, eps: float):
        self.weights = {("mlp", i): layer.mlp.down_proj.weight.detach() for i, layer in enumerate(model.model.layers)}
        self.eps, self.total, self.bos, self.used = eps, {}, {}, False

    def add(self, sums, key, x, mask):
        if sums.sums is None or key not in sums.sums or key not in self.weights:
            return _ADD(sums, key, x, mask)
        mask = mask.to(x.device)
        is_bos = _first_tokens(mask)[mask]
        x = x[mask].float()
        c = 1.0 / ((x @ self.weights[key].float().T).pow(2).mean(-1) + self.eps)
        self.total[key] = self.total.get(key, 0.0) + float(c.sum())
        self.bos[key] = self.bos.get(key, 0.0) + float(c[is_bos].sum())
        _add_weighted(sums, key, x, c)

    def moments(self, sums):
        for key, (first, rows) in sums.sums.items():
            if key in self.total:
                scale = sums.num_tokens / self.total[key]
                first.mul_(scale)
                for row in rows:
                    row.mul_(scale)
        self.used = True
        return _MOMENTS(sums)

    def install(self):
        profiler.MomentSums.add = lambda sums, key, x, mask: self.add(sums, key, x, mask)
        profiler.MomentSums.moments = lambda sums: self.moments(sums)

    def bos_share(self) -> list[float]:
        return [self.bos[key] / self.total[key] for key in sorted(self.total, key=lambda k: k[1])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--weights", type=float, nargs="+", default=[4, 16, 1000])
    parser.add_argument("--post-norm", action="store_true", help="add the post-norm-weighted row (see above)")
    parser.add_argument("--kl-prompts", type=int, default=40)
    parser.add_argument("--output", default="benchmarks/results/bos_weight_probe")
    parser.add_argument("--resume", action="store_true", help="keep the rows of the JSON and add the missing ones")
    args = parser.parse_args(argv)
    dense, tokenizer, _ = load_gemma3_270m()
    output = Path(args.output)
    rows, commands, reference, prompts, flat = [], [], None, None, None
    if args.resume and output.with_suffix(".json").exists():
        saved = json.loads(output.with_suffix(".json").read_text())
        rows, commands = saved["rows"], saved.get("commands", [saved.get("command")])
        for row in rows:  # rows from before `--post-norm`: the weights on the then-default, no token weighting
            row.setdefault("recipe", BEFORE_ANCHOR)
            row.setdefault("weighting", "none")
    # (recipe, token weighting, BOS weight): the weights on the recipe they were made with, the unanchored fit
    command = " ".join(["python", *sys.argv])
    if command not in commands:
        commands.append(command)
    runs = [(BEFORE_ANCHOR, "none", weight) for weight in args.weights]
    if args.post_norm:
        runs += [(ANCHORED, "none", 1.0), (ANCHORED, "post_norm", 1.0)]
    for recipe, weighting, weight in runs:
        done = {_row_key(r) for r in rows}
        if all((recipe, weighting, weight, s) in done for s in args.sparsities):
            continue
        post_norm = _PostNormWeighting(dense, dense.config.rms_norm_eps) if weighting == "post_norm" else None
        if post_norm is not None:
            post_norm.install()
        else:
            profiler.MomentSums.add = _weighted_add(weight)
        try:
            torch.manual_seed(0)
            pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
            pruner.profile(PAPER_TASKS, num_samples=100, data_dir=args.data_dir, disable_progress=True)
            if post_norm is not None and not post_norm.used:
                raise RuntimeError("The moments were not summed while profiling: the weighting did not apply.")
        finally:
            profiler.MomentSums.add, profiler.MomentSums.moments = _ADD, _MOMENTS
        if reference is None:
            prompts, flat, reference = dev_sweep.dev_prompt_reference(
                dense, tokenizer, pruner, args.data_dir, args.kl_prompts
            )
        for sparsity in args.sparsities:
            logprobs = next_token_logprobs(pruner.prune(sparsity=sparsity, recipe=recipe), tokenizer, flat)
            overall, per_task = dev_sweep.kl_by_task(reference, logprobs, prompts)
            rows = [r for r in rows if _row_key(r) != (recipe, weighting, weight, sparsity)]
            rows.append(
                {
                    "sparsity": sparsity,
                    "recipe": recipe,
                    "weighting": weighting,
                    "bos_weight": weight,
                    "kl_from_dense": overall,
                    "kl_per_task": per_task,
                    **({"bos_share_of_weight": post_norm.bos_share()} if post_norm is not None else {}),
                }
            )
            print(sparsity, recipe, weighting, weight, f"KL {overall:.4f}", flush=True)
            _write(output, rows, commands, args)
    return 0


def _row_key(row: dict) -> tuple:
    return row["recipe"], row["weighting"], row["bos_weight"], row["sparsity"]


def _write(output: Path, rows: list[dict], commands: list[str], args) -> None:
    report = {"commands": commands, "kl_prompts_per_task": args.kl_prompts, "rows": rows}
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Token weights in the least-squares reconstruction (probe; dev prompts, Gemma 3 270M)",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in commands) + ". KL(dense ‖ pruned) after the first "
        f"{args.kl_prompts} dev prompts of each of 8 tasks. BOS weight: the BOS token counted that many times in the "
        f"reconstruction's moments, on `{BEFORE_ANCHOR}` (the default when these rows were made; weight 1 is that "
        f"recipe); post_norm: every token weighted by 1 / rms(dense MLP output)^2, on the anchored default "
        f"`{ANCHORED}` (`anchor_bos`, the limit of the BOS weight), beside that default unweighted.",
        "",
        "| sparsity | recipe | weighting | BOS weight | KL | " + " | ".join(dev_sweep.EVAL_TASKS) + " |",
        "|---|---|---|---|---|" + "---|" * len(dev_sweep.EVAL_TASKS),
    ]
    for r in sorted(rows, key=lambda r: (r["sparsity"], r["recipe"], r["weighting"], r["bos_weight"])):
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in dev_sweep.EVAL_TASKS)
        lines.append(
            f"| {r['sparsity']:.0%} | {r['recipe']} | {r['weighting']} | {r['bos_weight']:g} | "
            f"{r['kl_from_dense']:.3f} | {cells} |"
        )
    shares = [r for r in rows if "bos_share_of_weight" in r]
    if shares:
        share = shares[0]["bos_share_of_weight"]
        lines += [
            "",
            "Share of the post-norm weight on BOS per layer (one token in about 60): "
            + ", ".join(f"{i}: {v:.2f}" for i, v in enumerate(share))
            + ".",
        ]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
