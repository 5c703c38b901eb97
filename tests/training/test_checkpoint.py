"""Checkpoint files: round trip, path resolution, corrupt inputs, crash-safety of every write."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import safetensors.numpy

from convtrain.errors import ConfigError, InternalError
from convtrain.training import atomic
from convtrain.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, \
    resolve_checkpoint_path, run_directory, save_checkpoint
from convtrain.training.metrics import METRIC_KEYS, write_metrics


def model_state(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv1.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
            "conv1.bias": rng.standard_normal(4).astype(np.float32),
            "bn.running_var": rng.random(4).astype(np.float32)}


def optimizer_state(seed=0):
    rng = np.random.default_rng(seed + 100)
    return {"steps": np.array(7, dtype=np.int64),
            "conv1.weight/step": np.array(7, dtype=np.int64),
            "conv1.weight/momentum_buffer": rng.standard_normal((4, 1, 3, 3)).astype(np.float32)}


META = {"epoch": 3, "global_step": 21, "rng": {"shuffle": np.random.default_rng(1).bit_generator.state},
        "metrics": {"val_accuracy": 0.5, "val_loss": None}}


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", "last", model_state(), optimizer_state(), META)
    assert path == tmp_path / "ckpt" / "last.safetensors"
    ck = load_checkpoint(path)
    assert_same_arrays(ck.model_state, model_state())
    assert_same_arrays(ck.optimizer_state, optimizer_state())
    assert ck.meta["format"] == CHECKPOINT_FORMAT
    assert ck.meta["epoch"] == 3 and ck.meta["metrics"]["val_loss"] is None
    # 128-bit generator state survives JSON exactly
    assert ck.meta["rng"]["shuffle"] == META["rng"]["shuffle"]
    # human-readable sibling carries the same metadata
    assert json.loads((tmp_path / "ckpt" / "last.json").read_text()) == ck.meta
    # a plain safetensors reader sees the model weights under their own names
    plain = safetensors.numpy.load_file(str(path))
    np.testing.assert_array_equal(plain["conv1.weight"], model_state()["conv1.weight"])
    assert "optimizer/conv1.weight/momentum_buffer" in plain
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_path_resolution(tmp_path):
    run = tmp_path / "run"
    path = save_checkpoint(run / "checkpoints", "last", model_state(), {}, META)
    for given in (path, run / "checkpoints" / "last.json", run / "checkpoints" / "last",
                  run / "checkpoints", run):
        assert resolve_checkpoint_path(given) == path
    with pytest.raises(ConfigError, match="checkpoint not found: '.*nowhere"):
        load_checkpoint(tmp_path / "nowhere.safetensors")


def test_the_run_directory_of_a_checkpoint_or_folder(tmp_path):
    run = tmp_path / "run"
    path = save_checkpoint(run / "checkpoints", "best", model_state(), {}, META)
    for given in (path, run / "checkpoints" / "best.json", run / "checkpoints", run,
                  str(run / "checkpoints" / "gone.safetensors")):  # need not exist
        assert run_directory(given) == run
    assert run_directory(tmp_path / "loose.safetensors") == tmp_path  # not in checkpoints/
    assert run_directory(tmp_path / "elsewhere") == tmp_path / "elsewhere"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_names_it(tmp_path, damage):
    path = save_checkpoint(tmp_path, "last", model_state(), optimizer_state(), META)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xffnot a file" * 9,
                      "empty": b""}[damage])
    with pytest.raises(ConfigError, match=f"checkpoint '{path}' is corrupt"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file(model_state(), str(path))
    with pytest.raises(ConfigError, match="not a convtrain checkpoint"):
        load_checkpoint(path)
    safetensors.numpy.save_file(model_state(), str(path),
                                metadata={"convtrain": json.dumps({"format": "other/9"})})
    with pytest.raises(ConfigError, match="format 'other/9'"):
        load_checkpoint(path)


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_crash_during_save_keeps_old_checkpoint(tmp_path, monkeypatch, failing):
    path = save_checkpoint(tmp_path, "last", model_state(0), optimizer_state(0), META)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash (disk full)")

    if failing == "write":
        # fail after half the data reached the temp file
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError("simulated crash mid-write")

        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(atomic.os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, "last", model_state(1), optimizer_state(1), {**META, "epoch": 4})
    monkeypatch.undo()
    assert path.read_bytes() == before
    ck = load_checkpoint(path)
    assert ck.meta["epoch"] == 3
    assert_same_arrays(ck.model_state, model_state(0))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_model_key_may_not_collide_with_optimizer_prefix(tmp_path):
    with pytest.raises(InternalError, match="optimizer/x"):
        save_checkpoint(tmp_path, "last", {"optimizer/x": np.zeros(1)}, {}, META)


def full_metrics(**overrides):
    return {**{k: None for k in METRIC_KEYS}, **overrides}


def test_metrics_json_is_strict_json_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_metrics(path, full_metrics(train_loss=float("nan"), val_accuracy=0.75, extra=1))
    loaded = json.loads(path.read_text())
    assert list(loaded)[: len(METRIC_KEYS)] == list(METRIC_KEYS)
    assert loaded["train_loss"] is None and loaded["val_accuracy"] == 0.75 and loaded["extra"] == 1
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        write_metrics(path, full_metrics(val_accuracy=0.9))
    assert json.loads(path.read_text())["val_accuracy"] == 0.75
    with pytest.raises(InternalError, match="missing keys"):
        write_metrics(path, {"train_loss": 1.0})
