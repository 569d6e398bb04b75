"""data_pipelines.load: preprocessing, normalization, info, caching, determinism."""

import json

import keras
import numpy as np
import pytest

import data_pipelines as dp


def as_arrays(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def constant_images(n=200):
    """Image i is 4x4 of value i: the pipeline output identifies each image."""
    x = np.repeat(np.arange(n, dtype=np.uint8), 16).reshape(n, 4, 4, 1)
    return x, np.arange(n) % 2


def test_normalization_statistics_come_from_the_train_split_only():
    x, y = constant_images()
    splits = dp.load((x, y), normalize=True, batch_size=256)
    mean, std = splits.info.mean[0], splits.info.std[0]

    def recover(ds):  # raw values back from normalized inputs
        inputs, _ = as_arrays(ds)
        return np.round((inputs[:, 0, 0, 0] * std + mean) * 255)

    train, val, test = (recover(s) for s in (splits.train, splits.val, splits.test))
    assert len(train) == splits.info.sizes["train"] == 144
    # All splits map back to the exact raw values, with no overlap.
    values = np.concatenate([train, val, test])
    np.testing.assert_array_equal(np.sort(values), np.arange(200))
    # The statistics are those of the train images, not of all images ...
    assert mean == pytest.approx(train.mean() / 255, abs=1e-5)
    assert std == pytest.approx(train.std() / 255, abs=1e-5)
    # ... which differ enough that a leak would fail the lines above.
    assert abs(values.mean() - train.mean()) / 255 > 1e-3
    assert abs(values.std() - train.std()) / 255 > 1e-3
    inputs, _ = as_arrays(splits.train)
    assert inputs.mean() == pytest.approx(0, abs=1e-5)
    assert inputs.std() == pytest.approx(1, abs=1e-4)


def test_preprocessing_model_rebuilt_from_json_matches_the_pipeline(tmp_path):
    splits = dp.load("digits", image_size=(16, 16), channels=3, normalize=True)
    info = dp.DatasetInfo.from_dict(json.loads(json.dumps(splits.info.to_dict())))
    assert info == splits.info
    assert info.input_shape == (16, 16, 3) and info.raw_shape == (8, 8, 1)
    assert len(info.mean) == 3

    model = dp.preprocessing_model(info)
    path = tmp_path / "pre.keras"
    model.save(path)  # ChannelConversion must be registered to reload
    reloaded = keras.saving.load_model(path)
    assert reloaded.input_shape == (None, 8, 8, 1)
    assert reloaded.output_shape == (None, 16, 16, 3)

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, test_images = train_test_split(
        digits.images, test_size=0.2, stratify=digits.target, random_state=0
    )
    raw = np.round(test_images * 255 / 16).astype(np.uint8)[..., None]
    expected, _ = as_arrays(splits.test)
    np.testing.assert_allclose(reloaded.predict(raw, verbose=0), expected, atol=1e-4)


def test_pad_mode_centers_images_on_black():
    x, y = constant_images(40)
    x[x == 0] = 1  # no black pixel inside the images
    splits = dp.load((x, y), image_size=(8, 8), resize="pad", val_fraction=0.25)
    inputs, _ = as_arrays(splits.test)
    assert inputs.shape[1:] == (8, 8, 1)
    assert (inputs[:, 2:6, 2:6] > 0).all()
    inside = np.zeros((8, 8), bool)
    inside[2:6, 2:6] = True
    assert (inputs[:, ~inside] == 0).all()
    with pytest.raises(
        ValueError, match="resize='pad' cannot shrink 4x4 images to 2x2"
    ):
        dp.load((x, y), image_size=2, resize="pad")


def test_rgb_to_gray_conversion():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    splits = dp.load((x, np.arange(40) % 2), channels=1, val_fraction=0.25)
    inputs, _ = as_arrays(splits.train)
    assert inputs.shape[1:] == (4, 4, 1) == splits.info.input_shape
    assert splits.info.raw_shape == (4, 4, 3)


def test_same_seed_same_batches_and_other_seed_other_batches():
    kwargs = {"augment": "flip,rotate,cutout,mixup", "deterministic": True}

    def first_batches(seed):
        train = dp.load("digits", seed=seed, **kwargs).train
        return [(x.numpy(), y.numpy()) for x, y in train.take(3)]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_train_is_reshuffled_every_epoch_and_eval_splits_are_not():
    splits = dp.load("digits", seed=0, deterministic=True)
    first, second = as_arrays(splits.train)[1], as_arrays(splits.train)[1]
    assert not np.array_equal(first, second)
    assert np.array_equal(np.sort(first), np.sort(second))
    np.testing.assert_array_equal(as_arrays(splits.val)[1], as_arrays(splits.val)[1])


def test_mixup_makes_all_splits_one_hot():
    splits = dp.load("digits", augment="mixup", batch_size=32)
    assert splits.info.label_mode == "onehot"
    for ds in (splits.train, splits.val, splits.test):
        _, labels = next(iter(ds))
        assert labels.shape == (32, 10)
        np.testing.assert_allclose(labels.numpy().sum(1), 1, atol=1e-5)
    _, val_labels = as_arrays(splits.val)
    assert set(np.unique(val_labels)) == {0.0, 1.0}


@pytest.mark.parametrize("cache", [True, False, "file"])
def test_cache_modes_give_the_same_data(tmp_path, cache):
    if cache == "file":
        cache = str(tmp_path / "cache")
    splits = dp.load("digits", cache=cache, batch_size=500)
    x_ref, y_ref = as_arrays(dp.load("digits", cache=False, batch_size=500).val)
    x, y = as_arrays(splits.val)
    np.testing.assert_allclose(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert splits.train.cardinality().numpy() == 3  # Keras sees the epoch length
    if isinstance(cache, str):
        as_arrays(splits.train)
        assert list(tmp_path.glob("cache_train*")) and list(tmp_path.glob("cache_val*"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 1\); received 0.0"),
        ({"val_fraction": 1.5}, r"val_fraction must be in \(0, 1\); received 1.5"),
        ({"test_fraction": 1}, r"test_fraction must be in \(0, 1\); received 1"),
        ({"channels": 2}, "channels must be 1, 3 or None; received 2"),
        ({"resize": "crop"}, r"resize must be one of \('resize', 'pad'\)"),
        ({"augment": "rotat"}, "did you mean 'rotate'"),
        ({"label_column": "y"}, "label_column applies to csv sources only"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dp.load("digits", **kwargs)


def test_tabular_preprocessing_model_and_encode_table():
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(5, 2, 50), "b": rng.choice(["x", "y"], 50)})
    splits = dp.load((frame[["a"]].to_numpy(), np.arange(50) % 2), val_fraction=0.2)
    assert splits.info.task == "tabular" and splits.info.input_shape == (1,)
    model = dp.preprocessing_model(splits.info)
    assert model.output_shape == (None, 1)
    new_rows = pd.DataFrame({"f0": [splits.info.tabular["mean"][0], np.nan]})
    encoded = dp.encode_table(new_rows, splits.info)
    np.testing.assert_allclose(model.predict(encoded, verbose=0), 0, atol=1e-5)
