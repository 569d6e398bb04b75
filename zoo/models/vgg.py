"""VGG (Simonyan & Zisserman 2014); layer names match keras.applications.VGG16/19.

Variants: "default" is keras.applications' layout (the `batch_norm` knob adds BN
after every convolution and hidden Dense layer, without their biases);
"torchvision_bn" is torchvision's `vgg*_bn`: BN after every convolution, the
convolution biases kept, no BN on the Dense layers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras
from keras import layers

from zoo import blocks

FILTERS = (64, 128, 256, 512, 512)
VARIANTS = ("default", "torchvision_bn")


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    stages: tuple[int, ...],
    dropout: float = 0.5,
    variant: str = "default",
    **common: Any,
) -> keras.Model:
    """VGG with `stages[i]` 3x3 convolutions in block i+1, each block max-pooled."""
    blocks.check_variant(name, variant, VARIANTS)
    torchvision_bn = variant == "torchvision_bn"
    if torchvision_bn and "batch_norm" in common:
        raise ValueError(
            f"{name} variant 'torchvision_bn' places its batch norms itself (after "
            "every convolution); drop batch_norm."
        )
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    conv_k = replace(k, batch_norm=True) if torchvision_bn else k
    inputs, x = head.input(input_shape)
    features = {}
    for b, (convs, filters) in enumerate(zip(stages, FILTERS, strict=True), 1):
        for c in range(1, convs + 1):
            x = conv_k.conv(
                x,
                filters,
                3,
                bias=True if torchvision_bn else None,
                name=f"block{b}_conv{c}",
            )
        x = features[f"block{b}"] = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return head.model(
        inputs, features, lambda x: blocks.dense_top(x, k, head, (4096, 4096)), name
    )
