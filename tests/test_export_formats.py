"""ONNX and OpenVINO exports: each verified by its own runtime in a fresh process,
the same serving contract as the SavedModel, Triton layout, versions, kills, CLI,
and parity over the registry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_export import (  # noqa: F401  (lenet, run_dir: fixtures)
    CLASS_NAMES,
    ROOT,
    _digits_uint8,
    _entries,
    _tree_digest,
    _write_png,
    kill_during_verification,
    lenet,
    run_dir,
)

import data_pipelines
import zoo
from zoo import cli, export

OTHER_FORMATS = ("onnx", "openvino")


@pytest.fixture(scope="module")
def base(run_dir, tmp_path_factory) -> Path:  # noqa: F811
    """One base holding the run in every format: 1 SavedModel, 2 ONNX, 3 OpenVINO,
    each verified on 64 real digits."""
    base = tmp_path_factory.mktemp("served") / "lenet5_digits"
    for fmt in export.FORMATS:
        export.export(
            run_dir, base, format=fmt, top_k=3, sample_images=_digits_uint8(64)
        )
    return base


def _meta(version_dir: Path) -> dict:
    return json.loads((version_dir / "export_meta.json").read_text())


@pytest.mark.parametrize(
    "version, fmt, files",
    [
        (2, "onnx", {"model.onnx"}),
        (3, "openvino", {"model.xml", "model.bin"}),
    ],
)
def test_each_format_verified_by_its_own_runtime(base, version, fmt, files):
    version_dir = base / str(version)
    assert files | {"export_meta.json", "model.keras", "preprocessing.keras"} <= set(
        _entries(version_dir)
    )
    assert "saved_model.pb" not in _entries(version_dir)
    meta = _meta(version_dir)
    assert (meta["format"], meta["precision"], meta["version"]) == (
        fmt,
        "float32",
        version,
    )
    assert meta["input_shape"] == [8, 8, 1] and meta["input_dtype"] == "uint8"
    assert meta["class_names"] == CLASS_NAMES and meta["top_k"] == 3
    assert meta["export_seconds"] > 0
    check = meta["verification"]
    assert check["num_samples"] == 64 and check["tolerance"] == 1e-5
    assert check["max_abs_diff"] <= 1e-5 and check["batch1_max_abs_diff"] <= 1e-5
    assert check["top1_agreement"] == 1.0
    # The fresh process imported neither this project nor TensorFlow/Keras.
    assert check["imported_project"] == []
    # Verified again, now on other digits, through the public call.
    report = export.verify(version_dir, _digits_uint8(128)[64:])
    assert report.ok and report.format == fmt and report.top1_agreement == 1.0


def test_same_outputs_as_the_saved_model(base):
    images = _digits_uint8(64)
    outputs = {}
    for version in (1, 2, 3):
        version_dir = base / str(version)
        serve = export.client.load_serving(version_dir, _meta(version_dir))
        outputs[version] = serve(images)
    for version in (2, 3):
        assert sorted(outputs[version]) == ["class_ids", "probabilities", "scores"]
        assert outputs[version]["class_ids"].dtype == np.int32
        assert outputs[version]["probabilities"].dtype == np.float32
        np.testing.assert_array_equal(
            outputs[version]["class_ids"], outputs[1]["class_ids"]
        )
        diff = np.abs(outputs[version]["probabilities"] - outputs[1]["probabilities"])
        assert diff.max() <= 1e-5


def test_runtime_settings_recorded_and_used_by_the_clients(base, tmp_path):
    """export_meta.json records the latency settings of each runtime (for a
    server); predict and serve-bench open the runtime with those of the meta."""
    onnx_meta, ov_meta = _meta(base / "2"), _meta(base / "3")
    assert onnx_meta["runtime_config"] == {
        "session_options": {
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "execution_mode": "ORT_SEQUENTIAL",
            "intra_op_num_threads": 0,
        },
        "session_config_entries": {"session.force_spinning_stop": "1"},
    }
    assert ov_meta["runtime_config"] == {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    session = export.client.load_serving(base / "2", onnx_meta).session
    options = session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert str(options.execution_mode) == "ExecutionMode.ORT_SEQUENTIAL"
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"
    compiled = export.client.load_serving(base / "3", ov_meta).compiled
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert compiled.get_property("NUM_STREAMS") == 1
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    # A server's own choice, edited into the meta, is what the client uses.
    ov_meta["runtime_config"]["ENABLE_CPU_PINNING"] = "NO"
    onnx_meta["runtime_config"]["session_options"]["intra_op_num_threads"] = 1
    compiled = export.client.load_serving(base / "3", ov_meta).compiled
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    session = export.client.load_serving(base / "2", onnx_meta).session
    assert session.get_session_options().intra_op_num_threads == 1


def test_triton_config_names_match_the_onnx_model(base):
    import onnx

    config = (base / "config.pbtxt").read_text()
    assert config.startswith('name: "lenet5_digits"\nbackend: "onnxruntime"\n')
    tensors = re.findall(
        r'name: "(\w+)" data_type: TYPE_(\w+) dims: \[([\d, ]+)\]', config
    )
    model = onnx.load(str(base / "2" / "model.onnx"))
    types = {
        onnx.TensorProto.UINT8: "UINT8",
        onnx.TensorProto.FLOAT: "FP32",
        onnx.TensorProto.INT32: "INT32",
    }

    def described(values):
        return [
            (
                v.name,
                types[v.type.tensor_type.elem_type],
                ", ".join(str(d.dim_value) for d in v.type.tensor_type.shape.dim[1:]),
            )
            for v in values
        ]

    onnx_tensors = described(model.graph.input) + described(model.graph.output)
    assert sorted(tensors) == sorted(onnx_tensors)
    assert sorted(tensors) == [
        ("class_ids", "INT32", "3"),
        ("images", "UINT8", "8, 8, 1"),
        ("probabilities", "FP32", "10"),
        ("scores", "FP32", "3"),
    ]
    # Dynamic batch: ONNX's first dimension is symbolic, Triton's implicit.
    assert all(not v.type.tensor_type.shape.dim[0].dim_value for v in model.graph.input)
    assert "max_batch_size: 256" in config and "dynamic_batching { }" in config
    # Only the ONNX versions of a base that also holds other formats.
    assert "version_policy: { specific: { versions: [2] } }" in config


def test_versions_never_overwritten_across_formats(base, run_dir, tmp_path):  # noqa: F811
    copy = tmp_path / "lenet5_digits"
    shutil.copytree(base, copy)
    before = {v: _tree_digest(copy / str(v)) for v in (1, 2, 3)}
    path = export.export(run_dir, copy, format="onnx", top_k=3)
    assert path == copy / "4"
    assert {v: _tree_digest(copy / str(v)) for v in (1, 2, 3)} == before
    assert "versions: [2, 4]" in (copy / "config.pbtxt").read_text()
    for fmt in export.FORMATS:
        with pytest.raises(
            ValueError, match=r"version 2 already exists in .*\[1, 2, 3, 4\]"
        ):
            export.export(run_dir, copy, format=fmt, version=2)
    assert _entries(copy) == ["1", "2", "3", "4", "config.pbtxt"]
    assert export.resolve_version_dir(copy) == copy / "4"
    assert export.resolve_version_dir(copy, "openvino") == copy / "3"


@pytest.mark.parametrize(
    "fmt, model_file", [("onnx", "model.onnx"), ("openvino", "model.xml")]
)
def test_killed_export_leaves_no_partial_version(base, fmt, model_file, tmp_path):
    copy = tmp_path / "lenet5_digits"
    shutil.copytree(base, copy)
    before = _tree_digest(copy)
    partial = kill_during_verification(fmt, base / "1" / "model.keras", copy, tmp_path)
    assert (partial / model_file).is_file()
    assert export.list_versions(copy) == [1, 2, 3]
    assert {
        k: v for k, v in _tree_digest(copy).items() if not k.startswith(".tmp")
    } == before
    # The next export removes the dead process's leftovers and takes version 4.
    model = keras.saving.load_model(base / "1" / "model.keras")
    assert export.export(model, copy, format=fmt) == copy / "4"
    assert _entries(copy) == ["1", "2", "3", "4", "config.pbtxt"]


def test_zoo_predict_on_each_format(base, tmp_path, capsys):
    paths = [
        _write_png(tmp_path / f"{i}.png", img[..., 0])
        for i, img in enumerate(_digits_uint8(4))
    ]
    tables = {}
    for version in (1, 2, 3):
        assert cli.main(["predict", str(base / str(version)), *map(str, paths)]) == 0
        tables[version] = capsys.readouterr().out
    rows = [line.split() for line in tables[1].splitlines()[1:]]
    assert len(rows) == 4 * 3 and [r[2] for r in rows][::3]  # image rank class_id ...
    for version in (2, 3):
        other = [line.split() for line in tables[version].splitlines()[1:]]
        assert [r[:4] for r in other] == [r[:4] for r in rows]  # same classes, ranks
        np.testing.assert_allclose(
            [float(r[4]) for r in other], [float(r[4]) for r in rows], atol=1e-5
        )
    # A base: its latest version, whatever its format (3, OpenVINO).
    assert cli.main(["predict", str(base), str(paths[0])]) == 0
    assert capsys.readouterr().out.split("\n")[1].split()[:4] == rows[0][:4]


def test_serve_bench_times_formats_side_by_side(base, capsys):
    table = export.serve_bench(base, [1, 4], repeats=3)
    assert table["format"].tolist() == ["savedmodel", "onnx", "openvino"] * 2
    assert table["version"].tolist() == [1, 2, 3] * 2
    assert set(table["precision"]) == {"float32"}
    assert (table["median_ms"] > 0).all() and table.groupby(
        "batch_size"
    ).fastest.sum().eq(1).all()
    args = [
        "serve-bench",
        str(base),
        "--formats",
        "onnx,savedmodel",
        "--batch-sizes",
        "1,2",
        "--repeats",
        "2",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "read: onnx version 2 (float32), savedmodel version 1 (float32); "
        "median of 2 interleaved calls per format" in out
    )
    assert sum(line.startswith("fastest at batch ") for line in out) == 2


@pytest.mark.slow
def test_serve_bench_on_a_run_exports_each_format_first(run_dir, tmp_path, capsys):  # noqa: F811
    assert (
        cli.main(["serve-bench", str(run_dir), "--batch-sizes", "1", "--repeats", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "read: savedmodel version 1 (float32), onnx version 2 (float32), "
        "openvino version 3 (float32)" in out
    )
    assert not list(run_dir.glob("*bench*"))


def test_reduced_precision_per_format(lenet, tmp_path):  # noqa: F811
    images = _digits_uint8(64)
    info = data_pipelines.DatasetInfo(
        source="digits",
        num_classes=10,
        class_names=CLASS_NAMES,
        input_shape=(32, 32, 1),
        raw_shape=(8, 8, 1),
        sizes={"train": 1, "val": 1, "test": 1},
        mean=[0.3],
        std=[0.4],
    )
    options = {
        "preprocessing": data_pipelines.preprocessing_model(info),
        "sample_images": images,
    }
    onnx16 = export.export(
        lenet, tmp_path / "b", format="onnx", precision="float16", **options
    )
    ov16 = export.export(
        lenet, tmp_path / "b", format="openvino", precision="bfloat16", **options
    )
    for path, tolerance in ((onnx16, 1e-2), (ov16, 1e-1)):
        check = _meta(path)["verification"]
        assert check["tolerance"] == tolerance
        assert (
            0 < check["max_abs_diff"] <= tolerance and check["top1_agreement"] >= 0.95
        )
    import onnx

    weights = onnx.load(str(onnx16 / "model.onnx")).graph.initializer
    filters = {w.data_type for w in weights if len(w.dims) == 4 and np.prod(w.dims) > 1}
    assert filters == {onnx.TensorProto.FLOAT16}  # the convolutions' filters
    assert _meta(ov16)["inference_precision_hint"] == "bf16"


@keras.saving.register_keras_serializable(package="test_export_formats")
class Bessel(keras.layers.Layer):
    """A layer no converter handles: TensorFlow's BesselI0e op."""

    def call(self, x):
        return tf.math.special.bessel_i0e(x)


