"""Recurrent sequence classifiers: SimpleRNN (Elman 1990), LSTM (Hochreiter &
Schmidhuber 1997), GRU (Cho et al. 2014), one or more stacked, optionally
bidirectional, reading an image as a sequence of rows (28 steps of 28 pixels for
MNIST) or a table row of n values as n steps of one value.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from zoo import blocks

# The registry's variants: the cell of each model name (`cell=` in its card).
CELLS = {
    "rnn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}
POOLS = {
    "avg": keras.layers.GlobalAveragePooling1D,
    "max": keras.layers.GlobalMaxPooling1D,
}


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; received {value!r}.")
    return value


def sequence_shape(input_shape: tuple[int, ...], steps: int | None) -> tuple[int, int]:
    """(steps, features per step) the input is read as: images (H, W, C) as H
    steps of W*C values, rows (n,) as n steps of one value, (T, F) as is;
    `steps` splits the whole input into that many equal steps instead."""
    size = math.prod(input_shape)
    steps = input_shape[0] if steps is None else _positive("steps", steps)
    if size % steps:
        raise ValueError(
            f"input_shape={tuple(input_shape)} ({size} values) cannot be read as "
            f"steps={steps} equal steps; pass a steps= that divides {size}, or "
            "leave it out (one step per row of an image, per value of a table row)."
        )
    return steps, size // steps


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    cell: str = "lstm",
    units: int = 128,
    layers: int = 1,
    bidirectional: bool = False,
    steps: int | None = None,
    recurrent_dropout: float = 0.0,
    kernel_initializer: Any = "glorot_uniform",
    **common: Any,
) -> keras.Model:
    """`layers` recurrent layers `recurrent{i}` of `units` cells each (a
    Bidirectional wrapper with `bidirectional`: twice the features), each
    followed by batch norm and dropout when asked (between layers, on the
    non-recurrent connections: Zaremba et al. 2014), then the classifier on the
    last state. `activation` replaces the cells' tanh; `kernel_initializer`
    (Keras' glorot_uniform by default) and `kernel_regularizer` reach the input
    kernels (the recurrent kernels keep Keras' orthogonal initializer);
    `recurrent_dropout` (0: Keras can use cuDNN) drops recurrent connections.
    Without top, `pooling` averages or maxes the last layer's outputs over the
    steps instead of taking its last state."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}.")
    layers = _positive("layers", layers)
    units = _positive("units", units)
    if not isinstance(bidirectional, bool):
        raise ValueError(
            f"bidirectional must be True or False; received {bidirectional!r}."
        )
    if isinstance(recurrent_dropout, bool) or not (
        isinstance(recurrent_dropout, int | float) and 0 <= recurrent_dropout < 1
    ):
        raise ValueError(
            f"recurrent_dropout must be a rate in [0, 1); received "
            f"{recurrent_dropout!r}."
        )
    k, head = blocks.options(
        num_classes, kernel_initializer=kernel_initializer, **common
    )
    pooled = not head.include_top and head.pooling is not None
    inputs, x = head.input(input_shape)
    x = keras.layers.Reshape(sequence_shape(input_shape, steps), name="sequence")(x)
    features = {}
    for i in range(1, layers + 1):
        layer = CELLS[cell](
            units,
            activation=k.activation or "tanh",
            recurrent_dropout=recurrent_dropout,
            return_sequences=i < layers or pooled,
            name=f"recurrent{i}",
            **k._layer_args(),
        )
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"recurrent{i}")
        x = layer(x)
        if k.batch_norm:
            x = blocks.batch_norm(x, f"recurrent{i}_bn")
        x = features[f"recurrent{i}"] = k.drop(x, f"recurrent{i}_dropout")
    if pooled:
        pool = POOLS[head.pooling](name=f"{head.pooling}_pool")
        x = features[pool.name] = pool(x)
    return head.model(
        inputs,
        features,
        lambda x: k.classifier(x, num_classes, head.classifier_activation),
        name,
    )
