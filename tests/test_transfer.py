"""Transfer learning: where heads are cut, freeze rules, the two phases, keras
applications with local weights, export, the CLI and the MNIST 0-4 -> 5-9 demo."""

import importlib.util
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import RUN_FILES

import zoo
from zoo import blocks, cli, generative, training, transfer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def weights_of(model, layer_name):
    """{variable path: value} of a layer, looked up in nested models too."""
    layer = next(la for la in blocks.nested_layers(model) if la.name == layer_name)
    return {w.path: np.array(w) for w in layer.weights}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --- where from_pretrained cuts ------------------------------------------------------

CUT_AT = {
    "resnet": "avg_pool",
    "inception": "avg_pool",
    "mlp": "dense2_act",
    "recurrent": "recurrent1",
    # generative models: the encoder's codes whole (the VAE's means), or the GAN
    # discriminator's last feature layer
    "autoencoder": "code",
    "vae": "z_mean",
    "adversarial": "enc_flatten",
}


FAMILY_FIRSTS = {
    "mlp",
    "lenet5",
    "alexnet",
    "vgg11",
    "googlenet",
    "resnet18",
    "resnet20",
    "lstm",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=() if n in FAMILY_FIRSTS else pytest.mark.slow)
        for n in zoo.list_models()
    ],
)
def test_from_pretrained_replaces_the_head_of_every_model(name):
    card = zoo.model_card(name)
    shape = (8, 8, 1) if card.family == "mlp" else (card.min_input,) * 2 + (3,)
    extra = {"width": 0.25} if card.family == "resnet" else {}
    source = zoo.build(name, input_shape=shape, num_classes=10, **extra)
    model = transfer.from_pretrained(source, 3)
    assert model.output_shape == (None, 3)
    assert model.name == f"{name}_transfer"
    names = [layer.name for layer in model.layers]
    cut = "code" if name == "aae" else CUT_AT.get(card.family, "flatten")
    assert names[-2] == cut
    assert names.count("predictions") == 1 and "fc1" not in names
    # the backbone is the source's own layers (a generative model's encoder or
    # discriminator): same weights, nothing copied
    owner = generative.part(source, "encoder") or generative.part(
        source, "discriminator"
    )
    owner = owner if card.task != "classification" else source
    kept = [layer for layer in model.layers[:-1] if layer.weights]
    assert all(layer is owner.get_layer(layer.name) for layer in kept)
    assert all(layer.trainable for layer in model.layers)


def test_from_pretrained_keeps_a_feature_extractor_whole_and_pools_it():
    source = zoo.build("resnet20", input_shape=(16, 16, 3), include_top=False)
    model = transfer.from_pretrained(source, 4, dropout=0.2)
    assert [la.name for la in model.layers[-3:]] == [
        "head_pool",
        "head_dropout",
        "predictions",
    ]
    cut = transfer.from_pretrained(source, 4, cut="stage2_block3_out")
    assert cut.get_layer("head_pool").input.shape == (None, 8, 8, 32)


# --- freeze / unfreeze: trainable parameters by hand ---------------------------------


def test_lenet5_trainable_counts_by_hand():
    source = zoo.build("lenet5", input_shape=(28, 28, 1), num_classes=10)
    conv1, conv2 = 5 * 5 * 1 * 6 + 6, 5 * 5 * 6 * 16 + 16  # 156, 2416
    head = (4 * 4 * 16) * 5 + 5  # flatten of 4x4x16 -> 5 classes: 1285
    model = transfer.from_pretrained(source, 5)
    assert transfer.trainable_params(model) == conv1 + conv2 + head == 3857
    assert transfer.trainable_params(transfer.freeze(model)) == head
    assert transfer.trainable_params(transfer.unfreeze(model, 2)) == conv2 + head
    assert transfer.trainable_params(transfer.unfreeze(model, "block1")) == 3857
    for until in ("block1", "block1_conv", 1, 0.5):  # 0.5 of 3 layers -> 1
        transfer.unfreeze(model)
        assert transfer.trainable_params(transfer.freeze(model, until)) == conv2 + head
    transfer.unfreeze(model)
    assert transfer.trainable_params(transfer.freeze(model, 0)) == 3857
    assert transfer.trainable_params(transfer.freeze(model, 1.0)) == 0


