"""Dataset sources: each turns a source string (or numpy arrays) into raw data.

Image sources return uint8 images of shape (N, H, W, C) with values 0..255 and integer
class ids; the csv source returns a pandas DataFrame of features. With
``regression=True`` the csv and numpy sources keep their label as float32 targets.
The CLI's ``--dataset`` strings are parsed by :func:`parse_source`:

======================  ==========================================================
``digits``              scikit-learn's 1,797 8x8 handwritten digits (offline)
``idx:DIR``             MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST)
``tfds:NAME[:CONFIG]``  a TFDS image-classification dataset
``folder:DIR``          one subfolder of image files per class
``csv:FILE``            a table with a label column (classes, or regression targets)
======================  ==========================================================
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMES = ("digits", "idx", "tfds", "folder", "csv")
IDX_IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension
IDX_TEST_PREFIXES = ("t10k", "test")
MAX_CATEGORIES = 50
TFDS_GCS_URL = "https://storage.googleapis.com/tfds-data"  # TFDS' own mirror


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--dataset`` string: ``scheme`` plus its argument."""

    scheme: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}:{self.arg}" if self.arg else self.scheme


@dataclass
class RawData:
    """What a source yields before splitting.

    Attributes:
        x: uint8 images (N, H, W, C), or for tabular sources a DataFrame of features.
        y: int64 class ids in ``[0, len(class_names))``, or float32 regression
            targets.
        class_names: Name of each class id; for regression, ``[target name]``.
        task: "image" or "tabular".
        test: The source's own test split ``(x, y)``, when it has one.
    """

    x: np.ndarray | pd.DataFrame
    y: np.ndarray
    class_names: list[str]
    task: str = "image"
    test: tuple[np.ndarray, np.ndarray] | None = None


def parse_source(source: str) -> SourceSpec:
    """Parses a source string such as ``"digits"`` or ``"tfds:cifar10"``.

    Args:
        source: ``digits``, ``idx:DIR``, ``tfds:NAME[:CONFIG]``, ``folder:DIR`` or
            ``csv:FILE``.

    Returns:
        The scheme and its argument.

    Raises:
        ValueError: Unknown scheme, or a missing/extra argument.
    """
    scheme, sep, arg = source.partition(":")
    scheme = scheme.strip().lower()
    if scheme not in SCHEMES:
        close = difflib.get_close_matches(scheme, SCHEMES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"unknown dataset source '{source}'; allowed: digits, idx:DIR, "
            f"tfds:NAME[:CONFIG], folder:DIR, csv:FILE{hint}"
        )
    if scheme == "digits" and sep:
        raise ValueError(f"source 'digits' takes no argument; received '{source}'")
    if scheme != "digits" and not arg:
        raise ValueError(f"source '{scheme}' needs an argument, e.g. '{scheme}:PATH'")
    return SourceSpec(scheme, arg)


def load_source(
    spec: SourceSpec,
    *,
    data_dir: str | None = None,
    label_column: str | None = None,
    image_size: tuple[int, int] | None = None,
    regression: bool = False,
) -> RawData:
    """Loads the raw data of a parsed source (see the module docstring)."""
    if spec.scheme == "csv":
        return load_csv(spec.arg, label_column, regression=regression)
    if regression:
        raise ValueError(
            f"regression needs numeric targets: a csv source with a numeric label "
            f"column, or numpy arrays (x, y); source '{spec}' has class labels"
        )
    if label_column is not None:
        raise ValueError(
            f"label_column applies to csv sources only; received source '{spec}'"
        )
    if spec.scheme == "digits":
        return load_digits()
    if spec.scheme == "idx":
        return load_idx(spec.arg)
    if spec.scheme == "tfds":
        return load_tfds(spec.arg, data_dir=data_dir, image_size=image_size)
    return load_folder(spec.arg, image_size=image_size)


