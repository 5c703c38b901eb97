"""The house's arrows (docs/architecture.md): each room of the package imports only the rooms
below it. Read from the source, so a new import that points up or sideways fails here."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "convtrain"
FOUNDATION = {"errors", "validate", "registry"}

#: room -> the rooms it may import (the foundation and the bare package are always allowed)
ALLOWED = {
    "runtime": set(),
    "ops": {"runtime"},
    "nn": {"ops", "runtime"},
    "optim": {"runtime"},
    "data": {"runtime"},
    "training": {"nn", "optim", "data", "ops", "runtime"},
    "visuals": {"training", "nn", "data", "ops", "runtime"},
    "inference": {"visuals", "training", "nn", "data", "ops", "runtime"},
    "export": {"training", "nn", "data", "ops", "runtime"},
    "app": {"inference", "export", "training", "visuals", "nn", "optim", "data", "ops", "runtime"},
}


def room_of(module: str) -> str | None:
    """``convtrain.nn.layers.conv`` -> ``nn``; the foundation and the package root (its lazy
    ``__init__`` and ``python -m convtrain``'s ``__main__``, which runs the app) -> None."""
    parts = module.split(".")
    if (parts[0] != "convtrain" or len(parts) == 1 or parts[1] in FOUNDATION
            or parts[1] in ("__init__", "__main__")):
        return None
    return "layers-alias" if parts[1] == "layers" else parts[1]


def imported_modules(path: Path) -> list[str]:
    """Every ``convtrain...`` module a file imports (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "convtrain":  # from convtrain import validate / sweep ...
                found += [f"convtrain.{alias.name}" for alias in node.names]
            elif node.module.startswith("convtrain."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("convtrain")]
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def upward_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        for target in map(room_of, imported_modules(path)):
            if source in (None, "layers-alias") or target in (None, source):
                continue
            if target not in ALLOWED[source]:
                wrong.append(f"{module_name(path)} ({source}) imports {target}")
    return wrong


def test_every_room_is_known():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(ALLOWED), "a new room needs its place in ALLOWED and docs/architecture.md"


def test_imports_point_down_only():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    # the checker itself: a math module importing a layer is reported
    fake = tmp_path / "convtrain"
    (fake / "ops").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "ops" / "__init__.py").write_text("")
    (fake / "ops" / "bad.py").write_text("def f():\n    from convtrain.nn import Conv2d\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == ["convtrain.ops.bad (ops) imports nn"]


MACHINE = ("convtrain.runtime.threads", "convtrain.runtime.blas", "convtrain.runtime.memory",
           "convtrain.runtime.workspace", "convtrain.ops.fast")


def defining_modules(path: Path) -> set[str]:
    """The modules a file takes names from, a package's re-exports resolved to the module
    that defines them (``from convtrain.runtime import Workspace`` ->
    ``convtrain.runtime.workspace``)."""
    found = set(imported_modules(path))
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.startswith("convtrain"):
            package = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(package, alias.name, None)
                defined_in = getattr(value, "__module__", None) or getattr(value, "__name__", "")
                if defined_in.startswith("convtrain"):
                    found.add(defined_in)
    return found


def machine_met(path: Path) -> list[str]:
    return sorted(m for m in defining_modules(path)
                  if any(m == machine or m.startswith(machine + ".") for machine in MACHINE))


@pytest.mark.parametrize("path", sorted((PACKAGE / "ops").glob("*.py")), ids=lambda p: p.name)
def test_the_readable_math_never_meets_the_machine(path):
    """``ops/*.py`` (the readable math) may use the backend, but threads, BLAS control,
    workspaces and the speed paths belong to ``ops/fast/``."""
    assert machine_met(path) == []


def test_the_machine_check_sees_through_re_exports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from convtrain.runtime import Workspace, set_num_threads\n"
                      "from convtrain.ops.fast import conv2d_forward\n")
    assert machine_met(sample) == ["convtrain.ops.fast", "convtrain.ops.fast.conv",
                                   "convtrain.runtime.threads", "convtrain.runtime.workspace"]
    sample.write_text("from convtrain.runtime import Backend\n")  # the backend is allowed
    assert machine_met(sample) == []


@pytest.mark.parametrize("module", ["convtrain.ops", "convtrain.ops.fast", "convtrain.runtime",
                                    "convtrain.nn", "convtrain.training"])
def test_lower_rooms_load_without_hydra(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
