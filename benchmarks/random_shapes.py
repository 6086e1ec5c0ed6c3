"""Profile and prune at the sizes of larger Gemmas, on random weights: time and peak memory per step.

    python benchmarks/random_shapes.py --data-dir ../shared/data --output benchmarks/results/random_shapes

Gemma 3 1B, Gemma-2 2B and Gemma 3 4B weights are not reachable here, so each runs as a randomly initialized model of
that shape (float32; the 4B's text decoder in bfloat16, as it is run; CPU), in a process of its own: profile on 2
tasks x 8 calibration examples, prune at 20% with the default recipe (the least-squares reconstruction: its input
moments exceed the pruner's default 2 GiB budget at these widths, so they are summed in several passes and solved a
group at a time), then at 20% with the paper's recipe (heads cut too, no reconstruction) while the first pruned
model is dropped by the caller, then greedy decoding and a save, and last the default at 20% again with
`inplace=True` (the dense model's own weights become the pruned model's; the process may already hold memory freed by
its earlier steps, which the allocator keeps). `--modes inplace` measures that in-place prune in a process of its
own, as the first prune after the profile; `--modes budget` the default's copying prune, first after a profile with
`moments_memory_gib` 8 (the moments summed in the profile's pass, no pass of prune's own). Memory is the process's
peak resident size (VmHWM) over each
step, reset before it, and what the step adds to the resident size before it. A check of shapes, memory and time at
real sizes, not of quality: the weights are random. `--shapes` runs some of them; the rows of the others already in
the output are kept.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _side import print_result, provenance, run_side, write_report

SHAPES = {
    "gemma-3-1b": (
        "gemma3_text",
        dict(
            vocab_size=262144,
            hidden_size=1152,
            intermediate_size=6912,
            num_hidden_layers=26,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            sliding_window=512,
            rope_theta=1e6,
            rope_local_base_freq=10000.0,
            query_pre_attn_scalar=256,
            max_position_embeddings=32768,
            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)],
        ),
    ),
    "gemma-2-2b": (
        "gemma2",
        dict(
            vocab_size=256000,
            hidden_size=2304,
            intermediate_size=9216,
            num_hidden_layers=26,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            sliding_window=4096,
            query_pre_attn_scalar=256,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            max_position_embeddings=8192,
        ),
    ),
    # the text decoder of the image-text Gemma 3 4B (google/gemma-3-4b-pt's text_config), in bfloat16 as users run it
    "gemma-3-4b-text": (
        "gemma3_text",
        dict(
            vocab_size=262208,
            hidden_size=2560,
            intermediate_size=10240,
            num_hidden_layers=34,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            sliding_window=1024,
            rope_theta=1e6,
            rope_local_base_freq=10000.0,
            rope_scaling={"factor": 8.0, "rope_type": "linear"},
            query_pre_attn_scalar=256,
            max_position_embeddings=131072,
            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(34)],
        ),
    ),
}
DTYPES = {"gemma-3-4b-text": "bfloat16"}  # float32 otherwise
LARGE_BUDGET_GIB = 8.0  # `--modes budget`: the profile's `moments_memory_gib`, above every shape's MLP moments


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":")) / 2**20


def _step(rows: list, name: str, work):
    """Runs `work()` with the peak resident size reset before it; appends its row and returns its result."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before, start = _status_gib("VmRSS"), time.perf_counter()
    result = work()
    peak = _status_gib("VmHWM")
    rows.append({"step": name, "seconds": time.perf_counter() - start, "peak_gib": peak, "added_gib": peak - before})
    print(rows[-1], flush=True)
    return result


