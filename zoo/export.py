"""SavedModel export for TensorFlow Serving, verified by TensorFlow's own loader.

Layout written under a base directory (the TensorFlow Serving convention)::

    <base>/<version>/saved_model.pb, variables/, fingerprint.pb, assets/
    <base>/<version>/export_meta.json      # model, shapes, classes, metrics, versions
    <base>/<version>/model.keras           # the trained Keras model, for Python users
    <base>/<version>/preprocessing.keras   # raw-input exports: the preprocessing model

A version is written to a hidden temporary directory beside the versions, verified
in a fresh Python process that imports only TensorFlow and NumPy, then renamed into
place: a crash leaves earlier versions untouched and never a partial version.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import zoo

INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "class_ids", "scores")
REGRESSION_OUTPUT = "predictions"
META_FILE = "export_meta.json"
KERAS_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.keras"
RUN_MODEL_FILES = ("best.keras", "last.keras")
DEFAULT_TOP_K = 5
# Keras dtype policy per precision: variables stay float32, computations run in
# the reduced type, the classifier layer and the outputs stay float32.
PRECISION_POLICIES = {
    "float32": "float32",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
}
# Max abs difference of `probabilities` against the float32 Keras model accepted
# by `verify`. Largest differences measured on 512 digits with trained lenet5 /
# resnet20: float32 0, float16 7e-4 / 3.5e-3, bfloat16 1.0e-2 / 2.7e-2; the
# reduced-precision bounds leave about 3x room for deeper models.
TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-1}
# Layers whose kernel's last axis is the output channel, so a following batch
# norm over the last axis folds into kernel and bias.
_FOLDABLE = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)
_TMP_PREFIX = ".tmp-export-"
# Largest filters stored as graph constants (freeze_filters="auto"): a GraphDef
# is a protocol buffer, capped at 2 GB.
_FREEZE_MAX_BYTES = 2**30
_CONV_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
_NUM_SAMPLES = 8

# Runs in the verification subprocess: TensorFlow and NumPy only, never this
# project, so the artifact is proven loadable by a plain TensorFlow runtime.
_VERIFY_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
saved_dir, inputs_path, outputs_path, main = sys.argv[1:5]
images = np.load(inputs_path)
loaded = tf.saved_model.load(saved_dir)
serve = loaded.signatures["serving_default"]
outputs = {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
single = serve(images=tf.constant(images[:1]))[main].numpy()
project = [m for m in ("zoo", "data_pipelines", "tuning") if m in sys.modules]
np.savez(outputs_path, batch1=single,
         imported_project=np.array(project, dtype=str), **outputs)
"""


class VerificationError(ValueError):
    """The exported SavedModel does not reproduce the Keras model (nothing is
    renamed into place; the CLI reports it as a one-line error)."""


