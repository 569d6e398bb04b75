"""The layout of an export: file names, the serving signature's names, and the
integer versions under a base directory (TensorFlow-free)."""

from __future__ import annotations

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


def list_versions(base_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under an export base directory, ascending."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()
    )


def resolve_version_dir(path: str | os.PathLike) -> Path:
    """The version directory for `path`: itself, or the latest version of a base.

    Raises:
        ValueError: If `path` holds neither a SavedModel nor integer versions.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = list_versions(path)
    if not versions:
        raise ValueError(
            f"no SavedModel at '{path}': expected <base>/<version>/saved_model.pb "
            "or a version directory. Export one first with `zoo export RUN_DIR "
            "--out BASE`."
        )
    return path / str(versions[-1])


def read_meta(version_dir: Path) -> dict[str, Any]:
    """The export_meta.json of a version, refused in one line naming it when
    missing or damaged."""
    path = version_dir / META_FILE
    meta = read_record(path, "a client of the export")
    missing = [k for k in META_KEYS if k not in (meta or {})]
    if meta is None or missing:
        what = "is missing" if meta is None else f"lacks {', '.join(missing)}"
        raise ValueError(
            f"'{path}' {what}: it describes the SavedModel's input and outputs. "
            "Export the model again."
        )
    return meta
