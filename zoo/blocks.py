"""Blocks shared by every family: functions `x -> x` with stable layer-name prefixes.

`Knobs` carries the settings a tuner searches (activation, initializer, regularizer,
dropout, batch norm) so every family applies them the same way; `Head` carries the
uniform input and top-of-model options (`preprocessing`, `include_top`, `pooling`,
`classifier_activation`, `return_features`) and assembles the final `keras.Model`.
The custom layers here are registered Keras serializables (package "zoo").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import keras
from keras import layers

ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "swish",
    "silu",
    "mish",
    "tanh",
    "sigmoid",
    "relu6",
)
INITIALIZERS = (
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "truncated_normal",
    "random_normal",
    "random_uniform",
)
REGULARIZERS = ("l1", "l2", "l1_l2")
DEFAULT_REGULARIZATION = 1e-4
POOLINGS = (None, "avg", "max")
# keras.applications.imagenet_utils.preprocess_input modes.
PREPROCESSINGS = (None, "caffe", "torch", "tf")
# The layer knobs every family takes; classifiers also take the head options.
KNOB_ARGS = (
    "activation",
    "kernel_initializer",
    "kernel_regularizer",
    "dropout",
    "batch_norm",
)
COMMON_ARGS = (
    *KNOB_ARGS,
    "include_top",
    "pooling",
    "classifier_activation",
    "return_features",
    "preprocessing",
)


def _allowed(values: tuple) -> str:
    return ", ".join("None" if v is None else str(v) for v in values)


def check_variant(family: str, variant: str, variants: tuple[str, ...]) -> None:
    """Refuse a `variant` the family does not have, listing those it has."""
    if variant not in variants:
        raise ValueError(
            f"{family} has no variant {variant!r}; allowed: {_allowed(variants)}."
        )


def parse_regularizer(
    spec: Any,
) -> tuple[str, float] | keras.regularizers.Regularizer | None:
    """Validate "l2", "l2:1e-4", "l1_l2:1e-5", a Regularizer instance or None."""
    if spec is None or isinstance(spec, keras.regularizers.Regularizer):
        return spec
    kind, _, strength = str(spec).partition(":")
    if kind not in REGULARIZERS:
        raise ValueError(
            f"unknown kernel_regularizer {spec!r}; allowed: None, "
            f"{', '.join(REGULARIZERS)} with an optional strength, e.g. 'l2:1e-4'."
        )
    try:
        value = float(strength) if strength else DEFAULT_REGULARIZATION
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"bad regularization strength in {spec!r}; allowed: a positive number, "
            "e.g. 'l2:1e-4'."
        )
    return kind, value


@dataclass(frozen=True)
class Knobs:
    """Layer settings every family honours. `activation=None` means the family's."""

    activation: str | None = None
    kernel_initializer: Any = "he_normal"
    kernel_regularizer: Any = None
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; allowed: "
                f"{_allowed(ACTIVATIONS)}."
            )
        init = self.kernel_initializer
        if (
            not isinstance(init, keras.initializers.Initializer)
            and init not in INITIALIZERS
        ):
            raise ValueError(
                f"unknown kernel_initializer {init!r}; allowed: "
                f"{_allowed(INITIALIZERS)}"
                " or a keras.initializers.Initializer."
            )
        parse_regularizer(self.kernel_regularizer)
        if isinstance(self.dropout, bool) or not (
            isinstance(self.dropout, int | float) and 0 <= self.dropout < 1
        ):
            raise ValueError(
                f"dropout must be a rate in [0, 1); received {self.dropout!r}."
            )
        if not isinstance(self.batch_norm, bool):
            raise ValueError(
                f"batch_norm must be True or False; received {self.batch_norm!r}."
            )

    def _layer_args(self) -> dict[str, Any]:
        # Fresh initializer/regularizer objects per layer: Keras layers own them.
        spec = parse_regularizer(self.kernel_regularizer)
        if isinstance(spec, tuple):
            kind, value = spec
            reg = {
                "l1": keras.regularizers.L1(value),
                "l2": keras.regularizers.L2(value),
                "l1_l2": keras.regularizers.L1L2(value, value),
            }[kind]
        else:
            reg = spec
        return {
            "kernel_initializer": keras.initializers.get(self.kernel_initializer),
            "kernel_regularizer": reg,
        }

    def act(self, x, name: str, default: str = "relu"):
        """The activation layer."""
        return layers.Activation(self.activation or default, name=name)(x)

    def conv(
        self,
        x,
        filters: int,
        kernel: int,
        *,
        name: str,
        strides: int = 1,
        padding: int | str = "same",
        activate: bool = True,
        bias: bool | None = None,
    ):
        """Conv2D [+ BatchNorm] [+ activation]; conv bias only without batch norm.

        An int `padding` pads symmetrically first (PyTorch style), which keeps the
        layout of strided convolutions identical to the reference implementations.
        """
        if isinstance(padding, int):
            x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
            padding = "valid"
        x = layers.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding=padding,
            use_bias=not self.batch_norm if bias is None else bias,
            name=name,
            **self._layer_args(),
        )(x)
        if self.batch_norm:
            x = batch_norm(x, f"{name}_bn")
        return self.act(x, f"{name}_act") if activate else x

    def dense(self, x, units: int, *, name: str):
        """Dense [+ BatchNorm] + activation [+ dropout]."""
        x = layers.Dense(
            units, use_bias=not self.batch_norm, name=name, **self._layer_args()
        )(x)
        if self.batch_norm:
            x = batch_norm(x, f"{name}_bn")
        x = self.act(x, f"{name}_act")
        return self.drop(x, f"{name}_dropout")

    def drop(self, x, name: str, rate: float | None = None):
        """Dropout at `rate` (default: the knob) when the rate is positive."""
        rate = self.dropout if rate is None else rate
        return layers.Dropout(rate, name=name)(x) if rate > 0 else x

    def classifier(
        self, x, num_classes: int, activation: str | None, name: str = "predictions"
    ):
        """The final Dense layer, in float32 so mixed precision keeps stable outputs."""
        return layers.Dense(
            num_classes,
            activation=activation,
            name=name,
            dtype="float32",
            **self._layer_args(),
        )(x)


