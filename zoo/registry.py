"""The model registry: every model name, its family builder, variant data and card.

Importing this module does not import TensorFlow, so `zoo list` stays instant; the
family module is imported only when a model is built.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know before building a model."""

    name: str
    family: str
    paper: str
    reference_input: tuple[int, ...]
    reference_classes: int
    reference_params: int  # trainable parameters at the reference input and classes
    min_input: int  # smallest height/width the architecture accepts
    config: dict[str, Any] = field(default_factory=dict)  # variant data for the family
    # What the model's output is: "classification" (class probabilities),
    # "reconstruction" (an autoencoder's images) or "generation" (a GAN); the run,
    # its evaluation, its figures and its export follow it.
    task: str = "classification"
    # The inputs the builder takes: "images" (height, width, channels) of at least
    # min_input, or "any" shape of positive ints, which the family reads its own
    # way (mlp flattens it; the recurrent family reads it as a sequence), so also
    # the rows (n,) of tabular data.
    inputs: str = "images"

    @property
    def module(self) -> str:
        return f"zoo.models.{self.family}"


_MODELS: dict[str, ModelCard] = {}

_PAPERS = {
    "mlp": "Rumelhart, Hinton & Williams 1986, Learning representations by "
    "back-propagating errors",
    "lenet": "LeCun et al. 1998, Gradient-based learning applied to document "
    "recognition",
    "alexnet": "Krizhevsky, Sutskever & Hinton 2012, ImageNet classification with "
    "deep convolutional neural networks (single-tower, torchvision layout)",
    "vgg": "Simonyan & Zisserman 2014, Very deep convolutional networks for "
    "large-scale image recognition",
    "inception": "Szegedy et al. 2014, Going deeper with convolutions (GoogLeNet)",
    "resnet": "He et al. 2016, Deep residual learning for image recognition",
    "autoencoder": "Hinton & Salakhutdinov 2006, Reducing the dimensionality of "
    "data with neural networks; denoising: Vincent et al. 2008",
    "vae": "Kingma & Welling 2014, Auto-encoding variational Bayes",
    "adversarial": "Makhzani et al. 2015, Adversarial autoencoders; Radford, Metz & "
    "Chintala 2015, Unsupervised representation learning with deep convolutional "
    "generative adversarial networks (DCGAN)",
    "recurrent": "Elman 1990, Finding structure in time (simple RNN); Hochreiter & "
    "Schmidhuber 1997, Long short-term memory (LSTM); Cho et al. 2014, Learning "
    "phrase representations using RNN encoder-decoder (GRU)",
}


def register(
    name: str,
    family: str,
    *,
    reference_input: tuple[int, ...],
    reference_params: int,
    min_input: int,
    reference_classes: int = 1000,
    task: str = "classification",
    inputs: str = "images",
    **config: Any,
) -> ModelCard:
    """Register a model: a family (module `zoo.models.<family>`) plus variant data."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    card = ModelCard(
        name=name,
        family=family,
        paper=_PAPERS.get(family, ""),
        reference_input=tuple(reference_input),
        reference_classes=reference_classes,
        reference_params=reference_params,
        min_input=min_input,
        config=dict(config),
        task=task,
        inputs=inputs,
    )
    _MODELS[name] = card
    return card


# --- the zoo: variants as data -------------------------------------------------------
register(
    "mlp",
    "mlp",
    reference_input=(8, 8, 1),
    reference_classes=10,
    reference_params=50_826,
    min_input=1,
    inputs="any",
)
register(
    "lenet5",
    "lenet",
    reference_input=(32, 32, 1),
    reference_classes=10,
    reference_params=61_706,
    min_input=16,
)
register(
    "alexnet",
    "alexnet",
    reference_input=(224, 224, 3),
    reference_params=61_100_840,
    min_input=63,
)
for _name, _stages, _params in [
    ("vgg11", (1, 1, 2, 2, 2), 132_863_336),
    ("vgg13", (2, 2, 2, 2, 2), 133_047_848),
    ("vgg16", (2, 2, 3, 3, 3), 138_357_544),
    ("vgg19", (2, 2, 4, 4, 4), 143_667_240),
]:
    register(
        _name,
        "vgg",
        reference_input=(224, 224, 3),
        reference_params=_params,
        min_input=32,
        stages=_stages,
    )
register(
    "googlenet",
    "inception",
    reference_input=(224, 224, 3),
    reference_params=6_998_552,
    min_input=32,
)
for _name, _block, _stages, _params in [
    ("resnet18", "basic", (2, 2, 2, 2), 11_689_512),
    ("resnet34", "basic", (3, 4, 6, 3), 21_797_672),
    ("resnet50", "bottleneck", (3, 4, 6, 3), 25_557_032),
    ("resnet101", "bottleneck", (3, 4, 23, 3), 44_549_160),
    ("resnet152", "bottleneck", (3, 8, 36, 3), 60_192_808),
]:
    register(
        _name,
        "resnet",
        reference_input=(224, 224, 3),
        reference_params=_params,
        min_input=32,
        block=_block,
        stages=_stages,
    )
for _depth, _params in [
    (20, 269_722),
    (32, 464_154),
    (44, 658_586),
    (56, 853_018),
    (110, 1_727_962),
]:
    register(
        f"resnet{_depth}",
        "resnet",
        reference_input=(32, 32, 3),
        reference_classes=10,
        reference_params=_params,
        min_input=8,
        block="cifar",
        stages=((_depth - 2) // 6,) * 3,
    )
# Sequence classifiers reading an image row by row (MNIST: 28 steps of 28 pixels)
# or a table row value by value; 128 units, one layer.
for _name, _params in [("rnn", 21_386), ("lstm", 81_674), ("gru", 61_962)]:
    register(
        _name,
        "recurrent",
        reference_input=(28, 28, 1),
        reference_classes=10,
        reference_params=_params,
        min_input=1,
        inputs="any",
        cell=_name,
    )
# The lectures' generative families (reference: MNIST, 28x28x1).
for _name, _kind, _params in [
    ("autoencoder", "dense", 472_608),
    ("conv_autoencoder", "conv", 178_001),
]:
    register(
        _name,
        "autoencoder",
        task="reconstruction",
        reference_input=(28, 28, 1),
        reference_classes=10,
        reference_params=_params,
        min_input=4,
        kind=_kind,
    )
register(
    "vae",
    "vae",
    task="reconstruction",
    reference_input=(28, 28, 1),
    reference_classes=10,
    reference_params=228_193,
    min_input=4,
)
for _name, _task, _params in [
    ("aae", "reconstruction", 196_170),
    ("dcgan", "generation", 1_467_970),
]:
    register(
        _name,
        "adversarial",
        task=_task,
        reference_input=(28, 28, 1),
        reference_classes=10,
        reference_params=_params,
        min_input=4,
        kind=_name,
    )


def natural_key(name: str) -> list:
    """Sort key that orders numbers by value: resnet18 before resnet101."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*") -> list[str]:
    """Model names in natural order (resnet18 before resnet101), optionally
    filtered with a shell wildcard ("resnet*")."""
    return sorted((n for n in _MODELS if fnmatch.fnmatch(n, pattern)), key=natural_key)


