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
    """LeNet-5 with ReLU and max pooling; `classic=True` switches to the paper's kind
    of nonlinearity and subsampling: plain tanh (the paper scales it, 1.7159 *
    tanh(2/3 x)) and plain average pooling (the paper's subsampling has a trainable
    coefficient and bias per map). Both keep C3 fully connected to S2 (the paper
    connects each C3 map to 3-6 S2 maps) and a softmax classifier (the paper: RBF
    units), hence 61,706 parameters, not the paper's 60,000."""
    k, head = blocks.options(num_classes, **common)
    if classic and k.activation is None:
        k = replace(k, activation="tanh")
    pool = layers.AveragePooling2D if classic else layers.MaxPooling2D
    inputs, x = head.input(input_shape)
    features = {}
    for i, filters in enumerate((6, 16), 1):
        x = k.conv(x, filters, 5, padding="valid", name=f"block{i}_conv")
        x = features[f"block{i}"] = pool(2, name=f"block{i}_pool")(x)
    return head.model(
        inputs, features, lambda x: blocks.dense_top(x, k, head, (120, 84)), name
    )
