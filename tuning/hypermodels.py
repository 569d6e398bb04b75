"""HyperModels, thin over the zoo builders: fixed settings are checked in `__init__`,
the search space lives only in `build(hp)` (through `tuning.spaces`), and `build`
calls the zoo builder. `fit` loads the data at the batch size the space chose.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import keras_tuner as kt
from keras import layers

import data_pipelines as dp
import zoo
from tuning import spaces
from zoo import blocks, recipe
from zoo.config import TrainConfig


def build_cnn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str = "cnn",
    conv_blocks: int = 2,
    filters: int = 32,
    convs_per_block: int = 1,
    kernel_size: int = 3,
    pooling: str = "max",
    dense_units: int = 128,
    **common: Any,
) -> keras.Model:
    """LeNet/VGG-style stack from the zoo's blocks: `conv_blocks` blocks of
    `convs_per_block` convolutions (`filters` doubling per block), each pooled by 2,
    then `fc1` with `dense_units` and the classifier. `common` are the zoo's uniform
    builder arguments (activation, kernel_initializer, ...)."""
    if pooling not in ("max", "avg"):
        raise ValueError(f"pooling must be 'max' or 'avg'; received {pooling!r}.")
    k, head = blocks.options(num_classes, **common)
    pool = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}[pooling]
    inputs = keras.Input(input_shape, name="inputs")
    x, features = inputs, {}
    for b in range(1, conv_blocks + 1):
        for c in range(1, convs_per_block + 1):
            x = k.conv(x, filters * 2 ** (b - 1), kernel_size, name=f"block{b}_conv{c}")
        x = features[f"block{b}"] = pool(2, name=f"block{b}_pool")(x)
    return head.model(
        inputs, features, lambda x: blocks.dense_top(x, k, head, (dense_units,)), name
    )


class ZooHyperModel(kt.HyperModel):
    """Base of the family HyperModels.

    Args:
        info: The dataset's `data_pipelines.DatasetInfo` (input shape, classes, size).
        config: Training settings the space does not choose (dataset, image size,
            augmentation, seed, ...); `optimizer`, `learning_rate` and `batch_size`
            come from the space.
        space: A space function (default: `tuning.spaces.SPACES[family]`).
    """

    family = ""
    # What the models output (the zoo card's task): the trials' data, loss and
    # default objective follow it (`tuning.results.TASK_OBJECTIVES`).
    task = "classification"

    def __init__(
        self,
        info: dp.DatasetInfo,
        config: TrainConfig | None = None,
        space: spaces.Space | None = None,
    ) -> None:
        super().__init__(name=self.family)
        self.info = info
        self.config = config or TrainConfig(model=self.family, dataset=info.source)
        self.space = space or spaces.SPACES[self.family]
        self.check_input(tuple(info.input_shape))

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Refuse data the family cannot take (images only, minimum size)."""
        if self.info.task == "tabular" or len(shape) != 3:
            raise ValueError(
                f"{self.family} needs images; the data is {self.info.task} with "
                f"inputs {shape}. Use the mlp or recurrent family."
            )

    def settings(self, hp: kt.HyperParameters) -> tuple[dict[str, Any], Any]:
        """The builder arguments and the TrainConfig chosen by `hp`."""
        chosen = dict(self.space(hp))
        train = {k: chosen.pop(k) for k in spaces.TRAINING if k in chosen}
        return chosen, dataclasses.replace(self.config, **train)

    def build_model(self, **kwargs: Any) -> keras.Model:
        """The uncompiled model for builder arguments chosen by the space."""
        raise NotImplementedError

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """Build (through the zoo) and compile the model `hp` describes."""
        kwargs, config = self.settings(hp)
        return recipe.compile_model(self.build_model(**kwargs), config, self.info)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        """Load the data at the chosen batch size and fit on train, validate on val."""
        _, config = self.settings(hp)
        splits = recipe.load_data(config)
        return model.fit(
            splits.train, *args, validation_data=splits.val, shuffle=False, **kwargs
        )

    def _zoo(self, name: str, **kwargs: Any) -> keras.Model:
        return zoo.build(
            name,
            input_shape=tuple(self.info.input_shape),
            num_classes=self.info.num_classes,
            **kwargs,
        )