def load_digits() -> RawData:
    """scikit-learn's 8x8 digits, with the 0..16 ink values mapped to uint8 0..255.

    Its test split is fixed: the 20 % of ``train_test_split(X, y, test_size=0.2,
    stratify=y, random_state=0)`` (360 images), so that results compare with
    scikit-learn models trained on exactly the other 1,437.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int64)
    x, x_test, y, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    names = [str(n) for n in bunch.target_names]
    return RawData(x, y, names, test=(x_test, y_test))


def load_arrays(x: np.ndarray, y: np.ndarray, regression: bool = False) -> RawData:
    """Wraps in-memory arrays.

    Images ``(N, H, W)`` or ``(N, H, W, C)`` must be uint8, integers in 0..255, or
    floats in [0, 1] (scaled by 255). 2-D ``x`` is tabular (numeric features).
    Labels may be any values; class ids follow their sorted order. With
    ``regression=True``, ``y`` holds numeric targets (target name ``"y"``).
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same length; received {len(x)} and {len(y)}"
        )
    if y.ndim != 1:
        kind = "regression targets" if regression else "class labels"
        raise ValueError(f"y must be 1-D {kind}; received shape {y.shape}")
    if regression:
        ids, names = _targets(pd.Series(y), "y", "numpy y"), ["y"]
    else:
        classes, ids = np.unique(y, return_inverse=True)
        names = [str(c) for c in classes]
    if x.ndim == 2:
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
        _refuse_infinite(frame, "numpy x", csv=False)
        return RawData(frame, ids, names, task="tabular")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(
            "x must be (N, features), (N, H, W) or (N, H, W, C); "
            f"received shape {x.shape}"
        )
    return RawData(_to_uint8(x), ids, names)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 as it is; floats within [0, 1] scaled by 255; other numbers within
    [0, 255] rounded. NaN, infinities and other ranges are refused."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise ValueError(f"numpy x: images must be real numbers; received {x.dtype}")
    bad = ~np.isfinite(x)
    if bad.any():
        images = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
        raise ValueError(
            f"numpy x holds {int(bad.sum())} NaN or infinite values in {len(images)} "
            f"of its {len(x)} images (first: image {images[0]}); image values must "
            "be finite: uint8, integers within [0, 255], or floats within [0, 1] or "
            "[0, 255]"
        )
    low, high = x.min(), x.max()
    floats = np.issubdtype(x.dtype, np.floating)
    if floats and low >= 0 and high <= 1:
        return np.round(x * 255).astype(np.uint8)
    if low < 0 or high > 255:
        kind, allowed = ("integer", "within [0, 255]")
        if floats:
            kind, allowed = "float", "within [0, 1] (scaled by 255) or within [0, 255]"
        raise ValueError(
            f"numpy x: {kind} image values must lie {allowed}; found values in "
            f"[{low:g}, {high:g}]. Rescale the array (e.g. x / x.max()) first."
        )
    return np.round(x).astype(np.uint8)


# --- IDX -------------------------------------------------------------------------


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) and checks its magic number.

    Args:
        path: The file.
        magic: Expected magic number (0x803 for images, 0x801 for labels).

    Returns:
        The uint8 array with the shape the header declares.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        got = "none (file too short)" if found is None else f"0x{found:08X}"
        raise ValueError(
            f"{path}: wrong IDX magic number {got}; expected 0x{magic:08X}"
        )
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: header declares shape {tuple(dims)} ({int(np.prod(dims))} "
            f"bytes) but the file holds {body.size} data bytes"
        )
    return body.reshape(dims)


