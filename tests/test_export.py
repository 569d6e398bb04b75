"""SavedModel export: parity in a fresh process, signature, versions, atomicity, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import data_pipelines
import zoo
from zoo import cli, export
from zoo.blocks import nested_layers

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = [f"digit_{i}" for i in range(10)]
RAW_SHAPE = (8, 8, 1)  # scikit-learn digits as the source yields them
INPUT_SHAPE = (32, 32, 1)


def _digits_uint8(n: int) -> np.ndarray:
    """Real handwritten digits (0..16 ink) as raw uint8 images (0..255)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:n]
    return np.round(images * 255 / 16).astype(np.uint8)[..., None]


def _saved_model_cli() -> str:
    """The console script installed with TensorFlow, beside this Python first."""
    here = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent))
    return here or shutil.which("saved_model_cli") or "saved_model_cli"


def _tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _entries(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


@pytest.fixture(scope="module")
def lenet():
    keras.utils.set_random_seed(0)
    return zoo.build("lenet5", input_shape=INPUT_SHAPE, num_classes=10)


@pytest.fixture(scope="module")
def run_dir(lenet, tmp_path_factory) -> Path:
    """A run directory as the training app writes it, made by hand."""
    run = tmp_path_factory.mktemp("runs") / "20261121-223000-lenet5-digits"
    run.mkdir()
    info = data_pipelines.DatasetInfo(
        source="digits",
        num_classes=10,
        class_names=CLASS_NAMES,
        input_shape=INPUT_SHAPE,
        raw_shape=RAW_SHAPE,
        sizes={"train": 1257, "val": 270, "test": 270},
        mean=[0.3],
        std=[0.4],
    )
    (run / "config.json").write_text(
        json.dumps({"model": "lenet5", "dataset": "digits"})
    )
    (run / "dataset.json").write_text(json.dumps(info.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.97, "loss": 0.1}))
    lenet.save(run / "best.keras")
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    """Version 1 of the run exported with raw uint8 input and top-3."""
    base = tmp_path_factory.mktemp("saved_models") / "lenet5_digits"
    path = export.export_saved_model(
        run_dir, base, top_k=3, sample_images=_digits_uint8(16)
    )
    assert path == base / "1"
    return path


def test_layout_and_meta(exported, run_dir):
    assert {
        "saved_model.pb",
        "variables",
        "model.keras",
        "preprocessing.keras",
        "export_meta.json",
    } <= set(_entries(exported))
    assert _entries(exported.parent) == ["1"]
    meta = json.loads((exported / "export_meta.json").read_text())
    assert meta["model"] == "lenet5"
    assert meta["input_shape"] == [8, 8, 1] and meta["input_dtype"] == "uint8"
    assert meta["model_input_shape"] == [32, 32, 1]
    assert meta["class_names"] == CLASS_NAMES and meta["top_k"] == 3
    assert meta["training_metrics"] == {"accuracy": 0.97, "loss": 0.1}
    assert meta["source_run"] == str(run_dir.resolve())
    assert meta["package_versions"]["tensorflow"] == tf.__version__
    assert meta["verification"]["max_abs_diff"] <= 1e-5
    assert meta["verification"]["imported_project"] == []


def test_round_trip_parity_float32_in_fresh_process(exported):
    report = export.verify(exported.parent, _digits_uint8(32))
    assert report.ok and report.path == str(exported)
    assert report.tolerance == 1e-5 and report.num_samples == 32
    assert report.max_abs_diff <= 1e-5 and report.batch1_max_abs_diff <= 1e-5
    assert report.top1_agreement == 1.0
    assert report.imported_project == ()


def test_raw_uint8_input_gives_keras_classes(exported, lenet, run_dir):
    images = _digits_uint8(64)
    info = data_pipelines.DatasetInfo.from_dict(
        json.loads((run_dir / "dataset.json").read_text())
    )
    x = data_pipelines.preprocessing_model(info)(images.astype("float32"))
    expected = np.asarray(lenet(x, training=False))
    loaded = tf.saved_model.load(str(exported))
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    assert sorted(out) == ["class_ids", "probabilities", "scores"]
    assert out["probabilities"].dtype == tf.float32
    np.testing.assert_array_equal(out["class_ids"][:, 0], expected.argmax(-1))
    np.testing.assert_array_equal(
        out["class_ids"], np.argsort(-expected, axis=-1, kind="stable")[:, :3]
    )
    assert np.max(np.abs(out["probabilities"].numpy() - expected)) <= 1e-5
    np.testing.assert_allclose(out["scores"], np.sort(expected)[:, ::-1][:, :3])


def _serving_default_section(version_dir: Path) -> str:
    """`saved_model_cli show --all`'s text for the serving_default signature."""
    proc = subprocess.run(
        [_saved_model_cli(), "show", "--dir", str(version_dir), "--all"],
        capture_output=True,
        text=True,
        check=True,
    )
    section = proc.stdout.split("signature_def['serving_default']:")[1]
    return section.split("signature_def[")[0]


