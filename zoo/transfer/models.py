"""Models for transfer learning: a trained zoo model or a keras.applications
backbone with a new classifier head."""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from pathlib import Path

import keras
import numpy as np

import zoo
from zoo import generative
from zoo.blocks import nested_layers
from zoo.files import brief
from zoo.runs import RUN_MODEL_FILES
from zoo.transfer.layers import unfreeze

KERAS_PREFIX = "keras:"
# Layers that turn a feature map into the classifier's input vector.
_POOLS = (
    keras.layers.Flatten,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalMaxPooling1D,
)


def load_pretrained(source: str | os.PathLike | keras.Model) -> keras.Model:
    """A trained model from a run directory (best.keras), a .keras file or a model;
    for an autoencoder its encoder, for a GAN its discriminator."""
    if isinstance(source, keras.Model):
        source = generative.backbone(source)
        try:
            source.inputs  # noqa: B018  (a Sequential model without Input has none)
        except AttributeError:
            raise ValueError(
                f"model {source.name!r} has no inputs yet; give it a keras.Input "
                "(or call it on data once) before using it as a pretrained model."
            ) from None
        return source
    if not isinstance(source, str | os.PathLike):
        raise ValueError(
            f"cannot use a {type(source).__name__} as a pretrained model; pass a "
            "run directory (with best.keras), a .keras file or a keras.Model."
        )
    path = Path(source)
    if path.is_dir():
        found = [path / f for f in RUN_MODEL_FILES if (path / f).is_file()]
        if not found:
            raise ValueError(
                f"{str(path)!r} is not a finished run directory: it has no "
                f"{' or '.join(RUN_MODEL_FILES)}. Pass a directory made by `zoo "
                "train` or a .keras file."
            )
        path = found[0]
    elif path.suffix != ".keras" or not path.is_file():
        hint = (
            f" {str(source)!r} is a zoo model name: train it first (zoo train "
            f"{source} ...) and pass the run directory."
            if str(source) in zoo.list_models()
            else ""
        )
        raise ValueError(
            f"cannot use {str(source)!r} as a pretrained model: expected a run "
            "directory (with best.keras), a .keras file or a keras.Model; for "
            f"keras.applications backbones use {KERAS_PREFIX}NAME.{hint}"
        )
    # a bad file: one line naming it; an autoencoder or GAN: its image reader
    return generative.backbone(zoo.load_model(path, compile=False))


def _layer_of(tensor) -> keras.Layer:
    return tensor._keras_history.operation


def _feature_tensor(model: keras.Model, cut: str | None):
    """The tensor the new head is attached to (see `from_pretrained`)."""
    if cut is not None:
        try:
            return model.get_layer(cut).output
        except ValueError:
            raise ValueError(
                f"cut={cut!r} names no layer of {model.name}; pass the name of the "
                f"layer whose output feeds the new head, e.g. "
                f"{nested_layers(model)[-2].name!r}."
            ) from None
    output = model.outputs[0]
    if len(output.shape) > 2:  # already a feature extractor (include_top=False)
        return output
    inputs = [id(t) for t in model.inputs]
    layer = _layer_of(output)
    fallback = layer.input  # the old classifier's input, without dropout before it
    while isinstance(_layer_of(fallback), keras.layers.Dropout):
        fallback = _layer_of(fallback).input
    while True:
        if isinstance(layer, _POOLS) and id(layer.input) not in inputs:
            return layer.output
        if not isinstance(layer.input, keras.KerasTensor) or id(layer.input) in inputs:
            return fallback
        layer = _layer_of(layer.input)


def _with_head(
    inputs,
    features,
    num_classes: int,
    dropout: float,
    classifier_activation: str | None,
    name: str,
) -> keras.Model:
    """inputs -> features [-> global pooling] [-> dropout] -> Dense "predictions"."""
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or (num_classes < 1)
    ):
        raise ValueError(f"num_classes must be an int >= 1; received {num_classes!r}.")
    if isinstance(dropout, bool) or not (
        isinstance(dropout, int | float) and 0 <= dropout < 1
    ):
        raise ValueError(f"dropout must be a rate in [0, 1); received {dropout!r}.")
    x = features
    if len(x.shape) in (3, 4):
        pool = {
            3: keras.layers.GlobalAveragePooling1D,
            4: keras.layers.GlobalAveragePooling2D,
        }
        x = pool[len(x.shape)](name="head_pool")(x)
    elif len(x.shape) != 2:
        raise ValueError(
            f"features of shape {tuple(x.shape)} cannot feed a classifier; cut at a "
            "layer with 2-, 3- or 4-dimensional outputs."
        )
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation=classifier_activation,
        name="predictions",
        dtype="float32",
    )(x)
    return keras.Model(inputs, outputs, name=name)


