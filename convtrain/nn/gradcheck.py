"""Finite-difference gradient checks: of any function (the layer tests) and of a whole model.

The central difference ``(L(x + eps e_i) - L(x - eps e_i)) / (2 eps)`` of a scalar ``L`` is
compared with the gradient convtrain's backward pass computes. :func:`central_differences` is
the one perturbation loop; :func:`numerical_gradient` runs it over every element (the layer and
op tests), :func:`check_model` over a sample of every parameter tensor and the input of a
float64 :class:`~convtrain.nn.model.Model`, on the loss training minimises.

What :func:`check_model` checks, and why these numbers
------------------------------------------------------
* **The loss** is the trainer's: mean softmax cross-entropy of the logits of a forward pass in
  training mode (dropout active, batch norm on batch statistics). Weight decay is not part of
  it: the optimizers add ``weight_decay * w`` to the gradient *after* the backward pass, so the
  backward pass (what this checks) never sees it. The parameters' gradients come from the
  backward pass training runs (``input_grad=False``: the first layer skips the input's
  gradient), the input's from a second one that computes it.
* **Randomness**: every layer with a random stream (dropout) is reset to the state it had
  before the check ahead of every forward pass, so all perturbed losses use the same masks.
  Parameters, batch-norm running statistics and random states are as before afterwards.
* **Error per entry**: ``|a - n| / max(|a|, |n|, floor)`` for the analytic gradient ``a`` and
  the central difference ``n``. Rounding makes the computed loss wrong by about ``u * scale``
  (``u`` = 2.2e-16, ``scale = max(1, |L|, max |logit|)``), which puts noise of up to
  ``ROUNDING_NOISE_FACTOR * u * scale / eps`` into ``n`` (measured on the shipped models,
  36,000 entries: at most 2.9 ``u * scale / eps``; the factor 20 leaves a margin of 7).
  ``floor = noise / threshold``: for an entry smaller than that, the noise alone could exceed
  the threshold, so the check becomes an absolute one, ``|a - n| <= noise`` (a conv bias ahead of batch norm has a true gradient of
  exactly 0: its entries land here instead of producing ratios of rounding noise).
  When the floor exceeds every checked gradient (a threshold far below rounding noise, e.g.
  1e-12), every entry is such an absolute test: the verdict carries a warning
  (:meth:`GradcheckReport.floor_warning`).
* **eps = 1e-6** (float64): the truncation error ``eps^2 |L'''| / 6`` is ~1e-12 and the rounding
  noise ~1e-9 for a loss of a few units, so gradients of 1e-3 and up are resolved to 1e-6. A
  larger eps crosses more kinks (below), a smaller one has more rounding noise (measured on
  ``cifar_cnn``: eps = 1e-7 gives 10x the error of 1e-6; eps = 1e-5 already crosses kinks).
* **Threshold 1e-6**: a correct float64 backward pass stays below ~1e-7 on the shipped models
  (1-2 orders under it), while a 1 % slip in a backward formula gives 1e-2 and a dropped term
  gives ~1: a wide gap on both sides.
* **Kinks**: ReLU at 0 and max pooling at a tie are not differentiable; when ``x +- eps``
  straddles one, the central difference averages two slopes and is wrong even though the
  backward pass is right. Such an entry is recognised from the one-sided differences
  ``d+ = (L(x+eps) - L(x)) / eps`` and ``d- = (L(x) - L(x-eps)) / eps``: at a kink they differ
  by the jump in slope while the one on the smooth side agrees with the backward pass, so an
  entry above the threshold counts as a kink crossing (reported, not failed) when
  ``|d+ - d-| >= |a - n|`` and ``min(|d+ - a|, |d- - a|) <= |d+ - d-| / 4``. A wrong gradient
  shows the opposite signature (``d+ ~ d- ~ n`` far from ``a``). With eps = 1e-6 crossings are
  rare on inputs without exact ties (none in 36,000 entries of the shipped models on random
  inputs).
* **Ties in the data**: real images have constant backgrounds, and a convolution maps a
  constant patch to the same value everywhere: max-pooling windows of exactly equal values and
  pre-activations of exactly 0 (a bias-free filter summing to 0). There the function *sits* on
  a kink, often one where several slopes meet, and no finite difference can confirm the
  subgradient the backward pass picks (on ``digits`` every ``small_cnn`` check failed on the
  input's gradient this way). So the input gets Gaussian noise of std ``input_noise`` (default
  1e-3, in the input's units: normalised data has std 1) before the check: exact ties become
  gaps ~1000x eps, and a perturbation of one entry crosses one about once in a thousand
  windows it touches, where the one-sided test above catches it. 0 turns the noise off.
* **Sampling**: a tensor of up to ``entries_per_tensor`` entries is checked whole, a larger one
  at that many entries drawn at random (without repetition). The forward pass of a parameter's
  perturbation starts at its layer, from the saved input of that layer, so late layers cost
  little. A full check of ``cifar_cnn`` on 2 samples of 32x32 takes a few seconds.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from convtrain import validate
from convtrain.errors import InternalError
from convtrain.nn.graph import INPUT
from convtrain.ops.losses import softmax_cross_entropy
from convtrain.runtime.backend import to_host

#: central-difference step (float64).
DEFAULT_EPS = 1e-6
#: worst relative error per tensor that still passes.
DEFAULT_THRESHOLD = 1e-6
#: entries checked per tensor (smaller tensors are checked whole).
DEFAULT_ENTRIES_PER_TENSOR = 32
#: std of the noise added to the input to break exact ties (see above).
DEFAULT_INPUT_NOISE = 1e-3
#: the rounding noise of a central difference, in units of ``u * scale / eps`` (see above).
ROUNDING_NOISE_FACTOR = 20.0
#: the name of the model input's row in a report.
INPUT_NAME = "input"

_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps)


# --- the perturbation loop ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Differences:
    """Finite differences of a scalar at some entries of an array (each ``(k,)`` float64).

    Attributes:
        central: ``(L(x+eps) - L(x-eps)) / (2 eps)``.
        forward / backward: the one-sided ``(L(x+eps) - L(x)) / eps`` and
            ``(L(x) - L(x-eps)) / eps``; None when no base value ``L(x)`` was given.
    """

    central: np.ndarray
    forward: np.ndarray | None
    backward: np.ndarray | None


def central_differences(loss: Callable[[], float], x: Any, flat_indices: Sequence[int],
                        eps: float = DEFAULT_EPS, base: float | None = None) -> Differences:
    """Finite differences of ``loss`` w.r.t. the entries ``flat_indices`` of ``x``.

    Args:
        loss: no-argument callable returning a scalar; it must read ``x`` (by closure).
        x: a C-contiguous float64 array (NumPy or CuPy), perturbed in place one entry at a time
            and restored exactly (the original value is written back) afterwards.
        flat_indices: entries of ``x.reshape(-1)`` to perturb.
        eps: the step.
        base: ``loss()`` at the unperturbed ``x``; given, the one-sided differences come too.

    Raises:
        InternalError: ``x`` is not float64 or not contiguous (differences need both).
    """
    if x.dtype != np.float64:
        raise InternalError(f"gradient checks need float64 arrays, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise InternalError("finite differences need a contiguous array to perturb in place")
    flat_x = x.reshape(-1)  # a view: writes reach the array the closure reads
    count = len(flat_indices)
    plus = np.empty(count)
    minus = np.empty(count)
    for k, i in enumerate(flat_indices):
        original = flat_x[i].copy()
        flat_x[i] = original + eps
        plus[k] = float(loss())
        flat_x[i] = original - eps
        minus[k] = float(loss())
        flat_x[i] = original
    central = (plus - minus) / (2 * eps)
    if base is None:
        return Differences(central, None, None)
    return Differences(central, (plus - base) / eps, (base - minus) / eps)


def numerical_gradient(loss: Callable[[], float], x: np.ndarray,
                       eps: float = DEFAULT_EPS) -> np.ndarray:
    """Central differences of ``loss`` for every element of ``x`` (float64, shaped like ``x``);
    ``x`` is perturbed in place and restored (see :func:`central_differences`)."""
    return central_differences(loss, x, range(x.size), eps).central.reshape(x.shape)


def projected_sum(y, dy) -> float:
    """``sum(dy * y)`` as a Python float: a scalar whose gradient w.r.t. ``y`` is ``dy``
    (host arrays)."""
    return float(np.sum(np.asarray(dy, dtype=np.float64) * np.asarray(y, dtype=np.float64)))


def relative_error(analytic, numeric) -> float:
    """Norm-wise relative error ``max|a - n| / max(max|a|, max|n|)`` (0 when both are 0) of
    host arrays: entries that are legitimately ~0 do not produce huge ratios from rounding."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise InternalError(f"shape mismatch: analytic {a.shape} vs numeric {n.shape}")
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(n), initial=0.0)))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - n))) / scale


