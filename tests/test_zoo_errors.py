"""Bad input to the zoo: one clear ValueError naming what was received and allowed."""

import subprocess
import sys

import pytest

import zoo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"activation": "relux"},
            r"unknown activation 'relux'; allowed: relu, leaky_relu",
        ),
        (
            {"kernel_initializer": "he"},
            r"unknown kernel_initializer 'he'; allowed: he_normal",
        ),
        (
            {"kernel_regularizer": "l3"},
            r"unknown kernel_regularizer 'l3'; allowed: None, l1",
        ),
        ({"kernel_regularizer": "l2:-1"}, r"bad regularization strength in 'l2:-1'"),
        ({"pooling": "mean"}, r"unknown pooling 'mean'; allowed: None, avg, max"),
        ({"dropout": 1.5}, r"dropout must be a rate in \[0, 1\); received 1.5"),
        ({"num_classes": 0}, r"num_classes must be an int >= 1; received 0"),
        (
            {"input_shape": (28, 28)},
            r"lenet5 needs input_shape=\(height, width, channels\)",
        ),
        (
            {"input_shape": (12, 12, 1)},
            r"lenet5 needs inputs of at least 16x16; "
            r"received input_shape=\(12, 12, 1\)",
        ),
        ({"classifier_activation": "softmaxx"}, r"unknown classifier_activation"),
        (
            {"stages": (1, 1)},
            r"lenet5 does not take stages; allowed: activation, batch_norm, classic, ",
        ),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("lenet5", **kwargs)


def test_unknown_model_lists_close_matches():
    with pytest.raises(
        ValueError,
        match=r"unknown model 'resnet19'\. Did you mean "
        r"resnet18, .*\? Available: alexnet, ",
    ):
        zoo.build("resnet19")


@pytest.mark.parametrize(
    "name", ["alexnet", "vgg16", "googlenet", "resnet50", "resnet20"]
)
def test_minimum_input_is_named(name):
    side = zoo.model_card(name).min_input
    zoo.build(name, input_shape=(side, side, 3), num_classes=2)  # the minimum works
    with pytest.raises(
        ValueError, match=f"{name} needs inputs of at least {side}x{side}"
    ):
        zoo.build(name, input_shape=(side - 1, side, 3), num_classes=2)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_help_and_list_do_not_import_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "from zoo.cli import main\n"
        "for argv in (['list'], ['--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = run_cli("list", "vgg*")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == [
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
    ]
    assert "138,357,544" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("info", "resnt18"),
            "zoo info: error: unknown model 'resnt18'. Did you mean resnet18",
        ),
        (
            ("info", "alexnet", "--input-shape", "32,32,3"),
            "zoo info: error: alexnet needs inputs of at least 63x63",
        ),
        (("list", "nothing*"), "zoo list: error: no model matches 'nothing*'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_cli_info_prints_table_with_totals():
    out = run_cli("info", "lenet5")
    assert out.returncode == 0, out.stderr
    assert "lenet5: input (None, 32, 32, 1), 61,706 params" in out.stdout
    assert "block2_pool" in out.stdout and "global" in out.stdout
