"""The Trainer on tiny separable data: learning, files, reproducibility, resume, errors."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convtrain.backend import get_backend
from convtrain.data.splits import ArraySplit
from convtrain.errors import ConfigError
from convtrain.layers.base import Layer
from convtrain.model import build_model
from convtrain.optim import build_optimizer, build_schedule
from convtrain.training import trainer as trainer_module
from convtrain.training.checkpoint import load_checkpoint
from convtrain.training.trainer import Trainer, TrainingDiverged

# the public contract of metrics.json (DESIGN.md + the trainer brief), spelled out independently
CONTRACT_KEYS = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy", "epochs_completed", "wall_time_s", "train_images_per_s",
                 "best_epoch", "best_val_accuracy", "best_test_accuracy", "seed", "backend"}
EPOCH_TAGS = {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "test/loss",
              "test/accuracy", "lr", "epoch_time_s", "images_per_s"}


# --- fakes: a softmax regression with the model interface, and blob data ----------------
class SoftmaxRegression:
    """``logits = dropout(x.reshape(N, -1)) @ W.T + b`` with one layer ``fc`` (W ``(K, D)``)."""

    def __init__(self, input_shape, num_classes, seed=0, p_drop=0.0):
        rng = np.random.default_rng(seed)
        d = int(np.prod(input_shape))
        layer = Layer("fc")
        layer.params = {"weight": (0.01 * rng.standard_normal((num_classes, d))).astype(np.float32),
                        "bias": np.zeros(num_classes, np.float32)}
        layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
        if p_drop:
            layer.rng = np.random.default_rng(seed + 1000)
        self.layers = {"fc": layer}
        self.output_shape = (num_classes,)
        self.p_drop = p_drop

    def forward(self, x, training=True):
        x = np.asarray(x, np.float32).reshape(len(x), -1)
        if training and self.p_drop:
            keep = self.layers["fc"].rng.random(x.shape) >= self.p_drop
            x = x * (keep / np.float32(1 - self.p_drop)).astype(np.float32)
        self._x = x
        p = self.layers["fc"].params
        return x @ p["weight"].T + p["bias"]

    def backward(self, dlogits):
        layer = self.layers["fc"]
        layer.grads["weight"] = dlogits.T @ self._x
        layer.grads["bias"] = dlogits.sum(axis=0)
        return dlogits @ layer.params["weight"]

    def named_parameters(self):
        for key in ("weight", "bias"):
            yield f"fc.{key}", self.layers["fc"], key

    def state_dict(self):
        return {f"fc.{k}": v.copy() for k, v in self.layers["fc"].params.items()}

    def load_state_dict(self, sd, strict=True):
        if set(sd) != {"fc.weight", "fc.bias"}:
            raise ConfigError(f"load_state_dict: keys {sorted(sd)}")
        for k in ("weight", "bias"):
            self.layers["fc"].params[k] = np.array(sd[f"fc.{k}"], np.float32)


def blobs(seed=0, n_train=96, n_val=24, n_test=24, k=3, shape=(1, 4, 4)):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    centers = 0.8 * rng.standard_normal((k, d))

    def split(n):
        y = rng.integers(0, k, n)
        x = centers[y] + 0.5 * rng.standard_normal((n, d))
        return ArraySplit(x.reshape(n, *shape).astype(np.float32), y.astype(np.int64))

    return SimpleNamespace(train=split(n_train), val=split(n_val), test=split(n_test),
                           num_classes=k, input_shape=shape, name="blobs")


def real_model(data, seed=0, p_drop=0.25, units=None):
    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1},
                      "relu1": {"type": "relu"}, "flat": {"type": "flatten"},
                      "drop": {"type": "dropout", "p": p_drop},
                      "fc": {"type": "dense", "units": units or data.num_classes}}}
    return build_model(cfg, data.input_shape, seed=seed)


def make_trainer(run_dir, data, model=None, *, opt=None, sched=None, max_epochs=4, **kw):
    """``sched``: a schedule config mapping or a ready schedule object (default constant)."""
    model = model if model is not None else SoftmaxRegression(data.input_shape, data.num_classes)
    optimizer = build_optimizer(opt or {"name": "sgd", "lr": 0.05, "momentum": 0.9}, model)
    schedule = sched if hasattr(sched, "lr_at") else build_schedule(
        sched or {"name": "constant"}, optimizer.lr, max_epochs)
    settings = {"backend": get_backend("numpy"), "seed": 0, "max_epochs": max_epochs,
                "batch_size": 16, "progress": False, **kw}
    return Trainer(model, optimizer, schedule, data, run_dir=run_dir, **settings)


def read_tb(run_dir):
    acc = EventAccumulator(str(Path(run_dir) / "tensorboard"),
                           size_guidance={k: 0 for k in ("scalars", "tensors", "images",
                                                         "histograms", "audio",
                                                         "compressedHistograms")})
    acc.Reload()
    return acc


def softmax_ce_reference(logits, y):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(1) == y).mean())


# --- learning, metrics.json, TensorBoard -----------------------------------------------
def test_learns_and_writes_the_run_directory(tmp_path):
    data = blobs()
    trainer = make_trainer(tmp_path, data, max_epochs=5, log_every_n_steps=4,
                           config_text="model:\n  name: blobs")
    returned = trainer.fit()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == returned
    assert CONTRACT_KEYS <= set(metrics)
    assert metrics["epochs_completed"] == 5 and metrics["seed"] == 0
    assert metrics["backend"] == "numpy"
    assert metrics["train_accuracy"] >= 0.98 and metrics["test_accuracy"] >= 0.95
    assert metrics["wall_time_s"] > 0 and metrics["train_images_per_s"] > 0

    # val/test metrics agree with an independent evaluation of the final model
    for split in ("val", "test"):
        s = getattr(data, split)
        loss, acc = softmax_ce_reference(trainer.model.forward(s.x, training=False), s.y)
        assert metrics[f"{split}_accuracy"] == acc
        assert metrics[f"{split}_loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)

    tb = read_tb(tmp_path)
    assert EPOCH_TAGS | {"train/loss_step"} == set(tb.Tags()["scalars"])
    for tag in EPOCH_TAGS:
        assert [e.step for e in tb.Scalars(tag)] == [1, 2, 3, 4, 5]
    train_loss = [e.value for e in tb.Scalars("train/loss")]
    assert train_loss[-1] < 0.5 * train_loss[0]
    assert train_loss[-1] == pytest.approx(metrics["train_loss"], rel=1e-6)
    # 96 samples / 16 per batch = 6 steps per epoch, 30 in all, one point every 4 steps
    assert [e.step for e in tb.Scalars("train/loss_step")] == list(range(4, 31, 4))
    assert "name: blobs" in tb.Tensors("config")[0].tensor_proto.string_val[0].decode()

    ckpt_dir = tmp_path / "checkpoints"
    for name in ("last.safetensors", "last.json", "best.safetensors", "best.json"):
        assert (ckpt_dir / name).is_file()
    last = load_checkpoint(ckpt_dir / "last.safetensors")
    assert last.meta["epoch"] == 5 and last.meta["global_step"] == 30
    assert last.meta["config"] == "model:\n  name: blobs"


def test_checkpoint_restores_identical_forward(tmp_path):
    data = blobs()
    trainer = make_trainer(tmp_path, data, max_epochs=2)
    trainer.fit()
    fresh = SoftmaxRegression(data.input_shape, data.num_classes, seed=99)
    fresh.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "last").model_state)
    np.testing.assert_array_equal(fresh.forward(data.test.x, training=False),
                                  trainer.model.forward(data.test.x, training=False))


def test_same_seed_is_bitwise_reproducible(tmp_path):
    data = blobs()
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        t = make_trainer(tmp_path / name, data, seed=seed, max_epochs=2,
                         model=SoftmaxRegression(data.input_shape, 3, p_drop=0.2))
        runs[name] = (t.fit(), t.model.state_dict())
    for key in ("train_loss", "val_loss", "test_loss", "train_accuracy"):
        assert runs["a"][0][key] == runs["b"][0][key]
    for k, v in runs["a"][1].items():
        np.testing.assert_array_equal(v, runs["b"][1][k])
    assert runs["a"][0]["train_loss"] != runs["c"][0]["train_loss"]


# --- resume ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fake", "real"])
def test_resume_is_bitwise_identical_to_uninterrupted(tmp_path, kind):
    data = blobs()
    opt = {"name": "adam", "lr": 0.02, "weight_decay": 1e-3}
    sched_cfg = {"name": "cosine", "warmup_epochs": 1}

    def run(run_dir, max_epochs, model_seed, resume=None):
        model = (SoftmaxRegression(data.input_shape, 3, seed=model_seed, p_drop=0.25)
                 if kind == "fake" else real_model(data, seed=model_seed))
        # t_max fixed at 4 so the interrupted run follows the same lr curve
        t = make_trainer(run_dir, data, model, opt=opt, max_epochs=max_epochs, resume=resume,
                         sched={**sched_cfg, "t_max": 4}, seed=7)
        return t, t.fit()

    full, full_metrics = run(tmp_path / "full", 4, model_seed=1)
    run(tmp_path / "part", 2, model_seed=1)
    # a different init seed proves weights and dropout rngs come from the checkpoint
    resumed, resumed_metrics = run(tmp_path / "resumed", 4, model_seed=2,
                                   resume=str(tmp_path / "part" / "checkpoints" / "last.safetensors"))
    for key in ("train_loss", "train_accuracy", "val_loss", "test_loss", "epochs_completed",
                "best_epoch", "best_val_accuracy", "lr"):
        assert resumed_metrics[key] == full_metrics[key], key
    assert resumed.global_step == full.global_step
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v, err_msg=k)
    for k, v in full.optimizer.state_dict().items():
        np.testing.assert_array_equal(resumed.optimizer.state_dict()[k], v, err_msg=k)


def test_resume_errors(tmp_path):
    data = blobs()
    make_trainer(tmp_path / "a", data, max_epochs=2).fit()
    last = tmp_path / "a" / "checkpoints" / "last.safetensors"
    with pytest.raises(ConfigError, match="already completed 2 epochs.*trainer.max_epochs"):
        make_trainer(tmp_path / "b", data, max_epochs=2, resume=str(last)).fit()
    with pytest.raises(ConfigError, match="optimizer 'sgd', this run uses 'adam'"):
        make_trainer(tmp_path / "b", data, max_epochs=3, resume=str(last),
                     opt={"name": "adam"}).fit()
    with pytest.raises(ConfigError, match="checkpoint not found: '.*missing.safetensors'"):
        make_trainer(tmp_path / "b", data, resume=str(tmp_path / "missing.safetensors")).fit()
    # a run directory means its checkpoints/last
    assert make_trainer(tmp_path / "c", data, max_epochs=3,
                        resume=str(tmp_path / "a")).fit()["epochs_completed"] == 3


# --- best vs last ----------------------------------------------------------------------
@pytest.mark.parametrize("monitor,val_script", [
    ("val_accuracy", [(0.9, 0.5), (0.6, 0.8), (0.5, 0.7)]),
    ("val_loss", [(0.9, 0.5), (0.4, 0.6), (0.5, 0.9)]),
])
def test_best_and_last_checkpoints(tmp_path, monkeypatch, monitor, val_script):
    """Scripted evaluation results make epoch 2 the best one and epoch 3 the last."""
    data = blobs()
    test_script = [(1.0, 0.4), (0.9, 0.6), (0.8, 0.9)]

    def run(run_dir, epochs):
        calls = {"val": 0, "test": 0}

        def evaluate(model, split, *args):
            which = "val" if split is data.val else "test"
            calls[which] += 1
            return (val_script if which == "val" else test_script)[calls[which] - 1]

        monkeypatch.setattr(trainer_module, "evaluate", evaluate)
        t = make_trainer(run_dir, data, max_epochs=epochs, monitor=monitor)
        return t.fit()

    metrics = run(tmp_path / "three", 3)
    assert metrics["best_epoch"] == 2
    assert metrics["best_val_accuracy"] == val_script[1][1]
    assert metrics["best_test_accuracy"] == test_script[1][1]
    assert metrics["val_accuracy"] == val_script[2][1]  # final metrics are the last epoch's
    best = load_checkpoint(tmp_path / "three" / "checkpoints" / "best.safetensors")
    last = load_checkpoint(tmp_path / "three" / "checkpoints" / "last.safetensors")
    assert (best.meta["epoch"], last.meta["epoch"]) == (2, 3)
    # the best weights are those after epoch 2: compare with a run that stops there
    run(tmp_path / "two", 2)
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.safetensors")
    for k, v in two.model_state.items():
        np.testing.assert_array_equal(best.model_state[k], v)
        assert not np.array_equal(last.model_state[k], v)


def test_empty_val_split_monitors_train_metrics(tmp_path):
    data = blobs()
    data.val = ArraySplit(np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))
    trainer = make_trainer(tmp_path, data, max_epochs=2)
    metrics = trainer.fit()
    assert trainer.monitor == "train_accuracy"
    assert metrics["val_loss"] is None and metrics["val_accuracy"] is None
    assert metrics["best_val_accuracy"] is None and metrics["best_test_accuracy"] is not None
    assert metrics["best_monitor_value"] == max(metrics["train_accuracy"], 0)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val_loss"] is None and CONTRACT_KEYS <= set(saved)
    assert "val/loss" not in read_tb(tmp_path).Tags()["scalars"]


# --- failures ----------------------------------------------------------------------------
class TwoPhase:
    """A schedule: a sane lr for epoch 1, an absurd one afterwards."""

    base_lr = 0.1

    def lr_at(self, epoch):
        return 0.1 if epoch == 0 else 1e38


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_divergence_is_explained_and_keeps_earlier_files(tmp_path):
    data = blobs()
    trainer = make_trainer(tmp_path, data, sched=TwoPhase(), max_epochs=3)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.epoch == 2 and err.lr == 1e38 and err.step > 6
    msg = str(err)
    assert "epoch 2" in msg and f"step {err.step}" in msg and "lr=1e+38" in msg
    assert "optimizer.lr=0.01" in msg
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and math.isfinite(metrics["train_loss"])
    assert load_checkpoint(tmp_path / "checkpoints" / "last.safetensors").meta["epoch"] == 1
    assert [e.step for e in read_tb(tmp_path).Scalars("train/loss")] == [1]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_divergence_in_first_epoch(tmp_path):
    data = blobs()
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        make_trainer(tmp_path, data, opt={"name": "sgd", "lr": 1e38}).fit()
    assert not (tmp_path / "metrics.json").exists()


def test_crash_while_checkpointing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from convtrain.training import checkpoint as checkpoint_module

    data = blobs()
    real_write = checkpoint_module.atomic_write_bytes
    calls = []

    def crash_on_second_epoch(path, blob):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote last + best; epoch 2 dies midway through its write
            real_write(path.with_name(path.name + ".partial"), blob[: len(blob) // 3])
            raise OSError("simulated power loss")
        real_write(path, blob)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", crash_on_second_epoch)
    with pytest.raises(OSError, match="power loss"):
        make_trainer(tmp_path, data, max_epochs=3).fit()
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert ck.meta["epoch"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_completed"] == 1


def test_wrong_output_size_names_the_layer(tmp_path):
    data = blobs()
    with pytest.raises(ConfigError, match=r"output shape \(5,\).*3 classes.*model\.layers\.fc\.units=3"):
        make_trainer(tmp_path, data, real_model(data, units=5))
    fake = SoftmaxRegression(data.input_shape, 4)
    del fake.layers["fc"]  # no dense layer to point at
    with pytest.raises(ConfigError, match="dense layer of units=3"):
        make_trainer(tmp_path, data, fake)


@pytest.mark.parametrize("setting,match", [
    ({"batch_size": 0}, r"trainer\.batch_size"),
    ({"batch_size": 2.5}, r"trainer\.batch_size"),
    ({"max_epochs": 0}, r"trainer\.max_epochs"),
    ({"eval_batch_size": -4}, r"trainer\.eval_batch_size"),
    ({"monitor": "test_accuracy"}, r"trainer\.monitor: expected one of val_accuracy"),
    ({"progress": "sometimes"}, r"trainer\.progress"),
    ({"log_every_n_steps": -1}, r"trainer\.log_every_n_steps"),
    ({"seed": -1}, r"seed"),
])
def test_bad_settings_name_the_key(tmp_path, setting, match):
    with pytest.raises(ConfigError, match=match):
        make_trainer(tmp_path, blobs(), **setting)


# --- progress and logging ----------------------------------------------------------------
def test_progress_bar_and_epoch_log_lines(tmp_path, capsys, caplog):
    data = blobs()
    with caplog.at_level(logging.INFO, logger="convtrain"):
        make_trainer(tmp_path / "bar", data, max_epochs=2, progress=True).fit()
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "loss=" in err and "acc=" in err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and "train loss" in lines[0] and "img/s" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="convtrain"):
        make_trainer(tmp_path / "quiet", data, max_epochs=2, progress=False).fit()
    assert "loss=" not in capsys.readouterr().err
    assert sum(r.getMessage().startswith("epoch ") for r in caplog.records) == 2


def test_progress_auto_follows_the_terminal(monkeypatch):
    from convtrain.training import progress

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(progress.sys, "stderr", Stream(True))
    assert progress.resolve_progress("auto") is True
    monkeypatch.setattr(progress.sys, "stderr", Stream(False))
    assert progress.resolve_progress("auto") is False
    assert progress.resolve_progress(True) is True and progress.resolve_progress(False) is False


def test_without_checkpoints(tmp_path):
    metrics = make_trainer(tmp_path, blobs(), max_epochs=1, checkpoint=False).fit()
    assert not (tmp_path / "checkpoints").exists()
    assert metrics["epochs_completed"] == 1
