"""P2a/P2b: LeNet-5 training throughput through ``dp.load`` vs in-memory numpy.

Fits LeNet-5 on the training split of the real MNIST test set (7,200 images) three
ways, interleaved within each repeat (A, B, C, A, B, C, ...):

* A: ``model.fit`` on the same images as in-memory float32 numpy arrays (baseline);
* B: ``model.fit`` on ``dp.load("idx:...").train`` without augmentation (P2a);
* C: the same with flip, rotate, zoom and translate on (P2b).

Images/s is taken per epoch after a warm-up epoch; each repeat's ratios use that
repeat's runs, and the table prints their median. Usage::

    python3 benchmarks/bench_pipeline.py --repeats 3 --epochs 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import data_pipelines as dp  # noqa: E402

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
AUGMENT = "flip,rotate:0.05,zoom:0.1,translate:0.1"
TARGETS = {"B": 0.95, "C": 0.80}


def lenet5() -> keras.Model:
    """LeNet-5 from the zoo, or the same network defined here if zoo is missing."""
    try:
        import zoo

        return zoo.build("lenet5", input_shape=(28, 28, 1), num_classes=10)
    except ImportError:  # zoo is optional here: data_pipelines depends on nothing
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(6, 5, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(16, 5, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(120, activation="relu"),
                keras.layers.Dense(84, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.times = []


def images_per_second(data, n_images: int, epochs: int, batch_size: int) -> float:
    """Fits a fresh LeNet-5; median images/s over the epochs after the first."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = lenet5()
    model.compile("adam", "sparse_categorical_crossentropy")
    timer = EpochTimer()
    kwargs = {"batch_size": batch_size} if isinstance(data, tuple) else {}
    x, y = data if isinstance(data, tuple) else (data, None)
    model.fit(
        x,
        y,
        epochs=epochs + 1,
        shuffle=y is not None,
        verbose=0,
        callbacks=[timer],
        **kwargs,
    )
    return n_images / statistics.median(timer.times[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default=str(MNIST), help="IDX directory")
    args = parser.parse_args(argv)

    plain = dp.load(f"idx:{args.data}", batch_size=args.batch_size, seed=0)
    augmented = dp.load(
        f"idx:{args.data}", batch_size=args.batch_size, augment=AUGMENT, seed=0
    )
    # The baseline arrays: exactly the pipeline's training images, preprocessed.
    xs, ys = zip(*((xb.numpy(), yb.numpy()) for xb, yb in plain.train), strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = len(y)
    runs = {"A": (x, y), "B": plain.train, "C": augmented.train}
    speed: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for key, data in runs.items():
            speed[key].append(images_per_second(data, n, args.epochs, args.batch_size))

    def ratios(key: str) -> list[float]:
        return [b / a for a, b in zip(speed["A"], speed[key], strict=True)]

    print(
        f"\nLeNet-5, MNIST t10k train split ({n} images), batch {args.batch_size}, "
        f"{args.repeats} interleaved repeats x {args.epochs} timed epochs, "
        f"{datetime.date.today()}\n"
    )
    print("| run | images/s (median) | ratio to numpy (median) | target |")
    print("|---|---:|---:|---:|")
    rows = {
        "A": "model.fit on numpy arrays",
        "B": "P2a dp.load, no augmentation",
        "C": f"P2b dp.load, augment={AUGMENT}",
    }
    for key, label in rows.items():
        target = f">= {TARGETS[key]:.2f}x" if key in TARGETS else ""
        shown = "1.00x" if key == "A" else f"{statistics.median(ratios(key)):.2f}x"
        print(
            f"| {label} | {statistics.median(speed[key]):,.0f} | {shown} | {target} |"
        )
    for key in TARGETS:
        print(
            f"\n{key} ratio per repeat: " + ", ".join(f"{r:.2f}" for r in ratios(key))
        )


if __name__ == "__main__":
    main()
