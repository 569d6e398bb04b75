"""Adversarial models of the lectures: the adversarial autoencoder (`aae`, Makhzani
et al. 2015) and the deep convolutional GAN (`dcgan`, Radford et al. 2015).

Both are `keras.Model` subclasses over functional sub-models, trained by `fit`
through their own `train_step`, as in keras.io's "GAN overriding
`Model.train_step`" example. `Adversarial` holds what the two share: one
optimizer per update step (the compiled one and copies of it), the steps run in
turn on each batch, the latent noise and the reported metrics.

- `aae`: `encoder` (images -> codes), `decoder` (codes -> images in [0, 1]) and
  `discriminator` (codes -> probability that a code was drawn from the prior
  N(0, I)). Each batch: a reconstruction step (encoder + decoder; the compiled
  loss, a run's binary cross-entropy by default, else MSE), a discriminator
  step (prior samples against codes) and a generator step (the encoder learns
  to fool the discriminator). Reports `loss` (the reconstruction loss, so
  `val_loss` picks the best epoch), `d_loss` and `g_loss`.
- `dcgan`: `generator` (noise -> images in [0, 1]; batch norm and ReLU, the
  paper's stabilizers) and `discriminator` (images -> probability real; strided
  convolutions and LeakyReLU). Each batch: a discriminator step (real against
  generated images), then a generator step (non-saturating loss). Reports
  `d_loss`, `g_loss`, `d_real` (mean D(x)) and `d_fake` (mean D(G(z))); no `loss`.

Sampling: `model.decoder` / `model.generator` applied to
`keras.random.normal((n, model.latent_dim))`.

Recommended training (Radford et al.'s): Adam with learning rate 2e-4 and beta_1
0.5, batches of 64-128, e.g. `zoo train dcgan --dataset idx:DIR --optimizer adam
--lr 2e-4` (beta_1 0.5 where the recipe offers it). The aae trains well with Adam
at 1e-3 (benchmarks/bench_generative.py).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import keras
import tensorflow as tf
from keras import layers, ops

from zoo import blocks
from zoo.models import autoencoder


class Adversarial(keras.Model):
    """Players trained in alternation, one optimizer per update step.

    A subclass lists its functional sub-models in `PLAYERS` and its update steps
    in `steps()`: (optimizer attribute, players it updates, loss function). The
    first step uses the optimizer given to `compile`; every other step gets a
    copy of it (same class and config, learning-rate schedule included), so each
    optimizer takes one step per batch and a schedule sized in batches holds for
    all. All are built at compile time on their own variables and are model
    attributes, so `save_weights` / `load_weights` carry every optimizer's state.
    """

    PLAYERS: tuple[str, ...] = ()  # the sub-models, attributes of the same names
    METRICS: tuple[str, ...] = ()  # what the steps report
    RECONSTRUCTS = False  # whether `call` returns reconstructions of its inputs

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        players = {k: kwargs.pop(k) for k in self.PLAYERS}
        super().__init__(**kwargs)
        for key, model in players.items():
            setattr(self, key, model)
        first = players[self.PLAYERS[0]]
        # The noise is a function of (seed, training step), the seed a weight:
        # Keras' SeedGenerator state is not in save_weights, so a resumed or
        # reloaded model would draw other noise.
        seed = random.randrange(2**31) if seed is None else int(seed)
        self.noise_seed = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(seed),
            dtype="int64",
            trainable=False,
            name="noise_seed",
        )
        self.latent_dim = int(self.sampler.inputs[0].shape[-1])
        self.trackers = {n: keras.metrics.Mean(name=n) for n in self.METRICS}
        self.build((None, *first.inputs[0].shape[1:]))

    @property
    def sampler(self) -> keras.Model:
        """The sub-model that maps latent vectors to images."""
        raise NotImplementedError

    def steps(self) -> list[tuple[str, tuple[str, ...], Any]]:
        """(optimizer attribute, players it updates, loss function) per step; a loss
        function takes (images, noise key, training) and returns (loss, logs)."""
        raise NotImplementedError

    # --- shared mechanics ---------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs) -> None:
        """`optimizer` trains the first step, copies of it the others. `loss` is
        the aae's reconstruction loss (a run's --loss, binary cross-entropy by
        default; MSE when none is given); the other steps, and a GAN's, compute
        their own. `metrics` compare the images with their reconstructions (aae;
        the run's `mse`); a GAN has none."""
        if not self.RECONSTRUCTS:
            loss = metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        main = self.optimizer
        for attr, players, _ in self.steps():
            if attr != "optimizer":
                setattr(self, attr, type(main).from_config(main.get_config()))
            getattr(self, attr).build(self._variables_of(players))

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compiles a loaded model with `compile`, which makes the copies (Keras'
        own skips a custom `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def _variables_of(self, players: tuple[str, ...]) -> list:
        return [v for p in players for v in getattr(self, p).trainable_variables]

    def noise(self, n, key):
        """Latent vectors N(0, I), a function of the seed and `key` (an int)."""
        seed = ops.stack([self.noise_seed.value, ops.cast(key, "int64")])
        return tf.random.stateless_normal((n, self.latent_dim), seed)

    @property
    def metrics(self) -> list:
        """The steps' means, then the compiled metrics (Keras keeps them in
        `_compile_metrics`, with no public name), which `fit` resets each epoch."""
        compiled = self._compile_metrics
        return [*self.trackers.values(), *([compiled] if compiled is not None else [])]

    def _record(self, logs: dict, x) -> dict:
        """Updates the means, weighting each batch by its size as Keras does."""
        for name, value in logs.items():
            self.trackers[name].update_state(value, sample_weight=ops.shape(x)[0])
        return self.get_metrics_result()

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        steps = self.steps()
        step = tf.cast(self.optimizer.iterations, tf.int64) * len(steps)
        logs = {}
        for j, (attr, players, loss_fn) in enumerate(steps):
            optimizer = getattr(self, attr)
            variables = self._variables_of(players)
            with tf.GradientTape() as tape:
                value, values = loss_fn(x, step + j, training=True)
                value += sum(ops.sum(getattr(self, p).losses) for p in players)
                scaled = optimizer.scale_loss(value)
            optimizer.apply(tape.gradient(scaled, variables), variables)
            logs.update(values)
        return self._record(logs, x)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        logs = {}
        for j, (_, _, loss_fn) in enumerate(self.steps()):
            # Fixed noise: evaluations of different epochs compare the same draws.
            logs.update(loss_fn(x, -1 - j, training=False)[1])
        return self._record(logs, x)

    def build(self, input_shape) -> None:
        """The players are functional models, built when constructed."""
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": int(ops.convert_to_numpy(self.noise_seed)),
            **{
                p: keras.saving.serialize_keras_object(getattr(self, p))
                for p in self.PLAYERS
            },
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        players = {
            p: keras.saving.deserialize_keras_object(config[p]) for p in cls.PLAYERS
        }
        return cls(**{**config, **players})


def _bce(target: float, prob):
    """Mean binary cross-entropy of probabilities against a constant label."""
    return ops.mean(keras.losses.binary_crossentropy(ops.full_like(prob, target), prob))


@keras.saving.register_keras_serializable(package="zoo")
class AdversarialAutoencoder(Adversarial):
    """Makhzani et al.'s adversarial autoencoder with a Gaussian prior."""

    PLAYERS = ("encoder", "decoder", "discriminator")
    METRICS = ("loss", "d_loss", "g_loss")
    RECONSTRUCTS = True

    @property
    def sampler(self) -> keras.Model:
        return self.decoder

    def call(self, x, training=None):
        return self.decoder(self.encoder(x, training=training), training=training)

    def steps(self):
        return [
            ("optimizer", ("encoder", "decoder"), self._reconstruction),
            ("d_optimizer", ("discriminator",), self._discrimination),
            ("g_optimizer", ("encoder",), self._generation),
        ]

    def _reconstruction(self, x, key, training):
        made = self(x, training=training)
        if self._compile_metrics is not None:
            self._compile_metrics.update_state(x, made)
        if self._compile_loss is None:
            loss = ops.mean(ops.square(x - made))
        else:  # not compute_loss: it adds every player's regularization
            loss = self._compile_loss(x, made)
        return loss, {"loss": loss}

    def _discrimination(self, x, key, training):
        codes = self.encoder(x, training=training)
        prior = self.noise(ops.shape(x)[0], key)
        real = self.discriminator(prior, training=training)
        fake = self.discriminator(codes, training=training)
        loss = (_bce(1.0, real) + _bce(0.0, fake)) / 2
        return loss, {"d_loss": loss}

    def _generation(self, x, key, training):
        codes = self.encoder(x, training=training)
        loss = _bce(1.0, self.discriminator(codes, training=training))
        return loss, {"g_loss": loss}


@keras.saving.register_keras_serializable(package="zoo")
class DCGAN(Adversarial):
    """Radford et al.'s DCGAN, trained as in keras.io's GAN `train_step` guide."""

    PLAYERS = ("generator", "discriminator")
    METRICS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_smoothing = float(label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}

    @property
    def sampler(self) -> keras.Model:
        return self.generator

    def call(self, x, training=None):
        return self.discriminator(x, training=training)

    def steps(self):
        return [
            ("optimizer", ("discriminator",), self._discrimination),
            ("g_optimizer", ("generator",), self._generation),
        ]

    def _fake(self, x, key, training):
        images = self.generator(self.noise(ops.shape(x)[0], key), training=training)
        return self.discriminator(images, training=training)

    def _discrimination(self, x, key, training):
        real = self.discriminator(x, training=training)
        fake = self._fake(x, key, training)
        # One-sided label smoothing (Salimans et al. 2016): real targets
        # 1 - label_smoothing, fake ones 0. Keras' label_smoothing would move
        # both (to 1 - s/2 and s/2).
        loss = (_bce(1.0 - self.label_smoothing, real) + _bce(0.0, fake)) / 2
        return loss, {
            "d_loss": loss,
            "d_real": ops.mean(real),
            "d_fake": ops.mean(fake),
        }

    def _generation(self, x, key, training):
        loss = _bce(1.0, self._fake(x, key, training))
        return loss, {"g_loss": loss}


# --- builders ---------------------------------------------------------------------
def _probability(inputs, features, k: blocks.Knobs) -> keras.Model:
    """The discriminator: dropout (the knob), then one sigmoid unit in float32."""
    x = k.drop(features, "dropout")
    prob = layers.Dense(
        1, activation="sigmoid", dtype="float32", name="real", **k._layer_args()
    )(x)
    return keras.Model(inputs, prob, name="discriminator")


# Each model's options and their defaults: the registry passes `kind`.
KINDS: dict[str, dict[str, Any]] = {
    "aae": {"latent_dim": 8, "filters": (32, 64), "discriminator_units": (256, 256)},
    "dcgan": {
        "latent_dim": 100,
        "filters": (64, 128),
        "kernel_size": 5,
        "label_smoothing": 0.1,
    },
}

# What each variant takes besides the layer knobs (zoo.build refuses the rest).
OPTIONS = {kind: tuple(defaults) for kind, defaults in KINDS.items()}


def build(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    name: str,
    kind: str,
    latent_dim: int | None = None,
    filters: tuple[int, ...] | None = None,
    discriminator_units: tuple[int, ...] | None = None,
    kernel_size: int | None = None,
    label_smoothing: float | None = None,
    **common: Any,
) -> keras.Model:
    """An adversarial autoencoder (`kind="aae"`) or a DCGAN (`kind="dcgan"`).

    Both take `latent_dim` (aae: the code size, 8; dcgan: the noise size, 100)
    and `filters`: one strided convolution per entry in the encoder (aae, 3x3,
    (32, 64)) or the discriminator (dcgan, `kernel_size` 5x5 as in the paper,
    (64, 128)), mirrored by transposed convolutions in the decoder / generator.
    The dcgan's `label_smoothing` (0.1) sets the real images' target in the
    discriminator's step to 1 - label_smoothing (one-sided). The aae's
    discriminator on the codes has one Dense layer per `discriminator_units`
    entry ((256, 256)).
    The knobs apply to every player, `dropout` before the discriminator's
    output only; the DCGAN generator always has batch norm (the paper's), and
    `batch_norm=True` adds it to the discriminator. `num_classes` is ignored.
    """
    del num_classes
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}.")
    given = {
        "latent_dim": latent_dim,
        "filters": filters,
        "discriminator_units": discriminator_units,
        "kernel_size": kernel_size,
        "label_smoothing": label_smoothing,
    }
    options = {
        k: KINDS[kind][k] if v is None else v
        for k, v in given.items()
        if k in KINDS[kind]
    }
    options["latent_dim"] = autoencoder.check_size(
        name, options["latent_dim"], "latent_dim"
    )
    for key in ("filters", "discriminator_units"):
        if key in options:
            options[key] = autoencoder.check_widths(name, options[key], key)
    if "kernel_size" in options:
        options["kernel_size"] = autoencoder.check_size(
            name, options["kernel_size"], "kernel_size"
        )
    smoothing = options.get("label_smoothing", 0.0)
    if isinstance(smoothing, bool) or not isinstance(smoothing, int | float):
        smoothing = -1
    if not 0 <= smoothing < 1:
        raise ValueError(
            f"{name}: label_smoothing must be a number in [0, 1); received "
            f"{options['label_smoothing']!r}."
        )
    k = autoencoder.knobs(name, "conv", input_shape, options["filters"], common)
    builder = _aae if kind == "aae" else _dcgan
    return builder(tuple(input_shape), name, k, **options)


def _aae(input_shape, name, k, *, latent_dim, filters, discriminator_units):
    kd = replace(k, activation=k.activation or "leaky_relu")
    plain = replace(k, dropout=0.0)
    images = keras.Input(input_shape, name="images")
    features = autoencoder.encoder_body(images, plain, "conv", filters)
    codes = layers.Dense(latent_dim, name="code", **k._layer_args())(features)
    codes_in = keras.Input((latent_dim,), name="codes")
    x = codes_in
    for i, n in enumerate(discriminator_units, 1):
        x = replace(kd, dropout=0.0).dense(x, n, name=f"disc_dense{i}")
    return AdversarialAutoencoder(
        encoder=keras.Model(images, codes, name="encoder"),
        decoder=autoencoder.decoder(latent_dim, input_shape, plain, "conv", filters),
        discriminator=_probability(codes_in, x, kd),
        name=name,
    )


def _dcgan(input_shape, name, k, *, latent_dim, filters, kernel_size, label_smoothing):
    kd = replace(k, activation=k.activation or "leaky_relu")
    decoder = autoencoder.decoder(
        latent_dim,
        input_shape,
        replace(k, batch_norm=True, dropout=0.0),
        "conv",
        filters,
        kernel_size,
    )
    images = keras.Input(input_shape, name="images")
    features = autoencoder.encoder_body(
        images, replace(kd, dropout=0.0), "conv", filters, kernel_size
    )
    return DCGAN(
        label_smoothing=label_smoothing,
        # The autoencoder's decoder is the DCGAN generator; renamed as a player.
        generator=keras.Model(decoder.input, decoder.output, name="generator"),
        discriminator=_probability(images, features, kd),
        name=name,
    )
