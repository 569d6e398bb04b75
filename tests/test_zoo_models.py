"""Every registered model: builds, shapes, exact counts, save/load, training."""

import importlib
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import blocks, generative

MODELS = zoo.list_models()
CLASSIFIERS = [n for n in MODELS if zoo.model_card(n).task == "classification"]
GENERATIVE = [n for n in MODELS if n not in CLASSIFIERS]
# Trainable parameters at the reference configuration, from the papers/torchvision/
# keras.applications (independent of the registry's cards on purpose).
EXPECTED_PARAMS = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "googlenet": 6_998_552,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "mlp": 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10,
    # 28 steps of 28 pixels, 128 units: per gate 128 x (28 + 128) weights and a
    # bias (Keras' GRU, reset_after as cuDNN's, has two), then 128 x 10 + 10
    "rnn": 128 * (28 + 128) + 128 + 1290,
    "lstm": 4 * (128 * (28 + 128) + 128) + 1290,
    "gru": 3 * (128 * (28 + 128) + 2 * 128) + 1290,
    # 28x28x1, code 16. Dense: 784-256-128-16 and back; conv: 3x3 stride-2 convs
    # of 32 and 64 (7x7x64 = 3136 features), a 16-unit code, Dense back to 3136,
    # transposed convs of 64 and 32, a 3x3 conv to one channel. The VAE has two
    # 16-unit heads (mean, log-variance).
    "autoencoder": 2 * (784 * 256 + 256 * 128 + 128 * 16)
    + 256
    + 128
    + 16
    + 128
    + 256
    + 784,
    "conv_autoencoder": 320
    + 18_496
    + (3136 * 16 + 16)
    + (16 * 3136 + 3136)
    + 36_928
    + 18_464
    + 289,
    "vae": 320
    + 18_496
    + 2 * (3136 * 16 + 16)
    + (16 * 3136 + 3136)
    + 36_928
    + 18_464
    + 289,
    # aae: the conv autoencoder's layers with an 8-unit code, and a discriminator
    # 8-256-256-1 on the codes. dcgan: generator 100 -> 7x7x128 -> 5x5 transposed
    # convs of 128 and 64 (no bias, batch norm: 2 weights per channel) -> 3x3 conv
    # to one channel; discriminator: 5x5 stride-2 convs of 64 and 128, one sigmoid.
    "aae": 320
    + 18_496
    + (3136 * 8 + 8)
    + (8 * 3136 + 3136)
    + 36_928
    + 18_464
    + 289
    + (8 * 256 + 256)
    + (256 * 256 + 256)
    + 257,
    "dcgan": 100 * 6272
    + 2 * 6272
    + 25 * 128 * 128
    + 2 * 128
    + 25 * 128 * 64
    + 2 * 64
    + (9 * 64 + 1)
    + (25 * 64 + 64)
    + (25 * 64 * 128 + 128)
    + (6272 + 1),
}
SLOW = {"resnet101", "resnet152", "resnet110", "vgg19", "vgg13"}
# Trainable parameters of every variant other than a family's default: torchvision's
# vgg*_bn; ResNet v1.5 has v1's counts; AlexNet's 2012 widths (96, 256, 384, 384,
# 256); GoogLeNet's LRN and 5x5/3 aux pools have no parameters.
VARIANT_PARAMS = {
    ("vgg11", "torchvision_bn"): 132_868_840,
    ("vgg13", "torchvision_bn"): 133_053_736,
    ("vgg16", "torchvision_bn"): 138_365_992,
    ("vgg19", "torchvision_bn"): 143_678_248,
    **{(n, "v1.5"): EXPECTED_PARAMS[n] for n in MODELS if n.startswith("resnet")},
    ("alexnet", "paper"): 62_378_344,
    ("googlenet", "paper"): 6_998_552,
}


def variants(name):
    """The variants of a model's family (the first is the default), or ()."""
    module = importlib.import_module(zoo.model_card(name).module)
    return getattr(module, "VARIANTS", ())


