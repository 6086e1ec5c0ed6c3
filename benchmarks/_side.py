"""What the benchmarks share: running a measurement in a process of its own and reading the one result it prints,
the provenance every report starts with, and the prompts the deployment benchmarks compare on."""

import json
import os
import platform
import subprocess
import sys

_PREFIX = "RESULT "
# the open prompts whose logits and greedy continuations the deployment benchmarks compare (ONNX Runtime, int8
# quantization, llama.cpp) between a runtime and transformers, or a quantized model and its float one
PROMPTS = [
    "The capital of France is",
    "Question: Is the sky blue on a clear day?\nAnswer:",
    "A recipe for pancakes starts with",
    "In 1969, the first humans",
]


def print_result(result: dict) -> None:
    """Prints a side process's result where `run_side` finds it."""
    print(_PREFIX + json.dumps(result), flush=True)


def run_side(command: list[str]) -> dict | None:
    """Runs `command` and returns the last result it printed; `None` (its stderr's tail printed) if it failed."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_PREFIX)]
    if done.returncode != 0 or not lines:
        print(done.stderr[-4000:], file=sys.stderr)
        return None
    return json.loads(lines[-1][len(_PREFIX) :])


def provenance() -> dict:
    """The command, machine and CPU count a report records."""
    return {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": platform.platform(),
        "processor_count": os.cpu_count(),
    }


def resumed_commands(report: dict, command: str) -> list[str]:
    """The commands that made a resumed report's rows, in order, with `command` last unless it is there already
    (reports from before the list hold one `command`, which is taken over and dropped)."""
    commands = report.pop("commands", None) or ([report.pop("command")] if "command" in report else [])
    return commands if command in commands else [*commands, command]


def commands_text(report: dict) -> str:
    """The commands that made a report's rows as Markdown, "`a`; then `b`" (older reports hold one `command`)."""
    return "; then ".join(f"`{c}`" for c in report.get("commands") or [report["command"]])


def answer_suffix(answer: str) -> str:
    """What a row name adds for the answer its calibration texts end in: nothing for gold (every row from before
    `calibration_answer`, whose names stay), ", any answers" and the like otherwise."""
    return "" if answer == "gold" else f", {answer} answers"


def interval(comparison: dict | None, negate: bool = False) -> str:
    """A paired comparison as "+0.049 [+0.029, +0.069]" (its difference and 95% interval; `negate`: the other way
    round), or "–" when there is none."""
    if not comparison:
        return "–"
    sign = -1 if negate else 1
    low, high = sorted(sign * bound for bound in comparison["ci95"])
    return f"{sign * comparison['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def task_average(correct: dict) -> float:
    """The accuracy averaged over tasks, each weighted equally, of a `{task: 0/1 list}` result (`correct_by_task`)."""
    return sum(sum(v) / len(v) for v in correct.values()) / len(correct)


def difference_of_differences(a: dict, b: dict, c: dict, d: dict, resamples: int = 2000) -> dict:
    """(a - b) - (c - d) of `task_average`, four `{task: 0/1 list}` results on the same examples (e.g. the pruned
    model quantized and not, the dense model quantized and not), with the 95% interval of a bootstrap that draws each
    task's examples once for all four, per task apart with tasks weighted equally: `paired_bootstrap`'s resampling
    (`_task_bootstrap`) on the per-example difference of differences."""
    import torch

    from diet_hf.evaluation.statistics import _task_bootstrap

    per_example = {}
    for task in a:
        values = [torch.tensor(x[task], dtype=torch.float64) for x in (a, b, c, d)]
        per_example[task] = (values[0] - values[1]) - (values[2] - values[3])
    return _task_bootstrap(per_example, resamples=resamples)


def write_report(output, report: dict, markdown: list[str]) -> None:
    """Writes `output`.json (the report) and `output`.md (its lines), and prints the Markdown."""
    from pathlib import Path

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    output.with_suffix(".md").write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))
