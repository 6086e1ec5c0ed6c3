"""bfloat16 against float32 for healing on this machine: the LM head's matmul, the teacher's pass, training steps and
the held-out KL they reach, the peak memory of a separate `diet-hf heal` per precision and batch shape, and of the
teacher's pass alone over 200 and 400 batches.

    python benchmarks/heal_precision.py --data-dir ../shared/data --output benchmarks/results/heal_precision

The figures behind the healing defaults (`bf16` on where bfloat16 matmuls are fast; batch 2 x 2 accumulated), on the
real Gemma 3 270M pruned by DIET's default at 20%. Run it with nothing else on the CPUs: it times things. Every
measurement is a row of the results, saved as it finishes; `--resume` keeps the rows already saved.
"""

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heal_benchmark import HEAL_SOURCES  # noqa: E402
from width_alignment import timed  # noqa: E402

from diet_hf import DietPruner  # noqa: E402
from diet_hf._devices import fast_bf16  # noqa: E402
from diet_hf.healing import (  # noqa: E402
    HealingConfig,
    heal,
    healing_texts,
    limit_heap_retention,
    pack_sources,
    scored_positions,
)
from diet_hf.healing.teacher import _precompute  # noqa: E402
from diet_hf.hub import save_pruned_model  # noqa: E402
from diet_hf.real_model import default_cache_dir, load_gemma3_270m  # noqa: E402
from diet_hf.tasks import PAPER_TASKS  # noqa: E402


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, repeats))


def head_matmul(dense) -> dict:
    """One 64-position chunk through the 262k x 640 LM head, float32 against a bfloat16 copy of the weight."""
    weight = dense.lm_head.weight.detach()
    x = torch.randn(64, weight.shape[1])
    fp32 = _median_seconds(lambda: x @ weight.T)
    weight16, x16 = weight.to(torch.bfloat16), x.to(torch.bfloat16)
    bf16 = _median_seconds(lambda: x16 @ weight16.T)
    return {"float32_ms": 1000 * fp32, "bfloat16_ms": 1000 * bf16, "speedup": fp32 / bf16}


def teacher_pass(dense, rows: torch.Tensor, bf16: bool, stride: int = 4) -> dict:
    """Top-64 teacher targets at every `stride`-th position of `rows`, as healing's pass makes them: tokens/s."""
    config = HealingConfig(bf16=bf16, top_k=64, chunk_size=64, position_stride=stride)
    positions = scored_positions(rows.shape[0], rows.shape[1], stride)
    seconds = _median_seconds(lambda: _precompute(lambda: dense, rows, config, None, positions), repeats=2)
    return {"tokens": rows.numel(), "seconds": seconds, "tokens_per_second": rows.numel() / seconds}


def training_run(pruner, dense, tokenizer, data, bf16: bool, steps: int, work_dir: Path) -> dict:
    """`heal` of a fresh 20% model for `steps` steps (guard off: the KL after the last step): seconds per step."""
    config = HealingConfig(bf16=bf16, max_tokens=steps * 1024, eval_steps=steps, save_steps=10_000, guard=False)
    shutil.rmtree(work_dir, ignore_errors=True)
    record = heal(pruner.prune(sparsity=0.2), dense, tokenizer, data, config=config, work_dir=work_dir)
    record = record.config.pruning["healing"]
    shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "steps": record["steps"],
        "seconds_per_step": record["train_seconds"] / record["steps"],
        "validation_kl_before": record["validation_kl_before"],
        "validation_kl_after": record["validation_kl_after"],
    }


# Runs the CLI and then reports the process's own peak resident size (VmHWM of its memory map, which starts fresh at
# exec). The rusage that wait4 returns for a child is no measure here: Linux carries the high-water mark of the memory
# map a process had before exec into it, and Python starts children with vfork, so a child would report this
# benchmark's own peak (as /usr/bin/time's child would not).
_PEAK_WRAPPER = """
import sys
from pathlib import Path
from diet_hf.cli import main
code = main(sys.argv[1:])
status = Path("/proc/self/status").read_text().splitlines()
print("VmHWM_KiB", next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")), file=sys.stderr)
sys.exit(code)
"""


SHORT_RUN_TOKENS = 24_576  # 24 steps of 2 x 2 x 256 tokens: the short `diet-hf heal` whose peak is measured


def cli_peak_memory(
    pruned_dir: Path, dense_dir: Path, data_dir: str, flags: list[str], work: Path, max_tokens: int = SHORT_RUN_TOKENS
) -> dict:
    """Peak resident memory of `diet-hf heal` in a process of its own, over `max_tokens` training tokens."""
    shutil.rmtree(work, ignore_errors=True)
    command = [
        *(sys.executable, "-c", _PEAK_WRAPPER, "heal", str(pruned_dir), "--teacher", str(dense_dir)),
        *("--output", str(work / "out"), "--data-dir", data_dir, "--max-tokens", str(max_tokens), "--quiet", *flags),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    peaks = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("VmHWM_KiB ")]
    if done.returncode != 0 or not peaks:
        raise RuntimeError(f"{' '.join(command[3:])} failed:\n{done.stderr[-2000:]}")
    peak = peaks[-1] * 1024
    return {"flags": flags, "peak_bytes": peak, "peak_gb": peak / 1e9, "peak_gib": peak / 2**30, "seconds": seconds}