@dataclass(frozen=True)
class VerifyReport:
    """Result of reloading a SavedModel in a fresh process and comparing it.

    Attributes:
        path: The version directory that was verified.
        precision: Serving precision recorded in export_meta.json.
        tolerance: Largest accepted max abs difference of `probabilities`
            (regression: of `predictions` divided by max(1, max |Keras
            prediction|), since float32 keeps ~7 significant digits in any units).
        num_samples: Number of sample images compared.
        max_abs_diff: Max abs difference, whole batch vs the Keras model
            (regression: scaled as above).
        batch1_max_abs_diff: Same for the first image sent alone (dynamic batch).
        top1_agreement: Fraction of samples whose top class matches Keras (None
            for regression).
        imported_project: Project modules the subprocess imported (must be empty).
    """

    path: str
    precision: str
    tolerance: float
    num_samples: int
    max_abs_diff: float
    batch1_max_abs_diff: float
    top1_agreement: float | None
    imported_project: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether both differences are within tolerance and the loader was clean."""
        return (
            self.max_abs_diff <= self.tolerance
            and self.batch1_max_abs_diff <= self.tolerance
            and not self.imported_project
        )


@dataclass
class _Source:
    """A model and what export needs to know about it."""

    model: keras.Model
    name: str
    preprocessing: keras.Layer | None = None
    class_names: list[str] | None = None
    raw_shape: tuple[int, ...] | None = None
    raw_dtype: str = "uint8"  # "float32" for tabular runs: encoded feature vectors
    regression: bool = False
    target_name: str | None = None
    metrics: dict[str, Any] | None = None
    run_dir: str | None = None


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


def export_saved_model(
    model_or_run_dir: keras.Model | str | os.PathLike,
    base_dir: str | os.PathLike,
    *,
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
    """Export a classifier (or regressor) as a verified, TensorFlow Serving-ready
    SavedModel.

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
        precision: "float32", "float16" or "bfloat16" computations; outputs are
            float32 in every case.
        jit_compile: XLA-compile the serving function.
        fold_batch_norm: Fold the batch norms into the convolution/Dense layer
            before them (`fold_batch_norms`): faster, but float32 rounding
            changes, by more than the 1e-5 verification tolerance on deep
            networks (ResNet-50), whose export then fails verification.
        freeze_filters: Store the convolution filters as constants of the
            serving graph (True) instead of SavedModel variables (False). oneDNN
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
        ValueError: On bad arguments; nothing is written then.
        VerificationError: If the reloaded SavedModel disagrees with the model.
    """
    base = check_export_dir(base_dir)
    if precision not in PRECISION_POLICIES:
        raise ValueError(
            f"unknown precision '{precision}'; allowed: "
            f"{', '.join(PRECISION_POLICIES)}. Use float16 (most GPUs) or bfloat16 "
            "(Ampere or newer, TPUs)."
        )
    if tolerance is not None and not tolerance > 0:
        raise ValueError(
            f"tolerance must be a positive number; received {tolerance!r}."
        )
    if freeze_filters not in (True, False, "auto"):
        raise ValueError(
            f"freeze_filters must be True, False or 'auto'; received "
            f"{freeze_filters!r}."
        )
    if version is not None:
        _check_version_free(base, version)
    source = _load_source(model_or_run_dir)
    regression = source.regression if regression is None else regression
    if regression and (top_k is not None or class_names is not None):
        raise ValueError(
            "top_k and class_names apply to classifiers; this export serves a "
            "regression model's predictions. Drop them."
        )
    model = _single_output(source.model, regression)
    input_shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or None in input_shape:
        raise ValueError(
            f"export needs one image input of fixed size; received inputs "
            f"{[tuple(t.shape) for t in model.inputs]}. Build the model with a full "
            "input_shape."
        )
    num_classes = int(model.outputs[0].shape[-1])
    if regression:
        top_k, names = None, None
    else:
        top_k = _check_top_k(top_k, num_classes)
        names = _class_names(class_names or source.class_names, num_classes)

    if raw_image_input:
        if preprocessing is None:
            preprocessing = source.preprocessing
        if preprocessing is None:
            preprocessing = keras.Sequential(
                [
                    keras.Input(input_shape, dtype="uint8"),
                    keras.layers.Rescaling(1 / 255),
                ],
                name="rescaling_only",
            )
        raw = _raw_shape(preprocessing, raw_shape or source.raw_shape, input_shape)
        spec = tf.TensorSpec((None, *raw), source.raw_dtype, name=INPUT_NAME)
        _check_preprocessing(preprocessing, spec, input_shape)
    elif preprocessing is not None:
        raise ValueError(
            "preprocessing was given with raw_image_input=False; it is applied only "
            "to raw uint8 inputs. Pass raw_image_input=True or drop preprocessing."
        )
    else:
        spec = tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)
    samples = _samples(sample_images, spec)
    frozen = _should_freeze(freeze_filters, [model, preprocessing])

    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(base)
    version = version or (max(list_versions(base), default=0) + 1)
    tmp = base / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        folded = fold_batch_norms(model) if fold_batch_norm else model
        serving_model = _with_precision(folded, precision)
        serve = _serving_function(
            serving_model, preprocessing, spec, top_k, jit_compile, regression, frozen
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
            module, str(tmp), signatures={"serving_default": serve, "serve": serve}
        )
        source.model.save(tmp / KERAS_FILE)
        if preprocessing is not None:
            preprocessing.save(tmp / PREPROCESSING_FILE)
        meta = {
            "model": source.name,
            "version": version,
            "input_name": INPUT_NAME,
            "input_dtype": spec.dtype.name,
            "input_shape": list(spec.shape[1:]),
            "model_input_shape": list(input_shape),
            "raw_image_input": raw_image_input,
            "task": "regression" if regression else "classification",
            "num_classes": None if regression else num_classes,
            "class_names": names,
            "top_k": top_k,
            "num_outputs": num_classes if regression else None,
            "target_name": source.target_name if regression else None,
            "outputs": [REGRESSION_OUTPUT] if regression else list(OUTPUT_NAMES),
            "precision": precision,
            "jit_compile": jit_compile,
            "fold_batch_norm": fold_batch_norm,
            "folded_batch_norms": _count_batch_norms(model)
            - _count_batch_norms(folded),
            "frozen_filters": len(_conv_filters(serving_model)) if frozen else 0,
            "training_metrics": source.metrics,
            "source_run": source.run_dir,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "package_versions": _package_versions(),
        }
        _write_json(tmp / META_FILE, meta)
        report = verify(tmp, samples, tolerance=tolerance)
        if not report.ok:
            raise VerificationError(_verification_failure(report))
        meta["verification"] = {
            k: v for k, v in asdict(report).items() if k not in ("path", "precision")
        }
        _write_json(tmp / META_FILE, meta)
        final = base / str(version)
        try:
            os.rename(tmp, final)
        except OSError as err:
            raise ValueError(
                f"version {version} appeared in '{base}' during the export; versions "
                "are never overwritten. Export again to get the next version."
            ) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify(
    path: str | os.PathLike,
    sample_images: np.ndarray | None = None,
    *,
    tolerance: float | None = None,
) -> VerifyReport:
    """Reload a SavedModel in a fresh process and compare it with its Keras model.

    The subprocess imports only TensorFlow and NumPy, loads the SavedModel with
    `tf.saved_model.load` and calls `serving_default` on the samples (whole batch
    and the first image alone). The reference is computed here with the exported
    `model.keras` (and `preprocessing.keras`) in float32.

    Args:
        path: A version directory, or a base directory (its latest version).
        sample_images: A batch of the serving input shape and dtype; default 8
            seeded random images.
        tolerance: Accepted max abs difference of `probabilities`; default from
            `TOLERANCES` for the export's precision.

    Returns:
        The comparison; check `report.ok`.

    Raises:
        ValueError: If `path` is not an export or the samples do not fit it.
        VerificationError: If the subprocess cannot load or call the SavedModel.
    """
    version_dir = resolve_version_dir(path)
    meta_path = version_dir / META_FILE
    if not meta_path.is_file():
        raise ValueError(
            f"'{version_dir}' has no {META_FILE}; verify needs an export written by "
            "zoo.export.export_saved_model."
        )
    meta = json.loads(meta_path.read_text())
    spec = tf.TensorSpec((None, *meta["input_shape"]), meta["input_dtype"])
    samples = _samples(sample_images, spec)

    regression = meta.get("task") == "regression"
    main = REGRESSION_OUTPUT if regression else OUTPUT_NAMES[0]
    model = _with_precision(
        _single_output(
            zoo.load_model(version_dir / KERAS_FILE, compile=False), regression
        ),
        "float32",
    )
    x = samples
    if (version_dir / PREPROCESSING_FILE).is_file():
        preprocessing = keras.saving.load_model(
            version_dir / PREPROCESSING_FILE, compile=False
        )
        x = preprocessing(samples, training=False)
    reference = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as work:
        inputs_path = Path(work) / "images.npy"
        outputs_path = Path(work) / "outputs.npz"
        np.save(inputs_path, samples)
        cmd = [
            sys.executable,
            "-I",
            "-c",
            _VERIFY_SCRIPT,
            str(version_dir.resolve()),  # the subprocess runs in `work`
            str(inputs_path),
            str(outputs_path),
            main,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, cwd=work, timeout=900
            )
        except subprocess.TimeoutExpired as err:
            raise VerificationError(
                f"loading and calling the SavedModel in a fresh process took over "
                f"{err.timeout:.0f} s"
            ) from err
        if proc.returncode != 0:
            errors = re.findall(r"^\w[\w.]*(?:Error|Exception): .*$", proc.stderr, re.M)
            last = (errors or proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise VerificationError(
                f"tf.saved_model.load/serving_default failed in a fresh process "
                f"(exit {proc.returncode}): {last}"
            )
        with np.load(outputs_path) as out:
            served = out[main]
            batch1 = out["batch1"]
            class_ids = None if regression else out["class_ids"]
            imported = tuple(str(m) for m in out["imported_project"])

    precision = meta["precision"]
    scale = max(1.0, float(np.max(np.abs(reference)))) if regression else 1.0
    return VerifyReport(
        path=str(version_dir),
        precision=precision,
        tolerance=TOLERANCES[precision] if tolerance is None else tolerance,
        num_samples=len(samples),
        max_abs_diff=float(np.max(np.abs(served - reference))) / scale,
        batch1_max_abs_diff=float(np.max(np.abs(batch1 - reference[:1]))) / scale,
        top1_agreement=None
        if regression
        else float(np.mean(class_ids[:, 0] == reference.argmax(-1))),
        imported_project=imported,
    )


def load_images(
    image_paths: Sequence[str | os.PathLike], shape: Sequence[int]
) -> np.ndarray:
    """Read image files into a uint8 batch of one raw image `shape`.

    Images of another size are resized (bilinear) and images of another colour
    mode converted (e.g. RGB to grayscale), each with a `UserWarning`.

    Args:
        image_paths: PNG, JPEG or any file Pillow reads.
        shape: (height, width), (height, width, 1) or (height, width, 3).

    Returns:
        A uint8 array of shape (len(image_paths), *shape).

    Raises:
        ValueError: If a file is missing or unreadable, or `shape` has a channel
            count other than 1 or 3.
    """
    from PIL import Image, UnidentifiedImageError

    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    if channels not in (1, 3):
        raise ValueError(
            f"image files can feed 1 or 3 channels; the model takes {tuple(shape)}. "
            "Call the SavedModel's serving_default with arrays instead."
        )
    mode = "L" if channels == 1 else "RGB"
    batch = []
    for image_path in image_paths:
        try:
            with Image.open(image_path) as image:
                image.load()
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(
                f"cannot read image '{image_path}': {err}. Pass PNG or JPEG files."
            ) from err
        if image.mode != mode:
            warnings.warn(
                f"{image_path}: converted {image.mode} to {mode} "
                f"({channels} channel(s)) for the model",
                UserWarning,
                stacklevel=2,
            )
            image = image.convert(mode)
        if image.size != (width, height):
            warnings.warn(
                f"{image_path}: resized {image.size[0]}x{image.size[1]} to "
                f"{width}x{height} (width x height) for the model",
                UserWarning,
                stacklevel=2,
            )
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        batch.append(np.asarray(image, dtype=np.uint8).reshape(shape))
    return np.stack(batch)


def predict(
    path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    *,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Top-k classes (regression: the predictions) of image files from an exported
    SavedModel (raw input only).

    Args:
        path: A version directory, or a base directory (its latest version).
        image_paths: Image files; see `load_images` for size/colour handling.
        top_k: Rows per image, at most the export's top_k (default: all of them).

    Returns:
        A DataFrame with columns image, rank, class_id, class_name, score; for a
        regression export: image and the predicted value, named after the target.

    Raises:
        ValueError: If the export takes float inputs, top_k is too large, or an
            image cannot be read.
    """
    version_dir = resolve_version_dir(path)
    meta = json.loads((version_dir / META_FILE).read_text())
    if meta["input_dtype"] != "uint8":
        raise ValueError(
            f"'{version_dir}' serves {meta['input_dtype']} inputs, not images; "
            "predict needs an image export with raw_image_input=True (zoo export "
            "without --float-input)."
        )
    if meta.get("task") == "regression":
        if top_k is not None:
            raise ValueError("top_k applies to classifiers; this export is a regressor")
        images = load_images(image_paths, meta["input_shape"])
        loaded = tf.saved_model.load(str(version_dir))
        outputs = loaded.signatures["serving_default"](images=tf.constant(images))
        values = outputs[REGRESSION_OUTPUT].numpy()
        names = [meta.get("target_name") or "prediction"] + [
            f"prediction_{j}" for j in range(1, values.shape[1])
        ]
        table = pd.DataFrame(values, columns=names)
        table.insert(0, "image", [str(p) for p in image_paths])
        return table
    top_k = meta["top_k"] if top_k is None else top_k
    if not 1 <= top_k <= meta["top_k"]:
        raise ValueError(
            f"top_k={top_k} is not available: this export returns 1..{meta['top_k']} "
            "classes. Pass a top_k in that range, or re-export with a larger --top-k "
            "for more."
        )
    images = load_images(image_paths, meta["input_shape"])
    loaded = tf.saved_model.load(str(version_dir))
    outputs = loaded.signatures["serving_default"](images=tf.constant(images))
    class_ids = outputs["class_ids"].numpy()
    scores = outputs["scores"].numpy()
    rows = [
        {
            "image": str(image_path),
            "rank": rank + 1,
            "class_id": int(class_ids[i, rank]),
            "class_name": meta["class_names"][class_ids[i, rank]],
            "score": float(scores[i, rank]),
        }
        for i, image_path in enumerate(image_paths)
        for rank in range(top_k)
    ]
    return pd.DataFrame(rows)


