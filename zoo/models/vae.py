"""Variational autoencoder (Kingma & Welling 2014), convolutional, as in keras.io's
"Variational AutoEncoder" example, built with the autoencoder family's stacks.

The `encoder` sub-model maps images to the mean and log-variance of q(z|x);
`Sampling` draws z with the reparameterization trick (in training; the mean
otherwise) and adds the KL divergence to N(0, I) as a layer loss, so the run's
plain compile/fit on (x, x) minimizes the negative ELBO: with the default
binary cross-entropy (a mean over pixels) the KL term is divided by the number of
pixels, which keeps the two terms in the ELBO's proportion. `decoder` maps codes
to images in [0, 1]; sampling from the prior is `decoder(normal((n, latent_dim)))`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers, ops

from zoo.models import autoencoder


@keras.saving.register_keras_serializable(package="zoo")
class Sampling(layers.Layer):
    """(mean, log_var) -> z = mean + exp(log_var / 2) * eps in training, the mean
    otherwise; adds beta * KL(q(z|x) || N(0, I)) / `pixels` to the model's losses.
    Keras has no reparameterization layer (keras.io's VAE writes one too)."""

    def __init__(self, pixels: int, beta: float = 1.0, seed=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pixels = pixels
        self.beta = beta
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        mean, log_var = inputs
        kl = -0.5 * ops.sum(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        self.add_loss(self.beta * ops.mean(kl) / self.pixels)
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pixels": self.pixels,
            "beta": self.beta,
            "seed": self.seed,
        }


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    latent_dim: int = 16,
    filters: tuple[int, ...] = (32, 64),
    beta: float = 1.0,
    kernel_size: int = 3,
    **common: Any,
) -> keras.Model:
    """A convolutional VAE with a `latent_dim` Gaussian latent (2 gives a latent
    map to look at), one strided `kernel_size` convolution per `filters` entry
    (mirrored in the decoder), and the KL term weighted by `beta` (beta-VAE; 1 is
    the ELBO). `num_classes` is ignored."""
    del num_classes
    latent_dim = autoencoder.check_size(name, latent_dim, "latent_dim")
    widths = autoencoder.check_widths(name, filters, "filters")
    kernel_size = autoencoder.check_size(name, kernel_size, "kernel_size")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta >= 0:
        raise ValueError(f"{name}: beta must be a number >= 0; received {beta!r}.")
    k = autoencoder.knobs(name, "conv", input_shape, widths, common)
    images = keras.Input(input_shape, name="images")
    features = autoencoder.encoder_body(images, k, "conv", widths, kernel_size)
    mean = layers.Dense(latent_dim, name="z_mean", **k._layer_args())(features)
    log_var = layers.Dense(latent_dim, name="z_log_var", **k._layer_args())(features)
    encoder = keras.Model(images, [mean, log_var], name="encoder")
    inputs = keras.Input(input_shape, name="inputs")
    z = Sampling(math.prod(input_shape), float(beta), name="sampling")(encoder(inputs))
    decoder = autoencoder.decoder(
        latent_dim, tuple(input_shape), k, "conv", widths, kernel_size
    )
    return keras.Model(inputs, decoder(z), name=name)
