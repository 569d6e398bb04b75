"""Shared test set-up: every test starts from the same seeds."""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
MNIST_DIR = SHARED / "data" / "mnist"
# What every finished training run directory holds (zoo train, finetune, retrain).
RUN_FILES = {
    "config.json",
    "dataset.json",
    "best.keras",
    "last.keras",
    "checkpoints",
    "history.csv",
    "tensorboard",
    "loss.png",
    "accuracy.png",
    "confusion_matrix.png",
    "metrics.json",
}


@pytest.fixture(autouse=True)
def _seed_everything():
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
