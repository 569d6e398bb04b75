"""`describe(model)`: one row per layer with shape, parameters, FLOPs, receptive field.

Keras' `model.summary()` has no FLOPs or receptive field, so both are computed here
from the functional graph. FLOPs count multiply-adds x 2 of convolutions, Dense
layers and the input and recurrent matrix products of recurrent layers at every step
(the convention of the papers and of fvcore/ptflops); pooling, activations, gates'
elementwise products and batch norm count 0. The receptive field follows the
textbook recurrence `rf += (k - 1) * jump; jump *= stride` per spatial axis; layers
that merge branches take the largest input field; after Flatten, global pooling or
Dense it is the whole input (reported as <NA>).
"""

from __future__ import annotations

import math

import keras
import pandas as pd
from keras import layers

COLUMNS = [
    "name",
    "type",
    "output_shape",
    "params",
    "trainable_params",
    "non_trainable_params",
    "flops",
    "receptive_field",
]

_GLOBAL = None  # receptive field of layers that see the whole input


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _window(layer) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(effective kernel, stride) of a spatial layer; None if it keeps the field."""
    if isinstance(
        layer, layers.Conv2D | layers.DepthwiseConv2D | layers.SeparableConv2D
    ):
        k, d = _pair(layer.kernel_size), _pair(layer.dilation_rate)
        return tuple(d[i] * (k[i] - 1) + 1 for i in range(2)), _pair(layer.strides)
    if isinstance(layer, layers.MaxPooling2D | layers.AveragePooling2D):
        return _pair(layer.pool_size), _pair(layer.strides)
    return None


def _sees_everything(layer) -> bool:
    return isinstance(
        layer,
        layers.Flatten
        | layers.Dense
        | layers.GlobalAveragePooling2D
        | layers.GlobalMaxPooling2D
        | layers.AdaptiveAveragePooling2D
        | layers.AdaptiveMaxPooling2D
        | layers.Reshape,
    )


def _flops(layer, in_shape, out_shape) -> int:
    if isinstance(layer, layers.Bidirectional):
        return sum(
            _flops(direction, in_shape, out_shape)
            for direction in (layer.forward_layer, layer.backward_layer)
        )
    if isinstance(layer, layers.RNN):  # SimpleRNN, LSTM, GRU: per step x @ W, h @ U
        cell = layer.cell
        return 2 * in_shape[1] * _count([cell.kernel, cell.recurrent_kernel])
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = _pair(layer.kernel_size)
        return 2 * math.prod(out_shape[1:]) * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = _pair(layer.kernel_size)
        cin = in_shape[-1]
        depthwise = math.prod(out_shape[1:3]) * cin * layer.depth_multiplier * kh * kw
        pointwise = math.prod(out_shape[1:]) * cin * layer.depth_multiplier
        return 2 * (depthwise + pointwise)
    if isinstance(layer, layers.Conv2D):
        kh, kw = _pair(layer.kernel_size)
        return 2 * math.prod(out_shape[1:]) * kh * kw * in_shape[-1] // layer.groups
    if isinstance(layer, layers.Conv2DTranspose):  # each input value, every tap
        kh, kw = _pair(layer.kernel_size)
        return 2 * math.prod(in_shape[1:]) * kh * kw * out_shape[-1]
    if isinstance(layer, layers.Dense):
        return 2 * math.prod(out_shape[1:]) * in_shape[-1]
    return 0


def _count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def describe(model: keras.Model) -> pd.DataFrame:
    """One row per layer of a functional model, in topological order.

    Columns: name, type, output_shape, params, trainable_params, non_trainable_params,
    flops (multiply-adds x 2), receptive_field (input pixels, largest spatial axis;
    <NA> once a layer sees the whole input). `df.attrs` holds the totals.
    """
    parts = [la for la in getattr(model, "layers", []) if _functional(la)]
    if isinstance(model, keras.Model) and not _functional(model) and parts:
        return _describe_parts(model, parts)  # a GAN: its players, one after another
    if not _functional(model):
        raise ValueError(
            "describe needs a built functional keras.Model; "
            f"received {type(model).__name__}."
        )
    field: dict[int, tuple[tuple[int, int], tuple[int, int]] | None] = {}
    for t in model.inputs:
        field[id(t)] = ((1, 1), (1, 1))
    rows = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        node = layer._inbound_nodes[0]
        ins, outs = list(node.input_tensors), list(node.output_tensors)
        if _functional(layer):  # a sub-model (an encoder, a decoder): its layers
            rows += _prefixed(layer)
            for t in outs:
                field[id(t)] = _GLOBAL
            continue
        known = [field.get(id(t), _GLOBAL) for t in ins]
        if _sees_everything(layer) or any(f is _GLOBAL for f in known) or not known:
            rf = _GLOBAL
        else:
            rfs = tuple(max(f[0][i] for f in known) for i in range(2))
            jumps = tuple(max(f[1][i] for f in known) for i in range(2))
            window = _window(layer)
            if window is not None:
                (kh, kw), (sh, sw) = window
                rfs = (rfs[0] + (kh - 1) * jumps[0], rfs[1] + (kw - 1) * jumps[1])
                jumps = (jumps[0] * sh, jumps[1] * sw)
            rf = (rfs, jumps)
        for t in outs:
            field[id(t)] = rf
        out_shape = outs[0].shape
        trainable = _count(layer.trainable_weights)
        non_trainable = _count(layer.non_trainable_weights)
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": tuple(out_shape)
                if len(outs) == 1
                else [tuple(t.shape) for t in outs],
                "params": trainable + non_trainable,
                "trainable_params": trainable,
                "non_trainable_params": non_trainable,
                "flops": _flops(layer, ins[0].shape, out_shape) if ins else 0,
                "receptive_field": pd.NA if rf is _GLOBAL else max(rf[0]),
            }
        )
    return _table(rows, model.name, tuple(model.inputs[0].shape))


def _functional(obj) -> bool:
    return isinstance(obj, keras.Model) and hasattr(obj, "_operations")


def _prefixed(part: keras.Model) -> list[dict]:
    """describe(part)'s rows, each named `part/layer`."""
    rows = describe(part).to_dict("records")
    return [{**r, "name": f"{part.name}/{r['name']}"} for r in rows]


