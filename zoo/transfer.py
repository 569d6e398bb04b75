"""Transfer learning: a trained zoo model or a keras.applications backbone, a new head.

`from_pretrained` and `from_keras_application` build `backbone -> new classifier`;
`freeze` and `unfreeze` choose which layers train (by layer name, stage, count or
fraction); `finetune` runs the two-phase recipe in one run directory: phase "head"
trains the new head on the frozen backbone, phase "finetune" unfreezes the chosen top
layers and continues with a smaller learning rate.

Frozen BatchNormalization layers run in inference mode (Keras 3: a BN layer with
`trainable=False` normalizes with its moving statistics and never updates them).
That, not `backbone(x, training=False)`, is the guarantee here: inside a functional
model, Keras 3.15 passes fit's `training=True` to nested models whatever their call
said (`keras/src/models/functional.py`, `operation_fn`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

import zoo
from zoo import training

KERAS_PREFIX = "keras:"
RUN_MODEL_FILES = ("best.keras", "last.keras")
PHASES = ("head", "finetune")
# TrainConfig fields finetune accepts; the model knobs (activation, dropout, ...) and
# resume/mixed precision/strategy do not apply to a pretrained model.
FINETUNE_OPTIONS = (
    "image_size",
    "channels",
    "normalize",
    "augment",
    "val_fraction",
    "label_column",
    "data_dir",
    "batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "nesterov",
    "weight_decay",
    "loss",
    "from_logits",
    "label_smoothing",
    "schedule",
    "warmup_epochs",
    "step_epochs",
    "step_factor",
    "early_stopping",
    "seed",
    "deterministic",
    "jit_compile",
    "run_dir",
    "name",
    "export",
)
# Layers that turn a feature map into the classifier's input vector.
_POOLS = (
    keras.layers.Flatten,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalMaxPooling1D,
)
# (layer-name pattern, stage): the zoo's stem_ / stageN_ / blockN_ prefixes,
# keras.applications' convN_ (ResNet), block_N_ (MobileNetV2) and blockNa_
# (EfficientNet), and GoogLeNet's inceptionNx modules, which form stageN.
_STAGE_RULES = (
    (re.compile(r"^(stem|stage\d+|block_?\d+|conv\d+)_"), r"\1"),
    (re.compile(r"^(block\d+)[a-z]_"), r"\1"),
    (re.compile(r"^inception(\d+)[a-z]_"), r"stage\1"),
)


# --- layers, stages and trainable flags -----------------------------------------------


def _layers(model: keras.Model) -> list[keras.Layer]:
    """Leaf layers in topological order, nested models expanded, inputs left out."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            leaves.append(layer)
    return leaves


def _containers(model: keras.Model) -> Iterator[keras.Model]:
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _containers(layer)


def _has_weights(layer: keras.Layer) -> bool:
    """Layers that can train; Normalization holds fixed preprocessing statistics."""
    return bool(layer.weights) and not isinstance(layer, keras.layers.Normalization)


def stage_of(name: str) -> str | None:
    """The stage a layer name belongs to ("stage3_block1_conv1" -> "stage3"), if any."""
    for pattern, stage in _STAGE_RULES:
        match = pattern.match(name)
        if match:
            return match.expand(stage)
    return None


def stages(model: keras.Model) -> list[str]:
    """The model's stage names in order, e.g. ["stem", "stage1", "stage2", "stage3"]."""
    found = [stage_of(layer.name) for layer in _layers(model)]
    return list(dict.fromkeys(s for s in found if s))


