"""Training benchmarks of issue 4: LeNet-5 on MNIST (P4a), zoo vs scikit-learn (P4b).

P4a: LeNet-5 trained through `zoo.training.train` (the code path of `zoo train`) on
the stratified 8,000 / 2,000 split of the 10,000 MNIST t10k images in
../shared/data/mnist (train+val / test; val = `val_fraction` of the 8,000, chosen with
the seed). Target: >= 98.5 % accuracy on the 2,000 test images.

P4b: the best zoo recipe on scikit-learn's digits (fixed stratified 20 % test split,
360 images, `train_test_split(test_size=0.2, stratify=y, random_state=0)`) against
SVC(C=10, gamma="scale"), MLPClassifier and LogisticRegression fitted on the same
1,437 train+val images. Target: the SVC's test accuracy (358/360).

Recipes were chosen on the validation split; each run's test accuracy is reported
once, for every seed run. The test accuracy of a zoo row is that of the run's
best.keras (the epoch of the highest val accuracy, ties to the lower val loss), as
`zoo train` reports it; the notes give the final-epoch weights' (last.keras) errors
for comparison. Run directories go to a temporary directory (deleted at the
end) unless --run-dir is given (e.g. benchmarks/results/, git-ignored).

    python3 benchmarks/bench_training.py [--only p4a|p4b] [--seeds 0,1,2]
        [--run-dir DIR] [--recipes NAME,...] [--nondeterministic]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
MNIST = f"idx:{MNIST_DIR}"
SVC_TARGET_ERRORS = 2  # SVC(C=10, gamma="scale"): 358/360 on the digits test split
P4A_TARGET = 0.985


@dataclass(frozen=True)
class Recipe:
    """One zoo training recipe: `zoo.training.train(model, dataset, **options)`."""

    name: str
    model: str
    dataset: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def command(self, seed: int | None = None) -> str:
        """The `zoo train` command line that runs this recipe."""
        flags = {"learning_rate": "--lr"}
        parts = ["zoo train", self.model, "--dataset", self.dataset]
        options = dict(self.options)
        if seed is not None:
            options["seed"] = seed
        for key, value in options.items():
            if value is None or value == []:
                continue
            flag = flags.get(key, "--" + key.replace("_", "-"))
            if isinstance(value, bool):
                if key == "batch_norm":
                    parts.append(flag if value else "--no-batch-norm")
                elif value:
                    parts.append(flag)
            elif isinstance(value, list | tuple):
                parts += [flag, ",".join(value)]
            else:
                parts += [flag, str(value)]
        return " ".join(parts)


# ---- the recipes (settled on the validation split; see the module docstring) ------


# Shared by every recipe; each family's defaults below add to it.
COMMON = {
    "schedule": "cosine",
    "batch_size": 64,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "deterministic": True,
}


def _mnist(name: str, note: str, **options: Any) -> Recipe:
    base = {
        **COMMON,
        "image_size": 32,
        "augment": ["rotate:0.02", "zoom:0.05", "translate:0.05"],
        "epochs": 40,
    }
    return Recipe(name, "lenet5", MNIST, {**base, **options}, note)


def _digits(name: str, model: str, note: str, **options: Any) -> Recipe:
    base = {
        **COMMON,
        "image_size": 16,
        "augment": ["rotate:0.05", "zoom:0.1", "translate:0.1"],
        "epochs": 60,
        "val_fraction": 0.2,
    }
    return Recipe(name, model, "digits", {**base, **options}, note)


# Settled recipes (run by default). deterministic=True makes each seed's run
# bit-reproducible on a given machine (checked: identical histories); it was not
# slower here. Selection rule, on validation data only: the mean over seeds 0-2 of
# the val accuracy of the last 10 epochs. P4a: the 32x32 variants in EXPLORED all
# scored 0.9875-0.9885 on it (differences < 1 of 800 val images) and 98.5-99.4 %
# test on every seed; "mild" scored highest, by a hair. 28x28 and no augmentation
# scored clearly lower (0.981, 0.979 on seed 0).
P4A = [
    _mnist(
        "lenet5-32-mild-aug-cosine40",
        "LeNet-5 as published (ReLU, max pooling, no BN, no dropout) at the classic "
        "32x32 input; rotate 7 deg, zoom 5 %, shift 5 %",
    ),
]
# P4b: resnet20 at 16x16 had the best val accuracy of the first round (last-10
# mean 0.999 vs 0.993 lenet5@32, 0.989 resnet20@32); val_fraction 0.2 (287 val
# images) instead of 0.1 (144) because with 144 the val accuracy sat at its maximum
# from epoch 7-11 on and `zoo train` then kept the first of tied epochs (ties now go
# to the lower val loss; this choice predates that rule).
P4B = [
    _digits(
        "resnet20-16-aug-cosine60-val20",
        "resnet20",
        "CIFAR ResNet-20 at 16x16; rotate 18 deg, zoom 10 %, shift 10 %; "
        "val = 20 % of the 1,437",
    ),
]

STRONG_AUG = ["rotate:0.03", "zoom:0.1", "translate:0.1"]  # vs P4A's milder one

# Also tried, without deterministic=True (same code path; run any with --recipes).
EXPLORED = [
    _mnist(
        "lenet5-28-aug-cosine40",
        "28x28 input",
        image_size=None,
        augment=STRONG_AUG,
    ),
    _mnist(
        "lenet5-32-aug-cosine40",
        "rotate 11 deg, zoom/shift 10 %",
        augment=STRONG_AUG,
    ),
    _mnist("lenet5-32-noaug-cosine40", "no augmentation", augment=[]),
    _mnist(
        "lenet5-32-bn",
        "batch_norm",
        batch_norm=True,
        augment=STRONG_AUG,
    ),
    _mnist(
        "lenet5-32-dropout",
        "dropout 0.2",
        dropout=0.2,
        augment=STRONG_AUG,
    ),
    _mnist(
        "lenet5-32-normalize",
        "normalize",
        normalize=True,
        augment=STRONG_AUG,
    ),
    _mnist(
        "lenet5-32-batch32",
        "batch 32",
        batch_size=32,
        augment=STRONG_AUG,
    ),
    _digits("resnet20-16-val10", "resnet20", "val_fraction 0.1", val_fraction=0.1),
    _digits(
        "resnet20-32-val10",
        "resnet20",
        "32x32, val_fraction 0.1",
        image_size=32,
        val_fraction=0.1,
    ),
    _digits(
        "lenet5-32-val10",
        "lenet5",
        "32x32, val_fraction 0.1",
        image_size=32,
        val_fraction=0.1,
    ),
    _digits(
        "resnet20-16-ls-val10",
        "resnet20",
        "label smoothing 0.1",
        label_smoothing=0.1,
        val_fraction=0.1,
    ),
]


# ---- running ---------------------------------------------------------------------


@dataclass
class Row:
    """One line of a result table."""

    label: str
    seed: str
    accuracy: float
    errors: int
    total: int
    seconds: float
    notes: str = ""


def _labels(ds) -> np.ndarray:
    y = np.concatenate([np.asarray(b) for _, b in ds])
    return y.argmax(axis=1) if y.ndim == 2 else y


def run_recipe(
    recipe: Recipe, seed: int, run_dir: Path, expected_labels: np.ndarray | None = None
) -> tuple[Row, np.ndarray]:
    """Train one recipe with one seed through `zoo.training.train`.

    Returns its table row and the test-split probabilities of the model that
    `zoo train` reports (best.keras: the epoch of the highest val accuracy).
    """
    import zoo
    from zoo import training
    from zoo.config import TrainConfig
    from zoo.recipe import load_data

    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout a markdown document
        result = training.train(
            recipe.model,
            recipe.dataset,
            verbose=0,
            seed=seed,
            run_dir=str(run_dir),
            name=f"{recipe.name}-seed{seed}",
            **recipe.options,
        )
    seconds = time.perf_counter() - started
    # The run's own test split, rebuilt from its config.json.
    config = TrainConfig.from_dict(
        json.loads((result.run_dir / "config.json").read_text())
    )
    test = load_data(config).test
    labels = _labels(test)
    if expected_labels is not None:
        assert np.array_equal(labels, expected_labels), "test split differs"
    probs = result.model.predict(test, verbose=0)
    errors = int((probs.argmax(axis=1) != labels).sum())
    accuracy = 1 - errors / len(labels)
    m = result.metrics
    # Same model, same split: must agree with the app's own metric.
    assert abs(accuracy - m["test_accuracy"]) < 1e-6, (accuracy, m)
    last = zoo.load_model(result.run_dir / "last.keras")
    last_errors = int((last.predict(test, verbose=0).argmax(axis=1) != labels).sum())
    notes = (
        f"best val {m['best_val_accuracy']:.2%} at epoch {m['best_epoch']}/"
        f"{m['epochs']}; final-epoch weights (last.keras): {last_errors} errors"
    )
    return Row(
        recipe.name, str(seed), accuracy, errors, len(labels), seconds, notes
    ), probs


def summary(label: str, rows: list[Row]) -> Row:
    """Mean over seeds, with the spread in the notes."""
    accs = [r.accuracy for r in rows]
    notes = ""
    if len(rows) > 1:
        notes = (
            f"sd {statistics.stdev(accs):.2%}; min {min(accs):.2%}, "
            f"max {max(accs):.2%}; errors per seed "
            + "/".join(str(r.errors) for r in rows)
        )
    return Row(
        f"**{label}**",
        f"mean of {len(rows)}",
        statistics.mean(accs),
        sum(r.errors for r in rows),
        sum(r.total for r in rows),
        sum(r.seconds for r in rows),
        notes,
    )


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}\n")
    print(
        "| model / recipe | seed | test accuracy | errors / total | wall time | notes |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r.label} | {r.seed} | {r.accuracy:.2%} | {r.errors} / {r.total} "
            f"| {r.seconds:.1f} s | {r.notes} |"
        )
    sys.stdout.flush()


def print_recipes(recipes: list[Recipe]) -> None:
    print()
    for r in recipes:
        print(f"- `{r.name}` ({r.note}):\n  `{r.command(seed=0)}`")
    sys.stdout.flush()


# ---- P4a ---------------------------------------------------------------------------


def p4a(seeds: list[int], run_dir: Path, recipes: list[Recipe]) -> float:
    started = time.perf_counter()
    rows: list[Row] = []
    for recipe in recipes:
        per_seed = [run_recipe(recipe, s, run_dir)[0] for s in seeds]
        rows += per_seed + ([summary(recipe.name, per_seed)] if len(seeds) > 1 else [])
    seconds = time.perf_counter() - started
    print_table(
        f"P4a: LeNet-5 on MNIST t10k, stratified 8,000 train+val / 2,000 test "
        f"(target >= {P4A_TARGET:.1%}); total {seconds / 60:.1f} min",
        rows,
    )
    print_recipes(recipes)
    return seconds


# ---- P4b ---------------------------------------------------------------------------


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits with the documented split; checked against the
    pipeline's own digits splits (same 360 test images in the same order, same
    1,437 train+val images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import data_pipelines as dp

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    splits = dp.load("digits", batch_size=512)
    images = np.concatenate([np.asarray(a) for a, _ in splits.test])
    assert np.array_equal(_labels(splits.test), y_test), "digits test labels differ"
    # The pipeline maps ink 0..16 to round(v * 255 / 16) / 255: equal within rounding.
    assert np.abs(images.reshape(len(images), -1) * 16 - x_test).max() <= 8 / 255 + 1e-6
    pipeline_train = np.concatenate([_labels(splits.train), _labels(splits.val)])
    assert len(pipeline_train) == len(y_train) == 1437
    assert np.array_equal(np.bincount(pipeline_train), np.bincount(y_train))
    return x_train, x_test, y_train, y_test


def sklearn_baselines(split, seeds: list[int]) -> list[Row]:
    """SVC, MLPClassifier and LogisticRegression on the 1,437 train+val images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.svm import SVC

    x_train, x_test, y_train, y_test = split
    scale = FunctionTransformer(lambda v: v / 16.0)  # ink 0..16 -> [0, 1]
    models = [
        (
            'SVC(C=10, gamma="scale") on pixels / 16',
            lambda s: make_pipeline(scale, SVC(C=10, gamma="scale")),
            False,
        ),
        (
            "StandardScaler + MLPClassifier(100 ReLU units, adam, max_iter=1000)",
            lambda s: make_pipeline(
                StandardScaler(), MLPClassifier(max_iter=1000, random_state=s)
            ),
            True,
        ),
        (
            "StandardScaler + LogisticRegression(C=1, lbfgs, max_iter=5000)",
            lambda s: make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=5000)
            ),
            False,
        ),
    ]
    rows = []
    for label, make, seeded in models:
        per_seed = []
        for s in seeds if seeded else [None]:
            started = time.perf_counter()
            predicted = make(s).fit(x_train, y_train).predict(x_test)
            errors = int((predicted != y_test).sum())
            per_seed.append(
                Row(
                    label,
                    "-" if s is None else str(s),
                    1 - errors / len(y_test),
                    errors,
                    len(y_test),
                    time.perf_counter() - started,
                    "deterministic" if s is None else "",
                )
            )
        rows += per_seed
        if len(per_seed) > 1:
            rows.append(summary(label.split(" + ")[-1].split("(")[0], per_seed))
    return rows


