"""The training loop: epochs of shuffled mini-batches, evaluation, checkpoints and logging.

One :class:`Trainer` runs one training job into one run directory::

    run_dir/
      metrics.json                 rewritten (atomically) after every epoch
      tensorboard/events.out...    per-epoch scalars, train/loss_step, the config text, filter
                                   grids, feature maps, histograms, the HParams session
      images/kernels/, images/feature_maps/    PNG copies of the grids
      checkpoints/last.safetensors + last.json    after every epoch
      checkpoints/best.safetensors + best.json    when the monitored metric improves

Pictures, histograms and hparams: :mod:`convtrain.visuals.tb_logging` (tags, files, schedule).

Reproducibility: batches are shuffled by a NumPy Generator seeded from ``seed``; its state and
the state of every layer's ``rng`` (dropout) are saved in each checkpoint, so ``resume=`` a
checkpoint of epoch k reproduces an uninterrupted run bit for bit on the NumPy backend.

Resuming checks that the run trains on the same data: a different ``seed``, ``data.name``,
``data.subset``, ``data.val_fraction`` or ``data.normalize`` (or different normalisation
statistics) is a ConfigError, since another validation split could contain images the
checkpoint was trained on. A schedule that differs from the checkpoint's (e.g. cosine's default
``t_max`` following a raised ``trainer.max_epochs``) is followed, with a warning naming the key
(see :mod:`convtrain.optim.schedules`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import convtrain
from convtrain import validate
from convtrain.data.augment import check_augment_fits, parse_augment
from convtrain.data.loader import iterate_batches, num_batches
from convtrain.ops.losses import softmax_cross_entropy
from convtrain.errors import ConfigError
from convtrain.visuals.tensorboard import TensorBoardWriter
from convtrain.training.checkpoint import load_checkpoint, save_checkpoint
from convtrain.training.metrics import RunningAverage, count_correct, evaluate, json_safe, \
    write_metrics
from convtrain.training.progress import EpochProgress, resolve_progress
from convtrain.visuals.tb_logging import VisualLogger, first_image, flatten_config, \
    parse_logger_settings

log = logging.getLogger("convtrain")

#: metric name -> whether larger is better ("max") or smaller ("min").
MONITORS = {"val_accuracy": "max", "val_loss": "min", "train_accuracy": "max",
            "train_loss": "min"}
# Mixed into the seed so the shuffle stream differs from weight init / data split streams
# that other modules derive from the same user seed.
_SHUFFLE_STREAM = 0x5EED5


class TrainingDiverged(ConfigError):
    """The training loss became NaN or infinite (almost always: the learning rate is too high).

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: global step (1-based count of training batches) whose loss was not finite.
        lr: learning rate in effect.
    """

    def __init__(self, message: str, *, epoch: int, step: int, lr: float):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.lr = lr


@dataclasses.dataclass
class _Best:
    """The epoch where the monitored metric was best so far (all None before the first)."""

    epoch: int | None = None
    value: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None

    def improves(self, value: float, mode: str) -> bool:
        if self.value is None:
            return True
        return value > self.value if mode == "max" else value < self.value


@dataclasses.dataclass
class _Totals:
    """Time and work accumulated over all epochs, including those before a resume."""

    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    train_images: int = 0

    @property
    def train_images_per_s(self) -> float | None:
        return self.train_images / self.train_time_s if self.train_time_s > 0 else None


def _output_layer_hint(model: Any, num_classes: int) -> str:
    """Which config key makes the model output ``num_classes`` logits."""
    layers = getattr(model, "layers", {}) or {}
    for name, layer in reversed(list(layers.items())):
        if hasattr(layer, "out_features"):  # a Dense layer (or one shaped like it)
            return f"set model.layers.{name}.units={num_classes}"
    return f"end the model with a dense layer of units={num_classes}"


def _data_identity(data: Any) -> dict[str, Any]:
    """What decides the splits' contents (``DataSplits.identity()``; just the name otherwise)."""
    identity = getattr(data, "identity", None)
    return identity() if callable(identity) else {"name": getattr(data, "name", None)}


