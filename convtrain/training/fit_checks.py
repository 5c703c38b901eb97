"""Whether a model, a dataset and the batch settings fit together, checked before training.

Two questions about the model are answered by the layers' capability flags
(:class:`convtrain.nn.base.Layer`), not by their class names:

- which config key would make the logits match the classes (``width_key``, e.g. dense ``units``);
- whether the model ends in probabilities instead of logits (``outputs_probabilities``: a
  softmax layer), which the softmax cross-entropy loss would softmax a second time;
- which layers cannot train on a batch with one value per channel (``uses_batch_statistics``):
  the drop-last policy of :func:`resolve_drop_last`.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from convtrain.data.loader import num_batches
from convtrain.errors import ConfigError

log = logging.getLogger("convtrain")


def _layers(model: Any) -> dict[str, Any]:
    return getattr(model, "layers", None) or {}


def output_layer_hint(model: Any, num_classes: int) -> str:
    """Which config key makes the model output ``num_classes`` logits: the last layer that
    declares a ``width_key`` makes them."""
    for name, layer in reversed(list(_layers(model).items())):
        key = getattr(layer, "width_key", None)
        if key is not None:
            return f"set model.layers.{name}.{key}={num_classes}"
    return f"end the model with a dense layer of units={num_classes}"


def check_output_is_logits(model: Any) -> None:
    """Refuse a model whose output layer makes probabilities (a softmax): the loss is softmax
    cross-entropy on logits, so training would apply the softmax twice (and learn slowly, its
    gradients squashed).

    Raises:
        ConfigError: naming the layer.
    """
    layers = _layers(model)
    if not layers:
        return
    name, layer = list(layers.items())[-1]
    if getattr(layer, "outputs_probabilities", False):
        raise ConfigError(
            f"model.layers.{name}: a {layer.type_name} layer cannot be the model's output: the "
            f"training loss is softmax cross-entropy on logits and applies the softmax itself; "
            f"remove the layer (model.layers.{name}=null)")


def check_model_fits_data(model: Any, data: Any) -> None:
    """A non-empty training split, logits (not probabilities) ``(num_classes,)``.

    Raises:
        ConfigError: naming the dataset, or the layer key to change.
    """
    name, k = getattr(data, "name", "?"), int(data.num_classes)
    if len(data.train) == 0:
        raise ConfigError(f"data: dataset '{name}' has an empty training split")
    check_output_is_logits(model)
    out = tuple(int(d) for d in model.output_shape)
    if out != (k,):
        raise ConfigError(f"model output shape {out} does not match the {k} classes of dataset "
                          f"'{name}': {output_layer_hint(model, k)}")


def layers_needing_two_samples(model: Any) -> list[str]:
    """Layers that normalise with batch statistics and see 1x1 maps (or flat features): a
    1-sample training batch gives them a single value per channel, whose variance is undefined
    (the math refuses it)."""
    names = []
    for name, layer in _layers(model).items():
        if getattr(layer, "uses_batch_statistics", False):
            shape = getattr(layer, "input_shape", None)
            if shape is None or math.prod(int(d) for d in shape[1:]) < 2:
                names.append(name)
    return names


def _one_value(model: Any, name: str, explain: bool = False) -> str:
    """How a 1-sample batch starves layer ``name``: per channel of 1x1 maps, or per feature."""
    shape = getattr(_layers(model).get(name), "input_shape", None) or ()
    if len(shape) == 1:
        return "one value per feature"
    return "one value per channel" + (" (its input maps are 1x1)" if explain else "")


def resolve_drop_last(model: Any, num_train: int, batch_size: int,
                      drop_last: bool | None) -> bool:
    """Whether to skip the last, smaller training batch of every epoch.

    None (auto) drops it only when it would hold one sample and a layer of
    :func:`layers_needing_two_samples` sees it; ``False`` in that case is a ConfigError, as are
    batches of one sample for such a layer and a ``True`` that leaves no batch at all.
    """
    n, size = num_train, batch_size
    needy = layers_needing_two_samples(model)
    if needy and min(n, size) == 1:
        raise ConfigError(
            f"trainer.batch_size: training batches of 1 sample (trainer.batch_size={size}, "
            f"{n} training samples) give batchnorm layer model.layers.{needy[0]} "
            f"{_one_value(model, needy[0], explain=True)}; use batches of 2 or more")
    single_last = bool(needy) and n % size == 1
    if single_last and drop_last is False:
        raise ConfigError(
            f"trainer.drop_last: false leaves a last training batch of 1 sample ({n} "
            f"samples, trainer.batch_size={size}), which batchnorm layer "
            f"model.layers.{needy[0]} cannot train on ({_one_value(model, needy[0])}); set "
            f"trainer.drop_last=null (auto) or true, or change trainer.batch_size")
    if drop_last is None:
        drop_last = single_last
        if drop_last:
            log.info("dropping the last training batch of every epoch: it would hold 1 "
                     "sample, too few for batchnorm layer model.layers.%s "
                     "(trainer.drop_last=null)", needy[0])
    if num_batches(n, size, drop_last) == 0:
        raise ConfigError(f"trainer.drop_last: true with trainer.batch_size={size} leaves "
                          f"no training batch for the {n} training samples")
    return drop_last
