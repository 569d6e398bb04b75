"""Sources of data_pipelines: digits, idx, tfds, folder, csv, numpy, and bad input."""

import gzip
import json
import pathlib
import socket
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import data_pipelines as dp
from data_pipelines import sources

MNIST_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
# Label histogram of the MNIST test set as published (LeCun, Cortes, Burges).
MNIST_T10K_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def as_arrays(ds):
    """Concatenates a batched dataset into numpy (x, y)."""
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


# --- digits ----------------------------------------------------------------------


def test_digits_split_sizes_balance_and_sklearn_test_split():
    splits = dp.load("digits", batch_size=512, val_fraction=0.1, seed=0)
    assert splits.info.sizes == {"train": 1293, "val": 144, "test": 360}
    assert splits.info.raw_shape == splits.info.input_shape == (8, 8, 1)
    assert splits.info.class_names == [str(d) for d in range(10)]

    digits = load_digits()
    index = np.arange(len(digits.target))
    _, test_index = train_test_split(
        index, test_size=0.2, stratify=digits.target, random_state=0
    )
    x_test, y_test = as_arrays(splits.test)
    np.testing.assert_array_equal(y_test, digits.target[test_index])
    expected = np.round(digits.images[test_index] * 255 / 16)[..., None]
    np.testing.assert_allclose(x_test * 255, expected, atol=1e-3)

    all_share = np.bincount(digits.target) / len(digits.target)
    for split in (splits.train, splits.val, splits.test):
        _, y = as_arrays(split)
        assert np.abs(np.bincount(y, minlength=10) / len(y) - all_share).max() < 0.01


def test_digits_val_follows_seed_and_test_does_not():
    a = dp.load("digits", batch_size=2048, seed=0)
    b = dp.load("digits", batch_size=2048, seed=1, test_fraction=0.5)
    assert a.info.sizes["test"] == b.info.sizes["test"] == 360
    np.testing.assert_array_equal(as_arrays(a.test)[0], as_arrays(b.test)[0])
    assert not np.array_equal(as_arrays(a.val)[0], as_arrays(b.val)[0])


# --- idx -------------------------------------------------------------------------


def test_idx_reads_the_real_mnist_test_set():
    raw = sources.load_idx(str(MNIST_DIR))
    assert raw.x.shape == (10000, 28, 28, 1) and raw.x.dtype == np.uint8
    assert np.bincount(raw.y).tolist() == MNIST_T10K_HISTOGRAM
    assert raw.test is None and raw.class_names == [str(d) for d in range(10)]

    splits = dp.load(f"idx:{MNIST_DIR}", batch_size=1000, seed=0)
    assert splits.info.sizes == {"train": 7200, "val": 800, "test": 2000}
    _, y_test = as_arrays(splits.test)
    expected = np.round(np.array(MNIST_T10K_HISTOGRAM) * 0.2)
    assert np.abs(np.bincount(y_test) - expected).max() <= 1


def write_idx(path, magic, dims, payload):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(payload))


def test_idx_train_and_test_pairs(tmp_path):
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz", 0x803, (n, 2, 2), [7] * n * 4
        )
        write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 0x801, (n,), [0, 1] * (n // 2)
        )
    splits = dp.load(f"idx:{tmp_path}", val_fraction=0.2)
    assert splits.info.sizes == {"train": 16, "val": 4, "test": 10}


def test_idx_wrong_magic(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x801, (2, 2, 2), [0] * 8)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (2,), [0, 1])
    with pytest.raises(
        ValueError, match=r"wrong IDX magic number 0x00000801; expected 0x00000803"
    ):
        dp.load(f"idx:{tmp_path}")


def test_idx_mismatched_counts(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (3, 2, 2), [0] * 12)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (2,), [0, 1])
    with pytest.raises(ValueError, match="has 3 images but .* has 2 labels"):
        dp.load(f"idx:{tmp_path}")