VARIANT_CASES = [(n, v) for n in MODELS for v in variants(n)[1:]]


def small_shape(name):
    if name in GENERATIVE:  # gray images whose sides halve twice
        return (8, 8, 1)
    side = max(zoo.model_card(name).min_input, 8)
    return (side, side, 3)


def trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def test_registry_lists_every_family():
    assert set(EXPECTED_PARAMS) == set(MODELS)
    assert zoo.list_models("resnet1*") == [  # natural order, not text order
        "resnet18",
        "resnet101",
        "resnet110",
        "resnet152",
    ]
    assert zoo.list_models("resnet*")[:3] == ["resnet18", "resnet20", "resnet32"]
    assert zoo.list_models("vgg*") == ["vgg11", "vgg13", "vgg16", "vgg19"]


@pytest.mark.parametrize("name", MODELS)
def test_reference_parameter_count_is_exact(name):
    card = zoo.model_card(name)
    model = zoo.build(name)  # reference input and classes
    # A GAN subclass has no single input: its images are its generator's output.
    maker = generative.image_maker(model) if card.task != "classification" else None
    shape = maker.output_shape[1:] if maker is not None else model.input.shape[1:]
    assert tuple(shape) == card.reference_input
    assert trainable(model) == EXPECTED_PARAMS[name] == card.reference_params
    del model


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        pytest.param(*c, marks=pytest.mark.slow) if c[0] in SLOW else c
        for c in VARIANT_CASES
    ],
)
def test_variant_parameter_count_is_exact(name, variant):
    model = zoo.build(name, variant=variant)
    assert trainable(model) == VARIANT_PARAMS[name, variant]
    small = zoo.build(
        name, input_shape=small_shape(name), num_classes=3, variant=variant
    )
    assert small.output.shape == (None, 3)


def test_every_variant_is_counted():
    assert set(VARIANT_PARAMS) == set(VARIANT_CASES)


@pytest.mark.parametrize("name", MODELS)
def test_a_variant_the_family_does_not_have_is_refused(name):
    if not variants(name):
        match = f"{name} does not take variant"
    else:
        match = f"{name} has no variant 'v9'; allowed: {', '.join(variants(name))}."
    with pytest.raises(ValueError, match=match):
        zoo.build(name, input_shape=small_shape(name), variant="v9")


@pytest.mark.parametrize("name", params(CLASSIFIERS))
def test_builds_small_trains_and_round_trips(name, tmp_path):
    shape = small_shape(name)
    model = zoo.build(name, input_shape=shape, num_classes=7, dropout=0.0)
    assert model.output.shape == (None, 7)
    assert model.name == name

    x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    y = np.arange(8) % 7
    # Every weight gets a finite, non-zero gradient. (Whether one SGD step lowers
    # the loss is not a property of the model: an untrained ResNet-152 at 32x32,
    # batch-norm statistics over 8 values per channel, has gradients so large that
    # even lr 1e-6 raises it on some CPUs.)
    with tf.GradientTape() as tape:
        probabilities = model(x, training=True)
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, probabilities)
        )
    grads = tape.gradient(loss, model.trainable_weights)
    dead = [
        w.path
        for w, g in zip(model.trainable_weights, grads, strict=True)
        if g is None or not np.any(g) or not np.all(np.isfinite(g))
    ]
    assert dead == []
    # One optimizer step, eagerly: fit's traced step costs seconds per deep model
    # and tests Keras, not the model.
    before = [np.array(w) for w in model.trainable_weights]
    keras.optimizers.SGD(1e-3).apply(grads, model.trainable_weights)
    after = model.trainable_weights
    assert all(not np.array_equal(a, w) for a, w in zip(before, after, strict=True))

    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(model(x, training=False), again(x, training=False))


