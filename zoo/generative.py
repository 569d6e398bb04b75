"""What the generative families (autoencoders, vae, aae, dcgan) share outside their
models: their parts, draws from their prior, and the figures their runs write.

Their models hold functional sub-models named `encoder` (images -> codes; the VAE's
gives the mean and log-variance), `decoder` (codes -> images) and, for the GAN,
`generator` (noise -> images); these names are the contract with the export
(`encode`, `decode`, `generate`) and the figures.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo import plots

CODE_LAYERS = ("code", "z_mean")  # the encoders' output layers (z_mean: the VAE's)
SAMPLE_GRID = 8  # samples.png: 8 x 8 draws from the prior
RECONSTRUCTIONS = 16  # reconstructions.png: 16 inputs over their reconstructions


def part(model: keras.Model, name: str) -> keras.Model | None:
    """The sub-model `name` ("encoder", "decoder", "generator", ...), or None."""
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def image_maker(model: keras.Model) -> keras.Model | None:
    """The sub-model that turns codes into images: the generator or the decoder."""
    return part(model, "generator") or part(model, "decoder")


def has_prior(model: keras.Model) -> bool:
    """Whether codes drawn from N(0, I) make images: a GAN's generator, a VAE's
    decoder (its KL term) or an AAE's (its code discriminator). A plain
    autoencoder's codes follow no known distribution."""
    return part(model, "generator") is not None or any(
        part(model, name) is not None for name in ("sampling", "discriminator")
    )


def backbone(model: keras.Model) -> keras.Model:
    """The part of a generative model that reads images, as a functional model
    named after it, for fine-tuning a classifier on top (unsupervised
    pretraining): an autoencoder's encoder giving its codes (the VAE's means),
    or a GAN's discriminator (whose features Radford et al. classify with).
    Any other model is returned as it is."""
    if image_maker(model) is None:
        return model
    encoder = part(model, "encoder")
    if encoder is not None:
        return keras.Model(encoder.inputs, encoder.outputs[0], name=model.name)
    discriminator = part(model, "discriminator")
    return keras.Model(discriminator.inputs, discriminator.outputs, name=model.name)


def codes_layer(model: keras.Model) -> str | None:
    """The name of an encoder backbone's code layer (its output: the features a
    new head takes whole), or None for other models."""
    name = model.layers[-1].name if model.layers else None
    return name if name in CODE_LAYERS else None


def image_shape(model: keras.Model) -> tuple[int, ...]:
    """The images a generative model takes or makes (a GAN subclass has no
    input of its own)."""
    return tuple(image_maker(model).output_shape[1:])


def latent_dim(model: keras.Model) -> int:
    return int(image_maker(model).input_shape[-1])


def prior_noise(model: keras.Model, count: int, seed: int = 0) -> np.ndarray:
    """`count` draws from N(0, I) of the model's latent size, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, latent_dim(model))).astype("float32")


def encode(model: keras.Model, images) -> np.ndarray:
    """The codes of `images` (the VAE's: the posterior means)."""
    codes = part(model, "encoder").predict(images, verbose=0)
    return np.asarray(codes[0] if isinstance(codes, list) else codes)


def figures(model: keras.Model, images: np.ndarray, noise: np.ndarray) -> dict:
    """The grids to look at: `reconstructions` (inputs in the odd rows, their
    reconstructions below) for models with an encoder, `samples` (the prior
    draws `noise` made into images) for models with a prior. One batch each,
    called directly: `predict` would trace a function per model and epoch
    (TensorFlow then warns of retracing)."""
    grids = {}
    if part(model, "encoder") is not None:
        made = keras.ops.convert_to_numpy(model(images, training=False))
        pairs = [
            x
            for i in range(0, len(images), SAMPLE_GRID)
            for x in (
                images[i : i + SAMPLE_GRID],
                made[i : i + SAMPLE_GRID],
            )
        ]
        grids["reconstructions"] = plots.image_grid(np.concatenate(pairs), SAMPLE_GRID)
    if has_prior(model):
        made = keras.ops.convert_to_numpy(image_maker(model)(noise, training=False))
        grids["samples"] = plots.image_grid(made, SAMPLE_GRID)
    return grids


def write_figures(model, images, noise, run_dir: Path, step: int | None = None):
    """The grids as PNGs in `run_dir`; with `step`, also as TensorBoard images
    (tensorboard/images, one step per epoch)."""
    grids = figures(model, images, noise)
    for name, grid in grids.items():
        plots.save_image(grid, run_dir / f"{name}.png")
    if step is not None and grids:
        writer = tf.summary.create_file_writer(str(run_dir / "tensorboard" / "images"))
        with writer.as_default():
            for name, grid in grids.items():
                tf.summary.image(name, grid[None], step=step)
        writer.close()


def first_images(ds: tf.data.Dataset, count: int) -> np.ndarray:
    """The first `count` images of a batched (images, ...) dataset."""
    batches = ds.unbatch().take(count).batch(count)
    return np.concatenate([np.asarray(x) for x, _ in batches])


class Figures(keras.callbacks.Callback):
    """After each epoch, reconstructions.png and samples.png (the same inputs and
    prior draws every epoch, so the grids show progress) and TensorBoard images."""

    def __init__(self, run_dir: Path, images: np.ndarray) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.images = images
        self.noise = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.noise is None:
            self.noise = prior_noise(self.model, SAMPLE_GRID**2)
        write_figures(self.model, self.images, self.noise, self.run_dir, epoch)


def latent_map(model: keras.Model, test: tf.data.Dataset, class_names, path: Path):
    """latent_map.png for a model with 2-D codes: the test images' codes coloured
    by class (`test` yields (images, labels))."""
    encoder = part(model, "encoder")
    if encoder is None or encoder_dim(encoder) != 2:
        return
    codes = encode(model, test.map(lambda x, y: x))  # one predict, one trace
    labels = np.concatenate([np.asarray(y) for _, y in test])
    labels = labels.argmax(-1) if labels.ndim == 2 else labels
    plots.plot_latent_map(codes, labels, list(class_names), path)


def encoder_dim(encoder: keras.Model) -> int:
    shape = encoder.output_shape
    return int((shape[0] if isinstance(shape, list) else shape)[-1])
