"""ONNX export for ONNX Runtime and Triton Inference Server, verified by ONNX
Runtime in a fresh process.

The serving graph (the SavedModel's: raw input, preprocessing, model, top-k) is
frozen and converted by tf2onnx, the converter behind Keras'
`model.export(format="onnx")`. Keras' entry point converts a model's `call`
only, with tf2onnx's output names; the contract here has named outputs and the
preprocessing inside, so the serving function is frozen and handed to the same
converter directly. The base directory is a Triton model repository entry:
`<base>/config.pbtxt` and `<base>/<version>/model.onnx`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import tensorflow as tf

from zoo.export import layout, serving
from zoo.export.rewrites import with_precision
from zoo.export.verification import verify  # noqa: F401  (exporter calls it here)
from zoo.files import read_record, write_atomic

# ONNX opset of the exports: Einsum (the portable resize) needs 12, TopK's
# largest/sorted attributes 11; 17 is served by ONNX Runtime >= 1.11 and Triton
# >= 22.04.
OPSET = 17

# Largest batch Triton accepts per request (its dynamic batcher groups smaller
# ones up to it).
TRITON_MAX_BATCH = 256

_TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "int32": "TYPE_INT32"}


def write(
    path: Path,
    model: keras.Model,
    preprocessing: keras.Layer | None,
    spec: tf.TensorSpec,
    *,
    top_k: int | None,
    regression: bool,
    precision: str,
    jit_compile: bool,
    frozen: bool,
) -> dict:
    """Convert the serving function of `model` to `path`/model.onnx; returns
    what export_meta.json records of it.

    Raises:
        ValueError: If tf2onnx has no conversion for an op, naming its layer.
    """
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    serving_model = with_precision(model, precision)
    function = serving.portable_function(
        serving_model, preprocessing, spec, top_k, regression
    )
    # Frozen first: tf2onnx's from_function would list the constants the
    # function captures (normalization statistics) as graph inputs. Control
    # flow kept as functional While loops (as tf2onnx freezes), which it
    # converts to ONNX Loops (the recurrent layers).
    graph = convert_variables_to_constants_v2(
        function, lower_control_flow=False, aggressive_inlining=True
    )
    outputs = [t.name for t in graph.outputs]
    names = dict(zip(outputs, sorted(function.structured_outputs), strict=True))
    # tf2onnx logs an op it cannot convert; the error below names its layer.
    logger = logging.getLogger("tf2onnx")
    level, logger.level = logger.level, logging.CRITICAL
    try:
        proto, _ = tf2onnx.convert.from_graph_def(
            graph.graph.as_graph_def(),
            input_names=[f"{layout.INPUT_NAME}:0"],
            output_names=outputs,
            tensors_to_rename={**names, f"{layout.INPUT_NAME}:0": layout.INPUT_NAME},
            opset=OPSET,
        )
    finally:
        logger.setLevel(level)
    # tf2onnx keeps an op it cannot convert as it is (continue_on_error).
    missing = sorted(
        {n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)}
    )
    if missing:
        why = f"tf2onnx {tf2onnx.__version__} has no ONNX conversion for it"
        raise serving.unconvertible(
            "onnx", missing, function, [model, preprocessing], why
        )
    onnx.save(proto, str(path / layout.MODEL_FILES["onnx"]))
    return {"opset": OPSET, "runtime_config": layout.ONNX_RUNTIME_CONFIG}


def published(base: Path) -> None:
    """Write the Triton model configuration of `base`: the newest ONNX version's
    names, dtypes and shapes, served for every ONNX version that shares them
    (a base may hold versions of other formats, which Triton must skip)."""
    onnx_versions = [
        v
        for v in layout.list_versions(base)
        if layout.version_format(base / str(v)) == "onnx"
    ]
    metas = {
        v: read_record(base / str(v) / layout.META_FILE, "Triton")
        for v in onnx_versions
    }
    newest = metas[onnx_versions[-1]]
    served = [v for v in onnx_versions if _signature(metas[v]) == _signature(newest)]
    write_atomic(base / layout.TRITON_CONFIG, triton_config(base.name, newest, served))


def _signature(meta: dict | None) -> list:
    return [
        (meta or {}).get(k)
        for k in (
            "input_dtype",
            "input_shape",
            "outputs",
            "num_classes",
            "top_k",
            "num_outputs",
        )
    ]


def triton_config(name: str, meta: dict, versions: list[int]) -> str:
    """config.pbtxt of a Triton model repository entry for ONNX versions with
    export_meta.json `meta`: dynamic batch (the first dimension is implicit)."""
    if meta["task"] == "regression":
        outputs = [(layout.REGRESSION_OUTPUT, "float32", meta["num_outputs"])]
    else:
        outputs = [
            ("probabilities", "float32", meta["num_classes"]),
            ("class_ids", "int32", meta["top_k"]),
            ("scores", "float32", meta["top_k"]),
        ]

    def tensor(tensor_name: str, dtype: str, dims: list[int]) -> str:
        return (
            f'  {{ name: "{tensor_name}" data_type: {_TRITON_TYPES[dtype]} '
            f"dims: {json.dumps(dims)} }}"
        )

    inputs = [tensor(layout.INPUT_NAME, meta["input_dtype"], meta["input_shape"])]
    return "\n".join(
        [
            f'name: "{name}"',
            'backend: "onnxruntime"',
            f"max_batch_size: {TRITON_MAX_BATCH}",
            "input [",
            ",\n".join(inputs),
            "]",
            "output [",
            ",\n".join(tensor(n, d, [size]) for n, d, size in outputs),
            "]",
            f"version_policy: {{ specific: {{ versions: {json.dumps(versions)} }} }}",
            "dynamic_batching { }",
            "",
        ]
    )
