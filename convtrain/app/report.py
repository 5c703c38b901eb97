"""``convtrain-report DIR``: one table of every run under a (multi)run directory.

Each job directory holds ``metrics.json`` and ``.hydra/overrides.yaml``; the report has one row
per job with its status (ok / failed / incomplete / unreadable) and overrides as columns, sorted
by a metric (jobs without it last), written as Markdown (stdout or a file) and CSV. A failed job
(its ``error.txt``, see :mod:`convtrain.app.sweep`) shows the first line of its error; a job
whose metrics.json is binary, not JSON or not a JSON object is ``unreadable``, with what is
wrong in its ``error`` column, and the other jobs are reported as usual.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from convtrain.app.sweep import ERROR_FILE, first_error_line, job_sort_key, read_overrides
from convtrain.validate import is_real

DEFAULT_COLUMNS = ("val_accuracy", "test_accuracy", "val_loss", "train_loss", "epochs_completed",
                   "wall_time_s", "train_images_per_s")


# row entry listing which keys came from the job's overrides (not shown as a column)
_OVERRIDE_KEYS = "__override_keys__"


class ReportError(ValueError):
    """A missing directory, an unreadable overrides file or an unknown sort key."""


def _read_overrides(job_dir: Path) -> dict[str, str]:
    """``{key: value}`` of the job's command-line overrides (``+``/``~`` prefixes dropped)."""
    try:
        items = read_overrides(job_dir, strict=True)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def _job_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root``: it has metrics.json, a ``.hydra/`` or an error.txt
    (a job that failed before its first epoch has no metrics.json)."""
    found = {p.parent for p in root.rglob("metrics.json")}
    found |= {p.parent.parent for p in root.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    found |= {p.parent for p in root.rglob(ERROR_FILE)}
    return sorted(found, key=lambda d: job_sort_key(root, d))


# the row fields the report sets itself: a metrics.json key of the same name does not replace them
_OWN_FIELDS = ("run", "status", "error", _OVERRIDE_KEYS)
_JSON_TYPES = {list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _read_metrics(path: Path) -> tuple[dict[str, Any], str | None]:
    """``(metrics, None)``, or ``({}, what is wrong with the file)``; ``({}, None)`` when the
    job wrote none."""
    if not path.is_file():
        return {}, None
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        return {}, f"metrics.json cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return {}, "metrics.json is not text (a binary or damaged file)"
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, (f"metrics.json is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg})")
    if not isinstance(metrics, dict):
        return {}, (f"metrics.json holds {_JSON_TYPES.get(type(metrics), 'a value')}, not an "
                    "object of metrics")
    return {k: v for k, v in metrics.items() if k not in _OWN_FIELDS}, None


def _status(job_dir: Path, has_metrics: bool, problem: str | None) -> tuple[str, str | None]:
    """``("ok" | "failed" | "incomplete" | "unreadable", the error or None)``: the first line
    of ``error.txt`` and what is wrong with metrics.json."""
    error = first_error_line(job_dir)
    if error is not None:
        return "failed", "; ".join(e for e in (error[:200], problem) if e)
    if problem is not None:
        return "unreadable", problem
    return ("ok", None) if has_metrics else ("incomplete", None)


def collect(root: Path) -> list[dict[str, Any]]:
    """One dict per job under ``root``: ``{"run": relative dir, "status": ..., <overrides>,
    <metrics>}``; failed jobs (``error.txt``) and jobs without metrics.json are included."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such directory")
    rows = []
    for job_dir in _job_dirs(root):
        metrics, problem = _read_metrics(job_dir / "metrics.json")
        status, error = _status(job_dir, bool(metrics), problem)
        row: dict[str, Any] = {"run": str(job_dir.relative_to(root).as_posix()) or ".",
                               "status": status}
        overrides = _read_overrides(job_dir)
        row.update(overrides)
        row.update(metrics)
        row[_OVERRIDE_KEYS] = list(overrides)
        if error is not None:
            row["error"] = error
        rows.append(row)
    if not rows:
        raise ReportError(f"{root}: no runs found (no metrics.json or .hydra/ below it; is this a "
                          "convtrain run or multirun directory?)")
    return rows


def _number(value: Any) -> float | None:
    if is_real(value) and not math.isnan(value):
        return float(value)
    return None


def sort_rows(rows: list[dict[str, Any]], key: str, descending: bool = True) -> list[dict[str, Any]]:
    # a default metric is a known column even when no job got far enough to write it
    if key not in DEFAULT_COLUMNS and not any(key in r for r in rows):
        known = sorted({k for r in rows for k in r if k != _OVERRIDE_KEYS})
        raise ReportError(f"--sort: unknown column '{key}' (columns: {', '.join(known)})")
    present = [r for r in rows if _number(r.get(key)) is not None]
    missing = [r for r in rows if _number(r.get(key)) is None]  # failed jobs sink to the bottom
    return sorted(present, key=lambda r: _number(r[key]), reverse=descending) + missing


def columns_for(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[str]:
    """``run``, ``status``, every override key seen (in first-seen order), the chosen metrics,
    and ``error`` when a job failed."""
    override_keys: list[str] = []
    for r in rows:
        for k in r.get(_OVERRIDE_KEYS, ()):
            if k not in override_keys and k not in metrics:
                override_keys.append(k)
    error = ["error"] if any("error" in r for r in rows) else []
    return ["run", "status", *override_keys, *[m for m in metrics if any(m in r for r in rows)],
            *error]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convtrain-report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a multirun (or run) directory")
    parser.add_argument("--sort", default="val_accuracy", help="column to sort by (default val_accuracy)")
    parser.add_argument("--ascending", action="store_true", help="smallest first (e.g. for losses)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_COLUMNS),
                        help="comma-separated metric columns to show")
    parser.add_argument("--csv", type=Path, default=None,
                        help="CSV output path (default DIRECTORY/report.csv)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the Markdown table here (default DIRECTORY/report.md)")
    args = parser.parse_args(argv)
    try:
        rows = sort_rows(collect(args.directory), args.sort, descending=not args.ascending)
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        columns = columns_for(rows, metrics)
        markdown = to_markdown(rows, columns)
        (args.csv or args.directory / "report.csv").write_text(to_csv(rows, columns))
        (args.markdown or args.directory / "report.md").write_text(markdown)
    except (ReportError, OSError) as exc:
        print(f"convtrain-report: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
