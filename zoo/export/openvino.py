"""OpenVINO IR export (model.xml + model.bin) for the OpenVINO runtime and its
model server, verified by OpenVINO in a fresh process.

The serving graph (the SavedModel's: raw input, preprocessing, model, top-k) is
converted by `openvino.convert_model`, as Keras' `model.export(format=
"openvino")` does on the TensorFlow backend; Keras' entry point converts a
model's `call` only, so the serving function is handed to the converter
directly. OpenVINO names the input and outputs after the function's.

The computation precision is a runtime setting (INFERENCE_PRECISION_HINT), not
part of the IR: export_meta.json records it, and every client here (verify,
predict, serve-bench) compiles the model with it. OpenVINO's CPU plugin
otherwise computes in bfloat16 where the CPU supports it.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import keras
import tensorflow as tf

from zoo.export import layout, serving
from zoo.export.verification import (
    OPENVINO_HINTS,
    verify,  # noqa: F401  (exporter calls it here)
)
from zoo.files import brief


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
    """Convert the serving function of `model` to `path`/model.xml and
    model.bin (weights in float16 for precision float16); returns what
    export_meta.json records of it.

    Raises:
        ValueError: If OpenVINO has no conversion for an op, naming its layer.
    """
    import openvino as ov

    function = serving.portable_function(model, preprocessing, spec, top_k, regression)
    try:
        converted = ov.convert_model(function)
    except Exception as err:  # OpConversionFailure, whose module is private
        ops = re.search(r"No conversion rule found for operations: ([\w, ]+)", str(err))
        if ops is None:
            raise ValueError(
                f"--format openvino cannot convert the model: {brief(err)}; nothing "
                "was written."
            ) from None
        why = f"OpenVINO {metadata.version('openvino')} has no conversion rule for it"
        raise serving.unconvertible(
            "openvino", ops.group(1).split(", "), function, [model, preprocessing], why
        ) from None
    ov.save_model(
        converted,
        str(path / layout.MODEL_FILES["openvino"]),
        compress_to_fp16=precision == "float16",
    )
    hint = OPENVINO_HINTS[precision]
    return {
        "inference_precision_hint": hint,
        # The whole compile configuration: a server's --plugin_config.
        "runtime_config": {
            "INFERENCE_PRECISION_HINT": hint,
            **layout.OPENVINO_RUNTIME_CONFIG,
        },
    }
