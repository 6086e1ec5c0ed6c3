"""Probe (dev prompts, KL only): attention dimensions traded for MLP width, against the default at equal parameters.

    python benchmarks/attention_dims_probe.py --data-dir ../shared/data

The default cuts MLP width only. Two finer attention structures than whole heads, each removed in every layer and
its parameters given back to MLP width (+64 or +128 channels per layer, DIET's mean-rank order, the default's anchored
least-squares fit), at no more decoder parameters than the default:

- `qk`: query/key dimensions in RoPE pairs (dimension i rotates with i + head_dim/2): rows of q_proj (every query
  head) and k_proj. Scored ThinK-style, the sum over query heads of ||Q_h,p|| x ||K_p|| over calibration tokens after
  q_norm / k_norm (a pair's norm is invariant under its rotation). Simulated exactly as a model without those rows
  computes it: q_norm / k_norm take their RMS over the kept dimensions and output zeros elsewhere, so removed pairs
  drop out of every q.k. 6,400 parameters per pair per layer on Gemma 3 270M (4 query heads, 1 KV head, 640 wide).
- `value`: value dimensions (rows of v_proj; with one KV head, the same dimension of every query head's output, so 4
  input columns of o_proj), o_proj refitted by the same anchored least squares as the default's down_proj, on its
  input moments over the calibration texts, with a compensation bias. Scored by the energy each dimension's o_proj
  columns carry (E[x_c^2] ||W_o[:, c]||^2 summed over the heads that read it). 3,200 parameters
  per dimension per layer.

64 MLP channels are 122,880 parameters per layer: 20 RoPE pairs (128,000) or 39 value dimensions (124,800).

Rule written before the rows (2026-12-03, in this docstring since): an attention structure is built into the format
and goes on to dev accuracy only if one of its trades lowers the KL after the first `--kl-prompts` dev prompts of
each of the 8 evaluation tasks by at least 10% against the default at both 20% and 40%.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf import build_pruned_model  # noqa: E402
from diet_hf.evaluation import next_token_logprobs  # noqa: E402
from diet_hf.moments import first_token_inputs  # noqa: E402
from diet_hf.plan import rank_normalize  # noqa: E402
from diet_hf.reconstruction import least_squares_update  # noqa: E402

# (removed units per layer, extra MLP channels per layer) at no more parameters than the default
TRADES = {"qk": [(20, 64), (39, 128)], "value": [(39, 64), (77, 128)]}


def attention_statistics(dense, tokenizer, texts, max_length=256):
    """Per layer: sums of squares of q_norm / k_norm outputs per (head, dim), and the mean and second moment of
    o_proj's input, over the tokens of `texts` (float64)."""
    cfg = dense.config
    layers = dense.model.layers
    width = cfg.num_attention_heads * cfg.head_dim
    stats = [
        {
            "q": torch.zeros(cfg.num_attention_heads, cfg.head_dim, dtype=torch.float64),
            "k": torch.zeros(cfg.num_key_value_heads, cfg.head_dim, dtype=torch.float64),
            "sum": torch.zeros(width, dtype=torch.float64),
            "outer": torch.zeros(width, width, dtype=torch.float64),
            "tokens": 0,
        }
        for _ in layers
    ]
    handles = []
    for i, layer in enumerate(layers):
        attn = layer.self_attn

        def q_hook(module, args, out, s=stats[i]):
            s["q"] += out.double().pow(2).sum(dim=(0, 2))

        def k_hook(module, args, out, s=stats[i]):
            s["k"] += out.double().pow(2).sum(dim=(0, 2))

        def o_hook(module, args, s=stats[i]):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            s["sum"] += x.sum(0)
            s["outer"] += x.T @ x
            s["tokens"] += x.shape[0]

        handles += [
            attn.q_norm.register_forward_hook(q_hook),
            attn.k_norm.register_forward_hook(k_hook),
            attn.o_proj.register_forward_pre_hook(o_hook),
        ]
    try:
        with torch.no_grad():
            for text in texts:
                dense(input_ids=tokenizer(text, return_tensors="pt")["input_ids"][:, :max_length])
    finally:
        for handle in handles:
            handle.remove()
    for s in stats:
        s["mean"], s["second"] = s.pop("sum") / s["tokens"], s.pop("outer") / s["tokens"]
    return stats


