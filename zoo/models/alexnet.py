"""Single-tower AlexNet (Krizhevsky et al. 2012) in torchvision's layout."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo import blocks

# (filters, kernel, stride, padding, max-pool after): torchvision.models.alexnet.
LAYERS = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    dropout: float = 0.5,
    **common: Any,
) -> keras.Model:
    """AlexNet: five convolutions, three max-pools, two 4096 Dense layers + dropout."""
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    inputs = keras.Input(input_shape, name="inputs")
    x, features = inputs, {}
    for i, (filters, kernel, stride, pad, pool) in enumerate(LAYERS, 1):
        x = k.conv(
            x, filters, kernel, strides=stride, padding=pad, name=f"block{i}_conv"
        )
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"block{i}_pool")(x)
        features[f"block{i}"] = x
    return head.model(
        inputs, features, lambda x: blocks.dense_top(x, k, head, (4096, 4096)), name
    )
