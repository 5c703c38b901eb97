"""convtrain-report on a sweep where one job's metrics.json is damaged: that job's row says
what is wrong with the file, every other job is reported as usual, no traceback."""
from __future__ import annotations

import csv

import pytest

from convtrain.app.report import main
from tests.app.test_report import make_job, sweep  # noqa: F401 - the fixture


@pytest.mark.parametrize("content, problem", [
    (b"\x00\x9f\x92\x96\xff binary", "metrics.json is not text (a binary or damaged file)"),
    (b'{"val_accuracy": 0.9, "val_lo', "metrics.json is not valid JSON (line 1, column 23: "
                                        "Unterminated string starting at"),
    (b"", "metrics.json is not valid JSON (line 1, column 1: Expecting value)"),
    (b"not json", "metrics.json is not valid JSON (line 1, column 1: Expecting value)"),
    (b"[0.9, 0.8]", "metrics.json holds a list, not an object of metrics"),
    (b"0.97", "metrics.json holds a number, not an object of metrics"),
    (b'"ok"', "metrics.json holds a string, not an object of metrics"),
    (b"null", "metrics.json holds null, not an object of metrics"),
])
def test_a_damaged_metrics_file_is_its_jobs_row(sweep, capsys, content, problem):
    (sweep / "1" / "metrics.json").write_bytes(content)
    assert main([str(sweep)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err == ""
    rows = {r["run"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert rows["1"]["status"] == "unreadable"
    assert rows["1"]["error"].startswith(problem), rows["1"]["error"]
    assert rows["1"]["model.layers.conv1.filters"] == "8" and rows["1"]["val_accuracy"] == ""
    assert rows["0"]["status"] == "ok" and rows["0"]["val_accuracy"] == "0.91"
    # the damaged job sorts last, beside the job that has no val_accuracy
    assert [r["run"] for r in csv.DictReader((sweep / "report.csv").open())][0] == "0"
    line = next(line for line in captured.out.splitlines() if line.startswith("| 1 |"))
    assert "| unreadable |" in line and problem.split(" (")[0] in line


def test_a_failed_job_with_a_damaged_metrics_file_keeps_both_facts(sweep):
    (sweep / "1" / "metrics.json").write_bytes(b"[1]")
    (sweep / "1" / "error.txt").write_text("training diverged: loss is nan\n")
    assert main([str(sweep)]) == 0
    rows = {r["run"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert rows["1"]["status"] == "failed"
    assert rows["1"]["error"] == ("training diverged: loss is nan; metrics.json holds a list, "
                                  "not an object of metrics")


def test_metrics_keys_cannot_replace_the_reports_own_columns(sweep):
    make_job(sweep, 3, ["seed=3"], {"val_accuracy": 0.5, "run": "fake", "status": "ok",
                                    "error": "none"})
    (sweep / "3" / "error.txt").write_text("stopped\n")
    assert main([str(sweep)]) == 0
    rows = {r["run"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert "fake" not in rows
    assert rows["3"]["status"] == "failed" and rows["3"]["error"] == "stopped"
    assert rows["3"]["val_accuracy"] == "0.5"


@pytest.mark.parametrize("content, problem", [
    (b"\x00\x9f\x92\x96\xff binary", "not text (a binary or damaged file)"),
    (b"5\n", "not a list of overrides"),
    (b"seed: 1\n", "not a list of overrides"),
])
def test_a_damaged_overrides_file_is_named_in_one_line(sweep, capsys, content, problem):
    """The report refuses a row without its settings (as for invalid YAML): one line naming
    the file; the sweep's end-of-run summary, sharing the reader, shows no overrides."""
    from convtrain.app.sweep import read_overrides

    bad = sweep / "1" / ".hydra" / "overrides.yaml"
    bad.write_bytes(content)
    assert main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convtrain-report: error: {bad}: {problem}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert read_overrides(sweep / "1") == []
