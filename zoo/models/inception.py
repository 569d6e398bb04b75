"""GoogLeNet / Inception v1 (Szegedy et al. 2014, Table 1)."""

from __future__ import annotations

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


def inception_module(x, k: blocks.Knobs, filters: tuple[int, ...], name: str):
    """Four parallel branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 pool -> 1x1."""
    f1, r3, f3, r5, f5, proj = filters
    b1 = k.conv(x, f1, 1, name=f"{name}_1x1")
    b2 = k.conv(k.conv(x, r3, 1, name=f"{name}_3x3_reduce"), f3, 3, name=f"{name}_3x3")
    b3 = k.conv(k.conv(x, r5, 1, name=f"{name}_5x5_reduce"), f5, 5, name=f"{name}_5x5")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = k.conv(b4, proj, 1, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def aux_classifier(x, k: blocks.Knobs, head: blocks.Head, name: str):
    """Auxiliary head: 5x5/3 average pool (4x4 out at 224), 1x1 conv 128, fc 1024,
    dropout 0.7, classifier. Adaptive pooling keeps it valid at any input size."""
    x = layers.AdaptiveAveragePooling2D(4, name=f"{name}_pool")(x)
    x = k.conv(x, 128, 1, name=f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = k.act(
        layers.Dense(1024, name=f"{name}_fc", **k._layer_args())(x), f"{name}_fc_act"
    )
    x = k.drop(x, f"{name}_dropout", rate=0.7)
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
    **common: Any,
) -> keras.Model:
    """GoogLeNet. With `aux_heads=True` and a top, the outputs are
    `[predictions, aux1_predictions, aux2_predictions]`; the auxiliary outputs are for
    training only (loss weight 0.3 in the paper): serve `model.outputs[0]`."""
    k, head = blocks.options(num_classes, dropout=dropout, **common)
    inputs = keras.Input(input_shape, name="inputs")
    x = k.conv(inputs, 64, 7, strides=2, padding=3, name="conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = k.conv(x, 64, 1, name="conv2_reduce")
    x = k.conv(x, 192, 3, name="conv2")
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
            aux_classifier(a, k, head, f"aux{i}") for i, a in enumerate(aux_inputs, 1)
        ]

    return head.model(inputs, features, top, name)