def load_idx(directory: str) -> RawData:
    """Loads ``PREFIX-images-idx3-ubyte[.gz]`` / ``PREFIX-labels-idx1-ubyte[.gz]``.

    With a ``train`` pair and a ``t10k`` (or ``test``) pair, the latter is the test
    split; a directory with a single pair (e.g. only t10k) is split by ``load``.
    """
    root = _existing_dir(directory, "idx")
    pairs: dict[str, dict[str, Path]] = {}
    pattern = re.compile(r"(.+)-(images-idx3|labels-idx1)-ubyte(\.gz)?$")
    for path in sorted(root.iterdir()):
        match = pattern.match(path.name)
        if match:
            kind = "images" if match[2].startswith("images") else "labels"
            pairs.setdefault(match[1], {})[kind] = path
    incomplete = [p for p, files in pairs.items() if len(files) != 2]
    if not pairs or incomplete:
        raise ValueError(
            f"idx source '{directory}' needs pairs of PREFIX-images-idx3-ubyte[.gz] "
            f"and PREFIX-labels-idx1-ubyte[.gz]; found complete pairs "
            f"{sorted(set(pairs) - set(incomplete))}, incomplete {incomplete}"
        )
    arrays = {prefix: _read_idx_pair(files) for prefix, files in pairs.items()}
    test = [p for p in arrays if p in IDX_TEST_PREFIXES]
    train = [p for p in arrays if p not in IDX_TEST_PREFIXES]
    if len(arrays) == 1:
        x, y = next(iter(arrays.values()))
        test_split = None
    elif len(train) == 1 and len(test) == 1:
        x, y = arrays[train[0]]
        test_split = arrays[test[0]]
    else:
        raise ValueError(
            f"idx source '{directory}' holds pairs {sorted(arrays)}; expected one "
            "pair, or one training pair and one 't10k'/'test' pair"
        )
    classes = np.unique(np.concatenate([y] + ([test_split[1]] if test_split else [])))
    return RawData(x, y, [str(c) for c in range(classes.max() + 1)], test=test_split)


