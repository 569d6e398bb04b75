"""Multi-layer perceptron: Flatten, hidden Dense layers, classifier."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo import blocks


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    hidden_units: tuple[int, ...] = (256, 128),
    dropout: float = 0.0,
    **common: Any,
) -> keras.Model:
    """MLP with one `dense{i}` layer (+BN, activation, dropout) per hidden width."""
    units = tuple(hidden_units)
    if not units or any(not isinstance(u, int) or u < 1 for u in units):
        raise ValueError(
            "hidden_units must be one or more positive ints; "
            f"received {hidden_units!r}."
        )
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    inputs, x = head.input(input_shape)
    x = layers.Flatten(name="flatten")(x) if len(input_shape) > 1 else x
    features = {}
    for i, n in enumerate(units, 1):
        x = features[f"dense{i}"] = k.dense(x, n, name=f"dense{i}")
    return head.model(
        inputs,
        features,
        lambda x: k.classifier(x, num_classes, head.classifier_activation),
        name,
    )
