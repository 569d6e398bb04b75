"""P2a/P2b: LeNet-5 training throughput through ``dp.load`` vs in-memory numpy.

Fits LeNet-5 on the training split of the real MNIST test set (7,200 images) three
ways, interleaved within each repeat (A, B, C, A, B, C, ...):

* A: ``model.fit`` on the same images as in-memory float32 numpy arrays (baseline);
* B: ``model.fit`` on ``dp.load("idx:...").train`` without augmentation (P2a);
* C: the same with flip, rotate, zoom and translate on (P2b).

Images/s is taken per epoch after a warm-up epoch; each repeat's ratios use that
repeat's runs, and the table prints their median. Images per CPU-second (this
process's CPU time) are printed too: on a machine shared with other jobs they vary far
less than wall-clock figures. Usage::

    python3 benchmarks/bench_pipeline.py --repeats 5 --epochs 2
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


def lenet5() -> tuple[keras.Model, str]:
    """LeNet-5 from the zoo, or the same network defined here if zoo is missing."""
    try:
        import zoo

        model = zoo.build("lenet5", input_shape=(28, 28, 1), num_classes=10)
        return model, "zoo.build('lenet5')"
    except ImportError:  # zoo is optional here: data_pipelines depends on nothing
        layers = keras.layers
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(6, 5, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(16, 5, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(120, activation="relu"),
                layers.Dense(84, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ]
        )
        return model, "local LeNet-5"


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time and this process's CPU time of every epoch."""

    def on_train_begin(self, logs=None):
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self.start[0])
        self.cpu.append(time.process_time() - self.start[1])


def throughput(
    data, n_images: int, epochs: int, batch_size: int
) -> tuple[float, float]:
    """Fits a fresh LeNet-5; images per wall second and per CPU second (medians over
    the epochs after the first, which traces and warms up)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model, _ = lenet5()
    model.compile("adam", "sparse_categorical_crossentropy")
    timer = EpochTimer()
    is_numpy = isinstance(data, tuple)
    x, y = data if is_numpy else (data, None)
    model.fit(
        x,
        y,
        batch_size=batch_size if is_numpy else None,
        epochs=epochs + 1,
        shuffle=is_numpy,
        verbose=0,
        callbacks=[timer],
    )
    return (
        n_images / statistics.median(timer.wall[1:]),
        n_images / statistics.median(timer.cpu[1:]),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
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
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for key, data in runs.items():
            per_wall, per_cpu = throughput(data, n, args.epochs, args.batch_size)
            wall[key].append(per_wall)
            cpu[key].append(per_cpu)

    def ratio(speed: dict[str, list[float]], key: str) -> list[float]:
        return [b / a for a, b in zip(speed["A"], speed[key], strict=True)]

    print(
        f"\n{lenet5()[1]}, MNIST t10k train split ({n} images), batch "
        f"{args.batch_size}, {args.repeats} interleaved repeats x {args.epochs} timed "
        f"epochs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"{datetime.date.today()}\n"
    )
    print(
        "| run | images/s | ratio | target | images/CPU-s | CPU ratio |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    rows = {
        "A": "model.fit on numpy arrays",
        "B": "P2a: dp.load, no augmentation",
        "C": f"P2b: dp.load, augment={AUGMENT}",
    }
    median = statistics.median
    for key, label in rows.items():
        target = f">= {TARGETS[key]:.2f}x" if key in TARGETS else ""
        print(
            f"| {label} | {median(wall[key]):,.0f} | {median(ratio(wall, key)):.2f}x "
            f"| {target} | {median(cpu[key]):,.0f} | {median(ratio(cpu, key)):.2f}x |"
        )
    print("\n(medians over repeats; ratio = run / numpy within the same repeat)")
    for key in TARGETS:
        shown = ", ".join(f"{r:.2f}" for r in ratio(wall, key))
        print(f"{key} wall-clock ratio per repeat: {shown}")


if __name__ == "__main__":
    main()
