"""What to export: a keras.Model, a .keras file or a training run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

import zoo
from zoo import runs
from zoo.files import read_record


@dataclass
class Source:
    """A model and what export needs to know about it."""

    model: keras.Model
    name: str
    preprocessing: keras.Layer | None = None
    class_names: list[str] | None = None
    raw_shape: tuple[int, ...] | None = None
    raw_dtype: str = "uint8"  # "float32" for tabular runs: encoded feature vectors
    regression: bool = False
    target_name: str | None = None
    dataset: dict[str, Any] | None = None  # a run's dataset.json
    metrics: dict[str, Any] | None = None
    run_dir: str | None = None


def load_source(obj: keras.Model | str | os.PathLike) -> Source:
    """Resolve a Keras model, a .keras file or a run directory."""
    if isinstance(obj, keras.Model):
        return Source(model=obj, name=obj.name)
    path = Path(obj)
    if path.is_file() and path.suffix == ".keras":
        model = zoo.load_model(path, compile=False)
        return Source(model=model, name=model.name)
    if not path.is_dir():
        raise ValueError(
            f"cannot export '{path}': expected a keras.Model, a .keras file or a run "
            "directory (with best.keras or last.keras)."
        )
    model_file = next(
        (path / f for f in runs.RUN_MODEL_FILES if (path / f).is_file()), None
    )
    if model_file is None:
        raise ValueError(
            f"run directory '{path}' has no model: expected "
            f"{' or '.join(runs.RUN_MODEL_FILES)}. Pass a run whose training finished."
        )
    model = zoo.load_model(model_file, compile=False)
    config = read_record(path / runs.CONFIG_FILE, "export")
    metrics = read_record(path / runs.METRICS_FILE, "export")
    source = Source(
        model=model,
        name=config.get("model", model.name) if config else model.name,
        metrics=metrics,
        run_dir=str(path.resolve()),
    )
    info = runs.dataset_info(
        path,
        "exported",
        f", or export its model file alone (zoo export {path / runs.BEST_MODEL}: "
        "Rescaling(1/255) is then its only preprocessing)",
    )
    import data_pipelines

    source.preprocessing = data_pipelines.preprocessing_model(info)
    source.class_names = list(info.class_names) if info.class_names else None
    source.raw_shape = tuple(info.raw_shape) if info.raw_shape else None
    source.raw_dtype = "float32" if info.task == "tabular" else "uint8"
    source.regression = info.regression
    source.target_name = info.target["name"] if info.target else None
    source.dataset = info.to_dict()
    return source
