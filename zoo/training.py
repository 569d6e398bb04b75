"""Train and evaluate zoo models; every run is a directory that survives a crash.

A run directory holds the resolved `config.json`, `dataset.json` (for evaluation and
export), `best.keras` / `last.keras`, `checkpoints/` (Keras BackupAndRestore: weights
+ optimizer state + epoch, for `resume`), `history.csv`, `tensorboard/`, the learning
curves `loss.png` / `accuracy.png` (regression: `mae.png`), `confusion_matrix.png`
(regression: `predictions.png`, predicted vs true) and `metrics.json`.
Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import data_pipelines as dp
import zoo

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
TASKS = ("classification", "regression")
LOSSES = ("crossentropy", "binary_crossentropy", "mse")
REGRESSION_LOSSES = ("mse", "mae", "huber")
SCHEDULES = ("constant", "step", "cosine", "plateau")
PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
STRATEGIES = (None, "mirrored")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as the run's config.json."""

    model: str = "lenet5"
    dataset: str = "digits"
    image_size: int | None = None
    channels: int | None = None
    normalize: bool = False
    augment: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    label_column: str | None = None
    data_dir: str | None = None
    task: str = "classification"
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    loss: str | None = None  # crossentropy for classification, mse for regression
    from_logits: bool = False
    label_smoothing: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    step_epochs: int = 10
    step_factor: float = 0.1
    early_stopping: int | None = None
    activation: str | None = None
    kernel_initializer: str | None = None
    kernel_regularizer: str | None = None
    dropout: float | None = None
    batch_norm: bool | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    deterministic: bool = False
    mixed_precision: str | None = None
    jit_compile: bool = False
    strategy: str | None = None
    run_dir: str = "runs"
    name: str | None = None
    export: str | None = None

    def __post_init__(self) -> None:
        if self.loss is None:
            self.loss = "mse" if self.task == "regression" else "crossentropy"

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @classmethod
    def from_dict(cls, values: dict[str, Any], origin: str = "config") -> TrainConfig:
        """Build from a dict, refusing unknown keys (named with close matches)."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)} in {origin}; allowed: "
                f"{', '.join(allowed)}."
            )
        config = cls(**values)
        if isinstance(config.augment, str):
            config.augment = [a for a in config.augment.split(",") if a]
        config.validate()
        return config

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The key/values of a TOML experiment file (validated by `from_dict`)."""
        try:
            with open(path, "rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            raise ValueError(f"config file {str(path)!r} does not exist.") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"cannot parse {str(path)!r} as TOML: {err}.") from None

    def validate(self) -> None:
        """Check every named choice before anything is loaded or written."""
        for key, value, allowed in [
            ("task", self.task, TASKS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("loss", self.loss, REGRESSION_LOSSES if self.regression else LOSSES),
            ("schedule", self.schedule, SCHEDULES),
            ("mixed_precision", self.mixed_precision, PRECISIONS),
            ("strategy", self.strategy, STRATEGIES),
        ]:
            if value not in allowed:
                shown = ", ".join("none" if a is None else a for a in allowed)
                where = " for regression" if key == "loss" and self.regression else ""
                raise ValueError(f"unknown {key} {value!r}{where}; allowed: {shown}.")
        for key in ("epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(
                    f"{key} must be an int >= 1; received {getattr(self, key)!r}."
                )
        if not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate must be > 0; received {self.learning_rate!r}."
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"label_smoothing must be in [0, 1); received {self.label_smoothing!r}."
            )
        if self.schedule == "plateau" and self.warmup_epochs:
            raise ValueError(
                "warmup_epochs cannot be combined with schedule "
                "'plateau'; use 'constant', 'step' or 'cosine'."
            )
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be smaller "
                f"than epochs ({self.epochs})."
            )
        if self.regression and (self.from_logits or self.label_smoothing):
            raise ValueError(
                "from_logits and label_smoothing apply to classification; "
                "task 'regression' predicts values."
            )
        dp.parse_augment(self.augment)
        name = self.name
        if name is not None and (not name or Path(name).name != name or name == ".."):
            raise ValueError(
                f"name={name!r} is not a directory name; pass a plain name (no '/' "
                "or '..'), or none for a timestamped one."
            )
        if self.export:
            from zoo import export

            export.check_export_dir(self.export)


