"""`TrainConfig`: every setting of a run, declared once with its type, default,
help text, command-line group and the commands that offer it.

TensorFlow-free: the CLI generates the `zoo train`, `zoo finetune` and `zoo tune`
flags from these fields before TensorFlow is imported (`zoo --help` stays instant),
and `finetune`/`search` read the fields they accept from the same declaration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
TASKS = ("classification", "regression")
# Tasks the model's family decides (zoo.registry's card.task), never --task.
MODEL_TASKS = ("reconstruction", "generation")
LOSSES = ("crossentropy", "binary_crossentropy", "mse")
REGRESSION_LOSSES = ("mse", "mae", "huber")
TASK_LOSSES = {
    "classification": LOSSES,
    "regression": REGRESSION_LOSSES,
    "reconstruction": ("binary_crossentropy", "mse", "mae"),
    "generation": ("binary_crossentropy",),  # the adversarial game's own
}
SCHEDULES = ("constant", "step", "cosine", "plateau")
PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
STRATEGIES = (None, "mirrored", "multi-worker")
COMMANDS = ("train", "finetune", "tune")
# Who offers a field: `zoo train` only (the model's knobs), every command that
# runs the training recipe, or every command that loads data (the tuner too).
TRAIN = ("train",)
RUN = ("train", "finetune")
DATA = COMMANDS
# Command-line groups, in the order `--help` shows them.
GROUPS = {
    "data": "data",
    "recipe": "optimizer, loss and schedule",
    "model": "model (zoo builders)",
    "runtime": "reproducibility and devices",
    "output": "run directory and export",
}


def option(
    default: Any,
    help: str,
    group: str,
    commands: tuple[str, ...],
    *,
    flag: str | None = None,
    choices: tuple | None = None,
    metavar: str | None = None,
) -> Any:
    """A TrainConfig field with what the CLI needs to offer it."""
    meta = {"help": help, "group": group, "commands": commands, "flag": flag}
    meta.update(choices=choices, metavar=metavar)
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=type(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as the run's config.json."""

    model: str = option("lenet5", "zoo model name or a .keras file", "model", ())
    dataset: str = option(
        "digits",
        "digits, idx:DIR, tfds:NAME[:CONFIG], folder:DIR, csv:FILE",
        "data",
        DATA,
    )
    image_size: int | None = option(
        None, "resize images to SIZE x SIZE", "data", DATA, metavar="SIZE"
    )
    channels: int | None = option(
        None, "convert images to 1 or 3 channels", "data", DATA, choices=(1, 3)
    )
    normalize: bool = option(
        False, "per-channel standardization with train-split statistics", "data", DATA
    )
    augment: list[str] = option(
        [], "training-split augmentations, e.g. flip,rotate:0.05,zoom:0.1", "data", DATA
    )
    val_fraction: float = option(
        0.1, "share of the training data held out for validation", "data", DATA
    )
    label_column: str | None = option(
        None, "csv sources: the label column (required)", "data", DATA
    )
    data_dir: str | None = option(
        None, "tfds sources: the TFDS data_dir", "data", DATA, metavar="DIR"
    )
    task: str = option(
        "classification",
        "regression: numeric csv label, linear output, MSE loss",
        "data",
        TRAIN,
        choices=TASKS,
    )
    epochs: int = option(30, "epochs to train", "recipe", TRAIN)
    batch_size: int = option(64, "global batch size", "recipe", RUN)
    optimizer: str = option("adam", ", ".join(OPTIMIZERS), "recipe", RUN)
    learning_rate: float = option(
        1e-3,
        "learning rate (zoo finetune: the head phase's)",
        "recipe",
        RUN,
        flag="--lr",
    )
    momentum: float = option(0.9, "sgd momentum", "recipe", DATA)
    nesterov: bool = option(False, "sgd with Nesterov momentum", "recipe", DATA)
    weight_decay: float = option(1e-4, "adamw weight decay", "recipe", RUN)
    loss: str | None = option(
        None,
        "crossentropy (default), binary_crossentropy, mse; regression: mse "
        "(default), mae, huber; autoencoders: binary_crossentropy (default), mse, mae",
        "recipe",
        RUN,
    )
    from_logits: bool = option(
        False, "the model outputs logits (no softmax)", "recipe", RUN
    )
    label_smoothing: float = option(0.0, "in [0, 1)", "recipe", RUN)
    schedule: str = option("constant", ", ".join(SCHEDULES), "recipe", RUN)
    warmup_epochs: int = option(0, "linear learning-rate warm-up epochs", "recipe", RUN)
    step_epochs: int = option(
        10, "step: epochs per decay; plateau: twice the patience", "recipe", RUN
    )
    step_factor: float = option(
        0.1, "step and plateau: learning-rate factor per decay", "recipe", RUN
    )
    early_stopping: int | None = option(
        None,
        "stop after PATIENCE epochs without a better val accuracy; restores the "
        "best weights",
        "recipe",
        RUN,
        metavar="PATIENCE",
    )
    activation: str | None = option(None, "hidden activation", "model", TRAIN)
    kernel_initializer: str | None = option(
        None, "e.g. he_normal, glorot_uniform", "model", TRAIN
    )
    kernel_regularizer: str | None = option(
        None, "l1, l2, l1_l2 with optional strength, e.g. l2:1e-4", "model", TRAIN
    )
    dropout: float | None = option(
        None, "dropout rate of the hidden Dense layers", "model", TRAIN
    )
    batch_norm: bool | None = option(
        None, "batch normalization after convolutions", "model", TRAIN
    )
    weights: str | None = option(
        None,
        "keras.applications weights file (.h5) of vgg16/19 or resnet50/101/152, "
        "converted into the zoo model, which then applies the ImageNet "
        "preprocessing these weights expect (on RGB images: --channels 3 is implied)",
        "model",
        TRAIN,
        metavar="FILE",
    )
    model_args: dict[str, Any] = option(
        {},
        "family option, e.g. hidden_units=[512,256] (repeatable)",
        "model",
        TRAIN,
        flag="--model-arg",
        metavar="KEY=VALUE",
    )
    seed: int = option(0, "seed of Python, NumPy and Keras", "runtime", DATA)
    deterministic: bool = option(
        False,
        "deterministic TensorFlow ops and input pipeline: same seed, same weights",
        "runtime",
        DATA,
    )
    mixed_precision: str | None = option(
        None,
        "GPU option (slower on CPU); outputs stay float32",
        "runtime",
        RUN,
        choices=PRECISIONS[1:],
    )
    jit_compile: bool = option(False, "XLA (GPU option; slower on CPU)", "runtime", RUN)
    strategy: str | None = option(
        None,
        "mirrored: tf.distribute.MirroredStrategy over the visible GPUs (or the "
        "logical CPUs); multi-worker: MultiWorkerMirroredStrategy over the "
        "machines TF_CONFIG names (zoo train; docs/distributed.md). "
        "--batch-size stays the global batch; --lr is not rescaled",
        "runtime",
        RUN,
        choices=STRATEGIES[1:],
    )
    run_dir: str = option(
        "runs", "parent of the run directories", "output", RUN, metavar="DIR"
    )
    name: str | None = option(
        None, "run directory name (default: timestamp-model-dataset)", "output", RUN
    )
    checkpoint_every: int | None = option(
        None,
        "checkpoint every N epochs (default: whenever one is due, so that "
        "checkpoints take at most ~2.5 %% of the time)",
        "output",
        RUN,
        metavar="N",
    )
    export: str | None = option(
        None,
        "after training, export a verified SavedModel to DIR",
        "output",
        RUN,
        metavar="DIR",
    )

    def __post_init__(self) -> None:
        card = self.card()
        if card is not None and card.task in MODEL_TASKS and self.task == TASKS[0]:
            self.task = card.task  # an autoencoder's or a GAN's run
        if self.loss is None:
            self.loss = {
                "regression": "mse",
                # Pixels in [0, 1] against a sigmoid: cross-entropy keeps its
                # gradient where MSE's vanishes (conv autoencoders trained with
                # MSE on MNIST collapsed to a constant image here), and the
                # VAE's ELBO is written for it.
                "reconstruction": "binary_crossentropy",
                "generation": "binary_crossentropy",
            }.get(self.task, "crossentropy")
        if isinstance(self.augment, str):
            self.augment = [a for a in self.augment.split(",") if a]
        if self.weights is not None and self.channels is None:
            self.channels = 3  # ImageNet weights take RGB: gray data are converted

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def classification(self) -> bool:
        return self.task == "classification"

    @property
    def generative(self) -> bool:
        """An autoencoder's or a GAN's run: images in, images out."""
        return self.task in MODEL_TASKS

    def card(self):
        """The zoo model's registry card; None for a `.keras` file or an unknown
        name (refused later, with close matches)."""
        from zoo import registry  # TensorFlow-free

        try:
            return registry.model_card(self.model)
        except ValueError:
            return None

    @classmethod
    def from_dict(cls, values: dict[str, Any], origin: str = "config") -> TrainConfig:
        """Build from a dict, refusing unknown keys, and validate."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)} in {origin}; allowed: "
                f"{', '.join(allowed)}."
            )
        config = cls(**values)
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check every named choice before anything is loaded or written."""
        for key, value, allowed in [
            ("task", self.task, (*TASKS, *MODEL_TASKS)),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("loss", self.loss, TASK_LOSSES.get(self.task, LOSSES)),
            ("schedule", self.schedule, SCHEDULES),
            ("mixed_precision", self.mixed_precision, PRECISIONS),
            ("strategy", self.strategy, STRATEGIES),
        ]:
            if value not in allowed:
                shown = ", ".join("none" if a is None else a for a in allowed)
                where = (
                    f" for {self.task}"
                    if key == "loss" and not self.classification
                    else ""
                )
                raise ValueError(f"unknown {key} {value!r}{where}; allowed: {shown}.")
        for key in ("epochs", "batch_size", "checkpoint_every"):
            value = getattr(self, key)
            if value is None and key == "checkpoint_every":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1; received {value!r}.")
        size = self.image_size
        sizes = size if isinstance(size, list | tuple) and len(size) == 2 else [size]
        if size is not None and not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes
        ):
            raise ValueError(
                f"image_size must be an int >= 1 (or [height, width]); received "
                f"{size!r}. Pass e.g. --image-size 32, or omit it for the data's size."
            )
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"learning_rate must be > 0; received {lr!r}.")
        if not math.isfinite(lr):
            raise ValueError(f"learning_rate must be finite; received {lr!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"label_smoothing must be in [0, 1); received {self.label_smoothing!r}."
            )
        if self.deterministic and self.jit_compile:
            raise ValueError(
                "deterministic and jit_compile cannot be combined: Keras turns XLA "
                "off under TensorFlow's op determinism; drop --jit-compile or "
                "--deterministic."
            )
        self._validate_schedule()
        self._validate_task()
        if self.regression and (self.from_logits or self.label_smoothing):
            raise ValueError(
                "from_logits and label_smoothing apply to classification; "
                "task 'regression' predicts values."
            )
        if self.weights is not None and self.model.endswith(".keras"):
            raise ValueError(
                f"weights={self.weights!r} converts keras.applications weights into "
                f"a zoo model; {self.model!r} brings its own. Drop --weights."
            )
        if self.weights is not None and self.channels == 1:
            raise ValueError(
                "weights take RGB images (3 channels); drop --channels 1 (gray data "
                "are converted to RGB)."
            )
        if self.weights is not None and self.normalize:
            raise ValueError(
                "weights bring the ImageNet preprocessing they expect (inside the "
                "model, on images in [0, 1]); drop --normalize."
            )
        import data_pipelines as dp  # imports TensorFlow: only once a run starts

        dp.parse_augment(self.augment)
        name = self.name
        if name is not None and (not name or Path(name).name != name or name == ".."):
            raise ValueError(
                f"name={name!r} is not a directory name; pass a plain name (no '/' "
                "or '..'), or none for a timestamped one."
            )
        if self.export:
            from zoo import files

            files.check_export_dir(self.export)

    def _validate_task(self) -> None:
        """A model task follows the model: an autoencoder or a GAN has no labels to
        classify, regress, smooth or mix."""
        card = self.card()
        own = card.task if card is not None else "classification"
        if self.task in MODEL_TASKS and own != self.task:
            raise ValueError(
                f"task {self.task!r} belongs to the generative families (zoo list); "
                f"{self.model} is not one. Drop task, or pick e.g. conv_autoencoder."
            )
        if own not in MODEL_TASKS:
            return
        if self.dataset.startswith("csv:"):  # before the source asks for labels
            raise ValueError(
                f"{self.model} makes images; dataset {self.dataset!r} is tabular. "
                "Use an image source: digits, idx:DIR, folder:DIR or tfds:NAME."
            )
        if self.task != own:
            raise ValueError(
                f"{self.model} is a generative model (task {own!r}); task "
                f"{self.task!r} does not apply. Drop --task."
            )
        from data_pipelines.augment import AUGMENTATIONS, parse_augment

        mixing = [
            name
            for name, _ in parse_augment(self.augment)
            if AUGMENTATIONS[name].mixes_labels
        ]
        unused = [
            f"--{k.replace('_', '-')}"
            for k in ("from_logits", "label_smoothing", "label_column")
            if getattr(self, k)
        ]
        parts = [f"--augment {','.join(mixing)} mixes them"] if mixing else []
        if unused:
            verb = "applies" if len(unused) == 1 else "apply"
            parts.append(f"{', '.join(unused)} {verb} to them")
        if parts:
            raise ValueError(
                f"{self.model} is a generative model (task {own!r}) and uses no "
                f"labels, but {' and '.join(parts)}. Drop them (image augmentations "
                "such as flip,rotate:0.05 are fine)."
            )
        if own == "generation" and (self.early_stopping or self.schedule == "plateau"):
            raise ValueError(
                f"{self.model} reports no val_loss to watch (a GAN's losses are a "
                "game, not a score), so --early-stopping and --schedule plateau do "
                "not apply. Drop them; its best model is its last epoch."
            )

    def _validate_schedule(self) -> None:
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


def fields_for(command: str) -> list[dataclasses.Field]:
    """The TrainConfig fields `command` ("train", "finetune", "tune") offers."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; allowed: {COMMANDS}.")
    return [
        f for f in dataclasses.fields(TrainConfig) if command in f.metadata["commands"]
    ]


def options_for(command: str) -> tuple[str, ...]:
    """The names of the fields `command` accepts as keyword options."""
    return tuple(f.name for f in fields_for(command))
