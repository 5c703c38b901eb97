"""What each filter responds to: the math behind the response views.

Four ways to ask a trained network what a filter (or the whole network) looks at, each on the
model's own forward/backward pass (NumPy or CuPy arrays; results come back to the host):

- :func:`activation_maximisation`: the input that maximises a filter's output at the centre
  of its map, found by regularised gradient ascent (Erhan et al. 2009; the regularisers of Yosinski et
  al. 2015: L2 decay, jitter, blur);
- :func:`top_patches`: for each filter, the k images whose strongest response is largest, and
  the crop of each at that response's receptive field (Zeiler & Fergus 2014);
- :func:`saliency`: ``max_c |d logit_y / d x_c|`` per pixel (Simonyan et al. 2014);
- :func:`grad_cam`: ``relu(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of
  ``d logit_y / d A_k`` at a layer ``A`` (Selvaraju et al. 2017), upsampled bilinearly.

The gradient of an inner layer's output needs the layers before it and after it: this module
walks a chain model's layers (:func:`split_at`), using only ``Model.layers``,
``Layer.forward`` / ``Layer.backward`` and ``Model.layer_outputs``. Graph models (a layer with
several inputs) get :func:`saliency` (the whole model's forward and backward) but not the views
that need an inner gradient or a window over a chain (:class:`NotAChain`); the graph work can
take over :func:`split_at` and :func:`receptive_field` for them.

Every function here runs the layers in inference mode (``training=False``: no dropout, no
batch statistics, no running-statistics update) and restores the layers' gradients, so calling
it between training steps changes nothing a run computes; random numbers (jitter, the start
image) come from a generator of its own seed, never from the run's streams.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np

from convtrain.errors import ConfigError, InternalError


class NotAChain(ConfigError):
    """The model is a graph: the inner-layer gradients of this module need a chain."""


# --- the layers around one layer ---------------------------------------------------------------
def _layer_names(model: Any) -> list[str]:
    return list(getattr(model, "order", None) or model.layers)


def split_at(model: Any, name: str) -> tuple[list[Any], list[Any]]:
    """The layers of a chain model up to and including ``name`` (the head) and after it (the
    tail), in config order.

    Config order equals the model's run order up to the ReLU / max-pool swap of
    ``Model._run_order``, which commutes exactly, so head and tail compute the same values.

    Raises:
        NotAChain: the model is a graph (``model.is_chain`` False).
        InternalError: no layer ``name``.
    """
    if not getattr(model, "is_chain", True):
        raise NotAChain(f"layer '{name}': activation maximisation and Grad-CAM need a chain "
                        "model (each layer reading the previous one); this model is a graph")
    names = _layer_names(model)
    if name not in names:
        raise InternalError(f"no layer '{name}' in the model (layers: {', '.join(names)})")
    cut = names.index(name) + 1
    return ([model.layers[n] for n in names[:cut]], [model.layers[n] for n in names[cut:]])


def run_forward(layers: Sequence[Any], x: Any) -> Any:
    """``x`` through ``layers`` in inference mode."""
    for layer in layers:
        x = layer.forward(x, training=False)
    return x


def run_backward(layers: Sequence[Any], dy: Any) -> Any:
    """The gradient w.r.t. the input of ``layers`` given ``dy`` at their output (after
    :func:`run_forward` on the same layers)."""
    for layer in reversed(layers):
        dy = layer.backward(dy)
    return dy


class _KeptGradients:
    """Context: the layers' ``grads`` as they were before (a hook between training steps must
    not leave other gradients for the gradient histograms to read)."""

    def __init__(self, model: Any):
        self.model = model

    def __enter__(self) -> None:
        self.saved = {name: {k: (v.copy() if v is not None else None)
                             for k, v in layer.grads.items()}
                      for name, layer in self.model.layers.items()}

    def __exit__(self, *exc: Any) -> None:
        for name, layer in self.model.layers.items():
            layer.grads.clear()
            layer.grads.update(self.saved[name])


def _as_model_input(model: Any, x: Any) -> Any:
    return model.backend.asarray(np.ascontiguousarray(x), dtype=model.dtype)


def centre(shape: Sequence[int]) -> tuple[int, int]:
    """The centre output position ``(oh // 2, ow // 2)`` of a map ``(..., oh, ow)``."""
    return int(shape[-2]) // 2, int(shape[-1]) // 2


def unit_input_gradient(model: Any, name: str, x: Any,
                        filters: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each image ``i`` of ``x`` ``(N, C, H, W)``: the output of layer ``name``'s channel
    ``filters[i]`` at the centre position (:func:`centre`), and its gradient w.r.t. the image.

    Returns host float arrays ``(N,)`` and ``(N, C, H, W)``.
    """
    head, _ = split_at(model, name)
    with _KeptGradients(model):
        y = run_forward(head, _as_model_input(model, x))
        if y.ndim != 4:
            raise InternalError(f"layer '{name}' has output shape {tuple(y.shape[1:])}, "
                                "not (C, H, W)")
        xp = model.backend.xp
        rows = xp.arange(y.shape[0])
        picked = xp.asarray(np.asarray(filters, dtype=np.int64))
        i, j = centre(y.shape)
        dy = xp.zeros(y.shape, dtype=y.dtype)
        dy[rows, picked, i, j] = 1.0
        value = np.array(model.backend.to_numpy(y[rows, picked, i, j]), copy=True)
        grad = run_backward(head, dy)
        return value, np.array(model.backend.to_numpy(grad), copy=True)


# --- activation maximisation -------------------------------------------------------------------
#: the smallest receptive field (pixels a side) whose ascent is jittered and blurred
MIN_SMOOTHED_WINDOW = 12


@dataclasses.dataclass(frozen=True)
class AscentSettings:
    """Gradient ascent on the input, in the model's input units (normalised pixels).

    The objective is one unit: the filter's output at the centre position of its map
    (Yosinski et al. 2015). (The map's mean is no objective for a first convolution: it is
    linear in the image, ``sum(w) * mean(x)`` away from the borders, so its maximiser is a flat
    image at the clip value, whatever the filter's pattern.)
    Each step: shift the image by a random ``(dy, dx)`` with ``|d| <= jitter`` (wrapping round),
    take the gradient of the unit there, shift it back, scale it to a mean ``|g|`` of 1 over
    the unit's receptive field (:func:`centre_window`; so ``lr / decay`` is the typical ``|x|``
    there at equilibrium, whatever the window's share of the image), then
    ``x += lr * g - decay * x``; every ``blur_every`` steps blur ``x`` with a Gaussian of
    ``blur_sigma`` pixels (jitter and blur only for receptive fields of at least
    :data:`MIN_SMOOTHED_WINDOW` pixels a side); keep ``|x| <= clip``. The start is
    ``N(0, start_std^2)`` noise from ``seed``: of the data's scale (inputs are normalised to unit
    variance), because from a faint start a trained layer's ReLUs are all closed (negative
    biases) and the gradient is exactly 0.
    """

    steps: int = 64
    lr: float = 0.1
    decay: float = 0.05
    jitter: int = 1
    blur_every: int = 4
    blur_sigma: float = 0.5
    clip: float = 3.0
    start_std: float = 1.0
    seed: int = 0


def roll(xp: Any, x: Any, shift: tuple[int, int]) -> Any:
    """``x`` ``(N, C, H, W)`` shifted by ``shift`` pixels along H and W, wrapping round
    (``numpy.roll`` over axes 2 and 3, from slices: what every backend has)."""
    for axis, amount in zip((2, 3), shift):
        amount %= x.shape[axis]
        if amount:
            index = [slice(None)] * 4
            head, tail = list(index), list(index)
            head[axis], tail[axis] = slice(-amount, None), slice(None, -amount)
            x = xp.concatenate([x[tuple(head)], x[tuple(tail)]], axis=axis)
    return x


def gaussian_blur(x: Any, sigma: float, xp: Any = np) -> Any:
    """Separable Gaussian blur of ``x`` ``(N, C, H, W)`` over H and W (reflecting borders; a
    kernel radius of ``ceil(2 sigma)``, at most what the image allows)."""
    if sigma <= 0:
        return x
    for axis in (2, 3):
        radius = min(int(math.ceil(2 * sigma)), x.shape[axis] - 1)
        if radius < 1:
            continue
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = xp.pad(x, pad, mode="reflect")
        out = xp.zeros_like(x)
        size = x.shape[axis]
        for i, tap in enumerate(taps):
            index = [slice(None)] * 4
            index[axis] = slice(i, i + size)
            out += float(tap) * padded[tuple(index)]
        x = out
    return x


def activation_maximisation(model: Any, name: str,
                            settings: AscentSettings = AscentSettings()) -> np.ndarray:
    """One image per filter of layer ``name`` that maximises its output at the centre position
    (:class:`AscentSettings`), all filters ascending together as one batch. Only the unit's
    receptive field matters (:func:`centre_window` crops it); elsewhere the decay keeps ``x``
    near 0.

    Returns host ``(F, C, H, W)`` in the model's input units.
    """
    head, _ = split_at(model, name)
    channels = int(model.layer_shapes[name][1][0]) if hasattr(model, "layer_shapes") else None
    if channels is None:
        raise InternalError("activation_maximisation: the model has no layer_shapes")
    xp = model.backend.xp
    rng = np.random.default_rng(settings.seed)
    shape = (channels,) + tuple(model.input_shape)
    x = xp.asarray(rng.normal(0.0, settings.start_std, shape).astype(model.dtype))
    filters = xp.arange(channels)
    # the unit's receptive field in the image: where its gradient can be non-zero
    top, left, size = centre_window(model, name)
    rows = slice(max(top, 0), max(top + size[0], 0))
    cols = slice(max(left, 0), max(left + size[1], 0))
    # jitter and blur wash out the pattern of a small window (a 1 px shift of a 3x3 filter)
    smoothing = min(size) >= MIN_SMOOTHED_WINDOW
    jitter = settings.jitter if smoothing else 0
    with _KeptGradients(model):
        for step in range(settings.steps):
            shift = tuple(int(s) for s in rng.integers(-jitter, jitter + 1, 2))
            shifted = roll(xp, x, shift)
            y = run_forward(head, shifted)
            dy = xp.zeros(y.shape, dtype=y.dtype)
            dy[(filters, filters) + centre(y.shape)] = 1.0
            grad = roll(xp, run_backward(head, dy), (-shift[0], -shift[1]))
            scale = xp.abs(grad[:, :, rows, cols]).mean(axis=(1, 2, 3), keepdims=True)
            grad = grad / xp.maximum(scale, 1e-12)
            x = x + settings.lr * grad - settings.decay * x
            if smoothing and settings.blur_every and (step + 1) % settings.blur_every == 0:
                x = gaussian_blur(x, settings.blur_sigma, xp)
            x = xp.clip(x, -settings.clip, settings.clip).astype(model.dtype, copy=False)
    return np.array(model.backend.to_numpy(x), copy=True)


def centre_outputs(model: Any, name: str, x: Any) -> np.ndarray:
    """Layer ``name``'s output for ``x`` at the centre position: host ``(N, F)``."""
    out = model.layer_outputs(_as_model_input(model, x), [name], training=False)[name]
    i, j = centre(out.shape)
    return np.asarray(model.backend.to_numpy(out[:, :, i, j]), dtype=np.float64)


# --- receptive fields and top-activating patches -----------------------------------------------
@dataclasses.dataclass(frozen=True)
class Window:
    """Where the output position ``(i, j)`` of a layer looks in the model input: rows
    ``start[0] + i * jump[0]`` to ``+ size[0]`` (exclusive), columns likewise. ``start`` may
    be negative and the window may end past the image: those pixels are padding."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def rows_cols(self, i: int, j: int) -> tuple[int, int]:
        """The window's top-left corner for output position ``(i, j)``."""
        return self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1]


