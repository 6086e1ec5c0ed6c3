"""Why DIET's default rounds MLP widths: the time of one Gemma 3 270M MLP block at the widths pruning leaves.

    python benchmarks/width_alignment.py --output benchmarks/results/width_alignment

One MLP block of Gemma 3 270M's shape (hidden 640; gate and up projections to the width, GELU-tanh gate, down
projection back) on 1024 tokens (batch 4 x 256, the prefill of `run_benchmark.py`), float32, in this process's torch
threads; random weights (the time of a matrix product does not depend on the values). For every width: the median of
`--rounds` x `--repeats` timed runs after warm-up, the widths taken in turn in every round, and the time per kept
channel relative to the dense width's. The widths are the dense 2048, the kept widths of DIET's default without
rounding at 10/20/30/40% (1758-1759, 1468-1469, 1178, 888), the multiples of 64 near them that rounding keeps, and a
few others. Run it on an otherwise idle machine.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional

HIDDEN = 640  # Gemma 3 270M hidden size; its dense MLP width is 2048
WIDTHS = [2048, 1792, 1759, 1758, 1744, 1728, 1664, 1638, 1536, 1472, 1469, 1468, 1408, 1229, 1216, 1178, 1152]
WIDTHS += [896, 888, 832]


def mlp_block(width: int, tokens: torch.Tensor):
    generator = torch.Generator().manual_seed(width)
    gate = torch.randn(width, HIDDEN, generator=generator) * 0.02
    up = torch.randn(width, HIDDEN, generator=generator) * 0.02
    down = torch.randn(HIDDEN, width, generator=generator) * 0.02

    def block():
        hidden = functional.gelu(functional.linear(tokens, gate), approximate="tanh") * functional.linear(tokens, up)
        return functional.linear(hidden, down)

    return block


def timed(block, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block()
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per width and round")
    parser.add_argument("--output", default="benchmarks/results/width_alignment")
    args = parser.parse_args(argv)
    tokens = torch.randn(args.tokens, HIDDEN, generator=torch.Generator().manual_seed(0))
    blocks = {width: mlp_block(width, tokens) for width in WIDTHS}
    times = {width: [] for width in WIDTHS}
    with torch.inference_mode():
        for block in blocks.values():
            timed(block, 3)  # warm-up
        for _ in range(args.rounds):  # the widths in turn, so a slow spell of the machine hits all of them alike
            for width, block in blocks.items():
                times[width] += timed(block, args.repeats)
    rows = [{"width": width, "seconds": statistics.median(values)} for width, values in times.items()]
    dense = rows[0]["seconds"] / rows[0]["width"]
    for row in rows:
        row["per_channel_vs_dense"] = row["seconds"] / row["width"] / dense
    report = {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "tokens": args.tokens,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "rows": rows,
    }
    output = Path(args.output)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# MLP block time against kept width (Gemma 3 270M shape, float32)",
        "",
        f"`python benchmarks/width_alignment.py`: {args.tokens} tokens x hidden {HIDDEN}, gate + up + GELU + down, "
        f"median of {args.rounds} rounds x {args.repeats} runs (the widths in turn each round); "
        f"{report['machine']}, {report['torch_threads']} torch threads, torch "
        f"{report['torch']}. Per channel: time / width, relative to the dense width's (1.00 = as fast per channel as "
        "dense; above 1 = the pruned width wastes part of its saving).",
        "",
        "| width | width mod 64 | ms | per channel vs dense |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['width']} | {row['width'] % 64} | {row['seconds'] * 1e3:.1f} "
            f"| {row['per_channel_vs_dense']:.2f} |"
        )
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
