"""``load(source) -> Splits``: any supported source as ready-to-train tf.data splits.

Each split is ``raw uint8 batch -> preprocessing_model(info)`` (train, val and test
alike), then, on the training split only, the augmentations. The same
:func:`preprocessing_model` rebuilt from ``DatasetInfo.from_dict(json)`` gives a serving
graph the exact training-time preprocessing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split

from data_pipelines import augment as aug
from data_pipelines import sources

AUTOTUNE = tf.data.AUTOTUNE
RESIZE_MODES = ("resize", "pad")


@dataclass
class DatasetInfo:
    """What a model and an exporter need to know about a loaded dataset.

    Attributes:
        source: The source string (``"digits"``, ``"idx:DIR"``, ... or ``"numpy"``).
        num_classes: Number of classes (regression: 1, the model's output units).
        class_names: Name of each class id (regression: ``[target name]``).
        input_shape: Shape of one model input, after resize/channel conversion.
        raw_shape: Shape of one raw sample as the source yields it.
        sizes: Number of samples in ``train``, ``val`` and ``test``.
        mean: Per-channel mean of the training inputs (normalize=True), else None.
        std: Per-channel standard deviation, likewise.
        label_mode: ``"int"`` class ids, ``"onehot"`` when mixup/cutmix is on, or
            ``"float"`` regression targets.
        task: ``"image"`` or ``"tabular"``.
        resize: How images reach ``input_shape``: ``"resize"`` or ``"pad"``.
        tabular: For tabular data: ``numeric`` columns, ``categories`` per
            categorical column, ``feature_names`` of the encoded vector, and the
            training ``mean`` / ``std`` per encoded feature.
        target: For regression: the target's ``name`` and its training ``mean`` and
            ``std`` (a model can predict standardized values and undo it).
    """

    source: str
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]
    raw_shape: tuple[int, ...]
    sizes: dict[str, int]
    mean: list[float] | None = None
    std: list[float] | None = None
    label_mode: str = "int"
    task: str = "image"
    resize: str = "resize"
    tabular: dict[str, Any] | None = None
    target: dict[str, Any] | None = None

    @property
    def regression(self) -> bool:
        """Whether the labels are regression targets rather than class ids."""
        return self.label_mode == "float"

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serializable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        """Rebuilds the info from :meth:`to_dict` output (e.g. read from JSON)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
        kwargs["raw_shape"] = tuple(kwargs["raw_shape"])
        return cls(**kwargs)


@dataclass
class Splits:
    """Batched ``tf.data.Dataset`` s of ``(float32 inputs, labels)`` and their info.

    Labels are int32 class ids, float32 one-hot rows (mixup/cutmix) or float32
    regression targets.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    info: DatasetInfo = field(repr=False)


@keras.saving.register_keras_serializable(package="data_pipelines")
class ChannelConversion(keras.layers.Layer):
    """Converts images to ``channels``: 1 -> 3 by repetition, 3 -> 1 by luma.

    Keras has no layer for this; a ``Lambda`` would not reload safely in a saved
    serving model, so this is a tiny registered layer instead.
    """

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, images):
        if images.shape[-1] == self.channels:
            return images
        if self.channels == 3:
            return keras.ops.repeat(images, 3, axis=-1)
        return keras.ops.image.rgb_to_grayscale(images)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


def preprocessing_model(info: DatasetInfo) -> keras.Sequential:
    """The deterministic preprocessing from raw batches to model inputs.

    For images: ``(None, *raw_shape)`` uint8 -> Rescaling(1/255) -> Resizing or
    centered zero padding to ``input_shape`` -> channel conversion ->
    Normalization(mean, std**2) when ``info.mean`` is set. Padding comes before
    normalization so that it is black, and normalization last so that its
    statistics are those of the model inputs.

    For tabular data: ``(None, n_features)`` encoded feature vectors (numeric
    columns as they are, categorical columns one-hot, in
    ``info.tabular["feature_names"]`` order) -> standardization with the training
    statistics (one-hot columns pass unchanged).

    Args:
        info: The dataset info, e.g. ``DatasetInfo.from_dict(json.load(f))``.

    Returns:
        An unseeded, weight-free ``keras.Sequential`` named ``preprocessing``.
    """
    model = _pre_normalization_model(info)
    mean, std = (
        (info.tabular["mean"], info.tabular["std"])
        if info.task == "tabular"
        else (info.mean, info.std)
    )
    if mean is not None:
        model.add(
            keras.layers.Normalization(
                mean=mean, variance=np.square(std).tolist(), name="normalization"
            )
        )
    return model


def _pre_normalization_model(info: DatasetInfo) -> keras.Sequential:
    model = keras.Sequential(name="preprocessing")
    model.add(keras.Input(info.raw_shape))
    if info.task == "tabular":
        return model
    (h, w, c), (height, width, channels) = info.raw_shape, info.input_shape
    model.add(keras.layers.Rescaling(1.0 / 255, name="rescaling"))
    if (h, w) != (height, width) and info.resize == "pad":
        top, left = (height - h) // 2, (width - w) // 2
        padding = ((top, height - h - top), (left, width - w - left))
        model.add(keras.layers.ZeroPadding2D(padding, name="padding"))
    elif (h, w) != (height, width):
        model.add(keras.layers.Resizing(height, width, antialias=True, name="resizing"))
    if c != channels:
        model.add(ChannelConversion(channels, name="channel_conversion"))
    return model


def load(
    source: str | tuple[np.ndarray, np.ndarray],
    *,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    batch_size: int = 64,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    augment: str | Iterable[str] = (),
    normalize: bool = False,
    seed: int = 0,
    deterministic: bool = False,
    cache: bool | str = True,
    data_dir: str | None = None,
    label_column: str | None = None,
    resize: str = "resize",
    regression: bool = False,
) -> Splits:
    """Loads a source as batched, preprocessed train/val/test datasets.

    Args:
        source: ``"digits"``, ``"idx:DIR"``, ``"tfds:NAME[:CONFIG]"``,
            ``"folder:DIR"``, ``"csv:FILE"``, or numpy arrays ``(x, y)``.
        image_size: Model input ``(height, width)`` (an int means square); None
            keeps the source's size.
        channels: 1 or 3 to convert images; None keeps the source's channels.
        batch_size: Batch size of all splits.
        val_fraction: Stratified fraction of the training data held out, in (0, 1)
            (a plain random fraction for regression).
        test_fraction: Likewise, the test fraction for sources without a test split.
        augment: Augmentation spec for the training split, e.g. ``"flip,rotate:0.05"``
            (see ``augmentations()``).
        normalize: Standardize each channel with training-split statistics.
        seed: Seed of the validation split, the shuffling and the augmentations.
        deterministic: Same batches for the same seed, at some cost in speed.
        cache: Cache preprocessed samples in memory (True), in files with this path
            prefix (str), or not at all (False).
        data_dir: TFDS data directory.
        label_column: Label column of a csv source.
        resize: ``"resize"`` (interpolate) or ``"pad"`` (center with black borders)
            to reach ``image_size``.
        regression: Keep the labels as float32 targets (csv ``label_column`` or
            numpy ``y``) instead of class ids.

    Returns:
        The three splits and their :class:`DatasetInfo`.

    Raises:
        ValueError: For a bad source, bad data, or bad arguments; the message names
            the value and what is allowed.
    """
    for name, value in (
        ("val_fraction", val_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1); received {value}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; received {resize!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None; received {channels!r}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    parsed_augment = aug.parse_augment(augment)

    if isinstance(source, str):
        spec = sources.parse_source(source)
        raw = sources.load_source(
            spec,
            data_dir=data_dir,
            label_column=label_column,
            image_size=image_size,
            regression=regression,
        )
        source_name = str(spec)
    else:
        raw = sources.load_arrays(*source, regression=regression)
        source_name = "numpy"
    mixes = any(aug.AUGMENTATIONS[n].mixes_labels for n, _ in parsed_augment)
    if regression and mixes:
        raise ValueError(
            "mixup and cutmix mix class labels; they do not apply to regression"
        )
    if not regression and len(raw.class_names) < 2:
        raise ValueError(
            f"source '{source_name}' has {len(raw.class_names)} class(es) "
            f"{raw.class_names}; classification needs at least 2"
        )
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = _split(
        raw, val_fraction, test_fraction, seed, stratify=not regression
    )
    sizes = {"train": len(y_train), "val": len(y_val), "test": len(y_test)}
    info = DatasetInfo(
        source=source_name,
        num_classes=len(raw.class_names),
        class_names=list(raw.class_names),
        input_shape=(),
        raw_shape=(),
        sizes=sizes,
        label_mode="float" if regression else "onehot" if mixes else "int",
        task=raw.task,
        resize=resize,
    )
    if regression:
        std = float(np.std(y_train))
        info.target = {
            "name": raw.class_names[0],
            "mean": float(np.mean(y_train)),
            "std": std if std > 0 else 1.0,
        }
    if raw.task == "tabular":
        if image_size or channels or parsed_augment or normalize:
            raise ValueError(
                f"image_size, channels, augment and normalize apply to images; "
                f"source '{source_name}' is tabular (always standardized)"
            )
        info.tabular = _tabular_stats(x_train)
        x_train, x_val, x_test = (
            encode_table(x, info) for x in (x_train, x_val, x_test)
        )
        info.raw_shape = info.input_shape = x_train.shape[1:]
    else:
        info.raw_shape = tuple(int(d) for d in x_train.shape[1:])
        h, w, c = info.raw_shape
        height, width = image_size or (h, w)
        if resize == "pad" and (height < h or width < w):
            raise ValueError(
                f"resize='pad' cannot shrink {h}x{w} images to {height}x{width}; "
                "use resize='resize'"
            )
        if channels not in (None, c) and c not in (1, 3):
            raise ValueError(f"cannot convert {c}-channel images to {channels}")
        info.input_shape = (height, width, channels or c)
        if normalize:
            info.mean, info.std = _channel_stats(x_train, info, batch_size)

    preprocess = preprocessing_model(info)
    augment_layers = aug.augmentation_layers(
        parsed_augment,
        seed,
        value_range=_value_range(info),
        channels=info.input_shape[-1],
    )

    def make(x, y, split: str, layers=()) -> tf.data.Dataset:
        return _dataset(
            x,
            y,
            preprocess=preprocess,
            augment_layers=layers,
            num_classes=info.num_classes if mixes else None,
            batch_size=batch_size,
            seed=seed if split == "train" else None,
            deterministic=deterministic,
            cache=f"{cache}_{split}" if isinstance(cache, str) else cache,
        )

    return Splits(
        train=make(x_train, y_train, "train", augment_layers),
        val=make(x_val, y_val, "val"),
        test=make(x_test, y_test, "test"),
        info=info,
    )


def _split(
    raw: sources.RawData,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: bool = True,
):
    """Splits stratified by class (plain random ones for regression targets): test
    with random_state=0 (unless the source has one), then val from the rest with
    ``seed``."""
    x, y = raw.x, raw.y
    if raw.test is None:
        x, x_test, y, y_test = _held_out(x, y, test_fraction, 0, stratify)
    else:
        x_test, y_test = raw.test
    x_train, x_val, y_train, y_val = _held_out(x, y, val_fraction, seed, stratify)
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def _held_out(x, y, fraction: float, random_state: int, stratify: bool):
    index = np.arange(len(y))
    try:
        keep, held = train_test_split(
            index,
            test_size=fraction,
            stratify=y if stratify else None,
            random_state=random_state,
        )
    except ValueError as err:
        counts = f" with class counts {np.bincount(y).tolist()}" if stratify else ""
        raise ValueError(
            f"cannot hold out a{' stratified' if stratify else ''} {fraction:g} of "
            f"{len(y)} samples{counts}: {err}"
        ) from None
    take = (lambda i: x.iloc[i]) if isinstance(x, pd.DataFrame) else (lambda i: x[i])
    return take(keep), take(held), y[keep], y[held]


def _channel_stats(x, info: DatasetInfo, batch_size: int):
    """Mean/std per channel of the training inputs, via Keras Normalization.adapt."""
    norm = keras.layers.Normalization()
    pre = _pre_normalization_model(info)
    norm.adapt(tf.data.Dataset.from_tensor_slices(x).batch(1024).map(pre))
    mean = np.asarray(norm.mean).reshape(-1)
    std = np.sqrt(np.asarray(norm.variance).reshape(-1))
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def _value_range(info: DatasetInfo) -> tuple[float, float]:
    """Range of preprocessed values that color augmentations clip to."""
    if info.mean is None:
        return (0.0, 1.0)
    mean, std = np.asarray(info.mean), np.asarray(info.std)
    return float(np.min(-mean / std)), float(np.max((1 - mean) / std))


def _tabular_stats(frame: pd.DataFrame) -> dict[str, Any]:
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    categories = {
        str(c): sorted(frame[c].dropna().astype(str).unique().tolist())
        for c in frame.columns
        if c not in numeric
    }
    names = [str(c) for c in numeric]
    names += [f"{c}={v}" for c, values in categories.items() for v in values]
    mean = frame[numeric].mean().fillna(0.0).tolist()
    std = frame[numeric].std(ddof=0).fillna(1.0).replace(0.0, 1.0).tolist()
    n_onehot = len(names) - len(numeric)
    return {
        "numeric": [str(c) for c in numeric],
        "categories": categories,
        "feature_names": names,
        "mean": mean + [0.0] * n_onehot,
        "std": std + [1.0] * n_onehot,
    }


def encode_table(frame: pd.DataFrame, info: DatasetInfo) -> np.ndarray:
    """Encodes raw table rows as the feature vectors ``preprocessing_model`` takes.

    Numeric columns keep their values (missing ones become the training mean);
    categorical columns become one-hot columns over the training categories
    (unseen values give all zeros).

    Args:
        frame: Rows with the training table's feature columns.
        info: The tabular :class:`DatasetInfo` of the training data.

    Returns:
        float32 array ``(rows, len(info.tabular["feature_names"]))``.
    """
    spec = info.tabular
    frame = frame.rename(columns=str)
    numeric = frame[spec["numeric"]].astype("float64")
    numeric = numeric.fillna(dict(zip(spec["numeric"], spec["mean"], strict=False)))
    onehots = [
        pd.get_dummies(
            pd.Categorical(frame[col].astype(str), categories=values), dtype="float32"
        ).to_numpy()
        for col, values in spec["categories"].items()
    ]
    return np.concatenate([numeric.to_numpy(np.float32), *onehots], axis=1).astype(
        np.float32
    )


def _dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    preprocess: keras.Sequential,
    augment_layers: list[keras.layers.Layer],
    num_classes: int | None,
    batch_size: int,
    seed: int | None,
    deterministic: bool,
    cache: bool | str,
) -> tf.data.Dataset:
    """Raw arrays -> [cache] -> [shuffle] -> batch -> preprocess -> augment -> prefetch.

    Preprocessing and augmentation run on whole batches (vectorized). With a cache,
    preprocessing runs once, in large batches, before the cache.
    """
    labels = y.astype(np.float32 if y.dtype == np.float32 else np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, labels))
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options)
    if cache is not False:
        ds = ds.batch(1024).map(lambda a, b: (preprocess(a), b), AUTOTUNE).unbatch()
        ds = ds.cache(cache if isinstance(cache, str) else "")
        # unbatch() forgets the size; Keras needs it for steps per epoch.
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(y)))
    if seed is not None:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if cache is False:
        ds = ds.map(lambda a, b: (preprocess(a), b), AUTOTUNE)
    if num_classes is not None:
        ds = ds.map(lambda a, b: (a, tf.one_hot(b, num_classes)), AUTOTUNE)
    # Keras random layers keep their RNG state in a variable: only a sequential map
    # draws the same numbers in the same order on every run.
    calls = None if deterministic else AUTOTUNE
    for layer in augment_layers:
        ds = ds.map(_augment_fn(layer), calls)
    return ds.prefetch(AUTOTUNE)


def _augment_fn(layer: keras.layers.Layer):
    if isinstance(layer, keras.layers.MixUp | keras.layers.CutMix):

        def mix(images, labels):
            out = layer({"images": images, "labels": labels}, training=True)
            return out["images"], out["labels"]

        return mix
    return lambda images, labels: (layer(images, training=True), labels)