def entry_errors(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> np.ndarray:
    """Per-entry relative errors ``|a - n| / max(|a|, |n|, floor)`` (host float64 arrays)."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return np.abs(analytic - numeric) / scale


def kink_crossings(analytic: np.ndarray, differences: Differences) -> np.ndarray:
    """True where the one-sided differences show a kink between ``x - eps`` and ``x + eps``:
    they disagree by at least the central difference's error, and one of them (the smooth
    side) agrees with ``analytic`` to a quarter of that jump."""
    jump = np.abs(differences.forward - differences.backward)
    smooth_side = np.minimum(np.abs(differences.forward - analytic),
                             np.abs(differences.backward - analytic))
    return (jump >= np.abs(differences.central - analytic)) & (4 * smooth_side <= jump)


# --- the report ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TensorCheck:
    """The check of one tensor (a parameter, ``"conv1.weight"``, or the model input).

    Attributes:
        name / shape: the tensor (``INPUT_NAME`` for the input batch ``(N, C, H, W)``).
        checked: how many entries were compared (all, or a random sample).
        worst_error: the largest relative error among them, kink crossings left out (0.0 when
            every checked entry crossed a kink).
        worst_index: that entry's index in ``shape`` (None when there is none).
        analytic / numeric: the backward pass's gradient and the central difference there.
        kinks: entries above the threshold explained by a kink crossing (not failed).
        frozen: the parameter is not trained (its gradient is still computed and checked).
        passed: ``worst_error <= threshold``.
        largest: the largest ``max(|analytic|, |numeric|)`` among the checked entries (an
            entry below the report's ``floor`` is an absolute test, see the module docstring).
    """

    name: str
    shape: tuple[int, ...]
    checked: int
    worst_error: float
    worst_index: tuple[int, ...] | None
    analytic: float
    numeric: float
    kinks: int
    frozen: bool
    passed: bool
    largest: float = math.nan

    @property
    def status(self) -> str:
        return "ok" if self.passed else "FAIL"


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """The result of :func:`check_model`: one :class:`TensorCheck` per tensor and the setting.

    ``str(report)`` is the table and the verdict line; :attr:`exit_status` is 0 when every
    tensor passed, else 1.
    """

    model_name: str | None
    tensors: tuple[TensorCheck, ...]
    samples: int
    loss: float
    eps: float
    threshold: float
    floor: float
    seconds: float

    @property
    def passed(self) -> bool:
        return all(tensor.passed for tensor in self.tensors)

    @property
    def failed(self) -> list[TensorCheck]:
        return [tensor for tensor in self.tensors if not tensor.passed]

    @property
    def exit_status(self) -> int:
        return 0 if self.passed else 1

    def table(self) -> str:
        """An aligned table: tensor, shape, entries checked, worst relative error, its entry
        with both gradients, kink crossings and status."""
        header = ("tensor", "shape", "checked", "worst rel err", "at", "analytic", "numeric",
                  "kinks", "status")
        rows = [header]
        for t in self.tensors:
            at = "-" if t.worst_index is None else "(" + ",".join(map(str, t.worst_index)) + ")"
            rows.append((t.name + (" [frozen]" if t.frozen else ""),
                         "x".join(map(str, t.shape)), str(t.checked), f"{t.worst_error:.2e}", at,
                         f"{t.analytic:+.6e}", f"{t.numeric:+.6e}", str(t.kinks), t.status))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        left = {0, 1, 4, 8}

        def render(cells) -> str:
            return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(render(header))
        return "\n".join([render(header), rule, *map(render, rows[1:]), rule])

    def floor_warning(self) -> str | None:
        """A warning when the floor exceeds every checked gradient: then each entry was only
        the absolute test ``|a - n| <= noise`` and the relative threshold said nothing (a
        threshold far below float64 rounding noise does this); None otherwise."""
        largest = max((t.largest for t in self.tensors if not math.isnan(t.largest)),
                      default=math.nan)
        if math.isnan(largest) or self.floor <= largest:
            return None
        return (f"warning: the floor {self.floor:.1e} exceeds every checked gradient (largest "
                f"{largest:.1e}), so each entry was only an absolute test |a - n| <= rounding "
                f"noise: threshold {self.threshold:g} is too small to compare relative errors")

    def verdict(self) -> str:
        """One line: passed or failed (naming the failing tensors), against which threshold,
        and the :meth:`floor_warning` when there is one."""
        kinks = sum(t.kinks for t in self.tensors)
        entries = sum(t.checked for t in self.tensors)
        worst = max(self.tensors, key=lambda t: t.worst_error)
        setting = (f"eps {self.eps:g}, floor {self.floor:.1e}, {entries} entries of "
                   f"{len(self.tensors)} tensors, {self.samples} samples, {self.seconds:.1f} s")
        skipped = f", {kinks} kink crossings not counted" if kinks else ""
        warning = self.floor_warning()
        skipped += f"; {warning}" if warning else ""
        if self.passed:
            return (f"gradcheck passed: worst relative error {worst.worst_error:.2e} "
                    f"({worst.name}) <= threshold {self.threshold:g}; {setting}{skipped}")
        names = ", ".join(f"{t.name} {t.worst_error:.2e}" for t in self.failed)
        return (f"gradcheck FAILED: {names} above the threshold {self.threshold:g}; "
                f"{setting}{skipped}")

    def __str__(self) -> str:
        title = f"Gradient check: {self.model_name}" if self.model_name else "Gradient check"
        return f"{title} (loss {self.loss:.6g})\n{self.table()}\n{self.verdict()}"


# --- the model check ----------------------------------------------------------------------------
class _ModelState:
    """What a check must not change: the random streams (set back before every forward pass)
    and the buffers (batch-norm running statistics, moved by every training forward)."""

    def __init__(self, layers):
        self.random = [(layer, layer.rng.bit_generator.state) for layer in layers
                       if layer.uses_random_stream]
        self.buffers = [(layer.buffers, key, layer.buffers[key].copy())
                        for layer in layers for key in layer.buffers]

    def reset_random(self) -> None:
        for layer, state in self.random:
            layer.rng.bit_generator.state = state

    def restore(self) -> None:
        self.reset_random()
        for store, key, value in self.buffers:
            store[key] = value


class _Replay:
    """The model's forward pass as the model runs it (its steps: a graph's, or a stack's with
    the ReLU after a max pooling), keeping a copy of every activation of one recorded pass,
    so that the pass after perturbing a layer's parameter can start at that layer's step
    (a perturbed input: at the first step, from the perturbed array itself)."""

    def __init__(self, model, batch, state: _ModelState):
        self.model, self.state = model, state
        self.steps = model._graph_plan()
        self.saved: dict[str, Any] = {INPUT: batch}
        self._step_of = {id(step.layer): i for i, step in enumerate(self.steps)}
        # the activations a pass starting at step i reads but does not write itself
        self.needs = []
        for i in range(len(self.steps)):
            later = self.steps[i:]
            self.needs.append({key for step in later for key in step.reads}
                              - {step.writes for step in later})

    def step_of(self, layer) -> int:
        return self._step_of[id(layer)]

    def record(self):
        """One full forward pass, keeping copies of all activations; returns the logits."""
        self.state.reset_random()
        values = {INPUT: self.saved[INPUT]}
        for step in self.steps:
            values[step.writes] = self.model._run_step(step, values, True)
            self.saved[step.writes] = values[step.writes].copy()  # layers may reuse buffers
        return values[self.steps[-1].writes]

    def output(self):
        return self.saved[self.steps[-1].writes]

    def run_from(self, first: int):
        """The logits of a forward pass from step ``first`` on, the same dropout masks."""
        self.state.reset_random()
        values = {key: self.saved[key] for key in self.needs[first]}
        for step in self.steps[first:]:
            values[step.writes] = self.model._run_step(step, values, True)
        return values[self.steps[-1].writes]


def _sample(size: int, count: int | None, rng: np.random.Generator) -> np.ndarray:
    """All of ``range(size)`` when it has at most ``count`` entries, else ``count`` of them at
    random, sorted."""
    if count is None or size <= count:
        return np.arange(size)
    return np.sort(rng.choice(size, size=count, replace=False))


def check_settings(eps: Any, threshold: Any, entries_per_tensor: Any, input_noise: Any,
                   where: str) -> tuple[float, float, int | None, float]:
    """:func:`check_model`'s settings, checked (``<where>.eps: must be > 0, got 0``)."""
    eps = validate.real(f"{where}.eps", eps, low=0.0, low_open=True)
    input_noise = validate.real(f"{where}.input_noise", input_noise, low=0.0)
    threshold = validate.real(f"{where}.threshold", threshold, low=0.0, low_open=True)
    if entries_per_tensor is not None:
        entries_per_tensor = validate.integer(
            f"{where}.entries_per_tensor", entries_per_tensor, low=1,
            expected="a positive integer (or null: every entry)")
    return eps, threshold, entries_per_tensor, input_noise


