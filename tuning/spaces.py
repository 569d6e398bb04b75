"""The search spaces: every hyperparameter name, range and condition in one place.

A space is a function `space(hp) -> dict` that declares hyperparameters on a
`keras_tuner.HyperParameters` and returns the settings of one model: keyword
arguments of the family's builder (`hidden_units`, `activation`, ...) plus the
training settings `optimizer`, `learning_rate` and `batch_size`. A space declares
every hyperparameter on every call, conditional ones inside
`hp.conditional_scope`, so an inactive hyperparameter has no value (`None`) and
never reaches a results table (KerasTuner #302, #522).

Users pass their own space as `tuning.search(..., space=my_space)`; `declare`
discovers its hyperparameters (also those declared only when a condition holds,
as in KerasTuner's examples) and `fix` pins some of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras_tuner as kt
from keras_tuner.engine import hyperparameters as hp_types

Space = Callable[[kt.HyperParameters], dict[str, Any]]

# --- hyperparameter names -------------------------------------------------------------
NUM_LAYERS = "num_layers"
UNITS = "units_{}"  # units_1 ... units_6, each active only when its layer exists
ACTIVATION = "activation"
KERNEL_INITIALIZER = "kernel_initializer"
REGULARIZER = "regularizer"
REGULARIZATION = "regularization"  # strength; active only when REGULARIZER != none
DROPOUT = "dropout"
BATCH_NORM = "batch_norm"
OPTIMIZER = "optimizer"
LEARNING_RATE = "learning_rate"
BATCH_SIZE = "batch_size"
CONV_BLOCKS = "conv_blocks"
FILTERS = "filters"
CONVS_PER_BLOCK = "convs_per_block"
KERNEL_SIZE = "kernel_size"
POOLING = "pooling"
DENSE_UNITS = "dense_units"
DEPTH = "depth"
WIDTH = "width"
CELL = "cell"
RNN_UNITS = "units"
BIDIRECTIONAL = "bidirectional"
CODE_SIZE = "code_size"

# --- ranges ---------------------------------------------------------------------------
MAX_LAYERS = 6
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "swish", "tanh", "sigmoid")
INITIALIZERS = (
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
)
REGULARIZERS = ("none", "l1", "l2", "l1_l2")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad", "adadelta")
BATCH_SIZES = (16, 32, 64, 128, 256)
MAX_CONV_BLOCKS = 3  # each block halves the image: cnn needs inputs >= 8x8
RESNET_DEPTHS = (20, 32, 44, 56)
RESNET_WIDTHS = (0.5, 1.0, 1.5, 2.0)
CELLS = ("lstm", "gru")  # zoo model names
MAX_RNN_LAYERS = 3
# Each stage halves the image: 2 keeps 28x28 MNIST and 8x8 digits whole (x4).
MAX_AE_DEPTH = 2
TRAINING = (OPTIMIZER, LEARNING_RATE, BATCH_SIZE)  # settings that are not the model's


def regularization(hp: kt.HyperParameters) -> dict[str, Any]:
    """None, L1, L2 or L1+L2 with a log-sampled strength (zoo's "l2:1e-4" form)."""
    kind = hp.Choice(REGULARIZER, REGULARIZERS, default="none")
    with hp.conditional_scope(REGULARIZER, list(REGULARIZERS[1:])):
        strength = hp.Float(REGULARIZATION, 1e-6, 1e-2, sampling="log", default=1e-4)
    return {"kernel_regularizer": None if kind == "none" else f"{kind}:{strength:g}"}


def optimization(hp: kt.HyperParameters) -> dict[str, Any]:
    """Optimizer, log-sampled learning rate and batch size."""
    return {
        OPTIMIZER: hp.Choice(OPTIMIZER, OPTIMIZERS, default="adam"),
        LEARNING_RATE: hp.Float(
            LEARNING_RATE, 1e-4, 1e-1, sampling="log", default=1e-3
        ),
        BATCH_SIZE: hp.Choice(BATCH_SIZE, BATCH_SIZES, default=64),
    }


def layer_knobs(hp: kt.HyperParameters) -> dict[str, Any]:
    """The zoo's layer knobs: activation, initializer, regularizer, dropout, BN."""
    return {
        ACTIVATION: hp.Choice(ACTIVATION, ACTIVATIONS, default="relu"),
        KERNEL_INITIALIZER: hp.Choice(
            KERNEL_INITIALIZER, INITIALIZERS, default="he_normal"
        ),
        **regularization(hp),
        DROPOUT: hp.Float(DROPOUT, 0.0, 0.5, step=0.1, default=0.0),
        BATCH_NORM: hp.Boolean(BATCH_NORM, default=False),
    }


def mlp(hp: kt.HyperParameters) -> dict[str, Any]:
    """1-6 Dense layers, 16-512 units each (`units_i` only when layer i exists)."""
    layers = hp.Int(NUM_LAYERS, 1, MAX_LAYERS, default=2)
    units = []
    for i in range(1, MAX_LAYERS + 1):
        with hp.conditional_scope(NUM_LAYERS, list(range(i, MAX_LAYERS + 1))):
            n = hp.Int(UNITS.format(i), 16, 512, step=2, sampling="log", default=128)
        if i <= layers:
            units.append(n)
    return {"hidden_units": tuple(units), **layer_knobs(hp), **optimization(hp)}


def cnn(hp: kt.HyperParameters) -> dict[str, Any]:
    """LeNet/VGG-style stacks: 1-3 blocks of 1-2 convolutions (filters double per
    block), max or average pooling, one Dense layer, then the classifier."""
    return {
        CONV_BLOCKS: hp.Int(CONV_BLOCKS, 1, MAX_CONV_BLOCKS, default=2),
        FILTERS: hp.Choice(FILTERS, (16, 32, 64), default=32),
        CONVS_PER_BLOCK: hp.Int(CONVS_PER_BLOCK, 1, 2, default=1),
        KERNEL_SIZE: hp.Choice(KERNEL_SIZE, (3, 5), default=3),
        POOLING: hp.Choice(POOLING, ("max", "avg"), default="max"),
        DENSE_UNITS: hp.Int(DENSE_UNITS, 32, 512, step=2, sampling="log", default=128),
        **layer_knobs(hp),
        **optimization(hp),
    }


def resnet(hp: kt.HyperParameters) -> dict[str, Any]:
    """CIFAR ResNet depth and width multiplier, regularization, optimizer."""
    return {
        DEPTH: hp.Choice(DEPTH, RESNET_DEPTHS, default=20),
        WIDTH: hp.Choice(WIDTH, RESNET_WIDTHS, default=1.0),
        **regularization(hp),
        **optimization(hp),
    }


def recurrent(hp: kt.HyperParameters) -> dict[str, Any]:
    """The zoo's lstm or gru: 16-256 units, 1-3 stacked layers, one direction or
    both, dropout between layers, optimizer."""
    return {
        CELL: hp.Choice(CELL, CELLS, default="lstm"),
        RNN_UNITS: hp.Int(RNN_UNITS, 16, 256, step=2, sampling="log", default=128),
        "layers": hp.Int(NUM_LAYERS, 1, MAX_RNN_LAYERS, default=1),
        BIDIRECTIONAL: hp.Boolean(BIDIRECTIONAL, default=False),
        DROPOUT: hp.Float(DROPOUT, 0.0, 0.5, step=0.1, default=0.0),
        **optimization(hp),
    }


def conv_autoencoder(hp: kt.HyperParameters) -> dict[str, Any]:
    """The zoo's conv_autoencoder: code size, depth (down-sampling stages, the
    filters doubling per stage), activation, initializer, optimizer."""
    depth = hp.Int(DEPTH, 1, MAX_AE_DEPTH, default=2)
    width = hp.Choice(FILTERS, (16, 32, 64), default=32)
    return {
        CODE_SIZE: hp.Int(CODE_SIZE, 2, 64, step=2, sampling="log", default=16),
        FILTERS: tuple(width * 2**i for i in range(depth)),
        ACTIVATION: hp.Choice(ACTIVATION, ACTIVATIONS, default="relu"),
        KERNEL_INITIALIZER: hp.Choice(
            KERNEL_INITIALIZER, INITIALIZERS, default="he_normal"
        ),
        **optimization(hp),
    }


SPACES: dict[str, Space] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet": resnet,
    "recurrent": recurrent,
    "conv_autoencoder": conv_autoencoder,
}