def test_saved_model_cli_shows_named_signature(exported):
    section = _serving_default_section(exported)
    fields = re.findall(
        r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)",
        section,
    )
    assert fields == [
        ("inputs", "images", "DT_UINT8", "-1, 8, 8, 1"),
        ("outputs", "class_ids", "DT_INT32", "-1, 3"),
        ("outputs", "probabilities", "DT_FLOAT", "-1, 10"),
        ("outputs", "scores", "DT_FLOAT", "-1, 3"),
    ]
    assert "Method name is: tensorflow/serving/predict" in section


def test_float16_parity_within_stated_tolerance(lenet, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (16, *INPUT_SHAPE), np.uint8)
    path = export.export_saved_model(
        lenet, tmp_path / "fp16", precision="float16", sample_images=images
    )
    meta = json.loads((path / "export_meta.json").read_text())
    report = meta["verification"]  # the fresh-process check run by the export
    assert report["tolerance"] == 1e-2 and report["num_samples"] == 16
    assert 0 < report["max_abs_diff"] <= 1e-2
    assert 0 < report["batch1_max_abs_diff"] <= 1e-2
    assert meta["precision"] == "float16" and meta["raw_image_input"] is True
    assert _xla_functions(path) == []
    # Default preprocessing of a bare model: Rescaling(1/255) only, same input size.
    assert meta["input_shape"] == list(INPUT_SHAPE)
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["top_k"] == 5


def _resnet20_with_statistics(seed: int = 0) -> keras.Model:
    """A half-width ResNet-20 whose batch norms hold non-trivial statistics and
    affine parameters, as after training (at initialisation they are 0/1)."""
    keras.utils.set_random_seed(seed)
    model = zoo.build("resnet20", input_shape=(32, 32, 3), num_classes=10, width=0.5)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0, 0.2, shape))
            layer.moving_mean.assign(rng.normal(0, 0.5, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    return model


def _digits_rgb32(n: int) -> np.ndarray:
    """Real digits as uint8 32x32 RGB images (nearest upscaling of the 8x8 ones)."""
    return np.repeat(np.repeat(np.repeat(_digits_uint8(n), 4, 1), 4, 2), 3, 3)


def _batch_norms(model: keras.Model) -> list[str]:
    return [
        layer.name
        for layer in nested_layers(model, containers=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_fold_batch_norms_folds_every_resnet_batch_norm():
    model = _resnet20_with_statistics()
    weights = [w.copy() for w in model.get_weights()]
    names = [layer.name for layer in model.layers]
    x = _digits_rgb32(64).astype("float32") / 255
    expected = np.asarray(model(x, training=False))

    folded = export.fold_batch_norms(model)
    assert len(_batch_norms(model)) == 19 and _batch_norms(folded) == []
    assert sorted(layer.name for layer in folded.layers) == sorted(
        n for n in names if n not in _batch_norms(model)
    )
    conv = folded.get_layer("stage1_block1_conv1")
    assert conv.use_bias and np.abs(np.asarray(conv.bias)).min() > 0
    assert not np.allclose(conv.kernel, model.get_layer("stage1_block1_conv1").kernel)
    assert np.max(np.abs(np.asarray(folded(x)) - expected)) <= 1e-5
    assert np.array_equal(np.argmax(folded(x), -1), np.argmax(expected, -1))
    # The user's model is untouched: same layers, weights and outputs.
    assert [layer.name for layer in model.layers] == names
    assert all(
        np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True)
    )
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), expected)


def test_fold_batch_norms_only_folds_the_safe_pattern():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, use_bias=False, name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)  # folded
    b = keras.layers.Conv2D(4, 3, activation="relu", name="b")(inputs)
    b = keras.layers.BatchNormalization(name="b_bn")(b)  # after a ReLU: kept
    c = keras.layers.Conv2D(4, 3, use_bias=False, name="c")(inputs)
    c_bn = keras.layers.BatchNormalization(name="c_bn")(c)  # c has 2 uses: kept
    x = keras.layers.Add()([a, b, c_bn, c])
    x = keras.layers.BatchNormalization(axis=1, name="axis1_bn")(x)  # kept
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="d")(x)
    x = keras.layers.BatchNormalization(name="d_bn")(x)  # folded
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(0)
    for name in _batch_norms(model):
        for variable in model.get_layer(name).weights:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    folded = export.fold_batch_norms(model)
    assert _batch_norms(folded) == ["b_bn", "c_bn", "axis1_bn"]
    assert folded.get_layer("a").use_bias and folded.get_layer("d").use_bias
    assert not folded.get_layer("c").use_bias
    x = rng.random((16, 8, 8, 3), np.float32)
    assert np.max(np.abs(np.asarray(folded(x)) - np.asarray(model(x)))) <= 1e-6

    sequential = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4), keras.layers.BatchNormalization()]
    )
    assert _batch_norms(export.fold_batch_norms(sequential)) == []
    no_batch_norm = zoo.build("lenet5", input_shape=INPUT_SHAPE, num_classes=10)
    assert export.fold_batch_norms(no_batch_norm) is no_batch_norm


