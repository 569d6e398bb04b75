"""Recurrent classifiers on MNIST rows (issue 17): lstm and gru against lenet5.

Accuracy: `lstm` and `gru` read each 28x28 image as 28 steps of 28 pixels, trained
through `zoo.training.train` (the code path of `zoo train`) on the split of
bench_training's P4a: the stratified 8,000 train+val / 2,000 test split of the
10,000 MNIST t10k images in ../shared/data/mnist (val = `val_fraction` of the
8,000, chosen with the seed). Goal: >= 97.5 % test accuracy each. As in
bench_training, the recipe was chosen on the validation split and the test
accuracy is that of the run's best.keras.

Speed: images per second of a training step (Adam, batch 64) and of inference
(`predict_on_batch`, batch 64) of lstm, gru and lenet5, all on the same real 28x28x1
MNIST images; repeats interleaved with the order rotating (a drift in machine
load hits every model alike), the median of the per-repeat ratios to lenet5.

    python3 benchmarks/bench_recurrent.py [--only accuracy|speed] [--seeds 0]
        [--run-dir DIR] [--repeats 7] [--steps 20]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import bench_training as bt  # same directory: the split, recipes and tables
import numpy as np

GOAL = 0.975
# Chosen on the validation split (800 images, seed 0, deterministic), best val
# accuracy of each tried recipe (Adam 1e-3, batch 64, cosine): lstm 20 epochs 0.951,
# + augmentation 0.951, 2 layers 0.965, bidirectional + augmentation 0.969, 40
# epochs + augmentation 0.975; gru 20 epochs 0.960, + augmentation 0.963, 40 epochs
# + augmentation 0.978.
RECIPES = [
    bt.Recipe(
        f"{name}-128-aug-cosine40",
        name,
        bt.MNIST,
        {
            **bt.COMMON,
            "epochs": 40,
            "augment": ["rotate:0.02", "zoom:0.05", "translate:0.05"],
        },
        f"{name}, 128 units, one layer; LeNet's mild augmentation (rotate 7 deg, "
        "zoom/shift 5 %)",
    )
    for name in ("lstm", "gru")
]
SPEED_MODELS = ("lenet5", "lstm", "gru")


def accuracy(seeds: list[int], run_dir: Path) -> None:
    started = time.perf_counter()
    rows = []
    for recipe in RECIPES:
        per_seed = [bt.run_recipe(recipe, s, run_dir)[0] for s in seeds]
        rows += per_seed + (
            [bt.summary(recipe.name, per_seed)] if len(seeds) > 1 else []
        )
    bt.print_table(
        f"Recurrent classifiers on MNIST rows, stratified 8,000 train+val / 2,000 "
        f"test (goal >= {GOAL:.1%} each); total "
        f"{(time.perf_counter() - started) / 60:.1f} min",
        rows,
    )
    bt.print_recipes(RECIPES)


def mnist_batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `size` real MNIST test images, in [0, 1], and their labels."""
    from data_pipelines import sources

    x = sources.read_idx(bt.MNIST_DIR / "t10k-images-idx3-ubyte.gz", 0x803)
    y = sources.read_idx(bt.MNIST_DIR / "t10k-labels-idx1-ubyte.gz", 0x801)
    return (x[:size, ..., None] / 255).astype("float32"), y[:size].astype("int64")


def speed(repeats: int, steps: int, batch: int) -> None:
    import keras

    import zoo

    x, y = mnist_batch(batch)
    models = {}
    for name in SPEED_MODELS:
        model = zoo.build(name, input_shape=(28, 28, 1), num_classes=10)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.train_on_batch(x, y)  # warm-up: trace both functions
        model.predict_on_batch(x)
        models[name] = model

    def rate(call) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            call(x)
        return steps * batch / (time.perf_counter() - start)

    def train(model):
        return lambda x: model.train_on_batch(x, y)

    measured = {(n, kind): [] for n in models for kind in ("train", "infer")}
    for repeat in range(repeats):
        order = list(models)[repeat % 3 :] + list(models)[: repeat % 3]
        for name in order:
            measured[name, "train"].append(rate(train(models[name])))
            measured[name, "infer"].append(rate(models[name].predict_on_batch))
    keras.backend.clear_session()

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n### Images/s on MNIST 28x28x1, batch {batch}, {datetime.date.today()}: "
        f"median of {repeats} interleaved repeats x {steps} steps ({os.cpu_count()} "
        f"cores, load average {load})\n"
    )
    print(
        "| model | params | train img/s | train ratio to lenet5 (range) "
        "| inference img/s | inference ratio to lenet5 (range) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        cells = []
        for kind in ("train", "infer"):
            ours, base = measured[name, kind], measured["lenet5", kind]
            ratios = [a / b for a, b in zip(ours, base, strict=True)]
            cells.append(
                f"{statistics.median(ours):,.0f} | {statistics.median(ratios):.2f} "
                f"({min(ratios):.2f}-{max(ratios):.2f})"
            )
        print(f"| {name} | {model.count_params():,} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("accuracy", "speed"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"# Recurrent classifiers, {datetime.date.today()}")
    if args.only != "accuracy":
        speed(args.repeats, args.steps, args.batch)
    if args.only != "speed":
        seeds = [int(s) for s in args.seeds.split(",")]
        if args.run_dir:
            accuracy(seeds, args.run_dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                accuracy(seeds, Path(tmp))


if __name__ == "__main__":
    main()
