"""The benchmark report's row names when DIET's default changes: earlier rows are renamed, never mislabelled."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import run_benchmark as rb  # noqa: E402


def test_rows_of_an_earlier_default_are_renamed():
    rows = [
        {"method": m}
        for m in ("diet", "diet_global", "diet_round1", "diet_wikitext", "diet_balanced", "diet_paper", "flap")
    ]
    earlier = "uniform_mlp_mean/round_to=64/calibration_answer=any"  # the same calibration texts
    rb.retire_earlier_default(rows, earlier)
    assert [r["method"] for r in rows] == [
        "diet_no_reconstruct",  # the earlier default is now the ablation with its options
        f"diet_global@{earlier}",  # ablations on top of the earlier default keep its label
        f"diet_round1@{earlier}",
        f"diet_wikitext@{earlier}",
        "diet_balanced",  # a named recipe and the baselines do not depend on the default
        "diet_paper",
        "flap",
    ]
    unlabelled = [{"method": "diet"}, {"method": "diet_global"}]
    rb.retire_earlier_default(unlabelled, "uniform_mlp")  # a report from before labels: no rounding then
    assert [r["method"] for r in unlabelled] == ["diet@uniform_mlp/round_to=1", "diet_global@uniform_mlp/round_to=1"]


def test_ablations_that_override_the_change_keep_their_names():
    """From the reconstruction without its BOS anchor to the anchored one: the default's rows are the `diet_no_anchor`
    ablation, and `diet_no_reconstruct` (no reconstruction, so no anchor) measured the same model on top of either."""
    rows = [{"method": m} for m in ("diet", "diet_no_reconstruct", "diet_global", "diet_no_anchor")]
    earlier = "uniform_mlp_mean_ls/round_to=64/calibration_answer=any"
    rb.retire_earlier_default(rows, earlier)
    assert [r["method"] for r in rows] == [
        "diet_no_anchor",
        "diet_no_reconstruct",
        f"diet_global@{earlier}",
        "diet_no_anchor",  # the same model on top of either
    ]
    gone = [{"method": "diet_global"}, {"method": "flap"}]
    removed = "no_such_recipe/round_to=64/calibration_answer=any"
    rb.retire_earlier_default(gone, removed)  # a recipe since removed: renamed, to be safe
    assert [r["method"] for r in gone] == [f"diet_global@{removed}", "flap"]


def test_rows_calibrated_on_other_texts_are_renamed_baselines_too():
    """Labels from before `calibration_answer` were calibrated on gold answers: every model that read those texts,
    the baselines' and the default's ablations included, is another model; those that read none keep their names."""
    methods = ("diet", "diet_no_anchor", "diet_paper", "flap", "wanda_sp", "dense", "random", "magnitude")
    rows = [{"method": m} for m in (*methods, "diet_wikitext")]
    earlier = f"{rb.DEFAULT_RECIPE}/round_to=64"  # the current recipe, calibrated on the gold answers
    rb.retire_earlier_default(rows, earlier)
    assert [r["method"] for r in rows] == [
        *(f"{m}@{earlier}" for m in methods[:5]),
        "dense",
        "random",
        "magnitude",
        "diet_wikitext",  # calibrated on WikiText-2 with the same recipe: the same model
    ]
    assert rb.DEFAULT_LABEL.endswith("/calibration_answer=any")


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
    first = report["command"]
    assert f"Commands: `{first}`  " in text  # a report from before the list
    report["commands"] = rb.resumed_commands(report, "python run_benchmark.py --resume --loto-limit 500")
    then = f"Commands: `{first}`; then `python run_benchmark.py --resume --loto-limit 500`  "
    assert then in rb._markdown(report, "plot.png")


def test_task_floors_majority_class_for_label_tasks_chance_for_the_rest():
    """BoolQ and RTE answer with the same labels every time, so their floor is the majority class; a multiple-choice
    task's right answer sits at some position the scoring never sees, so its floor is chance, not that position's
    share."""
    row = {"majority_rate": {"boolq": 0.626, "rte": 0.45, "arc_challenge": 0.274, "winogrande": 0.52}}
    assert rb._floor_rate(row, "boolq") == 0.626
    assert rb._floor_rate(row, "rte") == 0.5  # never below chance
    assert rb._floor_rate(row, "arc_challenge") == 0.25
    assert rb._floor_rate(row, "winogrande") == 0.5
    report = json.loads((Path(__file__).parents[1] / "benchmarks/results/benchmark_test500.json").read_text())
    dense = next(r for r in report["rows"] if r["method"] == "dense")
    diet = next(r for r in report["rows"] if r["method"] == "diet" and r["sparsity"] == 0.2)
    diet = json.loads(json.dumps(diet))
    diet["per_task"]["boolq"]["acc"] = diet["majority_rate"]["boolq"] - 0.01
    diet["per_task"]["arc_challenge"]["acc_norm"] = 0.26  # above chance, below the answer position's share
    diet["majority_rate"]["arc_challenge"] = 0.27
    flap = next(r for r in report["rows"] if r["method"] == "flap" and r["sparsity"] == 0.2)
    report["rows"] = [dense, diet, flap]
    line = next(x for x in rb._targets(report) if "below their floor" in x)
    assert f"boolq {diet['per_task']['boolq']['acc']:.3f} < {diet['majority_rate']['boolq']:.3f}" in line
    assert f"(dense {dense['per_task']['boolq']['acc']:.3f})" in line
    assert "arc_challenge" not in line


def test_rows_of_an_earlier_report_join_under_their_defaults_names():
    """`--render --earlier`: an earlier report's rows on the same examples join this one's, renamed by the default they
    were measured under, so the paired intervals cover them; a report that scored other examples is refused."""
    earlier = json.loads((Path(__file__).parents[1] / "benchmarks/results/benchmark_test500.json").read_text())
    dense = next(r for r in earlier["rows"] if r["method"] == "dense")
    diet = next(r for r in earlier["rows"] if (r["method"], r["sparsity"]) == ("diet", 0.2))
    report = {"half": "test", "limit": 500, "rows": [dict(dense), {**diet, "method": "diet"}]}
    rb.add_earlier_rows(report, earlier, "old.json")
    names = [(r["method"], r["sparsity"]) for r in report["rows"]]
    label = earlier["default_label"]
    assert names[:2] == [("dense", 0.0), ("diet", 0.2)] and len(names) == len(earlier["rows"]) + 1
    assert (f"diet@{label}", 0.2) in names and (f"flap@{label}", 0.2) in names and ("random", 0.2) in names
    assert ("diet_global@uniform_mlp_mean_ls/round_to=64", 0.2) in names  # already named after its default
    assert report["earlier"] == ["old.json"]
    boot = rb._paired_bootstrap(report["rows"], 200)
    assert boot[f"diet@{label}@0.2"]["difference"] == 0.0  # the same answers, copied: no difference
    other = {"half": "test", "limit": 500, "rows": [{**dense, "correct": {**dense["correct"], "rte": []}}]}
    with pytest.raises(ValueError, match="its dense row scored other examples"):
        rb.add_earlier_rows(other, earlier, "old.json")


def test_task_awareness_paired_differences_cover_the_tasks_measured_in_every_column():
    """Task alone, WikiText-2 and the seven tasks merged (the `diet` row at 20%, on the same first examples): their
    averages and paired differences over the tasks that have all three, and in the report."""
    diet = {"method": "diet", "sparsity": 0.2, "correct": {"boolq": [1, 1, 0, 0, 1], "rte": [0, 0, 0]}}
    report = {
        "limit": 4,
        "rows": [diet],
        "task_awareness": {
            "boolq": {"task_only": 1.0, "wikitext2": 0.0, "task_only_correct": [1] * 4, "wikitext2_correct": [0] * 4},
            "rte": {"task_only": 1.0, "wikitext2": 1.0, "task_only_correct": [1] * 3, "wikitext2_correct": [1] * 3},
            "hellaswag": {"task_only": 1.0, "wikitext2": 1.0},  # no per-example results kept: left out
        },
    }
    boot = rb._task_awareness_bootstrap(report, 200)
    assert boot["tasks"] == ["boolq", "rte"]
    assert boot["task_only - wikitext2"]["difference"] == pytest.approx((1.0 + 0.0) / 2)
    # merged: boolq's first four of the diet row (0.5), rte's three (0.0)
    assert boot["merged - wikitext2"]["difference"] == pytest.approx((0.5 - 0.0 + 0.0 - 1.0) / 2)
    assert boot["task_only - merged"]["difference"] == pytest.approx((0.5 + 1.0) / 2)
    low, high = boot["task_only - wikitext2"]["ci95"]
    assert low <= 0.5 <= high
    report["task_awareness_bootstrap"] = boot
    text = "\n".join(rb._task_awareness_lines(report))
    assert "| boolq | 1.000 | 0.000 | 0.500 |" in text
    assert "Average over the 2 tasks: that task alone 1.000, WikiText-2 0.500, seven tasks merged 0.250." in text
    assert "that task alone minus WikiText-2 +0.500" in text


def test_calibration_seeds_never_mix_calibration_answers(tmp_path):
    """Rows profiled on gold answers (reports from before the option record none) are not resumed with drawn ones,
    and the seed-0 rows must come from a benchmark report calibrated on the same answers."""
    import calibration_seeds

    gold = tmp_path / "seeds.json"
    gold.write_text(json.dumps({"rows": {"1/uniform_mlp_mean_ls_bos/0.2": {}}}))
    with pytest.raises(SystemExit, match="calibrated on 'gold' answers"):
        calibration_seeds.main(["--data-dir", str(tmp_path), "--output", str(gold), "--calibration-answer", "any"])
    results = Path(__file__).parents[1] / "benchmarks/results"
    with pytest.raises(SystemExit, match="calibrated on 'gold' answers, not 'any'"):
        calibration_seeds._reference_rows(results / "benchmark_test500.json", [0.2], "any")
    drawn = calibration_seeds._reference_rows(results / "benchmark_test500_any_answer.json", [0.2], "any")
    assert sorted(drawn) == ["0/uniform_mlp_mean_ls/0.2", "0/uniform_mlp_mean_ls_bos/0.2"]
    assert rb.label_answer("uniform_mlp_mean_ls_bos/round_to=64") == "gold"


def test_calibration_seeds_report_keeps_every_command_that_made_its_rows():
    """A resumed report lists each command once, in order, and takes over the single command of older reports."""
    import _side
    import calibration_seeds

    older = {"command": "python calibration_seeds.py --seeds 1 2", "rows": {}}
    commands = _side.resumed_commands(older, "python calibration_seeds.py --seeds 3 4")
    assert commands == ["python calibration_seeds.py --seeds 1 2", "python calibration_seeds.py --seeds 3 4"]
    assert "command" not in older
    again = _side.resumed_commands({"commands": commands}, "python calibration_seeds.py --seeds 1 2")
    assert again == commands
    report = {"commands": commands, "default": "a", "predecessor": "b", "limit": 500, "rows": {}}
    assert "`python calibration_seeds.py --seeds 1 2`; then `python calibration_seeds.py --seeds 3 4`." in (
        calibration_seeds.render(report)
    )


def test_leave_one_task_out_reports_averages_with_errors_and_paired_differences_from_diet():
    """Each method's held-out average with its standard error and its paired difference from DIET's, over the held-out
    tasks where both kept per-example results; the target line carries DIET minus FLAP's interval."""
    report = {
        "loto_limit": 4,
        "leave_one_task_out": {
            "boolq": {"diet": 0.75, "diet_correct": [1, 1, 1, 0], "flap": 0.25, "flap_correct": [0, 0, 1, 0]},
            "rte": {"diet": 0.5, "diet_correct": [1, 0, 1, 0], "flap": 0.5, "flap_correct": [1, 0, 1, 0]},
        },
    }
    boot = rb._loto_bootstrap(report, 200)
    assert boot["diet"]["average"] == pytest.approx(0.625) and "minus_diet" not in boot["diet"]
    assert boot["flap"]["tasks"] == ["boolq", "rte"]
    assert boot["flap"]["minus_diet"]["difference"] == pytest.approx((0.25 - 0.75 + 0.0) / 2)
    expected_se = math.sqrt(0.25 * 0.75 / 3 + 0.5 * 0.5 / 3) / 2
    assert boot["flap"]["average_stderr"] == pytest.approx(expected_se)
    low, high = boot["flap"]["minus_diet"]["ci95"]
    assert low <= -0.25 <= high
    report["loto_bootstrap"] = boot
    assert f"| flap | 2 | 0.375 ± {expected_se:.3f} | -0.250 [{low:+.3f}, {high:+.3f}] |" in rb._loto_lines(boot)
    target = "\n".join(rb._targets({"rows": [], **report}))
    assert f"DIET 0.625, FLAP 0.375, DIET minus FLAP +0.250 [{-high:+.3f}, {-low:+.3f}] (met" in target
    # a row from before per-example results were kept takes no part in the intervals
    report["leave_one_task_out"]["hellaswag"] = {"diet": 0.3, "flap": 0.2}
    assert rb._loto_bootstrap(report, 200)["flap"]["tasks"] == ["boolq", "rte"]
    assert "DIET minus FLAP" not in "\n".join(rb._targets({"rows": [], **report}))


