"""The math room's rules: importing it loads no config machinery, and the readable math in
convtrain/ops/*.py never meets the machine (threads, BLAS control, scratch buffers), which
only the speed paths in convtrain/ops/fast/ use."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import convtrain.ops

OPS_DIR = Path(convtrain.ops.__file__).parent
MACHINE = ("convtrain.runtime.threads", "convtrain.runtime.blas", "convtrain.runtime.workspace",
           "convtrain.runtime.memory", "convtrain.ops.fast")


@pytest.mark.parametrize("module", ["convtrain.ops", "convtrain.ops.fast", "convtrain.runtime"])
def test_importing_the_math_loads_neither_hydra_nor_omegaconf(module):
    script = (f"import sys, {module}\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
              "('hydra', 'omegaconf'))\n"
              "print(','.join(loaded))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "", f"{module} imported {result.stdout.strip()}"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(OPS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_the_readable_math_never_meets_threads_or_buffers(path):
    imported = _imported_modules(path)
    if path.name == "__init__.py":
        imported = {m for m in imported if not m.startswith("convtrain.ops.")}
    met = sorted(m for m in imported for machine in MACHINE
                 if m == machine or m.startswith(machine + "."))
    assert not met, f"{path.name} imports {met}"


def test_the_rule_test_sees_a_machine_import(tmp_path):
    """The check above must catch an import of the machine (it would pass on an empty set)."""
    sample = tmp_path / "sample.py"
    sample.write_text("from convtrain.runtime.threads import run_split\n")
    assert "convtrain.runtime.threads" in _imported_modules(sample)
