"""The training recipe of a `TrainConfig`: data, optimizer, loss, learning-rate
schedule, metrics, callbacks, seeds and the distribution strategy.

`training`, `transfer` and `tuning` all compile models through `compile_model`, so
a run, a fine-tuning phase and a tuner trial train with the same recipe.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

import data_pipelines as dp
from zoo.config import TrainConfig


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
    """The config's optimizer by name (`keras.optimizers.get`), with its schedule."""
    options: dict[str, Any] = {"learning_rate": learning_rate(config, steps_per_epoch)}
    if config.optimizer == "sgd":
        options.update(momentum=config.momentum, nesterov=config.nesterov)
    elif config.optimizer == "adamw":
        options.update(weight_decay=config.weight_decay)
    return keras.optimizers.get({"class_name": config.optimizer, "config": options})


def make_loss(config: TrainConfig, one_hot: bool) -> keras.losses.Loss:
    """Cross-entropy matching the label format (sparse ids or one-hot), BCE, MSE
    (on one-hot classes, or on regression targets), MAE or Huber."""
    losses = keras.losses
    if config.loss == "crossentropy" and not one_hot:
        return losses.SparseCategoricalCrossentropy(from_logits=config.from_logits)
    if config.loss in ("crossentropy", "binary_crossentropy"):
        cls = {
            "crossentropy": losses.CategoricalCrossentropy,
            "binary_crossentropy": losses.BinaryCrossentropy,
        }[config.loss]
        return cls(
            from_logits=config.from_logits, label_smoothing=config.label_smoothing
        )
    return {"mae": losses.MeanAbsoluteError, "huber": losses.Huber}.get(
        config.loss, losses.MeanSquaredError
    )()


def needs_one_hot(config: TrainConfig, info: dp.DatasetInfo) -> bool:
    """Whether the loss needs one-hot labels (label smoothing, BCE, MSE)."""
    if not config.classification:
        return False
    return (
        info.label_mode == "onehot"
        or config.loss != "crossentropy"
        or config.label_smoothing > 0
    )


def compile_metrics(config: TrainConfig) -> list:
    """Accuracy for classifiers; MAE and RMSE (in the target's units) for regression;
    the pixels' MSE for autoencoders (their loss may be BCE, or hold a KL term);
    none for GANs, whose steps report their own."""
    if config.task == "reconstruction":
        return [keras.metrics.MeanSquaredError(name="mse")]
    if config.task == "generation":
        return []
    if config.regression:
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]
    return ["accuracy"]


def classifier_activation(config: TrainConfig) -> str | None:
    """The output activation the loss expects: softmax, sigmoid, or None (logits,
    regression)."""
    if config.from_logits or config.regression:
        return None
    return "sigmoid" if config.loss == "binary_crossentropy" else "softmax"


def compile_model(
    model: keras.Model, config: TrainConfig, info: dp.DatasetInfo
) -> keras.Model:
    """Compile `model` with the config's optimizer (its schedule sized to the
    training split), loss and metrics. A GAN's steps compute their own losses
    (its compile makes the second player's optimizer from this one)."""
    steps = math.ceil(info.sizes["train"] / config.batch_size)
    game = config.task == "generation"
    model.compile(
        optimizer=make_optimizer(config, steps),
        loss=None if game else make_loss(config, needs_one_hot(config, info)),
        metrics=compile_metrics(config),
        jit_compile=config.jit_compile,
    )
    return model


def callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """Early stopping and the plateau schedule, when the config asks for them."""
    found = []
    if config.early_stopping:
        found.append(
            keras.callbacks.EarlyStopping(
                "val_accuracy" if config.classification else "val_loss",
                patience=config.early_stopping,
                restore_best_weights=True,
            )
        )
    if config.schedule == "plateau":
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                "val_loss",
                factor=config.step_factor,
                patience=max(1, config.step_epochs // 2),
            )
        )
    return found


class NaNGuard(keras.callbacks.Callback):
    """Stops a fit at the first batch whose loss is not finite and remembers the
    epoch (Keras' TerminateOnNaN only prints it)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_epoch: int | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_epoch = self.epoch
            self.model.stop_training = True


def with_policy(model: keras.Model, config: TrainConfig) -> keras.Model:
    """`model` computing under the config's mixed precision. Keras applies the
    global policy only to layers created under it, so a model loaded or built
    earlier (a `.keras` file, a pretrained backbone) is cloned with it; the output
    layers stay float32."""
    if not config.mixed_precision:
        return model
    from zoo.export.rewrites import with_precision

    return with_precision(model, config.mixed_precision.removeprefix("mixed_"))


def load_data(config: TrainConfig) -> dp.Splits:
    """The run's splits; labels become one-hot when the loss needs them. An
    autoencoder's training and validation examples are (images, images); its test
    split keeps the labels, which colour its latent map (evaluation pairs the
    images itself)."""
    splits = dp.load(
        config.dataset,
        image_size=config.image_size,
        channels=config.channels,
        batch_size=config.batch_size,
        val_fraction=config.val_fraction,
        augment=config.augment,
        normalize=config.normalize,
        seed=config.seed,
        # Workers shard one order of the examples: it must be the same on each.
        deterministic=config.deterministic or config.strategy == "multi-worker",
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
    if config.task == "reconstruction":
        splits = dp.Splits(
            self_pairs(splits.train),
            None if splits.val is None else self_pairs(splits.val),
            splits.test,
            splits.info,
        )
    return splits


def self_pairs(ds: tf.data.Dataset) -> tf.data.Dataset:
    """(images, labels) -> (images, images): an autoencoder's examples."""
    return ds.map(lambda x, y: (x, x), tf.data.AUTOTUNE)


@contextlib.contextmanager
def prepare(config: TrainConfig) -> Iterator[dp.Splits]:
    """What every run does first, as the context it runs in: the distribution
    strategy (a multi-worker one must exist before any TensorFlow op), the seeds,
    with `deterministic` TensorFlow's op determinism (tf.data reads it when
    datasets are made), then the data. On leaving, the process's own
    determinism setting again: left on, it would slow a notebook's next runs
    and make Keras turn their jit_compile off. TensorFlow has no public way to
    read or turn it off; these are the functions Keras itself reads."""
    distribution(config)
    set_seeds(config)
    was_on = tf_config.is_op_determinism_enabled()
    if config.deterministic:
        tf_config.enable_op_determinism()
    try:
        yield load_data(config)
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def set_seeds(config: TrainConfig) -> None:
    """Seed Python, NumPy and Keras (TensorFlow's global seed with them)."""
    keras.utils.set_random_seed(config.seed)


def distribution(config: TrainConfig) -> tf.distribute.Strategy:
    """MirroredStrategy over the GPUs (or the logical CPUs when there are none),
    MultiWorkerMirroredStrategy over the TF_CONFIG cluster, else TensorFlow's
    default strategy. The multi-worker one must be made before any TensorFlow op:
    entry points call this first."""
    if config.strategy == "multi-worker":
        from zoo import cluster

        return cluster.strategy()
    if config.strategy == "mirrored":
        devices = tf.config.list_logical_devices(
            "GPU"
        ) or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()
