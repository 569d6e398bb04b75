"""VGG (Simonyan & Zisserman 2014); layer names match keras.applications.VGG16/19."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo import blocks

FILTERS = (64, 128, 256, 512, 512)


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    stages: tuple[int, ...],
    dropout: float = 0.5,
    **common: Any,
) -> keras.Model:
    """VGG with `stages[i]` 3x3 convolutions in block i+1, each block max-pooled."""
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    inputs = keras.Input(input_shape, name="inputs")
    x, features = inputs, {}
    for b, (convs, filters) in enumerate(zip(stages, FILTERS, strict=True), 1):
        for c in range(1, convs + 1):
            x = k.conv(x, filters, 3, name=f"block{b}_conv{c}")
        x = features[f"block{b}"] = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return head.model(
        inputs, features, lambda x: blocks.dense_top(x, k, head, (4096, 4096)), name
    )