def receptive_field(model: Any, name: str) -> Window:
    """The input window of one output position of layer ``name``, per axis from ``size =
    jump = 1, start = 0`` through each layer up to ``name`` with kernel ``k``, stride ``s``,
    dilation ``d`` and padding ``p`` (``Layer.receptive_field_step`` and ``layer.padding``):
    ``size += (d (k - 1)) jump``, ``start -= p jump``, ``jump *= s``.

    Raises:
        NotAChain: the model is a graph.
        ConfigError: a layer up to ``name`` sees the whole input (the window is the image).
    """
    head, _ = split_at(model, name)
    size, jump, start = [1, 1], [1, 1], [0, 0]
    for layer in head:
        if getattr(layer, "global_receptive_field", False):
            raise ConfigError(f"layer '{name}': its outputs see the whole input; no window")
        padding = tuple(getattr(layer, "padding", (0, 0)) or (0, 0))
        for axis, (kernel, stride, dilation) in enumerate(layer.receptive_field_step()):
            start[axis] -= int(padding[axis]) * jump[axis]
            size[axis] += dilation * (kernel - 1) * jump[axis]
            jump[axis] *= stride
    return Window(tuple(size), tuple(jump), tuple(start))


def centre_window(model: Any, name: str) -> tuple[int, int, tuple[int, int]]:
    """``(top, left, size)`` of the receptive field of layer ``name``'s centre unit."""
    window = receptive_field(model, name)
    return window.rows_cols(*centre(model.layer_shapes[name][1])) + (window.size,)