def check_model(model, x: Any, labels: Any, *, eps: float = DEFAULT_EPS,
                threshold: float = DEFAULT_THRESHOLD,
                entries_per_tensor: int | None = DEFAULT_ENTRIES_PER_TENSOR,
                input_noise: float = DEFAULT_INPUT_NOISE, rng: np.random.Generator | None = None,
                where: str = "gradcheck") -> GradcheckReport:
    """Compare the model's backward pass with central differences of the training loss, for
    every parameter tensor (frozen ones too) and the input (see the module docstring).

    Args:
        model: a float64 :class:`~convtrain.nn.model.Model` (``build_model(..., dtype=float64)``)
            on any backend; left as it was (parameters, running statistics, random streams).
        x: the input batch ``(N, *model.input_shape)`` (copied; the caller's array is untouched).
        labels: ``(N,)`` integer classes.
        eps: the central-difference step.
        threshold: the largest relative error per entry that passes.
        entries_per_tensor: entries checked per tensor (None: every entry).
        input_noise: std of the Gaussian noise added to (a copy of) ``x`` to break exact ties.
        rng: draws that noise and picks the sampled entries (default: a Generator seeded
            with 0).
        where: the prefix naming the settings in error messages (the config section).

    Returns:
        A :class:`GradcheckReport` (``report.exit_status``: 0 passed, 1 failed).

    Raises:
        ConfigError: a bad setting (``gradcheck.eps: must be > 0, got 0``), input shape or label.
        InternalError: the model is not float64.
    """
    eps, threshold, entries_per_tensor, input_noise = check_settings(
        eps, threshold, entries_per_tensor, input_noise, where)
    if np.dtype(model.dtype) != np.float64:
        raise InternalError(f"check_model needs a float64 model (build_model(..., "
                            f"dtype=np.float64)), got {model.dtype}")
    rng = np.random.default_rng(0) if rng is None else rng
    start = time.perf_counter()
    # checked against the model's input shape; a copy, as it is perturbed in place
    batch = model._as_input(x).copy()
    if input_noise:
        batch += model.backend.asarray(rng.standard_normal(batch.shape) * input_noise)
    labels = model.backend.asarray(labels)
    state = _ModelState(model.layers.values())
    replay = _Replay(model, batch, state)

    def loss_from(first: int) -> Callable[[], float]:
        return lambda: softmax_cross_entropy(replay.run_from(first), labels)[0]

    try:
        # the analytic pass, keeping every activation for the perturbed passes
        base, dlogits = softmax_cross_entropy(replay.record(), labels)
        scale = max(1.0, abs(base), float(np.max(np.abs(to_host(replay.output())))))
        floor = ROUNDING_NOISE_FACTOR * _UNIT_ROUNDOFF * scale / eps / threshold
        # the parameters' gradients as training computes them (the layers reading the input
        # skip its gradient there: a route of their own), then the input's in a second pass
        model.backward(dlogits, input_grad=False)
        targets = [(f"{layer_name}.{key}", layer.params[key], to_host(layer.grads[key]).copy(),
                    replay.step_of(layer), not layer.trainable)
                   for layer_name, layer in model.layers.items() for key in layer.params]
        _, dlogits = softmax_cross_entropy(replay.run_from(0), labels)
        input_grad = to_host(model.backward(dlogits, input_grad=True)).copy()
        targets.insert(0, (INPUT_NAME, batch, input_grad, 0, False))

        checks = []
        for name, array, analytic, first, frozen in targets:
            indices = _sample(int(array.size), entries_per_tensor, rng)
            differences = central_differences(loss_from(first), array, indices, eps, base)
            checks.append(_tensor_check(name, analytic, indices, differences, floor, threshold,
                                        frozen))
    finally:
        state.restore()
    return GradcheckReport(model.name, tuple(checks), int(batch.shape[0]), float(base), eps,
                           threshold, floor, time.perf_counter() - start)