def p4b(seeds: list[int], run_dir: Path, recipes: list[Recipe]) -> float:
    started = time.perf_counter()
    split = digits_split()
    rows = sklearn_baselines(split, seeds)
    y_test = split[3]
    for recipe in recipes:
        results = [
            run_recipe(recipe, s, run_dir, expected_labels=y_test) for s in seeds
        ]
        per_seed = [r for r, _ in results]
        rows += per_seed
        if len(seeds) > 1:
            rows.append(summary(recipe.name, per_seed))
            mean_probs = np.mean([p for _, p in results], axis=0)
            errors = int((mean_probs.argmax(axis=1) != y_test).sum())
            rows.append(
                Row(
                    f"{recipe.name}: ensemble of the {len(seeds)} seeds' models",
                    "all",
                    1 - errors / len(y_test),
                    errors,
                    len(y_test),
                    0.0,
                    "mean of the softmax outputs of the runs above (no extra training)",
                )
            )
    seconds = time.perf_counter() - started
    print_table(
        "P4b: digits, fixed stratified 20 % test split (360 images), scikit-learn "
        f"fitted on the same 1,437 train+val images (target: SVC's "
        f"{360 - SVC_TARGET_ERRORS}/360); total {seconds / 60:.1f} min",
        rows,
    )
    print_recipes(recipes)
    return seconds


