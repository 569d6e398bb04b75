"""Exported SavedModel vs the Keras model it came from (issue 5, figures P3a/P3b).

P3a: batch-1 latency of `serving_default` <= 0.15x eager `model(x)`.
P3b: batch-64 throughput of `serving_default` >= 1.0x `model.predict`.

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
        [--fold-batch-norm]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

import zoo
from zoo import export

MODELS = {"lenet5": (32, 32, 1), "resnet20": (32, 32, 3), "resnet50": (64, 64, 3)}
P3A_MAX, P3B_MIN = 0.15, 1.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--fold-batch-norm", action="store_true")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        rows = [
            bench(name, MODELS[name], args.repeats, work, args.fold_batch_norm)
            for name in names
        ]

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
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