def test_resnet20_stage_counts_and_batch_norm_rule():
    source = zoo.build("resnet20", input_shape=(32, 32, 3), num_classes=10)
    model = transfer.from_pretrained(source, 5)
    head = 64 * 5 + 5
    assert transfer.trainable_params(model) == 269_722 - (64 * 10 + 10) + head
    assert transfer.trainable_params(transfer.freeze(model)) == head
    # stage 3: conv 3x3 32->64, then five 3x3 64->64 convs (no bias), six BNs
    convs = 3 * 3 * 32 * 64 + 5 * 3 * 3 * 64 * 64
    bn_scale_offset = 6 * 2 * 64
    transfer.unfreeze(model, "stage3")
    assert transfer.trainable_params(model) == head + convs == 203_077
    bn = model.get_layer("stage3_block2_conv1_bn")
    assert not bn.trainable  # kept frozen: inference mode, statistics fixed
    transfer.unfreeze(model, "stage3", keep_batch_norm_frozen=False)
    assert transfer.trainable_params(model) == head + convs + bn_scale_offset
    assert bn.trainable and not model.get_layer("stage2_block3_conv2_bn").trainable
    # On a model that was never frozen, BN is frozen everywhere too.
    fresh = transfer.from_pretrained(source, 5)
    transfer.unfreeze(fresh, top=10)
    norms = [x for x in fresh.layers if isinstance(x, keras.layers.BatchNormalization)]
    assert len(norms) == 19 and not any(x.trainable for x in norms)
    bn_all = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)  # stem, then 6 BNs per stage
    assert transfer.trainable_params(fresh) == 269_722 - 650 + head - bn_all


def test_stage_and_layer_names_resolve():
    model = transfer.from_pretrained(
        zoo.build("resnet20", input_shape=(16, 16, 1), num_classes=10), 2
    )
    assert transfer.stages(model) == ["stem", "stage1", "stage2", "stage3"]
    transfer.freeze(model, "stage2")
    assert not model.get_layer("stage2_block3_conv2_bn").trainable
    assert model.get_layer("stage3_block1_conv1").trainable
    transfer.unfreeze(model, keep_batch_norm_frozen=False)  # all trainable again
    transfer.freeze(model, "stage2_block1_conv1")  # a layer: up to and including
    assert not model.get_layer("stage2_block1_conv1").trainable
    assert model.get_layer("stage2_block1_conv1_bn").trainable
    assert [
        transfer.stage_of(n)
        for n in (
            "conv2_block1_1_conv",  # keras ResNet50
            "block_3_expand",  # MobileNetV2
            "block2a_expand_conv",  # EfficientNet
            "inception4b_1x1",  # GoogLeNet
            "block5_conv3",  # VGG
            "conv2d_5",  # a default Keras name
            "mixed7",
        )
    ] == ["conv2", "block_3", "block2", "stage4", "block5", None, None]


@pytest.mark.parametrize(
    "call",
    [
        lambda m: transfer.freeze(m, "stage9"),
        lambda m: transfer.unfreeze(m, "stage9"),
        lambda m: transfer.freeze(m, 1.5),
        lambda m: transfer.unfreeze(m, 99),
        lambda m: transfer.freeze(m, True),
    ],
)
def test_names_that_match_nothing_list_the_stages(call):
    model = transfer.from_pretrained(
        zoo.build("resnet20", input_shape=(8, 8, 1), num_classes=10), 2
    )
    with pytest.raises(
        ValueError,
        match=r"names no layer or stage .*stem, stage1, "
        r"stage2, stage3\).*layers with weights 0\.\.39",
    ):
        call(model)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("resnet20", "is a zoo model name: train it first"),
        ("no/such/dir", "expected a run directory"),
        (42, "cannot use a int as a pretrained model"),
    ],
)
def test_sources_that_are_not_models(source, message):
    with pytest.raises(ValueError, match=message):
        transfer.from_pretrained(source, 3)


