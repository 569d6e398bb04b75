"""The figures of a run directory: learning curves, the test split's confusion
matrix (classification) or predicted-vs-true values (regression), and for the
generative families image grids and the latent map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zoo import files


def figure(rows: int = 1, cols: int = 1, **options: Any):
    """A matplotlib Figure and its axes, without pyplot: no GUI backend and no
    global figure registry to close. Single-panel figures keep matplotlib's default
    margins (a layout engine doubles the time to save one); pass
    `layout="constrained"` for grids."""
    from matplotlib.figure import Figure

    fig = Figure(**options)
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot_curves(history: pd.DataFrame, run_dir: Path) -> None:
    """loss.png and accuracy.png (regression: mae.png): train vs val per epoch; with
    a `phase` column, a dashed line marks where each phase after the first begins.
    Autoencoders add mse.png, GANs d_loss.png and g_loss.png."""
    from matplotlib.ticker import MaxNLocator

    for metric in ("loss", "accuracy", "mae", "mse", "d_loss", "g_loss"):
        if metric not in history:
            continue
        fig, axes = figure(figsize=(6, 4))
        ax = axes[0, 0]
        ax.plot(history["epoch"] + 1, history[metric], "o-", label="train")
        if f"val_{metric}" in history:
            ax.plot(history["epoch"] + 1, history[f"val_{metric}"], "o-", label="val")
        if "phase" in history:
            starts = history[history["phase"] != history["phase"].shift()].iloc[1:]
            for epoch, phase in zip(starts["epoch"], starts["phase"], strict=True):
                ax.axvline(epoch + 0.5, color="gray", linestyle="--")
                ax.annotate(
                    phase,
                    (epoch + 0.5, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(4, -4),
                    textcoords="offset points",
                    va="top",
                    color="gray",
                )
        title = f"{metric}: train vs val" if f"val_{metric}" in history else metric
        ax.set(xlabel="epoch", ylabel=metric, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        files.save_figure(fig, run_dir / f"{metric}.png")


def plot_confusion(y_true, y_pred, class_names: list[str], path: Path) -> None:
    """Confusion matrix of the test split (scikit-learn's display)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, axes = figure(figsize=(6, 6))
    ax = axes[0, 0]
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        display_labels=class_names,
        ax=ax,
        colorbar=False,
    )
    ax.set_title("test split")
    files.save_figure(fig, path)


def plot_predictions(y_true, y_pred, name: str, path: Path) -> None:
    """Predicted vs true values of the test split, with the identity line."""
    fig, axes = figure(figsize=(6, 6))
    ax = axes[0, 0]
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    low = float(min(y_true.min(), y_pred.min()))
    high = float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle="--")
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title="test split")
    ax.grid(alpha=0.3)
    files.save_figure(fig, path)


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Images (n, h, w, c) in [0, 1] tiled `cols` per row with 1-pixel gaps, as
    one uint8 image (h', w', c); missing cells and NaN pixels (a diverged
    model's) stay black. Neither Keras nor TensorBoard tiles images."""
    images = np.clip(np.nan_to_num(np.asarray(images, dtype="float32")), 0, 1)
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), "float32")
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        grid[1 + r * (h + 1) : (r + 1) * (h + 1), 1 + col * (w + 1) :][:, :w] = image
    return np.round(grid * 255).astype("uint8")


def save_image(image: np.ndarray, path: Path, scale: int = 4) -> None:
    """A uint8 image (h, w, c) as a PNG, enlarged `scale` times (nearest), written
    atomically."""
    from PIL import Image

    big = image.repeat(scale, axis=0).repeat(scale, axis=1)
    pil = Image.fromarray(big[..., 0] if big.shape[-1] == 1 else big)
    with files.atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")


def plot_latent_map(codes, labels, class_names: list[str], path: Path) -> None:
    """The test images' 2-D codes, one colour per class."""
    fig, axes = figure(figsize=(6, 6))
    ax = axes[0, 0]
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=6)
    handles = points.legend_elements()[0]
    present = [class_names[i] for i in np.unique(labels)]
    ax.legend(handles, present, title="class", fontsize="small", markerscale=0.8)
    ax.set(xlabel="z[0]", ylabel="z[1]", title="latent map (test split)")
    ax.grid(alpha=0.3)
    files.save_figure(fig, path)
