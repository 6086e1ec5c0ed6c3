"""Probe (issue 13): the reconstruction's fit weighted for Gemma's post-feedforward norm (dev prompts, Gemma 3 270M).

    python benchmarks/norm_weighted_probe.py --data-dir ../shared/data

Gemma's decoder layer adds `post_feedforward_layernorm(mlp(x))` to the residual stream: the MLP's output y is divided
by its own RMS over the hidden channels, token by token, before it is added. The reconstruction fits the refitted
`down_proj` to the dense output y itself, so it minimizes the sum over tokens of |e_t|², where e_t is the error in y
at token t: a token whose MLP output is large weighs in proportion to its squared size, though the norm then divides
its error by that size. To first order the norm turns an error e_t into e_t / rms(y_t) (less its part along y_t,
which only rescales y_t), and the per-output-channel scale of the norm does not change a least-squares fit that is
solved output row by output row. So the fit that matches what the residual stream receives weights token t by
1 / rms(y_t)²: the same solve on the weighted moments E_w[x] and E_w[x xᵀ]. No method in the project or in the
literature the project read weights the refit this way; this measures whether it matters on this model.

- `1/rms²`: the default with every `down_proj` refitted on moments weighted by 1 / rms(y_t)², y_t the dense model's
  `down_proj` output at token t over the same calibration tokens (the first-order weight above).
- `1/rms`: the same with 1 / rms(y_t), a milder weighting between the two.

Everything else is the default's (channels, widths, bias compensation, the BOS anchor, which is reproduced exactly
whatever the weights). The weighted moments are summed in float32 in a pass of their own; the unweighted default is
pruned from the same profile.

The rule, written here before any row (the bar of every probe of the plan since 2026-12-02): a candidate goes on to
dev accuracy only if its KL(dense ‖ pruned) after the first 40 dev prompts of each of 8 tasks is at least 10% below
the default's at both 20% and 40%. There it would replace the default only if its paired difference in the
seven-task average over 500 dev examples per task, against the default's rows on the same calibration texts
(`benchmarks/results/choice_calibration_probe.json`), is above zero at both sparsities, neither interval below zero.
No accuracy is scored otherwise. The profile is made as those rows' was (`calibration_answer="any"`, float32 x xᵀ
products), and the default's KL is recomputed and checked against the stored one before any candidate row.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dev_sweep  # noqa: E402

from diet_hf.evaluation import paired_bootstrap  # noqa: E402
from diet_hf.moments import InputMoments, _block_rows, _input_module  # noqa: E402
from diet_hf.profiler import _run_decoder  # noqa: E402
from diet_hf.recipes import DEFAULT_RECIPE  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402

POWERS = {"1/rms²": 2.0, "1/rms": 1.0}  # candidate -> the power of 1 / rms(y_t)


def weighted_moments(pruner, powers: dict[str, float]) -> tuple[dict[str, InputMoments], dict]:
    """`{candidate: InputMoments}` of every `down_proj` input over the pruner's calibration tokens, each token weighted
    by rms(y_t)^-power (y_t the dense `down_proj` output there), and per layer the spread of rms(y_t) (its 5th, 50th
    and 95th percentiles over a sample of tokens)."""
    model, family = pruner.model, pruner.family
    layers = model.config.num_hidden_layers
    width = model.config.intermediate_size
    sums = {name: {i: [0.0, torch.zeros(width), torch.zeros(width, width)] for i in range(layers)} for name in powers}
    sampled = {i: [] for i in range(layers)}
    state = {"mask": None, "tokens": 0}

    def accumulate(layer):
        def hook(module, args, output):
            mask = state["mask"].to(output.device)
            x, y = args[0][mask].float(), output[mask].float()
            rms = y.pow(2).mean(-1).sqrt().clamp_min(1e-6)
            sampled[layer].append(rms[::16])
            for name, power in powers.items():
                w = rms.pow(-power)
                total = sums[name][layer]
                total[0] += float(w.sum())
                total[1] += (w[:, None] * x).sum(0)
                total[2].addmm_((w[:, None] * x).T, x)

        return hook

    def batches():
        for task in pruner.scores.tasks:
            yield from pruner._batches(pruner._calibration["data"][task])[0]

    handles = [_input_module(model, family, ("mlp", i)).register_forward_hook(accumulate(i)) for i in range(layers)]
    try:
        tokens = _run_decoder(
            model, batches(), lambda mask: state.update(mask=mask), ("weighted moments", None), False
        )
    finally:
        for handle in handles:
            handle.remove()
    result = {}
    for name in powers:
        moments = InputMoments.__new__(InputMoments)
        moments.num_tokens = tokens
        moments.moments = {}
        for layer, (weight, first, second) in sums[name].items():
            second /= weight
            rows = [second[start:stop, start:].clone() for start, stop in _block_rows(width)]
            moments.moments[("mlp", layer)] = (first / weight, rows)
        result[name] = moments
    spread = {}
    for layer, values in sampled.items():
        q = torch.quantile(torch.cat(values), torch.tensor([0.05, 0.5, 0.95])).tolist()
        spread[layer] = [round(v, 3) for v in q]
    return result, spread


def main(argv=None) -> int:
    parser = dev_sweep.probe_parser(__doc__.splitlines()[0], "benchmarks/results/norm_weighted_probe")
    parser.set_defaults(reference=dev_sweep.ANY_REFERENCE)
    args = parser.parse_args(argv)
    (_, tokenizer, pruner), kl, stored = dev_sweep.any_answer_probe_start(args)
    output = Path(args.output)
    report = {"commands": [" ".join(["python", *sys.argv])], "kl_prompts_per_task": args.kl_prompts, "rows": []}
    previous = {(dev_sweep.PAIRED_DEFAULT, s): stored[(dev_sweep.ANY_KL, s)] for s in args.sparsities}
    tasks = frozenset(pruner.scores.tasks)
    candidates, report["rms_quantiles_per_layer"] = weighted_moments(pruner, POWERS)
    unweighted = None
    for sparsity in args.sparsities:
        for variant in ("default", *POWERS):
            if variant != "default":
                pruner._moments = (tasks, candidates[variant])
            elif unweighted is not None:
                pruner._moments = unweighted
            started = time.perf_counter()
            model = pruner.prune(sparsity=sparsity, disable_progress=True, recipe=DEFAULT_RECIPE)
            if variant == "default":
                unweighted = pruner._moments
            row = dev_sweep.kl_row(model, tokenizer, kl, sparsity, variant, previous, started)
            row["widths"] = pruner.plan.intermediate_size_per_layer
            if variant == "default":
                dev_sweep.check_pairing(row, args.reference)
            report["rows"].append(row)
            _write(output, report)
    values = {(r["sparsity"], r["variant"]): r["kl_from_dense"] for r in report["rows"]}
    report["kl_rule_passed"] = {
        v: all(values[(s, v)] <= 0.9 * values[(s, "default")] for s in args.sparsities) for v in POWERS
    }
    _write(output, report)
    print("KL rule passed:", report["kl_rule_passed"], flush=True)
    prompts, _, reference = kl
    context = dev_sweep.measure_context(tokenizer, pruner.scores.provenance["excluded_eval_ids"], prompts, reference)
    for variant in (v for v, ok in report["kl_rule_passed"].items() if ok):
        for sparsity in args.sparsities:
            pruner._moments = (tasks, candidates[variant])
            model = pruner.prune(sparsity=sparsity, disable_progress=True, recipe=DEFAULT_RECIPE)
            default = stored[(dev_sweep.ANY_ACCURACY, sparsity)]
            measured = dev_sweep._measure(model, tokenizer, args, context)
            difference = paired_bootstrap(
                {t: measured["correct"][t] for t in PAPER_TASKS}, {t: default["correct"][t] for t in PAPER_TASKS}
            )
            row = {"sparsity": sparsity, "variant": f"{variant}, dev accuracy", **measured}
            row.update(against_default=difference, default_average=default["average_paper_tasks"])
            print(sparsity, variant, f"avg {row['average_paper_tasks']:.4f}", difference, flush=True)
            report["rows"].append(row)
            _write(output, report)
    return 0


def _write(output: Path, report: dict) -> None:
    dev_sweep.write_probe_json(output, report)
    lines = dev_sweep.probe_heading(
        "The reconstruction weighted for the post-feedforward norm",
        report["commands"],
        report["kl_prompts_per_task"],
        output.name + ".py",
    )
    lines += dev_sweep.probe_tables(report["rows"], "variant", "candidate")
    spread = report.get("rms_quantiles_per_layer", {})
    if spread:
        lines += [
            "",
            "rms(y_t) of the dense `down_proj` output per layer (5th / 50th / 95th percentile of tokens):",
            "",
        ]
        lines += [f"- layer {layer}: {' / '.join(map(str, q))}" for layer, q in spread.items()]
    if "kl_rule_passed" in report:
        passed = [v for v, ok in report["kl_rule_passed"].items() if ok]
        verdict = ", ".join(passed) if passed else "none"
        lines += ["", f"KL rule (at least 10% below the default's at 20% and 40%) passed by: {verdict}."]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
