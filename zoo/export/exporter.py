"""Writing a version in any format: the serving graph converted by the format's
module beside the Keras model and export_meta.json, in a temporary directory
that is renamed into place once the format's own runtime reproduced the model."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

from zoo import generative
from zoo.export import layout, serving
from zoo.export.rewrites import (
    PRECISION_POLICIES,
    count_batch_norms,
    fold_batch_norms,
    should_freeze,
    single_output,
)
from zoo.export.samples import verification_samples
from zoo.export.source import load_source
from zoo.export.verification import VerificationError, verification_failure
from zoo.files import check_export_dir, naming, write_json

DEFAULT_TOP_K = 5

_TMP_PREFIX = ".tmp-export-"


def export(
    model_or_run_dir: keras.Model | str | os.PathLike,
    base_dir: str | os.PathLike,
    *,
    format: str = "savedmodel",
    version: int | None = None,
    raw_image_input: bool = True,
    preprocessing: keras.Layer | None = None,
    raw_shape: Sequence[int] | None = None,
    top_k: int | None = None,
    class_names: Sequence[str] | None = None,
    precision: str = "float32",
    jit_compile: bool = False,
    fold_batch_norm: bool = False,
    freeze_filters: bool | str = "auto",
    sample_images: np.ndarray | None = None,
    tolerance: float | None = None,
    regression: bool | None = None,
) -> Path:
    """Export a classifier (or regressor) in `format`, verified by that format's
    own runtime in a fresh process.

    Every format serves the same contract: input `images` (raw uint8 at the
    training data's raw size, any batch, the training preprocessing inside),
    outputs `probabilities`, `class_ids`, `scores` (regression: `predictions`).

    Args:
        model_or_run_dir: A `keras.Model`, a `.keras` file, or a training run
            directory (config.json, dataset.json, best.keras or last.keras,
            metrics.json).
        base_dir: Export root; the version is written to `<base_dir>/<version>`.
        version: Integer version to write; `None` takes the next free one. An
            existing version is never overwritten.
        raw_image_input: Serve uint8 images (tabular runs: float32 encoded
            features) and preprocess inside the graph. `False` serves float32
            model inputs as they are.
        preprocessing: Keras layer/model mapping raw uint8 batches to model inputs
            (e.g. `data_pipelines.preprocessing_model(info)`). Default: built from
            a run's dataset.json, else `Rescaling(1/255)` only.
        raw_shape: Shape of one raw image, if `preprocessing` has no Input to read
            it from. Default: the preprocessing input shape, else the model's.
        top_k: Number of `class_ids`/`scores` returned (default min(5, classes)).
        class_names: Class names for export_meta.json (default: the run's, else
            "0".."n-1").
        format: "savedmodel" (TensorFlow Serving), "onnx" (ONNX Runtime; the
            base directory is a Triton model repository entry) or "openvino"
            (OpenVINO IR).
        precision: "float32", "float16" or "bfloat16" computations, as the
            format serves them (`layout.PRECISIONS`): SavedModel all three, ONNX
            float32/float16 (in the graph), OpenVINO float32/bfloat16/float16
            (the runtime's inference precision, recorded in export_meta.json).
            Outputs are float32 in every case.
        jit_compile: XLA-compile the serving function (SavedModel only).
        fold_batch_norm: Fold the batch norms into the convolution/Dense layer
            before them (`fold_batch_norms`): faster, but float32 rounding
            changes, by more than the 1e-5 verification tolerance on deep
            networks (ResNet-50), whose export then fails verification.
        freeze_filters: SavedModel only (the converters of the other formats
            store every weight as a constant). Store the convolution filters as
            constants of the serving graph (True) instead of SavedModel
            variables (False). oneDNN
            reorders a filter into its blocked layout once when it is a
            constant, and on every call when it is a variable: ResNet-50 at
            batch 1 runs 1.3-1.9x faster on CPU. Other weights stay variables,
            so the outputs match the Keras model's up to float32 noise (graph
            optimizers rewrite constant batch-norm scales and Dense kernels,
            which shifts rounding beyond the 1e-5 tolerance). A graph is a
            protocol buffer capped at 2 GB, so "auto" (default) freezes filters
            that take at most 1 GiB.
        sample_images: Images used to verify the export (a batch of the serving
            input shape); default 8 seeded random images.
        tolerance: Accepted max abs difference of the verification (default
            `TOLERANCES[precision]`: 1e-5 in float32). Deep networks can exceed
            1e-5 by float32 rounding alone (TensorFlow's graph and eager kernels
            sum in different orders); loosen it knowingly.
        regression: Serve the model's output as `predictions` (float32, one
            column per target) instead of `probabilities`/`class_ids`/`scores`.
            Default: True for a regression run (`zoo train --task regression`),
            else False.

    Returns:
        The version directory that was written.

    Raises:
        ValueError: On bad arguments, a missing runtime or a model the format's
            converter cannot handle (naming the layer); nothing is written then.
        VerificationError: If the format's runtime disagrees with the model.
    """
    writer = _writer(format)
    base = check_export_dir(base_dir)
    _check_options(format, precision, tolerance, freeze_filters, jit_compile)
    if version is not None:
        _check_version_free(base, version)
    source = load_source(model_or_run_dir)
    if generative.image_maker(source.model) is not None:  # autoencoders, GANs
        return _export_generative(source, base, format, precision, version)
    regression = source.regression if regression is None else regression
    if regression and (top_k is not None or class_names is not None):
        raise ValueError(
            "top_k and class_names apply to classifiers; this export serves a "
            "regression model's predictions. Drop them."
        )
    model = single_output(source.model, regression)
    model_shape = serving.input_shape(model)
    num_classes = int(model.outputs[0].shape[-1])
    if regression:
        top_k, names = None, None
    else:
        top_k = _check_top_k(top_k, num_classes)
        names = _class_names(class_names or source.class_names, num_classes)
    preprocessing, spec = serving.serving_input(
        source, model_shape, raw_image_input, preprocessing, raw_shape
    )
    samples = verification_samples(sample_images, spec)
    frozen = format == "savedmodel" and should_freeze(
        freeze_filters, [model, preprocessing]
    )

    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(base)
    version = version or (max(layout.list_versions(base), default=0) + 1)
    tmp = base / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    started = time.perf_counter()
    try:
        folded = fold_batch_norms(model) if fold_batch_norm else model
        with naming(base):  # Keras names no file when the disk is full
            written = writer.write(
                tmp,
                folded,
                preprocessing,
                spec,
                top_k=top_k,
                regression=regression,
                precision=precision,
                jit_compile=jit_compile,
                frozen=frozen,
            )
            source.model.save(tmp / layout.KERAS_FILE)
            if preprocessing is not None:
                preprocessing.save(tmp / layout.PREPROCESSING_FILE)
        if source.dataset is not None:  # table exports: the feature columns
            write_json(tmp / layout.DATASET_FILE, source.dataset)
        meta = {
            "model": source.name,
            "version": version,
            "format": format,
            "input_name": layout.INPUT_NAME,
            "input_dtype": spec.dtype.name,
            "input_shape": list(spec.shape[1:]),
            "model_input_shape": list(model_shape),
            "raw_image_input": raw_image_input,
            "task": "regression" if regression else "classification",
            "num_classes": None if regression else num_classes,
            "class_names": names,
            "top_k": top_k,
            "num_outputs": num_classes if regression else None,
            "target_name": source.target_name if regression else None,
            "feature_columns": _feature_columns(source.dataset),
            "outputs": [layout.REGRESSION_OUTPUT]
            if regression
            else list(layout.OUTPUT_NAMES),
            "precision": precision,
            "fold_batch_norm": fold_batch_norm,
            "folded_batch_norms": count_batch_norms(model) - count_batch_norms(folded),
            **written,
            "training_metrics": source.metrics,
            "source_run": source.run_dir,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "export_seconds": round(time.perf_counter() - started, 2),
            "package_versions": _package_versions(format),
        }
        write_json(tmp / layout.META_FILE, meta)
        # Through the format's module, where tests replace it.
        report = writer.verify(tmp, samples, tolerance=tolerance)
        if not report.ok:
            raise VerificationError(verification_failure(report))
        meta["verification"] = {
            k: v for k, v in asdict(report).items() if k not in ("path", "precision")
        }
        write_json(tmp / layout.META_FILE, meta)
        final = _publish(tmp, base, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    getattr(writer, "published", lambda base: None)(base)
    return final


def _export_generative(source, base: Path, fmt: str, precision: str, version):
    """The encode/decode/generate SavedModel of an autoencoder or a GAN."""
    given = {"format": fmt, "precision": precision}
    other = [k for k, v in given.items() if v not in ("savedmodel", "float32")]
    if other:
        raise ValueError(
            f"{source.name} makes images: it is exported as a float32 SavedModel "
            "with encode/decode/generate signatures (docs/generative.md); "
            f"received {', '.join(f'{k}={given[k]!r}' for k in other)}. Drop "
            f"{' and '.join(f'--{k}' for k in other)}."
        )
    # Imported here: zoo.export.generative uses this module's publishing.
    from zoo.export.generative import export_generative

    return export_generative(source, base, version)


def _writer(fmt: str):
    """The module writing `fmt` (zoo.export.savedmodel, .onnx or .openvino),
    after checking that its converter and runtime are installed."""
    layout.check_format(fmt)
    layout.require_modules(fmt, "export")
    return importlib.import_module(f"zoo.export.{fmt}")


def _feature_columns(dataset: dict | None) -> list[str] | None:
    """The raw columns a table export takes (numeric, then categorical)."""
    tabular = (dataset or {}).get("tabular")
    return [*tabular["numeric"], *tabular["categories"]] if tabular else None


def _check_options(
    fmt: str,
    precision: str,
    tolerance: float | None,
    freeze_filters: bool | str,
    jit_compile: bool,
) -> None:
    """Refuse a precision the format does not serve, a tolerance <= 0, a bad
    freeze_filters, or XLA outside a SavedModel."""
    if precision not in PRECISION_POLICIES:
        raise ValueError(
            f"unknown precision '{precision}'; allowed: "
            f"{', '.join(PRECISION_POLICIES)}. Use float16 (most GPUs) or bfloat16 "
            "(Ampere or newer, TPUs)."
        )
    layout.check_precision(fmt, precision)
    if tolerance is not None and not tolerance > 0:
        raise ValueError(
            f"tolerance must be a positive number; received {tolerance!r}."
        )
    if freeze_filters not in (True, False, "auto"):
        raise ValueError(
            f"freeze_filters must be True, False or 'auto'; received "
            f"{freeze_filters!r}."
        )
    if jit_compile and fmt != "savedmodel":
        raise ValueError(
            f"jit_compile (XLA) applies to SavedModel exports; --format {fmt} is "
            "compiled by its own runtime. Drop --jit-compile."
        )


def _publish(tmp: Path, base: Path, version: int) -> Path:
    """Rename the verified temporary directory to `<base>/<version>`."""
    final = base / str(version)
    try:
        os.rename(tmp, final)
    except OSError as err:
        raise ValueError(
            f"version {version} appeared in '{base}' during the export; versions "
            "are never overwritten. Export again to get the next version."
        ) from err
    return final


def _check_version_free(base: Path, version: int) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"version must be an integer >= 1; received {version!r}. Omit it to take "
            "the next free version."
        )
    if (base / str(version)).exists():
        raise ValueError(
            f"version {version} already exists in '{base}' (versions: "
            f"{layout.list_versions(base)}); versions are never overwritten. "
            "Omit --version to take the next free one."
        )


def _check_top_k(top_k: int | None, num_classes: int) -> int:
    if top_k is None:
        return min(DEFAULT_TOP_K, num_classes)
    if not 1 <= top_k <= num_classes:
        raise ValueError(
            f"top_k={top_k} is out of range: the model has {num_classes} classes, "
            f"so top_k must be 1..{num_classes}. Pass a --top-k in that range."
        )
    return top_k


def _class_names(names: Sequence[str] | None, num_classes: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f"received {len(names)} class names for a model with {num_classes} "
            "classes. Pass exactly one name per class."
        )
    return [str(n) for n in names]


def _remove_stale_temp_dirs(base: Path) -> None:
    """Delete temporary export dirs left by processes that no longer run."""
    for tmp in base.glob(f"{_TMP_PREFIX}*"):
        pid = tmp.name[len(_TMP_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _package_versions(fmt: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    packages = ("keras-model-zoo", "tensorflow", "keras", "numpy")
    for package in packages + layout.EXPORT_MODULES.get(fmt, ()):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