def _conv_filter_sources(version_dir: Path) -> list[str]:
    """The op feeding each Conv2D filter in the serving function's graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    sources = []
    for function in proto.meta_graphs[0].graph_def.library.function:
        ops = {node.name: node.op for node in function.node_def}
        for node in function.node_def:
            if node.op == "Conv2D":
                sources.append(ops[node.input[1].split(":")[0]])
    return sources


def test_default_export_freezes_conv_filters_only(tmp_path):
    model = _resnet20_with_statistics()
    images = _digits_rgb32(16)
    frozen = export.export_saved_model(model, tmp_path / "r20", sample_images=images)
    kept = export.export_saved_model(
        model, tmp_path / "r20", sample_images=images, freeze_filters=False
    )
    frozen_meta = json.loads((frozen / "export_meta.json").read_text())
    kept_meta = json.loads((kept / "export_meta.json").read_text())
    # ResNet-20 has 19 convolutions (option-A shortcuts have none).
    assert (frozen_meta["frozen_filters"], kept_meta["frozen_filters"]) == (19, 0)
    assert _conv_filter_sources(frozen) == ["Const"] * 19
    assert _conv_filter_sources(kept) == ["ReadVariableOp"] * 19
    # Everything else stays a variable: 4 per batch norm (19), the Dense layer's 2.
    kept_model, frozen_model = (tf.saved_model.load(str(p)) for p in (kept, frozen))
    assert len(kept_model.weights) == len(model.weights) == 19 + 4 * 19 + 2
    assert len(frozen_model.weights) == 4 * 19 + 2
    assert max(len(v.shape) for v in frozen_model.weights) == 2
    # Both graphs round like the eager model up to float32 noise (oneDNN picks
    # its kernels by them), far inside the 1e-5 tolerance.
    assert frozen_meta["verification"]["max_abs_diff"] <= 1e-7
    assert kept_meta["verification"]["max_abs_diff"] <= 1e-7
    x = tf.constant(images)
    np.testing.assert_allclose(
        frozen_model.signatures["serving_default"](images=x)["probabilities"],
        kept_model.signatures["serving_default"](images=x)["probabilities"],
        atol=1e-7,
    )


def test_freeze_filters_bad_values_write_nothing(lenet, tmp_path, monkeypatch):
    base = tmp_path / "out"
    with pytest.raises(
        ValueError,
        match=r"freeze_filters must be True, False or 'auto'; received 'yes'",
    ):
        export.export_saved_model(lenet, base, freeze_filters="yes")
    # LeNet-5's two filters take 10,400 bytes (5x5x1x6 and 5x5x6x16 float32).
    monkeypatch.setattr(export.rewrites, "_FREEZE_MAX_BYTES", 10_000)
    with pytest.raises(
        ValueError,
        match=r"freeze_filters=True received a model with 0\.0 GiB of convolution "
        r"filters; .* Pass freeze_filters=False \(zoo export --no-freeze-filters\)",
    ):
        export.export_saved_model(lenet, base, freeze_filters=True)
    assert _entries(base) == []
    auto = export.export_saved_model(lenet, base)  # "auto" keeps variables now
    assert json.loads((auto / "export_meta.json").read_text())["frozen_filters"] == 0


def test_zoo_export_fold_batch_norm_in_fresh_process(tmp_path):
    model = _resnet20_with_statistics()
    model.save(tmp_path / "r20.keras")
    base = tmp_path / "served"
    # A fresh process: loading the .keras file needs zoo's ChannelPad registered.
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "export", str(tmp_path / "r20.keras")]
        + ["--out", str(base), "--fold-batch-norm", "--no-freeze-filters"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((base / "1" / "export_meta.json").read_text())
    assert (meta["fold_batch_norm"], meta["folded_batch_norms"]) == (True, 19)
    assert meta["frozen_filters"] == 0
    assert _conv_filter_sources(base / "1") == ["ReadVariableOp"] * 19
    assert meta["verification"]["max_abs_diff"] <= 1e-5
    report = export.verify(base, _digits_rgb32(128))
    assert report.ok and report.max_abs_diff <= 1e-5
    assert report.top1_agreement == 1.0

    path = export.export_saved_model(
        model, base, precision="float16", fold_batch_norm=True
    )
    meta = json.loads((path / "export_meta.json").read_text())
    assert (meta["precision"], meta["folded_batch_norms"]) == ("float16", 19)
    assert 0 < export.verify(path, _digits_rgb32(128)).max_abs_diff <= 1e-2


@pytest.mark.slow
def test_bfloat16_xla_float_input_multi_output(tmp_path):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(keras.layers.GlobalAveragePooling2D()(x))
    main = keras.layers.Dense(4, activation="softmax", name="main")(x)
    aux = keras.layers.Dense(4, activation="softmax", name="aux")(x)
    model = keras.Model(inputs, [main, aux])
    samples = np.random.default_rng(2).random((8, 12, 12, 3), np.float32)
    path = export.export_saved_model(
        model,
        tmp_path / "m",
        raw_image_input=False,
        precision="bfloat16",
        jit_compile=True,
        top_k=2,
        sample_images=samples,
    )
    report = export.verify(path, samples)
    assert report.ok and report.tolerance == 1e-1
    assert 0 < report.max_abs_diff <= 1e-1
    out = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.constant(samples)
    )
    assert out["probabilities"].shape == (8, 4) and out["class_ids"].shape == (8, 2)
    meta = json.loads((path / "export_meta.json").read_text())
    assert (meta["input_dtype"], meta["jit_compile"]) == ("float32", True)


@pytest.mark.slow
def test_mixed_precision_trained_model_exports_float32(lenet, tmp_path):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        mixed = zoo.build("lenet5", input_shape=INPUT_SHAPE, num_classes=10)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    mixed.set_weights(lenet.get_weights())
    images = np.random.default_rng(3).integers(0, 256, (16, *INPUT_SHAPE), np.uint8)
    x = images.astype("float32") / 255
    expected = np.asarray(lenet(x, training=False))
    assert np.max(np.abs(np.asarray(mixed(x), "float32") - expected)) > 1e-5
    path = export.export_saved_model(mixed, tmp_path / "m", sample_images=images)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.constant(images)
    )
    assert np.max(np.abs(out["probabilities"].numpy() - expected)) <= 1e-5
    assert export.verify(path, images).max_abs_diff <= 1e-5


def test_second_export_is_version_2_and_version_1_untouched(exported, tmp_path):
    base = tmp_path / "lenet5_digits"
    shutil.copytree(exported.parent, base)
    before = _tree_digest(base / "1")
    model = keras.saving.load_model(exported / "model.keras")
    path = export.export_saved_model(model, base, version=None, top_k=2)
    assert path == base / "2"
    assert export.list_versions(base) == [1, 2] and _entries(base) == ["1", "2"]
    assert _tree_digest(base / "1") == before
    with pytest.raises(ValueError, match=r"version 1 already exists in .*\[1, 2\]"):
        export.export_saved_model(model, base, version=1)
    assert _tree_digest(base / "1") == before and _entries(base) == ["1", "2"]


def kill_during_verification(
    fmt: str, model_file: Path, base: Path, tmp_path: Path
) -> Path:
    """Export `model_file` to `base` in `fmt` in a subprocess, SIGKILL it once
    the format's files are written (its verification stalls), and return the
    temporary directory it was writing."""
    marker = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import pathlib, time
        import keras
        import zoo.export.{fmt}
        from zoo import export
        def verify(path, samples, **options):  # the files are written: stall
            pathlib.Path({str(marker)!r}).write_text(str(path))
            time.sleep(600)
        export.{fmt}.verify = verify  # what the exporter calls
        model = keras.saving.load_model({str(model_file)!r})
        export.export(model, {str(base)!r}, format={fmt!r})
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "export subprocess died before writing"
            time.sleep(0.2)
        assert marker.exists(), "export subprocess never reached verification"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = Path(marker.read_text())
    assert partial.name.startswith(".tmp-export-")
    return partial


def test_killed_export_leaves_no_partial_version(exported, tmp_path):
    base = tmp_path / "lenet5_digits"
    shutil.copytree(exported.parent, base)
    before = _tree_digest(base / "1")
    partial = kill_during_verification(
        "savedmodel", exported / "model.keras", base, tmp_path
    )
    assert (partial / "saved_model.pb").is_file()  # it was killed mid-export
    assert export.list_versions(base) == [1] and _tree_digest(base / "1") == before
    # The next export removes the dead process's leftovers and takes version 2.
    model = keras.saving.load_model(exported / "model.keras")
    assert export.export_saved_model(model, base) == base / "2"
    assert _entries(base) == ["1", "2"]


def test_bad_inputs_fail_with_clear_errors_and_write_nothing(
    lenet, run_dir, exported, tmp_path
):
    base = tmp_path / "out"
    as_file = tmp_path / "file"
    as_file.write_text("x")
    empty_run = tmp_path / "run-without-model"
    empty_run.mkdir()
    (empty_run / "config.json").write_text('{"model": "lenet5"}')
    cases = [
        ((lenet, as_file), {}, r"export path '.*file' exists and is a file"),
        (
            (empty_run, base),
            {},
            r"run directory '.*run-without-model' has no model: "
            r"expected best\.keras or last\.keras",
        ),
        (
            (lenet, base),
            {"top_k": 11},
            r"top_k=11 is out of range: the model has 10 classes, so top_k must be "
            r"1\.\.10",
        ),
        (
            (lenet, base),
            {"precision": "float8"},
            r"unknown precision 'float8'; allowed: float32, float16, bfloat16",
        ),
        (
            (lenet, base),
            {"tolerance": 0},
            r"tolerance must be a positive number; received 0\.",
        ),
        (
            (lenet, base),
            {"class_names": ["a", "b"]},
            r"received 2 class names for a model with 10 classes",
        ),
        (
            (lenet, base),
            {"sample_images": np.zeros((2, 8, 8, 1), np.uint8)},
            r"sample images have shape \(2, 8, 8, 1\); the serving input takes "
            r"\(batch, 32, 32, 1\)",
        ),
        (
            (run_dir, base),
            {"raw_shape": (8, 8, 3)},
            r"preprocessing maps raw inputs \(8, 8, 3\) to \(32, 32, 3\), but the "
            r"model takes \(32, 32, 1\)",
        ),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export.export_saved_model(*args, **kwargs)
    with pytest.raises(ValueError, match=r"version 1 already exists"):
        export.export_saved_model(lenet, exported.parent, version=1)
    assert _entries(base) == [] and as_file.read_text() == "x"
    assert _entries(exported.parent) == ["1"]


def _xla_functions(version_dir: Path) -> list[str]:
    """Names of the SavedModel's functions marked for XLA compilation."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library.function
    names = {
        re.sub(r"^__inference_(\w+?)_\d+$", r"\1", f.signature.name)
        for f in library
        if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b
    }
    return sorted(names)