def test_leave_one_task_out_rows_of_another_limit_are_not_resumed(tmp_path, capsys):
    """Resuming a report whose leave-one-task-out rows were scored on another number of examples stops before any
    model is loaded, naming both limits."""
    output = tmp_path / "report"
    stored = {"loto_limit": 60, "leave_one_task_out": {"rte": {"diet": 0.5}}}
    output.with_suffix(".json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit):
        rb.main(["--data-dir", str(tmp_path), "--resume", "--loto-limit", "500", "--output", str(output)])
    error = capsys.readouterr().err
    assert "--loto-limit 500" in error and "rows of 60 examples per task" in error


def test_leave_one_task_out_columns_take_named_ablations_of_the_default(tmp_path, capsys):
    """The default, the ablations asked for, then every baseline and FLAP without compensation; an unknown ablation
    is refused by name before any model loads."""
    assert rb._loto_columns([]) == ["diet", *rb.BASELINES, "flap_no_bias"]
    assert rb._loto_columns(["diet_no_anchor"])[:2] == ["diet", "diet_no_anchor"]
    with pytest.raises(SystemExit):
        rb.main(["--data-dir", str(tmp_path), "--loto-limit", "5", "--loto-ablations", "diet_everything"])
    assert "--loto-ablations: invalid choice: 'diet_everything'" in capsys.readouterr().err


def test_held_out_columns_against_the_same_methods_calibrated_on_every_task():
    """What holding a task out of calibration costs each method: its leave-one-task-out column minus its 20% row of a
    report calibrated on all seven, over the same first examples; refused when the reports scored other examples or
    measured DIET under another default."""
    dense = {"method": "dense", "sparsity": 0.0, "correct": {"boolq": [1, 0, 1]}}
    report = {
        "half": "test",
        "limit": 3,
        "rows": [dense],
        "loto_recipe": rb.DEFAULT_LABEL,
        "leave_one_task_out": {
            "boolq": {"diet": 0.5, "diet_correct": [1, 0], "flap": 0.0, "flap_correct": [0, 0], "random": 1.0},
            "rte": {"diet": 1.0, "diet_correct": [1, 1]},
        },
    }
    calibrated = {
        "half": "test",
        "limit": 3,
        "default_label": rb.DEFAULT_LABEL,
        "rows": [
            dense,
            {"method": "diet", "sparsity": 0.2, "correct": {"boolq": [1, 1, 0], "rte": [0, 1]}},
            {"method": "diet", "sparsity": 0.4, "correct": {"boolq": [0, 0, 0], "rte": [0, 0]}},
            {"method": "flap", "sparsity": 0.2, "correct": {"boolq": [1, 1, 1]}},
        ],
    }
    comparison = rb.loto_vs_calibrated(report, calibrated, "all7.json", 200)
    assert list(comparison["methods"]) == ["diet", "flap"]  # random kept no per-example results
    assert comparison["methods"]["diet"]["difference"] == pytest.approx(((0.5 - 1.0) + (1.0 - 0.5)) / 2)
    assert comparison["methods"]["flap"]["difference"] == pytest.approx(-1.0)
    assert comparison["methods"]["flap"]["tasks"] == ["boolq"]
    lines = rb._loto_vs_calibrated_lines(comparison)
    assert "| flap | 1 | -1.000 [-1.000, -1.000] |" in lines and "`all7.json`" in lines[0]
    with pytest.raises(ValueError, match="measured under the default"):
        rb.loto_vs_calibrated(report, {**calibrated, "default_label": "uniform_mlp"}, "old.json")
    other = {**calibrated, "rows": [{**dense, "correct": {"boolq": [0, 0, 1]}}]}
    with pytest.raises(ValueError, match="its dense row scored other examples"):
        rb.loto_vs_calibrated(report, other, "other.json")


def test_a_leave_one_task_out_run_plots_its_averages(tmp_path):
    """A report with no pruned row of the main table plots the held-out averages, not an empty sparsity curve."""
    dense = {"method": "dense", "sparsity": 0.0, "average_paper_tasks": 0.5, "average_stderr": 0.01}
    boot = {"diet": {"average": 0.46, "average_stderr": 0.01}, "flap": {"average": 0.41, "average_stderr": 0.01}}
    report = {"rows": [dense], "loto_bootstrap": boot, "loto_limit": 500, "limit": 500}
    assert rb._loto_only(report)
    rb._plot(report, tmp_path / "loto.png")
    assert (tmp_path / "loto.png").stat().st_size > 0
    assert not rb._loto_only({**report, "rows": [dense, {**dense, "method": "diet", "sparsity": 0.2}]})
    assert not rb._loto_only({**report, "loto_bootstrap": {}})


def test_boolq_full_half_rows_on_other_calibration_answers_never_stand_in_for_gold_ones():
    import boolq_full_half as bq

    from diet_hf.recipes import DEFAULT_RECIPE
    from diet_hf.tasks.registry import DEFAULT_CALIBRATION_ANSWER

    assert DEFAULT_CALIBRATION_ANSWER != "gold"  # otherwise this test checks nothing about the default's mark
    gold, drawn = bq._row_name(0.2, DEFAULT_RECIPE), bq._row_name(0.2, DEFAULT_RECIPE, DEFAULT_CALIBRATION_ANSWER)
    assert gold == f"DIET 20% ({DEFAULT_RECIPE})"  # the name every row had before the option: a rerun skips it
    assert gold != drawn and DEFAULT_CALIBRATION_ANSWER in drawn
    summary = bq.summarize([{"acc": 1, "label": 1}, {"acc": 1, "label": 0}, {"acc": 0, "label": 1}])
    results = {
        "rows": {
            "dense": {"recipe": None, **summary},
            gold: {"recipe": DEFAULT_RECIPE, **summary},  # saved before the option: no answer recorded
            drawn: {"recipe": DEFAULT_RECIPE, "calibration_answer": DEFAULT_CALIBRATION_ANSWER, **summary},
        }
    }
    marked = [line for line in bq.render(results).splitlines() if "the default)" in line]
    assert len(marked) == 1 and DEFAULT_CALIBRATION_ANSWER in marked[0]