@dataclass
class TrainResult:
    """What `train` returns."""

    run_dir: Path
    metrics: dict[str, float]
    history: pd.DataFrame
    model: keras.Model
    export_dir: Path | None = None


class TrainingError(ValueError):
    """Training stopped on a condition the user must act on (e.g. a NaN loss)."""


# --- small atomic file helpers -----------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write text to `path` via a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_atomic(model: keras.Model, path: Path) -> None:
    """`model.save` to a temporary `.keras` file, then rename into place."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _figure_atomic(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


# --- building blocks of a run --------------------------------------------------------


class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `schedule(0)` over `warmup_steps`, then `schedule(step -
    warmup_steps)`. Keras has warm-up only inside CosineDecay."""

    def __init__(self, schedule, warmup_steps: int) -> None:
        self.schedule = schedule
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        target = self.schedule(0) if callable(self.schedule) else self.schedule
        warm = target * (step + 1) / self.warmup_steps
        after = (
            self.schedule(step - self.warmup_steps)
            if callable(self.schedule)
            else self.schedule
        )
        return keras.ops.where(step < self.warmup_steps, warm, after)

    def get_config(self) -> dict[str, Any]:
        schedule = self.schedule
        if callable(schedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        return cls(schedule, config["warmup_steps"])


keras.saving.register_keras_serializable(package="zoo")(Warmup)


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The learning rate: a float (constant, plateau) or a per-step schedule, so the
    position in the schedule lives in the optimizer's iteration count and survives
    a resume."""
    lr = config.learning_rate
    warmup = config.warmup_epochs * steps_per_epoch
    schedules = keras.optimizers.schedules
    if config.schedule == "step":
        lr = schedules.ExponentialDecay(
            lr, config.step_epochs * steps_per_epoch, config.step_factor, staircase=True
        )
    elif config.schedule == "cosine":
        decay = (config.epochs - config.warmup_epochs) * steps_per_epoch
        return schedules.CosineDecay(
            0.0 if warmup else lr,
            decay,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    return Warmup(lr, warmup) if warmup else lr


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.Optimizer:
    """SGD (momentum, nesterov), Adam, AdamW, RMSprop, Adagrad or Adadelta."""
    lr = learning_rate(config, steps_per_epoch)
    o = keras.optimizers
    return {
        "sgd": lambda: o.SGD(lr, momentum=config.momentum, nesterov=config.nesterov),
        "adam": lambda: o.Adam(lr),
        "adamw": lambda: o.AdamW(lr, weight_decay=config.weight_decay),
        "rmsprop": lambda: o.RMSprop(lr),
        "adagrad": lambda: o.Adagrad(lr),
        "adadelta": lambda: o.Adadelta(lr),
    }[config.optimizer]()


def make_loss(config: TrainConfig, one_hot: bool) -> keras.losses.Loss:
    """Cross-entropy matching the label format (sparse ids or one-hot), BCE, MSE
    (on one-hot classes, or on regression targets), MAE or Huber."""
    if config.loss == "mae":
        return keras.losses.MeanAbsoluteError()
    if config.loss == "huber":
        return keras.losses.Huber()
    if config.loss == "crossentropy":
        if one_hot:
            return keras.losses.CategoricalCrossentropy(
                from_logits=config.from_logits, label_smoothing=config.label_smoothing
            )
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=config.from_logits
        )
    if config.loss == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(
            from_logits=config.from_logits, label_smoothing=config.label_smoothing
        )
    return keras.losses.MeanSquaredError()


def needs_one_hot(config: TrainConfig, info: dp.DatasetInfo) -> bool:
    if info.regression:
        return False
    return (
        info.label_mode == "onehot"
        or config.loss != "crossentropy"
        or config.label_smoothing > 0
    )


def compile_metrics(config: TrainConfig) -> list:
    """Accuracy for classifiers; MAE and RMSE (in the target's units) for regression."""
    if config.regression:
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]
    return ["accuracy"]


def load_data(config: TrainConfig) -> dp.Splits:
    """The run's splits; labels become one-hot when the loss needs them."""
    splits = dp.load(
        config.dataset,
        image_size=config.image_size,
        channels=config.channels,
        batch_size=config.batch_size,
        val_fraction=config.val_fraction,
        augment=config.augment,
        normalize=config.normalize,
        seed=config.seed,
        deterministic=config.deterministic,
        data_dir=config.data_dir,
        label_column=config.label_column,
        regression=config.regression,
    )
    if needs_one_hot(config, splits.info) and splits.info.label_mode == "int":
        n = splits.info.num_classes

        def encode(ds):
            return ds.map(lambda x, y: (x, tf.one_hot(y, n)), tf.data.AUTOTUNE)

        splits = dp.Splits(
            encode(splits.train), encode(splits.val), encode(splits.test), splits.info
        )
    return splits


def build_model(config: TrainConfig, info: dp.DatasetInfo) -> keras.Model:
    """A zoo model for the data (or a user's `.keras` file), with the config's knobs.

    For regression the zoo model has one linear output followed by a
    `Normalization(invert=True)` with the training target's mean and std: the
    network learns a unit-scale target and the model predicts in the target's units
    (scikit-learn's TransformedTargetRegressor idea, inside the saved model).
    """
    if config.model.endswith(".keras"):
        return zoo.load_model(config.model)
    card = zoo.model_card(config.model)
    if info.task == "tabular" and card.family != "mlp":
        raise ValueError(
            f"{config.model} needs images; dataset {config.dataset!r} is tabular. "
            "Use the mlp model for CSV data."
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
    try:
        model = zoo.build(
            config.model,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            classifier_activation=classifier_activation(config),
            **knobs,
            **config.model_args,
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


def classifier_activation(config: TrainConfig) -> str | None:
    """The output activation the loss expects: softmax, sigmoid, or None (logits,
    regression)."""
    if config.from_logits or config.regression:
        return None
    return "sigmoid" if config.loss == "binary_crossentropy" else "softmax"


def distribution(config: TrainConfig) -> tf.distribute.Strategy:
    """MirroredStrategy over the GPUs, or over the logical CPUs when there are none."""
    if config.strategy == "mirrored":
        devices = tf.config.list_logical_devices(
            "GPU"
        ) or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    """How good an epoch is: higher val accuracy, ties broken by lower val loss (with
    a few hundred validation images, accuracies tie often; early ties were picking
    under-trained epochs). Regression runs have no accuracy: lower val loss."""
    return (row.get("val_accuracy", -math.inf), -row.get("val_loss", math.inf))


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: history.csv, last.keras, best.keras (see `_rank`), curves.

    Keras' CSVLogger and ModelCheckpoint write in place; this writes each file
    atomically and, on resume, drops history rows of epochs that are re-run.
    Setting `phase` (e.g. "head", "finetune") adds a `phase` column to the rows.
    """

    def __init__(self, run_dir: Path, start_epoch: int = 0) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.rows: list[dict[str, float | str]] = []
        self.bad_epoch: int | None = None
        self.phase: str | None = None
        path = run_dir / "history.csv"
        if path.exists() and start_epoch:
            history = pd.read_csv(path)
            self.rows = history[history["epoch"] < start_epoch].to_dict("records")

    def on_train_batch_end(self, batch, logs=None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_epoch = self.current_epoch
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = dict(logs or {})
        if self.bad_epoch is not None or not all(
            math.isfinite(float(v)) for v in logs.values()
        ):
            self.bad_epoch = epoch if self.bad_epoch is None else self.bad_epoch
            self.model.stop_training = True
            return
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        best = max(map(_rank, self.rows), default=(-math.inf, -math.inf))
        row = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
        if self.phase is not None:
            row["phase"] = self.phase
        self.rows.append(row)
        history = pd.DataFrame(self.rows)
        write_atomic(self.run_dir / "history.csv", history.to_csv(index=False))
        save_atomic(self.model, self.run_dir / "last.keras")
        if _rank(row) > best or not (self.run_dir / "best.keras").exists():
            save_atomic(self.model, self.run_dir / "best.keras")
        plot_curves(history, self.run_dir)


class FiniteBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that never backs up an epoch whose loss is not finite, so the
    last good state stays resumable."""

    def on_epoch_end(self, epoch, logs=None) -> None:
        if all(math.isfinite(float(v)) for v in (logs or {}).values()):
            super().on_epoch_end(epoch, logs)


def plot_curves(history: pd.DataFrame, run_dir: Path) -> None:
    """loss.png and accuracy.png (regression: mae.png): train vs val per epoch; with
    a `phase` column, a dashed line marks where each phase after the first begins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric in ("loss", "accuracy", "mae"):
        if metric not in history:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
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
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric}: train vs val")
        ax.grid(alpha=0.3)
        ax.legend()
        _figure_atomic(fig, run_dir / f"{metric}.png")
        plt.close(fig)


def plot_confusion(y_true, y_pred, class_names: list[str], path: Path) -> None:
    """Confusion matrix of the test split (scikit-learn's display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(6, 6))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        display_labels=class_names,
        ax=ax,
        colorbar=False,
    )
    ax.set_title("test split")
    _figure_atomic(fig, path)
    plt.close(fig)


def _slug(dataset: str) -> str:
    scheme, _, rest = dataset.partition(":")
    name = Path(rest.split(":")[0]).stem if rest else scheme
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name or scheme).strip("-") or "data"


def _new_run_dir(config: TrainConfig, resumable: bool = True) -> Path:
    """A fresh run directory; `resumable`: the collision message offers --resume."""
    root = Path(config.run_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"run_dir {str(root)!r} is a file; pass a directory.")
    if config.name:
        path = root / config.name
        if path.exists():
            resume = f"resume it with --resume {path} or " if resumable else ""
            raise FileExistsError(
                f"run directory {str(path)!r} already exists; {resume}pick another "
                "--name."
            )
    else:
        model = Path(config.model).stem
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{_slug(config.dataset)}"
        path, n = root / stem, 2
        while path.exists():
            path, n = root / f"{stem}-{n}", n + 1
    path.mkdir(parents=True)
    return path


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    y = np.concatenate([np.asarray(b) for _, b in ds])
    return y.argmax(axis=1) if y.ndim == 2 else y


def _set_seeds(config: TrainConfig) -> None:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


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
        run_dir, config = _resume_config(Path(resume), options)
    else:
        if isinstance(model, str) and not model.endswith(".keras"):
            zoo.model_card(model)  # unknown names fail here, with close matches
        name = model.name if isinstance(model, keras.Model) else str(model)
        config = TrainConfig.from_dict(
            {"model": name, "dataset": dataset, **options}, "options"
        )
        run_dir = None
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    _set_seeds(config)
    splits = load_data(config)
    info = splits.info
    steps = math.ceil(info.sizes["train"] / config.batch_size)
    previous_policy = keras.mixed_precision.dtype_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    try:
        strategy = distribution(config)
        with strategy.scope():
            if resume is None and isinstance(model, keras.Model):
                net = model
            elif resume is not None and (run_dir / "model_init.keras").exists():
                net = zoo.load_model(run_dir / "model_init.keras")
            else:
                net = build_model(config, info)
            net.compile(
                optimizer=make_optimizer(config, steps),
                loss=make_loss(config, needs_one_hot(config, info)),
                metrics=compile_metrics(config),
                jit_compile=config.jit_compile,
            )
        if run_dir is None:
            run_dir = _new_run_dir(config)
            if isinstance(model, keras.Model):
                save_atomic(net, run_dir / "model_init.keras")
            write_atomic(
                run_dir / "config.json",
                json.dumps(dataclasses.asdict(config), indent=2),
            )
            write_atomic(run_dir / "dataset.json", json.dumps(info.to_dict(), indent=2))
        start_epoch = _finished_epochs(run_dir)
        recorder = RunRecorder(run_dir, start_epoch=start_epoch)
        callbacks = [
            recorder,
            FiniteBackup(
                str(run_dir / "checkpoints"),
                double_checkpoint=True,
                delete_checkpoint=False,
            ),
            keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
        ]
        callbacks += config_callbacks(config)
        for _ in range(start_epoch):
            # Each iter() of a reshuffling tf.data dataset draws the next order, and
            # Keras 3.15's fit creates two per epoch (one it consumes, one at its
            # end). Creating as many as the finished epochs did replays the data
            # order of the resumed epochs (tested). Random augmentation layers also
            # advance their random state with every batch, and that state is in no
            # checkpoint: consuming the first iterator again replays it too (one
            # pass over the data per finished epoch, no training).
            for _ in splits.train:
                pass
            iter(splits.train)
        net.fit(
            splits.train,
            validation_data=splits.val,
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
        if recorder.bad_epoch is not None:
            if (run_dir / "last.keras").is_file():
                kept = f"The last good checkpoint is {run_dir / 'last.keras'}."
            else:  # nothing to resume from: leave no half-written run behind
                shutil.rmtree(run_dir, ignore_errors=True)
                kept = (
                    f"No epoch ended with a finite loss: nothing kept ({run_dir} "
                    "removed)."
                )
            raise TrainingError(
                f"loss became NaN in epoch {recorder.bad_epoch + 1}; training stopped. "
                f"{kept} Try a lower learning rate (now {config.learning_rate:g})."
            )
        metrics = _evaluate(run_dir, splits, config, verbose)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    metrics["replicas"] = strategy.num_replicas_in_sync
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    history = pd.read_csv(run_dir / "history.csv")
    export_dir = None
    if config.export:
        from zoo import export

        export_dir = export.export_saved_model(run_dir, config.export)
    best = zoo.load_model(run_dir / "best.keras")
    print(
        f"{config.model} on {config.dataset}: {headline(metrics)}, "
        f"{metrics['params']:,} parameters, "
        f"{len(history)} epochs in {metrics['wall_time_s']:.0f}s; run: {run_dir}"
        + (f"; SavedModel (verified): {export_dir}" if export_dir else "")
    )
    return TrainResult(run_dir, metrics, history, best, export_dir)


def config_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """Early stopping and the plateau schedule, when the config asks for them."""
    callbacks = []
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                "val_loss" if config.regression else "val_accuracy",
                patience=config.early_stopping,
                restore_best_weights=True,
            )
        )
    if config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                "val_loss",
                factor=config.step_factor,
                patience=max(1, config.step_epochs // 2),
            )
        )
    return callbacks


