"""The generative families' runs (issue 17): autoencoders and the VAE train through
the run lifecycle on digits, beat their own baseline, write their figures, and
refuse the options that need labels."""

import csv
import json

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import MNIST_DIR, RUN_FILES

import data_pipelines as dp
import zoo
from tests.test_training import (
    kill_after,
    max_diff,
    one_line_error,
    weights,
    zoo_cli,
    zoo_main,
)
from zoo import generative, training

# A classifier's run files, with an autoencoder's figures instead of accuracy's.
GENERATIVE_FILES = RUN_FILES - {"accuracy.png", "confusion_matrix.png"} | {
    "mse.png",
    "reconstructions.png",
}


def test_cards_say_the_task_and_the_default_loss():
    assert zoo.model_card("conv_autoencoder").task == "reconstruction"
    assert zoo.model_card("lenet5").task == "classification"
    config = training.TrainConfig.from_dict({"model": "vae"})
    assert (config.task, config.loss) == ("reconstruction", "binary_crossentropy")
    config = training.TrainConfig.from_dict({"model": "autoencoder", "loss": "mse"})
    assert (config.task, config.loss) == ("reconstruction", "mse")


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    keras.utils.set_random_seed(0)
    return training.train(
        "conv_autoencoder",
        "digits",
        epochs=8,
        batch_size=32,
        run_dir=str(root),
        name="ae",
        verbose=0,
    )


def test_conv_autoencoder_beats_the_mean_image(ae_run):
    splits = dp.load("digits", seed=0)
    train = np.concatenate([np.asarray(x) for x, _ in splits.train])
    test = np.concatenate([np.asarray(x) for x, _ in splits.test])
    mean_image_mse = float(np.mean((test - train.mean(axis=0)) ** 2))
    made = ae_run.model.predict(test, verbose=0)
    ours = float(np.mean((made - test) ** 2))
    # Measured: 0.018 against 0.062 for the mean image (8 epochs).
    assert ours < 0.5 * mean_image_mse
    assert ae_run.metrics["test_mse"] == pytest.approx(ours, rel=1e-4)
    assert made.shape == test.shape and made.min() >= 0 and made.max() <= 1


def test_autoencoder_run_files(ae_run):
    run = ae_run.run_dir
    names = {p.name for p in run.iterdir() if p.name != ".lock"}
    assert names == GENERATIVE_FILES  # no samples.png: no prior
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {"loss", "mse", "val_loss", "val_mse"} <= set(rows[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"] == 82_961 and metrics["epochs"] == 8
    assert "test_accuracy" not in metrics
    assert (run / "tensorboard" / "images").is_dir()
    best = zoo.load_model(run / "best.keras")
    encoder = generative.part(best, "encoder")
    assert encoder.output_shape == (None, 16)
    assert generative.part(best, "decoder").output_shape == (None, 8, 8, 1)


def test_vae_with_a_2d_latent_draws_samples_and_maps_classes(tmp_path):
    result = training.train(
        "vae",
        "digits",
        epochs=3,
        run_dir=str(tmp_path),
        name="vae",
        model_args={"latent_dim": 2},
        verbose=0,
    )
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"samples.png", "latent_map.png", "reconstructions.png"} <= names
    model = result.model
    assert generative.latent_dim(model) == 2 and generative.has_prior(model)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    # Sampling draws only in training: inference is the posterior mean's decoding.
    np.testing.assert_array_equal(model(x), model(x))
    assert not np.allclose(model(x, training=True), model(x, training=True))
    # The KL term is the model's own loss, added to the binary cross-entropy.
    assert result.metrics["test_loss"] > 0 and len(model.losses) == 1


def test_denoising_noise_acts_in_training_only():
    x = np.full((2, 8, 8, 1), 0.5, np.float32)
    for spec, layer in [("gaussian:0.3", "GaussianNoise"), ("masking:0.5", "Masking")]:
        model = zoo.build("conv_autoencoder", input_shape=(8, 8, 1), denoising=spec)
        noise = model.get_layer("noise")
        assert type(noise).__name__.startswith(layer)
        np.testing.assert_array_equal(noise(x), x)
        noisy = np.asarray(noise(x, training=True))
        assert not np.allclose(noisy, x)
        if spec.startswith("masking"):  # masked values are 0, the rest unchanged
            assert set(np.unique(noisy)) == {0.0, 0.5}
            assert 0.3 < np.mean(noisy == 0) < 0.7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "vae: latent_dim must be an int >= 1; received 0."),
        (
            {"input_shape": (10, 10, 1)},
            "vae halves its input 2 times, so it needs images whose height and "
            "width are multiples of 4; received input_shape=(10, 10, 1). Use "
            "e.g. 12x12 (--image-size / --input-shape), or change `filters`.",
        ),
        ({"beta": -1}, "vae: beta must be a number >= 0; received -1."),
        ({"pooling": "avg"}, "vae does not take pooling; allowed:"),
    ],
)
def test_vae_bad_options(kwargs, message):
    with pytest.raises(ValueError) as err:
        zoo.build("vae", **kwargs)
    assert message in str(err.value)