class MLPHyperModel(ZooHyperModel):
    """`zoo.build("mlp", hidden_units=...)` with the mlp space."""

    family = "mlp"

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Any input shape."""

    def build_model(self, **kwargs: Any) -> keras.Model:
        return self._zoo("mlp", **kwargs)


class CNNHyperModel(ZooHyperModel):
    """`build_cnn` (zoo blocks) with the cnn space."""

    family = "cnn"

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Images of at least 8x8: up to three 2x2 poolings."""
        super().check_input(shape)
        least = 2**spaces.MAX_CONV_BLOCKS
        if min(shape[:2]) < least:
            raise ValueError(
                f"cnn needs images of at least {least}x{least}; received inputs "
                f"{shape}. Pass --image-size {least} or larger."
            )

    def build_model(self, **kwargs: Any) -> keras.Model:
        return build_cnn(
            input_shape=tuple(self.info.input_shape),
            num_classes=self.info.num_classes,
            **kwargs,
        )


class ResNetHyperModel(ZooHyperModel):
    """`zoo.build(f"resnet{depth}", width=...)` (CIFAR ResNets), resnet space."""

    family = "resnet"

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Images at least as large as the CIFAR ResNets' minimum."""
        super().check_input(shape)
        least = zoo.model_card("resnet20").min_input
        if min(shape[:2]) < least:
            raise ValueError(
                f"resnet needs images of at least {least}x{least}; received inputs "
                f"{shape}. Pass --image-size {least} or larger."
            )

    def build_model(self, *, depth: int, **kwargs: Any) -> keras.Model:
        return self._zoo(f"resnet{depth}", **kwargs)


class RecurrentHyperModel(ZooHyperModel):
    """`zoo.build(cell, units=..., layers=..., bidirectional=...)` (lstm, gru) with
    the recurrent space."""

    family = "recurrent"

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Any input: images are read row by row, table rows value by value."""

    def build_model(self, *, cell: str, **kwargs: Any) -> keras.Model:
        return self._zoo(cell, **kwargs)


class ConvAutoencoderHyperModel(ZooHyperModel):
    """`zoo.build("conv_autoencoder", code_size=..., filters=...)`, trained on
    (images, images)."""

    family = "conv_autoencoder"
    task = zoo.model_card("conv_autoencoder").task

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Images whose sides survive the deepest stack's halvings."""
        super().check_input(shape)
        step = 2**spaces.MAX_AE_DEPTH
        if shape[0] % step or shape[1] % step:
            raise ValueError(
                f"conv_autoencoder halves its images up to {spaces.MAX_AE_DEPTH} "
                f"times, so it needs sides that are multiples of {step}; received "
                f"inputs {shape}. Pass --image-size {step * 8} (or another multiple "
                f"of {step})."
            )

    def build_model(self, **kwargs: Any) -> keras.Model:
        return self._zoo("conv_autoencoder", **kwargs)


HYPERMODELS: dict[str, type[ZooHyperModel]] = {
    m.family: m
    for m in (
        MLPHyperModel,
        CNNHyperModel,
        ResNetHyperModel,
        RecurrentHyperModel,
        ConvAutoencoderHyperModel,
    )
}
FAMILIES = tuple(HYPERMODELS)


def hypermodel(
    family: str,
    info: dp.DatasetInfo,
    config: TrainConfig | None = None,
    space: spaces.Space | None = None,
) -> ZooHyperModel:
    """The HyperModel of a family; ValueError naming the allowed families."""
    if family not in HYPERMODELS:
        raise ValueError(
            f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}. Pick one, "
            "e.g. `zoo tune mlp`."
        )
    return HYPERMODELS[family](info, config, space)