def test_bad_files_and_heads(tmp_path):
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(
        ValueError,
        match="cannot load .*notes.keras' as a Keras model: it is not a "
        r"\.keras archive \(the zip file model\.save\(\) writes\): it is damaged",
    ):
        transfer.from_pretrained(tmp_path / "notes.keras", 3)
    unbuilt = keras.Sequential([keras.layers.Dense(3)], name="unbuilt")
    with pytest.raises(ValueError, match="model 'unbuilt' has no inputs yet"):
        transfer.from_pretrained(unbuilt, 3)
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="not a finished run directory"):
        transfer.from_pretrained(tmp_path / "run", 3)
    source = zoo.build("lenet5", input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        transfer.from_pretrained(source, 0)
    with pytest.raises(ValueError, match="cut='fc9' names no layer of lenet5"):
        transfer.from_pretrained(source, 3, cut="fc9")


# --- the two phases ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A resnet20 (half width) on 8x8 digits with non-trivial BN statistics."""
    keras.utils.set_random_seed(1)
    model = zoo.build("resnet20", input_shape=(8, 8, 1), num_classes=10, width=0.5)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_mean.shape))
    path = tmp_path_factory.mktemp("pretrained") / "resnet20.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def two_phase_run(pretrained, tmp_path_factory):
    keras.utils.set_random_seed(0)
    return transfer.finetune(
        pretrained,
        "digits",
        head_epochs=2,
        finetune_epochs=2,
        unfreeze_top="stage3",
        batch_size=128,
        run_dir=str(tmp_path_factory.mktemp("runs")),
        verbose=0,
    )


def test_head_phase_leaves_the_backbone_bit_identical(pretrained, tmp_path):
    result = transfer.finetune(
        pretrained,
        "digits",
        head_epochs=2,
        finetune_epochs=0,
        batch_size=128,
        run_dir=str(tmp_path),
        verbose=0,
    )
    source = zoo.load_model(pretrained)
    trained = zoo.load_model(result.run_dir / "last.keras")
    backbone = [la.name for la in source.layers if la.weights][:-1]
    assert len(backbone) == 38  # stem conv + BN, 9 blocks x 2 x (conv + BN)
    for name in backbone:  # kernels, BN scale/offset and moving statistics
        assert same(weights_of(source, name), weights_of(trained, name)), name
    assert list(result.history["phase"]) == ["head", "head"]
    assert result.metrics["head_trainable_params"] == 32 * 10 + 10


def test_finetune_phase_trains_only_the_unfrozen_layers(pretrained, two_phase_run):
    source = zoo.load_model(pretrained)
    trained = zoo.load_model(two_phase_run.run_dir / "last.keras")
    for name in ("stem_conv", "stage1_block1_conv1", "stage2_block3_conv2"):
        assert same(weights_of(source, name), weights_of(trained, name)), name
    for name in ("stage3_block1_conv1", "stage3_block3_conv2"):
        assert not same(weights_of(source, name), weights_of(trained, name)), name
    for name in ("stage3_block1_conv1_bn", "stage3_block3_conv2_bn"):  # kept frozen
        assert same(weights_of(source, name), weights_of(trained, name)), name