def test_bad_denoising_spec():
    with pytest.raises(ValueError, match="unknown denoising 'salt:0.3'; allowed"):
        zoo.build("autoencoder", denoising="salt:0.3")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--augment", "mixup"],
            "conv_autoencoder is a generative model (task 'reconstruction') and uses "
            "no labels, but --augment mixup mixes them.",
        ),
        (
            ["--task", "regression"],
            "conv_autoencoder is a generative model (task 'reconstruction'); task "
            "'regression' does not apply. Drop --task.",
        ),
        (
            ["--loss", "crossentropy"],
            "unknown loss 'crossentropy' for reconstruction; allowed: "
            "binary_crossentropy, mse, mae.",
        ),
        (
            ["--model-arg", "code_size=0"],
            "conv_autoencoder: code_size must be an int >= 1; received 0.",
        ),
        (
            ["--image-size", "10"],
            "needs images whose height and width are multiples of 4",
        ),
        (
            ["--dataset", "csv:table.csv", "--label-column", "y"],
            "conv_autoencoder makes images; dataset 'csv:table.csv' is tabular. Use "
            "an image source: digits, idx:DIR, folder:DIR or tfds:NAME.",
        ),
    ],
)
def test_cli_refuses_label_options_for_generative_models(
    args, message, tmp_path, capsys
):
    out = zoo_main(
        "train",
        "conv_autoencoder",
        "--epochs",
        "1",
        "--run-dir",
        tmp_path,
        *args,
        capsys=capsys,
    )
    one_line_error(out, message)
    assert not any(tmp_path.iterdir())


GAN = ["--model-arg", "filters=[8,16]", "--model-arg", "latent_dim=8"]


def test_gan_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    """Both players' weights and both optimizers' states come back from the
    checkpoint: the resumed run ends with the uninterrupted run's weights."""
    args = [
        "train",
        "dcgan",
        *GAN,
        "--epochs",
        "6",
        "--batch-size",
        "128",
        "--deterministic",
        "--checkpoint-every",
        "1",
        "--run-dir",
        str(tmp_path),
    ]
    assert zoo_cli(*args, "--name", "full", cwd=tmp_path).returncode == 0
    cut = kill_after(args, tmp_path / "cut", epochs=2)
    done = len(pd.read_csv(cut / "history.csv"))
    assert 2 <= done < 6, "the kill must land mid-training"
    out = zoo_cli("train", "--resume", str(cut), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    history = pd.read_csv(cut / "history.csv")
    full = pd.read_csv(tmp_path / "full" / "history.csv")
    assert list(history["epoch"]) == list(range(6))
    np.testing.assert_allclose(history["d_loss"], full["d_loss"], rtol=1e-6)
    np.testing.assert_allclose(history["g_loss"], full["g_loss"], rtol=1e-6)
    assert (
        max_diff(weights(cut / "last.keras"), weights(tmp_path / "full" / "last.keras"))
        == 0.0
    )
    model = zoo.load_model(cut / "last.keras")
    assert {"generator", "discriminator"} <= {la.name for la in model.layers}


def test_vae_export_serves_encode_decode_generate(tmp_path, capsys):
    import tensorflow as tf

    out = tmp_path / "exports"
    result = training.train(
        "vae",
        "digits",
        epochs=2,
        run_dir=str(tmp_path),
        name="vae",
        model_args={"latent_dim": 4},
        export=str(out),
        verbose=0,
    )
    assert result.export_dir == out / "1"
    meta = json.loads((out / "1" / "export_meta.json").read_text())
    assert meta["signatures"] == ["encode", "reconstruct", "generate", "decode"]
    assert (meta["task"], meta["latent_dim"], meta["image_shape"]) == (
        "reconstruction",
        4,
        [8, 8, 1],
    )
    assert all(v == 0 for v in meta["verification"]["max_abs_diff"].values())
    served = tf.saved_model.load(str(out / "1"))
    raw = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    codes = served.signatures["encode"](images=tf.constant(raw))["codes"].numpy()
    mean = result.model.get_layer("encoder")(raw.astype("float32") / 255)[0]
    np.testing.assert_allclose(codes, mean, atol=1e-5)
    generate = served.signatures["generate"]
    images = generate(seed=tf.constant(3), count=tf.constant(6))["images"].numpy()
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8
    again = generate(seed=tf.constant(3), count=tf.constant(6))["images"].numpy()
    np.testing.assert_array_equal(images, again)
    default = served.signatures["serving_default"](images=tf.constant(raw))
    np.testing.assert_array_equal(default["codes"].numpy(), codes)
    # An empty request gets an empty answer of the declared shape.
    none = tf.zeros((0, 8, 8, 1), tf.uint8)
    empty = {
        "generate": generate(seed=tf.constant(3), count=tf.constant(0))["images"],
        "decode": served.signatures["decode"](codes=tf.zeros((0, 4)))["images"],
        "reconstruct": served.signatures["reconstruct"](images=none)["images"],
        "encode": served.signatures["encode"](images=none)["codes"],
    }
    assert {k: tuple(v.shape) for k, v in empty.items()} == {
        "generate": (0, 8, 8, 1),
        "decode": (0, 8, 8, 1),
        "reconstruct": (0, 8, 8, 1),
        "encode": (0, 4),
    }
    # A second export is a new version; other formats are refused in one line.
    assert (
        zoo_main("export", result.run_dir, "--out", out, capsys=capsys).returncode == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]
    refused = zoo_main(
        "export", result.run_dir, "--out", out, "--format", "onnx", capsys=capsys
    )
    one_line_error(refused, "vae makes images: it is exported as a float32 SavedModel")
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]