def batch_norm(x, name: str):
    """BatchNorm with PyTorch's momentum (0.1 == Keras 0.9) and keras.applications'
    epsilon 1.001e-5: TensorFlow's fused kernel needs epsilon > 1e-5, and the
    unfused path made ResNet-50's train step ~12 % slower here."""
    return layers.BatchNormalization(epsilon=1.001e-5, momentum=0.9, name=name)(x)


@dataclass(frozen=True)
class Head:
    """The uniform top options; `model()` assembles the final functional model."""

    num_classes: int
    include_top: bool = True
    pooling: str | None = None
    classifier_activation: str | None = "softmax"
    return_features: bool = False
    preprocessing: str | None = None

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSINGS:
            raise ValueError(
                f"unknown preprocessing {self.preprocessing!r}; allowed: "
                f"{_allowed(PREPROCESSINGS)} (keras.applications' modes)."
            )
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"unknown pooling {self.pooling!r}; allowed: {_allowed(POOLINGS)}."
            )
        if self.classifier_activation is not None:
            try:
                keras.activations.get(self.classifier_activation)
            except ValueError:
                raise ValueError(
                    f"unknown classifier_activation {self.classifier_activation!r}; "
                    "allowed: softmax, sigmoid, linear or None (logits)."
                ) from None

    def input(self, input_shape: tuple[int, ...]):
        """The model's Input and the tensor the network starts from: the Input, or
        the `preprocess` layer when `preprocessing` is set."""
        inputs = keras.Input(input_shape, name="inputs")
        if self.preprocessing is None:
            return inputs, inputs
        if input_shape[-1] != 3:
            raise ValueError(
                f"preprocessing={self.preprocessing!r} takes RGB images; received "
                f"input_shape={tuple(input_shape)}. Load the data with 3 channels "
                "(--channels 3)."
            )
        return inputs, ImagePreprocessing(self.preprocessing, name="preprocess")(inputs)

    def model(self, inputs, features: dict[str, Any], top: Callable, name: str):
        """Outputs: stage features, the classifier, or pooled features without top."""
        if self.return_features:
            outputs = dict(features)
        elif self.include_top:
            outputs = top(features[list(features)[-1]])
        else:
            outputs = features[list(features)[-1]]
            if self.pooling is not None and len(outputs.shape) == 4:
                pool = {
                    "avg": layers.GlobalAveragePooling2D,
                    "max": layers.GlobalMaxPooling2D,
                }[self.pooling]
                outputs = pool(name=f"{self.pooling}_pool")(outputs)
        return keras.Model(inputs, outputs, name=name)


