"""Augmentations: names, strengths, effect on train only, use inside a model."""

import numpy as np
import pytest

import data_pipelines as dp
from data_pipelines.augment import RandomAffine

EXPECTED = [
    "brightness", "contrast", "crop", "cutmix", "cutout", "flip", "grayscale", "hue",
    "jitter", "mixup", "randaugment", "rotate", "saturation", "shear", "translate",
    "zoom",
]  # fmt: skip


def color_images(n=64, size=16):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return x, np.arange(n) % 4


def as_arrays(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_augmentations_lists_every_name_sorted():
    assert dp.augmentations() == EXPECTED


@pytest.fixture(scope="module")
def reference():
    """Batches without augmentation: same seed, so same shuffling order."""
    splits = dp.load(color_images(), augment=(), seed=3, deterministic=True)
    return {name: as_arrays(getattr(splits, name)) for name in ("train", "val", "test")}


@pytest.mark.parametrize("name", EXPECTED)
def test_each_augmentation_changes_train_only(name, reference):
    splits = dp.load(color_images(), augment=[name], seed=3, deterministic=True)
    onehot = splits.info.label_mode == "onehot"
    assert onehot == (name in ("mixup", "cutmix"))
    x_train, y_train = as_arrays(splits.train)
    assert x_train.shape == reference["train"][0].shape
    assert not np.allclose(x_train, reference["train"][0], atol=1e-3)
    if not onehot:
        np.testing.assert_array_equal(y_train, reference["train"][1])
    for split in ("val", "test"):
        x, y = as_arrays(getattr(splits, split))
        np.testing.assert_array_equal(x, reference[split][0])
        np.testing.assert_array_equal(y.argmax(1) if onehot else y, reference[split][1])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rotat", r"unknown augmentation 'rotat'; allowed: brightness, .*did you mean"),
        ("rotate:abc", r"bad strength for augmentation 'rotate': 'abc'; expected"),
        ("zoom:0.95", r"'zoom': '0.95'; expected a number in \(0, 0.9\]"),
        ("cutout:0", r"'cutout': '0'; expected a number in \(0, 1\]"),
        ("flip:0.5", "augmentation 'flip' takes no strength"),
        ("flip,flip", "augmentation 'flip' is given twice"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        dp.parse_augment(spec)


def test_parse_augment_forms_and_defaults():
    assert dp.parse_augment("flip, rotate:0.05,,zoom") == [
        ("flip", None),
        ("rotate", 0.05),
        ("zoom", 0.1),
    ]
    assert dp.parse_augment(["MixUp:0.4"]) == [("mixup", 0.4)]
    assert dp.parse_augment(None) == dp.parse_augment("") == []


def test_augmentation_model_inside_a_model():
    model = dp.augmentation_model("flip,rotate,jitter", seed=0, input_shape=(16, 16, 3))
    # Adjacent geometric augmentations are fused into one warp.
    assert [type(layer).__name__ for layer in model.layers] == [
        "RandomAffine",
        "RandomColorJitter",
    ]
    affine = model.layers[0]
    assert (affine.flip, affine.rotation, affine.zoom) == (True, 0.05, 0.0)
    x = color_images(8)[0].astype("float32") / 255
    np.testing.assert_array_equal(model(x, training=False).numpy(), x)
    assert not np.allclose(model(x, training=True).numpy(), x)
    lone = dp.augmentation_model("rotate")
    assert [type(layer).__name__ for layer in lone.layers] == ["RandomRotation"]


def test_random_affine_flip_is_an_exact_mirror_and_serializes():
    x = color_images(32)[0].astype("float32")
    layer = RandomAffine(flip=True, seed=0)
    out = layer(x).numpy()
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(np.abs(out - x[:, :, ::-1]) < 1e-3, axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()
    clone = RandomAffine.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_fused_geometric_augmentations_change_train_only(reference):
    spec = "flip,rotate,zoom,translate,shear"
    splits = dp.load(color_images(), augment=spec, seed=3, deterministic=True)
    x_train, y_train = as_arrays(splits.train)
    assert not np.allclose(x_train, reference["train"][0], atol=1e-3)
    np.testing.assert_array_equal(y_train, reference["train"][1])
    np.testing.assert_array_equal(as_arrays(splits.val)[0], reference["val"][0])


def test_color_augmentations_need_rgb():
    with pytest.raises(ValueError, match="'jitter' needs RGB images; .* 1 channel"):
        dp.augmentation_model("jitter", input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="'hue' needs RGB images.*channels=3"):
        dp.load("digits", augment="hue")
    assert dp.load("digits", augment="hue", channels=3).info.input_shape == (8, 8, 3)


def test_label_mixers_cannot_go_inside_a_model():
    with pytest.raises(ValueError, match="'cutmix' mixes labels and cannot run inside"):
        dp.augmentation_model(["flip", "cutmix"])
