"""Which layers of a model train: stages, `freeze`, `unfreeze`.

Frozen BatchNormalization layers run in inference mode (Keras 3: a BN layer with
`trainable=False` normalizes with its moving statistics and never updates them).
That, not `backbone(x, training=False)`, is the guarantee here: inside a functional
model, Keras 3.15 passes fit's `training=True` to nested models whatever their call
said (`keras/src/models/functional.py`, `operation_fn`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import keras

from zoo.blocks import nested_layers
from zoo.runs import trainable_params

__all__ = ["freeze", "stage_of", "stages", "trainable_params", "unfreeze"]

# (layer-name pattern, stage): the zoo's stem_ / stageN_ / blockN_ prefixes,
# keras.applications' convN_ (ResNet), block_N_ (MobileNetV2) and blockNa_
# (EfficientNet), and GoogLeNet's inceptionNx modules, which form stageN.
_STAGE_RULES = (
    (re.compile(r"^(stem|stage\d+|block_?\d+|conv\d+)_"), r"\1"),
    (re.compile(r"^(block\d+)[a-z]_"), r"\1"),
    (re.compile(r"^inception(\d+)[a-z]_"), r"stage\1"),
)


def _containers(model: keras.Model) -> Iterator[keras.Model]:
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _containers(layer)


def _has_weights(layer: keras.Layer) -> bool:
    """Layers that can train; Normalization holds fixed preprocessing statistics."""
    return bool(layer.weights) and not isinstance(layer, keras.layers.Normalization)


def stage_of(name: str) -> str | None:
    """The stage a layer name belongs to ("stage3_block1_conv1" -> "stage3"), if any."""
    for pattern, stage in _STAGE_RULES:
        match = pattern.match(name)
        if match:
            return match.expand(stage)
    return None


def stages(model: keras.Model) -> list[str]:
    """The model's stage names in order, e.g. ["stem", "stage1", "stage2", "stage3"]."""
    found = [stage_of(layer.name) for layer in nested_layers(model)]
    return list(dict.fromkeys(s for s in found if s))


def resolve_layer(
    model: keras.Model, spec: int | float | str, arg: str, last: bool
) -> int:
    """Index into `nested_layers(model)` named by `spec`.

    A layer name gives its index; a stage its last (`last=True`) or first layer;
    an int n the n-th layer with weights (counted from the bottom when `last`, from
    the top otherwise); a fraction f the same with n = floor(f * layers with
    weights). The result -1 (or len) means "no layer".
    """
    layers = nested_layers(model)
    weighted = [i for i, layer in enumerate(layers) if _has_weights(layer)]
    if isinstance(spec, str):
        names = [layer.name for layer in layers]
        if spec in names:
            return names.index(spec)
        members = [i for i, layer in enumerate(layers) if stage_of(layer.name) == spec]
        if members:
            return members[-1] if last else members[0]
    elif isinstance(spec, float) and 0 <= spec <= 1:
        spec = math.floor(spec * len(weighted))
    if isinstance(spec, int) and not isinstance(spec, bool):
        if 0 <= spec <= len(weighted):
            if spec == 0:
                return -1 if last else len(layers)
            return weighted[spec - 1] if last else weighted[-spec]
    stage_list = ", ".join(stages(model)) or "none"
    raise ValueError(
        f"{arg}={spec!r} names no layer or stage of {model.name}. Allowed: a stage "
        f"({stage_list}), a layer name (first {layers[0].name!r}, last "
        f"{layers[-1].name!r}; see model.summary()), a number of layers with weights "
        f"0..{len(weighted)}, or a fraction in [0, 1]."
    )


def freeze(model: keras.Model, until: int | float | str | None = None) -> keras.Model:
    """Freeze the bottom of a model; the layers above keep their state.

    Frozen layers stop training, and frozen BatchNormalization layers run in
    inference mode (moving statistics used, never updated).

    Args:
        model: Any Keras model; nested models (keras.applications backbones) count
            as their layers.
        until: The last layer to freeze: a layer name; a stage (`"stage3"` freezes
            through the last layer of stage 3; see `stages(model)`); an int n (the
            first n layers with weights); a fraction (`0.5` freezes the first half
            of the layers with weights). `None` freezes all but the classifier
            (the last layer with weights).

    Returns:
        The model (modified in place).
    """
    if until is None:
        weighted = [
            i for i, layer in enumerate(nested_layers(model)) if _has_weights(layer)
        ]
        end = weighted[-2] if len(weighted) > 1 else -1
    else:
        end = resolve_layer(model, until, "until", last=True)
    for layer in nested_layers(model)[: end + 1]:
        layer.trainable = False
    return model


def unfreeze(
    model: keras.Model,
    top: int | float | str | None = None,
    *,
    keep_batch_norm_frozen: bool = True,
) -> keras.Model:
    """Make the top of a model trainable again; the layers below keep their state.

    Args:
        model: Any Keras model (nested models count as their layers).
        top: Where unfreezing starts: a layer name or a stage (its first layer) up
            to the output; an int n (the top n layers with weights, the classifier
            included); a fraction (that share of the layers with weights, from the
            top). `None` unfreezes every layer.
        keep_batch_norm_frozen: Freeze every BatchNormalization layer of the
            model, above `top` and below: inference mode, statistics and
            scale/offset unchanged (the Keras transfer-learning guide's rule for
            fine-tuning). `False` lets those from `top` up train again with batch
            statistics.

    Returns:
        The model (modified in place).
    """
    layers = nested_layers(model)
    start = 0 if top is None else resolve_layer(model, top, "unfreeze", last=False)
    for container in _containers(model):
        if not container.trainable:  # setting it may reset the flags below it
            states = [(layer, layer.trainable) for layer in nested_layers(container)]
            container.trainable = True
            for layer, state in states:
                layer.trainable = state
    for layer in layers[start:]:
        layer.trainable = True
    if keep_batch_norm_frozen:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def check_unfreezes_something(
    model: keras.Model, top: int | float | str, keep_batch_norm_frozen: bool
) -> None:
    """Refuse a phase 2 that would train exactly what phase 1 trained."""
    layers = nested_layers(model)[resolve_layer(model, top, "unfreeze", last=False) :]
    bn = keras.layers.BatchNormalization
    new = [
        layer
        for layer in layers
        if _has_weights(layer)
        and not layer.trainable
        and not (keep_batch_norm_frozen and isinstance(layer, bn))
    ]
    if not new:
        trained = [layer.name for layer in layers if layer.trainable and layer.weights]
        raise ValueError(
            f"unfreeze={top!r} gives phase 2 nothing new to train: from there up only "
            f"{', '.join(trained) or 'no layer'} trains, as in phase 1 (a count or "
            "fraction counts layers with weights, rounded down). Unfreeze more (a "
            "larger number or share, an earlier stage) or pass finetune_epochs=0."
        )