# The teacher's pass alone over many batches, in a process of its own: its peak resident size over the pass (VmHWM
# reset just before it), with and without healing's per-batch `release_memory`. Before the fix in 67d3810 this grew
# with the number of batches (a scratch script on the code before it: 3.97 GiB over these 200 batches).
_PASS_MEMORY = """
import sys, time
from pathlib import Path
from diet_hf._devices import fast_bf16
from diet_hf.healing import HealingConfig, healing_texts, pack_texts, scored_positions
from diet_hf.healing.teacher import _precompute
from diet_hf.real_model import load_gemma3_270m
data_dir, num_rows, release = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
dense, tokenizer, _ = load_gemma3_270m()
rows = pack_texts(healing_texts(["wikitext2"], data_dir=data_dir)[0], tokenizer, 256)[:num_rows]
config = HealingConfig(release_memory=release, bf16=fast_bf16("cpu"))  # the bf16 default, resolved as `heal` does
positions = scored_positions(rows.shape[0], rows.shape[1], config.position_stride, seed=config.seed)
status = lambda: Path("/proc/self/status").read_text().splitlines()
before = next(int(line.split()[1]) for line in status() if line.startswith("VmRSS:"))
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
start = time.perf_counter()
_precompute(lambda: dense, rows, config, None, positions)
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in status() if line.startswith("VmHWM:"))
print("PASS", rows.numel(), rows.shape[0], seconds, before, peak, config.bf16)
"""


