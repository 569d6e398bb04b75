"""describe(): parameters, FLOPs and receptive fields against hand-computed values."""

import importlib

import pytest

import zoo


def rows(df):
    return df.set_index("name")


def test_lenet5_describe_hand_computed():
    df = rows(zoo.describe(zoo.build("lenet5")))
    rf = df["receptive_field"]
    # conv5: 5; pool2: 5+1=6 (jump 2); conv5: 6+4*2=14; pool2: 14+1*2=16
    assert [
        rf[n] for n in ("block1_conv", "block1_pool", "block2_conv", "block2_pool")
    ] == [5, 6, 14, 16]
    assert df["receptive_field"].isna()["fc1"]
    flops = {
        "block1_conv": 2 * 28 * 28 * 6 * 5 * 5 * 1,
        "block2_conv": 2 * 10 * 10 * 16 * 5 * 5 * 6,
        "fc1": 2 * 400 * 120,
        "fc2": 2 * 120 * 84,
        "predictions": 2 * 84 * 10,
    }
    for name, value in flops.items():
        assert df.loc[name, "flops"] == value
    assert df.attrs["flops"] == sum(flops.values()) == 833_040
    assert df.loc["block2_conv", "params"] == 16 * 6 * 25 + 16
    assert df.loc["block2_pool", "output_shape"] == (None, 5, 5, 16)
    assert df.attrs["trainable_params"] == 61_706


def test_vgg16_describe_hand_computed():
    df = rows(zoo.describe(zoo.build("vgg16")))
    assert df.loc["block5_conv3", "receptive_field"] == 196
    assert df.loc["block5_pool", "receptive_field"] == 212
    assert df.loc["block1_conv2", "receptive_field"] == 5  # L*(k-1)+1 with L=2
    convs = [
        (224, 3, 64),
        (224, 64, 64),
        (112, 64, 128),
        (112, 128, 128),
        (56, 128, 256),
        (56, 256, 256),
        (56, 256, 256),
        (28, 256, 512),
        (28, 512, 512),
        (28, 512, 512),
        (14, 512, 512),
        (14, 512, 512),
        (14, 512, 512),
    ]
    macs = sum(s * s * cout * 9 * cin for s, cin, cout in convs)
    macs += 7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 1000
    assert df.attrs["flops"] == 2 * macs == 30_940_528_640
    assert df.attrs["params"] == 138_357_544


def test_describe_counts_batch_norm_statistics_as_non_trainable():
    df = zoo.describe(zoo.build("resnet20"))
    bn = df[df["type"] == "BatchNormalization"]
    assert (bn["non_trainable_params"] == bn["trainable_params"]).all()
    assert df.attrs["trainable_params"] == 269_722
    assert df.attrs["non_trainable_params"] == 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    # stem 3x3 (rf 3); stage1: 6 convs at jump 1; stage2: 6 at jump 1 then 2 (the
    # strided conv grows by its input jump); stage3: 6 at jump 2 then 4.
    rf = 3 + 6 * 2 + (1 * 2 + 5 * 2 * 2) + (2 * 2 + 5 * 4 * 2)
    assert rows(df).loc["stage3_block3_out", "receptive_field"] == rf == 81