def options(num_classes: int, **kwargs: Any) -> tuple[Knobs, Head]:
    """Split the uniform builder arguments into layer knobs and head options."""
    knobs = Knobs(**{k: v for k, v in kwargs.items() if k in KNOB_ARGS})
    head = Head(num_classes, **{k: v for k, v in kwargs.items() if k not in KNOB_ARGS})
    return knobs, head


def dense_top(
    x, k: Knobs, head: Head, units: tuple[int, ...], dropout_first: bool = False
):
    """Flatten, hidden Dense layers `fc1, fc2, ...`, then `predictions`. Dropout
    follows each hidden layer (the papers, Caffe, keras.applications), or precedes
    it with `dropout_first` (torchvision's AlexNet)."""
    x = layers.Flatten(name="flatten")(x)
    for i, n in enumerate(units, 1):
        if dropout_first:
            x = k.drop(x, f"fc{i}_dropout")
            x = replace(k, dropout=0.0).dense(x, n, name=f"fc{i}")
        else:
            x = k.dense(x, n, name=f"fc{i}")
    return k.classifier(x, head.num_classes, head.classifier_activation)


def pooled_top(x, k: Knobs, head: Head):
    """Global average pooling, dropout, then `predictions` (ResNet, GoogLeNet)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = k.drop(x, "top_dropout")
    return k.classifier(x, head.num_classes, head.classifier_activation)


@keras.saving.register_keras_serializable(package="zoo")
class ChannelPad(layers.Layer):
    """Zero-pads the channel axis: the parameter-free "option A" shortcut of the CIFAR
    ResNets (He et al. 2016, 4.2). Keras has no channel-padding layer."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, x):
        extra = self.channels - x.shape[-1]
        before = extra // 2
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


def replicate_pad(x, name: str):
    """Pads one row and column on every side with copies of the border, so that a
    max pool over it ignores the padding (PyTorch pads with -inf) whatever the
    activation: a copied value is already in its window. Keras pads only with a
    constant (ZeroPadding2D), so the copies are crops of the border."""
    h, w = x.shape[1], x.shape[2]
    rows = [
        layers.Cropping2D(((0, h - 1), (0, 0)), name=f"{name}_top")(x),
        x,
        layers.Cropping2D(((h - 1, 0), (0, 0)), name=f"{name}_bottom")(x),
    ]
    x = layers.Concatenate(axis=1, name=f"{name}_rows")(rows)
    cols = [
        layers.Cropping2D(((0, 0), (0, w - 1)), name=f"{name}_left")(x),
        x,
        layers.Cropping2D(((0, 0), (w - 1, 0)), name=f"{name}_right")(x),
    ]
    return layers.Concatenate(axis=2, name=name)(cols)


@keras.saving.register_keras_serializable(package="zoo")
class ImagePreprocessing(layers.Layer):
    """Images in [0, 1] (what data_pipelines yields) to what keras.applications'
    `preprocess_input` makes of 0..255 pixels in `mode` ("caffe": RGB -> BGR and
    the ImageNet mean subtracted; "torch": ImageNet mean/std; "tf": [-1, 1]), so
    pretrained weights see the input they were trained on, inside the model and
    its exports. Keras has the function, not a layer."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        return keras.applications.imagenet_utils.preprocess_input(
            x * 255.0, data_format="channels_last", mode=self.mode
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(layers.Layer):
    """Across-channel LRN of AlexNet and GoogLeNet:
    `x / (bias + alpha * sum of x^2 over depth_radius channels each side)^beta`
    (TensorFlow's convention: Caffe's alpha is divided by the window size).
    Keras has no LRN layer."""

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 1.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.depth_radius, self.bias = depth_radius, bias
        self.alpha, self.beta = alpha, beta

    def call(self, x):
        import tensorflow as tf

        return tf.nn.local_response_normalization(
            x, self.depth_radius, self.bias, self.alpha, self.beta
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


def nested_layers(
    model: keras.Model, *, containers: bool = False
) -> list[layers.Layer]:
    """The layers of `model` in order, nested models expanded, inputs left out.

    Keras' `model.layers` stops at a nested model (a keras.applications backbone
    inside a transfer model); export and transfer need every layer inside it.
    `containers=True` also lists each nested model, before its own layers.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend([layer] if containers else [])
            found.extend(nested_layers(layer, containers=containers))
        elif not isinstance(layer, layers.InputLayer):
            found.append(layer)
    return found