@pytest.mark.parametrize("name", GENERATIVE)
def test_generative_builds_small_trains_and_round_trips(name, tmp_path):
    shape = small_shape(name)
    model = zoo.build(name, input_shape=shape)
    task = zoo.model_card(name).task
    x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    if task == "reconstruction":
        assert model(x).shape == x.shape
    # One step of its own training (a GAN's alternating updates) moves every weight.
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=None if task == "generation" else "mse",
    )
    before = [np.array(w) for w in model.trainable_weights]
    model.train_on_batch(x, x)
    after = model.trainable_weights
    assert all(not np.array_equal(a, w) for a, w in zip(before, after, strict=True))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(model(x, training=False), again(x, training=False))


@pytest.mark.parametrize("name", params(CLASSIFIERS))
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_headless_pooled_features_are_2d(name, pooling):
    model = zoo.build(
        name,
        input_shape=small_shape(name),
        num_classes=5,
        include_top=False,
        pooling=pooling,
    )
    assert len(model.output.shape) == 2
    assert "predictions" not in [layer.name for layer in model.layers]


def test_headless_without_pooling_keeps_the_feature_map():
    model = zoo.build("resnet18", input_shape=(64, 64, 3), include_top=False)
    assert model.output.shape == (None, 2, 2, 512)


def test_return_features_exposes_stage_outputs():
    model = zoo.build("resnet18", input_shape=(64, 64, 3), return_features=True)
    shapes = {k: tuple(v.shape) for k, v in model.output.items()}
    assert shapes == {
        "stem": (None, 16, 16, 64),
        "stage1": (None, 16, 16, 64),
        "stage2": (None, 8, 8, 128),
        "stage3": (None, 4, 4, 256),
        "stage4": (None, 2, 2, 512),
    }
    vgg = zoo.build("vgg11", input_shape=(32, 32, 1), return_features=True)
    assert list(vgg.output) == ["block1", "block2", "block3", "block4", "block5"]


def test_logits_and_one_channel_inputs():
    model = zoo.build(
        "resnet20", input_shape=(28, 28, 1), num_classes=10, classifier_activation=None
    )
    x = np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
    out = model.predict(x, verbose=0)
    assert out.shape == (4, 10)
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, not probabilities
    probs = zoo.build("resnet20", input_shape=(28, 28, 1)).predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_lenet_classic_uses_tanh_and_average_pooling():
    model = zoo.build("lenet5", classic=True)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("AveragePooling2D") == 2 and "MaxPooling2D" not in kinds
    acts = {
        layer.get_config()["activation"]
        for layer in model.layers
        if isinstance(layer, keras.layers.Activation)
    }
    assert acts == {"tanh"}
    assert trainable(model) == 61_706


def test_cifar_resnet_shortcuts_are_parameter_free():
    model = zoo.build("resnet20")
    names = [layer.name for layer in model.layers]
    assert "stage2_block1_shortcut_pad" in names
    assert not any(n.endswith("_shortcut") for n in names)
    assert model.get_layer("stage3_block3_out").output.shape == (None, 8, 8, 64)


def test_imagenet_resnet_has_no_conv_bias_before_batch_norm():
    model = zoo.build("resnet50", input_shape=(64, 64, 3))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53  # 49 in the blocks + stem + ... 4 projection shortcuts
    assert not any(c.use_bias for c in convs)


def test_googlenet_aux_heads_are_extra_outputs():
    model = zoo.build("googlenet", aux_heads=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 1000)] * 3
    # each aux head: 1x1 conv 128 (+bias), fc 2048->1024, fc 1024->1000 (Szegedy 2014)
    aux = [c * 128 + 128 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000 for c in (512, 528)]
    assert trainable(model) == 6_998_552 + sum(aux)
    small = zoo.build(
        "googlenet",
        input_shape=(32, 32, 3),
        num_classes=4,
        aux_heads=True,
        batch_norm=True,
    )
    assert [tuple(o.shape) for o in small.outputs] == [(None, 4)] * 3
    assert any(isinstance(la, keras.layers.BatchNormalization) for la in small.layers)


KNOB_MODELS = sorted(
    {zoo.model_card(n).family: n for n in reversed(CLASSIFIERS)}.values()
) + ["resnet20", "resnet50"]  # one per family, and each ResNet block kind


