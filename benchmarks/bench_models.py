"""Train-step throughput of zoo models against keras.applications (weights=None).

Same input, batch, optimizer and loss for both; repeats interleaved with the order
alternating (zoo, keras, keras, zoo, ...: a drift in machine load then hits both
alike) and the median of the per-repeat ratios printed as a markdown table, with
their range. Goal (issue 2): ratio >= 1.00.

    python3 benchmarks/bench_models.py [--size 64] [--batch 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402

# keras.applications.VGG16 has no dropout: compare the same architecture.
PAIRS = [
    ("resnet50", keras.applications.ResNet50, {}),
    ("vgg16", keras.applications.VGG16, {"dropout": 0.0}),
]


def compiled(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    return model


def images_per_second(model, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    shape = (args.size, args.size, 3)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *shape), dtype=np.float32)
    y = rng.integers(0, args.classes, args.batch)
    print(
        f"# zoo vs keras.applications train step, {datetime.date.today()}, "
        f"input {shape}, batch {args.batch}, {args.repeats} repeats x "
        f"{args.steps} steps\n"
    )
    print(
        "| model | zoo img/s | keras.applications img/s | ratio (median) "
        "| ratio range |"
    )
    print("|---|---:|---:|---:|---|")
    for name, reference, kwargs in PAIRS:
        ours = compiled(
            zoo.build(name, input_shape=shape, num_classes=args.classes, **kwargs)
        )
        theirs = compiled(
            reference(weights=None, input_shape=shape, classes=args.classes)
        )
        for model in (ours, theirs):  # warm-up: trace and compile the train step
            model.train_on_batch(x, y)
        a, b = [], []
        for repeat in range(args.repeats):
            if repeat % 2:
                b.append(images_per_second(theirs, x, y, args.steps))
                a.append(images_per_second(ours, x, y, args.steps))
            else:
                a.append(images_per_second(ours, x, y, args.steps))
                b.append(images_per_second(theirs, x, y, args.steps))
        ratios = [i / j for i, j in zip(a, b, strict=True)]
        print(
            f"| {name} | {statistics.median(a):.1f} | {statistics.median(b):.1f} "
            f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}-"
            f"{max(ratios):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