def serve_bench(
    path: str | os.PathLike,
    batch_sizes: Sequence[int] = (1, 8, 64),
    *,
    repeats: int = 20,
) -> pd.DataFrame:
    """Latency and throughput of `serving_default`, loaded as TF Serving would.

    Args:
        path: A version directory, or a base directory (its latest version).
        batch_sizes: Batch sizes to time, each >= 1.
        repeats: Timed calls per batch size (after 3 warm-up calls).

    Returns:
        A DataFrame with columns batch_size, median_ms, images_per_s.

    Raises:
        ValueError: If a batch size or `repeats` is below 1.
    """
    if min(batch_sizes, default=0) < 1 or repeats < 1:
        raise ValueError(
            f"batch sizes and repeats must be >= 1; received batch_sizes="
            f"{list(batch_sizes)}, repeats={repeats}. Example: --batch-sizes 1,8,64."
        )
    version_dir = resolve_version_dir(path)
    meta = json.loads((version_dir / META_FILE).read_text())
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures["serving_default"]
    spec = tf.TensorSpec((None, *meta["input_shape"]), meta["input_dtype"])
    rows = []
    for batch_size in batch_sizes:
        images = tf.constant(_random_samples(spec, batch_size))
        for _ in range(3):
            serve(images=images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            serve(images=images)[meta["outputs"][0]].numpy()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append(
            {
                "batch_size": batch_size,
                "median_ms": round(median * 1e3, 3),
                "images_per_s": round(batch_size / median, 1),
            }
        )
    return pd.DataFrame(rows)


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A copy of `model` with batch norms folded into the layer before them.

    In inference a BatchNormalization is the affine map `x * s + (beta - mean *
    s)` with `s = gamma / sqrt(moving_variance + epsilon)`. When `x` comes from a
    Conv1D/2D/3D or Dense layer with a linear activation, the map is folded into
    that layer's weights, `kernel * s` (per output channel) and bias
    `(bias - mean) * s + beta` (computed in float64), and the batch norm is
    dropped: what TensorFlow's optimize_for_inference, TensorRT and ONNX runtimes
    do, and Keras lacks. The convolution, its bias, the residual add and the ReLU
    then run as one oneDNN/cuDNN kernel.

    Only the safe pattern is folded: a layer called once whose only consumer is a
    batch norm over the last axis (channels_last), in the same functional graph
    (nested functional models included), the batch norm called once without call
    arguments. Everything else is copied as it is; `model` is not modified.

    The outputs equal the model's up to float32 rounding, which deep networks
    amplify: measured max abs difference of the probabilities 2e-6 for a trained
    ResNet-20, 3e-5 for a trained ResNet-50 (the unfolded model differs from a
    float64 evaluation by as much).

    Args:
        model: A functional or Sequential Keras model; other models are returned
            as they are.

    Returns:
        The folded copy, with the same inputs, outputs and layer names, minus the
        folded batch norms; `model` itself if nothing can be folded.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    dropped = {id(bn) for bn in pairs.values()}

    def replace(layer):
        if id(layer) in dropped:
            return layer, None  # never called: call_layer skips it
        bn = pairs.get(id(layer))
        if bn is None:
            return None
        config = {**layer.get_config(), "use_bias": True}
        return layer.__class__.from_config(config), _folded_weights(layer, bn)

    def call_layer(layer, *args, **kwargs):
        if id(layer) in dropped:
            return args[0]
        return layer(*args, **kwargs)

    return _clone_model(model, replace, call_layer)


def _foldable_pairs(model: keras.Model) -> dict[int, keras.Layer]:
    """{id(conv or dense layer): the batch norm folded into it}, nested models
    included (Sequential ones excluded: clone_model cannot skip their layers)."""
    nodes = getattr(model, "_nodes_by_depth", None)
    if nodes is None:  # a subclassed model: no graph to rewrite
        return {}
    nodes = [n for depth in nodes.values() for n in depth if not n.is_input]
    calls, uses = {}, {id(t): 1 for t in model.outputs}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    pairs = {}
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
            pairs.update(_foldable_pairs(layer))
        if (
            type(layer) is not keras.layers.BatchNormalization
            or calls[id(layer)] != 1
            or len(node.input_tensors) != 1
            or any(v is not None for v in node.arguments.kwargs.values())
        ):
            continue
        x = node.input_tensors[0]
        source = x._keras_history.operation
        if (
            type(source) in _FOLDABLE
            and calls.get(id(source)) == 1
            and uses[id(x)] == 1
            and layer.axis in (-1, len(x.shape) - 1)
            and source.get_config().get("data_format", "channels_last")
            == "channels_last"
            and source.activation is keras.activations.linear
            and source.dtype_policy.quantization_mode is None
            and not getattr(source, "lora_enabled", False)
        ):
            pairs[id(source)] = layer
    return pairs


def _folded_weights(layer: keras.Layer, bn: keras.Layer) -> list[np.ndarray]:
    """[kernel * s, (bias - mean) * s + beta] of `layer` followed by `bn`."""

    def value(variable):
        return keras.ops.convert_to_numpy(variable).astype(np.float64)

    scale = 1 / np.sqrt(value(bn.moving_variance) + bn.epsilon)
    if bn.scale:
        scale = scale * value(bn.gamma)
    bias = value(layer.bias) if layer.use_bias else 0.0
    shift = (bias - value(bn.moving_mean)) * scale
    if bn.center:
        shift = shift + value(bn.beta)
    dtype = layer.kernel.dtype
    return [(value(layer.kernel) * scale).astype(dtype), shift.astype(dtype)]


def _clone_model(model, replace, call_layer=None) -> keras.Model:
    """keras.models.clone_model, nested models included, with the weights.

    `replace(layer)` returns None to copy the layer (config and weights), or
    `(new_layer, weights)`, weights (None to leave them) being set once the
    clone is built.
    """
    weights = []

    def clone_layer(layer):
        replaced = replace(layer)
        if replaced is None:
            config = layer.get_config()
            replaced = layer.__class__.from_config(config), layer.get_weights()
        new, values = replaced
        if values is not None:
            weights.append((new, values))
        return new

    clone = keras.models.clone_model(
        model, clone_function=clone_layer, call_function=call_layer, recursive=True
    )
    for layer, values in weights:
        layer.set_weights(values)
    return clone


def _count_batch_norms(model: keras.Model) -> int:
    return sum(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in _all_layers(model)
    )


def _serving_function(
    model: keras.Model,
    preprocessing: keras.Layer | None,
    spec: tf.TensorSpec,
    top_k: int | None,
    jit_compile: bool,
    regression: bool,
    frozen: bool,
) -> tf.types.experimental.GenericFunction:
    """The traced serving tf.function: images -> probabilities, class_ids, scores
    (regression: -> predictions)."""
    run_model = _inference_call(model, frozen)
    run_preprocessing = (
        None if preprocessing is None else _inference_call(preprocessing, frozen)
    )

    # XLA compiles the model and top-k only: preprocessing ops such as the
    # antialiased resize (ScaleAndTranslate) have no XLA kernel.
    @tf.function(jit_compile=jit_compile, autograph=False)
    def classify(x):
        probabilities = tf.cast(run_model(x), tf.float32)
        if regression:
            return {REGRESSION_OUTPUT: probabilities}
        scores, class_ids = tf.math.top_k(probabilities, k=top_k)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "scores": scores,
        }

    @tf.function(input_signature=[spec], autograph=False)
    def serve(images):
        if preprocessing is None:
            return classify(images)
        return classify(run_preprocessing(images))

    serve.get_concrete_function()
    return serve