def teacher_pass_memory(data_dir: str, release: bool, num_rows: int = 400) -> dict:
    """Peak resident size of the teacher's pass over `num_rows` packed WikiText-2 validation rows of 256 tokens
    (healing's defaults otherwise: batch 2, top-64 at every 4th position), in a new process."""
    command = [sys.executable, "-c", _PASS_MEMORY, data_dir, str(num_rows), "1" if release else "0"]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("PASS ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the teacher's pass failed:\n{done.stderr[-2000:]}")
    tokens, rows, seconds, before, peak = (float(v) for v in lines[-1][1:6])
    return {
        "release_memory": release,
        "rows": int(rows),
        "batches": int(rows) // 2,
        "tokens": int(tokens),
        "bf16": lines[-1][6] == "True",
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "rss_before_gib": before / 2**20,
        "peak_gib": peak / 2**20,
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output", default="benchmarks/results/heal_precision")
    parser.add_argument("--work-dir", default="/tmp/diet_heal_precision")
    parser.add_argument("--steps", type=int, nargs="+", default=[6, 24], help="training lengths compared")
    parser.add_argument("--resume", action="store_true", help="keep the rows already saved")
    args = parser.parse_args(argv)
    output, work = Path(args.output).with_suffix(".json"), Path(args.work_dir)
    results = json.loads(output.read_text()) if args.resume and output.is_file() else {}
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "fast_bf16": fast_bf16("cpu"),
        "torch": torch.__version__,
    }
    results.setdefault("machine", machine)  # the first run's; a row added by a later run records its own

    def save(name, row):
        results[name] = row if machine == results["machine"] else {**row, "machine": machine}
        print(name, row, flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        output.with_suffix(".md").write_text(render(results))

    dense, tokenizer, _ = load_gemma3_270m()
    if "head_matmul" not in results:
        save("head_matmul", head_matmul(dense))
    texts = {source: healing_texts([source], data_dir=args.data_dir)[0] for source in HEAL_SOURCES}
    rows = pack_sources(texts, tokenizer, 256)[:16]
    for bf16 in (False, True):
        name = f"teacher_pass_{'bf16' if bf16 else 'fp32'}"
        if name not in results:
            save(name, teacher_pass(dense, rows, bf16))
    if "teacher_pass_bf16_mmap_threshold" not in results:  # what healing's `release_memory` costs this pass
        limit_heap_retention()
        save("teacher_pass_bf16_mmap_threshold", teacher_pass(dense, rows, True))
    pruner = DietPruner(dense, tokenizer, model_id="google/gemma-3-270m")
    pruned_dir = work / "pruned20"
    needed = [f"train_{p}_{s}" for s in args.steps for p in ("fp32", "bf16")]
    memory = {  # row: the command's flags, its training tokens
        "memory_bf16_2x2": ([], SHORT_RUN_TOKENS),
        "memory_fp32_2x2": (["--no-bf16"], SHORT_RUN_TOKENS),
        "memory_bf16_4x1": (["--batch-size", "4", "--gradient-accumulation-steps", "1"], SHORT_RUN_TOKENS),
        "memory_default_length": ([], HealingConfig.max_tokens),
    }
    if any(name not in results for name in needed) or not (pruned_dir / "config.json").is_file():
        pruner.profile(PAPER_TASKS, num_samples=100, data_dir=args.data_dir, channel_stats=True, disable_progress=True)
    for steps in args.steps:
        for bf16 in (False, True):
            name = f"train_{'bf16' if bf16 else 'fp32'}_{steps}"
            if name not in results:
                save(name, training_run(pruner, dense, tokenizer, texts, bf16, steps, work / "heal"))
    for release, num_rows in ((True, 400), (False, 400), (False, 800), (True, 800)):
        name = f"teacher_pass_memory_{'release' if release else 'no_release'}_{num_rows // 2}"
        if name not in results:
            save(name, teacher_pass_memory(args.data_dir, release, num_rows))
    if any(name not in results for name in memory):
        if not (pruned_dir / "config.json").is_file():
            student = pruner.prune(sparsity=0.2)
            save_pruned_model(student, pruned_dir, tokenizer=tokenizer, plan=getattr(student, "diet_plan", None))
            del student
        del pruner, dense
        for name, (flags, tokens) in memory.items():
            if name not in results:
                row = cli_peak_memory(pruned_dir, default_cache_dir(), args.data_dir, flags, work / "cli", tokens)
                save(name, {**row, "max_tokens": tokens})
    shutil.rmtree(work, ignore_errors=True)
    return 0


def render(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Healing in bfloat16 against float32 (Gemma 3 270M, DIET's default at 20%)",
        "",
        f"`python benchmarks/heal_precision.py`; CPU: {machine['processor']}, {machine['threads']} threads, "
        f"fast bfloat16 (AVX512-BF16 or AMX): {machine['fast_bf16']}; torch {machine['torch']}. The head: median of 5 "
        "runs; the teacher's pass: median of 2; the healing runs: one each (a fresh 20% model per run).",
        "",
    ]
    head = results.get("head_matmul")
    if head:
        lines.append(
            f"- LM head, one 64-position chunk (64 x 640 by 640 x 262,144): float32 {head['float32_ms']:.1f} ms, "
            f"bfloat16 {head['bfloat16_ms']:.1f} ms ({head['speedup']:.1f}x)."
        )
    passes = [results.get(f"teacher_pass_{p}") for p in ("fp32", "bf16")]
    if all(passes):
        lines.append(
            f"- The teacher's pass (top-64 at every 4th position, {passes[0]['tokens']:,} tokens in 2-sequence "
            f"batches): {passes[0]['tokens_per_second']:.0f} tokens/s in float32, "
            f"{passes[1]['tokens_per_second']:.0f} in bfloat16."
        )
    mapped = results.get("teacher_pass_bf16_mmap_threshold")
    if mapped:
        lines.append(
            f"- The same bfloat16 pass after glibc's mmap threshold is set to 1 MiB (what `release_memory` does for "
            f"training): {mapped['tokens_per_second']:.0f} tokens/s (the setting is process-wide, so it is measured "
            "last; healing sets it after the teacher's pass)."
        )
    for name, row in results.items():
        if name.startswith("teacher_pass_memory_"):
            release = row["release_memory"]
            lines.append(
                f"- The teacher's pass alone over {row['batches']} batches ({row['tokens']:,} tokens of WikiText-2 "
                f"validation, {'bfloat16' if row['bf16'] else 'float32'}) in a process of its own, "
                f"`release_memory={release}`: peak {row['peak_gib']:.2f} GiB resident (from "
                f"{row['rss_before_gib']:.2f} with the model loaded), {row['tokens_per_second']:.0f} tokens/s."
            )
    lines += [
        "",
        "| healing run (steps of 2 x 2 x 256 tokens, guard off) | seconds per step | held-out KL before → after |",
        "|---|---|---|",
    ]
    for name, row in results.items():
        if name.startswith("train_"):
            _, precision, steps = name.split("_")
            lines.append(
                f"| {precision}, {steps} steps | {row['seconds_per_step']:.2f} | "
                f"{row['validation_kl_before']:.3f} → {row['validation_kl_after']:.3f} |"
            )
    lines += [
        "",
        "Peak resident memory of a separate `diet-hf heal` of the saved 20% model (24 steps, 24,576 tokens, unless "
        "the row says the command's default length; the process's own VmHWM at its end; the defaults of the day: "
        "top-64 teacher log-probs for the 24-step rows, top-512 for the default-length row), against the target of "
        "3x the dense model's 1.07 GB (3.22 GB):",
        "",
        "| flags | tokens | machine | peak GB (GiB) | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, row in results.items():
        if name.startswith("memory_"):
            where = row.get("machine", machine)
            flags = " ".join(row["flags"]) or "(defaults)"
            tokens = f"{row.get('max_tokens', SHORT_RUN_TOKENS):,}"  # rows from before it was recorded: 24 steps
            tokens += " (the command's default)" if name == "memory_default_length" else ""
            precision = "bfloat16 default" if where["fast_bf16"] else "no fast bfloat16: float32 default"
            lines.append(
                f"| {flags} | {tokens} | {where.get('cpu', where['processor'])}, {precision} | "
                f"{row['peak_gb']:.2f} ({row['peak_gib']:.2f}) | {row['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