def side(shape: str, data_dir: str, mode: str = "sequence") -> dict:
    import torch
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    from diet_hf import DietPruner
    from diet_hf.real_model import load_gemma3_270m

    family, values = SHAPES[shape]
    config_class, model_class = {"gemma2": (Gemma2Config, Gemma2ForCausalLM)}.get(
        family, (Gemma3TextConfig, Gemma3ForCausalLM)
    )
    rows = []
    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES.get(shape, "float32"))
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in its dtype: no float32 copy at the start
    try:
        model = _step(rows, "build (random init)", lambda: model_class(config_class(**values)).eval())
    finally:
        torch.set_default_dtype(default_dtype)
    tokenizer = AutoTokenizer.from_pretrained(load_gemma3_270m()[2])  # token ids below either vocabulary's size
    pruner = DietPruner(model, tokenizer, model_id=f"random/{shape}")
    profile = dict(tasks=["rte", "arc_easy"], num_samples=8, batch_size=4, data_dir=data_dir, disable_progress=True)
    if mode == "budget":  # every down_proj input's moments fit: summed in the profile's pass, none in prune's
        profile["moments_memory_gib"] = LARGE_BUDGET_GIB
    _step(rows, "profile", lambda: pruner.profile(**profile))
    parameters = sum(p.numel() for p in model.parameters())
    model_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    if mode in ("inplace", "budget"):  # a process of its own, this prune the first after the profile
        inplace = mode == "inplace"  # the dense model becomes the pruned one, nothing held before it
        name = "prune 20% in place (default recipe)" if inplace else "prune 20% (default recipe)"
        pruned = _step(rows, name, lambda: pruner.prune(sparsity=0.2, inplace=inplace))
        sizes = sorted(
            {pruned.config.per_layer_config[i].intermediate_size for i in range(values["num_hidden_layers"])}
        )
        ids = tokenizer(["The capital of France is"], return_tensors="pt").input_ids
        with torch.no_grad():
            _step(rows, "greedy decoding, 16 tokens", lambda: pruned.generate(ids, max_new_tokens=16, do_sample=False))
        with tempfile.TemporaryDirectory() as directory:
            _step(rows, "save_pretrained", lambda: pruner.save_pretrained(directory))
        return _result(shape, mode, family, dtype, parameters, model_gib, sizes, rows)
    default = _step(rows, "prune 20% (default recipe)", lambda: pruner.prune(sparsity=0.2))
    sizes = sorted({default.config.per_layer_config[i].intermediate_size for i in range(values["num_hidden_layers"])})
    del default  # the caller lets it go; the pruner lets go of its own reference when the next surgery starts
    paper = _step(rows, "prune 20% (paper recipe)", lambda: pruner.prune(sparsity=0.2, recipe="paper"))
    ids = tokenizer(["The capital of France is"], return_tensors="pt").input_ids
    with torch.no_grad():
        _step(rows, "greedy decoding, 16 tokens", lambda: paper.generate(ids, max_new_tokens=16, do_sample=False))
    with tempfile.TemporaryDirectory() as directory:
        _step(rows, "save_pretrained", lambda: pruner.save_pretrained(directory))
    paper = None  # let go, as the caller would
    # last: the dense model becomes the pruned one (no second copy of the cut weights); nothing can follow it. The
    # process may already hold freed memory of the steps before (the allocator keeps it): `--modes inplace` measures
    # it in a process of its own
    _step(rows, "prune 20% in place (default recipe)", lambda: pruner.prune(sparsity=0.2, inplace=True))
    return _result(shape, mode, family, dtype, parameters, model_gib, sizes, rows)


MODE_TITLES = {"inplace": " in place", "budget": f", moments_memory_gib={LARGE_BUDGET_GIB}"}


def _result(shape, mode, family, dtype, parameters, model_gib, sizes, rows) -> dict:
    return {
        "shape": shape,
        "mode": mode,
        "model_type": family,
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": parameters,
        "model_gib": model_gib,
        "default_mlp_widths": sizes,
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["sequence", "inplace", "budget"],
        default=["sequence", "inplace"],
        help="sequence: profile, the default prune, the paper's, decoding, a save, an in-place prune; inplace: "
        "profile, then the default prune in place as the first one, decoding, a save; budget: as inplace, but a "
        f"copying prune after a profile with moments_memory_gib={LARGE_BUDGET_GIB} (the moments summed while "
        "profiling)",
    )
    parser.add_argument("--output", default="benchmarks/results/random_shapes")
    args = parser.parse_args(argv)
    output = Path(args.output).with_suffix(".json")
    earlier = json.loads(output.read_text())["results"] if output.is_file() else []
    runs = [(shape, mode) for shape in args.shapes for mode in args.modes]
    # other shapes' and modes' rows are kept (rows from before `--modes` existed are the sequence's)
    results = [result for result in earlier if (result["shape"], result.get("mode", "sequence")) not in runs]
    for shape, mode in runs:
        result = run_side([sys.executable, __file__, "--side", shape, str(Path(args.data_dir).resolve()), mode])
        if result is None:
            return 1
        results.append(result)
    modes = ["sequence", "inplace", "budget"]
    results.sort(key=lambda r: (list(SHAPES).index(r["shape"]), modes.index(r.get("mode", "sequence"))))
    report = {**provenance(), "results": results}
    lines = [
        "# Profile and prune at larger Gemma shapes (random weights, CPU)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, {report['processor_count']} CPUs. Each shape in a process of its own; "
        "peak: the process's peak resident size over the step (VmHWM, reset before it); added: that peak minus the "
        "resident size before the step. Random weights: shapes, memory and time, not quality.",
    ]
    for result in results:
        lines += [
            "",
            f"## {result['shape']}{MODE_TITLES.get(result.get('mode'), '')} "
            f"({result['model_type']}, {result['parameters'] / 1e9:.2f}B parameters, "
            f"{result.get('dtype', 'float32')}, {result['model_gib']:.2f} GiB; the default's MLP widths at 20%: "
            f"{result['default_mlp_widths']})",
            "",
            "| step | seconds | peak (GiB) | added (GiB) |",
            "|---|---|---|---|",
            *[
                f"| {r['step']} | {r['seconds']:.0f} | {r['peak_gib']:.2f} | {r['added_gib']:.2f} |"
                for r in result["rows"]
            ],
        ]
    write_report(args.output, report, lines)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        print_result(side(*sys.argv[2:5]))
    else:
        sys.exit(main())