def _inference_call(layer: keras.Layer, frozen: bool):
    """`layer(x, training=False)`; frozen, the same call with its convolution
    filters as constants of the traced graph (Keras's stateless_call fed
    `tf.constant`s of their values, which tracing embeds as Const nodes) and
    every other weight read from its variable."""
    filters = {id(v) for v in _conv_filters(layer)} if frozen else set()
    if not filters:
        return lambda x: layer(x, training=False)

    def value(variable):
        if id(variable) in filters:
            array = keras.ops.convert_to_numpy(variable)
            return lambda: tf.constant(array)
        return lambda: variable.value

    trainable = [value(v) for v in layer.trainable_variables]
    fixed = [value(v) for v in layer.non_trainable_variables]

    def call(x):
        outputs, _ = layer.stateless_call(
            [v() for v in trainable], [v() for v in fixed], x, training=False
        )
        return outputs

    return call


def _conv_filters(layer: keras.Layer | None) -> list[keras.Variable]:
    """The convolution filters (weights of rank >= 3 of convolution layers) of
    `layer` and the layers nested in it."""
    if layer is None:
        return []
    layers = _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return [
        v
        for sub in layers
        if isinstance(sub, _CONV_LAYERS)
        for v in sub.weights
        if len(v.shape) >= 3
    ]


