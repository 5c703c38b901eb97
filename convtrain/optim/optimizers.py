"""First-order optimizers with ``torch.optim`` update rules, and the optimizer registry.

An optimizer reads ``layer.params[key]`` and ``layer.grads[key]`` for every parameter the model
yields from ``model.named_parameters()`` and updates the parameter array IN PLACE (so every
reference to it, e.g. a layer's cached view, stays valid). It never writes to ``layer.grads``
and skips layers whose ``trainable`` flag is False at the time of the step, so a layer can be
frozen or unfrozen between steps.

Weight decay: ``weight_decay`` is the global coefficient; a parameter is decayed only if its key
is in ``layer.decayed_params`` (weights, never biases), with coefficient
``weight_decay * layer.weight_decay_mult`` (Caffe's ``decay_mult``). For ``sgd``, ``adam`` and
``rmsprop`` it is L2 regularisation added to the gradient (PyTorch's ``weight_decay``); for
``adamw`` it is decoupled, shrinking the weights directly.

Notation in the docstrings: ``p`` parameter, ``g`` its gradient, ``lr`` the current learning
rate, ``wd`` the per-parameter decay coefficient, ``t`` the 1-based step count of the parameter.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from convtrain import validate as check
from convtrain.errors import ConfigError, InternalError
from convtrain.optim.options import Configurable, Flag, Real, Reals, parse_config
from convtrain.registry import Registry
from convtrain.runtime.backend import array_module, to_host

#: ``@OPTIMIZERS.register("sgd")`` registers an Optimizer subclass under its config ``name``.
OPTIMIZERS: Registry[type["Optimizer"]] = Registry("optimizer")

# Settings most optimizers share (defaults are PyTorch's; a class may replace the default).
LR = Real(1e-3, "learning rate (the schedule scales it every epoch)", low=0.0, low_open=True)
WEIGHT_DECAY = Real(0.0, "weight decay coefficient of conv/dense weights (never biases), times "
                         "each layer's weight_decay_mult", low=0.0)
EPS = Real(1e-8, "added to the denominator for numerical stability", low=0.0, low_open=True)
MOMENTUM = Real(0.0, "momentum factor (0 = none)", low=0.0, high=1.0, high_open=True)


def _host_copy(a: Any) -> np.ndarray:
    """A host NumPy COPY of ``a`` (copies so that later in-place updates cannot alter it)."""
    if array_module(a) is not np:
        return a.get()
    return np.array(a, copy=True)


class Optimizer(Configurable):
    """Base class: walks the model's trainable parameters and delegates to :meth:`_update`.

    Settings (``lr``, ``weight_decay``, ...) are declared once per class in ``options`` and set
    as attributes by the constructor (see :mod:`convtrain.optim.options`).

    Attributes:
        model: the model whose ``named_parameters()`` are optimised.
        lr: the current learning rate (settable; schedules set it every epoch).
        weight_decay: the global weight-decay coefficient.
        state: per-parameter state by qualified name (``"conv1.weight"``): the slot arrays
            named in :attr:`slots` (on the parameter's backend) and ``"step"`` (an int).
        steps: number of :meth:`step` calls so far.
    """

    group = "optimizer"
    kind = "optimizer"
    options = {"lr": LR, "weight_decay": WEIGHT_DECAY}
    #: names of the per-parameter state arrays, used to validate loaded state.
    slots: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: Any, **settings: Any):
        self.model = model
        self.set_options(settings)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0
        self.check_settings()

    def check_settings(self) -> None:
        """Rules between settings (each setting alone is checked by its declaration)."""

    # --- learning rate -----------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # zero is allowed here (a schedule may anneal to eta_min=0), not in the config; the
        # config value was checked by its declaration, so a bad value here is a caller's bug
        if not (check.is_real(value) and 0.0 <= float(value) < float("inf")):
            raise InternalError(f"optimizer.lr: must be a finite number >= 0, got {value!r}")
        self._lr = float(value)

    # --- the update --------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[tuple[str, Any, str]]:
        """``(qualified_name, layer, key)`` for every parameter to update now."""
        for name, layer, key in self.model.named_parameters():
            if getattr(layer, "trainable", True):
                yield name, layer, key

    def decay_coefficient(self, layer: Any, key: str) -> float:
        """``weight_decay * layer.weight_decay_mult`` if ``key`` is decayed, else 0."""
        if key not in getattr(layer, "decayed_params", ()):
            return 0.0
        return self.weight_decay * float(getattr(layer, "weight_decay_mult", 1.0))

    def step(self) -> None:
        """Update every trainable parameter once from its current gradient."""
        for name, layer, key in self.trainable_parameters():
            p = layer.params[key]
            g = layer.grads.get(key)
            if g is None:
                raise InternalError(
                    f"no gradient for parameter '{name}': call model.backward() before "
                    "optimizer.step()"
                )
            if g.shape != p.shape:
                raise InternalError(
                    f"gradient of '{name}' has shape {g.shape}, parameter has {p.shape}"
                )
            state = self.state.setdefault(name, {"step": 0})
            state["step"] += 1
            self._update(p, g, self.decay_coefficient(layer, key), state)
        self.steps += 1

    def _update(self, p: Any, g: Any, wd: float, state: dict[str, Any]) -> None:
        """Update ``p`` in place. ``g`` must not be modified. Arrays share ``p``'s shape."""
        raise NotImplementedError

    @staticmethod
    def _slot(state: dict[str, Any], slot: str, like: Any) -> Any:
        """The state array ``slot``, created as zeros shaped like ``like`` on first use."""
        if slot not in state:
            state[slot] = array_module(like).zeros_like(like)
        return state[slot]

    @staticmethod
    def _l2_gradient(p: Any, g: Any, wd: float) -> Any:
        """``g + wd * p`` as a NEW array (or ``g`` itself when ``wd == 0``; never mutate it)."""
        return g + wd * p if wd else g

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of the optimizer state, flat for safetensors.

        Keys: ``"steps"`` (0-d int64), and per parameter ``"<param>/step"`` (0-d int64) and
        ``"<param>/<slot>"`` arrays shaped like the parameter.
        """
        out: dict[str, np.ndarray] = {"steps": np.array(self.steps, dtype=np.int64)}
        for name, state in self.state.items():
            out[f"{name}/step"] = np.array(state["step"], dtype=np.int64)
            for slot in self.slots:
                if slot in state:
                    out[f"{name}/{slot}"] = _host_copy(state[slot])
        return out

    def load_state_dict(self, sd: Mapping[str, Any], strict: bool = True) -> None:
        """Restore state saved by :meth:`state_dict` (arrays move to the parameters' backend).

        Raises:
            ConfigError: for a parameter the model does not have (when ``strict``), a slot this
                optimizer does not use (state saved by a different optimizer) or a shape
                mismatch.
        """
        params = {name: layer.params[key] for name, layer, key in self.model.named_parameters()}
        new_state: dict[str, dict[str, Any]] = {}
        steps = 0
        for full_key, value in sd.items():
            if full_key == "steps":
                steps = int(to_host(value))
                continue
            name, _, slot = full_key.rpartition("/")
            if name not in params:
                if strict:
                    raise ConfigError(
                        f"optimizer state for '{name}' does not match any trainable parameter "
                        f"of the model (known: {', '.join(params) or 'none'})"
                    )
                continue
            p = params[name]
            entry = new_state.setdefault(name, {"step": 0})
            if slot == "step":
                entry["step"] = int(to_host(value))
            elif slot in self.slots:
                if tuple(value.shape) != tuple(p.shape):
                    raise ConfigError(
                        f"optimizer state '{full_key}' has shape {tuple(value.shape)}, the "
                        f"parameter has {tuple(p.shape)}"
                    )
                xp = array_module(p)  # saved state may sit on either backend
                entry[slot] = xp.array(to_host(value) if xp is np else value, dtype=p.dtype,
                                       copy=True)
            else:
                raise ConfigError(
                    f"optimizer state '{full_key}': '{slot}' is not a state of optimizer "
                    f"'{self.name}' (slots: {', '.join(self.slots) or 'none'}); was the "
                    "checkpoint saved with a different optimizer?"
                )
        self.state = new_state
        self.steps = steps


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``::

        g = g + wd * p                                   (L2, decayed params only)
        if momentum > 0:
            b = g                                        (first step)
            b = momentum * b + (1 - dampening) * g       (later steps)
            g = g + momentum * b   if nesterov   else   b
        p = p - lr * g
    """

    name = "sgd"
    options = {
        "lr": LR,
        "momentum": MOMENTUM,
        "dampening": Real(0.0, "share of each new gradient held back from the momentum buffer",
                          low=0.0, high=1.0),
        "nesterov": Flag(False, "Nesterov momentum (needs momentum > 0 and dampening = 0)"),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("momentum_buffer",)

    def check_settings(self) -> None:
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ConfigError(
                "optimizer.nesterov: Nesterov momentum needs optimizer.momentum > 0 and "
                f"optimizer.dampening = 0 (got momentum={self.momentum:g}, "
                f"dampening={self.dampening:g})"
            )

    def _update(self, p, g, wd, state):
        g = self._l2_gradient(p, g, wd)
        if self.momentum:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += (1.0 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class _AdamBase(Optimizer):
    """Shared Adam moment update (the ``adam`` and ``adamw`` entries differ only in decay)."""

    options = {
        "lr": LR,
        # beta = 1 would never forget the first gradients (and divide by 1 - 1 = 0)
        "betas": Reals((0.9, 0.999), "decay rates of the running mean of the gradient and of "
                                     "its square", length=2, low=0.0, high=1.0, high_open=True),
        "eps": EPS,
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("exp_avg", "exp_avg_sq")

    def _adam_step(self, p, g, state) -> None:
        beta1, beta2 = self.betas
        m = self._slot(state, "exp_avg", p)
        v = self._slot(state, "exp_avg_sq", p)
        xp = array_module(p)
        t = state["step"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        step_size = self.lr / (1.0 - beta1 ** t)
        denom = xp.sqrt(v) / (1.0 - beta2 ** t) ** 0.5
        denom += self.eps
        p -= step_size * (m / denom)


@OPTIMIZERS.register("adam")
class Adam(_AdamBase):
    """Adam (Kingma & Ba) with L2 weight decay, as ``torch.optim.Adam`` (``amsgrad=False``)::

        g = g + wd * p                                   (L2, decayed params only)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    name = "adam"

    def _update(self, p, g, wd, state):
        self._adam_step(p, self._l2_gradient(p, g, wd), state)


@OPTIMIZERS.register("adamw")
class AdamW(_AdamBase):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``::

        p = p * (1 - lr * wd)                            (decayed params only)
        then the Adam update of ``adam`` with the raw gradient g.
    """

    name = "adamw"
    options = {**_AdamBase.options,
               "weight_decay": dataclasses.replace(WEIGHT_DECAY, default=1e-2)}

    def _update(self, p, g, wd, state):
        if wd:
            p *= 1.0 - self.lr * wd
        self._adam_step(p, g, state)


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    """RMSprop (Hinton), as ``torch.optim.RMSprop`` (``centered=False``)::

        g = g + wd * p                                   (L2, decayed params only)
        s = alpha * s + (1 - alpha) * g * g
        d = sqrt(s) + eps
        if momentum > 0:  b = momentum * b + g / d;  p = p - lr * b
        else:             p = p - lr * g / d
    """

    name = "rmsprop"
    options = {
        "lr": dataclasses.replace(LR, default=1e-2),
        # alpha = 1 would freeze the running average at zero and divide every step by eps
        "alpha": Real(0.99, "decay rate of the running mean of the squared gradient",
                      low=0.0, high=1.0, high_open=True),
        "eps": EPS,
        "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("square_avg", "momentum_buffer")

    def _update(self, p, g, wd, state):
        g = self._l2_gradient(p, g, wd)
        xp = array_module(p)
        s = self._slot(state, "square_avg", p)
        s *= self.alpha
        s += (1.0 - self.alpha) * (g * g)
        denom = xp.sqrt(s)
        denom += self.eps
        if self.momentum:
            buf = self._slot(state, "momentum_buffer", p)
            buf *= self.momentum
            buf += g / denom
            p -= self.lr * buf
        else:
            p -= self.lr * (g / denom)


def build_optimizer(cfg: Mapping[str, Any], model: Any) -> Optimizer:
    """Build the optimizer named by ``cfg["name"]`` for ``model``'s trainable parameters.

    ``cfg`` is a mapping like ``{"name": "sgd", "lr": 0.05, "momentum": 0.9,
    "weight_decay": 5e-4, "nesterov": False}``; omitted settings take their declared defaults
    (PyTorch's).

    Raises:
        ConfigError: naming ``optimizer.<key>`` for a missing name, an unknown optimizer, a key
            that does not apply to the chosen optimizer, or a bad value.
    """
    cls, settings = parse_config(OPTIMIZERS, "optimizer", cfg)
    return cls(model, **settings)
