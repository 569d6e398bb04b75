"""SavedModel export for TensorFlow Serving: the serving tf.function saved with
`tf.saved_model.save`, verified by TensorFlow's own loader in a fresh process."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from zoo.export import exporter, serving
from zoo.export.rewrites import conv_filters, with_precision
from zoo.export.verification import verify  # noqa: F401  (exporter calls it here)


def export_saved_model(
    model_or_run_dir: keras.Model | str | os.PathLike,
    base_dir: str | os.PathLike,
    **options,
) -> Path:
    """Export a classifier (or regressor) as a verified, TensorFlow Serving-ready
    SavedModel: `zoo.export.export(..., format="savedmodel")`, whose docstring
    lists the options."""
    return exporter.export(model_or_run_dir, base_dir, format="savedmodel", **options)


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
    """Save the serving function of `model` as the SavedModel at `path`; returns
    what export_meta.json records of it."""
    serving_model = with_precision(model, precision)
    serve = serving.serving_function(
        serving_model,
        preprocessing,
        spec,
        top_k,
        regression,
        jit_compile=jit_compile,
        frozen=frozen,
    )
    # tf.saved_model.save rather than keras.export.ExportArchive: the archive
    # traces the function a second time while saving and stores both
    # traces, which doubles saved_model.pb when the filters are constants.
    # Tracked are the variables the graph reads (not the frozen filters).
    # "serving_default" is the signature TF Serving calls; "serve" is the
    # name keras.Model.export gives the same endpoint.
    module = tf.Module()
    module.serve = serve
    module.weights = list(serve.get_concrete_function().variables)
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": serve, "serve": serve}
    )
    return {
        "jit_compile": jit_compile,
        "frozen_filters": len(conv_filters(serving_model)) if frozen else 0,
    }