# FLOPs (multiply-adds x 2) and the largest receptive field (px) at the reference
# input of every registered model, and of the variants that change them. ResNet
# v1: 1.814 / 3.858 / 7.570 / 11.282 GMACs and 435 / 483 / 1,027 / 1,507 px
# (torchvision's and the papers' figures); v1.5 strides later: more FLOPs, a
# smaller field.
FLOPS_RF = {
    "mlp": (100_864, None),
    "lenet5": (833_040, 16),
    "alexnet": (1_428_376_960, 195),
    ("alexnet", "paper"): (2_270_512_192, 195),
    "vgg11": (15_218_180_096, 150),
    "vgg13": (22_616_932_352, 156),
    "vgg16": (30_940_528_640, 212),
    "vgg19": (39_264_124_928, 268),
    "googlenet": (3_165_343_744, 715),
    "resnet18": (3_628_146_688, 435),
    "resnet34": (7_327_522_816, 899),
    "resnet50": (7_715_946_496, 483),
    ("resnet50", "v1.5"): (8_178_368_512, 427),
    "resnet101": (15_140_388_864, 1027),
    ("resnet101", "v1.5"): (15_602_810_880, 971),
    "resnet152": (22_564_831_232, 1507),
    ("resnet152", "v1.5"): (23_027_253_248, 1451),
    "resnet20": (81_102_080, 81),
    "resnet32": (137_725_184, 137),
    "resnet44": (194_348_288, 193),
    "resnet56": (250_971_392, 249),
    "resnet110": (505_775_360, 501),
    # 28 steps of x @ W (28 x g*128) and h @ U (128 x g*128), g gates, + 128 x 10
    "rnn": (2 * 28 * 1 * 128 * (28 + 128) + 2 * 1280, None),
    "lstm": (2 * 28 * 4 * 128 * (28 + 128) + 2 * 1280, None),
    "gru": (2 * 28 * 3 * 128 * (28 + 128) + 2 * 1280, None),
    # Dense layers 784-256-128-16 and back; the conv ones: strided convs, the code,
    # transposed convs (2 x input values x taps x filters), the 3x3 output conv
    "autoencoder": (2 * 2 * (784 * 256 + 256 * 128 + 128 * 16), None),
    "conv_autoencoder": (
        2 * (14 * 14 * 32 * 9 + 7 * 7 * 64 * 9 * 32 + 2 * 3136 * 16)
        + 2 * (7 * 7 * 64 * 9 * 64 + 14 * 14 * 64 * 9 * 32 + 28 * 28 * 9 * 32),
        7,
    ),
    "vae": (13_509_888, 7),  # conv_autoencoder + the second 16-unit head
    "aae": (13_444_864, 7),
    "dcgan": (143_290_112, 13),
}
SLOW = {"vgg13", "vgg19", "resnet101", "resnet152", "resnet110"}


def pinned_cases():
    """Every registered model (default variant), and the pinned variants."""
    cases = []
    for name in zoo.list_models():
        module = importlib.import_module(zoo.model_card(name).module)
        variants = [
            v for v in getattr(module, "VARIANTS", ())[1:] if (name, v) in FLOPS_RF
        ]
        for variant in [None, *variants]:
            slow = [pytest.mark.slow] if name in SLOW else []
            cases.append(pytest.param(name, variant, marks=slow))
    return cases


@pytest.mark.parametrize(("name", "variant"), pinned_cases())
def test_flops_and_receptive_field_are_pinned(name, variant):
    kwargs = {} if variant is None else {"variant": variant}
    df = zoo.describe(zoo.build(name, **kwargs))
    field = df["receptive_field"].dropna()
    rf = int(field.max()) if len(field) else None
    key = name if variant is None else (name, variant)
    assert (df.attrs["flops"], rf) == FLOPS_RF[key]


def test_generative_models_are_described_part_by_part():
    vae = zoo.describe(zoo.build("vae"))
    assert vae.attrs["params"] == 228_193 and vae.attrs["input_shape"] == (
        None,
        28,
        28,
        1,
    )
    rows = vae.set_index("name")
    assert rows.loc["encoder/enc_conv1", "receptive_field"] == 3
    assert "sampling" in rows.index
    # a transposed conv: every input value times every tap, for each filter
    assert rows.loc["decoder/dec_deconv1", "flops"] == 2 * 7 * 7 * 64 * 9 * 64
    gan = zoo.describe(zoo.build("dcgan"))
    assert gan.attrs["trainable_params"] == 1_467_970
    assert gan.attrs["input_shape"] == (None, 100)  # the generator's noise
    assert gan["name"].iloc[0] == "generator/dec_dense"
    assert gan["name"].iloc[-1] == "discriminator/real"
