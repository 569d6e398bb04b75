"""What a run's epochs and test split say: the best epoch, the test metrics and
figures, the headline and the summary line a run ends with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import data_pipelines as dp
from zoo import plots
from zoo.config import MODEL_TASKS, TrainConfig


def rank(row: dict[str, Any]) -> tuple[float, float]:
    """How good an epoch is: higher val accuracy, ties broken by lower val loss (with
    a few hundred validation images, accuracies tie often; early ties were picking
    under-trained epochs). Regression runs have no accuracy: lower val loss."""
    return (row.get("val_accuracy", -math.inf), -row.get("val_loss", math.inf))


def is_best(row: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether `row` beats every earlier epoch; without validation, the latest."""
    if "val_loss" not in row:
        return True
    return rank(row) > max(map(rank, rows), default=(-math.inf, -math.inf))


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    y = np.concatenate([np.asarray(b) for _, b in ds])
    return y.argmax(axis=1) if y.ndim == 2 else y


def test_metrics(
    model: keras.Model, splits: dp.Splits, verbose: int = 0, task: str = ""
) -> dict[str, float]:
    """The compiled metrics of `model` on the test split, as `test_<name>`; for
    regression also R^2 (scikit-learn's r2_score). An autoencoder (`task`
    "reconstruction") is scored on (images, images)."""
    from zoo.recipe import self_pairs

    test = self_pairs(splits.test) if task == "reconstruction" else splits.test
    values = model.evaluate(test, verbose=verbose, return_dict=True)
    metrics = {f"test_{k}": float(v) for k, v in values.items()}
    if splits.info.regression:
        from sklearn.metrics import r2_score

        y_pred = model.predict(splits.test, verbose=0)
        metrics["test_r2"] = float(r2_score(_labels(splits.test), y_pred[:, 0]))
    return metrics


def evaluate_test(
    run_dir: Path, best: keras.Model, splits: dp.Splits, task: str = "classification"
) -> dict[str, Any]:
    """Test metrics of best.keras, and the confusion-matrix PNG (regression:
    predicted vs true values; generative models: their image grids from test
    images, and the latent map of 2-D codes)."""
    metrics = test_metrics(best, splits, task=task)
    if task in MODEL_TASKS:
        from zoo import generative

        images = generative.first_images(splits.test, generative.RECONSTRUCTIONS)
        noise = generative.prior_noise(best, generative.SAMPLE_GRID**2)
        generative.write_figures(best, images, noise, run_dir)
        names = splits.info.class_names
        generative.latent_map(best, splits.test, names, run_dir / "latent_map.png")
        return metrics
    y_pred = best.predict(splits.test, verbose=0)
    y_pred = y_pred[0] if isinstance(y_pred, list) else y_pred
    y_true = _labels(splits.test)
    if splits.info.regression:
        name = splits.info.target["name"]
        plots.plot_predictions(y_true, y_pred[:, 0], name, run_dir / "predictions.png")
    else:
        plots.plot_confusion(
            y_true,
            y_pred.argmax(axis=1),
            splits.info.class_names,
            run_dir / "confusion_matrix.png",
        )
    return metrics


def epoch_metrics(
    rows: list[dict[str, Any]], trainable: dict[str | None, int]
) -> dict[str, Any]:
    """The best epoch (1-based) and its val metric; per named phase, its epochs,
    trainable parameters and best val accuracy."""
    best = max(range(len(rows)), key=lambda i: best_key(rows, i))
    key = "val_accuracy" if "val_accuracy" in rows[best] else "val_loss"
    metrics: dict[str, Any] = {"epochs": len(rows), "best_epoch": best + 1}
    if key in rows[best]:
        metrics[f"best_{key}"] = float(rows[best][key])
    phases = [p for p in trainable if p is not None]
    if phases:
        metrics["best_phase"] = rows[best]["phase"]
    for phase in phases:
        done = [r for r in rows if r.get("phase") == phase]
        metrics[f"{phase}_epochs"] = len(done)
        metrics[f"{phase}_trainable_params"] = trainable[phase]
        if done and "val_accuracy" in done[0]:
            metrics[f"{phase}_best_val_accuracy"] = max(r["val_accuracy"] for r in done)
    return metrics


def best_key(rows: list[dict[str, Any]], i: int) -> tuple:
    """Sort key of epoch i: its rank, the latest epoch first when there is no
    validation (as `_is_best`), the earliest among equal ranks otherwise."""
    if "val_loss" not in rows[i]:
        return (i,)
    return (*rank(rows[i]), -i)


def headline(metrics: dict[str, Any]) -> str:
    """The summary of test metrics a person reads: accuracy, MAE/RMSE/R^2, an
    autoencoder's pixel MSE, or a GAN's discriminator outputs."""
    if "test_accuracy" in metrics:
        return f"test accuracy {metrics['test_accuracy']:.4f}"
    if "test_mse" in metrics:
        return f"test reconstruction MSE {metrics['test_mse']:.4g}"
    if "test_d_real" in metrics:
        return (
            f"test D(x) {metrics['test_d_real']:.3f}, D(G(z)) "
            f"{metrics['test_d_fake']:.3f}"
        )
    return (
        f"test MAE {metrics['test_mae']:.4g}, RMSE {metrics['test_rmse']:.4g}, "
        f"R^2 {metrics['test_r2']:.3f}"
    )


def summary(
    config: TrainConfig, run_dir: Path, metrics: dict[str, Any], export_dir: Path | None
) -> str:
    """The line a run ends with: test metrics, size, epochs, phases and paths."""
    text = (
        f"{config.model} on {config.dataset}: {headline(metrics)}, "
        f"{metrics['params']:,} parameters, {metrics['epochs']} epochs in "
        f"{metrics['wall_time_s']:.0f}s"
    )
    if "best_phase" in metrics:
        phases = [k[: -len("_epochs")] for k in metrics if k.endswith("_epochs")]
        each = ", ".join(
            f"{p} {metrics[f'{p}_epochs']} epoch(s) "
            f"({metrics[f'{p}_trainable_params']:,} trainable)"
            for p in phases
        )
        text += (
            f" (best epoch {metrics['best_epoch']}, {metrics['best_phase']} "
            f"phase; {each})"
        )
    text += f"; run: {run_dir}"
    if export_dir:
        text += f"; SavedModel (verified): {export_dir}"
    return text
