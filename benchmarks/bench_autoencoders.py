"""Autoencoder benchmark of issue 17: test reconstruction MSE at code size 16
against scikit-learn's PCA with 16 components (the classical anchor).

Data: the stratified 8,000 / 2,000 split of the 10,000 MNIST t10k images in
../shared/data/mnist (`idx:` source, seed 0), as the LeNet benchmarks use; the
autoencoders train through `zoo.training.train` (the code path of `zoo train`) on
the 8,000 (val = 10 % of them, which picks best.keras); PCA is fitted on the same
8,000. Pixels are in [0, 1]; the autoencoders train with their default loss, binary
cross-entropy; MSE is the mean over pixels and test images.

Rows: the dense autoencoder (goal <= 1.0x PCA's MSE), the conv autoencoder (goal
<= 0.7x), and denoising: the conv autoencoder trained with Gaussian noise sigma 0.3
on its inputs, scored by the MSE to the clean test image from test inputs with
Gaussian noise sigma 0.3, against PCA's reconstruction of the same noisy inputs.

    python3 benchmarks/bench_autoencoders.py [--epochs 20] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

import data_pipelines as dp  # noqa: E402
from zoo import training  # noqa: E402

MNIST = f"idx:{Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'mnist'}"
CODE = 16
SIGMA = 0.3


def images(ds) -> np.ndarray:
    return np.concatenate([np.asarray(x) for x, _ in ds])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    splits = dp.load(MNIST, seed=0)
    fit = np.concatenate([images(splits.train), images(splits.val)])
    test = images(splits.test)
    noisy = test + np.random.default_rng(0).normal(0, SIGMA, test.shape).astype(
        "float32"
    )
    flat = fit.reshape(len(fit), -1)
    pca = PCA(CODE, random_state=0).fit(flat)

    def pca_mse(x: np.ndarray) -> float:
        made = pca.inverse_transform(pca.transform(x.reshape(len(x), -1)))
        return mse(made.reshape(test.shape), test)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.run_dir or Path(tmp)
        for label, model, extra, inputs, goal in [
            ("autoencoder (dense)", "autoencoder", {}, test, 1.0),
            ("conv_autoencoder", "conv_autoencoder", {}, test, 0.7),
            (
                f"conv_autoencoder, denoising sigma {SIGMA}",
                "conv_autoencoder",
                {"denoising": f"gaussian:{SIGMA}"},
                noisy,
                None,
            ),
        ]:
            started = time.perf_counter()
            result = training.train(
                model,
                MNIST,
                epochs=args.epochs,
                batch_size=128,
                model_args={"code_size": CODE, **extra},
                run_dir=str(root),
                verbose=0,
            )
            seconds = time.perf_counter() - started
            made = result.model.predict(inputs, verbose=0)
            ours, anchor = mse(made, test), pca_mse(inputs)
            rows.append((label, ours, anchor, ours / anchor, goal, seconds))
    print(
        f"MNIST 8,000 / 2,000, code size {CODE}, {args.epochs} epochs, batch 128, "
        f"Adam 1e-3, binary cross-entropy ({time.strftime('%Y-%m-%d')})"
    )
    print(f"{'model':40s} {'test MSE':>9s} {'PCA MSE':>9s} {'ratio':>6s} goal  time")
    for label, ours, anchor, ratio, goal, seconds in rows:
        met = "" if goal is None else ("met" if ratio <= goal else "NOT met")
        shown = "-" if goal is None else f"<={goal}"
        print(
            f"{label:40s} {ours:9.5f} {anchor:9.5f} {ratio:6.3f} {shown} {met} "
            f"{seconds:.0f}s"
        )


if __name__ == "__main__":
    main()