def _finished_epochs(run_dir: Path) -> int:
    """Epochs completed according to the BackupAndRestore checkpoint (0 if none)."""
    meta = run_dir / "checkpoints" / "training_metadata.json"
    return json.loads(meta.read_text())["epoch"] if meta.exists() else 0


def _evaluate(
    run_dir: Path, splits: dp.Splits, config: TrainConfig, verbose: int
) -> dict[str, Any]:
    """Test metrics of best.keras, and the confusion-matrix PNG (regression:
    predicted vs true values)."""
    best = zoo.load_model(run_dir / "best.keras")
    metrics = test_metrics(best, splits)
    y_pred = best.predict(splits.test, verbose=0)
    y_pred = y_pred[0] if isinstance(y_pred, list) else y_pred
    if splits.info.regression:
        plot_predictions(
            _labels(splits.test),
            y_pred[:, 0],
            splits.info.target["name"],
            run_dir / "predictions.png",
        )
    else:
        plot_confusion(
            _labels(splits.test),
            y_pred.argmax(axis=1),
            splits.info.class_names,
            run_dir / "confusion_matrix.png",
        )
    history = pd.read_csv(run_dir / "history.csv")
    best_row = max(history.to_dict("records"), key=_rank)
    key = "val_loss" if splits.info.regression else "val_accuracy"
    return {
        **metrics,
        "params": int(best.count_params()),
        "epochs": int(len(history)),
        "best_epoch": int(best_row["epoch"]) + 1,
        f"best_{key}": float(best_row[key]),
    }


