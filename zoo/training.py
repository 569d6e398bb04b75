"""Train and evaluate zoo models (`zoo train`, `zoo evaluate`).

`train` builds a zoo model (or takes a `.keras` file or a `keras.Model`) for the data
and hands it to the run lifecycle (`zoo.runs.execute`), which fits, records,
checkpoints, resumes, evaluates and exports every kind of run the same way. A run
directory holds `config.json`, `dataset.json`, `best.keras` / `last.keras`,
`checkpoints/` (the latest and best epochs' weights with optimizer state, and
`progress.json`, the record `--resume` continues from), `history.csv`,
`tensorboard/`, the curves `loss.png` / `accuracy.png` (regression: `mae.png`),
`confusion_matrix.png` (regression: `predictions.png`) and `metrics.json`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import keras

import data_pipelines as dp
import zoo
from zoo import files, generative, recipe, runs
from zoo.config import TrainConfig
from zoo.evaluation import headline, test_metrics
from zoo.runs import TrainingError, TrainResult

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "build_model",
    "check_fits",
    "evaluate",
    "headline",
    "test_metrics",
    "train",
]


def build_model(config: TrainConfig, info: dp.DatasetInfo) -> keras.Model:
    """A zoo model for the data (or a user's `.keras` file), with the config's knobs
    and, with `weights`, converted keras.applications weights (zoo.load_weights).

    For regression the zoo model has one linear output followed by a
    `Normalization(invert=True)` with the training target's mean and std: the
    network learns a unit-scale target and the model predicts in the target's units
    (scikit-learn's TransformedTargetRegressor idea, inside the saved model).
    """
    if config.model.endswith(".keras"):
        return check_fits(zoo.load_model(config.model), config, info)
    card = zoo.model_card(config.model)
    if info.task == "tabular" and card.inputs == "images":
        raise ValueError(
            f"{config.model} needs images; dataset {config.dataset!r} is tabular. "
            "Use mlp, rnn, lstm or gru for CSV data."
        )
    knobs = {
        k: getattr(config, k)
        for k in (
            "activation",
            "kernel_initializer",
            "kernel_regularizer",
            "dropout",
            "batch_norm",
        )
        if getattr(config, k) is not None
    }
    if card.task == "classification":  # autoencoders and GANs have no such head
        knobs["classifier_activation"] = recipe.classifier_activation(config)
    try:
        model = zoo.build(
            config.model,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            **knobs,
            **config.model_args,
            **({"weights": config.weights} if config.weights else {}),
        )
    except ValueError as err:
        if "needs inputs of at least" in str(err) and config.image_size is None:
            raise ValueError(
                f"{err} The {config.dataset} images are "
                f"{info.input_shape[0]}x{info.input_shape[1]}."
            ) from None
        raise
    if not info.regression:
        return model
    unscale = keras.layers.Normalization(
        mean=info.target["mean"],
        variance=info.target["std"] ** 2,
        invert=True,
        name="target_scale",
    )
    return keras.Model(model.inputs, unscale(model.output), name=model.name)


def check_fits(
    model: keras.Model, config: TrainConfig, info: dp.DatasetInfo
) -> keras.Model:
    """Refuse a given model whose input the data do not fit, in one line (Keras
    says it only once fit has started, in several)."""
    takes, gives = tuple(model.input_shape[1:]), tuple(info.input_shape)
    if takes != gives:
        fix = (
            f"pass --image-size {takes[0]} --channels {takes[-1]}"
            if len(takes) == 3 and takes[0] == takes[1] and takes[-1] in (1, 3)
            else "resize the data to it"
        )
        raise ValueError(
            f"{model.name} takes inputs of shape {takes} but {config.dataset} gives "
            f"{gives}; {fix}."
        )
    return model


def train(
    model: str | keras.Model = "lenet5",
    dataset: str = "digits",
    *,
    resume: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    **options: Any,
) -> TrainResult:
    """Train a model, evaluate it on the held-out test split, record everything.

    Args:
        model: A zoo model name, a `.keras` file, or a `keras.Model`.
        dataset: A `data_pipelines` source string ("digits", "idx:DIR", ...).
        resume: A run directory to continue from its last completed epoch (its
            config is used; `options` may only repeat it).
        verbose: Keras verbosity; "auto" shows a progress bar on a terminal and one
            line per epoch otherwise.
        **options: Any `TrainConfig` field (epochs, batch_size, optimizer,
            learning_rate, schedule, augment, seed, ...).

    Returns:
        A `TrainResult` with the run directory, test metrics, history and model.
    """
    started = time.perf_counter()
    if resume is not None:
        run = runs.Run.reopen(resume, options, kind="train")
        config = run.config
    else:
        if isinstance(model, str) and not model.endswith(".keras"):
            zoo.model_card(model)  # unknown names fail here, with close matches
        name = model.name if isinstance(model, keras.Model) else str(model)
        config = TrainConfig.from_dict(
            {"model": name, "dataset": dataset, **options}, "options"
        )
    with recipe.prepare(config) as splits:
        if resume is None:
            run = runs.start(config, splits)
        given = model if isinstance(model, keras.Model) and resume is None else None
        return runs.execute(
            run,
            splits,
            lambda: (
                check_fits(given, config, splits.info)
                if given is not None
                else build_model(config, splits.info)
            ),
            [runs.Phase(config)],
            save_init=given is not None,
            verbose=verbose,
            started=started,
        )


def evaluate(
    run_dir: str | os.PathLike, dataset: str | None = None, verbose: int = 0
) -> dict[str, Any]:
    """Test metrics of a run's best model, on its own test split or on `dataset`."""
    run = Path(run_dir)
    path = run / runs.CONFIG_FILE
    config = files.read_record(path, "evaluate") if run.is_dir() else None
    if config is None or not (run / runs.BEST_MODEL).is_file():
        raise ValueError(
            f"{str(run)!r} is not a finished run directory (needs config.json and "
            "best.keras)."
        )
    config = TrainConfig.from_dict(config, str(path))
    runs.dataset_info(run, "evaluated")
    if dataset is not None:
        config.dataset = dataset
    splits = recipe.load_data(config)
    model = zoo.load_model(run / runs.BEST_MODEL)
    takes = (
        generative.image_shape(model)
        if config.generative
        else tuple(model.input_shape[1:])
    )
    if takes != tuple(splits.info.input_shape):
        raise ValueError(
            f"{config.dataset} gives inputs of shape {splits.info.input_shape} but "
            f"the model takes {takes}; the run used "
            f"image_size={config.image_size}, channels={config.channels}."
        )
    return {
        **test_metrics(model, splits, verbose, config.task),
        "test_size": splits.info.sizes["test"],
        "dataset": config.dataset,
    }
