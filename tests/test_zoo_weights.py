"""keras.applications weight files into zoo models (zoo.load_weights): ResNets with
the conv biases folded into batch norm, VGG as is, both file formats, headless
models, the ImageNet preprocessing inside, and one line for each misfit."""

import json
import shutil

import h5py
import keras
import numpy as np
import pytest

import zoo
from zoo import cli, transfer
from zoo.weights import REFERENCES

APPS = {name: ref.application for name, ref in REFERENCES.items()}


def randomize(model, seed=0):
    """Random conv/dense biases and batch-norm statistics (Keras starts them at
    0 and 1, which would hide a wrong folding) on top of the random kernels."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.2, c),
                    rng.normal(0, 0.2, c),
                    rng.uniform(0.5, 2.0, c),
                ]
            )
        elif isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    return model


def save(model, path, fmt):
    """`fmt` "keras3": save_weights (.weights.h5); "legacy": the layout of the
    ImageNet downloads (root layer_names / weight_names), as Keras 2 wrote it."""
    if fmt == "keras3":
        model.save_weights(path)
        return path
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [la.name.encode() for la in model.layers]
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, value in zip(names, layer.get_weights(), strict=True):
                group.create_dataset(name, data=value)
    return path


def application(name, top, side, weights=None):
    app = getattr(keras.applications, APPS[name])
    model = app(
        weights=None,
        include_top=top,
        input_shape=(side, side, 3),
        classifier_activation=None,
    )
    if weights is not None:
        model.load_weights(weights)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weight files written on demand, once: (name, top, fmt, side) -> path. The
    side matters only to a VGG top (224 by default)."""
    root, made = tmp_path_factory.mktemp("weights"), {}

    def get(name, top=True, fmt="keras3", side=None):
        side = side or (224 if top and name.startswith("vgg") else 64)
        key = (name, top, fmt, side)
        if key not in made:
            model = randomize(application(name, top, side))
            suffix = ".weights.h5" if fmt == "keras3" else ".h5"
            stem = f"{name}_{'top' if top else 'notop'}_{side}_{fmt}"
            made[key] = save(model, root / f"{stem}{suffix}", fmt)
            del model
            keras.backend.clear_session()
        return made[key]

    return get