@pytest.mark.parametrize("name", KNOB_MODELS)
def test_knobs_reach_every_layer(name):
    model = zoo.build(
        name,
        input_shape=small_shape(name),
        activation="gelu",
        kernel_initializer="glorot_uniform",
        kernel_regularizer="l1_l2:1e-3",
        dropout=0.25,
        batch_norm=True,
    )
    weighted = [
        la
        for la in model.layers
        if isinstance(la, keras.layers.Conv2D | keras.layers.Dense | keras.layers.RNN)
    ]
    assert all(
        isinstance(la.kernel_initializer, keras.initializers.GlorotUniform)
        for la in weighted
    )
    assert all(
        la.kernel_regularizer.get_config() == {"l1": 1e-3, "l2": 1e-3}
        for la in weighted
    )
    assert len(model.losses) == len(weighted)  # one term per kernel
    acts = {
        la.get_config()["activation"]
        for la in model.layers
        if isinstance(la, keras.layers.Activation | keras.layers.RNN)
    }
    assert acts == {"gelu"}
    hidden = [la for la in weighted if la.name != "predictions"]
    for layer in hidden:  # batch norm after every conv, hidden Dense and RNN layer
        bn = model.get_layer(f"{layer.name}_bn")
        assert isinstance(bn, keras.layers.BatchNormalization)
        # no bias before it, except inside a recurrent cell's nonlinearity
        assert isinstance(layer, keras.layers.RNN) or not layer.use_bias
    # dropout after every hidden Dense or RNN layer; once before the classifier if none
    dense = [
        la for la in hidden if isinstance(la, keras.layers.Dense | keras.layers.RNN)
    ]
    rates = [la.rate for la in model.layers if isinstance(la, keras.layers.Dropout)]
    assert rates == [0.25] * max(len(dense), 1)


@pytest.mark.parametrize(
    ("activation", "side"), [("tanh", 64), ("selu", 38), ("leaky_relu", 64)]
)
def test_resnet_stem_pool_ignores_its_padding(activation, side):
    """Like PyTorch's -inf padding, whatever the activation (zero padding changed
    the border outputs of negative activations)."""
    model = zoo.build("resnet18", input_shape=(side, side, 3), activation=activation)
    probe = keras.Model(
        model.input,
        [model.get_layer("stem_conv_act").output, model.get_layer("stem_pool").output],
    )
    x = np.random.default_rng(0).normal(size=(2, side, side, 3)).astype("float32")
    act, pooled = (np.asarray(t) for t in probe(x))
    padded = np.pad(act, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    n = pooled.shape[1]
    expected = np.array(
        [
            [
                padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
                for j in range(n)
            ]
            for i in range(n)
        ]
    ).transpose(2, 0, 1, 3)
    np.testing.assert_array_equal(pooled, expected)


def test_resnet_v1_5_strides_in_the_3x3():
    for variant, strides in [("v1", ((2, 2), (1, 1))), ("v1.5", ((1, 1), (2, 2)))]:
        model = zoo.build("resnet50", input_shape=(64, 64, 3), variant=variant)
        got = tuple(model.get_layer(f"stage2_block1_conv{i}").strides for i in (1, 2))
        assert got == strides
        assert model.get_layer("stage2_block1_out").output.shape == (None, 8, 8, 512)


def test_alexnet_dropout_and_lrn_by_variant():
    def top(model):
        names = [la.name for la in model.layers]
        return names[names.index("flatten") :]

    # torchvision: dropout before each hidden Dense; the paper (Caffe): after
    assert top(zoo.build("alexnet")) == [
        "flatten", "fc1_dropout", "fc1", "fc1_act",
        "fc2_dropout", "fc2", "fc2_act", "predictions",
    ]  # fmt: skip
    paper = zoo.build("alexnet", variant="paper")
    assert top(paper) == [
        "flatten", "fc1", "fc1_act", "fc1_dropout",
        "fc2", "fc2_act", "fc2_dropout", "predictions",
    ]  # fmt: skip
    lrn = [
        la for la in paper.layers if isinstance(la, blocks.LocalResponseNormalization)
    ]
    assert [la.name for la in lrn] == ["block1_lrn", "block2_lrn"]
    assert paper.get_layer("block5_pool").output.shape == (None, 6, 6, 256)


def test_local_response_normalization_formula():
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 7)).astype("float32")
    layer = blocks.LocalResponseNormalization(2, bias=2.0, alpha=1e-2, beta=0.75)
    square = np.pad(x**2, ((0, 0), (0, 0), (0, 0), (2, 2)))
    window = sum(square[..., i : i + 7] for i in range(5))
    expected = x / (2.0 + 1e-2 * window) ** 0.75
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