def test_one_run_directory_records_both_phases(two_phase_run):
    run = two_phase_run.run_dir
    history = pd.read_csv(run / "history.csv")
    assert list(history["phase"]) == ["head", "head", "finetune", "finetune"]
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history["learning_rate"].tolist() == pytest.approx([1e-3] * 2 + [1e-4] * 2)
    files = {p.name for p in run.iterdir()}
    assert RUN_FILES | {"transfer.json", "model_init.keras"} <= files
    progress = json.loads((run / "checkpoints" / "progress.json").read_text())
    assert progress["done"] == ["head", "finetune"] and progress["epoch"] == 4
    settings = json.loads((run / "transfer.json").read_text())
    assert settings["unfreeze_top"] == "stage3" and settings["finetune_epochs"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["best_phase"] in transfer.PHASES
    stage3_convs = 3 * 3 * 16 * 32 + 5 * 3 * 3 * 32 * 32
    assert metrics["finetune_trainable_params"] == 32 * 10 + 10 + stage3_convs
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "resnet20_transfer" and config["image_size"] == 8
    # the run is a regular run: `zoo evaluate` reads it, `zoo train --resume` not
    assert training.evaluate(run)["test_accuracy"] == pytest.approx(
        metrics["test_accuracy"]
    )
    with pytest.raises(ValueError, match="is a `zoo finetune` run; resume it with"):
        training.train(resume=run)


def test_finetuned_run_exports_a_verified_saved_model(two_phase_run, tmp_path):
    from zoo import export

    version = export.export_saved_model(two_phase_run.run_dir, tmp_path / "served")
    meta = json.loads((version / "export_meta.json").read_text())
    assert meta["verification"]["max_abs_diff"] <= export.TOLERANCES["float32"]
    assert meta["model"] == "resnet20_transfer" and meta["num_classes"] == 10


def test_finetune_refuses_bad_options_before_training(pretrained, tmp_path):
    runs = str(tmp_path)
    cases = [
        ({"unfreeze_top": "stage7"}, "unfreeze='stage7' names no layer or stage"),
        ({"activation": "relu"}, "finetune does not take activation"),
        ({"image_size": 16}, "image_size=16 does not fit"),
        ({"head_epochs": 0, "finetune_epochs": 0}, "must be >= 1"),
        ({"weights": "x.h5"}, "applies to keras:NAME sources only"),
        ({"finetune_lr": -1.0}, r"finetune_lr \(--finetune-lr\) must be a number > 0"),
        ({"finetune_lr": float("nan")}, "received nan"),
        (
            {"unfreeze_top": 1},
            "unfreeze=1 gives phase 2 nothing new to train: from "
            "there up only predictions trains",
        ),
        ({"export": str(pretrained / "x")}, "is inside the file"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            transfer.finetune(pretrained, "digits", run_dir=runs, **options)
    with pytest.raises(ValueError, match="cut='x' applies to run directories"):
        transfer.finetune("keras:MobileNetV2", "digits", run_dir=runs, cut="x")
    assert not list(tmp_path.iterdir())  # nothing was written
    model = transfer.from_pretrained(pretrained, 3)
    with pytest.raises(ValueError, match="has 3 outputs but digits has 10 classes"):
        transfer.finetune(model, "digits", run_dir=runs)
    with pytest.raises(ValueError, match="a keras.Model source is trained as it is"):
        transfer.finetune(model, "digits", run_dir=runs, dropout=0.5)


# --- the run lifecycle: resume, strategies ------------------------------------------

FINETUNE_ARGS = [
    "--head-epochs",
    "3",
    "--finetune-epochs",
    "3",
    "--unfreeze",
    "stage3",
    "--batch-size",
    "128",
    "--augment",
    "rotate:0.05",
    "--deterministic",
    "--checkpoint-every",
    "1",
]


def finetune_cli(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "finetune", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def uninterrupted_finetune(pretrained, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    proc = finetune_cli(
        str(pretrained), *FINETUNE_ARGS, "--run-dir", str(root), cwd=root
    )
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return next(root.iterdir())


@pytest.mark.parametrize(
    "kill_after", [1, 4], ids=["in-head-phase", "in-finetune-phase"]
)
def test_finetune_resume_after_sigkill_equals_an_uninterrupted_run(
    pretrained, uninterrupted_finetune, kill_after, tmp_path
):
    """Killed in either phase, `zoo finetune --resume` ends with the same weights,
    history and phases as a run that was never interrupted."""
    proc = finetune_cli(
        str(pretrained), *FINETUNE_ARGS, "--run-dir", str(tmp_path), "--name", "cut",
        cwd=tmp_path,
    )  # fmt: skip
    progress = tmp_path / "cut" / "checkpoints" / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (
            progress.exists()
            and json.loads(progress.read_text())["epoch"] >= kill_after
        ):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(progress.read_text())["epoch"]
    assert kill_after <= done < 6, "the kill must land mid-training"
    assert not (tmp_path / "cut" / "metrics.json").exists()

    resumed = finetune_cli("--resume", str(tmp_path / "cut"), cwd=tmp_path)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    history = pd.read_csv(tmp_path / "cut" / "history.csv")
    full = pd.read_csv(uninterrupted_finetune / "history.csv")
    assert list(history["phase"]) == ["head"] * 3 + ["finetune"] * 3
    np.testing.assert_allclose(history["loss"], full["loss"], rtol=1e-6)
    for name in ("last.keras", "best.keras"):
        a = zoo.load_model(tmp_path / "cut" / name).get_weights()
        b = zoo.load_model(uninterrupted_finetune / name).get_weights()
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), name


def test_finetune_resume_refuses_other_settings(uninterrupted_finetune, tmp_path):
    with pytest.raises(ValueError, match=r"already finished \(6 of 6 epochs"):
        transfer.finetune(resume=uninterrupted_finetune)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(uninterrupted_finetune, unfinished)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(ValueError, match="conflict with the run's transfer.json: "
                       "finetune_learning_rate=0.01 .run has 0.0001."):  # fmt: skip
        transfer.finetune(resume=unfinished, finetune_lr=0.01)
    with pytest.raises(ValueError, match="conflict with the run's config: batch_size"):
        transfer.finetune(resume=unfinished, batch_size=32)
    with pytest.raises(ValueError, match="is a `zoo train` run; resume it with zoo"):
        transfer.finetune(resume=_train_run(tmp_path))


def _train_run(root):
    return training.train(
        "mlp", "digits", epochs=1, run_dir=str(root), verbose=0
    ).run_dir


def test_finetune_with_mixed_precision(pretrained, tmp_path):
    result = transfer.finetune(
        pretrained, "digits", head_epochs=1, finetune_epochs=1, unfreeze_top="stage3",
        mixed_precision="mixed_bfloat16", batch_size=128, run_dir=str(tmp_path),
        verbose=0,
    )  # fmt: skip
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored
    policies = {la.name: la.dtype_policy.name for la in result.model.layers}
    assert policies["predictions"] == "float32"  # outputs stay float32
    assert policies["stage3_block1_conv1"] == "mixed_bfloat16"  # the backbone too
    assert result.model(np.zeros((2, 8, 8, 1), "float32")).dtype == "float32"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert (
        config["mixed_precision"] == "mixed_bfloat16" and result.metrics["epochs"] == 2
    )


def test_finetune_with_a_mirrored_strategy_on_two_logical_cpus(pretrained, tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from zoo import transfer
        r = transfer.finetune({str(pretrained)!r}, "digits", head_epochs=2,
                              finetune_epochs=2, unfreeze_top="stage3",
                              strategy="mirrored", batch_size=128,
                              run_dir={str(tmp_path)!r}, name="m", verbose=0)
        print("RESULT", r.metrics["replicas"], r.metrics["epochs"],
              r.metrics["best_phase"], r.metrics["test_accuracy"])
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    _, replicas, epochs, best_phase, accuracy = (
        out.stdout.strip().splitlines()[-1].split()
    )
    assert (int(replicas), int(epochs)) == (2, 4)
    assert best_phase in transfer.PHASES and 0 <= float(accuracy) <= 1
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["strategy"] == "mirrored"


# --- keras.applications --------------------------------------------------------------


def test_application_weights_file_round_trip_and_nested_freeze(tmp_path):
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    base.save_weights(tmp_path / "mobilenetv2.weights.h5")
    model = transfer.from_keras_application(
        "MobileNetV2",
        weights=tmp_path / "mobilenetv2.weights.h5",
        num_classes=4,
        input_shape=(32, 32, 3),
    )
    loaded = model.get_layer(base.name)
    pairs = zip(base.get_weights(), loaded.get_weights(), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    head = 1280 * 4 + 4
    assert transfer.trainable_params(transfer.freeze(model)) == head
    # block_16: 1x1 160->960, depthwise 3x3x960, 1x1 960->320; then Conv_1 320->1280
    block_16, conv_1 = 160 * 960 + 9 * 960 + 960 * 320, 320 * 1280
    transfer.unfreeze(model, "block_16")
    assert transfer.trainable_params(model) == head + block_16 + conv_1 == 884_164
    # a transferred model transfers again: the old head (and its dropout) goes
    again = transfer.from_pretrained(transfer.from_pretrained(model, 3, dropout=0.5), 7)
    assert [la.name for la in again.layers[-2:]] == [base.name, "predictions"]


def test_application_preprocessing_matches_preprocess_input():
    rng = np.random.default_rng(0)
    images = rng.random((2, 32, 32, 3), dtype=np.float32)
    for name, module in [
        ("VGG16", keras.applications.vgg16),  # caffe: BGR, mean subtracted
        ("MobileNetV2", keras.applications.mobilenet_v2),  # tf: [-1, 1]
    ]:
        model = transfer.from_keras_application(
            name, weights=None, num_classes=2, input_shape=(32, 32, 3)
        )
        pre = keras.Model(model.inputs, model.get_layer("preprocess").output)
        expected = module.preprocess_input(images * 255)
        np.testing.assert_allclose(pre.predict(images, verbose=0), expected, atol=1e-3)


def test_application_bad_input(tmp_path, monkeypatch, recwarn):
    other = keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    other.save_weights(tmp_path / "mobilenet.weights.h5")
    args = {"num_classes": 2, "input_shape": (32, 32, 3)}
    with pytest.raises(
        ValueError,
        match="does not fit MobileNetV2 without its classifier top.*weights=None",
    ):
        transfer.from_keras_application(
            "MobileNetV2", weights=tmp_path / "mobilenet.weights.h5", **args
        )
    with pytest.raises(ValueError, match="weights file .*missing.h5' does not exist"):
        transfer.from_keras_application(
            "MobileNetV2", weights=tmp_path / "missing.h5", **args
        )
    with pytest.raises(ValueError, match="Did you mean ResNet50"):
        transfer.from_keras_application("ResNet5O", weights=None, **args)
    with pytest.raises(ValueError, match=r"take RGB images.*--channels 3"):
        transfer.from_keras_application(
            "MobileNetV2", weights=None, num_classes=2, input_shape=(32, 32, 1)
        )

    from keras.src.utils import file_utils

    def offline(fname, origin, **kwargs):  # what keras.utils.get_file raises offline
        raise Exception(
            f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not "
            "known"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(
        ValueError,
        match=r"cannot download the ImageNet weights of "
        r"MobileNetV2 .*weights='/path/to/mobilenet_v2_.*no_top\.h5'",
    ):
        recwarn.clear()
        transfer.from_keras_application("MobileNetV2", weights="imagenet", **args)
    # Keras's warning on the 32x32 input is dropped with the failure: one line.
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.slow
def test_finetune_a_keras_application_from_a_weights_file(tmp_path):
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    base.save_weights(tmp_path / "w.weights.h5")
    result = transfer.finetune(
        "keras:MobileNetV2",
        "digits",
        weights=str(tmp_path / "w.weights.h5"),
        image_size=32,
        head_epochs=1,
        finetune_epochs=1,
        unfreeze_top="block_16",
        batch_size=128,
        run_dir=str(tmp_path / "runs"),
        export=str(tmp_path / "served"),
        verbose=0,
    )
    assert result.metrics["finetune_trainable_params"] == 10 * 1281 + 469_440 + 409_600
    assert result.export_dir is not None and result.export_dir.name == "1"
    assert json.loads((result.run_dir / "config.json").read_text())["channels"] == 3


# --- command line --------------------------------------------------------------------


def test_cli_finetune_runs_both_phases(pretrained, tmp_path, capsys):
    code = cli.main(
        [
            "finetune",
            str(pretrained),
            "--dataset",
            "digits",
            "--head-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--unfreeze",
            "stage3",
            "--finetune-lr",
            "1e-4",
            "--no-keep-batch-norm-frozen",
            "--batch-size",
            "128",
            "--run-dir",
            str(tmp_path),
            "--name",
            "cli",
        ]
    )
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    source = zoo.load_model(pretrained)
    trained = zoo.load_model(tmp_path / "cli" / "last.keras")
    bn = "stage3_block2_conv1_bn"  # unfrozen: batch statistics now update
    assert not same(weights_of(source, bn), weights_of(trained, bn))
    bn = "stage2_block2_conv1_bn"
    assert same(weights_of(source, bn), weights_of(trained, bn))
    settings = json.loads((tmp_path / "cli" / "transfer.json").read_text())
    assert settings["keep_batch_norm_frozen"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/run"], "cannot use 'no/such/run' as a pretrained model"),
        (["PRETRAINED", "--unfreeze", "stage9"], r"stage3\)"),
        (["keras:ResNet5O"], "Did you mean ResNet50"),
        (["PRETRAINED", "--head-epochs", "-1"], "head_epochs must be an int >= 0"),
        (["PRETRAINED", "--finetune-lr", "0"], r"finetune_lr \(--finetune-lr\)"),
        (
            ["keras:MobileNetV2", "--weights", "none", "--image-size", "16"],
            r"MobileNetV2 cannot take input_shape=\(16, 16, 3\).*--image-size",
        ),
        (
            ["PRETRAINED", "--name", "taken"],
            "'.*taken' already exists; resume it with zoo finetune --resume",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(pretrained, tmp_path, capsys, args, message):
    args = [str(pretrained) if a == "PRETRAINED" else a for a in args]
    (tmp_path / "taken").mkdir()
    code = cli.main(["finetune", *args, "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("zoo finetune: error: ") and err.count("\n") == 1
    assert re.search(message, err)


# --- the demo: MNIST 0-4 -> 5-9 ------------------------------------------------------


def bench_module():
    path = ROOT / "benchmarks" / "bench_transfer.py"
    spec = importlib.util.spec_from_file_location("bench_transfer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# The benchmark in miniature (docs/transfer.md, "The test in miniature"): a half-width
# resnet20 at 16x16, pretrained on the real MNIST digits 0-4 (10 epochs, cosine from
# lr 3e-3, augmented), learns 5-9 from 18 labelled images per class: 3 train and 15
# validation, so that picking the best epoch (75 validation images) is steady. Every
# method sees the same images and augmentation, trains 25 epochs at batch 5 and keeps
# its best epoch by validation accuracy. Scratch's learning rate, 1e-2, was chosen on
# validation accuracy (against 3e-3 and 3e-2, seeds 0-4); head and fine-tune use the
# benchmark's rates (1e-2, then 1e-3 with batch norm frozen, the Keras guide's rule).
MINIATURE = {
    "per_class": 18,
    "val_fraction": 5 / 6,
    "small": {"image_size": 16, "model_args": {"width": 0.5}},
    "pretrain": {"schedule": "cosine", "learning_rate": 3e-3, "deterministic": True},
    "pretrain_epochs": 10,
    "compare": {
        "scratch_epochs": 25,
        "scratch_lr": 1e-2,
        "head_epochs": 10,
        "head_lr": 1e-2,
        "finetune_epochs": 15,
        "variants": {
            "fine-tune": {"finetune_lr": 1e-3, "keep_batch_norm_frozen": True}
        },
        "batch_size": 5,
        "deterministic": True,  # one outcome per seed: no flaky margins
    },
}


def run_miniature(root, seed):
    """The benchmark in miniature for one data seed: metrics per method (scratch,
    head only, fine-tune) and the run directories of the 5-9 runs, in that order."""
    bench = bench_module()
    pretrain_source, dataset = bench.make_datasets(
        root / "data", MINIATURE["per_class"], seed=seed
    )
    runs = root / "runs"
    run = bench.pretrain(
        "resnet20",
        pretrain_source,
        runs,
        MINIATURE["pretrain_epochs"],
        augment=bench.AUGMENT,
        **MINIATURE["pretrain"],
        **MINIATURE["small"],
    )
    metrics = bench.compare(
        "resnet20",
        run,
        dataset,
        seed,
        runs,
        augment=bench.AUGMENT,
        val_fraction=MINIATURE["val_fraction"],
        scratch_options=MINIATURE["small"],
        **MINIATURE["compare"],
    )
    return metrics, sorted(runs.glob("*digits5-9*"))


@pytest.mark.slow  # about 2 minutes on an idle 2-core CPU, 3+ when shared
def test_benchmark_in_miniature_is_fair_and_fine_tuning_beats_scratch(tmp_path):
    """The benchmark in miniature (see MINIATURE): with 3 labelled training images
    per class of 5-9, head + fine-tune beats the tuned scratch run and the head
    alone by at least 10 points each. Every run is deterministic, so the outcome
    is one per seed (2026-11-30: seed 0 scratch 0.420, head 0.573, fine-tune
    0.795, i.e. +37.5 and +22.2 points; seed 1 +20.5 and +33.7). Before, the runs
    varied: seed 0 gave +29-39 and +17-29 in 5 runs, and once +9.6 over a lucky
    scratch run (0.685), which failed this test."""
    bench = bench_module()
    metrics, run_dirs = run_miniature(tmp_path, seed=0)
    labels = bench.sources.read_idx(
        tmp_path / "data" / "digits5-9-seed0" / "train-labels-idx1-ubyte.gz", 0x801
    )
    assert np.bincount(labels).tolist() == [18] * 5  # 5-9 relabelled 0-4
    # Fair: the same labelled images, split, augmentation and epochs for everyone.
    configs = [json.loads((d / "config.json").read_text()) for d in run_dirs]
    sizes = [json.loads((d / "dataset.json").read_text())["sizes"] for d in run_dirs]
    assert [c["model"] for c in configs] == [
        "resnet20",
        "resnet20_transfer",
        "resnet20_transfer",
    ]
    assert all(c["augment"] == bench.AUGMENT.split(",") for c in configs)
    assert all(s["train"] == 15 and s["val"] == 75 for s in sizes)
    assert [c["epochs"] for c in configs] == [25, 10, 25]
    accuracy = {name: m["test_accuracy"] for name, m in metrics.items()}
    assert accuracy["fine-tune"] >= accuracy["scratch"] + 0.10
    assert accuracy["fine-tune"] >= accuracy["head only"] + 0.10
    # Both learn (chance: 0.2; scratch on seed 0: 0.42).
    assert min(accuracy["fine-tune"], accuracy["scratch"]) >= 0.35
    assert metrics["fine-tune"]["best_phase"] == "finetune"