def scale_free_difference(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def cases():
    """Every model at 224 and 64, with and without top, in both formats (one of
    them per case). Not slow: ResNet-50 at 64 and once at 224, VGG16 without top
    at 64."""
    quick = {("resnet50", 224, True), ("resnet50", 64, True), ("resnet50", 64, False)}
    quick.add(("vgg16", 64, False))
    found = []
    for i, (name, side, top) in enumerate(
        (n, s, t) for n in REFERENCES for s in (224, 64) for t in (True, False)
    ):
        fmt = ("keras3", "legacy")[(i // 2 + i) % 2]  # both formats, both tops
        marks = [] if (name, side, top) in quick else [pytest.mark.slow]
        found.append(pytest.param(name, side, top, fmt, marks=marks))
    return found


@pytest.mark.parametrize(("name", "side", "top", "fmt"), cases())
def test_converted_weights_reproduce_keras_applications(files, name, side, top, fmt):
    path = files(name, top, fmt, side=side if top and name.startswith("vgg") else None)
    reference = application(name, top, side, path)
    model = zoo.build(
        name,
        input_shape=(side, side, 3),
        include_top=top,
        classifier_activation=None,
        dropout=0.0,
    )
    loaded = zoo.load_weights(model, path)
    assert (loaded.application, loaded.include_top) == (APPS[name], top)
    assert loaded.format == {"keras3": "Keras 3", "legacy": "legacy HDF5"}[fmt]
    pixels = np.random.default_rng(1).uniform(0, 255, (2, side, side, 3))
    x = keras.applications.imagenet_utils.preprocess_input(
        pixels.astype("float32"), mode="caffe"
    )
    difference = scale_free_difference(model(x), reference(x))
    print(f"{name} {side}x{side} top={top} {fmt}: {difference:.2e}")
    assert difference <= 1e-5


def test_a_top_file_loads_into_a_headless_model_and_the_reverse(files):
    full = application("resnet50", True, 64, files("resnet50", True))
    reference = keras.Model(full.input, full.get_layer("conv5_block3_out").output)
    headless = zoo.build("resnet50", input_shape=(64, 64, 3), include_top=False)
    assert not zoo.load_weights(headless, files("resnet50", True)).include_top
    x = np.random.default_rng(2).normal(0, 50, (1, 64, 64, 3)).astype("float32")
    assert scale_free_difference(headless(x), reference(x)) <= 1e-5
    with_top = zoo.build("resnet50", input_shape=(64, 64, 3), num_classes=10)
    before = with_top.get_layer("predictions").get_weights()
    zoo.load_weights(with_top, files("resnet50", False))  # the top stays as built
    after = with_top.get_layer("predictions").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_build_with_weights_preprocesses_images_in_0_1(files):
    path = files("resnet50", False)
    model = zoo.build(
        "resnet50", input_shape=(64, 64, 3), include_top=False, weights=path
    )
    assert model.get_layer("preprocess").mode == "caffe"
    reference = application("resnet50", False, 64, path)
    images = np.random.default_rng(3).random((2, 64, 64, 3), dtype=np.float32)
    expected = reference(keras.applications.resnet.preprocess_input(images * 255))
    assert scale_free_difference(model(images), expected) <= 1e-5


def test_vgg_batch_norm_and_resnet_v1_5_are_refused(files):
    with pytest.raises(ValueError, match="variant v1.5 .* Build it with variant='v1'"):
        zoo.load_weights(
            zoo.build("resnet50", input_shape=(64, 64, 3), variant="v1.5"),
            files("resnet50", False),
        )
    with pytest.raises(ValueError, match=r"layer block1_conv1_bn: the file has no"):
        zoo.load_weights(
            zoo.build(
                "vgg16", input_shape=(64, 64, 3), include_top=False, batch_norm=True
            ),
            files("vgg16", False),
        )


def cli_error(capsys, *args):
    code = cli.main(["build", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("zoo build: error: ") and err.count("\n") == 1, err
    return err


def test_bad_weight_files_are_one_line_and_exit_2(files, tmp_path, capsys):
    out = ["--out", str(tmp_path / "m.keras"), "--input-shape", "64,64,3"]
    resnet = str(files("resnet50", True))
    err = cli_error(capsys, "resnet101", "--weights", resnet, *out)
    assert "(ResNet50 weights) does not fit resnet101 (ResNet101): layer " in err
    assert "stage3_block7_conv1: the file has no conv4_block7_1_conv" in err
    err = cli_error(
        capsys, "resnet50", "--weights", resnet, "--num-classes", "10", *out
    )
    assert "layer predictions: the file has 1000 classes, the model 10" in err
    # a VGG top fixes the input size: a file of 32x32 inputs into a 64x64 model
    vgg = str(files("vgg16", True, side=32))
    err = cli_error(capsys, "vgg16", "--weights", vgg, *out)
    assert "the file's is for 32x32 inputs, the model's for 64x64" in err
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(files("resnet50", False).read_bytes()[:100_000])
    err = cli_error(capsys, "resnet50", "--weights", str(truncated), *out)
    assert f"cannot read weights file '{truncated}'" in err and "truncated" in err
    err = cli_error(capsys, "resnet50", "--model-arg", "variant=v2", *out)
    assert "resnet50 has no variant 'v2'; allowed: v1, v1.5." in err
    err = cli_error(capsys, "resnet50", "--weights", str(tmp_path / "none.h5"), *out)
    assert "does not exist" in err
    err = cli_error(capsys, "lenet5", "--weights", resnet, "--out", "x.keras")
    assert "lenet5 has no keras.applications weights to load" in err
    assert not (tmp_path / "m.keras").exists()


def test_zoo_build_writes_a_converted_model_that_plain_keras_loads(files, tmp_path):
    path = tmp_path / "resnet50.keras"
    args = ["--input-shape", "64,64,3", "--model-arg", "include_top=false"]
    weights = str(files("resnet50", False, "legacy"))
    assert (
        cli.main(["build", "resnet50", "--weights", weights, "--out", str(path), *args])
        == 0
    )
    again = keras.saving.load_model(path)
    reference = application("resnet50", False, 64, weights)
    images = np.random.default_rng(4).random((1, 64, 64, 3), dtype=np.float32)
    expected = reference(keras.applications.resnet.preprocess_input(images * 255))
    assert scale_free_difference(again(images), expected) <= 1e-5


@pytest.mark.slow
def test_finetune_a_converted_resnet50_and_export(files, tmp_path):
    """The docs/transfer.md demo in miniature: converted weights, both phases,
    the ImageNet preprocessing inside the verified export."""
    weights = str(files("resnet50", False))
    result = transfer.finetune(
        "resnet50",
        "digits",
        weights=weights,
        image_size=32,
        head_epochs=1,
        finetune_epochs=1,
        unfreeze_top="stage4",
        batch_size=128,
        run_dir=str(tmp_path / "runs"),
        export=str(tmp_path / "served"),
        verbose=0,
    )
    saved = json.loads((result.run_dir / "transfer.json").read_text())
    assert (saved["source"], saved["weights"]) == ("resnet50", weights)
    assert result.model.get_layer("preprocess").mode == "caffe"
    assert result.export_dir is not None and result.export_dir.name == "1"
    shutil.rmtree(tmp_path / "runs")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "m.keras"}, "'m.keras' brings its own. Drop --weights."),
        ({"normalize": True}, "drop --normalize"),
        ({"channels": 1}, "weights take RGB images"),
    ],
)
def test_train_weights_refuse_what_does_not_apply(options, message):
    from zoo.config import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"model": "resnet50", "weights": "w.h5", **options})


@pytest.mark.slow
def test_zoo_train_starts_from_converted_weights(files, tmp_path, capsys):
    weights = str(files("resnet50", False))
    code = cli.main(
        ["train", "resnet50", "--weights", weights, "--dataset", "digits"]
        + ["--image-size", "32", "--epochs", "1", "--batch-size", "128"]
        + ["--run-dir", str(tmp_path), "--name", "r"]
    )
    assert code == 0, capsys.readouterr().err
    assert (
        json.loads((tmp_path / "r" / "config.json").read_text())["weights"] == weights
    )
    model = zoo.load_model(tmp_path / "r" / "best.keras")
    assert model.get_layer("preprocess").mode == "caffe"
