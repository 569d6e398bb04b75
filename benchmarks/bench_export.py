"""Exports vs the Keras model (issue 5, P3a/P3b), formats side by side (issue 15,
P3c) and reduced precision on this CPU.

P3a: batch-1 latency of `serving_default` <= 0.15x eager `model(x)`.
P3b: batch-64 throughput of `serving_default` >= 1.0x `model.predict`.
P3c (`--formats`): batch-1 latency of the fastest format (SavedModel, ONNX
Runtime, OpenVINO) / this project's SavedModel, goal <= 0.4 for resnet50; with
each format's export time (conversion and verification) and size, timed by
`zoo.export.serve_bench` (interleaved over the formats, median), each runtime
with the settings the export records (`runtime_config`), or with the runtimes'
defaults (`--runtime-defaults`, for comparison).
Precision (`--precision`): batch-1 latency and batch-64 images/s of every
precision each format serves, interleaved, median.

Each model is exported the default way (raw uint8 input, Rescaling inside, top-k
outputs, float32, convolution filters as graph constants), loaded with
`tf.saved_model.load` as TF Serving would, and fed the same images as the Keras
model (which gets them already rescaled): the SavedModel does strictly more work.
Repeats are interleaved (A, B, A, B, ...) so load from other processes hits both
sides alike; the ratio is of the medians. `--fold-batch-norm` measures the opt-in
folded export instead (a model whose export fails verification is listed with
its difference). The same export with its convolution filters kept as variables
(`freeze_filters=False`) is timed at batch 1 in the same loop, for comparison.

    python3 benchmarks/bench_export.py [--models lenet5,resnet20] [--repeats 15]
        [--fold-batch-norm | --formats [--runtime-defaults] | --precision]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import zoo
from zoo import export

MODELS = {"lenet5": (32, 32, 1), "resnet20": (32, 32, 3), "resnet50": (64, 64, 3)}
P3A_MAX, P3B_MIN, P3C_MAX = 0.15, 1.0, 0.4


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each of `fns`, timed in turn after 3 warm-ups each."""
    for _ in range(3):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def bench(
    name: str, shape: tuple[int, ...], repeats: int, work: str, fold: bool
) -> dict:
    """P3a and P3b figures for one registered model, for the default export and
    (batch 1) for the same export with its filters kept as variables."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = zoo.build(name, input_shape=shape, num_classes=10)
    row = {"model": name, "input": "x".join(map(str, shape))}
    serve = {}
    for kind, freeze in (("frozen", "auto"), ("variables", False)):
        try:
            path = export.export_saved_model(
                model, f"{work}/{name}", fold_batch_norm=fold, freeze_filters=freeze
            )
        except export.VerificationError as err:
            diff = re.search(r"max abs difference (\S+ > tolerance \S+)", str(err))
            return {**row, "error": f"max abs difference {diff.group(1)}"}
        serve[kind] = tf.saved_model.load(str(path)).signatures["serving_default"]

    raw = np.random.default_rng(0).integers(0, 256, (64, *shape), dtype=np.uint8)
    raw1, raw64 = tf.constant(raw[:1]), tf.constant(raw)
    x1, x64 = tf.constant(raw[:1] / 255, tf.float32), raw.astype(np.float32) / 255

    sm1, eager1, var1 = interleaved(
        [
            lambda: serve["frozen"](images=raw1)["probabilities"].numpy(),
            lambda: model(x1, training=False).numpy(),
            lambda: serve["variables"](images=raw1)["probabilities"].numpy(),
        ],
        repeats,
    )
    sm64, predict64 = interleaved(
        [
            lambda: serve["frozen"](images=raw64)["probabilities"].numpy(),
            lambda: model.predict(x64, batch_size=64, verbose=0),
        ],
        repeats,
    )
    return {
        **row,
        "sm1_ms": sm1 * 1e3,
        "eager1_ms": eager1 * 1e3,
        "p3a": sm1 / eager1,
        "var1_ms": var1 * 1e3,
        "var_p3a": var1 / eager1,
        "sm64_ips": 64 / sm64,
        "predict64_ips": 64 / predict64,
        "p3b": predict64 / sm64,
    }


def _size_mb(version_dir: Path, fmt: str) -> float:
    """Megabytes of the format's own files (not model.keras and the metadata)."""
    files = {
        "savedmodel": ["saved_model.pb", "variables"],
        "onnx": ["model.onnx"],
        "openvino": ["model.xml", "model.bin"],
    }[fmt]
    paths = [p for f in files for p in [version_dir / f, *(version_dir / f).rglob("*")]]
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