def test_bad_input_is_one_line_and_writes_nothing(
    run_dir,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    out = tmp_path / "out"

    def zoo_export(*args):
        code = cli.main(["export", str(run_dir), "--out", str(out), *args])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and not out.exists()
        return line

    assert zoo_export("--format", "tflite") == (
        "zoo export: error: unknown export format 'tflite'; allowed: savedmodel, onnx, "
        "openvino. Pass one of them to --format."
    )
    assert zoo_export("--format", "onnx", "--precision", "bfloat16") == (
        "zoo export: error: precision 'bfloat16' is not supported by --format onnx; "
        "allowed: float32, float16. Pass one of them to --precision."
    )
    assert zoo_export("--format", "openvino", "--jit-compile") == (
        "zoo export: error: jit_compile (XLA) applies to SavedModel exports; --format "
        "openvino is compiled by its own runtime. Drop --jit-compile."
    )
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openvino" else find_spec(name, *a),
    )
    assert zoo_export("--format", "openvino") == (
        "zoo export: error: the openvino format needs openvino, which is not "
        "installed; install the extra: pip install 'keras-model-zoo[openvino]' "
        "(or pip install openvino)."
    )
    monkeypatch.undo()

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(Bessel(name="bessel")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    for fmt, converter in (
        ("onnx", r"tf2onnx [\d.]+ has no ONNX conversion"),
        ("openvino", r"OpenVINO [\w.\-]+ has no conversion rule"),
    ):
        with pytest.raises(ValueError) as caught:
            export.export(model, out, format=fmt)
        assert re.fullmatch(
            rf"--format {fmt} cannot convert layer 'bessel' \(BesselI0e\): "
            rf"{converter} for it; nothing was written\. Export this model as a "
            r"SavedModel \(--format savedmodel\), or replace the layer\.",
            str(caught.value),
        ), caught.value
        assert _entries(out) == []  # the base, empty: no version, no temporary dir


@pytest.mark.parametrize(
    "task, signatures, named",
    [
        (
            "reconstruction",
            ["encode", "reconstruct", "generate", "decode"],
            "encode, reconstruct, generate or decode signature",
        ),
        ("generation", ["generate", "decode"], "generate or decode signature"),
    ],
)
def test_predict_refuses_generative_exports(task, signatures, named, tmp_path, capsys):
    version_dir = tmp_path / "served" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"")
    (version_dir / "export_meta.json").write_text(
        json.dumps({"model": "vae", "task": task, "signatures": signatures})
    )
    png = _write_png(tmp_path / "a.png", _digits_uint8(1)[0, ..., 0])
    assert cli.main(["predict", str(tmp_path / "served"), str(png)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"zoo predict: error: '{version_dir}' is a {task} export (vae): zoo "
        "predict and serve-bench serve classifiers and regressors. Call "
        f"the SavedModel's {named} instead (docs/generative.md)."
    ]


# --- parity over the registry ---------------------------------------------------------


def _classifier_families() -> list[tuple[str, dict]]:
    """One model per registered classifier family, plus the variants whose layers
    differ: ImageNet and CIFAR ResNets (its padding layer), GoogLeNet with aux heads
    (dropped: the main output is served), each recurrent cell."""
    cases, families = [], set()
    for name in zoo.list_models():
        card = zoo.model_card(name)
        if getattr(card, "task", "classification") != "classification":
            continue
        if card.family not in families or card.family == "recurrent":
            families.add(card.family)
            cases.append((name, {}))
    cases.append(("resnet20", {}))
    cases.append(("googlenet", {"aux_heads": True}))
    return [
        pytest.param(n, o, id=n + "".join(f"-{k}" for k, _ in o))
        for n, o in sorted({(n, tuple(sorted(o.items()))) for n, o in cases})
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name, options", _classifier_families())
def test_every_family_at_float32_parity_in_every_format(name, options, tmp_path):
    card = zoo.model_card(name)
    size = max(card.min_input, 8)
    channels = card.reference_input[-1]
    keras.utils.set_random_seed(0)
    model = zoo.build(
        name, input_shape=(size, size, channels), num_classes=10, **dict(options)
    )
    info = data_pipelines.DatasetInfo(
        source="digits",
        num_classes=10,
        class_names=CLASS_NAMES,
        input_shape=(size, size, channels),
        raw_shape=(8, 8, 1),
        sizes={"train": 1, "val": 1, "test": 1},
        mean=[0.3],
        std=[0.4],
    )
    for fmt in OTHER_FORMATS:
        path = export.export(
            model,
            tmp_path / fmt,
            format=fmt,
            preprocessing=data_pipelines.preprocessing_model(info),
            sample_images=_digits_uint8(64),
        )
        check = _meta(path)["verification"]
        assert check["max_abs_diff"] <= 1e-5 and check["batch1_max_abs_diff"] <= 1e-5
        assert check["top1_agreement"] == 1.0 and check["num_samples"] == 64


def test_zoo_help_and_list_import_no_runtime():
    script = (
        "import contextlib, io, sys\n"
        "from zoo import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['list'])\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        cli.main(['export', '--help'])\n"
        "runtimes = ('tensorflow', 'keras', 'onnx', 'onnxruntime', 'tf2onnx', "
        "'openvino')\n"
        "print([m for m in runtimes if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout == "[]\n", out.stderr