#: keys a resumed run must share with its checkpoint (first difference reported) -> why
_RESUME_KEYS = {
    "data.name": "continue training on another dataset",
    "seed": "draw another validation split (and data.subset), which could contain images the "
            "checkpoint was trained on",
    "data.subset": "draw other training and validation samples, so the validation split could "
                   "contain images the checkpoint was trained on",
    "data.val_fraction": "draw another validation split, which could contain images the "
                         "checkpoint was trained on",
    "data.normalize": "feed the model inputs on another scale than it was trained on",
}


def _cli(value: Any) -> str:
    """``value`` as written in a command-line override."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _batchnorms_needing_two_samples(model: Any) -> list[str]:
    """Batch-norm layers whose input maps are 1x1: a 1-sample training batch gives them a
    single value per channel, whose variance is undefined (the engine refuses it)."""
    names = []
    for name, layer in (getattr(model, "layers", {}) or {}).items():
        if "batchnorm" in type(layer).__name__.lower():
            shape = getattr(layer, "input_shape", None)
            if shape is None or math.prod(int(d) for d in shape[1:]) < 2:
                names.append(name)
    return names


def _layer_rngs(model: Any) -> dict[str, Any]:
    """Layers' NumPy Generators (dropout masks) whose state a checkpoint must carry."""
    out = {}
    for name, layer in (getattr(model, "layers", {}) or {}).items():
        rng = getattr(layer, "rng", None)
        if rng is not None:
            out[name] = rng
    return out


