"""keras.applications weight files into zoo models: `zoo.load_weights(model, path)`.

VGG16/19 share keras.applications' layer names. ResNet50/101/152 map each
convolution by (stage, block, role) (`conv3_block2_1_conv` -> `stage2_block2_conv1`,
`_0_` is the shortcut) and fold its bias into the batch norm after it: with moving
mean m, BN(conv(x) + b) = gamma * (conv(x) - (m - b)) / sqrt(var + eps) + beta, so
the zoo's bias-free convolution takes the kernel and its batch norm the mean m - b.

Files are read with h5py in both formats Keras writes: legacy HDF5 (the ImageNet
downloads, Keras 2 `save_weights`, `model.save("x.h5")`) and Keras 3 `.weights.h5`.
Nothing is assigned unless every layer fits; a misfit is one line naming the first
layer that differs and why.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from zoo.files import brief
from zoo.registry import natural_key


@dataclass(frozen=True)
class Reference:
    """The keras.applications model whose weights a zoo model takes."""

    application: str  # the keras.applications constructor
    family: str  # zoo family: how layer names map
    preprocessing: str  # imagenet_utils mode of the application's preprocess_input


REFERENCES = {
    "vgg16": Reference("VGG16", "vgg", "caffe"),
    "vgg19": Reference("VGG19", "vgg", "caffe"),
    "resnet50": Reference("ResNet50", "resnet", "caffe"),
    "resnet101": Reference("ResNet101", "resnet", "caffe"),
    "resnet152": Reference("ResNet152", "resnet", "caffe"),
}
TOP_LAYERS = ("fc1", "fc2", "predictions")  # keras.applications' classifier top


@dataclass(frozen=True)
class LoadedWeights:
    """What `load_weights` loaded."""

    path: str
    application: str  # "ResNet50", ...
    format: str  # "legacy HDF5" or "Keras 3"
    include_top: bool  # the file's classifier was loaded too
    preprocessing: str  # the preprocess_input mode the weights expect


def reference_of(name: str) -> Reference:
    """The keras.applications reference of a zoo model name; ValueError if none."""
    try:
        return REFERENCES[name]
    except KeyError:
        raise ValueError(
            f"{name} has no keras.applications weights to load; weights files load "
            f"into {', '.join(REFERENCES)}."
        ) from None


def load_weights(model: keras.Model, source: str | os.PathLike) -> LoadedWeights:
    """Load a keras.applications weights file into the matching zoo model.

    The model (built by `zoo.build`, any input size; v1 ResNets) takes the file's
    layers; with `include_top=False` either way round, the top is left out (a
    file without top leaves a model's classifier as built). The model then
    computes what keras.applications computes: feed it `preprocess_input`-ed
    images, or build it with `preprocessing="caffe"` (what `zoo.build(name,
    weights=path)` does) to feed images in [0, 1].

    Raises:
        ValueError: In one line, for a model without reference, a file that is
            missing, truncated or not Keras weights, or a file for another model,
            input size, channel count or class count (naming the first layer that
            differs and why).
    """
    ref = reference_of(model.name)
    _check_model(model, ref)
    fmt, stored = read_weights(source)
    if fmt == "Keras 3" and _unnamed(stored):
        stored = _names_from_keras(source, ref, stored)
    found = application_of(stored)
    names = {layer.name for layer in model.layers}
    file_top, model_top = "predictions" in stored, "predictions" in names

    def misfit(layer: str, why: str) -> ValueError:
        held = f"{found} weights" if found else "no keras.applications VGG/ResNet"
        return ValueError(
            f"weights file '{source}' ({held}) does not fit {model.name} "
            f"({ref.application}): layer {layer}: {why}."
        )

    assignments, used, biases = [], set(), {}
    for layer in model.layers:
        if not layer.weights:
            continue
        key = keras_name(layer.name, ref.family)
        if key not in stored:
            if key in TOP_LAYERS and not file_top:
                continue  # a file without top: the model's classifier stays as built
            raise misfit(layer.name, f"the file has no {key}")
        arrays = list(stored[key])
        used.add(key)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name in biases:
            arrays[2] = arrays[2] - biases.pop(layer.name)  # mean' = mean - bias
        elif isinstance(layer, keras.layers.Conv2D) and not layer.use_bias:
            if len(arrays) == 2 and f"{layer.name}_bn" not in names:
                raise misfit(layer.name, "no batch norm follows it to take the bias")
            if len(arrays) == 2:
                biases[f"{layer.name}_bn"] = arrays.pop()
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if got != want:
            raise misfit(layer.name, _why(key, got, want))
        assignments.append((layer, arrays))
    extra = [k for k in stored if k not in used]
    extra = [k for k in extra if not (k in TOP_LAYERS and not model_top)]
    if extra:  # the first in network order (Keras 3 files list layers by class)
        raise misfit(
            min(extra, key=natural_key), f"in the file but not in {model.name}"
        )
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    return LoadedWeights(
        str(source), ref.application, fmt, file_top and model_top, ref.preprocessing
    )


def _check_model(model: keras.Model, ref: Reference) -> None:
    """Refuse layouts that take no keras.applications weights at all."""
    names = {layer.name: layer for layer in model.layers}
    conv1 = names.get("stage2_block1_conv1")
    if ref.family == "resnet" and conv1 is not None and conv1.strides != (2, 2):
        raise ValueError(
            f"{model.name} is variant v1.5 (a bottleneck strides in its 3x3 conv); "
            f"keras.applications' {ref.application} is v1. Build it with "
            "variant='v1' to load these weights."
        )
    pre = names.get("preprocess")
    if pre is not None and getattr(pre, "mode", None) != ref.preprocessing:
        raise ValueError(
            f"{model.name} preprocesses its inputs in mode "
            f"{getattr(pre, 'mode', None)!r}; {ref.application} weights expect "
            f"{ref.preprocessing!r}. Build it with preprocessing="
            f"{ref.preprocessing!r} or None."
        )


def _why(key: str, got: list[tuple], want: list[tuple]) -> str:
    """Why a layer's arrays do not fit, in the user's terms."""
    shapes = f"shapes {got} in the file, {want} in the model"
    if len(got) != len(want):
        return f"{len(got)} arrays in the file, {len(want)} in the model ({shapes})"
    if key == "predictions":
        return (
            f"the file has {got[0][-1]} classes, the model {want[0][-1]}: pass the "
            "file without the top (keras.applications' *_notop.h5, saved with "
            "include_top=False) to train a new classifier, or build the model with "
            f"num_classes={got[0][-1]}"
        )
    if key == "fc1":
        file, own = _vgg_side(got[0][0]), _vgg_side(want[0][0])
        return (
            "fc1 takes the flattened last feature map, so it fixes the input size: "
            f"the file's is for {file}x{file} inputs, the model's for {own}x{own}; "
            "build it with that input_shape, or with include_top=False"
        )
    if key in ("conv1_conv", "block1_conv1") and got[0][2] != want[0][2]:
        return f"the file takes {got[0][2]} input channels, the model {want[0][2]}"
    return f"{shapes} (another width or layout)"


def _vgg_side(fc1_inputs: int) -> int:
    """The square input size whose 512-channel last map (1/32 of it) flattens
    to `fc1_inputs` values."""
    return round((fc1_inputs / 512) ** 0.5) * 32


def keras_name(name: str, family: str) -> str:
    """The keras.applications name of a zoo layer: `stage2_block1_conv3_bn` ->
    `conv3_block1_3_bn`, `stage1_block1_shortcut` -> `conv2_block1_0_conv`."""
    if family != "resnet":
        return name
    if name in ("stem_conv", "stem_conv_bn"):
        return "conv1_bn" if name.endswith("_bn") else "conv1_conv"
    m = re.fullmatch(r"stage(\d+)_block(\d+)_(?:conv(\d)|shortcut)(_bn)?", name)
    if m is None:
        return name
    stage, block, role, bn = m.groups()
    return f"conv{int(stage) + 1}_block{block}_{role or 0}_{'bn' if bn else 'conv'}"


def application_of(stored: dict[str, list[np.ndarray]]) -> str | None:
    """Which keras.applications model a file holds, from its layer names."""
    if "block5_conv4" in stored:
        return "VGG19"
    if "block5_conv3" in stored:
        return "VGG16"
    conv4 = sum(bool(re.fullmatch(r"conv4_block\d+_1_conv", n)) for n in stored)
    return {6: "ResNet50", 23: "ResNet101", 36: "ResNet152"}.get(conv4)


def read_weights(path: str | os.PathLike) -> tuple[str, dict[str, list[np.ndarray]]]:
    """The format ("legacy HDF5" or "Keras 3") of a Keras weights file and the
    arrays of each layer with weights, by layer name, in the file's order.

    Raises:
        ValueError: If the file is missing, truncated, not HDF5 or holds no Keras
            weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"weights file '{path}' does not exist; pass the path of a "
            "keras.applications weights file (.h5)."
        )
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "model_weights" in f:
                return "legacy HDF5", _legacy(f)
            if "layers" in f:
                return "Keras 3", _keras3(f)
    except (OSError, KeyError, ValueError) as err:  # h5py's errors for bad files
        raise ValueError(
            f"cannot read weights file '{path}': {brief(err)}. It is truncated, "
            "damaged or not HDF5: download or save it again."
        ) from None
    raise ValueError(
        f"weights file '{path}' is HDF5 but holds no Keras weights (neither "
        "layer_names nor layers/); pass a file written by save_weights or a "
        "keras.applications download."
    )


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _legacy(f: h5py.File) -> dict[str, list[np.ndarray]]:
    """Keras 2 / legacy HDF5: attrs `layer_names`, per layer `weight_names`."""
    group = f if "layer_names" in f.attrs else f["model_weights"]
    stored = {}
    for name in map(_text, group.attrs["layer_names"]):
        weight_names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
        if weight_names:
            stored[name] = [np.asarray(group[name][w]) for w in weight_names]
    return stored


