"""The client side of an export: image files in, predictions and latencies out."""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from zoo.export.layout import META_FILE, REGRESSION_OUTPUT, resolve_version_dir
from zoo.export.samples import random_samples


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
        images = tf.constant(random_samples(spec, batch_size))
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
