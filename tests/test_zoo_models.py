"""Every registered model: builds, shapes, exact counts, save/load, training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo

MODELS = zoo.list_models()
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
}
SLOW = {"resnet101", "resnet152", "resnet110", "vgg19", "vgg13"}


def small_shape(name):
    side = max(zoo.model_card(name).min_input, 8)
    return (side, side, 3)


def trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def test_registry_lists_every_family():
    assert MODELS == sorted(MODELS)
    assert set(EXPECTED_PARAMS) == set(MODELS)
    assert zoo.list_models("resnet1*") == [
        "resnet101",
        "resnet110",
        "resnet152",
        "resnet18",
    ]
    assert zoo.list_models("vgg*") == ["vgg11", "vgg13", "vgg16", "vgg19"]


@pytest.mark.parametrize("name", MODELS)
def test_reference_parameter_count_is_exact(name):
    card = zoo.model_card(name)
    model = zoo.build(name)  # reference input and classes
    assert tuple(model.input.shape[1:]) == card.reference_input
    assert trainable(model) == EXPECTED_PARAMS[name] == card.reference_params
    del model


@pytest.mark.parametrize("name", params(MODELS))
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


@pytest.mark.parametrize("name", params(MODELS))
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


def test_knobs_reach_every_layer():
    model = zoo.build(
        "mlp",
        input_shape=(64,),
        hidden_units=(32, 16, 8),
        activation="gelu",
        kernel_initializer="glorot_uniform",
        kernel_regularizer="l1_l2:1e-3",
        dropout=0.25,
        batch_norm=True,
    )
    dense = [la for la in model.layers if isinstance(la, keras.layers.Dense)]
    assert [d.units for d in dense] == [32, 16, 8, 10]
    assert all(
        isinstance(d.kernel_initializer, keras.initializers.GlorotUniform)
        for d in dense
    )
    assert all(
        d.kernel_regularizer.get_config() == {"l1": 1e-3, "l2": 1e-3} for d in dense
    )
    kinds = [type(la).__name__ for la in model.layers]
    assert kinds.count("Dropout") == 3 and kinds.count("BatchNormalization") == 3
    assert len(model.losses) == 4  # one regularization term per Dense kernel


def test_vgg_batch_norm_option():
    model = zoo.build("vgg11", input_shape=(32, 32, 3), batch_norm=True)
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) == 8 + 2  # one per conv and per hidden fc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_vgg_accepts_keras_applications_weights_layer_by_layer(name):
    ref = getattr(keras.applications, name.upper())(weights=None)
    ours = zoo.build(name, dropout=0.0)
    with_weights = [la for la in ref.layers if la.weights]
    for layer in with_weights:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    assert len(with_weights) == len([la for la in ours.layers if la.weights])
    x = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32) * 255
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-4, atol=1e-6)
