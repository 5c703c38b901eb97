"""Optimizers and lr schedules against hand-written references of the published update rules."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from convtrain.errors import ConfigError, InternalError
from convtrain.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule


# --- a minimal model with the model interface the optimizers rely on -------------------
class FakeLayer:
    def __init__(self, name, shapes, rng, decayed=("weight",), mult=1.0, trainable=True):
        self.name = name
        self.params = {k: rng.standard_normal(s) for k, s in shapes.items()}
        self.grads = {k: np.zeros(s) for k, s in shapes.items()}
        self.decayed_params = decayed
        self.weight_decay_mult = mult
        self.trainable = trainable


class FakeModel:
    """``named_parameters`` honours ``trainable`` unless ``yield_frozen`` (to test that the
    optimizer checks the flag itself)."""

    def __init__(self, layers, yield_frozen=False):
        self.layers = {layer.name: layer for layer in layers}
        self.yield_frozen = yield_frozen

    def named_parameters(self):
        for lname, layer in self.layers.items():
            if not layer.trainable and not self.yield_frozen:
                continue
            for key in layer.params:
                yield f"{lname}.{key}", layer, key


def make_model(seed=0, **kw):
    rng = np.random.default_rng(seed)
    return FakeModel([
        FakeLayer("conv1", {"weight": (3, 2, 2, 2), "bias": (3,)}, rng),
        FakeLayer("fc", {"weight": (4, 5), "bias": (5,)}, rng, mult=2.5),
    ], **kw)


def set_random_grads(model, rng):
    for layer in model.layers.values():
        for k, p in layer.params.items():
            layer.grads[k] = rng.standard_normal(p.shape)


def snapshot(model):
    return {f"{n}.{k}": p.copy() for n, l in model.layers.items() for k, p in l.params.items()}


# --- independent references (float64, written from the PyTorch documentation) ------------
def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, wd=0.0):
    p = p.copy()
    b = None
    for g in grads:
        g = g + wd * p
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def ref_adam(p, grads, lr, b1, b2, eps, wd=0.0, decoupled=False):
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p - lr * wd * p
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_rmsprop(p, grads, lr, alpha, eps, momentum=0.0, wd=0.0):
    p = p.copy()
    s = np.zeros_like(p)
    b = np.zeros_like(p)
    for g in grads:
        g = g + wd * p
        s = alpha * s + (1 - alpha) * g * g
        step = g / (np.sqrt(s) + eps)
        if momentum:
            b = momentum * b + step
            step = b
        p = p - lr * step
    return p


CASES = [
    ({"name": "sgd", "lr": 0.1}, lambda p, gs, wd: ref_sgd(p, gs, 0.1, wd=wd)),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.9},
     lambda p, gs, wd: ref_sgd(p, gs, 0.05, momentum=0.9, wd=wd)),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.8, "dampening": 0.3},
     lambda p, gs, wd: ref_sgd(p, gs, 0.05, momentum=0.8, dampening=0.3, wd=wd)),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
     lambda p, gs, wd: ref_sgd(p, gs, 0.05, momentum=0.9, nesterov=True, wd=wd)),
    ({"name": "adam", "lr": 0.01, "betas": [0.8, 0.95], "eps": 1e-6},
     lambda p, gs, wd: ref_adam(p, gs, 0.01, 0.8, 0.95, 1e-6, wd=wd)),
    ({"name": "adamw", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8},
     lambda p, gs, wd: ref_adam(p, gs, 0.01, 0.9, 0.999, 1e-8, wd=wd, decoupled=True)),
    ({"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-7},
     lambda p, gs, wd: ref_rmsprop(p, gs, 0.01, 0.9, 1e-7, wd=wd)),
    ({"name": "rmsprop", "lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.7},
     lambda p, gs, wd: ref_rmsprop(p, gs, 0.01, 0.99, 1e-8, momentum=0.7, wd=wd)),
]


@pytest.mark.parametrize("wd", [0.0, 0.03])
@pytest.mark.parametrize("cfg,reference", CASES, ids=lambda c: str(c) if isinstance(c, dict) else "")
def test_update_rule_matches_reference(cfg, reference, wd):
    model = make_model()
    start = snapshot(model)
    opt = build_optimizer({**cfg, "weight_decay": wd}, model)
    rng = np.random.default_rng(1)
    history = {name: [] for name in start}
    for _ in range(6):
        set_random_grads(model, rng)
        for lname, layer in model.layers.items():
            for k, g in layer.grads.items():
                history[f"{lname}.{k}"].append(g.copy())
        opt.step()
    for lname, layer in model.layers.items():
        for k, p in layer.params.items():
            name = f"{lname}.{k}"
            # decay only on weights, scaled by the layer's multiplier
            coef = wd * layer.weight_decay_mult if k in layer.decayed_params else 0.0
            expected = reference(start[name], history[name], coef)
            np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-13, err_msg=name)
            assert not np.allclose(p, start[name])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_grads_untouched_params_updated_in_place(name):
    model = make_model()
    cfg = {"name": name, "lr": 0.01, "weight_decay": 0.1}
    if name in ("sgd", "rmsprop"):
        cfg["momentum"] = 0.9
    opt = build_optimizer(cfg, model)
    rng = np.random.default_rng(2)
    arrays = {id(p) for l in model.layers.values() for p in l.params.values()}
    for _ in range(3):
        set_random_grads(model, rng)
        grads_before = {(n, k): g.copy() for n, l in model.layers.items() for k, g in l.grads.items()}
        opt.step()
        for (n, k), g in grads_before.items():
            np.testing.assert_array_equal(model.layers[n].grads[k], g)
    assert {id(p) for l in model.layers.values() for p in l.params.values()} == arrays


@pytest.mark.parametrize("yield_frozen", [False, True])
def test_frozen_layers_untouched(yield_frozen):
    model = make_model(yield_frozen=yield_frozen)
    model.layers["conv1"].trainable = False
    before = snapshot(model)
    opt = build_optimizer({"name": "adam", "lr": 0.1, "weight_decay": 0.5}, model)
    set_random_grads(model, np.random.default_rng(3))
    opt.step()
    after = snapshot(model)
    for name in before:
        if name.startswith("conv1."):
            np.testing.assert_array_equal(after[name], before[name])
        else:
            assert not np.array_equal(after[name], before[name])
    assert not any(k.startswith("conv1.") for k in opt.state_dict())


def test_float32_params_stay_float32():
    model = make_model()
    for layer in model.layers.values():
        for k in layer.params:
            layer.params[k] = layer.params[k].astype(np.float32)
    opt = build_optimizer({"name": "adamw", "lr": 0.01}, model)
    set_random_grads(model, np.random.default_rng(0))
    for layer in model.layers.values():
        for k in layer.grads:
            layer.grads[k] = layer.grads[k].astype(np.float32)
    opt.step()
    assert all(p.dtype == np.float32 for l in model.layers.values() for p in l.params.values())


@pytest.mark.parametrize("cfg", [
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"name": "adam", "lr": 0.01}, {"name": "adamw", "lr": 0.01},
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.5},
])
def test_state_dict_roundtrip_continues_bitwise(cfg):
    rng_a = np.random.default_rng(5)
    a = make_model()
    opt_a = build_optimizer(cfg, a)
    for _ in range(3):
        set_random_grads(a, rng_a)
        opt_a.step()
    saved = opt_a.state_dict()
    assert int(saved["steps"]) == 3
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    frozen_copy = {k: v.copy() for k, v in saved.items()}
    # b: same params, fresh optimizer, state loaded; a keeps going -> must agree exactly
    b = make_model()
    for lname, layer in b.layers.items():
        for k in layer.params:
            layer.params[k] = a.layers[lname].params[k].copy()
    opt_b = build_optimizer(cfg, b)
    opt_b.load_state_dict(saved)
    for _ in range(3):
        set_random_grads(a, rng_a)
        for lname, layer in b.layers.items():
            for k in layer.grads:
                layer.grads[k] = a.layers[lname].grads[k].copy()
        opt_a.step()
        opt_b.step()
    for name, p in snapshot(a).items():
        np.testing.assert_array_equal(snapshot(b)[name], p)
    # the saved dict was a copy: stepping afterwards did not change it
    for k, v in frozen_copy.items():
        np.testing.assert_array_equal(saved[k], v)


def test_load_state_dict_rejects_mismatches():
    model = make_model()
    adam = build_optimizer({"name": "adam", "lr": 0.01}, model)
    set_random_grads(model, np.random.default_rng(0))
    adam.step()
    sgd = build_optimizer({"name": "sgd", "lr": 0.01, "momentum": 0.9}, model)
    with pytest.raises(ConfigError, match="exp_avg.*different optimizer"):
        sgd.load_state_dict(adam.state_dict())
    sd = adam.state_dict()
    sd["ghost.weight/exp_avg"] = np.zeros(3)
    with pytest.raises(ConfigError, match="ghost.weight"):
        build_optimizer({"name": "adam"}, model).load_state_dict(sd)
    sd = adam.state_dict()
    sd["fc.weight/exp_avg"] = np.zeros((5, 4))
    with pytest.raises(ConfigError, match=r"shape \(5, 4\)"):
        build_optimizer({"name": "adam"}, model).load_state_dict(sd)


@pytest.mark.parametrize("cfg,match", [
    ({"name": "sgd", "lr": -0.1}, r"optimizer\.lr: must be > 0"),
    ({"name": "sgd", "lr": 0}, r"optimizer\.lr"),
    ({"name": "sgd", "lr": "fast"}, r"optimizer\.lr: expected a number"),
    ({"name": "sgd", "lr": True}, r"optimizer\.lr: expected a number"),
    ({"name": "sgd", "lr": float("nan")}, r"optimizer\.lr: expected a finite"),
    ({"name": "sgd", "momentum": 1.0}, r"optimizer\.momentum: must be < 1"),
    ({"name": "sgd", "momentum": -0.1}, r"optimizer\.momentum: must be >= 0"),
    ({"name": "sgd", "nesterov": True}, r"optimizer\.nesterov: .*momentum > 0"),
    ({"name": "sgd", "momentum": 0.9, "nesterov": True, "dampening": 0.1}, r"optimizer\.nesterov"),
    ({"name": "sgd", "nesterov": "yes"}, r"optimizer\.nesterov: expected true or false"),
    ({"name": "sgd", "weight_decay": -1e-4}, r"optimizer\.weight_decay"),
    ({"name": "sgd", "betas": [0.9, 0.99]}, r"optimizer\.betas: does not apply to optimizer 'sgd' \(it is an option of adam, adamw"),
    ({"name": "sgd", "momentun": 0.9}, r"optimizer\.momentun: .*did you mean 'momentum'"),
    ({"name": "adam", "momentum": 0.9}, r"optimizer\.momentum: does not apply to optimizer 'adam' \(it is an option of rmsprop, sgd"),
    ({"name": "adam", "betas": [0.9]}, r"optimizer\.betas: expected a list of 2"),
    ({"name": "adam", "betas": [0.9, 1.0]}, r"optimizer\.betas\[1\]: must be < 1"),
    ({"name": "adam", "eps": 0}, r"optimizer\.eps: must be > 0"),
    ({"name": "rmsprop", "alpha": 1.0}, r"optimizer\.alpha"),
    ({"name": "sdg"}, r"optimizer\.name: Unknown optimizer 'sdg'.*did you mean 'sgd'"),
    ({"lr": 0.1}, r"optimizer\.name: missing"),
])
def test_bad_config_names_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_optimizer(cfg, make_model())


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="optimizer: expected a mapping"):
        build_optimizer(0.1, make_model())


def test_defaults_and_lr_setter():
    opt = build_optimizer({"name": "adamw"}, make_model())
    assert (opt.lr, opt.weight_decay, opt.betas, opt.eps) == (1e-3, 1e-2, (0.9, 0.999), 1e-8)
    assert build_optimizer({"name": "rmsprop"}, make_model()).lr == 1e-2
    opt.lr = 0.0  # a schedule may anneal to zero
    opt.lr = 0.25
    assert opt.lr == 0.25
    # the config's lr was checked when the optimizer was built: a bad lr set from Python is a bug
    for bad in (-1.0, float("nan"), "fast"):
        with pytest.raises(InternalError, match="optimizer.lr"):
            opt.lr = bad


def test_accepts_omegaconf_config():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"name": "adam", "lr": 0.002, "betas": [0.5, 0.9],
                                      "eps": 1e-7, "weight_decay": 0.0})
    opt = build_optimizer(cfg, make_model())
    assert opt.betas == (0.5, 0.9) and opt.lr == 0.002


def test_step_without_gradient_is_explained():
    model = make_model()
    del model.layers["fc"].grads["bias"]
    # a call-order bug, not a config mistake: it must keep its traceback
    with pytest.raises(InternalError, match="fc.bias.*model.backward"):
        build_optimizer({"name": "sgd"}, model).step()
    model = make_model()
    model.layers["fc"].grads["weight"] = np.zeros((5, 4))
    with pytest.raises(InternalError, match=r"'fc.weight' has shape \(5, 4\)"):
        build_optimizer({"name": "sgd"}, model).step()


# --- settings declared once -------------------------------------------------------------
ALL_CLASSES = [OPTIMIZERS.get(n) for n in OPTIMIZERS.names()] + \
              [SCHEDULES.get(n) for n in SCHEDULES.names()]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.name)
def test_every_setting_has_a_meaning_and_a_valid_default(cls):
    assert cls.options, cls
    for key, option in cls.options.items():
        assert option.meaning.strip() and "\n" not in option.meaning, (cls.name, key)
        if (cls.name, key) == ("multistep", "milestones"):
            continue  # no sensible default: a run must list its milestones
        assert option.check(f"{cls.group}.{key}", option.default) == option.default


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.name)
def test_signature_and_help_show_the_declared_settings(cls):
    params = inspect.signature(cls).parameters
    settings = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert settings == cls.defaults()
    for key, option in cls.options.items():  # help(cls) lists each setting and its meaning
        assert f"    {key} = {option.default!r}: {option.meaning}" in cls.__doc__
    assert list(params)[0] in ("model", "base_lr")


def test_constructors_take_the_declared_settings_only():
    model = make_model()
    sgd = OPTIMIZERS.get("sgd")(model, lr=0.1, momentum=0.5)
    assert (sgd.lr, sgd.momentum, sgd.dampening, sgd.nesterov) == (0.1, 0.5, 0.0, False)
    assert repr(sgd) == ("SGD(lr=0.1, momentum=0.5, dampening=0.0, nesterov=False, "
                         "weight_decay=0.0)")
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas'"):
        OPTIMIZERS.get("sgd")(model, betas=(0.9, 0.99))
    with pytest.raises(ConfigError, match=r"optimizer\.momentum: must be < 1"):
        OPTIMIZERS.get("rmsprop")(model, momentum=1.0)
    with pytest.raises(TypeError, match="needs t_max"):
        SCHEDULES.get("cosine")(0.1)
    step = SCHEDULES.get("step")(0.1, gamma=0.5)
    assert repr(step) == "Step(base_lr=0.1, step_size=10, gamma=0.5, warmup_epochs=0)"


def test_a_negative_epoch_is_a_bug():
    for cfg in ({"name": "constant"}, {"name": "cosine"}):
        with pytest.raises(InternalError, match="epoch must be >= 0"):
            build_schedule(cfg, base_lr=0.1, max_epochs=3).lr_at(-1)


def test_registries_list_all_entries():
    assert OPTIMIZERS.names() == ["adam", "adamw", "rmsprop", "sgd"]
    assert SCHEDULES.names() == ["constant", "cosine", "exponential", "multistep", "step"]


# --- PyTorch cross-check (only where torch happens to be installed) -----------------------
@pytest.mark.parametrize("cfg,torch_cls,torch_kw", [
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
     "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01},
     "SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}),
    ({"name": "adam", "lr": 0.01, "weight_decay": 0.01}, "Adam", {"lr": 0.01, "weight_decay": 0.01}),
    ({"name": "adamw", "lr": 0.01, "weight_decay": 0.1}, "AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ({"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "weight_decay": 0.01}, "RMSprop",
     {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.01}),
])
def test_matches_torch(cfg, torch_cls, torch_kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = FakeModel([FakeLayer("fc", {"weight": (4, 5)}, rng)])
    w0 = model.layers["fc"].params["weight"].copy()
    tw = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, torch_cls)([tw], **torch_kw)
    opt = build_optimizer(cfg, model)
    for _ in range(5):
        g = rng.standard_normal(w0.shape)
        model.layers["fc"].grads["weight"] = g
        tw.grad = torch.tensor(g)
        opt.step()
        topt.step()
    np.testing.assert_allclose(model.layers["fc"].params["weight"], tw.detach().numpy(),
                               rtol=1e-10, atol=1e-12)


# --- schedules ------------------------------------------------------------------------
def test_constant_and_step():
    s = build_schedule({"name": "constant"}, base_lr=0.1, max_epochs=5)
    assert [s.lr_at(e) for e in range(3)] == [0.1, 0.1, 0.1]
    assert build_schedule(None, base_lr=0.2, max_epochs=5).lr_at(4) == 0.2
    s = build_schedule({"name": "step", "step_size": 3, "gamma": 0.5}, base_lr=0.8, max_epochs=10)
    assert [s.lr_at(e) for e in range(7)] == pytest.approx([0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2])


def test_multistep_and_exponential():
    s = build_schedule({"name": "multistep", "milestones": [2, 5], "gamma": 0.1}, 1.0, 10)
    assert [s.lr_at(e) for e in range(7)] == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    s = build_schedule({"name": "exponential", "gamma": 0.9}, 0.5, 10)
    assert [s.lr_at(e) for e in range(4)] == pytest.approx([0.5, 0.45, 0.405, 0.3645])


def test_cosine_matches_closed_form():
    s = build_schedule({"name": "cosine", "eta_min": 0.01}, base_lr=0.1, max_epochs=4)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [s.lr_at(e) for e in range(4)] == pytest.approx(expected)
    assert s.lr_at(4) == pytest.approx(0.01) and s.lr_at(9) == pytest.approx(0.01)
    s = build_schedule({"name": "cosine", "t_max": 10}, base_lr=1.0, max_epochs=4)
    assert s.lr_at(5) == pytest.approx(0.5)


def test_resolved_schedule_records_defaulted_t_max():
    """What checkpoints store, and which option came from trainer.max_epochs."""
    s = build_schedule({"name": "cosine", "warmup_epochs": 9}, 0.1, max_epochs=10)
    assert s.resolved() == {"name": "cosine", "base_lr": 0.1, "t_max": 10, "eta_min": 0.0,
                            "warmup_epochs": 9}
    assert s.derived == {"t_max": "trainer.max_epochs"}
    assert build_schedule({"name": "cosine", "t_max": 10}, 0.1, 10).derived == {}
    s = build_schedule({"name": "multistep", "milestones": [2, 5]}, 0.1, 10)
    assert s.resolved()["milestones"] == [2, 5]  # JSON-ready (a list, as read back)


def test_warmup_is_linear_then_schedule():
    s = build_schedule({"name": "step", "step_size": 4, "gamma": 0.1, "warmup_epochs": 3}, 0.8, 10)
    assert [s.lr_at(e) for e in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.08, 0.08])
    # cosine decays from base_lr over the epochs after the warm-up
    s = build_schedule({"name": "cosine", "warmup_epochs": 2}, 1.0, max_epochs=6)
    got = [s.lr_at(e) for e in range(6)]
    expected = [1 / 3, 2 / 3] + [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("cfg,match", [
    ({"name": "step", "step_size": 0}, r"scheduler\.step_size: must be >= 1"),
    ({"name": "step", "gamma": 0}, r"scheduler\.gamma: must be > 0"),
    ({"name": "step", "gamma": 1.5}, r"scheduler\.gamma: must be <= 1"),
    ({"name": "multistep", "milestones": [5, 3]}, r"scheduler\.milestones: must be strictly increasing"),
    ({"name": "multistep"}, r"scheduler\.milestones: expected a non-empty list"),
    ({"name": "multistep", "milestones": [2, "x"]}, r"scheduler\.milestones\[1\]"),
    ({"name": "cosine", "eta_min": 0.5}, r"scheduler\.eta_min: must not exceed optimizer\.lr"),
    ({"name": "cosine", "t_max": 2, "warmup_epochs": 2}, r"scheduler\.t_max: must exceed"),
    # with t_max unset it is trainer.max_epochs (10 here) that the warm-up must stay below
    ({"name": "cosine", "warmup_epochs": 10},
     r"scheduler\.warmup_epochs: must be less than trainer\.max_epochs=10"),
    ({"name": "cosine", "warmup_epochs": -1}, r"scheduler\.warmup_epochs: must be >= 0"),
    ({"name": "cosine", "warmup_epochs": 1.5}, r"scheduler\.warmup_epochs: expected an integer"),
    ({"name": "constant", "gamma": 0.5}, r"scheduler\.gamma: does not apply to schedule 'constant'"),
    ({"name": "cosin"}, r"scheduler\.name: .*did you mean 'cosine'"),
])
def test_bad_schedule_config_names_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_schedule(cfg, base_lr=0.1, max_epochs=10)


# --- CuPy: on a GPU, and on the strict CPU stand-in (tests/strict_cupy) everywhere ----------
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_cupy_parameters_match_numpy(name):
    from convtrain.runtime.backend import cupy_available

    if not cupy_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    import cupy

    check_device_update_matches_numpy(cupy, name)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_strict_cupy_parameters_match_numpy(strict_cupy, name):
    check_device_update_matches_numpy(strict_cupy, name)


def check_device_update_matches_numpy(cupy, name):
    """Four steps of optimizer ``name`` on device parameters equal the NumPy ones; its state
    saves as host arrays and loads back onto the device."""
    cfg = {"name": name, "lr": 0.01, "weight_decay": 0.01}
    if name in ("sgd", "rmsprop"):
        cfg["momentum"] = 0.9
    cpu, gpu = make_model(), make_model()
    for layer in gpu.layers.values():
        layer.params = {k: cupy.asarray(v) for k, v in layer.params.items()}
    opt_cpu, opt_gpu = build_optimizer(cfg, cpu), build_optimizer(cfg, gpu)
    rng = np.random.default_rng(0)
    for _ in range(4):
        set_random_grads(cpu, rng)
        for lname, layer in gpu.layers.items():
            layer.grads = {k: cupy.asarray(g) for k, g in cpu.layers[lname].grads.items()}
        opt_cpu.step()
        opt_gpu.step()
    for lname, layer in gpu.layers.items():
        for k, p in layer.params.items():
            assert isinstance(p, cupy.ndarray)
            np.testing.assert_allclose(cupy.asnumpy(p), cpu.layers[lname].params[k], rtol=1e-10)
    saved = opt_gpu.state_dict()
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    fresh = build_optimizer(cfg, gpu)
    fresh.load_state_dict(saved)
    assert all(isinstance(v, cupy.ndarray) for s in fresh.state.values() for k, v in s.items()
               if k != "step")
