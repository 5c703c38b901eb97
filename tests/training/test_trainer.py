"""The Trainer on tiny separable data: learning, files, reproducibility, resume, errors."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convtrain.runtime.backend import get_backend
from convtrain.data import load_dataset
from convtrain.data.splits import ArraySplit, Normalization
from convtrain.errors import ConfigError
from convtrain.nn.base import Layer
from convtrain.nn.model import build_model
from convtrain.optim import build_optimizer, build_schedule
from convtrain.training import checkpointing
from convtrain.training import trainer as trainer_module
from convtrain.training.checkpoint import load_checkpoint, save_checkpoint
from convtrain.visuals.run_logger import VisualLogger
from convtrain.training.trainer import Trainer, TrainingDiverged

# the public contract of metrics.json (DESIGN.md + the trainer brief), spelled out independently
CONTRACT_KEYS = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy", "epochs_completed", "wall_time_s", "train_images_per_s",
                 "best_epoch", "best_val_accuracy", "best_test_accuracy", "seed", "backend"}
#: TensorBoard scalars of the run itself (each split's epoch/loss and epoch/accuracy are in
#: its own run: tensorboard/run/<split>)
RUN_TAGS = {"optimizer/lr", "performance/epoch_time_s", "performance/images_per_s",
            "monitor/best_val_accuracy", "monitor/best_epoch", "monitor/best_test_accuracy"}


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

    def backward(self, dlogits, input_grad=True):
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
    # what the app adds: the TensorBoard and pictures hook (settings: ``logger=``)
    visuals = VisualLogger(kw.pop("logger", None), config_text=kw.get("config_text"),
                           hparams=kw.pop("hparams", None))
    settings = {"backend": get_backend("numpy"), "seed": 0, "max_epochs": max_epochs,
                "batch_size": 16, "progress": False, **kw,
                "hooks": [visuals, *kw.get("hooks", ())]}
    return Trainer(model, optimizer, schedule, data, run_dir=run_dir, **settings)


def read_tb(run_dir, split=""):
    acc = EventAccumulator(str(Path(run_dir) / "tensorboard" / "run" / split),
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
    assert RUN_TAGS == set(tb.Tags()["scalars"])
    for tag in RUN_TAGS:
        assert [e.step for e in tb.Scalars(tag)] == [1, 2, 3, 4, 5]
    for split in ("train", "val", "test"):
        extra = {"step/loss"} if split == "train" else set()
        split_tb = read_tb(tmp_path, split)
        assert {"epoch/loss", "epoch/accuracy"} | extra == set(split_tb.Tags()["scalars"])
        for tag in ("epoch/loss", "epoch/accuracy"):
            values = [(e.step, e.value) for e in split_tb.Scalars(tag)]
            assert [step for step, _ in values] == [1, 2, 3, 4, 5]
            assert values[-1][1] == pytest.approx(metrics[f"{split}_{tag[6:]}"], rel=1e-6)
    train_loss = [e.value for e in read_tb(tmp_path, "train").Scalars("epoch/loss")]
    assert train_loss[-1] < 0.5 * train_loss[0]
    # 96 samples / 16 per batch = 6 steps per epoch, 30 in all, one point every 4 steps
    assert [e.step for e in read_tb(tmp_path, "train").Scalars("step/loss")] == \
        list(range(4, 31, 4))
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
def test_resume_is_bitwise_identical_to_uninterrupted(tmp_path, kind, caplog):
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
    with caplog.at_level(logging.WARNING, logger="convtrain"):
        resumed, resumed_metrics = run(tmp_path / "resumed", 4, model_seed=2,
                                       resume=str(tmp_path / "part" / "checkpoints" /
                                                  "last.safetensors"))
    assert not caplog.records  # same schedule, seed and data: nothing to warn about
    for key in ("train_loss", "train_accuracy", "val_loss", "test_loss", "epochs_completed",
                "best_epoch", "best_val_accuracy", "lr"):
        assert resumed_metrics[key] == full_metrics[key], key
    assert resumed.global_step == full.global_step
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v, err_msg=k)
    for k, v in full.optimizer.state_dict().items():
        np.testing.assert_array_equal(resumed.optimizer.state_dict()[k], v, err_msg=k)


def test_resume_refuses_other_seed_or_data(tmp_path, caplog):
    """Another seed or data.* setting would draw another validation split: images the
    checkpoint was trained on could end up in it, so resuming is refused, naming the key."""
    base = {"name": "digits", "subset": 300, "val_fraction": 0.2}

    def trainer(run_dir, seed=7, max_epochs=2, resume=None, data=None, **data_cfg):
        data = data or load_dataset({**base, **data_cfg}, seed=seed)
        return make_trainer(run_dir, data, SoftmaxRegression(data.input_shape, 10),
                            seed=seed, max_epochs=max_epochs, resume=resume)

    trainer(tmp_path / "a", max_epochs=1).fit()
    last = str(tmp_path / "a" / "checkpoints" / "last.safetensors")
    # the reviewer's case: the seed-8 validation split holds images trained on with seed 7
    raw = {**base, "normalize": False}
    trained = load_dataset(raw, seed=7).train.x.reshape(-1, 64)
    new_val = load_dataset({**raw, "val_fraction": 0.3}, seed=8).val.x.reshape(-1, 64)
    assert (new_val[:, None] == trained[None]).all(-1).any()
    with pytest.raises(ConfigError, match=r"^seed: the checkpoint was trained with seed=7, "
                                          r"this run has seed=8; resuming with a different seed"):
        trainer(tmp_path / "b", seed=8, resume=last, val_fraction=0.3).fit()
    for key, value in (("val_fraction", 0.3), ("subset", 250), ("subset", None),
                       ("normalize", False)):
        with pytest.raises(ConfigError, match=rf"^data\.{key}: the checkpoint was trained with "
                                              rf"data\.{key}="):
            trainer(tmp_path / "b", resume=last, **{key: value}).fit()
    # same settings, other statistics: the files behind data.name changed
    data = load_dataset(base, seed=7)
    shifted = dataclasses.replace(data, normalization=Normalization((0.5,), (0.25,)))
    with pytest.raises(ConfigError, match=r"^data: the training split's normalisation "
                                          r"statistics .* differ .*data\.root"):
        trainer(tmp_path / "b", resume=last, data=shifted).fit()
    assert trainer(tmp_path / "b", resume=last).fit()["epochs_completed"] == 2

    # a checkpoint from before these records: accepted, with a warning
    old = load_checkpoint(last)
    meta = {k: v for k, v in old.meta.items() if k not in ("data", "format")}
    save_checkpoint(tmp_path / "old", "last", old.model_state, old.optimizer_state, meta)
    with caplog.at_level(logging.WARNING, logger="convtrain"):
        resumed = trainer(tmp_path / "c", resume=str(tmp_path / "old"), val_fraction=0.3).fit()
    assert resumed["epochs_completed"] == 2
    assert any("predates data records" in r.getMessage() for r in caplog.records)


def test_resume_with_default_t_max_follows_this_run_and_warns(tmp_path, caplog):
    """Cosine's unset t_max follows trainer.max_epochs of the resumed run (documented in
    convtrain.optim.schedules); the change is a warning naming scheduler.t_max."""
    data = blobs()
    opt = {"name": "sgd", "lr": 0.1}
    make_trainer(tmp_path / "part", data, opt=opt, sched={"name": "cosine"}, max_epochs=2).fit()
    part = str(tmp_path / "part")
    with caplog.at_level(logging.WARNING, logger="convtrain"):
        longer = make_trainer(tmp_path / "longer", data, opt=opt, sched={"name": "cosine"},
                              max_epochs=4, resume=part).fit()
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "scheduler.t_max=2 -> 4 (unset, so it follows trainer.max_epochs)" in warning
    assert "set scheduler.t_max=2 to continue the checkpoint's curve" in warning
    # epoch 4 (index 3) of a 4-epoch cosine from 0.1 to 0: 0.1 * (1 + cos(3 pi / 4)) / 2
    assert longer["lr"] == pytest.approx(0.1 * (1 + math.cos(3 * math.pi / 4)) / 2)
    # keeping the checkpoint's curve explicitly: lr stays at eta_min, and nothing to warn about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="convtrain"):
        kept = make_trainer(tmp_path / "kept", data, opt=opt, sched={"name": "cosine", "t_max": 2},
                            max_epochs=3, resume=part).fit()
    assert kept["lr"] == 0.0
    assert not [r for r in caplog.records if "schedule" in r.getMessage()]


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

        def evaluate(model, split, *args, **kwargs):
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
    assert [e.step for e in read_tb(tmp_path, "train").Scalars("epoch/loss")] == [1]


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
    ({"drop_last": "yes"}, r"trainer\.drop_last: expected true, false or null"),
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


# --- batchnorm and the last batch ---------------------------------------------------------
def bn_model(data, pool=4):
    """conv -> maxpool(pool) -> batchnorm: with pool=4 on 4x4 images the norm sees 1x1 maps."""
    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1},
                      "pool": {"type": "maxpool2d", "kernel_size": pool, "stride": pool},
                      "bn": {"type": "batchnorm2d"}, "flat": {"type": "flatten"},
                      "fc": {"type": "dense", "units": data.num_classes}}}
    return build_model(cfg, data.input_shape, seed=0)


def test_single_sample_last_batch_is_dropped_for_batchnorm(tmp_path, caplog):
    data = blobs(n_train=97)  # 6 batches of 16, then 1 sample
    with caplog.at_level(logging.INFO, logger="convtrain"):
        t = make_trainer(tmp_path / "auto", data, bn_model(data), max_epochs=2)
        metrics = t.fit()
    assert t.drop_last is True and t.global_step == 12
    assert metrics["epochs_completed"] == 2 and math.isfinite(metrics["train_loss"])
    dropping = [r for r in caplog.records if "dropping the last training batch" in r.getMessage()]
    assert len(dropping) == 1 and "model.layers.bn" in dropping[0].getMessage()
    with pytest.raises(ConfigError, match=r"trainer\.drop_last: false .*1 sample.*"
                                          r"model\.layers\.bn"):
        make_trainer(tmp_path / "no", data, bn_model(data), drop_last=False)
    with pytest.raises(ConfigError, match=r"trainer\.batch_size: training batches of 1 sample"
                                          r".*model\.layers\.bn"):
        make_trainer(tmp_path / "one", data, bn_model(data), batch_size=1)
    # auto keeps the batch where it is harmless: no batchnorm, or batchnorm on 2x2 maps
    for model in (None, bn_model(data, pool=2)):
        t = make_trainer(tmp_path / "keep", data, model, max_epochs=1)
        t.fit()
        assert t.drop_last is False and t.global_step == 7
    t = make_trainer(tmp_path / "explicit", data, max_epochs=1, drop_last=True)
    t.fit()
    assert t.global_step == 6
    with pytest.raises(ConfigError, match=r"trainer\.drop_last: true .*no training batch"):
        make_trainer(tmp_path / "none", blobs(n_train=10), drop_last=True)


def test_metrics_are_per_sample_means_with_an_uneven_last_batch(tmp_path):
    """lr=0 keeps the weights fixed, so the epoch's running train metrics must equal one
    full-batch evaluation; 96 = 9x10 + 6 and 24 = 3x7 + 3 make batch means differ."""
    data = blobs()
    frozen = SimpleNamespace(base_lr=0.1, lr_at=lambda epoch: 0.0)
    t = make_trainer(tmp_path, data, opt={"name": "sgd", "lr": 0.1}, sched=frozen, max_epochs=1,
                     batch_size=10, eval_batch_size=7)
    metrics = t.fit()
    for split in ("train", "val", "test"):
        s = getattr(data, split)
        loss, acc = softmax_ce_reference(t.model.forward(s.x, training=False), s.y)
        assert metrics[f"{split}_accuracy"] == acc, split
        assert metrics[f"{split}_loss"] == pytest.approx(loss, rel=1e-6), split


def test_random_crop_must_be_smaller_than_the_image(tmp_path):
    data = blobs()  # 4x4 images
    with pytest.raises(ConfigError, match=r"data\.augment\.random_crop: 4 pixels of padding on "
                                          r"4x4 images"):
        make_trainer(tmp_path, data, augment={"random_crop": 4})
    with pytest.raises(ConfigError, match=r"data\.augment\.horizontal_flip"):
        make_trainer(tmp_path, data, augment={"horizontal_flip": "yes"})
    make_trainer(tmp_path, data, max_epochs=1, augment={"random_crop": 3,
                                                        "horizontal_flip": True}).fit()


@pytest.mark.parametrize("crash_at", [1, 2])
def test_best_is_written_before_last(tmp_path, monkeypatch, crash_at):
    """A crash between the two checkpoint writes of an improving epoch must not leave `last`
    (what a resume reads) claiming a best epoch newer than the best file."""
    data = blobs()
    accuracies = iter([0.5, 0.5, 0.7, 0.7])  # val then test, per epoch: epoch 2 improves

    def evaluate(model, split, *args, **kwargs):
        return 1.0, next(accuracies)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    real_save = checkpointing.save_checkpoint
    calls = []

    def save(directory, name, *args):
        calls.append(name)
        if len(calls) == 2 + crash_at:  # epoch 1 wrote two files
            raise OSError("simulated crash")
        return real_save(directory, name, *args)

    monkeypatch.setattr(checkpointing, "save_checkpoint", save)
    with pytest.raises(OSError, match="simulated"):
        make_trainer(tmp_path, data, max_epochs=3).fit()
    best = load_checkpoint(tmp_path / "checkpoints" / "best")
    last = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert best.meta["epoch"] >= last.meta["best"]["epoch"]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_completed"] == 1
