"""A YAML syntax error or duplicate key in one line, file, line and column first (PyYAML's own
message spans several lines with a caret diagram). Shared by the config errors of the command
and by the readers of a run's ``.hydra/overrides.yaml``."""
from __future__ import annotations

import yaml


def yaml_error_line(exc: yaml.YAMLError, source: str | None = None) -> str:
    """``FILE, line L, column C: invalid YAML: PROBLEM (CONTEXT started at line ...)``.

    ``source`` names the file when PyYAML read a string (its marks then say ``<unicode
    string>``). PyYAML's marks are 0-based; editors (and this message) count from 1.
    """
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        first = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
        return f"{source}: invalid YAML: {first}" if source else f"invalid YAML: {first}"
    where = f"{source or mark.name}, line {mark.line + 1}, column {mark.column + 1}"
    problem = " ".join(str(getattr(exc, "problem", None) or "invalid YAML").split())
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    message = f"{where}: invalid YAML: {problem}"
    if context:
        message += f" ({' '.join(str(context).split())}"
        if context_mark is not None and context_mark is not mark:
            message += f" started at line {context_mark.line + 1}, column {context_mark.column + 1}"
        message += ")"
    return message