def _should_freeze(freeze_filters: bool | str, layers: list) -> bool:
    """Resolve `freeze_filters` ("auto": freeze when the filters fit the graph)."""
    size = sum(
        math.prod(v.shape) * np.dtype(v.dtype).itemsize
        for layer in layers
        for v in _conv_filters(layer)
    )
    if freeze_filters == "auto":
        return size <= _FREEZE_MAX_BYTES
    if freeze_filters and size > _FREEZE_MAX_BYTES:
        raise ValueError(
            f"freeze_filters=True received a model with {size / 2**30:.1f} GiB of "
            f"convolution filters; a graph holds at most "
            f"{_FREEZE_MAX_BYTES / 2**30:.0f} GiB of constants (protocol buffers "
            "are capped at 2 GB). Pass freeze_filters=False (zoo export "
            "--no-freeze-filters)."
        )
    return freeze_filters


def _verification_failure(report: VerifyReport) -> str:
    """One line saying how the export failed verification and what to do."""
    if report.imported_project:
        return (
            "the SavedModel needed this project to load (the fresh process imported "
            f"{', '.join(report.imported_project)}); nothing was published."
        )
    diff = max(report.max_abs_diff, report.batch1_max_abs_diff)
    agreement = (
        ""
        if report.top1_agreement is None
        else f", top-1 agreement {report.top1_agreement:.0%}"
    )
    return (
        f"exported SavedModel disagrees with the Keras model: max abs difference "
        f"{diff:.2g} > tolerance {report.tolerance:g} ({report.precision}, "
        f"{report.num_samples} samples{agreement}); nothing was published. If "
        "this is rounding (a deep network, reduced precision), export again with "
        "a looser tolerance (zoo export --tolerance)."
    )