def test_idx_truncated_data(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (3, 2, 2), [0] * 11)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (3,), [0, 1, 0])
    with pytest.raises(ValueError, match=r"declares shape \(3, 2, 2\) \(12 bytes\)"):
        dp.load(f"idx:{tmp_path}")


def test_idx_without_idx_files(tmp_path):
    (tmp_path / "readme.txt").write_text("no data")
    with pytest.raises(ValueError, match="needs pairs of PREFIX-images-idx3-ubyte"):
        dp.load(f"idx:{tmp_path}")


# --- tfds ------------------------------------------------------------------------


def mock_mnist(self, *args, **kwargs):
    """40 fake MNIST examples, labels 0..9 four times (for stratified splits)."""
    import tensorflow as tf

    return tf.data.Dataset.from_generator(
        lambda: (
            {"image": np.full((28, 28, 1), i, np.uint8), "label": i % 10}
            for i in range(40)
        ),
        output_signature={
            "image": tf.TensorSpec((28, 28, 1), tf.uint8),
            "label": tf.TensorSpec((), tf.int64),
        },
    )


def test_tfds_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(as_dataset_fn=mock_mnist):
        splits = dp.load("tfds:mnist", val_fraction=0.25, batch_size=64)
    info = splits.info
    assert info.source == "tfds:mnist" and info.raw_shape == (28, 28, 1)
    assert info.class_names == [str(d) for d in range(10)]
    assert info.sizes == {"train": 30, "val": 10, "test": 40}
    x_test, y_test = as_arrays(splits.test)
    np.testing.assert_array_equal(y_test, np.arange(40) % 10)
    np.testing.assert_allclose(x_test[:, 0, 0, 0] * 255, np.arange(40), atol=1e-4)


def test_tfds_unknown_name_lists_close_matches():
    with pytest.raises(
        ValueError, match=r"unknown TFDS dataset 'mnistt'; close matches: \['mnist'"
    ):
        dp.load("tfds:mnistt")


def test_declared_dependencies_bring_what_the_tfds_builder_imports():
    """A fresh `pip install .` installs pyproject's dependencies and theirs; that
    closure must hold importlib_resources, which tensorflow-datasets 4.9.10 imports
    in its builder without declaring it."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    todo = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    closure: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name in closure or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        closure.add(name)
        try:
            todo += importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            pass
    assert {"tensorflow-datasets", "importlib-resources"} <= closure


def test_tfds_real_builder_reads_its_checksums_and_writes_nothing(tmp_path):
    """The real builder path (no mock): its code path needs importlib_resources."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    assert not builder.is_prepared()
    assert sorted(url.rsplit("/", 1)[1] for url in builder.url_infos) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert list(tmp_path.iterdir()) == []


