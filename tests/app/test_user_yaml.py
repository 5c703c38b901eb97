"""Broken YAML in any config file -- the user's ``--config-dir``, an experiment, the shipped
configs -- is a user mistake: one line naming the file, line and column, exit status 2."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from convtrain.app import cli
from tests.app.test_cli_errors import convtrain  # noqa: F401 - the fixture


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("convtrain: error: "), err
    return lines[0]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_unclosed_brace_in_an_experiment_names_file_line_column(convtrain, capsys, tmp_path):
    bad = _write(tmp_path / "cd" / "experiment" / "bad.yaml",
                 "# @package _global_\nmodel:\n  layers: {conv1: {type: conv}\n")
    assert convtrain("--config-dir", str(tmp_path / "cd"), "+experiment=bad") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{bad}, line 4, column 1: invalid YAML: expected ',' or '}}'" in line, line
    assert "flow mapping started at line 3, column 11" in line, line


def test_unclosed_bracket_names_file_line_column(convtrain, capsys, tmp_path):
    bad = _write(tmp_path / "cd" / "experiment" / "bad.yaml",
                 "# @package _global_\ntrainer:\n  max_epochs: [1, 2\n")
    assert convtrain("--config-dir", str(tmp_path / "cd"), "+experiment=bad") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{bad}, line 4, column 1: invalid YAML: expected ',' or ']'" in line, line
    assert "flow sequence started at line 3, column 15" in line, line


def test_duplicate_layer_in_a_model_file_names_the_key_and_line(convtrain, capsys, tmp_path):
    layer = "{type: conv, out_channels: 4, kernel_size: 3}"
    bad = _write(tmp_path / "cd" / "model" / "mine.yaml",
                 f"layers:\n  conv1: {layer}\n  conv1: {layer}\n")
    assert convtrain("--config-dir", str(tmp_path / "cd"), "model=mine", "task=summary") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{bad}, line 3, column 3: invalid YAML: found duplicate key conv1" in line, line


def test_a_shipped_config_with_a_duplicate_key_is_named(convtrain, capsys, tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(cli.config_dir(), configs)
    trainer = configs / "trainer" / "default.yaml"
    trainer.write_text(trainer.read_text() + "max_epochs: 3\nmax_epochs: 4\n")
    first_added = len(trainer.read_text().splitlines()) - 1  # duplicates the shipped max_epochs
    assert convtrain("--config-path", str(configs), "task=summary") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{trainer}, line {first_added}, column 1: invalid YAML: found duplicate key " \
           "max_epochs" in line, line


def test_a_tab_indent_is_a_scanner_error_in_one_line(convtrain, capsys, tmp_path):
    bad = _write(tmp_path / "cd" / "experiment" / "tab.yaml",
                 "# @package _global_\ntrainer:\n\tmax_epochs: 2\n")
    assert convtrain("--config-dir", str(tmp_path / "cd"), "+experiment=tab") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{bad}, line 3, column 1: invalid YAML:" in line, line


def test_a_latin1_config_file_names_the_line_of_its_first_bad_byte(convtrain, capsys, tmp_path):
    """Beyond the first chunk Python decodes, too: the position is found in the whole file."""
    bad = tmp_path / "cd" / "experiment" / "latin1.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"# @package _global_\n" + b"# padding\n" * 2000
                    + b"trainer: {max_epochs: 2}  # r\xe9sum\xe9\n")
    assert convtrain("--config-dir", str(tmp_path / "cd"), "+experiment=latin1") == 2
    line = _one_line(capsys.readouterr().err)
    assert line.endswith(f"{bad}, line 2002, column 30: not UTF-8 text (byte 0xe9); config "
                         "files are UTF-8 YAML"), line


def test_a_config_file_holding_a_number_is_named(convtrain, capsys, tmp_path):
    bad = _write(tmp_path / "cd" / "experiment" / "num.yaml", "5\n")
    assert convtrain("--config-dir", str(tmp_path / "cd"), "+experiment=num") == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{bad}: a config file must hold a YAML mapping" in line, line