def _nondeterministic(recipe: Recipe) -> Recipe:
    return dataclasses.replace(
        recipe,
        name=f"{recipe.name}-nondet",
        options={**recipe.options, "deterministic": False},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("p4a", "p4b"), help="run one experiment")
    parser.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)"
    )
    parser.add_argument(
        "--recipes", default="", help="comma-separated recipe names (default all)"
    )
    parser.add_argument(
        "--run-dir",
        help="keep the run directories here (e.g. benchmarks/results/runs); "
        "default: a temporary directory, deleted at the end",
    )
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        help="drop deterministic=True from the recipes (parallel tf.data "
        "augmentation; runs then differ from one another even with the same seed)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = {n for n in args.recipes.split(",") if n}

    def pick(recipes: list[Recipe]) -> list[Recipe]:
        if args.nondeterministic:
            return [_nondeterministic(r) for r in _pick(recipes)]
        return _pick(recipes)

    def _pick(recipes: list[Recipe]) -> list[Recipe]:
        if not wanted:
            return recipes
        dataset = recipes[0].dataset
        pool = recipes + [r for r in EXPLORED if r.dataset == dataset]
        unknown = wanted - {r.name for r in recipes + EXPLORED}
        if unknown:
            parser.error(
                f"unknown recipe(s) {sorted(unknown)}; known: "
                f"{', '.join(r.name for r in recipes + EXPLORED)}"
            )
        return [r for r in pool if r.name in wanted]

    import keras
    import tensorflow as tf

    print(
        f"# Training benchmarks (issue 4), {datetime.date.today()}\n\n"
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, {os.cpu_count()} CPUs (shared; load average "
        f"{os.getloadavg()[0]:.1f} at start), seeds {seeds}. Every zoo row is one "
        "`zoo.training.train(...)` run (the code path of `zoo train`); its test "
        "accuracy is that of the run's best.keras (highest val accuracy, ties to the "
        "lower val loss), as `zoo train` reports it; its progress lines go to stderr."
    )
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp)
        total = 0.0
        if args.only in (None, "p4a") and pick(P4A):
            total += p4a(seeds, run_dir, pick(P4A))
        if args.only in (None, "p4b") and pick(P4B):
            total += p4b(seeds, run_dir, pick(P4B))
    print(
        f"\nTotal wall time: {total / 60:.1f} min; load average at the end "
        f"{os.getloadavg()[0]:.1f}."
    )


if __name__ == "__main__":
    main()