def declare(space: Space) -> kt.HyperParameters:
    """Every hyperparameter of `space`, conditional ones included, without building a
    model: run the space, then again with each never-active condition switched on
    (KerasTuner's discovery of conditional hyperparameters), until all were active.
    """
    full = kt.HyperParameters()
    hp = kt.HyperParameters()
    seen_active: list = []
    for _ in range(100):
        space(hp)
        full.merge(hp, overwrite=False)
        seen_active += [c for c in hp.active_scopes if c not in seen_active]
        never = [c for c in hp.inactive_scopes if c not in seen_active]
        if not never:
            return full
        hp = full.copy()
        for condition in never[0]:
            hp.values[condition.name] = condition.values[0]
        hp.ensure_active_values()
    raise ValueError(
        f"the space {getattr(space, '__name__', space)!r} has conditions that never "
        "become active; check the parent values of its conditional scopes."
    )


def describe(hp: hp_types.HyperParameter) -> str:
    """The allowed values of one hyperparameter, for messages and docs."""
    if isinstance(hp, hp_types.Fixed):
        return f"fixed to {hp.value!r}"
    if isinstance(hp, hp_types.Boolean):
        return "true or false"
    if isinstance(hp, hp_types.Choice):
        return "one of " + ", ".join(str(v) for v in hp.values)
    if isinstance(hp, hp_types.Int):
        if hp.sampling == "log" and hp.step:
            return "one of " + ", ".join(str(int(v)) for v in hp.values)
        return f"an int in [{hp.min_value}, {hp.max_value}]"
    scale = ", log-sampled" if hp.sampling == "log" else ""
    step = f", step {hp.step:g}" if hp.step else ""
    return f"a number in [{hp.min_value:g}, {hp.max_value:g}]{step}{scale}"