def _read_idx_pair(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(files["images"], IDX_IMAGES_MAGIC)
    y = read_idx(files["labels"], IDX_LABELS_MAGIC)
    if len(x) != len(y):
        raise ValueError(
            f"IDX counts differ: {files['images'].name} has {len(x)} images but "
            f"{files['labels'].name} has {len(y)} labels"
        )
    return x[..., None], y.astype(np.int64)


# --- TFDS ------------------------------------------------------------------------


def load_tfds(
    name: str, *, data_dir: str | None = None, image_size: tuple[int, int] | None = None
) -> RawData:
    """Loads a TFDS image-classification dataset (``NAME`` or ``NAME:CONFIG``).

    Uses ``tfds.builder`` + ``download_and_prepare`` + ``as_dataset``, the steps of
    ``tfds.load``. A dataset not prepared in ``data_dir`` is downloaded only when
    its hosts answer within seconds (offline, TFDS would retry for minutes); a
    failed download is one ValueError saying how to prepare a copy elsewhere, and
    leaves nothing behind in ``data_dir``. The whole dataset is read into memory as
    uint8 (fine for MNIST/CIFAR-sized data); images of varying size need
    ``image_size``.
    """
    try:
        # Quiet: TFDS logs that a data_dir without the dataset has no dataset_info.
        with _logger_level("absl", logging.ERROR):
            builder = _tfds_builder(name, data_dir)
            prepared = builder.is_prepared()
        if not prepared:
            _download_and_prepare(builder, name)
    except ImportError as err:  # e.g. importlib_resources on an old install
        raise ValueError(
            f"tensorflow-datasets needs the module '{err.name}', which is not "
            f"installed; run `pip install {err.name}` (or reinstall this project: "
            "pip install -e .)"
        ) from None
    import tensorflow_datasets as tfds

    image_key, label_key = builder.info.supervised_keys or (None, None)
    label = builder.info.features[label_key] if label_key else None
    if not isinstance(label, tfds.features.ClassLabel) or not isinstance(
        builder.info.features[image_key], tfds.features.Image
    ):
        raise ValueError(
            f"TFDS dataset '{name}' is not image classification (supervised keys "
            f"{builder.info.supervised_keys}); expected (Image, ClassLabel)"
        )
    # Mocked builders (tfds.testing.mock_data) know no splits: assume the usual.
    splits = set(builder.info.splits) or {"train", "test"}
    if "train" not in splits:
        raise ValueError(f"TFDS dataset '{name}' has no 'train' split: {splits}")

    variable_size = None in builder.info.features[image_key].shape[:2]
    if variable_size and image_size is None:
        raise ValueError(
            f"TFDS dataset '{name}' has images of varying size; pass image_size "
            "(CLI --image-size) to resize them"
        )

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = builder.as_dataset(split=split, as_supervised=True)
        if variable_size:
            ds = ds.map(lambda im, lab: (_resize_uint8(im, image_size), lab))
        images, labels = tfds.as_numpy(ds.batch(2**31 - 1).get_single_element())
        return images, labels.astype(np.int64)

    x, y = read("train")
    test = read("test") if "test" in splits else None
    return RawData(x, y, list(label.names), test=test)


def _tfds_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name.replace(":", "/"), data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
        raise ValueError(
            f"unknown TFDS dataset '{name}'; close matches: {close or 'none'} "
            "(tensorflow_datasets.list_builders() lists all)"
        ) from None


def _download_and_prepare(builder, name: str) -> None:
    """Downloads when a host answers (TFDS tries its GCS mirror first, then the
    dataset's own URLs); on failure removes what the attempt wrote and raises."""
    # Probe only before TFDS' own download (tfds.testing.mock_data makes it a no-op).
    tfds_own = type(builder).download_and_prepare.__module__.startswith(
        "tensorflow_datasets.core"
    )
    reason = _unreachable([TFDS_GCS_URL]) if tfds_own else None
    if reason:
        urls = list(builder.url_infos or ())  # from the dataset's checksums file
        reason = _unreachable(urls) if urls else reason
    if reason is None:
        root = Path(builder.data_dir_root)
        watched = [root, root / "downloads", root / "downloads" / "extracted"]
        watched += [root / "downloads" / builder.name, root / builder.name]
        watched += [p for p in Path(builder.data_dir).parents if root in p.parents]
        before = {d: set(d.iterdir()) if d.is_dir() else None for d in watched}
        try:
            builder.download_and_prepare()
            return
        except Exception as err:  # any network/IO error: tell how to fix it offline
            _remove_new(root, before)
            if isinstance(err, ImportError):
                raise
            reason = " ".join(f"{type(err).__name__}: {err}".split())
    full = name.replace(":", "/")
    raise ValueError(
        f"TFDS dataset '{name}' is not prepared in data_dir {builder.data_dir_root} "
        f"and cannot be downloaded ({reason}). On a connected machine run `python3 "
        f"-c \"import tensorflow_datasets as tfds; tfds.builder('{full}')"
        f'.download_and_prepare()"` (or `tfds build {full}`), then copy '
        f"~/tensorflow_datasets/{builder.name} into {builder.data_dir_root}, or pass "
        "the folder that holds it with --data-dir (data_dir=)."
    )


def _unreachable(urls: list[str], timeout: float = 3.0) -> str | None:
    """Why the first URL whose host (or proxy) does not accept a connection within
    ``timeout`` seconds cannot be reached ("host:port: reason"); None if all can."""
    import socket
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies()
    seen = set()
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            parts = urllib.parse.urlsplit(proxy)
        address = (
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
        )
        if address in seen:
            continue
        seen.add(address)
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError as err:
            return f"{address[0]}:{address[1]}: {err.strerror or err}"
    return None


def _remove_new(root: Path, before: dict[Path, set[Path] | None]) -> None:
    """Removes what appeared in the watched directories since ``before`` (and
    ``root`` itself when it did not exist)."""
    if before[root] is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for directory, entries in reversed(before.items()):
        if entries is None or not directory.is_dir():
            continue
        for path in set(directory.iterdir()) - entries:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def _resize_uint8(image, size: tuple[int, int]):
    import tensorflow as tf

    resized = tf.image.resize(image, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


# --- folder ----------------------------------------------------------------------


def load_folder(
    directory: str, *, image_size: tuple[int, int] | None = None
) -> RawData:
    """Loads ``DIR/CLASS/IMAGE`` files with Keras' image utilities.

    Class names are the sorted subfolder names. Files that are not readable images
    are skipped, with one warning per dataset that counts them and names the first;
    a class folder left without images is an error. Images are converted to RGB, or
    kept grayscale when the first image is grayscale; they are resized to
    ``image_size`` when given, and must otherwise all have the first one's size.
    """
    root = _existing_dir(directory, "folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise ValueError(
            f"folder source '{directory}' has no class subfolders; expected "
            "DIR/CLASS_NAME/IMAGE files"
        )
    files = {d.name: sorted(filter(_is_data_file, d.rglob("*"))) for d in class_dirs}
    reader = _ImageReader(directory, image_size)
    images, labels, empty = [], [], []
    for label, (name, paths) in enumerate(files.items()):
        arrays = [a for a in map(reader.read, paths) if a is not None]
        if not arrays:
            empty.append(name)
        images += arrays
        labels += [label] * len(arrays)
    skipped = len(reader.skipped)
    example = f", e.g. {reader.skipped[0]}" if skipped else ""
    if empty:
        raise ValueError(
            f"folder source '{directory}' has no readable image in class folders "
            f"{', '.join(map(repr, empty))} ({skipped} unreadable files{example}); "
            "expected DIR/CLASS_NAME/IMAGE files"
        )
    if skipped:
        warnings.warn(
            f"folder source '{directory}': skipped {skipped} unreadable "
            f"file{'s' if skipped > 1 else ''}{example}",
            stacklevel=4,  # the caller of data_pipelines.load
        )
    return RawData(np.stack(images), np.array(labels, np.int64), list(files))


class _ImageReader:
    """Reads image files as uint8 arrays of one color mode and size; records the
    files it cannot read (``skipped``: "CLASS/FILE: reason") instead of raising."""

    def __init__(self, directory: str, image_size: tuple[int, int] | None) -> None:
        self.root = Path(directory).expanduser()
        self.image_size = image_size
        self.color_mode: str | None = None
        self.size: tuple[int, int] | None = None
        self.skipped: list[str] = []

    def read(self, path: Path) -> np.ndarray | None:
        import keras

        try:
            if self.color_mode is None:
                mode = keras.utils.load_img(path).mode
                self.color_mode = "grayscale" if mode in ("1", "L", "I") else "rgb"
            image = keras.utils.load_img(
                path, color_mode=self.color_mode, target_size=self.image_size
            )
            array = keras.utils.img_to_array(image, dtype="uint8")
        except OSError as err:  # PIL's UnidentifiedImageError is an OSError
            # PIL ends its message with the file (a path, or Keras' BytesIO).
            reason = re.sub(r" (<[^>]*>|'[^']*')$", "", str(err))
            reason = reason or type(err).__name__
            self.skipped.append(f"{path.relative_to(self.root)}: {reason}")
            return None
        if self.size is None:
            self.size = array.shape[:2]
        if array.shape[:2] != self.size:
            raise ValueError(
                f"folder source '{self.root}': {path} is "
                f"{array.shape[0]}x{array.shape[1]} but earlier images are "
                f"{self.size[0]}x{self.size[1]}; pass image_size (CLI --image-size) "
                "to resize them all"
            )
        return array


def _is_data_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")


def _existing_dir(directory: str, scheme: str) -> Path:
    root = Path(directory).expanduser()
    if root.is_file():
        raise ValueError(
            f"{scheme} source '{directory}' is a file; pass the directory holding it"
        )
    if not root.is_dir():
        where = (
            ""
            if root.is_absolute()
            else f" (looked in {Path.cwd().joinpath(root).resolve()}: a relative path "
            "starts at the current directory)"
        )
        raise ValueError(
            f"{scheme} source directory '{directory}' does not exist{where}"
        )
    if not any(root.iterdir()):
        raise ValueError(f"{scheme} source directory '{directory}' is empty")
    return root


# --- CSV -------------------------------------------------------------------------


def load_csv(path: str, label_column: str | None, regression: bool = False) -> RawData:
    """Reads a table; ``label_column`` holds the classes (or, with ``regression``,
    numeric targets), the rest are features.

    Numeric columns stay numeric (empty cells are missing values; ``inf`` is
    refused); non-numeric columns are categorical when they have at most 50 distinct
    values, otherwise they are rejected. A numeric label column with more than 50
    distinct values that cannot be classes (fractions, or a value seen only once)
    is refused as a likely regression target.
    """
    frame = _read_csv(path)
    columns = ", ".join(map(str, frame.columns))
    if label_column is None:
        raise ValueError(
            f"csv source '{path}' needs a label column: pass --label-column NAME "
            f"(label_column=) with one of its columns: {columns}"
        )
    if label_column not in frame.columns:
        raise ValueError(
            f"csv source '{path}': label column {label_column!r} not found; "
            f"columns: {columns} (pass label_column=, CLI --label-column)"
        )
    labels = frame.pop(label_column)
    if labels.isna().any():
        raise ValueError(f"csv source '{path}': label column has missing values")
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) and (
            values.nunique() > MAX_CATEGORIES
        ):
            raise ValueError(
                f"csv source '{path}': column '{column}' is not numeric and has "
                f"{values.nunique()} distinct values (e.g. {values.iloc[0]!r}); "
                f"categorical columns may have at most {MAX_CATEGORIES}. Fix or "
                "drop the column."
            )
    _refuse_infinite(frame, f"csv source '{path}'")
    if regression:
        targets = _targets(labels, label_column, f"csv source '{path}'")
        return RawData(frame, targets, [str(label_column)], task="tabular")
    if _looks_like_regression(labels):
        examples = ", ".join(f"{v:g}" for v in labels.iloc[:3])
        raise ValueError(
            f"csv source '{path}': label column '{label_column}' holds "
            f"{labels.nunique()} distinct numbers (e.g. {examples}), which looks "
            "like a regression target, not classes; pass --task regression "
            "(regression=True), or name a column of classes with --label-column; "
            f"columns: {columns}"
        )
    values = labels.to_numpy()
    if not pd.api.types.is_numeric_dtype(labels):
        values = values.astype(str)
    classes, ids = np.unique(values, return_inverse=True)
    names = [str(c) for c in classes]
    return RawData(frame, ids.astype(np.int64), names, task="tabular")


def _read_csv(path: str) -> pd.DataFrame:
    """The table, or a ValueError naming the file when it has no columns or rows."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"csv source file '{path}' does not exist")
    try:
        frame = pd.read_csv(file)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"csv source '{path}' is empty (no header line); expected a header line "
            "of column names, then one line per sample"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise ValueError(f"csv source '{path}' cannot be parsed: {reason}") from None
    if frame.empty:
        raise ValueError(
            f"csv source '{path}' has columns {', '.join(map(str, frame.columns))} "
            "but no rows; add one line per sample"
        )
    return frame


def _refuse_infinite(frame: pd.DataFrame, where: str, csv: bool = True) -> None:
    """A ValueError naming the columns with inf/-inf and the rows that hold them
    (the first as a line of the csv file, or as a row index of an array)."""
    numeric = frame.select_dtypes("number")
    infinite = numeric.isin([np.inf, -np.inf])
    rows = infinite.any(axis=1)
    if not rows.any():
        return
    counts = infinite.sum()
    columns = ", ".join(
        f"{column} ({_rows(n)})" for column, n in counts[counts > 0].items()
    )
    first = frame.index.get_loc(rows.idxmax())
    first = f"line {first + 2}" if csv else f"row {first}"  # lines: 1-based, header
    n = int(rows.sum())
    empty = "an empty cell" if csv else "NaN"
    raise ValueError(
        f"{where}: {_rows(n)} hold{'s' if n == 1 else ''} inf or -inf in column(s) "
        f"{columns}, first on {first}; fix or remove those rows ({empty} is a "
        "missing value, filled with the training mean)"
    )


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


def _looks_like_regression(labels: pd.Series) -> bool:
    """Numbers with more than MAX_CATEGORIES distinct values that cannot be class
    ids: fractions, or a value that occurs once (no stratified split can hold it)."""
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        return False
    if labels.nunique() <= MAX_CATEGORIES:
        return False
    fractional = (labels != np.round(labels)).any()
    return bool(fractional or labels.value_counts().min() < 2)


def _targets(values: pd.Series, name: str, where: str) -> np.ndarray:
    """Numeric regression targets as float32, or a ValueError naming a bad value."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna() | ~np.isfinite(numbers)]
    if len(bad):
        raise ValueError(
            f"{where}: regression target '{name}' must be finite numbers; row "
            f"{bad.index[0]} has {bad.iloc[0]!r}. Fix the value, or train a "
            "classifier (task 'classification') on class labels."
        )
    return numbers.to_numpy(np.float32)