def _restore_rng_state(rng: Any, state: Any, where: str) -> None:
    """Set a layer's NumPy Generator to a checkpoint's state (a NumPy bit-generator dict).

    Raises:
        ConfigError: the layer's rng is not a host NumPy Generator (a CuPy Generator's
            ``bit_generator.state`` is a method: assigning a dict over it would only break
            the next draw), or the saved state does not fit it.
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"{where}: the checkpoint holds a NumPy rng state, but the layer "
                          f"draws from a {type(rng).__module__}.{type(rng).__name__}, whose "
                          f"state cannot be restored (resume with backend=numpy)")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: the checkpoint's rng state does not fit its NumPy "
                          f"{type(rng.bit_generator).__name__} generator ({exc})") from None


class Trainer:
    """Trains ``model`` on ``data`` with ``optimizer`` under ``schedule``.

    Args:
        model: the model (``forward``/``backward``/``named_parameters``/``state_dict``/
            ``load_state_dict``/``output_shape``; optional ``layers`` for rng states).
        optimizer: a :class:`convtrain.optim.Optimizer` over ``model``.
        schedule: a :class:`convtrain.optim.Schedule`; sets ``optimizer.lr`` every epoch.
        data: ``DataSplits`` (``train``/``val``/``test`` splits, ``num_classes``). ``val`` may
            be empty: then the ``val_*`` monitor falls back to the matching ``train_*`` metric.
        run_dir: the run directory (created if missing).
        backend: the run's Backend; batches are moved onto it by the loader.
        seed: seeds the shuffle order (and is recorded in metrics.json).
        max_epochs, batch_size: positive ints. ``eval_batch_size`` defaults to 4x batch_size.
        drop_last: skip the final, smaller training batch. None (auto) drops it only when it
            holds a single sample and a batchnorm layer sees 1x1 maps (one value per channel:
            no variance to normalise with); False in that case is a ConfigError.
        progress: ``"auto"`` (tqdm bars only when stderr is a terminal), True or False.
        log_every_n_steps: period of the ``train/loss_step`` scalar (0 disables it).
        checkpoint: write ``checkpoints/last`` and ``best`` every epoch.
        monitor: one of :data:`MONITORS`; decides the ``best`` checkpoint and ``best_*`` keys.
        resume: a checkpoint path (or run / checkpoints directory, meaning ``last``) whose
            model, optimizer, epoch counter and rng states are restored before training.
        config_text: the composed config (YAML), stored in checkpoints and TensorBoard.
        augment: ``data.augment``, checked against the image size and passed to the loader
            for training batches only.
        logger: the ``logger`` config group (see :class:`convtrain.app.schema.LoggerConfig`);
            None = its defaults.
        hparams: the run's hyperparameters for TensorBoard's HParams dashboard, nested or
            flat (flattened with :func:`~convtrain.visuals.tb_logging.flatten_config`); None
            logs ``seed``, ``trainer.max_epochs``, ``trainer.batch_size`` and
            ``optimizer.lr``.

    Raises:
        ConfigError: naming ``trainer.<key>`` / ``logger.<key>`` for bad settings, or the
            layer whose ``units`` must change when the model's output does not match the
            number of classes.
    """

    def __init__(self, model: Any, optimizer: Any, schedule: Any, data: Any, *,
                 run_dir: str | Path, backend: Any, seed: int, max_epochs: int,
                 batch_size: int, eval_batch_size: int | None = None,
                 drop_last: bool | None = None,
                 progress: bool | str = "auto", log_every_n_steps: int = 50,
                 checkpoint: bool = True, monitor: str = "val_accuracy",
                 resume: str | None = None, config_text: str | None = None,
                 augment: Any = None, logger: Any = None,
                 hparams: Mapping[str, Any] | None = None):
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.data = data
        self.run_dir = Path(run_dir)
        self.backend = backend
        self.seed = validate.seed(seed)
        self.max_epochs = validate.positive_int("trainer.max_epochs", max_epochs)
        self.batch_size = validate.positive_int("trainer.batch_size", batch_size)
        self.eval_batch_size = (
            4 * self.batch_size if eval_batch_size is None
            else validate.positive_int("trainer.eval_batch_size", eval_batch_size))
        self.show_progress = resolve_progress(progress)
        self.log_every_n_steps = validate.non_negative_int(
            "trainer.log_every_n_steps", log_every_n_steps, zero_means="off")
        self.checkpoint = bool(checkpoint)
        if monitor not in MONITORS:
            raise ConfigError(f"trainer.monitor: expected one of {', '.join(MONITORS)}, "
                              f"got {monitor!r}")
        self.requested_monitor = monitor
        self.resume = resume
        self.config_text = config_text
        self.augment = parse_augment(augment, "data.augment")
        check_augment_fits(self.augment, tuple(data.train.x.shape), "data.augment")
        self.logger = parse_logger_settings(logger)
        self.hparams = flatten_config(hparams if hparams is not None else {
            "seed": self.seed, "trainer.max_epochs": self.max_epochs,
            "trainer.batch_size": self.batch_size, "optimizer.lr": self._base_lr()})
        self._check_data_and_model()
        self.drop_last = self._resolve_drop_last(drop_last)
        if monitor.startswith("val_") and len(data.val) == 0:
            # nothing to validate on: "best" is judged on the training metrics instead
            monitor = "train_" + monitor[len("val_"):]
            log.info("validation split is empty: monitoring %s instead of %s", monitor,
                     self.requested_monitor)
        #: the metric actually monitored (``val_*`` falls back to ``train_*`` without val data)
        self.monitor = monitor
        self.monitor_mode = MONITORS[monitor]
        self.global_step = 0
        self._best = _Best()
        self._totals = _Totals()
        self._shuffle_rng = np.random.default_rng([self.seed, _SHUFFLE_STREAM])

    # --- checks ------------------------------------------------------------------------
    def _check_data_and_model(self) -> None:
        data, k = self.data, int(self.data.num_classes)
        if len(data.train) == 0:
            raise ConfigError(f"data: dataset '{getattr(data, 'name', '?')}' has an empty "
                              "training split")
        out = tuple(int(d) for d in self.model.output_shape)
        if out != (k,):
            raise ConfigError(
                f"model output shape {out} does not match the {k} classes of dataset "
                f"'{getattr(data, 'name', '?')}': {_output_layer_hint(self.model, k)}"
            )

    def _resolve_drop_last(self, drop_last: bool | None) -> bool:
        if drop_last is not None:
            drop_last = validate.boolean("trainer.drop_last", drop_last,
                                         expected="true, false or null (auto)")
        n, size = len(self.data.train), self.batch_size
        batchnorms = _batchnorms_needing_two_samples(self.model)
        if batchnorms and min(n, size) == 1:
            raise ConfigError(
                f"trainer.batch_size: training batches of 1 sample (trainer.batch_size={size}, "
                f"{n} training samples) give batchnorm layer model.layers.{batchnorms[0]} one "
                f"value per channel (its input maps are 1x1); use batches of 2 or more")
        single_last = bool(batchnorms) and n % size == 1
        if single_last and drop_last is False:
            raise ConfigError(
                f"trainer.drop_last: false leaves a last training batch of 1 sample ({n} "
                f"samples, trainer.batch_size={size}), which batchnorm layer "
                f"model.layers.{batchnorms[0]} cannot train on (one value per channel); set "
                f"trainer.drop_last=null (auto) or true, or change trainer.batch_size")
        if drop_last is None:
            drop_last = single_last
            if drop_last:
                log.info("dropping the last training batch of every epoch: it would hold 1 "
                         "sample, too few for batchnorm layer model.layers.%s "
                         "(trainer.drop_last=null)", batchnorms[0])
        if num_batches(n, size, drop_last) == 0:
            raise ConfigError(f"trainer.drop_last: true with trainer.batch_size={size} leaves "
                              f"no training batch for the {n} training samples")
        return drop_last

    # --- public ------------------------------------------------------------------------
    @property
    def best_monitor_value(self) -> float | None:
        """The best value of :attr:`monitor` so far (what a hyperparameter sweep optimises)."""
        return self._best.value

    def fit(self) -> dict[str, Any]:
        """Train from the first (or resumed) epoch to ``max_epochs``.

        Returns:
            the metrics of the last epoch, also written to ``run_dir/metrics.json`` (keys in
            :data:`convtrain.training.metrics.METRIC_KEYS`, plus ``lr``).

        Raises:
            TrainingDiverged: when the training loss becomes NaN/inf (earlier epochs' files
                stay intact).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        start_epoch = self._restore(self.resume) if self.resume is not None else 0
        session_start = time.perf_counter()
        wall_before = self._totals.wall_time_s
        metrics: dict[str, Any] = {}
        tb_dir = self.run_dir / "tensorboard"
        with TensorBoardWriter(tb_dir, enabled=self.logger.tensorboard) as tb:
            if self.config_text:
                # indented = a Markdown code block, so TensorBoard keeps the YAML layout
                tb.add_text("config", "\n".join("    " + line
                                                for line in self.config_text.splitlines()), 0)
            visuals = VisualLogger(self.logger, tb, model=self.model, backend=self.backend,
                                   sample=first_image(self.data),
                                   images_dir=self.run_dir / "images", hparams=self.hparams,
                                   max_epochs=self.max_epochs, start_epoch=start_epoch)
            with visuals:  # ends the HParams session even when training fails
                for epoch in range(start_epoch, self.max_epochs):
                    metrics = self._run_epoch(epoch, tb, visuals, session_start, wall_before)
        return metrics

    # --- one epoch ---------------------------------------------------------------------
    def _run_epoch(self, epoch: int, tb: TensorBoardWriter, visuals: VisualLogger,
                   session_start: float, wall_before: float) -> dict[str, Any]:
        epoch_start = time.perf_counter()
        lr = float(self.schedule.lr_at(epoch))
        self.optimizer.lr = lr
        train_loss, train_acc, train_seconds, n_train = self._train_one_epoch(epoch, lr, tb)
        val_loss, val_acc = self._evaluate(self.data.val)
        test_loss, test_acc = self._evaluate(self.data.test)
        epoch_time = time.perf_counter() - epoch_start

        totals = self._totals
        totals.train_time_s += train_seconds
        totals.train_images += n_train
        totals.wall_time_s = wall_before + (time.perf_counter() - session_start)
        split_metrics = {"train_loss": train_loss, "train_accuracy": train_acc,
                         "val_loss": val_loss, "val_accuracy": val_acc,
                         "test_loss": test_loss, "test_accuracy": test_acc}
        value = split_metrics[self.monitor]
        improved = value is not None and math.isfinite(value) \
            and self._best.improves(value, self.monitor_mode)
        if improved:
            self._best = _Best(epoch + 1, value, val_acc, test_acc)
        metrics = {
            **split_metrics,
            "epochs_completed": epoch + 1,
            "wall_time_s": totals.wall_time_s,
            "train_images_per_s": totals.train_images_per_s,
            "best_epoch": self._best.epoch,
            "best_val_accuracy": self._best.val_accuracy,
            "best_test_accuracy": self._best.test_accuracy,
            "monitor": self.monitor,
            "best_monitor_value": self._best.value,
            "seed": self.seed,
            "backend": self.backend.name,
            "lr": lr,
        }
        if self.checkpoint:
            # best before last: a crash in between must not leave `last` (what a resume reads)
            # pointing at a best epoch whose file was never written
            self._save(("best", "last") if improved else ("last",), epoch, metrics)
        write_metrics(self.run_dir / "metrics.json", metrics)

        step = epoch + 1
        for tag, key in (("train/loss", "train_loss"), ("train/accuracy", "train_accuracy"),
                         ("val/loss", "val_loss"), ("val/accuracy", "val_accuracy"),
                         ("test/loss", "test_loss"), ("test/accuracy", "test_accuracy")):
            if metrics[key] is not None:
                tb.add_scalar(tag, metrics[key], step)
        tb.add_scalar("lr", lr, step)
        tb.add_scalar("epoch_time_s", epoch_time, step)
        tb.add_scalar("images_per_s", n_train / train_seconds if train_seconds > 0 else 0.0,
                      step)
        visuals.log_epoch(epoch)
        tb.flush()  # the epoch's records are readable while training goes on
        log.info("%s", self._epoch_line(epoch, metrics, epoch_time, n_train, train_seconds,
                                        improved))
        return metrics

    def _train_one_epoch(self, epoch: int, lr: float,
                         tb: TensorBoardWriter) -> tuple[float, float, float, int]:
        """One pass over the shuffled training split.

        Returns:
            ``(mean loss, accuracy, seconds in the loop, images)`` over the epoch's samples.
        """
        train = self.data.train
        avg = RunningAverage()
        total_batches = num_batches(len(train), self.batch_size, self.drop_last)
        self.backend.synchronize()
        start = time.perf_counter()
        with EpochProgress(enabled=self.show_progress, epoch=epoch + 1,
                           max_epochs=self.max_epochs, total_batches=total_batches) as bar:
            for xb, yb in iterate_batches(train, self.batch_size, shuffle=True,
                                          rng=self._shuffle_rng, backend=self.backend,
                                          drop_last=self.drop_last, augment=self.augment):
                logits = self.model.forward(xb, training=True)
                loss, dlogits = softmax_cross_entropy(logits, yb)
                self.global_step += 1
                if not math.isfinite(loss):
                    raise self._diverged(epoch, lr, loss)
                correct = count_correct(logits, yb)
                # the gradient w.r.t. the images is never used: the first layer skips it
                self.model.backward(dlogits, input_grad=False)
                self.optimizer.step()
                avg.add(loss, correct, int(yb.shape[0]))
                bar.update(avg.loss, avg.accuracy)
                if self.log_every_n_steps and self.global_step % self.log_every_n_steps == 0:
                    tb.add_scalar("train/loss_step", loss, self.global_step)
        self.backend.synchronize()
        return avg.loss, avg.accuracy, time.perf_counter() - start, avg.count

    def _evaluate(self, split: Any) -> tuple[float | None, float | None]:
        return evaluate(self.model, split, self.eval_batch_size, self.backend,
                        softmax_cross_entropy, iterate_batches)

    def _diverged(self, epoch: int, lr: float, loss: float) -> TrainingDiverged:
        message = (f"training diverged: the loss became {loss} in epoch {epoch + 1}, step "
                   f"{self.global_step} (lr={lr:g}). Lower the learning rate, e.g. "
                   f"optimizer.lr={self._base_lr() / 10:g}, or add a warm-up "
                   f"(scheduler.warmup_epochs)")
        if epoch > 0:
            kept = "checkpoints and metrics.json" if self.checkpoint else "metrics.json"
            message += f"; {kept} of the completed epochs 1-{epoch} are kept in {self.run_dir}"
        return TrainingDiverged(message + ".", epoch=epoch + 1, step=self.global_step, lr=lr)

    def _base_lr(self) -> float:
        """The configured lr (the schedule's base), which is what the user can change."""
        return float(getattr(self.schedule, "base_lr", self.optimizer.lr))

    def _epoch_line(self, epoch: int, m: dict[str, Any], epoch_time: float, n_train: int,
                    train_seconds: float, improved: bool) -> str:
        def pair(prefix: str) -> str:
            if m[f"{prefix}_loss"] is None:
                return f"{prefix} -"
            return f"{prefix} loss {m[f'{prefix}_loss']:.4f} acc {m[f'{prefix}_accuracy']:.4f}"

        width = len(str(self.max_epochs))
        speed = n_train / train_seconds if train_seconds > 0 else 0.0
        return (f"epoch {epoch + 1:>{width}}/{self.max_epochs}  lr {m['lr']:.3g}  "
                f"{pair('train')}  {pair('val')}  {pair('test')}  "
                f"{epoch_time:.1f}s {speed:.0f} img/s" + ("  *best" if improved else ""))

    # --- checkpoints -------------------------------------------------------------------
    def _save(self, names: tuple[str, ...], epoch: int, metrics: dict[str, Any]) -> None:
        """Write the same checkpoint under each of ``names``, in order (``("best", "last")``:
        best first, so ``last`` never points at a best epoch whose file is older); the
        state is copied to the host once."""
        rng_states = {}
        for layer_name, rng in _layer_rngs(self.model).items():
            # only a host NumPy Generator has a saveable state (CuPy's lives in device memory;
            # its bit_generator.state is a method); convtrain's dropout always keeps one
            if isinstance(rng, np.random.Generator):
                rng_states[layer_name] = rng.bit_generator.state
            else:
                log.warning("layer '%s': cannot save the state of its %s.%s rng; a resumed "
                            "run will not reproduce its random masks exactly", layer_name,
                            type(rng).__module__, type(rng).__name__)
        meta = {
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "metrics": json_safe(metrics),
            "monitor": self.monitor,
            "best": json_safe(dataclasses.asdict(self._best)),
            "totals": dataclasses.asdict(self._totals),
            "rng": {"shuffle": self._shuffle_rng.bit_generator.state, "layers": rng_states},
            "optimizer": getattr(self.optimizer, "name", type(self.optimizer).__name__),
            "seed": self.seed,
            "data": json_safe(_data_identity(self.data)),
            "schedule": self._resolved_schedule(),
            "config": self.config_text,
            "convtrain_version": convtrain.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        model_state, optimizer_state = self.model.state_dict(), self.optimizer.state_dict()
        for name in names:
            save_checkpoint(self.run_dir / "checkpoints", name, model_state, optimizer_state, meta)

    def _restore(self, path: str | Path) -> int:
        """Load model, optimizer, counters and rng states; return the epoch to start at."""
        ckpt = load_checkpoint(path)
        where = f"resume '{ckpt.path}'"
        meta = ckpt.meta
        try:
            epoch = int(meta["epoch"])
            global_step = int(meta["global_step"])
            shuffle_state = meta["rng"]["shuffle"]
            layer_states = meta["rng"].get("layers", {})
            saved_optimizer = meta["optimizer"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: checkpoint metadata lacks {exc}") from None
        own_optimizer = getattr(self.optimizer, "name", type(self.optimizer).__name__)
        if saved_optimizer != own_optimizer:
            raise ConfigError(f"{where}: the checkpoint was trained with optimizer "
                              f"'{saved_optimizer}', this run uses '{own_optimizer}' "
                              f"(set optimizer={saved_optimizer})")
        if epoch >= self.max_epochs:
            raise ConfigError(f"{where}: the checkpoint already completed {epoch} epochs; "
                              f"set trainer.max_epochs above {epoch} to train further")
        self._check_same_data(meta, where)
        self._compare_schedule(meta.get("schedule"), epoch, where)
        try:
            self.model.load_state_dict(ckpt.model_state, strict=True)
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        _restore_rng_state(self._shuffle_rng, shuffle_state, f"{where}: the shuffle order")
        rngs = _layer_rngs(self.model)
        for layer_name, state in layer_states.items():
            if layer_name not in rngs:
                raise ConfigError(f"{where}: the checkpoint has an rng state for layer "
                                  f"'{layer_name}', which this model has no rng for")
            _restore_rng_state(rngs[layer_name], state, f"{where}: layer '{layer_name}'")
        if meta.get("monitor") == self.monitor and isinstance(meta.get("best"), dict):
            self._best = _Best(**meta["best"])
        else:
            log.warning("%s: monitored metric changed from %s to %s; best is tracked anew",
                        where, meta.get("monitor"), self.monitor)
        self._totals = _Totals(**meta.get("totals", {}))
        self.global_step = global_step
        log.info("resumed from %s after epoch %d (global step %d)", ckpt.path, epoch,
                 global_step)
        return epoch

    def _check_same_data(self, meta: Mapping[str, Any], where: str) -> None:
        """Refuse to resume on other splits than the checkpoint was trained on."""
        own = _data_identity(self.data)
        saved = meta.get("data")
        if not isinstance(saved, dict):
            log.warning("%s: the checkpoint predates data records; cannot check that this run "
                        "(data %s) trains on the same training/validation split", where,
                        {k: v for k, v in own.items() if k != "normalization"})
            saved = {}
        flat_own = {"seed": self.seed, **{f"data.{k}": v for k, v in own.items()}}
        flat_saved = {"seed": meta.get("seed"), **{f"data.{k}": v for k, v in saved.items()}}
        for key, reason in _RESUME_KEYS.items():
            if key in flat_saved and key in flat_own and flat_saved[key] != flat_own[key]:
                raise ConfigError(
                    f"{key}: the checkpoint was trained with {key}={_cli(flat_saved[key])}, "
                    f"this run has {key}={_cli(flat_own[key])}; resuming with a different "
                    f"{key} would {reason} ({where}; set {key}={_cli(flat_saved[key])}, or "
                    f"train from scratch without trainer.resume)")
        stats, own_stats = saved.get("normalization"), own.get("normalization")
        if isinstance(stats, dict) and own_stats is not None and not all(
                np.allclose(stats[k], own_stats[k], rtol=1e-6, atol=0) for k in ("mean", "std")):
            raise ConfigError(
                f"data: the training split's normalisation statistics (mean {own_stats['mean']}, "
                f"std {own_stats['std']}) differ from the checkpoint's (mean {stats['mean']}, "
                f"std {stats['std']}) although seed and data settings match, so the dataset "
                f"files differ (check data.root) ({where})")

    def _resolved_schedule(self) -> dict[str, Any] | None:
        resolved = getattr(self.schedule, "resolved", None)
        return json_safe(resolved()) if callable(resolved) else None

    def _compare_schedule(self, saved: Any, epoch: int, where: str) -> None:
        """Warn when this run's lr curve differs from the checkpoint's (it is followed)."""
        own = self._resolved_schedule()
        if not isinstance(saved, dict) or own is None or saved == own:
            return
        derived = getattr(self.schedule, "derived", {})
        changes = []
        for key in sorted(set(saved) | set(own)):
            if saved.get(key) != own.get(key):
                name = "optimizer.lr" if key == "base_lr" else f"scheduler.{key}"
                note = f" (unset, so it follows {derived[key]})" if key in derived else ""
                changes.append(f"{name}={saved.get(key)!r} -> {own.get(key)!r}{note}")
        keep = [f"scheduler.{k}={saved[k]!r}" for k in derived
                if k in saved and saved[k] != own.get(k)]
        log.warning("%s: this run's learning-rate schedule differs from the checkpoint's: %s; "
                    "epochs from %d on follow this run's schedule (lr %.4g)%s", where,
                    ", ".join(changes), epoch + 1, self.schedule.lr_at(epoch),
                    f"; set {' '.join(keep)} to continue the checkpoint's curve" if keep else "")
