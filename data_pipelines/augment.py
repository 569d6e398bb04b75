"""Data augmentation assembled by name from Keras preprocessing layers.

An augmentation spec is a list of names with an optional strength, or the same as a
comma-separated string: ``["flip", "rotate:0.05"]`` or ``"flip,rotate:0.05"``. Every
name maps to a Keras layer factory in :data:`AUGMENTATIONS`; nothing is hand-written.

Per-image augmentations run on batches of float images (``value_range`` gives their
range, ``(0, 1)`` after the pipeline's rescaling). ``mixup`` and ``cutmix`` mix pairs of
images *and* their one-hot labels, so they run in the ``tf.data`` pipeline on
``(images, labels)`` batches and cannot sit inside a model.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers, ops

Factory = Callable[[float, int | None, tuple[float, float]], keras.layers.Layer]


@dataclass(frozen=True)
class Augmentation:
    """One named augmentation.

    Attributes:
        factory: ``(strength, seed, value_range) -> keras layer``.
        default: Strength used when the spec gives none (None: takes no strength).
        bounds: Allowed strength interval ``(low, high]``.
        meaning: What the strength means, for docs and error messages.
        needs_rgb: True when the layer only works on 3-channel images.
        mixes_labels: True for mixup/cutmix, which act on (images, one-hot labels).
    """

    factory: Factory
    default: float | None
    bounds: tuple[float, float] = (0.0, 1.0)
    meaning: str = ""
    needs_rgb: bool = False
    mixes_labels: bool = False


def _jitter(s: float, seed: int | None, vr: tuple[float, float]) -> layers.Layer:
    # Saturation factor 0.5 is the identity, so strength s spans 0.5 -/+ s/2.
    return layers.RandomColorJitter(
        value_range=vr,
        brightness_factor=s,
        contrast_factor=s,
        saturation_factor=(0.5 - s / 2, 0.5 + s / 2),
        hue_factor=s / 2,
        seed=seed,
    )


AUGMENTATIONS: dict[str, Augmentation] = {
    # Keras RandomCrop draws one offset per call, i.e. per *batch* in a batched
    # pipeline; pad-and-crop per image is a nearest-neighbour translation with zero
    # fill, which RandomTranslation draws per image.
    "crop": Augmentation(
        lambda s, seed, vr: layers.RandomTranslation(
            s, s, fill_mode="constant", interpolation="nearest", seed=seed
        ),
        0.125,
        meaning="pad-and-crop shift, fraction of height/width",
    ),
    "flip": Augmentation(
        lambda s, seed, vr: layers.RandomFlip("horizontal", seed=seed),
        None,
        meaning="horizontal flip with probability 0.5 (takes no strength)",
    ),
    "rotate": Augmentation(
        lambda s, seed, vr: layers.RandomRotation(s, seed=seed),
        0.05,
        meaning="max rotation, fraction of a full turn",
    ),
    "zoom": Augmentation(
        lambda s, seed, vr: layers.RandomZoom(s, seed=seed),
        0.1,
        bounds=(0.0, 0.9),
        meaning="max zoom in/out, fraction of size",
    ),
    "translate": Augmentation(
        lambda s, seed, vr: layers.RandomTranslation(s, s, seed=seed),
        0.1,
        meaning="max shift, fraction of height/width",
    ),
    "shear": Augmentation(
        lambda s, seed, vr: layers.RandomShear(s, s, seed=seed),
        0.1,
        meaning="max shear factor along x and y",
    ),
    "brightness": Augmentation(
        lambda s, seed, vr: layers.RandomBrightness(s, value_range=vr, seed=seed),
        0.2,
        meaning="max brightness shift, fraction of the value range",
    ),
    "contrast": Augmentation(
        lambda s, seed, vr: layers.RandomContrast(s, value_range=vr, seed=seed),
        0.2,
        meaning="contrast factor drawn in [1 - s, 1 + s]",
    ),
    "saturation": Augmentation(
        lambda s, seed, vr: layers.RandomSaturation(
            (0.5 - s / 2, 0.5 + s / 2), value_range=vr, seed=seed
        ),
        0.4,
        meaning="saturation change, 1 = from grayscale to fully saturated",
        needs_rgb=True,
    ),
    "hue": Augmentation(
        lambda s, seed, vr: layers.RandomHue(s, value_range=vr, seed=seed),
        0.1,
        meaning="max hue shift, 1 = the largest Keras allows",
        needs_rgb=True,
    ),
    "jitter": Augmentation(
        _jitter,
        0.2,
        meaning="color jitter: brightness, contrast, saturation and hue at once",
        needs_rgb=True,
    ),
    "grayscale": Augmentation(
        lambda s, seed, vr: layers.RandomGrayscale(s, seed=seed),
        0.2,
        meaning="probability of converting an image to gray",
        needs_rgb=True,
    ),
    "cutout": Augmentation(
        lambda s, seed, vr: layers.RandomErasing(
            (s, s), fill_value=0.0, value_range=vr, seed=seed
        ),
        0.5,
        meaning="probability of erasing one random rectangle (random erasing)",
    ),
    "randaugment": Augmentation(
        lambda s, seed, vr: layers.RandAugment(value_range=vr, factor=s, seed=seed),
        0.5,
        meaning="RandAugment magnitude (2 random ops per image)",
        needs_rgb=True,
    ),
    "mixup": Augmentation(
        lambda s, seed, vr: layers.MixUp(alpha=s, seed=seed),
        0.2,
        bounds=(0.0, 10.0),
        meaning="Beta(alpha, alpha) mixing of image and label pairs",
        mixes_labels=True,
    ),
    "cutmix": Augmentation(
        lambda s, seed, vr: layers.CutMix(s, seed=seed),
        1.0,
        meaning="max patch-area factor pasted between image and label pairs",
        mixes_labels=True,
    ),
}


# Augmentations that RandomAffine fuses into one warp when two or more are adjacent.
GEOMETRIC = ("flip", "rotate", "zoom", "translate", "shear")


@keras.saving.register_keras_serializable(package="data_pipelines")
class RandomAffine(keras.layers.Layer):
    """Horizontal flip, rotation, zoom, translation and shear as one image warp.

    Keras' RandomFlip/Rotation/Zoom/Translation/Shear each warp the whole batch, so a
    chain of them costs one warp per layer. Keras has no fused layer: this one draws
    the same parameters as those layers (with their bilinear/reflect defaults),
    composes them into one matrix and warps once with
    ``keras.ops.image.affine_transform``: 2.5x less work for flip+rotate+zoom+
    translate, which the pipeline's throughput target (P2b) needs.

    Args:
        flip: Mirror half of the images horizontally.
        rotation: Max angle as a fraction of a full turn (RandomRotation's factor).
        zoom: Max zoom in/out as a fraction (RandomZoom's factor).
        translation: Max shift as a fraction of height/width (RandomTranslation's).
        shear: Max shear factor in x and y (RandomShear's).
        seed: Seed of the random draws.
    """

    def __init__(
        self,
        flip: bool = False,
        rotation: float = 0.0,
        zoom: float = 0.0,
        translation: float = 0.0,
        shear: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flip, self.rotation, self.zoom = flip, rotation, zoom
        self.translation, self.shear, self.seed = translation, shear, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        shape = ops.shape(images)
        height, width = ops.cast(shape[-3], "float32"), ops.cast(shape[-2], "float32")
        # One draw for all parameters: each separate draw costs as much as a warp.
        r = keras.random.uniform((7, shape[0]), -1.0, 1.0, seed=self.generator)
        angle = r[0] * (2 * math.pi * self.rotation)
        zoom = 1.0 + r[1] * self.zoom
        shear_x, shear_y = r[2] * self.shear, r[3] * self.shear
        flip = ops.where(r[6] < 0, -1.0, 1.0) if self.flip else 1.0
        cos, sin = ops.cos(angle), ops.sin(angle)
        # Output -> input pixel map: rotation @ shear @ zoom @ flip about the centre,
        # plus the shift.
        a00, a01 = (cos - sin * shear_y) * zoom * flip, (cos * shear_x - sin) * zoom
        a10, a11 = (sin + cos * shear_y) * zoom * flip, (sin * shear_x + cos) * zoom
        cx, cy = (width - 1) / 2, (height - 1) / 2
        b0 = cx - a00 * cx - a01 * cy + r[4] * self.translation * width
        b1 = cy - a10 * cx - a11 * cy + r[5] * self.translation * height
        zero = ops.zeros_like(a00)
        transform = ops.stack([a00, a01, b0, a10, a11, b1, zero, zero], axis=1)
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="reflect"
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "flip": self.flip,
            "rotation": self.rotation,
            "zoom": self.zoom,
            "translation": self.translation,
            "shear": self.shear,
            "seed": self.seed,
        }


def augmentations() -> list[str]:
    """Returns the sorted names that an augmentation spec may use."""
    return sorted(AUGMENTATIONS)


def parse_augment(spec: str | Iterable[str] | None) -> list[tuple[str, float | None]]:
    """Parses and validates an augmentation spec.

    Args:
        spec: Names with optional ``:strength``, as a list or a comma-separated
            string; None or empty means no augmentation.

    Returns:
        ``(name, strength)`` pairs in the given order, with defaults filled in.

    Raises:
        ValueError: Unknown name, repeated name, or a strength that is not a number
            inside the augmentation's bounds.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    parsed: list[tuple[str, float | None]] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, _, value = item.partition(":")
        name = name.strip().lower()
        if name not in AUGMENTATIONS:
            close = difflib.get_close_matches(name, AUGMENTATIONS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"unknown augmentation '{name}'; allowed: "
                f"{', '.join(augmentations())}{hint}"
            )
        if name in (n for n, _ in parsed):
            raise ValueError(f"augmentation '{name}' is given twice in {spec!r}")
        parsed.append((name, _strength(name, value.strip())))
    return parsed


def _strength(name: str, text: str) -> float | None:
    aug = AUGMENTATIONS[name]
    if aug.default is None:
        if text:
            raise ValueError(
                f"augmentation '{name}' takes no strength; received '{name}:{text}'"
            )
        return None
    if not text:
        return aug.default
    low, high = aug.bounds
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low < value <= high:  # also rejects nan
        raise ValueError(
            f"bad strength for augmentation '{name}': '{text}'; expected a number "
            f"in ({low:g}, {high:g}] ({aug.meaning}), e.g. '{name}:{aug.default:g}'"
        )
    return value


def augmentation_layers(
    parsed: Sequence[tuple[str, float | None]],
    seed: int | None = None,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    channels: int | None = None,
) -> list[keras.layers.Layer]:
    """Builds the Keras layers of parsed augmentations, in order.

    Each augmentation is its Keras layer, except that two or more adjacent geometric
    ones (flip, rotate, zoom, translate, shear) become one :class:`RandomAffine`.

    Args:
        parsed: Output of :func:`parse_augment`.
        seed: Base seed; the i-th layer gets ``seed + i`` (None: unseeded).
        value_range: Range of the image values the layers will see.
        channels: Channels of the images, when known, to reject color-only
            augmentations on grayscale images early.

    Returns:
        The layers.
    """
    for name, _ in parsed:
        if AUGMENTATIONS[name].needs_rgb and channels not in (None, 3):
            raise ValueError(
                f"augmentation '{name}' needs RGB images; the images have "
                f"{channels} channel(s). Pass channels=3 (CLI --channels 3)."
            )
    groups: list[list[tuple[str, float | None]]] = []
    for item in parsed:
        if groups and item[0] in GEOMETRIC and groups[-1][-1][0] in GEOMETRIC:
            groups[-1].append(item)
        else:
            groups.append([item])
    out = []
    for i, group in enumerate(groups):
        layer_seed = None if seed is None else seed + i
        if len(group) > 1:
            p = dict(group)
            out.append(
                RandomAffine(
                    flip="flip" in p,
                    rotation=p.get("rotate", 0.0),
                    zoom=p.get("zoom", 0.0),
                    translation=p.get("translate", 0.0),
                    shear=p.get("shear", 0.0),
                    seed=layer_seed,
                )
            )
        else:
            ((name, strength),) = group
            factory = AUGMENTATIONS[name].factory
            out.append(factory(strength, layer_seed, tuple(value_range)))
    return out


def augmentation_model(
    spec: str | Iterable[str],
    seed: int | None = None,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    input_shape: tuple[int, ...] | None = None,
) -> keras.Sequential:
    """Returns the per-image augmentations of ``spec`` as a ``keras.Sequential``.

    The model is active only in training (Keras random layers are the identity at
    inference), so it can be the first block of a classifier.

    Args:
        spec: Augmentation spec (see :func:`parse_augment`).
        seed: Base seed for reproducible draws.
        value_range: Range of the input values, ``(0, 1)`` after rescaling.
        input_shape: Optional ``(height, width, channels)`` to build the model and
            check that color augmentations get RGB images.

    Raises:
        ValueError: For a bad spec, or for mixup/cutmix, which need labels.
    """
    parsed = parse_augment(spec)
    mixers = [name for name, _ in parsed if AUGMENTATIONS[name].mixes_labels]
    if mixers:
        raise ValueError(
            f"augmentation '{mixers[0]}' mixes labels and cannot run inside a model; "
            "use it through data_pipelines.load(augment=...)"
        )
    channels = input_shape[-1] if input_shape else None
    model = keras.Sequential(
        augmentation_layers(parsed, seed, value_range=value_range, channels=channels),
        name="augmentation",
    )
    if input_shape is not None:
        model.build((None, *input_shape))
    return model
