"""The client side of an export in any format: image files or table rows in,
predictions and latencies out, each format run by its own runtime."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from zoo.export import layout
from zoo.export.layout import (
    DATASET_FILE,
    REGRESSION_OUTPUT,
    read_meta,
    resolve_version_dir,
)
from zoo.export.samples import random_samples
from zoo.files import brief, read_record

DEFAULT_BATCH_SIZE = 64
# Pillow's modes of 16-bit grayscale images (16-bit PNGs open as "I;16").
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


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
    # Pillow directly, not keras.utils.load_img: that converts colour modes and
    # resizes silently, and a user should hear when their image was changed.
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
        if image.mode in SIXTEEN_BIT_MODES:
            warnings.warn(
                f"{image_path}: scaled 16-bit {image.mode} values to 8 bits "
                "(value * 255 / 65535) for the model",
                UserWarning,
                stacklevel=2,
            )
            image = Image.fromarray(_eight_bits(np.asarray(image)), "L")
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


def _eight_bits(values: np.ndarray) -> np.ndarray:
    """16-bit values scaled to uint8 (Pillow's own conversion clips at 255)."""
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_serving(version_dir: Path, meta: dict) -> Callable[[np.ndarray], dict]:
    """The serving call of a version in its format's runtime: a raw input batch
    -> {output name: array}; a damaged export (saved_model.pb, variables/,
    model.onnx, model.xml/.bin) is refused in one line naming it."""
    fmt = layout.version_format(version_dir)
    layout.require_modules(fmt, "serve")
    try:
        return _RUNTIMES[fmt](version_dir, meta)
    except Exception as err:  # protobuf, TensorFlow OpErrors, runtime errors
        raise ValueError(
            f"cannot load the {layout.FORMAT_NAMES[fmt]} in '{version_dir}': "
            f"{brief(err)}. The export is damaged or incomplete; export the model "
            "again."
        ) from None


def _saved_model(version_dir: Path, meta: dict) -> Callable[[np.ndarray], dict]:
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures["serving_default"]

    def run(images):
        return {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}

    run.loaded = loaded  # the signature's variables live as long as the object
    return run


def _onnx(version_dir: Path, meta: dict) -> Callable[[np.ndarray], dict]:
    import onnxruntime as ort

    options = _session_options(meta.get("runtime_config") or layout.ONNX_RUNTIME_CONFIG)
    # GPU execution providers (TensorRT, CUDA) first where installed.
    session = ort.InferenceSession(
        str(version_dir / layout.MODEL_FILES["onnx"]),
        options,
        providers=ort.get_available_providers(),
    )
    names = [o.name for o in session.get_outputs()]

    def run(images):
        return dict(
            zip(names, session.run(None, {layout.INPUT_NAME: images}), strict=True)
        )

    run.session = session
    return run


def _session_options(config: dict):
    """ONNX Runtime SessionOptions from an export's runtime_config (enum values
    by name, as export_meta.json holds them)."""
    import onnxruntime as ort

    enums = {
        "graph_optimization_level": ort.GraphOptimizationLevel,
        "execution_mode": ort.ExecutionMode,
    }
    options = ort.SessionOptions()
    for name, value in config["session_options"].items():
        setattr(options, name, getattr(enums[name], value) if name in enums else value)
    for key, value in config["session_config_entries"].items():
        options.add_session_config_entry(key, value)
    return options


def _openvino(version_dir: Path, meta: dict) -> Callable[[np.ndarray], dict]:
    import openvino as ov

    # Exports made before runtime_config was recorded: their precision hint.
    config = meta.get("runtime_config") or {
        "INFERENCE_PRECISION_HINT": meta.get("inference_precision_hint", "f32"),
        **layout.OPENVINO_RUNTIME_CONFIG,
    }
    compiled = ov.Core().compile_model(
        str(version_dir / layout.MODEL_FILES["openvino"]), "CPU", config
    )

    def run(images):
        result = compiled(images)
        return {o.get_any_name(): result[o] for o in compiled.outputs}

    run.compiled = compiled
    return run


_RUNTIMES = {"savedmodel": _saved_model, "onnx": _onnx, "openvino": _openvino}


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        batch_size = repr(batch_size)
    elif batch_size >= 1:
        return
    raise ValueError(
        f"batch_size must be an int >= 1; received {batch_size}. Example: "
        "--batch-size 64."
    )


def is_table_export(meta: dict) -> bool:
    """Whether an export takes table rows: float32 feature vectors with the
    preprocessing inside (a run trained on a csv source)."""
    return (
        meta.get("raw_image_input", True)
        and meta["input_dtype"] == "float32"
        and len(meta["input_shape"]) == 1
    )


def predict(
    path: str | os.PathLike,
    inputs: Sequence[str | os.PathLike] | pd.DataFrame,
    *,
    top_k: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> pd.DataFrame:
    """Predictions of an exported SavedModel (raw input only) for image files,
    or for the rows of a table export.

    Images are read and served `batch_size` at a time, so memory does not grow
    with their number.

    Args:
        path: A version directory, or a base directory (its latest version).
        inputs: Image files (see `load_images` for size/colour handling); for a
            table export (a run on a csv source), one CSV file or a DataFrame
            of rows (see `predict_table`).
        top_k: Rows per image, at most the export's top_k (default: all of them).
        batch_size: Images (rows) per call of the SavedModel.

    Returns:
        A DataFrame with columns image, rank, class_id, class_name, score; for a
        regression export: image and the predicted value, named after the target.
        Table exports: see `predict_table`.

    Raises:
        ValueError: If the export takes float inputs, top_k is too large, or an
            image cannot be read.
    """
    _check_batch_size(batch_size)
    version_dir = resolve_version_dir(path)
    meta = read_meta(version_dir)
    if is_table_export(meta):
        if top_k is not None:
            raise ValueError(
                "top_k applies to image exports; a table export returns every "
                "class's probability. Drop it."
            )
        if isinstance(inputs, pd.DataFrame):
            return predict_table(version_dir, inputs, batch_size=batch_size)
        if len(inputs) != 1:
            raise ValueError(
                f"'{version_dir}' takes table rows: pass one CSV file of them; "
                f"received {len(inputs)} files."
            )
        return predict_table(version_dir, inputs[0], batch_size=batch_size)
    if meta["input_dtype"] != "uint8":
        raise ValueError(
            f"'{version_dir}' serves {meta['input_dtype']} model inputs (exported "
            "with --float-input), not images; predict needs an export with "
            "raw_image_input=True: export the run again without --float-input."
        )
    regression = meta.get("task") == "regression"
    if regression and top_k is not None:
        raise ValueError("top_k applies to classifiers; this export is a regressor")
    top_k = meta["top_k"] if top_k is None else top_k
    if not regression and not 1 <= top_k <= meta["top_k"]:
        raise ValueError(
            f"top_k={top_k} is not available: this export returns 1..{meta['top_k']} "
            "classes. Pass a top_k in that range, or re-export with a larger --top-k "
            "for more."
        )
    serve = load_serving(version_dir, meta)
    tables = []
    for chunk in _batches(list(inputs), batch_size):
        images = load_images(chunk, meta["input_shape"])
        outputs = serve(images)
        tables.append(
            _value_rows(outputs, meta, "image", chunk)
            if regression
            else _ranked_rows(outputs, meta, chunk, top_k)
        )
    return pd.concat(tables, ignore_index=True)


def _ranked_rows(outputs, meta: dict, image_paths: Sequence, top_k: int):
    """One row per image and rank: image, rank, class_id, class_name, score."""
    class_ids = outputs["class_ids"]
    scores = outputs["scores"]
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


def _value_rows(outputs, meta: dict, key: str | None, keys: Sequence):
    """A regressor's predictions, named after its target, after a `key`
    column (the image files) unless `key` is None."""
    values = outputs[REGRESSION_OUTPUT]
    names = [meta.get("target_name") or "prediction"] + [
        f"prediction_{j}" for j in range(1, values.shape[1])
    ]
    table = pd.DataFrame(values, columns=names)
    if key is not None:
        table.insert(0, key, [str(k) for k in keys])
    return table


def predict_table(
    path: str | os.PathLike,
    rows: str | os.PathLike | pd.DataFrame,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> pd.DataFrame:
    """Predictions of a table export (a run on a csv source) for raw rows.

    The feature columns are matched by name with the ones the model was trained
    on (the export's dataset.json); other columns (the label, an id) are ignored.
    Rows are encoded as in training (`data_pipelines.encode_table`: a missing
    numeric value becomes the training mean, an unseen category all zeros).

    Args:
        path: A version directory, or a base directory (its latest version).
        rows: A CSV file with a header row, or a DataFrame.
        batch_size: Rows per call of the SavedModel.

    Returns:
        One row per input row. Classification: `class` (the best class's name)
        and `probability_<class name>` per class; regression: the prediction,
        named after the target.

    Raises:
        ValueError: If the export is not a table export, the CSV cannot be read,
            a feature column is missing or a numeric one holds text.
    """
    import data_pipelines as dp

    _check_batch_size(batch_size)
    version_dir = resolve_version_dir(path)
    meta = read_meta(version_dir)
    if not is_table_export(meta):
        raise ValueError(
            f"'{version_dir}' serves images, not table rows; use predict with "
            "image files."
        )
    info = _table_info(version_dir, meta)
    name = "the rows" if isinstance(rows, pd.DataFrame) else f"'{rows}'"
    frame = rows if isinstance(rows, pd.DataFrame) else _read_csv(rows)
    encoded = dp.encode_table(_checked_rows(frame, info.tabular, name), info)
    serve = load_serving(version_dir, meta)
    tables = []
    for chunk in _batches(encoded, batch_size):
        outputs = serve(np.asarray(chunk, np.float32))
        if meta.get("task") == "regression":
            tables.append(_value_rows(outputs, meta, None, chunk))
            continue
        probabilities = outputs["probabilities"]
        table = pd.DataFrame(
            probabilities,
            columns=[f"probability_{c}" for c in meta["class_names"]],
        )
        classes = np.asarray(meta["class_names"])[probabilities.argmax(axis=1)]
        table.insert(0, "class", classes)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _table_info(version_dir: Path, meta: dict):
    """The training table's DatasetInfo: the export's copy of dataset.json, or
    (exports made before it was copied) the source run's."""
    import data_pipelines as dp

    run = meta.get("source_run")
    for folder in (version_dir, Path(run) if run else None):
        data = folder and read_record(folder / DATASET_FILE, "predict")
        if data and data.get("tabular"):
            return dp.DatasetInfo.from_dict(data)
    raise ValueError(
        f"'{version_dir}' does not record the feature columns it was trained on "
        f"(no {DATASET_FILE} in it or in its source run {run}); export the run "
        "again with this version of zoo."
    )


def _read_csv(path: str | os.PathLike) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as err:  # empty, not CSV, not text
        raise ValueError(
            f"cannot read '{path}' as CSV rows: {brief(err)}. Pass a CSV file with "
            "a header row naming the feature columns."
        ) from None


def _checked_rows(frame: pd.DataFrame, spec: dict, name: str) -> pd.DataFrame:
    """`frame` (column names as strings) if it has every feature column and its
    numeric columns hold numbers; else one line naming what is wrong."""
    frame = frame.rename(columns=str)
    features = [*spec["numeric"], *spec["categories"]]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name} has no column {', '.join(map(repr, missing))}, which the model "
            f"was trained on; columns found: {', '.join(frame.columns) or 'none'}. "
            f"The model takes: {', '.join(features)}."
        )
    for column in spec["numeric"]:
        values = frame[column]
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        if bad.any():
            raise ValueError(
                f"column '{column}' of {name} holds {int(bad.sum())} non-numeric "
                f"value(s), e.g. {values[bad].iloc[0]!r} in row "
                f"{int(np.flatnonzero(bad)[0]) + 1}; the model was trained on "
                "numbers there."
            )
    return frame


def serve_bench(
    path: str | os.PathLike,
    batch_sizes: Sequence[int] = (1, 8, 64),
    *,
    repeats: int = 20,
    formats: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Latency and throughput of exports side by side, each in its own runtime.

    Every format is timed in the same loop, one call each in turn (interleaved,
    so load from other processes hits them alike), after 3 warm-up calls; the
    figures are medians.

    Args:
        path: An export base directory (the latest version of each format),
            a version directory, or what `zoo export` takes (a run directory or
            a .keras file), which is then exported in each format to a
            temporary directory first (verified, removed afterwards).
        batch_sizes: Batch sizes to time, each >= 1.
        repeats: Timed calls per batch size and format.
        formats: Formats to time; default every format a base holds, all three
            for a run.

    Returns:
        A DataFrame with columns format, version, precision, batch_size,
        median_ms, images_per_s and fastest (the fastest format at that batch
        size).

    Raises:
        ValueError: If a batch size or `repeats` is below 1, a format is unknown,
            its runtime is missing, or the base holds no version of it.
    """
    if min(batch_sizes, default=0) < 1 or repeats < 1:
        raise ValueError(
            f"batch sizes and repeats must be >= 1; received batch_sizes="
            f"{list(batch_sizes)}, repeats={repeats}. Example: --batch-sizes 1,8,64."
        )
    for fmt in formats or ():
        layout.check_format(fmt)
    path = Path(path)
    if layout.version_format(path) is None and not layout.list_versions(path):
        with tempfile.TemporaryDirectory(prefix="zoo-serve-bench-") as work:
            from zoo.export.exporter import export

            for fmt in formats or layout.FORMATS:
                export(path, Path(work) / "bench", format=fmt)
            return serve_bench(
                Path(work) / "bench", batch_sizes, repeats=repeats, formats=formats
            )
    versions = _bench_versions(path, formats)
    metas = {fmt: read_meta(v) for fmt, v in versions.items()}
    serves = {fmt: load_serving(v, metas[fmt]) for fmt, v in versions.items()}
    meta = next(iter(metas.values()))
    spec = tf.TensorSpec((None, *meta["input_shape"]), meta["input_dtype"])
    rows = []
    for batch_size in batch_sizes:
        images = random_samples(spec, batch_size)
        for _ in range(3):
            for serve in serves.values():
                serve(images)
        times = {fmt: [] for fmt in serves}
        for _ in range(repeats):
            for fmt, serve in serves.items():
                start = time.perf_counter()
                serve(images)
                times[fmt].append(time.perf_counter() - start)
        medians = {fmt: statistics.median(t) for fmt, t in times.items()}
        fastest = min(medians, key=medians.get)
        rows += [
            {
                "format": fmt,
                "version": int(versions[fmt].name),
                "precision": metas[fmt]["precision"],
                "batch_size": batch_size,
                "median_ms": round(median * 1e3, 3),
                "images_per_s": round(batch_size / median, 1),
                "fastest": fmt == fastest,
            }
            for fmt, median in medians.items()
        ]
    return pd.DataFrame(rows)


def _bench_versions(path: Path, formats: Sequence[str] | None) -> dict[str, Path]:
    """{format: the version directory timed}: `path` itself if it is a version,
    else the latest version of each format of the base."""
    own = layout.version_format(path)
    if own is not None:
        if formats and list(formats) != [own]:
            raise ValueError(
                f"'{path}' is one {own} version; to compare formats pass their "
                "export base directory (or the run) instead."
            )
        return {own: path}
    present = [layout.version_format(path / str(v)) for v in layout.list_versions(path)]
    chosen = formats or [f for f in layout.FORMATS if f in present]
    return {fmt: resolve_version_dir(path, fmt) for fmt in chosen}