# What runtime_config says when a server (or this benchmark) leaves every
# setting to ONNX Runtime's and OpenVINO's defaults (the precision stays f32).
RUNTIME_DEFAULTS = {
    "onnx": {"session_options": {}, "session_config_entries": {}},
    "openvino": {"INFERENCE_PRECISION_HINT": "f32"},
}


def bench_formats(
    name: str, shape: tuple[int, ...], repeats: int, work: str, defaults: bool
) -> list:
    """P3c rows of one model: each format's batch-1 and batch-64 medians, export
    time and size, from one interleaved `serve_bench` over the three formats
    (`defaults`: ONNX Runtime and OpenVINO with their default settings)."""
    import keras

    keras.utils.set_random_seed(0)
    model = zoo.build(name, input_shape=shape, num_classes=10)
    base = Path(work) / f"{name}-formats"
    seconds = {}
    for fmt in export.FORMATS:
        start = time.perf_counter()
        # ONNX Runtime and OpenVINO fold the batch norms into the convolutions,
        # which moves an initial ResNet-50's probabilities by ~1e-4 (float32
        # rounding, as --fold-batch-norm does): the table shows the difference.
        path = export.export(model, base, format=fmt, tolerance=1e-3)
        seconds[fmt] = time.perf_counter() - start  # conversion and verification
        if defaults and fmt in RUNTIME_DEFAULTS:
            meta = json.loads((path / export.META_FILE).read_text())
            meta["runtime_config"] = RUNTIME_DEFAULTS[fmt]
            (path / export.META_FILE).write_text(json.dumps(meta))
    table = export.serve_bench(base, (1, 64), repeats=repeats)
    rows = []
    for fmt, timings in table.groupby("format", sort=False):
        version_dir = base / str(timings.version.iloc[0])
        meta = json.loads((version_dir / export.META_FILE).read_text())
        b1, b64 = timings.set_index("batch_size").loc[[1, 64]].itertuples()
        rows.append(
            {
                "model": name,
                "input": "x".join(map(str, shape)),
                "format": fmt,
                "b1_ms": b1.median_ms,
                "b64_ips": b64.images_per_s,
                "export_s": seconds[fmt],
                "size_mb": _size_mb(version_dir, fmt),
                "max_abs_diff": meta["verification"]["max_abs_diff"],
            }
        )
    return rows


def print_formats(rows: list, repeats: int, defaults: bool) -> None:
    settings = (
        "runtime defaults"
        if defaults
        else f"ONNX Runtime {export.layout.ONNX_RUNTIME_CONFIG}, OpenVINO "
        f"{export.layout.OPENVINO_RUNTIME_CONFIG}"
    )
    print(
        f"Formats side by side, {time.strftime('%Y-%m-%d')}, CPU ({os.cpu_count()} "
        f"cores, load average {_load()}), float32, default exports, median of "
        f"{repeats} calls interleaved over the formats (zoo.export.serve_bench); "
        f"{settings}\n"
    )
    print(
        "| model | input | format | b1 ms | P3c: b1 / SavedModel (goal <= "
        f"{P3C_MAX} resnet50) | b64 img/s | export s | size MB | max abs diff |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        saved = next(
            s["b1_ms"]
            for s in rows
            if s["model"] == r["model"] and s["format"] == "savedmodel"
        )
        print(
            f"| {r['model']} | {r['input']} | {r['format']} | {r['b1_ms']:.3f} | "
            f"{r['b1_ms'] / saved:.2f} | {r['b64_ips']:.0f} | {r['export_s']:.1f} | "
            f"{r['size_mb']:.2f} | {r['max_abs_diff']:.1g} |"
        )