def _coerce(hp: hp_types.HyperParameter, value: Any) -> Any:
    """`value` as a member of `hp`'s space, or None when it is outside."""
    if isinstance(hp, hp_types.Boolean):
        return {"true": True, "false": False}.get(str(value).lower())
    if isinstance(hp, hp_types.Fixed):
        return hp.value if str(value) == str(hp.value) else None
    if isinstance(hp, hp_types.Choice) or hp.sampling == "log" and hp.step:
        match = next((v for v in hp.values if str(v) == str(value) or v == value), None)
        return int(match) if isinstance(hp, hp_types.Int) and match else match
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(number) and hp.min_value <= number <= hp.max_value):
        return None
    if isinstance(hp, hp_types.Int):
        return int(number) if number == int(number) else None
    return number


def fix(space: kt.HyperParameters, fixed: Mapping[str, Any]) -> kt.HyperParameters:
    """A copy of a declared space with some hyperparameters pinned (`Fixed`, under the
    same conditions), in the original order.

    Raises:
        ValueError: For an unknown name or a value outside the hyperparameter's space.
    """
    names = [hp.name for hp in space.space]
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ValueError(
            f"cannot fix {', '.join(unknown)}: not a hyperparameter of this space; "
            f"allowed: {', '.join(names)}."
        )
    out = kt.HyperParameters()
    for hp in space.space:
        if hp.name in fixed:
            value = _coerce(hp, fixed[hp.name])
            if value is None:
                raise ValueError(
                    f"cannot fix {hp.name}={fixed[hp.name]!r}: outside its space "
                    f"({describe(hp)}); pass a value in it or drop --fix {hp.name}."
                )
            hp = hp_types.Fixed(hp.name, value, conditions=hp.conditions)
        out.merge([hp])
    return out