def test_dcgan_export_generates_by_default_and_predict_points_to_it(tmp_path, capsys):
    out = tmp_path / "exports"
    assert (
        zoo_main(
            "train",
            "dcgan",
            *GAN,
            "--epochs",
            "1",
            "--run-dir",
            tmp_path,
            "--name",
            "gan",
            "--export",
            out,
            capsys=capsys,
        ).returncode
        == 0
    )
    meta = json.loads((out / "1" / "export_meta.json").read_text())
    assert meta["signatures"] == ["generate", "decode"] and meta["task"] == "generation"
    assert meta["input_shape"] is None  # it takes no images
    image = tmp_path / "gan" / "samples.png"
    refused = zoo_main("predict", out, image, capsys=capsys)
    one_line_error(
        refused,
        "Call the SavedModel's generate or decode signature instead "
        "(docs/generative.md).",
    )
    evaluated = zoo_main("evaluate", tmp_path / "gan", capsys=capsys)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test D(x) " in evaluated.stdout and "on 360 samples of digits" in (
        evaluated.stdout
    )


def test_finetune_classifies_with_an_autoencoders_encoder(ae_run, tmp_path):
    """Unsupervised pretraining: zoo finetune puts a classifier on the codes."""
    from zoo import transfer

    result = transfer.finetune(
        str(ae_run.run_dir), "digits", run_dir=str(tmp_path), verbose=0
    )
    names = [layer.name for layer in result.model.layers]
    assert "code" in names and "decoder" not in " ".join(names)
    assert result.model.get_layer("predictions").input.shape == (None, 16)
    # Measured 0.77 (chance 0.10) with the default 5 + 10 epochs.
    assert result.metrics["test_accuracy"] > 0.6


def test_a_nan_loss_is_one_line_for_a_model_that_draws_figures(tmp_path):
    """The epoch's figures of NaN images must not add a NumPy warning line."""
    out = zoo_cli("train", "vae", "--epochs", "2", "--optimizer", "sgd", "--lr",
                  "1e6", "--run-dir", tmp_path, cwd=tmp_path)  # fmt: skip
    one_line_error(out, "loss became NaN in epoch 1; training stopped. No epoch ended")
    assert not any(tmp_path.iterdir())


def test_a_run_with_a_latent_map_is_quiet_on_stderr(tmp_path):
    """Nothing on stderr for a run that works: the figures and the latent map
    used to trace a predict function each, and TensorFlow warned of retracing
    after five (on MNIST's 2,000 test images)."""
    out = zoo_cli("train", "vae", "--dataset", f"idx:{MNIST_DIR}", "--model-arg",
                  "latent_dim=2", "--epochs", "2", "--run-dir", tmp_path,
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    (run,) = tmp_path.iterdir()
    assert (run / "latent_map.png").is_file()