def from_pretrained(
    source: str | os.PathLike | keras.Model,
    num_classes: int,
    *,
    cut: str | None = None,
    dropout: float = 0.0,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """A trained model with its head replaced by a new classifier.

    The old head is cut at the layer that turns the last feature map into a vector:
    the global average pooling of ResNet/GoogLeNet, the flatten of LeNet/VGG/AlexNet
    (their fc layers go with the old head). Models without one (MLP) keep every
    layer but the old classifier. A model that outputs a feature map is used whole.
    The new head is always fresh, whatever `num_classes` the old one had.

    Args:
        source: A run directory (its best.keras), a .keras file or a keras.Model.
        num_classes: Classes of the new task.
        cut: Name of the layer whose output feeds the new head instead (a feature
            map gets global average pooling first).
        dropout: Dropout rate before the new classifier.
        classifier_activation: "softmax", "sigmoid" or None (logits).

    Returns:
        A functional model `<name>_transfer` sharing the source's layers and
        weights, every layer trainable: call `freeze` before training the head.
    """
    pretrained = load_pretrained(source)
    # An encoder's codes are its features: the new head takes them whole.
    features = _feature_tensor(pretrained, cut or generative.codes_layer(pretrained))
    model = _with_head(
        # one input as a tensor, not a list: the model is then called on an array
        # as the source was, without Keras' input-structure warning
        pretrained.inputs[0] if len(pretrained.inputs) == 1 else pretrained.inputs,
        features,
        num_classes,
        dropout,
        classifier_activation,
        f"{pretrained.name}_transfer",
    )
    return unfreeze(model, keep_batch_norm_frozen=False)


def keras_applications() -> list[str]:
    """Names of the keras.applications constructors ("ResNet50", "VGG16", ...)."""
    return sorted(
        n
        for n in dir(keras.applications)
        if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def _application(name: str):
    if name not in keras_applications():
        close = difflib.get_close_matches(name, keras_applications(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown keras.applications model {name!r}.{hint} Available: "
            f"{', '.join(keras_applications())}."
        )
    return getattr(keras.applications, name)


def _imagenet_preprocessing(app, x):
    """Layers that map pipeline inputs in [0, 1] to what the application's own
    `preprocess_input` makes of 0..255 pixels: an RGB -> BGR flip where it has one
    ("caffe" mode) and a per-channel affine map as a fixed Normalization layer.

    The map is read off `preprocess_input` by probing it with black and with pure
    red, green and blue pixels, so every keras.applications family is covered.
    """
    module = sys.modules[app.__module__]
    probe = np.zeros((4, 1, 1, 3), "float32")
    probe[1:, 0, 0] = 255 * np.eye(3)
    out = np.asarray(module.preprocess_input(probe), "float64").reshape(4, 3)
    offset, gain = out[0], (out[1:] - out[0]) / 255  # gain[input, output channel]
    order = np.abs(gain).argmax(axis=0)
    scale = gain[order, range(3)]
    gain[order, range(3)] = 0
    if np.abs(gain).max() > 1e-6 or order.tolist() not in ([0, 1, 2], [2, 1, 0]):
        raise ValueError(
            f"preprocess_input of {app.__name__} is not a per-channel scaling; "
            "build the model yourself and pass it to finetune."
        )
    if order.tolist() == [2, 1, 0]:
        x = keras.ops.flip(x, axis=-1)
    # scale * 255 * x + offset == (x - mean) / std
    std = 1 / (255 * scale)
    return keras.layers.Normalization(
        mean=(-offset * std).tolist(), variance=(std**2).tolist(), name="preprocess"
    )(x)


def application_backbone(
    name: str,
    weights: str | os.PathLike | None,
    input_shape: tuple[int, ...],
    pooling: str,
) -> keras.Model:
    """The application without its top, with ImageNet or file weights."""
    app = _application(name)
    path = None
    if weights is not None and str(weights) not in ("imagenet", "none", "None"):
        path = Path(weights)
        if not path.is_file():
            raise ValueError(
                f"weights file {str(path)!r} does not exist; pass the path of {name} "
                "weights saved without the classifier top (.h5 or .weights.h5), "
                "'imagenet' (downloads; needs internet) or None (random weights)."
            )
    download = "imagenet" if str(weights) == "imagenet" else None
    try:
        # Keras's warnings (e.g. "weights for input shape (224, 224) will be
        # loaded") are shown only if the backbone is built: a failure is one line.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            base = app(
                include_top=False,
                weights=download,
                input_shape=input_shape,
                pooling=pooling,
            )
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=3)
    except Exception as err:  # keras.utils.get_file raises a bare Exception
        if download and str(err).startswith("URL fetch failure"):
            url = re.search(r"on (\S+): ", str(err))
            url = url.group(1) if url else "the weights URL"
            raise ValueError(
                f"cannot download the ImageNet weights of {name} (no internet "
                f"here?): {brief(err)}. Download {url} on a machine with "
                f"internet and pass weights='/path/to/{url.rsplit('/', 1)[-1]}' "
                "(--weights on the command line), or weights=None for random "
                "weights."
            ) from None
        if isinstance(err, ValueError) and "input size must be" in str(err).lower():
            raise ValueError(
                f"{name} cannot take input_shape={input_shape}: {brief(err)}. Pass "
                "a larger image_size (--image-size); the data are resized to it."
            ) from None
        raise
    if path is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                base.load_weights(path)
        except Exception as err:  # h5py and Keras raise several types here
            raise ValueError(
                f"weights file {str(path)!r} does not fit {name} without its "
                f"classifier top at input_shape={input_shape}: {brief(err)}. "
                f"Pass weights saved from keras.applications.{name}(include_top="
                "False) (for ImageNet: its *_notop.h5 file), or weights=None."
            ) from None
    return base


def from_keras_application(
    name: str,
    *,
    num_classes: int,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int, int, int] = (224, 224, 3),
    pooling: str = "avg",
    dropout: float = 0.0,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """A keras.applications backbone with a new classifier.

    Args:
        name: A constructor of keras.applications, e.g. "ResNet50", "VGG16",
            "InceptionV3", "MobileNetV2" (see `keras_applications()`).
        num_classes: Classes of the new task.
        weights: "imagenet" (downloaded by Keras; needs internet), the path of a
            weights file of the backbone without its top (e.g. Keras' own
            `*_notop.h5` file copied here), or None for random weights.
        input_shape: (height, width, 3), at least the application's minimum.
        pooling: "avg" or "max" global pooling of the last feature map.
        dropout: Dropout rate before the new classifier.
        classifier_activation: "softmax", "sigmoid" or None (logits).

    Returns:
        `inputs -> preprocess -> <backbone> -> predictions`, every layer trainable.
        Inputs are images scaled to [0, 1] (what `data_pipelines` yields); the
        `preprocess` layers apply the application's own ImageNet preprocessing.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(
            f"keras.applications backbones take RGB images, input_shape=(height, "
            f"width, 3); received input_shape={input_shape!r}. Load gray data with "
            "channels=3 (--channels 3)."
        )
    if pooling not in ("avg", "max"):
        raise ValueError(f"unknown pooling {pooling!r}; allowed: avg, max.")
    base = application_backbone(name, weights, shape, pooling)
    return application_model(name, base, num_classes, dropout, classifier_activation)


def application_model(
    name: str,
    base: keras.Model,
    num_classes: int,
    dropout: float,
    classifier_activation: str | None,
) -> keras.Model:
    """inputs -> preprocess -> base -> new head, every layer trainable."""
    inputs = keras.Input(base.input_shape[1:], name="inputs")
    features = base(_imagenet_preprocessing(_application(name), inputs))
    model = _with_head(
        inputs,
        features,
        num_classes,
        dropout,
        classifier_activation,
        f"{base.name}_transfer",
    )
    return unfreeze(model, keep_batch_norm_frozen=False)