def _tensor_check(name: str, analytic: np.ndarray, indices: np.ndarray, differences: Differences,
                  floor: float, threshold: float, frozen: bool) -> TensorCheck:
    """Summarise one tensor: its worst non-kink entry against ``threshold``."""
    a = analytic.reshape(-1)[indices]
    largest = float(max(np.abs(a).max(), np.abs(differences.central).max())) if a.size else math.nan
    errors = entry_errors(a, differences.central, floor)
    kinks = (errors > threshold) & kink_crossings(a, differences)
    counted = np.where(kinks, -1.0, errors)
    worst = int(np.argmax(counted)) if counted.size else 0
    if counted.size == 0 or counted[worst] < 0:
        return TensorCheck(name, tuple(analytic.shape), int(indices.size), 0.0, None, math.nan,
                           math.nan, int(kinks.sum()), frozen, True, largest)
    index = tuple(int(i) for i in np.unravel_index(int(indices[worst]), analytic.shape))
    return TensorCheck(name, tuple(analytic.shape), int(indices.size), float(errors[worst]), index,
                       float(a[worst]), float(differences.central[worst]), int(kinks.sum()),
                       frozen, bool(errors[worst] <= threshold), largest)


__all__ = ["DEFAULT_EPS", "DEFAULT_THRESHOLD", "DEFAULT_ENTRIES_PER_TENSOR", "DEFAULT_INPUT_NOISE",
           "INPUT_NAME",
           "Differences", "GradcheckReport", "TensorCheck", "central_differences", "check_model",
           "check_settings",
           "entry_errors", "kink_crossings", "numerical_gradient", "projected_sum",
           "relative_error"]
