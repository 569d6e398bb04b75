"""Autoencoders (Hinton & Salakhutdinov 2006; denoising: Vincent et al. 2008), dense
and convolutional, as in the lectures' deep-learning introduction.

The model is `decoder(encoder(noise(images)))`: two functional sub-models named
`encoder` (images -> codes) and `decoder` (codes -> images in [0, 1]) that the
export serves as the `encode` and `decode` signatures. Trained on (x, x) with the
run's loss (MSE by default); the optional input noise acts in training only.
The variational autoencoder (zoo.models.vae) reuses these stacks.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers

from zoo import blocks

KINDS = ("dense", "conv")
# What each variant takes besides the layer knobs (zoo.build refuses the rest).
OPTIONS = {
    "dense": ("code_size", "hidden_units", "denoising"),
    "conv": ("code_size", "filters", "denoising"),
}
NOISES = ("gaussian", "masking")


@keras.saving.register_keras_serializable(package="zoo")
class MaskingNoise(layers.Layer):
    """Sets each input value to 0 with probability `rate`, in training only: the
    masking corruption of denoising autoencoders. Keras' Dropout rescales what it
    keeps by 1/(1 - rate), which would change the image, not only mask it."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        keep = (
            keras.random.uniform(keras.ops.shape(inputs), seed=self.seed_generator)
            >= self.rate
        )
        return inputs * keras.ops.cast(keep, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def noise_layer(spec: str | None):
    """The training-time corruption of a denoising autoencoder: "gaussian:SIGMA"
    (Keras' GaussianNoise) or "masking:RATE" (MaskingNoise); None for none."""
    if spec is None:
        return None
    kind, _, value = str(spec).partition(":")
    try:
        amount = float(value) if value else 0.3
    except ValueError:
        amount = -1.0
    fits = 0 < amount < 1 or (kind == "gaussian" and amount > 0)
    if kind not in NOISES or not fits:
        raise ValueError(
            f"unknown denoising {spec!r}; allowed: None, 'gaussian:SIGMA' (SIGMA > 0) "
            "or 'masking:RATE' (RATE in (0, 1)), e.g. denoising='gaussian:0.3'."
        )
    if kind == "gaussian":
        return layers.GaussianNoise(amount, name="noise")
    return MaskingNoise(amount, name="noise")


def check_size(name: str, value: Any, key: str) -> int:
    """A code or latent size: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {key} must be an int >= 1; received {value!r}.")
    return value


def check_widths(name: str, value: Any, key: str) -> tuple[int, ...]:
    """Layer widths: one or more positive ints."""
    widths = tuple(value) if isinstance(value, list | tuple) else (value,)
    if not widths or any(
        isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths
    ):
        raise ValueError(
            f"{name}: {key} must be one or more positive ints; received {value!r}."
        )
    return widths


def check_image(name: str, input_shape: tuple[int, ...], depth: int) -> None:
    """Conv stacks halve the image `depth` times and double it back: height and
    width must be divisible by 2**depth for the output to match the input."""
    step = 2**depth
    if len(input_shape) != 3 or input_shape[0] % step or input_shape[1] % step:
        fits = "x".join(str(-(-side // step) * step) for side in input_shape[:2])
        raise ValueError(
            f"{name} halves its input {depth} times, so it needs images whose height "
            f"and width are multiples of {step}; received input_shape="
            f"{tuple(input_shape)}. Use e.g. {fits} (--image-size / --input-shape), "
            "or change `filters`."
        )


def encoder_body(
    x, k: blocks.Knobs, kind: str, widths: tuple[int, ...], kernel_size: int = 3
):
    """Strided `kernel_size` convolutions (conv) or Dense layers (dense), then
    Flatten."""
    if kind == "conv":
        for i, f in enumerate(widths, 1):
            x = k.conv(x, f, kernel_size, strides=2, name=f"enc_conv{i}")
        return layers.Flatten(name="enc_flatten")(x)
    x = layers.Flatten(name="enc_flatten")(x)
    for i, n in enumerate(widths, 1):
        x = k.dense(x, n, name=f"enc_dense{i}")
    return x


def decoder(
    code_size: int,
    output_shape: tuple[int, ...],
    k: blocks.Knobs,
    kind: str,
    widths: tuple[int, ...],
    kernel_size: int = 3,
) -> keras.Model:
    """codes -> images in [0, 1]: the encoder's layers mirrored (transposed strided
    `kernel_size` convolutions, or Dense layers), a 3x3 sigmoid convolution out
    (conv) in float32."""
    codes = keras.Input((code_size,), name="codes")
    if kind == "conv":
        step = 2 ** len(widths)
        h, w = output_shape[0] // step, output_shape[1] // step
        x = k.dense(codes, h * w * widths[-1], name="dec_dense")
        x = layers.Reshape((h, w, widths[-1]), name="dec_reshape")(x)
        for i, f in enumerate(reversed(widths), 1):
            x = layers.Conv2DTranspose(
                f,
                kernel_size,
                strides=2,
                padding="same",
                use_bias=not k.batch_norm,
                name=f"dec_deconv{i}",
                **k._layer_args(),
            )(x)
            if k.batch_norm:
                x = blocks.batch_norm(x, f"dec_deconv{i}_bn")
            x = k.act(x, f"dec_deconv{i}_act")
        x = layers.Conv2D(
            output_shape[-1],
            3,
            padding="same",
            activation="sigmoid",
            dtype="float32",
            name="images",
            **k._layer_args(),
        )(x)
    else:
        x = codes
        for i, n in enumerate(reversed(widths), 1):
            x = k.dense(x, n, name=f"dec_dense{i}")
        x = layers.Dense(
            math.prod(output_shape),
            activation="sigmoid",
            dtype="float32",
            name="pixels",
            **k._layer_args(),
        )(x)
        x = layers.Reshape(output_shape, name="images")(x)
    return keras.Model(codes, x, name="decoder")


def knobs(name: str, kind: str, input_shape, widths, common: dict) -> blocks.Knobs:
    """The layer knobs, after checking the kind and the input."""
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}.")
    if kind == "conv":
        check_image(name, input_shape, len(widths))
    return blocks.Knobs(**common)


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    kind: str = "conv",
    code_size: int = 16,
    filters: tuple[int, ...] = (32, 64),
    hidden_units: tuple[int, ...] = (256, 128),
    denoising: str | None = None,
    **common: Any,
) -> keras.Model:
    """An autoencoder with a `code_size` code: `kind="conv"` encodes with one
    strided 3x3 convolution per `filters` entry, `kind="dense"` with one Dense
    layer per `hidden_units` entry; the decoder mirrors it. `denoising`
    ("gaussian:0.3", "masking:0.3") corrupts the inputs during training only.
    `num_classes` is ignored (an autoencoder has no classes)."""
    del num_classes
    code_size = check_size(name, code_size, "code_size")
    widths = check_widths(
        name,
        filters if kind == "conv" else hidden_units,
        "filters" if kind == "conv" else "hidden_units",
    )
    k = knobs(name, kind, input_shape, widths, common)
    noise = noise_layer(denoising)
    images = keras.Input(input_shape, name="images")
    codes = layers.Dense(code_size, name="code", **k._layer_args())(
        encoder_body(images, k, kind, widths)
    )
    encoder = keras.Model(images, codes, name="encoder")
    inputs = keras.Input(input_shape, name="inputs")
    x = noise(inputs) if noise is not None else inputs
    outputs = decoder(code_size, tuple(input_shape), k, kind, widths)(encoder(x))
    return keras.Model(inputs, outputs, name=name)