def bench_precision(name: str, shape: tuple[int, ...], repeats: int, work: str):
    """Batch-1 ms and batch-64 images/s of each (format, precision), one
    interleaved loop per batch size."""
    import keras

    keras.utils.set_random_seed(0)
    model = zoo.build(name, input_shape=shape, num_classes=10)
    serves = {}
    for fmt, precisions in export.PRECISIONS.items():
        for precision in precisions:
            path = export.export(
                model,
                Path(work) / f"{name}-precision",
                format=fmt,
                precision=precision,
                tolerance=max(1e-3, export.TOLERANCES[precision]),
            )
            meta = json.loads((path / export.META_FILE).read_text())
            serves[fmt, precision] = export.client.load_serving(path, meta)
    raw = np.random.default_rng(0).integers(0, 256, (64, *shape), dtype=np.uint8)
    b1 = interleaved([lambda s=s: s(raw[:1]) for s in serves.values()], repeats)
    b64 = interleaved([lambda s=s: s(raw) for s in serves.values()], repeats)
    return [
        {
            "model": name,
            "format": fmt,
            "precision": precision,
            "b1_ms": t1 * 1e3,
            "b64_ips": 64 / t64,
        }
        for (fmt, precision), t1, t64 in zip(serves, b1, b64, strict=True)
    ]


def print_precision(rows: list, repeats: int) -> None:
    print(
        f"Precision on this CPU, {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, "
        f"load average {_load()}), median of {repeats} interleaved repeats\n"
    )
    print("| model | format | precision | b1 ms | b64 img/s | b64 vs float32 |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        base = next(
            s["b64_ips"]
            for s in rows
            if (s["model"], s["format"], s["precision"])
            == (r["model"], r["format"], "float32")
        )
        print(
            f"| {r['model']} | {r['format']} | {r['precision']} | {r['b1_ms']:.3f} | "
            f"{r['b64_ips']:.0f} | {r['b64_ips'] / base:.2f}x |"
        )


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=15)
    table = parser.add_mutually_exclusive_group()
    table.add_argument("--fold-batch-norm", action="store_true")
    table.add_argument("--formats", action="store_true", help="P3c table")
    table.add_argument("--precision", action="store_true", help="precision table")
    parser.add_argument(
        "--runtime-defaults",
        action="store_true",
        help="--formats with ONNX Runtime's and OpenVINO's default settings",
    )
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    if args.runtime_defaults and not args.formats:
        parser.error("--runtime-defaults applies to --formats")
    if args.formats:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
            rows = [
                r
                for n in names
                for r in bench_formats(
                    n, MODELS[n], args.repeats, work, args.runtime_defaults
                )
            ]
        print_formats(rows, args.repeats, args.runtime_defaults)
        return
    if args.precision:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
            rows = [
                r
                for n in names
                for r in bench_precision(n, MODELS[n], args.repeats, work)
            ]
        print_precision(rows, args.repeats)
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        rows = [
            bench(name, MODELS[name], args.repeats, work, args.fold_batch_norm)
            for name in names
        ]

    load = _load()
    export_kind = "folded" if args.fold_batch_norm else "default"
    print(
        f"SavedModel {export_kind} export vs Keras, {time.strftime('%Y-%m-%d')}, CPU "
        f"({os.cpu_count()} cores, load average {load}), median of "
        f"{args.repeats} interleaved repeats\n"
    )
    print(
        "| model | input | SavedModel b1 ms | eager model(x) b1 ms | P3a ratio "
        f"(<= {P3A_MAX}) | filters as variables: b1 ms, ratio | SavedModel b64 "
        f"img/s | predict b64 img/s | P3b ratio (>= {P3B_MIN}) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['input']} | fails verification: {r['error']}")
            continue
        p3a = "pass" if r["p3a"] <= P3A_MAX else "MISS"
        p3b = "pass" if r["p3b"] >= P3B_MIN else "MISS"
        print(
            f"| {r['model']} | {r['input']} | {r['sm1_ms']:.2f} | "
            f"{r['eager1_ms']:.2f} | {r['p3a']:.3f} {p3a} | {r['var1_ms']:.2f}, "
            f"{r['var_p3a']:.3f} | {r['sm64_ips']:.0f} | "
            f"{r['predict64_ips']:.0f} | {r['p3b']:.2f} {p3b} |"
        )


if __name__ == "__main__":
    main()