def trainable_params(model: keras.Model) -> int:
    """Number of parameters the optimizer will update."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _resolve(model: keras.Model, spec: int | float | str, arg: str, last: bool) -> int:
    """Index into `_layers(model)` named by `spec`.

    A layer name gives its index; a stage its last (`last=True`) or first layer;
    an int n the n-th layer with weights (counted from the bottom when `last`, from
    the top otherwise); a fraction f the same with n = floor(f * layers with
    weights). The result -1 (or len) means "no layer".
    """
    layers = _layers(model)
    weighted = [i for i, layer in enumerate(layers) if _has_weights(layer)]
    if isinstance(spec, str):
        names = [layer.name for layer in layers]
        if spec in names:
            return names.index(spec)
        members = [i for i, layer in enumerate(layers) if stage_of(layer.name) == spec]
        if members:
            return members[-1] if last else members[0]
    elif isinstance(spec, float) and 0 <= spec <= 1:
        spec = math.floor(spec * len(weighted))
    if isinstance(spec, int) and not isinstance(spec, bool):
        if 0 <= spec <= len(weighted):
            if spec == 0:
                return -1 if last else len(layers)
            return weighted[spec - 1] if last else weighted[-spec]
    stage_list = ", ".join(stages(model)) or "none"
    raise ValueError(
        f"{arg}={spec!r} names no layer or stage of {model.name}. Allowed: a stage "
        f"({stage_list}), a layer name (first {layers[0].name!r}, last "
        f"{layers[-1].name!r}; see model.summary()), a number of layers with weights "
        f"0..{len(weighted)}, or a fraction in [0, 1]."
    )


def freeze(model: keras.Model, until: int | float | str | None = None) -> keras.Model:
    """Freeze the bottom of a model; the layers above keep their state.

    Frozen layers stop training, and frozen BatchNormalization layers run in
    inference mode (moving statistics used, never updated).

    Args:
        model: Any Keras model; nested models (keras.applications backbones) count
            as their layers.
        until: The last layer to freeze: a layer name; a stage (`"stage3"` freezes
            through the last layer of stage 3; see `stages(model)`); an int n (the
            first n layers with weights); a fraction (`0.5` freezes the first half
            of the layers with weights). `None` freezes all but the classifier
            (the last layer with weights).

    Returns:
        The model (modified in place).
    """
    if until is None:
        weighted = [i for i, layer in enumerate(_layers(model)) if _has_weights(layer)]
        end = weighted[-2] if len(weighted) > 1 else -1
    else:
        end = _resolve(model, until, "until", last=True)
    for layer in _layers(model)[: end + 1]:
        layer.trainable = False
    return model


def unfreeze(
    model: keras.Model,
    top: int | float | str | None = None,
    *,
    keep_batch_norm_frozen: bool = True,
) -> keras.Model:
    """Make the top of a model trainable again; the layers below keep their state.

    Args:
        model: Any Keras model (nested models count as their layers).
        top: Where unfreezing starts: a layer name or a stage (its first layer) up
            to the output; an int n (the top n layers with weights, the classifier
            included); a fraction (that share of the layers with weights, from the
            top). `None` unfreezes every layer.
        keep_batch_norm_frozen: Freeze every BatchNormalization layer of the
            model, above `top` and below: inference mode, statistics and
            scale/offset unchanged (the Keras transfer-learning guide's rule for
            fine-tuning). `False` lets those from `top` up train again with batch
            statistics.

    Returns:
        The model (modified in place).
    """
    layers = _layers(model)
    start = 0 if top is None else _resolve(model, top, "unfreeze", last=False)
    for container in _containers(model):
        if not container.trainable:  # setting it may reset the flags below it
            states = [(layer, layer.trainable) for layer in _layers(container)]
            container.trainable = True
            for layer, state in states:
                layer.trainable = state
    for layer in layers[start:]:
        layer.trainable = True
    if keep_batch_norm_frozen:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


# --- models ---------------------------------------------------------------------------


def load_pretrained(source: str | os.PathLike | keras.Model) -> keras.Model:
    """A trained model from a run directory (best.keras), a .keras file or a model."""
    if isinstance(source, keras.Model):
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
    try:
        return zoo.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for files it cannot read
        raise ValueError(
            f"cannot load {str(path)!r} as a Keras model: {_brief(err)}. Pass a "
            "file written by model.save(...) or a run directory."
        ) from None


def _brief(err: BaseException, limit: int = 300) -> str:
    """An error's message on one line, without its final stop, at most `limit`
    characters (Keras spreads some over several lines, h5py's are long)."""
    text = " ".join(str(err).split()).rstrip(".:") or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
                f"{_layers(model)[-2].name!r}."
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
    features = _feature_tensor(pretrained, cut)
    model = _with_head(
        pretrained.inputs,
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


def _application_backbone(
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
                f"here?): {_brief(err)}. Download {url} on a machine with "
                f"internet and pass weights='/path/to/{url.rsplit('/', 1)[-1]}' "
                "(--weights on the command line), or weights=None for random "
                "weights."
            ) from None
        if isinstance(err, ValueError) and "input size must be" in str(err).lower():
            raise ValueError(
                f"{name} cannot take input_shape={input_shape}: {_brief(err)}. Pass "
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
                f"classifier top at input_shape={input_shape}: {_brief(err)}. "
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
    base = _application_backbone(name, weights, shape, pooling)
    return _application_model(name, base, num_classes, dropout, classifier_activation)


def _application_model(
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


# --- the two-phase run ----------------------------------------------------------------


def _check_epochs(head_epochs: int, finetune_epochs: int) -> None:
    for key, value in (
        ("head_epochs", head_epochs),
        ("finetune_epochs", finetune_epochs),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be an int >= 0; received {value!r}.")
    if head_epochs + finetune_epochs < 1:
        raise ValueError(
            "head_epochs + finetune_epochs must be >= 1; received 0 and 0."
        )


def _image_options(
    input_shape: tuple[int, ...], options: dict[str, Any]
) -> dict[str, Any]:
    """image_size and channels that make the data fit the model's input."""
    if len(input_shape) != 3:
        return {}
    height, width, channels = input_shape
    fit = {"image_size": height if height == width else [height, width]}
    if channels in (1, 3):
        fit["channels"] = channels
    for key, value in fit.items():
        given = options.get(key)
        if given is not None and given != value and [given] * 2 != value:
            raise ValueError(
                f"the model takes inputs of shape {tuple(input_shape)}; {key}="
                f"{given!r} does not fit. Drop it: the data are resized and "
                "converted to the model's input."
            )
    return fit


def _check_unfreezes_something(
    model: keras.Model, top: int | float | str, keep_batch_norm_frozen: bool
) -> None:
    """Refuse a phase 2 that would train exactly what phase 1 trained."""
    layers = _layers(model)[_resolve(model, top, "unfreeze", last=False) :]
    bn = keras.layers.BatchNormalization
    new = [
        layer
        for layer in layers
        if _has_weights(layer)
        and not layer.trainable
        and not (keep_batch_norm_frozen and isinstance(layer, bn))
    ]
    if not new:
        trained = [layer.name for layer in layers if layer.trainable and layer.weights]
        raise ValueError(
            f"unfreeze={top!r} gives phase 2 nothing new to train: from there up only "
            f"{', '.join(trained) or 'no layer'} trains, as in phase 1 (a count or "
            "fraction counts layers with weights, rounded down). Unfreeze more (a "
            "larger number or share, an earlier stage) or pass finetune_epochs=0."
        )


def finetune(
    source: str | os.PathLike | keras.Model,
    dataset: str = "digits",
    *,
    head_epochs: int = 5,
    finetune_epochs: int = 10,
    unfreeze_top: int | float | str | None = None,
    finetune_lr: float = 1e-4,
    keep_batch_norm_frozen: bool = True,
    dropout: float = 0.0,
    cut: str | None = None,
    weights: str | os.PathLike | None = "imagenet",
    verbose: int | str = "auto",
    **options: Any,
) -> training.TrainResult:
    """Train a new head on a frozen backbone, then fine-tune its top layers.

    Both phases are recorded in one run directory, as `zoo train` records a run,
    plus `transfer.json` (these settings); history.csv has a `phase` column
    ("head", "finetune") and the curves mark where fine-tuning starts. best.keras
    is the best epoch of either phase by validation accuracy.

    Args:
        source: A run directory or .keras file (a new head is built for the data's
            classes, see `from_pretrained`), "keras:NAME" for a keras.applications
            backbone (see `from_keras_application`; `image_size` sets its input,
            default 224), or a keras.Model trained as it is (build it with
            `from_pretrained`/`from_keras_application`; its outputs must match the
            data's classes).
        dataset: A data_pipelines source string.
        head_epochs: Epochs of phase 1 (the backbone frozen, all but the classifier).
        finetune_epochs: Epochs of phase 2; 0 trains the head only.
        unfreeze_top: What phase 2 unfreezes (see `unfreeze`): a stage or layer name
            and everything above it, a number or fraction of the top layers with
            weights; None unfreezes every layer.
        finetune_lr: Learning rate of phase 2 (phase 1 uses `learning_rate`).
        keep_batch_norm_frozen: Keep BatchNormalization layers frozen in phase 2.
        dropout: Dropout before the new classifier.
        cut: Layer whose output feeds the new head (see `from_pretrained`).
        weights: Weights of a "keras:NAME" backbone: "imagenet", a file or None.
        verbose: Keras verbosity; "auto" is a progress bar on a terminal.
        **options: TrainConfig fields that apply (FINETUNE_OPTIONS): learning_rate,
            batch_size, optimizer, schedule, augment, seed, run_dir, name, export...
            The data are resized to the model's input unless `image_size` is given.

    Returns:
        The TrainResult (run directory, test metrics of best.keras, history, model).
    """
    started = time.perf_counter()
    _check_epochs(head_epochs, finetune_epochs)
    refused = sorted(set(options) - set(FINETUNE_OPTIONS))
    if refused:
        raise ValueError(
            f"finetune does not take {', '.join(refused)}; allowed: "
            f"{', '.join(FINETUNE_OPTIONS)}."
        )
    if isinstance(source, keras.Model) and (cut is not None or dropout):
        raise ValueError(
            "cut and dropout shape a new head, but a keras.Model source is trained "
            "as it is; pass them to transfer.from_pretrained(model, ...) instead."
        )
    if (
        isinstance(finetune_lr, bool)
        or not isinstance(finetune_lr, int | float)
        or not (math.isfinite(finetune_lr) and finetune_lr > 0)
    ):
        raise ValueError(
            f"finetune_lr (--finetune-lr) must be a number > 0; received "
            f"{finetune_lr!r}. Fine-tuning usually takes 10-100x less than the "
            "head's learning_rate, e.g. 1e-4."
        )
    app = None
    if isinstance(source, str) and source.startswith(KERAS_PREFIX):
        app = source[len(KERAS_PREFIX) :]
        if cut is not None:
            raise ValueError(
                f"cut={cut!r} applies to run directories and .keras files; a "
                f"{KERAS_PREFIX}NAME backbone feeds the new head from its global "
                "pooling. Drop cut (--cut)."
            )
        size = options.get("image_size") or 224
        input_shape, name = (size, size, 3), app.lower()
    else:
        if weights != "imagenet":
            raise ValueError(
                f"weights={str(weights)!r} applies to {KERAS_PREFIX}NAME sources only; "
                f"{source!r} brings its own weights. Drop weights."
            )
        pretrained = load_pretrained(source)
        input_shape, name = tuple(pretrained.input_shape[1:]), pretrained.name
    config = training.TrainConfig.from_dict(
        {
            "model": name if isinstance(source, keras.Model) else f"{name}_transfer",
            "dataset": dataset,
            "epochs": head_epochs + finetune_epochs,
            **options,
            **_image_options(input_shape, options),
        },
        "options",
    )
    phases = {
        "head": dataclasses.replace(config, epochs=head_epochs),
        "finetune": dataclasses.replace(
            config, epochs=finetune_epochs, learning_rate=finetune_lr
        ),
    }
    for phase_config in phases.values():
        if phase_config.epochs:
            phase_config.validate()
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    training._set_seeds(config)
    if app is not None:  # weights problems surface before the data are loaded
        base = _application_backbone(app, weights, input_shape, "avg")
    splits = training.load_data(config)
    info = splits.info
    head = training.classifier_activation(config)
    if app is not None:
        model = _application_model(app, base, info.num_classes, dropout, head)
    elif isinstance(source, keras.Model):
        model = source
        if model.outputs[0].shape[-1] != info.num_classes:
            raise ValueError(
                f"{model.name} has {model.outputs[0].shape[-1]} outputs but "
                f"{dataset} has {info.num_classes} classes. Pass the run directory "
                "or .keras file (a new head is built), or build the model with "
                f"transfer.from_pretrained(model, num_classes={info.num_classes})."
            )
    else:
        model = from_pretrained(
            pretrained,
            info.num_classes,
            cut=cut,
            dropout=dropout,
            classifier_activation=head,
        )
    freeze(model)
    if unfreeze_top is not None:  # a bad spec fails now, not after phase 1
        _resolve(model, unfreeze_top, "unfreeze", last=False)
        if finetune_epochs:
            _check_unfreezes_something(model, unfreeze_top, keep_batch_norm_frozen)

    run_dir = training._new_run_dir(config, resumable=False)  # no finetune --resume
    settings = {
        "source": source.name if isinstance(source, keras.Model) else str(source),
        "head_epochs": head_epochs,
        "finetune_epochs": finetune_epochs,
        "head_learning_rate": config.learning_rate,
        "finetune_learning_rate": finetune_lr,
        "unfreeze_top": unfreeze_top,
        "keep_batch_norm_frozen": keep_batch_norm_frozen,
        "dropout": dropout,
        "cut": cut,
        "weights": str(weights) if app else None,
    }
    for file, data in [
        ("config.json", dataclasses.asdict(config)),
        ("dataset.json", info.to_dict()),
        ("transfer.json", settings),
    ]:
        training.write_atomic(run_dir / file, json.dumps(data, indent=2))

    recorder = training.RunRecorder(run_dir)
    board = keras.callbacks.TensorBoard(str(run_dir / "tensorboard"))
    steps = math.ceil(info.sizes["train"] / config.batch_size)
    summary: dict[str, Any] = {}
    for phase, phase_config in phases.items():
        if not phase_config.epochs:
            continue
        if phase == "finetune":
            unfreeze(model, unfreeze_top, keep_batch_norm_frozen=keep_batch_norm_frozen)
        model.compile(
            optimizer=training.make_optimizer(phase_config, steps),
            loss=training.make_loss(phase_config, training.needs_one_hot(config, info)),
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
        )
        recorder.phase, first = phase, len(recorder.rows)
        model.fit(
            splits.train,
            validation_data=splits.val,
            initial_epoch=first,
            epochs=first + phase_config.epochs,
            callbacks=[recorder, board, *training.config_callbacks(phase_config)],
            verbose=verbose,
            shuffle=False,
        )
        if recorder.bad_epoch is not None:
            raise training.TrainingError(
                f"loss became NaN in epoch {recorder.bad_epoch + 1} ({phase} phase); "
                f"training stopped. The last good model is {run_dir / 'last.keras'}. "
                f"Try a lower learning rate (now {phase_config.learning_rate:g})."
            )
        rows = recorder.rows[first:]
        summary[f"{phase}_epochs"] = len(rows)
        summary[f"{phase}_trainable_params"] = trainable_params(model)
        summary[f"{phase}_best_val_accuracy"] = max(r["val_accuracy"] for r in rows)

    metrics = training._evaluate(run_dir, splits, config, verbose)
    metrics["best_phase"] = recorder.rows[metrics["best_epoch"] - 1]["phase"]
    metrics.update(summary)
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    training.write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    export_dir = None
    if config.export:
        from zoo import export

        export_dir = export.export_saved_model(run_dir, config.export)
    phase_text = ", ".join(
        f"{p} {summary[f'{p}_epochs']} epoch(s) "
        f"({summary[f'{p}_trainable_params']:,} trainable)"
        for p in PHASES
        if f"{p}_epochs" in summary
    )
    print(
        f"{config.model} on {config.dataset}: test accuracy "
        f"{metrics['test_accuracy']:.4f} (best epoch {metrics['best_epoch']}, "
        f"{metrics['best_phase']} phase); {phase_text}; run: {run_dir}"
        + (f"; SavedModel (verified): {export_dir}" if export_dir else "")
    )
    history = pd.read_csv(run_dir / "history.csv")
    best = zoo.load_model(run_dir / "best.keras")
    return training.TrainResult(run_dir, metrics, history, best, export_dir)
