"""GoogLeNet / Inception v1 (Szegedy et al. 2014, Table 1, with true 5x5 branches).

Variants: "default" has no local response normalization and pools each auxiliary
head to 4x4 adaptively (torchvision's InceptionAux: valid at any input size, but
at 14x14 it pools 4-wide windows, not the paper's); "paper" adds the paper's LRN
after pool1 and after conv2 (Caffe's size 5, alpha 1e-4, beta 0.75) and the
auxiliary heads' 5x5/3 average pool (4x4 out at 224x224; needs inputs of at least
65x65 with `aux_heads`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras
from keras import layers

from zoo import blocks

# Table 1: name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj);
# "pool" is a 3x3/2 max-pool between stages.
MODULES = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("pool3", None),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("pool4", None),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
STAGE_ENDS = {"inception3b": "stage3", "inception4e": "stage4", "inception5b": "stage5"}
AUX_AFTER = ("inception4a", "inception4d")  # where the auxiliary classifiers branch off
VARIANTS = ("default", "paper")


def inception_module(x, k: blocks.Knobs, filters: tuple[int, ...], name: str):
    """Four parallel branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 pool -> 1x1."""
    f1, r3, f3, r5, f5, proj = filters
    b1 = k.conv(x, f1, 1, name=f"{name}_1x1")
    b2 = k.conv(k.conv(x, r3, 1, name=f"{name}_3x3_reduce"), f3, 3, name=f"{name}_3x3")
    b3 = k.conv(k.conv(x, r5, 1, name=f"{name}_5x5_reduce"), f5, 5, name=f"{name}_5x5")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = k.conv(b4, proj, 1, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def lrn(x, name: str):
    """Caffe's LRN of GoogLeNet: size 5, alpha 1e-4 (over the window), beta 0.75."""
    return blocks.LocalResponseNormalization(
        2, bias=1.0, alpha=1e-4 / 5, beta=0.75, name=name
    )(x)


def aux_classifier(
    x, k: blocks.Knobs, head: blocks.Head, name: str, variant: str = "default"
):
    """Auxiliary head: average pool to 4x4 (adaptive; "paper": 5x5/3), 1x1 conv
    128, fc 1024, dropout 0.7, classifier."""
    if variant == "paper":
        if min(x.shape[1:3]) < 5:
            raise ValueError(
                "googlenet variant 'paper' with aux_heads needs inputs of at least "
                f"65x65 (the 5x5/3 pool of the auxiliary heads); received "
                f"{x.shape[1]}x{x.shape[2]} feature maps there. Use a larger input "
                "or variant 'default'."
            )
        x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    else:
        x = layers.AdaptiveAveragePooling2D(4, name=f"{name}_pool")(x)
    x = k.conv(x, 128, 1, name=f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = replace(k, dropout=0.7).dense(x, 1024, name=f"{name}_fc")
    return k.classifier(
        x, head.num_classes, head.classifier_activation, name=f"{name}_predictions"
    )


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    aux_heads: bool = False,
    dropout: float = 0.4,
    variant: str = "default",
    **common: Any,
) -> keras.Model:
    """GoogLeNet. With `aux_heads=True` and a top, the outputs are
    `[predictions, aux1_predictions, aux2_predictions]`; the auxiliary outputs are for
    training only (loss weight 0.3 in the paper): serve `model.outputs[0]`."""
    blocks.check_variant(name, variant, VARIANTS)
    paper = variant == "paper"
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    inputs, x = head.input(input_shape)
    x = k.conv(x, 64, 7, strides=2, padding=3, name="conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = lrn(x, "pool1_lrn") if paper else x
    x = k.conv(x, 64, 1, name="conv2_reduce")
    x = k.conv(x, 192, 3, name="conv2")
    x = lrn(x, "conv2_lrn") if paper else x
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    features, aux_inputs = {"stem": x}, []
    for module, filters in MODULES:
        if filters is None:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=module)(x)
            continue
        x = inception_module(x, k, filters, module)
        if module in STAGE_ENDS:
            features[STAGE_ENDS[module]] = x
        if module in AUX_AFTER:
            aux_inputs.append(x)

    def top(x):
        main = blocks.pooled_top(x, k, head)
        if not aux_heads:
            return main
        return [main] + [
            aux_classifier(a, k, head, f"aux{i}", variant)
            for i, a in enumerate(aux_inputs, 1)
        ]

    return head.model(inputs, features, top, name)
