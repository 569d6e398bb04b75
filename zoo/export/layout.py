"""The layout of an export: formats and their files, the serving signature's
names, the integer versions under a base directory, and the optional runtimes a
format needs (TensorFlow-free, so the CLI checks them before importing it)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from zoo.files import read_record

INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "class_ids", "scores")
REGRESSION_OUTPUT = "predictions"
META_FILE = "export_meta.json"
KERAS_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.keras"
DATASET_FILE = "dataset.json"  # a run's dataset.json: feature columns of a table
# What a client reads from export_meta.json.
META_KEYS = ("input_dtype", "input_shape", "outputs", "class_names", "top_k")

# The formats of a version, each recognised by its model file.
MODEL_FILES = {
    "savedmodel": "saved_model.pb",
    "onnx": "model.onnx",
    "openvino": "model.xml",  # beside it model.bin, the weights
}
FORMATS = tuple(MODEL_FILES)
FORMAT_NAMES = {
    "savedmodel": "SavedModel",
    "onnx": "ONNX model",
    "openvino": "OpenVINO IR",
}
# The computation precisions each format serves (the first is the default).
PRECISIONS = {
    "savedmodel": ("float32", "float16", "bfloat16"),
    "onnx": ("float32", "float16"),
    "openvino": ("float32", "bfloat16", "float16"),
}
# The modules a format needs, to export (convert and verify) and to serve, and
# the optional extra of pyproject.toml that installs them.
EXPORT_MODULES = {"onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",)}
SERVE_MODULES = {"onnx": ("onnxruntime",), "openvino": ("openvino",)}
TRITON_CONFIG = "config.pbtxt"  # ONNX bases are Triton model repositories
# Batch-1 latency settings of each runtime on CPU, recorded in export_meta.json
# ("runtime_config", for a server) and applied by zoo predict and serve-bench
# (docs/export.md, "Runtime settings"). ONNX Runtime: its own defaults made
# explicit (every graph optimization, operators in sequence, one intra-op thread
# per physical core), and no spinning of its threads between requests, which
# otherwise keep a core busy for milliseconds after each call. OpenVINO: the
# latency hint (one stream), completed with the precision hint at export.
ONNX_RUNTIME_CONFIG = {
    "session_options": {
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "execution_mode": "ORT_SEQUENTIAL",
        "intra_op_num_threads": 0,
    },
    "session_config_entries": {"session.force_spinning_stop": "1"},
}
OPENVINO_RUNTIME_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
# Exports whose model is not a classifier or regressor (written by
# zoo.export.generative): `zoo predict` points to their own signatures.
GENERATIVE_TASKS = ("reconstruction", "generation")


def check_format(fmt: str) -> str:
    """`fmt` if it is a known export format, else one line listing them."""
    if fmt not in MODEL_FILES:
        raise ValueError(
            f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}. Pass "
            "one of them to --format."
        )
    return fmt


def check_precision(fmt: str, precision: str) -> str:
    """`precision` if `fmt` serves it, else one line listing what it serves."""
    if precision not in PRECISIONS[fmt]:
        raise ValueError(
            f"precision {precision!r} is not supported by --format {fmt}; allowed: "
            f"{', '.join(PRECISIONS[fmt])}. Pass one of them to --precision."
        )
    return precision


def require_modules(fmt: str, purpose: str = "export") -> None:
    """Refuse in one line naming the extra when a module `fmt` needs for
    `purpose` ("export" or "serve") is not installed."""
    modules = (EXPORT_MODULES if purpose == "export" else SERVE_MODULES).get(fmt, ())
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"the {fmt} format needs {', '.join(missing)}, which is not installed; "
            f"install the extra: pip install 'keras-model-zoo[{fmt}]' (or pip "
            f"install {' '.join(missing)})."
        )


def version_format(version_dir: str | os.PathLike) -> str | None:
    """The format of a version directory (by its model file), or None."""
    path = Path(version_dir)
    return next((f for f, name in MODEL_FILES.items() if (path / name).is_file()), None)


def list_versions(base_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under an export base directory, ascending."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()
    )


def resolve_version_dir(path: str | os.PathLike, fmt: str | None = None) -> Path:
    """The version directory for `path`: itself, or the latest version of a base
    (of format `fmt`, if given; a base may hold versions of several formats).

    Raises:
        ValueError: If `path` holds no export (of `fmt`).
    """
    path = Path(path)
    if version_format(path) is not None:
        return path
    versions = [
        v
        for v in list_versions(path)
        if version_format(path / str(v)) in ((fmt,) if fmt else FORMATS)
    ]
    if not versions:
        files = "/".join(MODEL_FILES[f] for f in ((fmt,) if fmt else FORMATS))
        what = f"{fmt} export" if fmt else "export"
        raise ValueError(
            f"no {what} at '{path}': expected <base>/<version>/{files} or a version "
            "directory. Export one first with `zoo export RUN_DIR --out BASE"
            f"{f' --format {fmt}' if fmt else ''}`."
        )
    return path / str(versions[-1])


def read_meta(version_dir: Path) -> dict[str, Any]:
    """The export_meta.json of a version, refused in one line naming it when
    missing or damaged, or when its model has no predict signature (an
    autoencoder's or a GAN's export)."""
    path = version_dir / META_FILE
    meta = read_record(path, "a client of the export")
    task = (meta or {}).get("task")
    if task in GENERATIVE_TASKS:
        *others, last = meta.get("signatures") or ["encode", "decode"]
        named = f"{', '.join(others)} or {last}" if others else last
        raise ValueError(
            f"'{version_dir}' is a {task} export ({meta.get('model', 'a model')}): "
            "zoo predict and serve-bench serve classifiers and regressors. Call "
            f"the SavedModel's {named} signature instead (docs/generative.md)."
        )
    missing = [k for k in META_KEYS if k not in (meta or {})]
    if meta is None or missing:
        what = "is missing" if meta is None else f"lacks {', '.join(missing)}"
        raise ValueError(
            f"'{path}' {what}: it describes the SavedModel's input and outputs. "
            "Export the model again."
        )
    return meta
