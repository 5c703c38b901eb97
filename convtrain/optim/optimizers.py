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

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from convtrain import validate as check
from convtrain.runtime.backend import array_module
from convtrain.errors import ConfigError
from convtrain.registry import Registry

#: ``@OPTIMIZERS.register("sgd")`` registers an Optimizer subclass under its config ``name``.
OPTIMIZERS: Registry[type["Optimizer"]] = Registry("optimizer")


def _to_host(a: Any) -> np.ndarray:
    """A host NumPy COPY of ``a`` (copies so that later in-place updates cannot alter it)."""
    if array_module(a) is not np:
        return a.get()
    return np.array(a, copy=True)


class Optimizer:
    """Base class: walks the model's trainable parameters and delegates to :meth:`_update`.

    Attributes:
        model: the model whose ``named_parameters()`` are optimised.
        lr: the current learning rate (settable; schedules set it every epoch).
        weight_decay: the global weight-decay coefficient.
        state: per-parameter state by qualified name (``"conv1.weight"``): the slot arrays
            named in :attr:`slots` (on the parameter's backend) and ``"step"`` (an int).
        steps: number of :meth:`step` calls so far.
    """

    #: hyperparameters a config may set besides ``name``, with their defaults (PyTorch's).
    options: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.0}
    #: names of the per-parameter state arrays, used to validate loaded state.
    slots: ClassVar[tuple[str, ...]] = ()
    #: the registry name (set on subclasses; used in error messages).
    name: ClassVar[str] = ""

    def __init__(self, model: Any, *, lr: float, weight_decay: float = 0.0):
        self.model = model
        self._lr = check.real("optimizer.lr", lr, low=0.0, low_open=True)
        self.weight_decay = check.real("optimizer.weight_decay", weight_decay, low=0.0)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0

    # --- learning rate -----------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # zero is allowed here (a schedule may anneal to eta_min=0), not in the config
        self._lr = check.real("optimizer.lr", value, low=0.0)

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
                raise RuntimeError(
                    f"no gradient for parameter '{name}': call model.backward() before "
                    "optimizer.step()"
                )
            if g.shape != p.shape:
                raise RuntimeError(
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
                    out[f"{name}/{slot}"] = _to_host(state[slot])
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
                steps = int(np.asarray(value))
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
                entry["step"] = int(np.asarray(value))
            elif slot in self.slots:
                if tuple(value.shape) != tuple(p.shape):
                    raise ConfigError(
                        f"optimizer state '{full_key}' has shape {tuple(value.shape)}, the "
                        f"parameter has {tuple(p.shape)}"
                    )
                entry[slot] = array_module(p).array(value, dtype=p.dtype, copy=True)
            else:
                raise ConfigError(
                    f"optimizer state '{full_key}': '{slot}' is not a state of optimizer "
                    f"'{self.name}' (slots: {', '.join(self.slots) or 'none'}); was the "
                    "checkpoint saved with a different optimizer?"
                )
        self.state = new_state
        self.steps = steps

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k, None)!r}" for k in self.options)
        return f"{type(self).__name__}({opts})"


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
    options = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
               "weight_decay": 0.0}
    slots = ("momentum_buffer",)

    def __init__(self, model: Any, *, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(model, lr=lr, weight_decay=weight_decay)
        self.momentum = check.real("optimizer.momentum", momentum, low=0.0, high=1.0,
                                   high_open=True)
        self.dampening = check.real("optimizer.dampening", dampening, low=0.0, high=1.0)
        self.nesterov = check.boolean("optimizer.nesterov", nesterov)
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

    options = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, model: Any, *, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(model, lr=lr, weight_decay=weight_decay)
        b1, b2 = check.real_sequence("optimizer.betas", betas, 2)
        self.betas = (check.real("optimizer.betas[0]", b1, low=0.0, high=1.0, high_open=True),
                      check.real("optimizer.betas[1]", b2, low=0.0, high=1.0, high_open=True))
        self.eps = check.real("optimizer.eps", eps, low=0.0, low_open=True)

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

    The default ``weight_decay`` is PyTorch's 0.01.
    """

    name = "adamw"
    options = {**_AdamBase.options, "weight_decay": 1e-2}

    def __init__(self, model: Any, *, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

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

    Defaults are PyTorch's (``lr=0.01, alpha=0.99, eps=1e-8``).
    """

    name = "rmsprop"
    options = {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}
    slots = ("square_avg", "momentum_buffer")

    def __init__(self, model: Any, *, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(model, lr=lr, weight_decay=weight_decay)
        # alpha = 1 would freeze the running average at zero and divide every step by eps
        self.alpha = check.real("optimizer.alpha", alpha, low=0.0, high=1.0, high_open=True)
        self.eps = check.real("optimizer.eps", eps, low=0.0, low_open=True)
        self.momentum = check.real("optimizer.momentum", momentum, low=0.0, high=1.0,
                                   high_open=True)

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
    "weight_decay": 5e-4, "nesterov": False}``; omitted options take PyTorch's defaults.

    Raises:
        ConfigError: naming ``optimizer.<key>`` for a missing name, an unknown optimizer, a key
            that does not apply to the chosen optimizer, or a bad value.
    """
    options = check.mapping("optimizer", cfg, expected="a mapping like {name: ..., ...}")
    if "name" not in options:
        raise ConfigError(
            f"optimizer.name: missing (choose one of: {', '.join(OPTIMIZERS.names())})"
        )
    name = options.pop("name")
    cls = OPTIMIZERS.get(name, where="optimizer.name")
    check.reject_unknown_keys(
        "optimizer", "optimizer", name, options, list(cls.options),
        {n: list(OPTIMIZERS.get(n).options) for n in OPTIMIZERS.names()},
    )
    return cls(model, **options)
