"""describe(): parameters, FLOPs and receptive fields against hand-computed values."""

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