def test_googlenet_paper_variant_has_lrn_and_5x5_3_aux_pools():
    model = zoo.build("googlenet", variant="paper", aux_heads=True)
    lrn = [
        la for la in model.layers if isinstance(la, blocks.LocalResponseNormalization)
    ]
    assert [la.name for la in lrn] == ["pool1_lrn", "conv2_lrn"]
    for aux, channels in [("aux1", 512), ("aux2", 528)]:
        pool = model.get_layer(f"{aux}_pool")
        assert isinstance(pool, keras.layers.AveragePooling2D)
        assert (pool.pool_size, pool.strides) == ((5, 5), (3, 3))
        assert pool.output.shape == (None, 4, 4, channels)
    assert trainable(model) == trainable(zoo.build("googlenet", aux_heads=True))
    with pytest.raises(
        ValueError, match="'paper' with aux_heads needs inputs of at least 65x65"
    ):
        zoo.build("googlenet", input_shape=(64, 64, 3), variant="paper", aux_heads=True)


def test_plain_keras_loads_zoo_models_after_import_zoo(tmp_path):
    """Custom layers (and the warm-up schedule) are registered once keras is
    imported after `import zoo`, which itself imports no TensorFlow."""
    from zoo.recipe import Warmup

    zoo.build("resnet20", input_shape=(16, 16, 3)).save(tmp_path / "cifar.keras")
    paper = zoo.build("alexnet", input_shape=(64, 64, 3), variant="paper")
    paper.save(tmp_path / "lrn.keras")
    pre = zoo.build("lenet5", input_shape=(32, 32, 3), preprocessing="caffe")
    pre.compile(
        keras.optimizers.Adam(Warmup(1e-3, 10)), "sparse_categorical_crossentropy"
    )
    pre.save(tmp_path / "preprocessed.keras")
    code = (
        "import pathlib, sys\n"
        "import zoo\n"
        "assert 'keras' not in sys.modules\n"
        "import keras\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.keras')):\n"
        "    keras.saving.load_model(path)\n"
        "    print(path.name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cifar.keras", "lrn.keras", "preprocessed.keras"]


def test_vgg_batch_norm_option():
    model = zoo.build("vgg11", input_shape=(32, 32, 3), batch_norm=True)
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) == 8 + 2  # one per conv and per hidden fc


@pytest.mark.parametrize("name", ["conv_autoencoder", "vae"])
def test_knobs_reach_the_encoder_and_decoder(name):
    model = zoo.build(
        name,
        input_shape=(8, 8, 1),
        activation="gelu",
        kernel_initializer="glorot_uniform",
        kernel_regularizer="l2:1e-3",
        batch_norm=True,
    )
    layers = [la for la in model._flatten_layers() if la is not model]
    weighted = [la for la in layers if hasattr(la, "kernel_initializer")]
    assert len(weighted) == (7 if name == "conv_autoencoder" else 8)
    assert all(
        isinstance(la.kernel_initializer, keras.initializers.GlorotUniform)
        and isinstance(la.kernel_regularizer, keras.regularizers.L2)
        for la in weighted
    )
    acts = [
        la.get_config()["activation"]
        for la in layers
        if type(la).__name__ == "Activation"
    ]
    # every hidden layer: two convs, the decoder's Dense, two transposed convs
    assert acts == ["gelu"] * 5
    norms = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(norms) == 5