def _describe_parts(model: keras.Model, parts: list[keras.Model]) -> pd.DataFrame:
    """A subclassed model made of functional parts (the DCGAN's generator and
    discriminator): their rows in turn; its input is the first part's."""
    rows = [r for part in parts for r in _prefixed(part)]
    return _table(rows, model.name, tuple(parts[0].inputs[0].shape))


def _table(rows: list[dict], name: str, input_shape: tuple) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["receptive_field"] = df["receptive_field"].astype("Int64")
    df.attrs = {
        "model": name,
        "input_shape": input_shape,
        "params": int(df["params"].sum()),
        "trainable_params": int(df["trainable_params"].sum()),
        "non_trainable_params": int(df["non_trainable_params"].sum()),
        "flops": int(df["flops"].sum()),
    }
    return df


def format_table(df: pd.DataFrame) -> str:
    """The describe table as aligned text with a totals line (for `zoo info`)."""
    shown = df.assign(
        output_shape=df["output_shape"].map(str),
        receptive_field=df["receptive_field"].map(
            lambda v: "global" if pd.isna(v) else str(v)
        ),
    )
    a = df.attrs
    totals = (
        f"{a['model']}: input {a['input_shape']}, {a['params']:,} params "
        f"({a['trainable_params']:,} trainable, "
        f"{a['non_trainable_params']:,} non-trainable), "
        f"{a['flops'] / 1e9:.3f} GFLOPs"
    )
    return (
        shown.to_string(
            index=False,
            formatters={
                "params": "{:,}".format,
                "trainable_params": "{:,}".format,
                "non_trainable_params": "{:,}".format,
                "flops": "{:,}".format,
            },
        )
        + "\n"
        + totals
    )
