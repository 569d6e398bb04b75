"""Single-tower AlexNet (Krizhevsky et al. 2012).

Variants: "default" is torchvision's layout (64, 192, 384, 256, 256 filters of "One
weird trick", Krizhevsky 2014; dropout before each hidden Dense layer); "paper" is
the 2012 paper's single tower (96, 256, 384, 384, 256 filters, local response
normalization after conv1 and conv2 with k=2, n=5, alpha=1e-4, beta=0.75, dropout
after each hidden Dense layer as in Caffe), with torchvision's paddings so that a
224x224 input ends in 6x6.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo import blocks

# variant -> per layer (filters, kernel, stride, padding, LRN after, max-pool after).
LAYERS = {
    "default": (  # torchvision.models.alexnet
        (64, 11, 4, 2, False, True),
        (192, 5, 1, 2, False, True),
        (384, 3, 1, 1, False, False),
        (256, 3, 1, 1, False, False),
        (256, 3, 1, 1, False, True),
    ),
    "paper": (
        (96, 11, 4, 2, True, True),
        (256, 5, 1, 2, True, True),
        (384, 3, 1, 1, False, False),
        (384, 3, 1, 1, False, False),
        (256, 3, 1, 1, False, True),
    ),
}
VARIANTS = tuple(LAYERS)


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    dropout: float = 0.5,
    variant: str = "default",
    **common: Any,
) -> keras.Model:
    """AlexNet: five convolutions, three max-pools, two 4096 Dense layers + dropout."""
    blocks.check_variant(name, variant, VARIANTS)
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    inputs, x = head.input(input_shape)
    features = {}
    for i, (filters, kernel, stride, pad, lrn, pool) in enumerate(LAYERS[variant], 1):
        x = k.conv(
            x, filters, kernel, strides=stride, padding=pad, name=f"block{i}_conv"
        )
        if lrn:  # the paper's k=2, n=5 (radius 2), alpha applied to the sum
            x = blocks.LocalResponseNormalization(
                2, bias=2.0, alpha=1e-4, beta=0.75, name=f"block{i}_lrn"
            )(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"block{i}_pool")(x)
        features[f"block{i}"] = x
    return head.model(
        inputs,
        features,
        lambda x: blocks.dense_top(
            x, k, head, (4096, 4096), dropout_first=variant == "default"
        ),
        name,
    )