def _keras3(f: h5py.File) -> dict[str, list[np.ndarray]]:
    """Keras 3: `layers/<class name>/vars/<i>`, the layer name in an attribute."""
    stored = {}
    for key, group in f["layers"].items():
        variables = group.get("vars")
        if variables is None or not len(variables):
            continue
        name = _text(variables.attrs.get("name", key))
        stored[name] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
    return stored


def _unnamed(stored: dict[str, list[np.ndarray]]) -> bool:
    """Keras 3 files written before layer names were recorded use class names."""
    pattern = r"(conv2d|dense|batch_normalization)(_\d+)?"
    return any(re.fullmatch(pattern, n) for n in stored)


def _names_from_keras(
    path: str | os.PathLike, ref: Reference, stored: dict[str, list[np.ndarray]]
) -> dict[str, list[np.ndarray]]:
    """Layer names of a Keras 3 file without them: Keras loads it into its own
    application (weights=None), whose layers then name the arrays."""
    top = any(n.startswith("dense") for n in stored)
    try:
        app = getattr(keras.applications, ref.application)(
            weights=None, include_top=top
        )
        app.load_weights(path)
    except Exception as err:  # Keras raises several types for misfits
        raise ValueError(
            f"weights file '{path}' does not fit keras.applications."
            f"{ref.application}(include_top={top}): {brief(err)}."
        ) from None
    return {la.name: la.get_weights() for la in app.layers if la.weights}
