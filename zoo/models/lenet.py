"""LeNet-5 (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5, pool, fc 120, 84."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras
from keras import layers

from zoo import blocks


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    classic: bool = False,
    **common: Any,
) -> keras.Model:
    """LeNet-5; `classic=True` uses tanh and average pooling as in the paper."""
    k, head = blocks.options(num_classes, **common)
    if classic and k.activation is None:
        k = replace(k, activation="tanh")
    pool = layers.AveragePooling2D if classic else layers.MaxPooling2D
    inputs = keras.Input(input_shape, name="inputs")
    x, features = inputs, {}
    for i, filters in enumerate((6, 16), 1):
        x = k.conv(x, filters, 5, padding="valid", name=f"block{i}_conv")
        x = features[f"block{i}"] = pool(2, name=f"block{i}_pool")(x)
    return head.model(
        inputs, features, lambda x: blocks.dense_top(x, k, head, (120, 84)), name
    )