def inside_mask(top: int, left: int, size: tuple[int, int],
                image_size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` bool: which pixels of the window at ``(top, left)`` lie in the image."""
    rows = np.arange(top, top + size[0])
    cols = np.arange(left, left + size[1])
    return (((rows >= 0) & (rows < image_size[0]))[:, None]
            & ((cols >= 0) & (cols < image_size[1]))[None, :])


def crop(image: np.ndarray, top: int, left: int, size: tuple[int, int],
         fill: float = 0.0) -> np.ndarray:
    """``image[:, top:top+h, left:left+w]`` ``(C, h, w)``, ``fill`` where the window leaves
    the image (the zero padding a convolution sees, in input units)."""
    c, height, width = image.shape
    h, w = size
    out = np.full((c, h, w), fill, dtype=image.dtype)
    r0, r1 = max(top, 0), min(top + h, height)
    c0, c1 = max(left, 0), min(left + w, width)
    if r0 < r1 and c0 < c1:
        out[:, r0 - top:r1 - top, c0 - left:c1 - left] = image[:, r0:r1, c0:c1]
    return out


@dataclasses.dataclass(frozen=True)
class TopPatches:
    """The k images that excite each filter of one layer most.

    Attributes:
        values: ``(F, k)`` the filter's largest output in each chosen image, descending.
        images: ``(F, k)`` indices of those images.
        positions: ``(F, k, 2)`` the output position ``(i, j)`` of that largest output.
        crops: ``(F, k, C, h, w)`` the input window of that position (:func:`receptive_field`),
            0 where it leaves the image.
        inside: ``(F, k, h, w)`` which crop pixels lie in the image (the rest is padding).
        window: the layer's :class:`Window`.
    """

    values: np.ndarray
    images: np.ndarray
    positions: np.ndarray
    crops: np.ndarray
    inside: np.ndarray
    window: Window


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def top_patches(model: Any, name: str, images: np.ndarray, k: int = 8,
                batch_size: int = 256) -> TopPatches:
    """For each filter of layer ``name``: the ``k`` images of ``images`` ``(N, C, H, W)`` (model
    input units, host) with the largest maximum output of that filter (each image at most
    once, ties to the lower index), with the crop of the input window at the arg-max position
    (the first in row-major order). ``k`` is capped at ``N``.
    """
    window = receptive_field(model, name)
    n = len(images)
    k = min(int(k), n)
    peak_values, peak_positions = [], []
    for part in _batches(n, batch_size):
        out = model.layer_outputs(_as_model_input(model, images[part]), [name],
                                  training=False)[name]
        out = np.asarray(model.backend.to_numpy(out), dtype=np.float64)  # (B, F, oh, ow)
        flat = out.reshape(out.shape[0], out.shape[1], -1)
        where = flat.argmax(axis=2)  # (B, F): the first maximum in row-major order
        peak_values.append(np.take_along_axis(flat, where[..., None], axis=2)[..., 0])
        peak_positions.append(np.stack(np.unravel_index(where, out.shape[2:]), axis=-1))
    values = np.concatenate(peak_values).T  # (F, N)
    positions = np.concatenate(peak_positions).transpose(1, 0, 2)  # (F, N, 2)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]  # (F, k)
    chosen_values = np.take_along_axis(values, order, axis=1)
    chosen_positions = np.take_along_axis(positions, order[..., None], axis=1)
    corners = [[window.rows_cols(*pos) for pos in chosen_positions[f]] for f in range(len(order))]
    crops = np.stack([np.stack([crop(images[img], *corner, window.size)
                                for img, corner in zip(order[f], corners[f])])
                      for f in range(len(order))])
    inside = np.array([[inside_mask(*corner, window.size, images.shape[2:]) for corner in row]
                       for row in corners], dtype=bool).reshape(crops.shape[:2] + window.size)
    return TopPatches(chosen_values, order, chosen_positions, crops, inside, window)


# --- saliency and Grad-CAM ---------------------------------------------------------------------
def _one_hot(xp: Any, shape: tuple[int, ...], classes: np.ndarray, dtype: Any) -> Any:
    out = xp.zeros(shape, dtype=dtype)
    out[xp.arange(shape[0]), xp.asarray(np.asarray(classes, dtype=np.int64))] = 1.0
    return out


def saliency(model: Any, x: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``max over channels |d logit[classes[i]] / d x_i|`` for each image: host ``(N, H, W)``."""
    with _KeptGradients(model):
        logits = model.forward(_as_model_input(model, x), training=False,
                               keep_for_backward=True)
        grad = model.backward(_one_hot(model.backend.xp, tuple(logits.shape), np.asarray(classes),
                                       logits.dtype), input_grad=True)
        grad = np.asarray(model.backend.to_numpy(grad), dtype=np.float64)
    return np.abs(grad).max(axis=1)


def grad_cam_layer(model: Any) -> str | None:
    """The default Grad-CAM layer: the last layer whose output is a map ``(C, H, W)`` with
    ``H * W > 1`` before the first layer that sees the whole input (None if there is none)."""
    chosen = None
    for name in _layer_names(model):
        layer = model.layers[name]
        if getattr(layer, "global_receptive_field", False):
            break
        out = model.layer_shapes[name][1]
        if len(out) == 3 and out[1] * out[2] > 1:
            chosen = name
    return chosen


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N, h, w)`` -> ``(N, H, W)``, bilinear with half-pixel centres (PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)``, OpenCV's ``resize``)."""
    def coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(src).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, src - low

    m = np.asarray(maps, dtype=np.float64)
    r0, r1, fr = coords(m.shape[1], size[0])
    c0, c1, fc = coords(m.shape[2], size[1])
    rows = m[:, r0] * (1 - fr)[None, :, None] + m[:, r1] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def grad_cam(model: Any, x: np.ndarray, classes: Sequence[int],
             layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of ``classes[i]`` for each image of ``x`` at ``layer`` (default
    :func:`grad_cam_layer`).

    Returns ``(cams, maps)``: host ``(N, h, w)`` ``relu(sum_k alpha_k A_k)`` at the layer's
    resolution and the same upsampled to the input's ``(N, H, W)`` (:func:`resize_bilinear`),
    neither normalised.
    """
    name = layer or grad_cam_layer(model)
    if name is None:
        raise ConfigError("Grad-CAM: the model has no layer with a spatial output")
    head, tail = split_at(model, name)
    with _KeptGradients(model):
        activations = run_forward(head, _as_model_input(model, x))
        # a host copy first: later layers may work in place on what they are handed
        a = np.array(model.backend.to_numpy(activations), dtype=np.float64, copy=True)
        logits = run_forward(tail, activations)
        grads = run_backward(tail, _one_hot(model.backend.xp, tuple(logits.shape),
                                            np.asarray(classes), logits.dtype))
        g = np.asarray(model.backend.to_numpy(grads), dtype=np.float64)
    alpha = g.mean(axis=(2, 3), keepdims=True)  # (N, K, 1, 1)
    cams = np.maximum((alpha * a).sum(axis=1), 0.0)
    return cams, resize_bilinear(cams, tuple(model.input_shape[1:]))