def _with_precision(model: keras.Model, precision: str) -> keras.Model:
    """`model` computing in `precision`: itself, or a clone with the same weights.

    The clone's output layers compute in float32, so softmax runs in full
    precision; a model trained under a mixed policy is cloned for float32.
    """
    policy = PRECISION_POLICIES[precision]
    if policy == "float32" and all(
        layer.dtype_policy.name == "float32" for layer in _all_layers(model)
    ):
        return model
    output_layers = {id(t._keras_history.operation) for t in model.outputs}

    def clone_layer(layer):
        config = layer.get_config()
        float32 = id(layer) in output_layers
        config["dtype"] = keras.DTypePolicy("float32" if float32 else policy)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def _all_layers(model: keras.Model) -> list[keras.Layer]:
    """Layers of `model`, including those of nested models."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


def _single_output(model: keras.Model, regression: bool = False) -> keras.Model:
    """The model's first output as probabilities: auxiliary outputs (GoogLeNet's
    aux heads) are dropped, and a model that ends in logits (a Dense layer with a
    linear activation, e.g. trained with from_logits) gets a softmax. Regression
    outputs are served as they are."""
    output = model.outputs[0]
    last = output._keras_history[0]
    if (
        not regression
        and isinstance(last, keras.layers.Dense)
        and last.activation
        in (
            keras.activations.linear,
            None,
        )
    ):
        output = keras.layers.Activation(
            "softmax", dtype="float32", name="probabilities"
        )(output)
    elif len(model.outputs) == 1:
        return model
    return keras.Model(model.input, output, name=model.name)


def check_export_dir(base_dir: str | os.PathLike) -> Path:
    """The export root as a Path; refuses one that cannot become a directory of
    versions (`train`/`finetune` call it before training, not after)."""
    base = Path(base_dir)
    existing = next((p for p in (base, *base.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        what = (
            "exists and is a file"
            if existing == base
            else f"is inside the file '{existing}'"
        )
        raise ValueError(
            f"export path '{base}' {what}; it must be a directory holding integer "
            "versions. Pass another export directory (--export / --out)."
        )
    if not os.access(existing, os.W_OK):
        raise ValueError(
            f"export path '{base}' cannot be created: '{existing}' is not writable. "
            "Pass another export directory (--export / --out)."
        )
    return base


def _load_source(obj: keras.Model | str | os.PathLike) -> _Source:
    """Resolve a Keras model, a .keras file or a run directory."""
    if isinstance(obj, keras.Model):
        return _Source(model=obj, name=obj.name)
    path = Path(obj)
    if path.is_file() and path.suffix == ".keras":
        model = zoo.load_model(path, compile=False)
        return _Source(model=model, name=model.name)
    if not path.is_dir():
        raise ValueError(
            f"cannot export '{path}': expected a keras.Model, a .keras file or a run "
            "directory (with best.keras or last.keras)."
        )
    model_file = next((path / f for f in RUN_MODEL_FILES if (path / f).is_file()), None)
    if model_file is None:
        raise ValueError(
            f"run directory '{path}' has no model: expected "
            f"{' or '.join(RUN_MODEL_FILES)}. Pass a run whose training finished."
        )
    model = zoo.load_model(model_file, compile=False)
    config = _read_json(path / "config.json")
    metrics = _read_json(path / "metrics.json")
    dataset = _read_json(path / "dataset.json")
    source = _Source(
        model=model,
        name=config.get("model", model.name) if config else model.name,
        metrics=metrics,
        run_dir=str(path.resolve()),
    )
    if dataset:
        import data_pipelines

        info = data_pipelines.DatasetInfo.from_dict(dataset)
        source.preprocessing = data_pipelines.preprocessing_model(info)
        source.class_names = list(info.class_names) if info.class_names else None
        source.raw_shape = tuple(info.raw_shape) if info.raw_shape else None
        source.raw_dtype = "float32" if info.task == "tabular" else "uint8"
        source.regression = info.regression
        source.target_name = info.target["name"] if info.target else None
    return source


def _raw_shape(
    preprocessing: keras.Layer,
    given: Sequence[int] | None,
    input_shape: tuple[int, ...],
) -> tuple[int, ...]:
    """Raw image shape: given, else the preprocessing Input's, else the model's."""
    if given is not None:
        return tuple(int(d) for d in given)
    try:
        inputs = preprocessing.inputs  # functional/Sequential models with an Input
    except (AttributeError, ValueError):
        inputs = []
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else ()
    return shape if shape and None not in shape else input_shape


def _check_preprocessing(
    preprocessing: keras.Layer, spec: tf.TensorSpec, input_shape: tuple[int, ...]
) -> None:
    """Build `preprocessing` on one raw input and check it yields the model input."""
    raw = tuple(spec.shape[1:])
    out = preprocessing(_random_samples(spec, 1), training=False)
    if tuple(out.shape[1:]) != input_shape:
        raise ValueError(
            f"preprocessing maps raw inputs {raw} to {tuple(out.shape[1:])}, but the "
            f"model takes {input_shape}. Pass the preprocessing (or raw_shape) the "
            "model was trained with."
        )


def _check_version_free(base: Path, version: int) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"version must be an integer >= 1; received {version!r}. Omit it to take "
            "the next free version."
        )
    if (base / str(version)).exists():
        raise ValueError(
            f"version {version} already exists in '{base}' (versions: "
            f"{list_versions(base)}); versions are never overwritten. Omit --version "
            "to take the next free one."
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


def _samples(sample_images: np.ndarray | None, spec: tf.TensorSpec) -> np.ndarray:
    """Validated verification samples, or seeded random ones."""
    if sample_images is None:
        return _random_samples(spec, _NUM_SAMPLES)
    samples = np.asarray(sample_images)
    expected = tuple(spec.shape[1:])
    if samples.ndim != len(expected) + 1 or samples.shape[1:] != expected:
        raise ValueError(
            f"sample images have shape {samples.shape}; the serving input takes "
            f"(batch, {', '.join(map(str, expected))}). Pass a batch of that shape."
        )
    if spec.dtype == tf.uint8 and samples.dtype != np.uint8:
        raise ValueError(
            f"sample images are {samples.dtype}; the serving input takes raw uint8 "
            "pixels. Pass images before preprocessing, as uint8."
        )
    return samples.astype(spec.dtype.as_numpy_dtype)


def _random_samples(spec: tf.TensorSpec, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (n, *spec.shape[1:])
    if spec.dtype == tf.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


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


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("keras-model-zoo", "tensorflow", "keras", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