def go_offline(monkeypatch):
    """No name resolves, as on a machine without internet (on any machine)."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)


def tfds_offline_message(data_dir):
    return (
        f"TFDS dataset 'mnist' is not prepared in data_dir {data_dir} and cannot be "
        "downloaded (storage.googleapis.com:443: Temporary failure in name "
        'resolution). On a connected machine run `python3 -c "import '
        "tensorflow_datasets as tfds; tfds.builder('mnist').download_and_prepare()\"`"
        f" (or `tfds build mnist`), then copy ~/tensorflow_datasets/mnist into "
        f"{data_dir}, or pass the folder that holds it with --data-dir (data_dir=)."
    )


def test_tfds_offline_fails_in_seconds_in_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, capfd, caplog
):
    go_offline(monkeypatch)
    start = time.monotonic()
    with pytest.raises(ValueError) as raised:
        dp.load("tfds:mnist", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    assert str(raised.value) == tfds_offline_message(tmp_path)
    assert list(tmp_path.iterdir()) == []
    err = capfd.readouterr().err
    assert "urllib3" not in err and "Dl Completed" not in err, err
    assert [r.getMessage() for r in caplog.records] == []  # e.g. "Variant folder"


def test_tfds_failed_download_removes_what_it_wrote(tmp_path, monkeypatch):
    """Reachable hosts, then a download that breaks: no .tmp or incomplete dir left."""
    import tensorflow_datasets as tfds

    def broken_download(self, *args, **kwargs):
        partial = tmp_path / "downloads" / "mnist"
        partial.mkdir(parents=True)
        (partial / "t10k-images-idx3-ubyte.gz.tmp.1234").write_bytes(b"x")
        (tmp_path / "mnist" / "3.0.1.incomplete5678").mkdir(parents=True)
        raise ConnectionError("connection reset by peer")

    (tmp_path / "other").mkdir()  # a dataset prepared earlier stays
    monkeypatch.setattr(sources, "_unreachable", lambda urls: None)
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", broken_download
    )
    with pytest.raises(ValueError) as raised:
        dp.load("tfds:mnist", data_dir=str(tmp_path))
    assert str(raised.value).startswith(
        f"TFDS dataset 'mnist' is not prepared in data_dir {tmp_path} and cannot be "
        "downloaded (ConnectionError: connection reset by peer). On a connected"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["other"]


# --- folder ----------------------------------------------------------------------


def write_images(folder, n, color, size=(12, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (color[0], color[1], i)).save(folder / f"{i}.png")


def test_folder_source_skips_corrupt_files_with_one_summary_warning(tmp_path):
    write_images(tmp_path / "cat", 10, (200, 0))
    write_images(tmp_path / "dog", 10, (0, 200))
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning) as record:
        splits = dp.load(f"folder:{tmp_path}", val_fraction=0.25, test_fraction=0.2)
    assert [str(w.message) for w in record] == [
        f"folder source '{tmp_path}': skipped 2 unreadable files, e.g. "
        "dog/broken.png: cannot identify image file"
    ]
    info = splits.info
    assert info.class_names == ["cat", "dog"] and info.raw_shape == (10, 12, 3)
    assert info.sizes == {"train": 12, "val": 4, "test": 4}
    x, y = as_arrays(splits.test)
    red = np.broadcast_to(np.where(y == 0, 200.0, 0.0)[:, None, None], x.shape[:3])
    np.testing.assert_allclose(x[..., 0] * 255, red, atol=1e-3)


def test_folder_without_readable_images_is_one_error(tmp_path):
    """Like `folder:/tmp`: subfolders, but no image anywhere."""
    for name in ("cache", "logs"):
        (tmp_path / name / "deep").mkdir(parents=True)
        for i in range(3):
            (tmp_path / name / "deep" / f"{i}.txt").write_text("text")
    (tmp_path / "empty").mkdir()
    with (
        warnings.catch_warnings(record=True) as record,
        pytest.raises(ValueError) as raised,
    ):
        warnings.simplefilter("always")
        dp.load(f"folder:{tmp_path}")
    assert record == []
    assert str(raised.value) == (
        f"folder source '{tmp_path}' has no readable image in class folders "
        "'cache', 'empty', 'logs' (6 unreadable files, e.g. cache/deep/0.txt: "
        "cannot identify image file); expected DIR/CLASS_NAME/IMAGE files"
    )


def test_folder_resizes_mixed_sizes_when_asked(tmp_path):
    write_images(tmp_path / "a", 5, (9, 9), size=(8, 8))
    write_images(tmp_path / "b", 5, (9, 9), size=(16, 12))
    with pytest.raises(ValueError, match="pass image_size"):
        dp.load(f"folder:{tmp_path}")
    splits = dp.load(f"folder:{tmp_path}", image_size=6, val_fraction=0.25)
    assert splits.info.raw_shape == splits.info.input_shape == (6, 6, 3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, r"folder source directory '.*missing' does not exist"),
        (lambda p: p.mkdir(), "is empty"),
        (
            lambda p: (p / "x.png").parent.mkdir() or (p / "x.png").write_text(""),
            "has no class subfolders",
        ),
        (
            lambda p: write_images(p / "a", 3, (0, 0)) or (p / "b").mkdir(),
            r"has no readable image in class folders 'b' \(0 unreadable files\)",
        ),
        (lambda p: write_images(p / "only", 3, (0, 0)), r"1 class\(es\) \['only'\]"),
    ],
)
def test_folder_bad_input(tmp_path, make, message):
    root = tmp_path / "missing"
    make(root)
    with pytest.raises(ValueError, match=message):
        dp.load(f"folder:{root}")


# --- csv -------------------------------------------------------------------------


def make_table(n=60):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "size": rng.normal(50, 10, n),
            "weight": rng.normal(3, 1, n),
            "color": rng.choice(["red", "green", "blue"], n),
            "species": np.array(["a", "b", "c"])[np.arange(n) % 3],
        }
    )


def test_csv_source_standardizes_with_train_stats_and_one_hot_encodes(tmp_path):
    table = make_table()
    table.to_csv(tmp_path / "t.csv", index=False)
    splits = dp.load(
        f"csv:{tmp_path / 't.csv'}", label_column="species", batch_size=100
    )
    info = splits.info
    assert info.task == "tabular" and info.class_names == ["a", "b", "c"]
    assert info.tabular["feature_names"] == [
        "size",
        "weight",
        "color=blue",
        "color=green",
        "color=red",
    ]
    assert info.input_shape == (5,) and sum(info.sizes.values()) == 60
    assert dp.DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    x_train, _ = as_arrays(splits.train)
    np.testing.assert_allclose(x_train[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train[:, :2].std(0), 1, atol=1e-5)
    assert set(np.unique(x_train[:, 2:])) == {0.0, 1.0}
    np.testing.assert_array_equal(x_train[:, 2:].sum(1), 1)
    x_test, _ = as_arrays(splits.test)
    assert abs(x_test[:, 0].mean()) > 1e-3  # test data is not re-standardized


def test_csv_missing_label_column_lists_columns(tmp_path):
    make_table().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(
        ValueError, match=r"label column 'kind' not found; columns: size, weight, color"
    ):
        dp.load(f"csv:{tmp_path / 't.csv'}", label_column="kind")


def test_csv_without_label_column_names_the_flag_and_columns(tmp_path):
    make_table().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as raised:
        dp.load(f"csv:{tmp_path / 't.csv'}")
    assert str(raised.value) == (
        f"csv source '{tmp_path / 't.csv'}' needs a label column: pass "
        "--label-column NAME (label_column=) with one of its columns: size, weight, "
        "color, species"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty (no header line); expected a header line of column names"),
        ("\n\n", "is empty (no header line); expected a header line of column names"),
        ("size,species\n", "has columns size, species but no rows"),
    ],
)
def test_empty_csv_names_the_file(tmp_path, text, message):
    (tmp_path / "e.csv").write_text(text)
    with pytest.raises(ValueError) as raised:
        dp.load(f"csv:{tmp_path / 'e.csv'}", label_column="species")
    assert str(raised.value).startswith(f"csv source '{tmp_path / 'e.csv'}' {message}")


def test_csv_numeric_target_without_regression_suggests_it(tmp_path):
    table = make_table(100)
    table["price"] = (2.0 * table["size"] + 0.5).round(3)
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as raised:
        dp.load(f"csv:{tmp_path / 't.csv'}", label_column="price")
    first = ", ".join(f"{v:g}" for v in table["price"][:3])
    assert str(raised.value) == (
        f"csv source '{tmp_path / 't.csv'}': label column 'price' holds 100 distinct "
        f"numbers (e.g. {first}), which looks like a regression target, not "
        "classes; pass --task regression (regression=True), or name a column of "
        "classes with --label-column; columns: size, weight, color, species, price"
    )


def test_csv_classes_may_be_integers(tmp_path):
    table = make_table(60)
    table["grade"] = np.arange(60) % 4 + 3
    table.to_csv(tmp_path / "t.csv", index=False)
    splits = dp.load(f"csv:{tmp_path / 't.csv'}", label_column="grade")
    assert splits.info.class_names == ["3", "4", "5", "6"]


def test_csv_infinite_features_are_refused_naming_columns_and_rows(tmp_path):
    table = make_table(100)
    table.loc[::10, "size"] = np.inf  # 10 rows
    table.loc[[5, 10], "weight"] = -np.inf  # row 10 is already counted
    table.loc[7, "weight"] = np.nan  # a missing value: filled with the mean
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as raised:
        dp.load(f"csv:{tmp_path / 't.csv'}", label_column="species")
    assert str(raised.value) == (
        f"csv source '{tmp_path / 't.csv'}': 11 rows hold inf or -inf in column(s) "
        "size (10 rows), weight (2 rows), first on line 2; fix or remove those rows "
        "(an empty cell is a missing value, filled with the training mean)"
    )


def test_csv_missing_feature_values_are_filled_with_the_training_mean(tmp_path):
    table = make_table(60)
    table.loc[[3, 4], "size"] = np.nan
    table.to_csv(tmp_path / "t.csv", index=False)
    splits = dp.load(f"csv:{tmp_path / 't.csv'}", label_column="species")
    x_train, _ = as_arrays(splits.train)
    assert np.isfinite(x_train).all()


def test_csv_rejects_free_text_features(tmp_path):
    table = make_table()
    table["comment"] = [f"note {i}" for i in range(len(table))]
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="column 'comment' is not numeric and has 60"):
        dp.load(f"csv:{tmp_path / 't.csv'}", label_column="species")


def test_csv_regression_keeps_float_targets_and_their_train_stats(tmp_path):
    table = make_table(100)
    table["price"] = 2.0 * table["size"] + 0.5
    table.to_csv(tmp_path / "t.csv", index=False)
    splits = dp.load(
        f"csv:{tmp_path / 't.csv'}",
        label_column="price",
        regression=True,
        val_fraction=0.25,
        batch_size=200,
    )
    info = splits.info
    assert info.regression and info.label_mode == "float"
    assert info.num_classes == 1 and info.class_names == ["price"]
    assert info.sizes == {"train": 60, "val": 20, "test": 20}
    assert "species" in info.tabular["categories"]  # the old label is a feature now
    assert dp.DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    x_train, y_train = as_arrays(splits.train)
    assert y_train.dtype == np.float32 and y_train.shape == (60,)
    assert info.target["mean"] == pytest.approx(y_train.mean(), rel=1e-5)
    assert info.target["std"] == pytest.approx(y_train.std(), rel=1e-5)
    # The target is exactly 2 * size + 0.5 of the same rows, in raw units.
    size = x_train[:, 0] * info.tabular["std"][0] + info.tabular["mean"][0]
    np.testing.assert_allclose(y_train, 2 * size + 0.5, rtol=1e-4)


def test_csv_regression_refuses_a_non_numeric_target(tmp_path):
    table = make_table()
    table["price"] = table["size"].round(2).astype(object)
    table.loc[7, "price"] = "high"
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(
        ValueError,
        match=r"regression target 'price' must be finite numbers; row 7 has 'high'",
    ):
        dp.load(f"csv:{tmp_path / 't.csv'}", label_column="price", regression=True)


def test_regression_needs_numeric_targets_and_refuses_label_mixing():
    with pytest.raises(ValueError, match="source 'digits' has class labels"):
        dp.load("digits", regression=True)
    x, y = np.random.rand(50, 4, 4), np.random.rand(50)
    with pytest.raises(ValueError, match="do not apply to regression"):
        dp.load((x, y), regression=True, augment="mixup")
    splits = dp.load((x, y), regression=True, augment="rotate:0.1")
    assert splits.info.regression and splits.info.input_shape == (4, 4, 1)


# --- numpy and source strings ----------------------------------------------------


def test_numpy_arrays_become_uint8_images():
    x = np.linspace(0, 1, 40 * 4 * 4).reshape(40, 4, 4)
    y = np.repeat(["no", "yes"], 20)
    splits = dp.load((x, y), val_fraction=0.25, batch_size=64)
    assert splits.info.raw_shape == (4, 4, 1) and splits.info.class_names == [
        "no",
        "yes",
    ]
    assert splits.info.sizes == {"train": 24, "val": 8, "test": 8}
    x_test, _ = as_arrays(splits.test)
    assert np.allclose(x_test * 255, np.round(x_test * 255), atol=1e-4)


@pytest.mark.parametrize(
    "x, message",
    [
        (
            np.where(np.arange(160).reshape(10, 4, 4) % 7 == 0, np.nan, 0.5),
            "numpy x holds 23 NaN or infinite values in 10 of its 10 images (first: "
            "image 0); image values must be finite",
        ),
        (
            np.full((10, 4, 4), np.inf, np.float32),
            "numpy x holds 160 NaN or infinite values in 10 of its 10 images",
        ),
        (
            np.linspace(-0.5, 2, 160).reshape(10, 4, 4),
            "numpy x: float image values must lie within [0, 1] (scaled by 255) or "
            "within [0, 255]; found values in [-0.5, 2]",
        ),
        (
            np.linspace(0, 300, 160).reshape(10, 4, 4),
            "numpy x: float image values must lie within [0, 1] (scaled by 255) or "
            "within [0, 255]; found values in [0, 300]",
        ),
        (
            np.arange(160, dtype=np.int64).reshape(10, 4, 4) * 2,
            "numpy x: integer image values must lie within [0, 255]; found values "
            "in [0, 318]",
        ),
    ],
)
def test_numpy_images_with_bad_values_are_refused(x, message):
    with pytest.raises(ValueError) as raised:
        dp.load((x, np.arange(10) % 2))
    assert str(raised.value).startswith(message)


def test_numpy_tables_with_infinite_values_are_refused():
    x = np.ones((20, 3))
    x[4, 1] = -np.inf
    with pytest.raises(ValueError) as raised:
        dp.load((x, np.arange(20) % 2))
    assert str(raised.value) == (
        "numpy x: 1 row holds inf or -inf in column(s) f1 (1 row), first on row 4; "
        "fix or remove those rows (NaN is a missing value, filled with the training "
        "mean)"
    )


def test_relative_source_paths_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as raised:
        dp.load("idx:../shared/data/mnist")
    assert str(raised.value) == (
        "idx source directory '../shared/data/mnist' does not exist (looked in "
        f"{tmp_path.parent / 'shared' / 'data' / 'mnist'}: a relative path starts "
        "at the current directory)"
    )


def test_numpy_float_images_in_0_255_are_kept_as_they_are():
    x = np.linspace(0, 255, 40 * 4).reshape(40, 2, 2)
    splits = dp.load((x, np.arange(40) % 2), val_fraction=0.25, cache=False)
    x_test, _ = as_arrays(splits.test)
    assert x_test.min() >= 0 and x_test.max() <= 1 and x_test.max() > 0.5


@pytest.mark.parametrize(
    "source, message",
    [
        ("mnist", r"unknown dataset source 'mnist'; allowed: digits, idx:DIR, tfds:"),
        ("folderr:/x", "did you mean 'folder'"),
        ("idx", "source 'idx' needs an argument"),
        ("digits:8", "source 'digits' takes no argument"),
    ],
)
def test_parse_source_errors(source, message):
    with pytest.raises(ValueError, match=message):
        dp.parse_source(source)


def test_parse_source_forms():
    assert dp.parse_source("tfds:mnist:3.0.1") == dp.SourceSpec("tfds", "mnist:3.0.1")
    assert str(dp.parse_source("csv:/a/b.csv")) == "csv:/a/b.csv"
    assert str(dp.parse_source("digits")) == "digits"


def test_fewer_than_two_classes():
    with pytest.raises(ValueError, match="needs at least 2"):
        dp.load((np.zeros((10, 4, 4), np.uint8), np.zeros(10)))