def test_metrics(
    model: keras.Model, splits: dp.Splits, verbose: int = 0
) -> dict[str, float]:
    """The compiled metrics of `model` on the test split, as `test_<name>`; for
    regression also R^2 (scikit-learn's r2_score)."""
    values = model.evaluate(splits.test, verbose=verbose, return_dict=True)
    metrics = {f"test_{k}": float(v) for k, v in values.items()}
    if splits.info.regression:
        from sklearn.metrics import r2_score

        y_pred = model.predict(splits.test, verbose=0)
        metrics["test_r2"] = float(r2_score(_labels(splits.test), y_pred[:, 0]))
    return metrics


def headline(metrics: dict[str, Any]) -> str:
    """The summary of test metrics a person reads: accuracy, or MAE/RMSE/R^2."""
    if "test_accuracy" in metrics:
        return f"test accuracy {metrics['test_accuracy']:.4f}"
    return (
        f"test MAE {metrics['test_mae']:.4g}, RMSE {metrics['test_rmse']:.4g}, "
        f"R^2 {metrics['test_r2']:.3f}"
    )


def plot_predictions(y_true, y_pred, name: str, path: Path) -> None:
    """Predicted vs true values of the test split, with the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    low, high = (
        float(min(y_true.min(), y_pred.min())),
        float(max(y_true.max(), y_pred.max())),
    )
    ax.plot([low, high], [low, high], color="gray", linestyle="--")
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title="test split")
    ax.grid(alpha=0.3)
    _figure_atomic(fig, path)
    plt.close(fig)


def _resume_config(run_dir: Path, options: dict[str, Any]) -> tuple[Path, TrainConfig]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(
            f"{str(run_dir)!r} is not a run directory (no config.json); pass a "
            "directory made by `zoo train`."
        )
    if (run_dir / "transfer.json").is_file():
        raise ValueError(
            f"{str(run_dir)!r} is a fine-tuning run (transfer.json); --resume "
            "continues `zoo train` runs only. Start `zoo finetune` again instead."
        )
    saved = json.loads(path.read_text())
    conflicts = [
        f"{k}={v!r} (run has {saved.get(k)!r})"
        for k, v in options.items()
        if k in saved and saved[k] != v
    ]
    if conflicts:
        raise ValueError(
            f"--resume {run_dir}: flags conflict with the run's config: "
            f"{', '.join(conflicts)}. Drop them, or start a new run."
        )
    return run_dir, TrainConfig.from_dict(saved, str(path))


def evaluate(
    run_dir: str | os.PathLike, dataset: str | None = None, verbose: int = 0
) -> dict[str, Any]:
    """Test metrics of a run's best model, on its own test split or on `dataset`."""
    run = Path(run_dir)
    if not (run / "config.json").is_file() or not (run / "best.keras").is_file():
        raise ValueError(
            f"{str(run)!r} is not a finished run directory (needs config.json and "
            "best.keras)."
        )
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    if dataset is not None:
        config.dataset = dataset
    splits = load_data(config)
    model = zoo.load_model(run / "best.keras")
    if tuple(model.input_shape[1:]) != tuple(splits.info.input_shape):
        raise ValueError(
            f"{config.dataset} gives inputs of shape {splits.info.input_shape} but "
            f"the model takes {tuple(model.input_shape[1:])}; the run used "
            f"image_size={config.image_size}, channels={config.channels}."
        )
    return {
        **test_metrics(model, splits, verbose),
        "test_size": splits.info.sizes["test"],
        "dataset": config.dataset,
    }
