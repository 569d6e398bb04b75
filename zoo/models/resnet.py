"""ResNets (He et al. 2016): ImageNet ResNet-18...152 and CIFAR ResNet-20...110.

ImageNet variants are v1 by default (the paper and keras.applications: a bottleneck
strides in its first 1x1 convolution); `variant="v1.5"` strides in the 3x3 instead,
as torchvision's ResNets do (same parameters, more FLOPs, ~+0.5 % ImageNet top-1).
Torchvision's convention of no convolution bias before batch norm (BN epsilon
1.001e-5 as in keras.applications; see blocks.batch_norm); keras.applications'
biases are folded into the batch norms when its weights are loaded (zoo.weights).
CIFAR variants follow section 4.2: a 3x3 stem with 16 filters, three stages of
16/32/64 filters and parameter-free shortcuts (subsample + zero-pad channels).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo import blocks

VARIANTS = ("v1", "v1.5")  # where a bottleneck strides: its 1x1 (v1) or 3x3 (v1.5)


def basic_block(
    x,
    k: blocks.Knobs,
    filters: int,
    stride: int,
    name: str,
    shortcut: str = "projection",
):
    """Two 3x3 convolutions; the shortcut projects (1x1 conv + BN) or zero-pads."""
    y = k.conv(x, filters, 3, strides=stride, padding=1, name=f"{name}_conv1")
    y = k.conv(y, filters, 3, activate=False, name=f"{name}_conv2")
    if stride != 1 or x.shape[-1] != filters:
        if shortcut == "projection":
            x = k.conv(
                x, filters, 1, strides=stride, activate=False, name=f"{name}_shortcut"
            )
        else:
            x = layers.MaxPooling2D(1, strides=stride, name=f"{name}_shortcut_pool")(x)
            x = blocks.ChannelPad(filters, name=f"{name}_shortcut_pad")(x)
    return k.act(layers.Add(name=f"{name}_add")([x, y]), f"{name}_out")


def bottleneck_block(
    x, k: blocks.Knobs, filters: int, stride: int, name: str, variant: str = "v1"
):
    """1x1 reduce, 3x3, 1x1 expand x4; projection shortcut if needed. The 1x1
    (v1) or the 3x3 (v1.5, padded 1 like PyTorch when strided) strides."""
    v1 = variant == "v1"
    y = k.conv(x, filters, 1, strides=stride if v1 else 1, name=f"{name}_conv1")
    y = k.conv(
        y,
        filters,
        3,
        strides=1 if v1 else stride,
        padding="same" if v1 or stride == 1 else 1,
        name=f"{name}_conv2",
    )
    y = k.conv(y, filters * 4, 1, activate=False, name=f"{name}_conv3")
    if stride != 1 or x.shape[-1] != filters * 4:
        x = k.conv(
            x, filters * 4, 1, strides=stride, activate=False, name=f"{name}_shortcut"
        )
    return k.act(layers.Add(name=f"{name}_add")([x, y]), f"{name}_out")


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    block: str,
    stages: tuple[int, ...],
    batch_norm: bool = True,
    width: float = 1.0,
    variant: str = "v1",
    **common: Any,
) -> keras.Model:
    """ResNet with `stages[i]` blocks in stage i+1; `width` scales every filter count
    (1.0 is the paper; the tuner searches it); `variant` "v1" or "v1.5" (where a
    bottleneck strides; basic blocks are the same in both)."""
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier; received {width!r}.")
    blocks.check_variant(name, variant, VARIANTS)
    k, head = blocks.options(num_classes, batch_norm=batch_norm, **common)
    inputs, x = head.input(input_shape)
    if block == "cifar":
        x = k.conv(x, round(16 * width), 3, name="stem_conv")
        base = (16, 32, 64)
    else:
        x = k.conv(x, round(64 * width), 7, strides=2, padding=3, name="stem_conv")
        x = blocks.replicate_pad(x, "stem_pool_pad")
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
        base = (64, 128, 256, 512)
    features = {"stem": x}
    for s, (blocks_in_stage, filters) in enumerate(zip(stages, base, strict=True), 1):
        for b in range(1, blocks_in_stage + 1):
            stride = 2 if b == 1 and s > 1 else 1
            name_b, f = f"stage{s}_block{b}", round(filters * width)
            if block == "bottleneck":
                x = bottleneck_block(x, k, f, stride, name_b, variant)
            else:
                x = basic_block(
                    x,
                    k,
                    f,
                    stride,
                    name_b,
                    "zero_pad" if block == "cifar" else "projection",
                )
        features[f"stage{s}"] = x
    return head.model(inputs, features, lambda x: blocks.pooled_top(x, k, head), name)
