"""The benchmark report's row names when DIET's default changes: earlier rows are renamed, never mislabelled."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import run_benchmark as rb  # noqa: E402


def test_rows_of_an_earlier_default_are_renamed():
    rows = [
        {"method": m}
        for m in ("diet", "diet_global", "diet_round1", "diet_wikitext", "diet_balanced", "diet_paper", "flap")
    ]
    rb.retire_earlier_default(rows, "uniform_mlp_mean/round_to=64")
    assert [r["method"] for r in rows] == [
        "diet_no_reconstruct",  # the earlier default is now the ablation with its options
        "diet_global@uniform_mlp_mean/round_to=64",  # ablations on top of the earlier default keep its label
        "diet_round1@uniform_mlp_mean/round_to=64",
        "diet_wikitext@uniform_mlp_mean/round_to=64",
        "diet_balanced",  # a named recipe and the baselines do not depend on the default
        "diet_paper",
        "flap",
    ]
    unlabelled = [{"method": "diet"}, {"method": "diet_global"}]
    rb.retire_earlier_default(unlabelled, "uniform_mlp")  # a report from before labels: no rounding then
    assert [r["method"] for r in unlabelled] == ["diet@uniform_mlp/round_to=1", "diet_global@uniform_mlp/round_to=1"]


def test_rows_of_the_current_default_keep_their_names():
    rows = [{"method": m} for m in ("diet", "diet_global", "diet_no_reconstruct")]
    rb.retire_earlier_default(rows, rb.DEFAULT_LABEL)
    rb.retire_earlier_default(rows, None)
    assert [r["method"] for r in rows] == ["diet", "diet_global", "diet_no_reconstruct"]


def test_rows_without_timings_render_as_not_measured():
    """`--speed-repeats 0` (a run beside other work) stores no timings; the report says so instead of a number."""
    report = json.loads((Path(__file__).parents[1] / "benchmarks/results/benchmark_test500.json").read_text())
    untimed = dict(report["rows"][-1], **dict.fromkeys(rb.SPEED_FIELDS))
    report["rows"] = [report["rows"][0], untimed]
    text = rb._markdown(report, "plot.png")
    assert f"| {untimed['method']} | {untimed['sparsity']:.0%} | not measured | | | |" in text
    assert "| dense | 0% | not measured" not in text
