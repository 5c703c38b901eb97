"""The house's arrows (docs/architecture.md): each room of the package imports only the rooms
below it. Read from the source, so a new import that points up or sideways fails here."""
from __future__ import annotations

import ast
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
    "visuals": {"training", "nn", "ops", "runtime"},
    "app": {"training", "visuals", "nn", "optim", "data", "ops", "runtime"},
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


def test_the_math_never_meets_the_machine_directly():
    """``ops/*.py`` (the readable math) may use the backend, but threads, BLAS control and
    workspaces belong to the speed paths in ``ops/fast/``."""
    machine = {"convtrain.runtime.threads", "convtrain.runtime.blas", "convtrain.runtime.memory",
               "convtrain.runtime.workspace"}
    for path in sorted((PACKAGE / "ops").glob("*.py")):
        assert not machine & set(imported_modules(path)), path.name


@pytest.mark.parametrize("module", ["convtrain.ops", "convtrain.runtime", "convtrain.nn",
                                    "convtrain.training"])
def test_lower_rooms_load_without_hydra(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