def model_card(name: str) -> ModelCard:
    """The card of a registered model; ValueError listing close matches otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}."
        ) from None


def _check_input_shape(card: ModelCard, input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_shape must be a tuple of positive ints; received {input_shape!r}."
        ) from None
    if card.inputs == "any":
        if not shape or min(shape) < 1:
            raise ValueError(
                f"{card.name} needs input_shape of positive ints, e.g. (64,) or "
                f"(8, 8, 1); received input_shape={input_shape!r}."
            )
        return shape
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{card.name} needs input_shape=(height, width, channels); received "
            f"input_shape={input_shape!r}."
        )
    if min(shape[:2]) < card.min_input:
        raise ValueError(
            f"{card.name} needs inputs of at least {card.min_input}x{card.min_input}; "
            f"received input_shape={shape}. Use inputs of {card.min_input}x"
            f"{card.min_input} or larger (--image-size / --input-shape) or pick a "
            "model with a smaller minimum (zoo list)."
        )
    return shape


def build(
    name: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
):
    """Build a registered model with the Keras functional API.

    Args:
        name: a name from `list_models()`.
        input_shape: (height, width, channels) for image models, any shape for
            those whose card says `inputs="any"` (mlp, rnn, lstm, gru); defaults
            to the card's reference input.
        num_classes: output classes; defaults to the card's reference classes.
        **kwargs: the uniform builder arguments (`include_top`, `pooling`,
            `classifier_activation`, `activation`, `kernel_initializer`,
            `kernel_regularizer`, `dropout`, `batch_norm`, `return_features`,
            `preprocessing`), the family's own options (`hidden_units`, `classic`,
            `aux_heads`, `variant`, ...), and `weights`: a keras.applications
            weights file (vgg16/19, resnet50/101/152) loaded with
            `zoo.load_weights`; the model then takes images in [0, 1] and applies
            the ImageNet preprocessing those weights expect (`preprocessing`
            defaults to it).

    Returns:
        An uncompiled `keras.Model` named after the model.
    """
    weights = kwargs.pop("weights", None)
    if weights is not None:
        from zoo import weights as reference

        kwargs.setdefault("preprocessing", reference.reference_of(name).preprocessing)
    card = model_card(name)
    shape = _check_input_shape(
        card, card.reference_input if input_shape is None else input_shape
    )
    classes = card.reference_classes if num_classes is None else num_classes
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"num_classes must be an int >= 1; received {classes!r}.")
    module = importlib.import_module(card.module)
    builder = module.build
    from zoo.blocks import COMMON_ARGS, KNOB_ARGS

    # Autoencoders and GANs have no classifier head: only the layer knobs.
    common = COMMON_ARGS if card.task == "classification" else KNOB_ARGS
    params = {**card.config, **kwargs}
    own = [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    # A builder whose variants take different options says which (OPTIONS):
    # an option of the family's other variant would be ignored.
    variants = getattr(module, "OPTIONS", None)
    if variants is not None:
        own = variants[card.config["kind"]]
    allowed = {*own, *common} - {
        "input_shape",
        "num_classes",
        "name",
        *card.config,
    }
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name} does not take {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(allowed))}."
        )
    model = builder(input_shape=shape, num_classes=classes, name=name, **params)
    if weights is not None:
        reference.load_weights(model, weights)
    return model
