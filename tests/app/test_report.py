"""convtrain-report: collects metrics.json + overrides of a sweep into one sorted table."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from convtrain.app.report import main


def make_job(root: Path, num: int, overrides: list[str], metrics: dict) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture()
def sweep(tmp_path):
    make_job(tmp_path, 0, ["model.layers.conv1.filters=4", "seed=1"], {"val_accuracy": 0.91, "test_accuracy": 0.90, "val_loss": 0.3})
    make_job(tmp_path, 1, ["model.layers.conv1.filters=8", "seed=1"], {"val_accuracy": 0.97, "test_accuracy": 0.95, "val_loss": 0.1})
    make_job(tmp_path, 2, ["model.layers.conv1.filters=8", "seed=2"], {"val_accuracy": None, "test_accuracy": None, "val_loss": None})
    return tmp_path


def test_markdown_sorted_by_val_accuracy_with_override_columns(sweep, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | status | model.layers.conv1.filters | seed | val_accuracy")
    body = out[2:]
    assert [line.split("|")[1].strip() for line in body] == ["1", "0", "2"]  # 0.97, 0.91, missing last
    assert "0.9700" in body[0]
    assert (sweep / "report.md").read_text().splitlines() == out


def test_csv_has_every_job_and_override(sweep):
    assert main([str(sweep), "--sort", "val_loss", "--ascending"]) == 0
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["run"] for r in rows] == ["1", "0", "2"]
    assert rows[0]["model.layers.conv1.filters"] == "8" and rows[0]["seed"] == "1"
    assert float(rows[1]["val_loss"]) == 0.3


def test_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_an_invalid_overrides_file_is_named_by_the_report_and_skipped_by_the_summary(sweep,
                                                                                     capsys):
    """convtrain-report refuses a row whose settings it cannot read (one line naming the
    file); the sweep's end-of-run summary, sharing the same reader, just shows no overrides."""
    from convtrain.app.sweep import read_overrides

    bad = sweep / "1" / ".hydra" / "overrides.yaml"
    bad.write_text("- seed=1\n- [unclosed\n")
    assert main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 3, column 1: invalid YAML: " in err and len(err.strip().splitlines()) == 1
    assert read_overrides(sweep / "1") == []
    assert read_overrides(sweep / "0", strict=True) == ["model.layers.conv1.filters=4", "seed=1"]
    assert read_overrides(sweep / "missing", strict=True) == []


def test_unknown_sort_column(sweep, capsys):
    assert main([str(sweep), "--sort", "val_acc"]) == 2
    assert "unknown column 'val_acc'" in capsys.readouterr().err


def test_failed_and_unfinished_jobs_are_listed(sweep, capsys):
    # a job that failed before its first epoch: .hydra/ and error.txt, no metrics.json
    failed = sweep / "3"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- model.layers.conv1.filters=0\n")
    (failed / "error.txt").write_text("model.layers.conv1.filters: must be >= 1, got 0\n")
    # a job that crashed after epoch 1: metrics.json AND error.txt
    make_job(sweep, 4, ["optimizer.lr=10"], {"val_accuracy": 0.5})
    (sweep / "4" / "error.txt").write_text("training diverged: loss is nan\n")
    # a job still running (or killed): .hydra only
    (sweep / "5" / ".hydra").mkdir(parents=True)
    (sweep / "5" / ".hydra" / "overrides.yaml").write_text("- seed=5\n")

    assert main([str(sweep)]) == 0
    rows = {r["run"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert set(rows) == {"0", "1", "2", "3", "4", "5"}
    assert rows["3"]["status"] == "failed"
    assert rows["3"]["error"] == "model.layers.conv1.filters: must be >= 1, got 0"
    assert rows["3"]["model.layers.conv1.filters"] == "0" and rows["3"]["val_accuracy"] == ""
    assert rows["4"]["status"] == "failed" and rows["4"]["val_accuracy"] == "0.5"
    assert rows["5"]["status"] == "incomplete"
    assert rows["1"]["status"] == "ok" and rows["1"]["error"] == ""
    table = capsys.readouterr().out
    assert table.splitlines()[0].endswith("| error |")


def test_only_failed_jobs(tmp_path, capsys):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (tmp_path / "0" / "error.txt").write_text("data.name: Unknown dataset 'x'\n")
    assert main([str(tmp_path)]) == 0  # sorting by val_accuracy still works
    out = capsys.readouterr().out
    assert "| 0 | failed | 1 |" in out and "Unknown dataset 'x'" in out
