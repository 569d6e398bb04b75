"""The adversarial family (issue 17): `aae` and `dcgan` train on real digits and
beat their own baselines, save and load whole, resume exactly with every
optimizer's state, and refuse bad options in one line."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import zoo
from zoo.models import adversarial

SHAPE = (8, 8, 1)
OPTIMIZERS = ("optimizer", "d_optimizer", "g_optimizer")


def build(kind: str, **options):
    return adversarial.build(
        input_shape=SHAPE, num_classes=10, name=kind, kind=kind, **options
    )


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits in [0, 1]: 1,500 to train on, 297 held out."""
    data = load_digits()
    x = (data.images[..., None] / 16.0).astype("float32")
    return x[:1500], data.target[:1500], x[1500:], data.target[1500:]


def compiled(kind: str, learning_rate=2e-4, metrics=None, **options):
    model = build(kind, **options)
    model.compile(keras.optimizers.Adam(learning_rate, beta_1=0.5), metrics=metrics)
    return model


def test_players_are_named_sub_models_and_attributes():
    aae, dcgan = build("aae"), build("dcgan")
    for model, players in [
        (aae, ("encoder", "decoder", "discriminator")),
        (dcgan, ("generator", "discriminator")),
    ]:
        assert [layer.name for layer in model.layers] == list(players)
        for name in players:
            assert getattr(model, name) is model.get_layer(name)
    assert (aae.latent_dim, dcgan.latent_dim) == (8, 100)
    assert aae.encoder.output_shape == (None, 8)
    assert aae.discriminator.input_shape == (None, 8)
    assert dcgan.generator.input_shape == (None, 100)
    noise = keras.random.normal((5, 100), seed=1)
    images = keras.ops.convert_to_numpy(dcgan.generator(noise))
    assert images.shape == (5, *SHAPE) and images.min() >= 0 and images.max() <= 1
    assert aae.predict(np.zeros((3, *SHAPE)), verbose=0).shape == (3, *SHAPE)
    assert dcgan.predict(np.zeros((3, *SHAPE)), verbose=0).shape == (3, 1)
    # The generator always has batch norm; batch_norm=True adds it to D.
    bn = [
        layer.name
        for layer in zoo.blocks.nested_layers(build("dcgan", batch_norm=True))
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bn == [
        "dec_dense_bn",
        "dec_deconv1_bn",
        "dec_deconv2_bn",
        "enc_conv1_bn",
        "enc_conv2_bn",
    ]


def test_aae_reconstructs_better_than_the_mean_image(digits):
    x, y, held_x, held_y = digits
    # The run compiles an autoencoder with the pixels' MSE as a metric.
    mse = keras.metrics.MeanSquaredError(name="mse")
    model = compiled("aae", learning_rate=1e-3, metrics=[mse])
    history = model.fit(
        x, y, epochs=8, batch_size=64, verbose=0, validation_data=(held_x, held_y)
    ).history
    names = ("loss", "mse", "d_loss", "g_loss")
    assert set(history) == {*names, *(f"val_{k}" for k in names)}
    np.testing.assert_allclose(history["mse"], history["loss"], rtol=1e-5)
    made = model.predict(held_x, verbose=0)
    ours = float(np.mean((made - held_x) ** 2))
    mean_image = float(np.mean((held_x - x.mean(axis=0)) ** 2))
    # Measured: 0.0222 against 0.0739 for the mean image.
    assert ours < 0.5 * mean_image
    assert history["val_loss"][-1] == pytest.approx(ours, rel=1e-5)
    assert history["loss"][-1] < history["loss"][0]
    logs = model.evaluate(held_x, held_y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(ours, rel=1e-5)


class SampleRecorder(keras.callbacks.Callback):
    """The generator's images of fixed noise after each epoch."""

    def __init__(self, noise):
        super().__init__()
        self.noise = noise
        self.samples = []

    def on_epoch_end(self, epoch, logs=None):
        self.samples.append(self.model.generator.predict(self.noise, verbose=0))


def test_dcgan_samples_change_and_the_discriminator_stays_undecided(digits):
    x, y, held_x, held_y = digits
    model = compiled("dcgan")
    recorder = SampleRecorder(np.random.default_rng(0).normal(size=(64, 100)))
    history = model.fit(
        x,
        y,
        epochs=6,
        batch_size=64,
        verbose=0,
        validation_data=(held_x, held_y),
        callbacks=[recorder],
    ).history
    names = ("d_loss", "g_loss", "d_real", "d_fake")
    assert set(history) == {*names, *(f"val_{k}" for k in names)}
    changes = [
        float(np.mean(np.abs(b - a)))
        for a, b in zip(recorder.samples, recorder.samples[1:], strict=False)
    ]
    # Measured: mean absolute pixel changes of 0.18-0.29 between epochs.
    assert min(changes) > 0.05
    # Measured: D(x) 0.53-0.69, D(G(z)) 0.42-0.59 (train and validation).
    for key in ("d_real", "d_fake", "val_d_real", "val_d_fake"):
        assert 0.2 < min(history[key]) and max(history[key]) < 0.8, key


@pytest.mark.parametrize("kind", ["aae", "dcgan"])
def test_keras_file_round_trip(kind, digits, tmp_path):
    x, y, *_ = digits
    model = compiled(kind)
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = zoo.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(model) and loaded.latent_dim == model.latent_dim
    if kind == "dcgan":
        assert loaded.label_smoothing == model.label_smoothing == 0.1
    np.testing.assert_array_equal(
        loaded.predict(x[:32], verbose=0), model.predict(x[:32], verbose=0)
    )
    noise = np.random.default_rng(0).normal(size=(16, model.latent_dim))
    sampler = "decoder" if kind == "aae" else "generator"
    np.testing.assert_array_equal(
        getattr(loaded, sampler).predict(noise, verbose=0),
        getattr(model, sampler).predict(noise, verbose=0),
    )
    for name in OPTIMIZERS:
        if hasattr(model, name):
            for a, b in zip(
                getattr(model, name).variables,
                getattr(loaded, name).variables,
                strict=True,
            ):
                np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kind", ["aae", "dcgan"])
def test_resume_from_weights_is_exact_for_every_optimizer(kind, digits, tmp_path):
    """Weights saved after an epoch, loaded into a fresh build: the next epoch
    gives the same weights and optimizer states, a learning-rate schedule
    included (the run lifecycle's checkpoint and resume)."""
    x, y, *_ = digits
    x, y = x[:320], y[:320]

    def fresh():
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 5, 0.5)
        model = build(kind)
        model.compile(keras.optimizers.Adam(schedule, beta_1=0.5))
        model.optimizer.build(model.trainable_variables)  # as zoo.runs does
        return model

    model = fresh()
    model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    model.save_weights(tmp_path / "ckpt.weights.h5")
    resumed = fresh()
    resumed.load_weights(tmp_path / "ckpt.weights.h5")
    for m in (model, resumed):
        m.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    for a, b in zip(model.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    used = [name for name in OPTIMIZERS if hasattr(model, name)]
    assert len(used) == (3 if kind == "aae" else 2)
    for name in used:
        ours, theirs = getattr(model, name), getattr(resumed, name)
        assert int(ours.iterations.numpy()) == 10
        assert len(ours.variables) == len(theirs.variables) > 2
        for a, b in zip(ours.variables, theirs.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kind", ["aae", "dcgan"])
@pytest.mark.parametrize("value", [0, -3])
def test_latent_dim_below_one_is_refused(kind, value):
    with pytest.raises(ValueError) as err:
        build(kind, latent_dim=value)
    assert str(err.value) == (
        f"{kind}: latent_dim must be an int >= 1; received {value}."
    )


def test_other_bad_options_are_refused():
    with pytest.raises(ValueError) as err:
        build("dcgan", label_smoothing=1.0)
    assert str(err.value) == (
        "dcgan: label_smoothing must be a number in [0, 1); received 1.0."
    )
    with pytest.raises(ValueError, match="kernel_size must be an int >= 1"):
        build("dcgan", kernel_size=0)
    with pytest.raises(ValueError, match="multiples of 4; received input_shape"):
        adversarial.build(
            input_shape=(30, 30, 1), num_classes=10, name="aae", kind="aae"
        )
    with pytest.raises(ValueError, match="filters must be one or more positive"):
        build("aae", filters=(32, 0))