def _masked_norm(norm, kept):
    def forward(x):
        kept_x = x.float()[..., kept]
        out = torch.zeros_like(x, dtype=torch.float32)
        normed = kept_x * torch.rsqrt(kept_x.pow(2).mean(-1, keepdim=True) + norm.eps)
        out[..., kept] = normed * (1.0 + norm.weight.float()[kept])
        return out.type_as(x)

    return forward


def drop_qk_pairs(model, pair_order, n_pairs, head_dim):
    """Patch every layer's q_norm / k_norm to compute what a model without the lowest `n_pairs` RoPE pairs
    computes (on `model`'s own module instances; its weights are untouched)."""
    half = head_dim // 2
    for i, layer in enumerate(model.model.layers):
        pairs = pair_order[i][: half - n_pairs]
        kept = torch.cat([pairs, pairs + half]).sort().values
        layer.self_attn.q_norm.forward = _masked_norm(layer.self_attn.q_norm, kept)
        layer.self_attn.k_norm.forward = _masked_norm(layer.self_attn.k_norm, kept)
    return model


def drop_value_dims(model, dim_order, n_dims, stats, anchors, cfg):
    """Zero the lowest `n_dims` value dimensions of every layer (new tensors: `model` may share its weights with the
    dense model) and refit o_proj on the kept columns, anchored at BOS, with a bias."""
    heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    group = heads // kv_heads
    columns = torch.arange(heads * head_dim)
    value_of_column = (columns // (group * head_dim)) * head_dim + columns % head_dim
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        removed = torch.ones(kv_heads * head_dim, dtype=torch.bool)
        removed[dim_order[i][: kv_heads * head_dim - n_dims]] = False
        value = attn.v_proj.weight.detach().clone()
        value[removed] = 0
        kept_columns = torch.nonzero(~removed[value_of_column]).flatten()
        weight = attn.o_proj.weight.detach()
        kept_weight, bias = least_squares_update(
            weight,
            kept_columns,
            stats[i]["mean"].float(),
            stats[i]["second"].float(),
            centered=True,
            anchor=anchors[("attn", i)],
        )
        new_weight = torch.zeros_like(weight)
        new_weight[:, kept_columns] = kept_weight
        attn.v_proj.weight = torch.nn.Parameter(value, requires_grad=False)
        attn.o_proj.weight = torch.nn.Parameter(new_weight, requires_grad=False)
        attn.o_proj.bias = torch.nn.Parameter(bias.float(), requires_grad=False)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--kinds", nargs="+", choices=sorted(TRADES), default=sorted(TRADES))
    parser.add_argument("--kl-prompts", type=int, default=40, help="dev prompts per evaluation task for the KL")
    parser.add_argument(
        "--statistics-texts", type=int, default=50, help="calibration texts per task read for the scores"
    )
    parser.add_argument("--output", default="benchmarks/results/attention_dims_probe")
    args = parser.parse_args(argv)
    dense, tokenizer, pruner = dev_sweep.profiled_dense(args.data_dir)
    cfg = dense.config
    scores = pruner.scores
    ranks = torch.stack([rank_normalize(scores.mlp[t].double()) for t in scores.tasks]).mean(0)
    num_layers = ranks.shape[0]
    order = [torch.sort(-ranks[i], stable=True).indices for i in range(num_layers)]
    plans = {}
    for sparsity in args.sparsities:
        pruner.prune(sparsity=sparsity, disable_progress=True)
        plans[sparsity] = copy.deepcopy(pruner.plan)
        for i, kept in enumerate(plans[sparsity].mlp_kept_indices):  # the default keeps each layer's top of `order`
            assert kept == sorted(order[i][: len(kept)].tolist()), f"layer {i}: the default's channels differ"
    moments = pruner._moments[1]
    anchors = first_token_inputs(
        dense,
        pruner.family,
        tokenizer.bos_token_id,
        [(kind, i) for kind in ("mlp", "attn") for i in range(num_layers)],
    )
    mlp_anchors = {key: value for key, value in anchors.items() if key[0] == "mlp"}
    means = scores.channel_means()
    texts = [t for task in scores.tasks for t in pruner._calibration["data"][task].texts[: args.statistics_texts]]
    stats = attention_statistics(dense, tokenizer, texts)
    half, group = cfg.head_dim // 2, cfg.num_attention_heads // cfg.num_key_value_heads
    pair_order, dim_order = [], []
    for s, layer in zip(stats, dense.model.layers):
        pair_q = (s["q"][:, :half] + s["q"][:, half:]).sqrt()
        pair_k = (s["k"][:, :half] + s["k"][:, half:]).sqrt().repeat_interleave(group, dim=0)
        pair_order.append(torch.sort(-(pair_q * pair_k).sum(0), stable=True).indices)
        energy = torch.diagonal(s["second"]) * layer.self_attn.o_proj.weight.detach().double().pow(2).sum(0)
        per_dim = energy.view(cfg.num_key_value_heads, group, cfg.head_dim).sum(1).flatten()
        dim_order.append(torch.sort(-per_dim, stable=True).indices)

    def build(sparsity, extra):
        plan = copy.deepcopy(plans[sparsity])
        plan.mlp_kept_indices = [
            sorted(order[i][: len(k) + extra].tolist()) for i, k in enumerate(plan.mlp_kept_indices)
        ]
        return build_pruned_model(
            dense,
            plan,
            channel_means=means,
            input_moments=moments,
            reconstruction_anchors=mlp_anchors,
            disable_progress=True,
        )

    def drop(model, kind, count):
        if kind == "qk":
            return drop_qk_pairs(model, pair_order, count, cfg.head_dim)
        return drop_value_dims(model, dim_order, count, stats, anchors, cfg)

    prompts, flat, reference = dev_sweep.dev_prompt_reference(dense, tokenizer, pruner, args.data_dir, args.kl_prompts)
    report = {"command": " ".join(["python", *sys.argv]), "kl_prompts_per_task": args.kl_prompts, "rows": []}
    output = Path(args.output)

    def measure(name, sparsity, model, extra=0, removed=0):
        logprobs = next_token_logprobs(model, tokenizer, flat)
        overall, per_task = dev_sweep.kl_by_task(reference, logprobs, prompts)
        params = sum(p.numel() for layer in model.model.layers for p in layer.parameters())
        if removed and name.startswith("qk"):
            params -= num_layers * removed * 2 * (cfg.num_attention_heads + cfg.num_key_value_heads) * cfg.hidden_size
        elif removed:
            params -= num_layers * removed * (1 + group) * cfg.hidden_size
        report["rows"].append(
            {
                "row": name,
                "sparsity": sparsity,
                "extra_mlp_channels": extra,
                "removed_per_layer": removed,
                "decoder_parameters": params,
                "kl_from_dense": overall,
                "kl_per_task": per_task,
            }
        )
        print(name, sparsity, f"KL {overall:.4f}", f"params {params:,}", flush=True)
        _write(output, report)

    for kind in args.kinds:
        for count, _ in TRADES[kind]:
            measure(f"{kind}: dense, {count} removed", 0.0, drop(copy.deepcopy(dense), kind, count), removed=count)
    for sparsity in args.sparsities:
        measure("default", sparsity, build(sparsity, 0))
        measure("default +64 MLP channels", sparsity, build(sparsity, 64), extra=64)
        for kind in args.kinds:
            for count, extra in TRADES[kind]:
                name = f"{kind}: +{extra} MLP channels, {count} removed"
                measure(name, sparsity, drop(build(sparsity, extra), kind, count), extra=extra, removed=count)
    return 0


def _write(output: Path, report: dict) -> None:
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Attention dimensions traded for MLP width (probe; dev prompts, Gemma 3 270M)",
        "",
        f"Command: `{report['command']}`. KL(dense ‖ pruned) after the first {report['kl_prompts_per_task']} dev "
        "prompts of each of 8 tasks. `qk`: RoPE pairs of the query/key dimensions removed per layer; `value`: value "
        "dimensions removed per layer, o_proj refitted. Decoder parameters: every parameter of the decoder layers "
        "(norms included), less the removed attention rows (the probe zeroes them). Rule written before the rows: "
        "an attention structure goes on only if a trade lowers the KL by at least 10% against the default at both "
        "20% and 40%.",
        "",
        "| row | sparsity | decoder parameters | KL | " + " | ".join(dev_sweep.EVAL_TASKS) + " |",
        "|---|---|---|---|" + "---|" * len(dev_sweep.EVAL_TASKS),
    ]
    for r in report["rows"]:
        cells = " | ".join(f"{r['kl_per_task'][t]:.3f}" for t in dev_sweep.EVAL_TASKS)
        lines.append(
            f"| {r['row']} | {r['sparsity']:.0%} | {r['decoder_parameters']:,} | {r['kl_from_dense']:.3f} | {cells} |"
        )
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