def _write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def test_zoo_predict_on_png_files(exported, tmp_path, capsys):
    digits = _digits_uint8(2)
    first = _write_png(tmp_path / "first.png", digits[0, ..., 0])
    second = _write_png(tmp_path / "second.png", digits[1, ..., 0])
    table = export.predict(exported.parent, [first, second])
    out = tf.saved_model.load(str(exported)).signatures["serving_default"](
        images=tf.constant(digits)
    )
    assert list(table.columns) == ["image", "rank", "class_id", "class_name", "score"]
    assert table["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert table["class_id"].tolist() == out["class_ids"].numpy().ravel().tolist()
    assert table["class_name"].tolist() == [
        CLASS_NAMES[i] for i in out["class_ids"].numpy().ravel()
    ]
    np.testing.assert_allclose(table["score"], out["scores"].numpy().ravel())

    assert (
        cli.main(
            ["predict", str(exported.parent), str(first), str(second), "--top-k", "1"]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "class_name" in lines[0]
    assert lines[1].split()[:4] == [
        str(first),
        "1",
        str(table["class_id"][0]),
        table["class_name"][0],
    ]


def test_predict_resizes_and_converts_with_warnings(exported, tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:12, 4:12] = 255
    big = _write_png(tmp_path / "big_rgb.png", rgb)
    with pytest.warns(UserWarning) as record:
        table = export.predict(exported, [big], top_k=2)
    messages = [str(w.message) for w in record]
    assert any("converted RGB to L (1 channel(s))" in m for m in messages)
    assert any("resized 16x16 to 8x8" in m for m in messages)
    assert len(table) == 2


def test_predict_bad_inputs(exported, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"cannot read image '.*corrupt\.png'"):
        export.predict(exported, [corrupt])
    with pytest.raises(
        ValueError,
        match=r"top_k=4 is not available: this export "
        r"returns 1\.\.3 classes",
    ):
        export.predict(exported, [corrupt], top_k=4)
    with pytest.raises(ValueError, match=r"no export at '.*nowhere'"):
        export.predict(tmp_path / "nowhere", [corrupt])
    assert cli.main(["predict", str(exported), str(corrupt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("zoo predict: error: cannot read image")


def test_zoo_export_and_serve_bench_commands(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = Path("saved_models") / "cli"  # relative, as users type it
    assert (
        cli.main(
            [
                "export",
                str(run_dir),
                "--out",
                str(base),
                "--top-k",
                "2",
                "--jit-compile",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith(str(base / "1"))
    meta = json.loads((base / "1" / "export_meta.json").read_text())
    assert (meta["top_k"], meta["jit_compile"], meta["precision"]) == (
        2,
        True,
        "float32",
    )
    assert meta["verification"]["max_abs_diff"] <= 1e-5
    assert _xla_functions(base / "1") == ["classify"]  # model + top-k, not resize

    table = export.serve_bench(base, [1, 4], repeats=2)
    assert table["batch_size"].tolist() == [1, 4]
    assert (table["median_ms"] > 0).all() and (table["images_per_s"] > 0).all()
    assert (
        cli.main(["serve-bench", str(base), "--batch-sizes", "1,2", "--repeats", "2"])
        == 0
    )
    assert "images_per_s" in capsys.readouterr().out

    assert (
        cli.main(["export", str(run_dir), "--out", str(base), "--precision", "int4"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "zoo export: error: unknown precision 'int4'; allowed: float32, float16, "
        "bfloat16. Use float16 (most GPUs) or bfloat16 (Ampere or newer, TPUs)."
    ]
    assert _entries(base) == ["1"]
    # float16 differs by ~1e-4: a 1e-6 tolerance fails verification, in one line.
    assert (
        cli.main(
            ["export", str(run_dir), "--out", str(base)]
            + ["--precision", "float16", "--tolerance", "1e-6"]
        )
        == 2
    )
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(
        r"zoo export: error: exported SavedModel disagrees with the Keras model: max "
        r"abs difference \S+ > tolerance 1e-06 \(float16, 8 samples, top-1 "
        r"agreement \d+%\); nothing was published\. If this is rounding \(a deep "
        r"network, reduced precision\), export again with a looser tolerance \(zoo "
        r"export --tolerance\)\.",
        err,
    ), err
    assert _entries(base) == ["1"]


# --- regression exports -------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_export(tmp_path_factory):
    """A short `zoo train --task regression` run on the diabetes table, exported."""
    from sklearn.datasets import load_diabetes

    from zoo import training

    root = tmp_path_factory.mktemp("regression")
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(
        root / "diabetes.csv", index=False
    )
    result = training.train(
        "mlp",
        f"csv:{root / 'diabetes.csv'}",
        label_column="target",
        task="regression",
        model_args={"hidden_units": [16]},
        epochs=3,
        verbose=0,
        run_dir=str(root),
        name="run",
    )
    return result, export.export_saved_model(result.run_dir, root / "served")


def test_regression_export_serves_predictions_in_target_units(regression_export):
    result, version_dir = regression_export
    meta = json.loads((version_dir / export.META_FILE).read_text())
    assert meta["task"] == "regression" and meta["outputs"] == ["predictions"]
    assert meta["target_name"] == "target" and meta["num_outputs"] == 1
    assert meta["class_names"] is None and meta["top_k"] is None
    assert meta["input_dtype"] == "float32" and meta["input_shape"] == [10]
    assert meta["verification"]["max_abs_diff"] <= 1e-5
    assert meta["verification"]["top1_agreement"] is None
    # Raw (unstandardized) feature rows in, the target's units out.
    info = data_pipelines.DatasetInfo.from_dict(
        json.loads((result.run_dir / "dataset.json").read_text())
    )
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.drop(columns="target")
    rows = data_pipelines.encode_table(frame.iloc[:32], info)
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
        images=tf.constant(rows)
    )
    assert set(served) == {"predictions"}
    expected = result.model(data_pipelines.preprocessing_model(info)(rows))
    np.testing.assert_allclose(served["predictions"].numpy(), expected, rtol=1e-5)
    assert 25 < float(np.mean(expected)) < 350  # disease progression units


def test_regression_export_signature_and_bad_input(regression_export, tmp_path):
    result, version_dir = regression_export
    section = _serving_default_section(version_dir)
    assert re.search(
        r"outputs\['predictions'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 1\)",
        section,
    )
    with pytest.raises(ValueError, match="top_k and class_names apply to classifiers"):
        export.export_saved_model(result.run_dir, tmp_path / "x", top_k=3)
    assert not (tmp_path / "x").exists()


# --- zoo predict: table rows, batches, 16-bit images ------------------------------


def table_run(root: Path) -> tuple[pd.DataFrame, data_pipelines.DatasetInfo, Path]:
    """A run on a CSV (scikit-learn's wine table plus a categorical column) made by
    hand with an untrained MLP: predict needs the columns, not accuracy."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["cellar"] = np.where(frame["proline"] > 750, "north", "south")
    frame.to_csv(root / "wine.csv", index=False)
    info = data_pipelines.load(f"csv:{root / 'wine.csv'}", label_column="target").info
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "mlp"}))
    (run / "dataset.json").write_text(json.dumps(info.to_dict()))
    keras.utils.set_random_seed(0)
    model = zoo.build("mlp", input_shape=info.input_shape, num_classes=3)
    model.save(run / "best.keras")
    return frame, info, run


@pytest.fixture(scope="module")
def table_export(tmp_path_factory):
    """The table run, exported."""
    root = tmp_path_factory.mktemp("table")
    frame, info, run = table_run(root)
    return frame, info, export.export_saved_model(run, root / "served")


def _served(version_dir: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(images=tf.constant(inputs)).items()}


def test_zoo_predict_on_csv_rows_matches_columns_by_name(
    table_export, tmp_path, capsys
):
    frame, info, version_dir = table_export
    meta = json.loads((version_dir / "export_meta.json").read_text())
    assert meta["feature_columns"] == [*frame.columns[:13], "cellar"]
    assert (version_dir / "dataset.json").is_file()
    # The label column is ignored and the order of the columns does not matter.
    rows = frame.iloc[:70][["cellar", "target", *reversed(frame.columns[:13])]]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    probabilities = _served(version_dir, data_pipelines.encode_table(rows, info))[
        "probabilities"
    ]
    assert cli.main(["predict", str(version_dir.parent), str(tmp_path / "rows.csv"),
                     "--batch-size", "32"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    printed = pd.read_csv(io.StringIO(out))
    names = info.class_names
    assert list(printed.columns) == ["class"] + [f"probability_{c}" for c in names]
    assert len(printed) == 70
    np.testing.assert_allclose(printed.iloc[:, 1:], probabilities, rtol=1e-6)
    expected = [str(names[i]) for i in probabilities.argmax(axis=1)]
    assert printed["class"].astype(str).tolist() == expected
    # --out writes the same CSV atomically, nothing beside it.
    target = tmp_path / "out" / "predictions.csv"
    target.parent.mkdir()
    argv = ["predict", str(version_dir), str(tmp_path / "rows.csv"), "--out", target]
    assert cli.main([str(a) for a in argv]) == 0
    assert capsys.readouterr().out == f"wrote 70 rows to {target}\n"
    assert target.read_text() == out and _entries(target.parent) == [target.name]


def test_zoo_predict_on_csv_rows_of_a_regressor(regression_export, tmp_path):
    result, version_dir = regression_export
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.iloc[:10]
    frame.to_csv(tmp_path / "rows.csv", index=False)
    info = data_pipelines.DatasetInfo.from_dict(
        json.loads((result.run_dir / "dataset.json").read_text())
    )
    table = export.predict(version_dir, [tmp_path / "rows.csv"], batch_size=4)
    served = _served(version_dir, data_pipelines.encode_table(frame, info))
    assert list(table.columns) == ["target"]
    np.testing.assert_allclose(table["target"], served["predictions"][:, 0])


def test_zoo_predict_bad_csv_rows_are_one_line(table_export, tmp_path, capsys):
    frame, _, version_dir = table_export
    frame[["alcohol", "cellar", "target"]].to_csv(tmp_path / "few.csv", index=False)
    bad = frame.head(3).astype({"ash": object})
    bad.loc[1, "ash"] = "lots"
    bad.to_csv(tmp_path / "text.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    for rows, message in [
        ("few.csv", f"'{tmp_path / 'few.csv'}' has no column 'malic_acid', 'ash', "),
        ("text.csv", "column 'ash' of '" + str(tmp_path / "text.csv") + "' holds 1 "
         "non-numeric value(s), e.g. 'lots' in row 2; the model was trained on "),
        ("empty.csv", f"cannot read '{tmp_path / 'empty.csv'}' as CSV rows: No "
         "columns to parse from file. Pass a CSV file with a header row"),
    ]:  # fmt: skip
        assert cli.main(["predict", str(version_dir), str(tmp_path / rows)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"zoo predict: error: {message}"), line
        if rows == "few.csv":
            found = "columns found: alcohol, cellar, target. The model takes: alcohol, "
            assert found in line
    _write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    image = str(tmp_path / "a.png")
    assert cli.main(["predict", str(version_dir), image, image]) == 2
    assert capsys.readouterr().err == (
        f"zoo predict: error: '{version_dir}' takes table rows: pass one CSV file of "
        "them; received 2 files.\n"
    )


def test_predict_streams_images_in_batches(exported, tmp_path, monkeypatch, capsys):
    """Images are read and served batch_size at a time (memory does not grow with
    their number); the table is the one a single batch gives."""
    digits = _digits_uint8(5)
    paths = [_write_png(tmp_path / f"{i}.png", d[..., 0]) for i, d in enumerate(digits)]
    whole = export.predict(exported, paths)
    read = []
    load_images = export.client.load_images
    monkeypatch.setattr(
        export.client,
        "load_images",
        lambda chunk, shape: read.append(len(chunk)) or load_images(chunk, shape),
    )
    streamed = export.predict(exported, paths, batch_size=2)
    assert read == [2, 2, 1]
    pd.testing.assert_frame_equal(streamed, whole, rtol=1e-6)
    printed = []
    for size in ("2", "64"):
        assert cli.main(["predict", str(exported), *map(str, paths),
                         "--batch-size", size]) == 0  # fmt: skip
        lines = capsys.readouterr().out.splitlines()
        printed.append([line.split() for line in lines])
    assert len(printed[0]) == 16 and printed[0][0] == printed[1][0]  # the header
    for a, b in zip(printed[0][1:], printed[1][1:], strict=True):
        # the same image, rank and class; the score up to float32 rounding (the
        # convolutions sum in another order for another batch size)
        assert a[:4] == b[:4] and float(a[4]) == pytest.approx(float(b[4]), abs=2e-6)
    assert cli.main(["predict", str(exported), str(paths[0]), "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == (
        "zoo predict: error: batch_size must be an int >= 1; received 0. Example: "
        "--batch-size 64.\n"
    )


def test_predict_scales_16_bit_png(exported, tmp_path):
    """A 16-bit grayscale PNG (Pillow mode I;16) is scaled to 8 bits, not clipped."""
    from PIL import Image

    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    eight = np.round(sixteen.astype(float) * 255 / 65535).astype(np.uint8)
    assert eight.max() == 255 and len(np.unique(eight)) == 64  # clipping gives 2
    with pytest.warns(UserWarning, match=r"scaled 16-bit I;16 values to 8 bits"):
        loaded = export.load_images([tmp_path / "deep.png"], (8, 8, 1))
    np.testing.assert_array_equal(loaded[0, ..., 0], eight)
    _write_png(tmp_path / "eight.png", eight)
    with pytest.warns(UserWarning):
        table = export.predict(exported, [tmp_path / "deep.png"])
    same = export.predict(exported, [tmp_path / "eight.png"])
    pd.testing.assert_frame_equal(table.iloc[:, 1:], same.iloc[:, 1:])


# --- damaged files: one line naming the file, exit code 2 --------------------------


def _rezip(path: Path, name: str, text: str | None) -> None:
    """Rewrite one member of a .keras archive (None: truncate the archive)."""
    import zipfile

    data = path.read_bytes()
    if text is None:
        path.write_bytes(data[: len(data) // 2])
        return
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = text.encode()
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def _unknown_module(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    config.update(module="evilmod", class_name="Payload", registered_name=None)
    _rezip(path, "config.json", json.dumps(config))


DAMAGES = {
    "truncated .keras": (
        "best.keras",
        lambda p: _rezip(p, "", None),
        "cannot load '{file}' as a Keras model: it is not a .keras archive",
    ),
    ".keras with a bad config.json": (
        "best.keras",
        lambda p: _rezip(p, "config.json", '{"module": '),
        "cannot load '{file}' as a Keras model: ",
    ),
    ".keras naming an unknown module": (
        "best.keras",
        _unknown_module,
        "cannot load '{file}' as a Keras model: ",
    ),
    "damaged metrics.json": (
        "metrics.json",
        lambda p: p.write_text('{"accuracy": 0.9'),
        "'{file}' is damaged: not valid JSON (Expecting ",
    ),
    "damaged config.json": (
        "config.json",
        lambda p: p.write_bytes(b"\x00\xff" * 8),
        "'{file}' is damaged: not valid JSON (",
    ),
    "config.json not an object": (
        "config.json",
        lambda p: p.write_text("[1, 2]"),
        "'{file}' is damaged: ",
    ),
    "damaged dataset.json": (
        "dataset.json",
        lambda p: p.write_text(""),
        "'{file}' is damaged: not valid JSON (Expecting value",
    ),
    "dataset.json without input_shape": (
        "dataset.json",
        lambda p: p.write_text(json.dumps({"source": "digits", "raw_shape": [8]})),
        "'{file}' is damaged (missing 'input_shape'): it does not describe",
    ),
    "no dataset.json": (
        "dataset.json",
        lambda p: p.unlink(),
        "run directory '{run}' has no dataset.json (the input size, preprocessing "
        "and classes of its data), so it cannot be {done} faithfully.",
    ),
}
COMMANDS = {
    "export": (["export", "{run}", "--out", "{out}"], "exported"),
    "evaluate": (["evaluate", "{run}"], "evaluated"),
    "train": (["train", "{run}/best.keras", "--run-dir", "{out}"], None),
    "finetune": (["finetune", "{run}", "--run-dir", "{out}"], None),
}
CASES = [
    (command, damage)
    for command in COMMANDS
    for damage in DAMAGES
    if command in ("export", "evaluate") or DAMAGES[damage][0] == "best.keras"
    if not (command == "evaluate" and DAMAGES[damage][0] == "metrics.json")
]


@pytest.mark.parametrize("command, damage", CASES)
def test_damaged_run_files_are_one_line(
    command, damage, run_dir, tmp_path, capsys, monkeypatch
):
    """Every damaged run file is refused in one line naming it, exit code 2, and
    nothing is written (no export version, no run directory)."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    name, corrupt, message = DAMAGES[damage]
    corrupt(run / name)
    argv, done = COMMANDS[command]
    out = tmp_path / "out"
    argv = [a.format(run=run, out=out) for a in argv]
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    expected = message.format(file=run / name, run=run, done=done)
    assert err.startswith(f"zoo {command}: error: {expected}"), err
    assert len(err.splitlines()) == 1 and not out.exists()


SAVED_MODEL_DAMAGES = {
    "corrupt saved_model.pb": (
        lambda v: (v / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 10),
        "cannot load the SavedModel in '{version}': ",
    ),
    "no variables": (
        lambda v: shutil.rmtree(v / "variables"),
        "cannot load the SavedModel in '{version}': ",
    ),
    "damaged export_meta.json": (
        lambda v: (v / "export_meta.json").write_text('{"model": "lenet5", '),
        "'{version}/export_meta.json' is damaged: not valid JSON (",
    ),
    "export_meta.json without input_shape": (
        lambda v: (v / "export_meta.json").write_text('{"input_dtype": "uint8"}'),
        "'{version}/export_meta.json' lacks input_shape, outputs, class_names, "
        "top_k: it describes",
    ),
}


@pytest.mark.parametrize("command", ["predict", "serve-bench"])
@pytest.mark.parametrize("damage", SAVED_MODEL_DAMAGES)
def test_damaged_saved_model_is_one_line(command, damage, exported, tmp_path, capsys):
    version = tmp_path / "base" / "1"
    shutil.copytree(exported, version)
    corrupt, message = SAVED_MODEL_DAMAGES[damage]
    corrupt(version)
    image = _write_png(tmp_path / "a.png", _digits_uint8(1)[0, ..., 0])
    args = [str(image)] if command == "predict" else ["--repeats", "1"]
    assert cli.main([command, str(version.parent), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zoo {command}: error: {message.format(version=version)}")
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("writer", ["saved_model", "keras"])
def test_full_disk_during_export_is_one_line(
    writer, run_dir, tmp_path, capsys, monkeypatch
):
    """A full disk while the SavedModel (TensorFlow: an OpError naming the file in
    its text) or model.keras (Keras: an OSError naming no file) is written: one
    line naming the path, and no version is published."""
    from zoo.export import savedmodel

    def saved_model(module, path, signatures):
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{path}/variables/variables.index; No space left on device"
        )

    def keras_file(model, path, *args, **kwargs):
        raise OSError(28, "No space left on device")

    if writer == "saved_model":
        monkeypatch.setattr(savedmodel.tf.saved_model, "save", saved_model)
    else:
        monkeypatch.setattr(keras.Model, "save", keras_file)
    base = tmp_path / "served"
    assert cli.main(["export", str(run_dir), "--out", str(base)]) == 2
    err = capsys.readouterr().err
    path = (
        rf"{re.escape(str(base))}/\.tmp-export-\S+/variables/variables\.index"
        if writer == "saved_model"
        else re.escape(str(base))
    )
    assert re.fullmatch(
        rf"zoo export: error: cannot write '{path}': No space left on device\. Free "
        r"some space and run the command again\.\n",
        err,
    ), err
    assert _entries(base) == []
