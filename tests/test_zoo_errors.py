"""Bad input to the zoo: one clear ValueError naming what was received and allowed."""

import os
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


@pytest.mark.parametrize(
    "name, kwargs, own",
    [
        ("dcgan", {"discriminator_units": [8]}, "label_smoothing, latent_dim"),
        ("aae", {"kernel_size": 5}, "discriminator_units, dropout, filters"),
        ("autoencoder", {"filters": [8]}, "hidden_units, kernel_initializer"),
        ("conv_autoencoder", {"hidden_units": [8]}, "dropout, filters, kernel_init"),
    ],
)
def test_a_variant_refuses_its_familys_other_options(name, kwargs, own):
    """One builder serves each family's variants: a variant lists and takes only
    its own options (an ignored option would train a model the user did not
    ask for)."""
    (key,) = kwargs
    with pytest.raises(ValueError) as err:
        zoo.build(name, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{name} does not take {key}; allowed: ")
    assert own in message and key not in message.split("allowed: ")[1]


def test_unknown_model_lists_close_matches():
    with pytest.raises(
        ValueError,
        match=r"unknown model 'resnet19'\. Did you mean "
        r"resnet18, .*\? Available: aae, alexnet, autoencoder, ",
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


# --- quiet TensorFlow, one line per data problem (issue 18) -----------------------


def env_without_tf_log_level(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **extra}


@pytest.mark.parametrize("package", ["zoo", "data_pipelines", "tuning"])
def test_importing_a_package_quiets_tensorflow_cpp_logs(package):
    code = (
        f"import os, {package}, tensorflow as tf\n"
        "tf.config.list_physical_devices()\n"  # where 'failed call to cuInit' logs
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_without_tf_log_level(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
    assert not [line for line in out.stderr.splitlines() if line.startswith("E0")]


def test_the_users_tf_log_level_wins():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, zoo; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_without_tf_log_level(TF_CPP_MIN_LOG_LEVEL="1"),
    )
    assert out.stdout.strip() == "1"


def write_pngs(folder, n, value):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", (8, 8), value + i).save(folder / f"{i}.png")


def test_cli_deterministic_run_with_unreadable_files_prints_one_warning(tmp_path):
    data = tmp_path / "data"
    write_pngs(data / "dark", 12, 10)
    write_pngs(data / "light", 12, 200)
    for i in range(3):
        (data / "light" / f"broken{i}.png").write_bytes(b"not a png")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.cli",
            "train",
            "mlp",
            "--dataset",
            f"folder:{data}",
            "--epochs",
            "1",
            "--deterministic",
            "--augment",
            "flip",
            "--run-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_without_tf_log_level(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"zoo train: warning: folder source '{data}': skipped 3 unreadable files, "
        "e.g. light/broken0.png: cannot identify image file"
    ]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished one-epoch mlp run on digits, to evaluate on other datasets."""
    root = tmp_path_factory.mktemp("runs")
    from zoo import cli

    code = cli.main(
        [
            "train",
            "mlp",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--run-dir",
            str(root),
            "--name",
            "r",
        ]
    )
    assert code == 0
    return root / "r"


def zoo_main(*args, capsys):
    from zoo import cli

    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def one_line_error(out, message):
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [message]


def test_cli_evaluate_on_an_empty_csv_is_one_line(digits_run, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    out = zoo_main(
        "evaluate",
        digits_run,
        "--dataset",
        f"csv:{tmp_path / 'empty.csv'}",
        capsys=capsys,
    )
    one_line_error(
        out,
        f"zoo evaluate: error: csv source '{tmp_path / 'empty.csv'}' is empty (no "
        "header line); expected a header line of column names, then one line per "
        "sample",
    )


def test_cli_evaluate_on_a_folder_without_images_is_one_line(
    digits_run, tmp_path, capsys
):
    """Like `--dataset folder:/tmp`: subfolders, files, but no image."""
    (tmp_path / "pytest-of-root").mkdir()
    (tmp_path / "tfds").mkdir()
    (tmp_path / "tfds" / "log.txt").write_text("a log")
    out = zoo_main(
        "evaluate", digits_run, "--dataset", f"folder:{tmp_path}", capsys=capsys
    )
    one_line_error(
        out,
        f"zoo evaluate: error: folder source '{tmp_path}' has no readable image in "
        "class folders 'pytest-of-root', 'tfds' (1 unreadable files, e.g. "
        "tfds/log.txt: cannot identify image file); expected DIR/CLASS_NAME/IMAGE "
        "files",
    )


def write_table(path, n=120):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    size = rng.normal(50, 10, n).round(4)
    pd.DataFrame(
        {
            "size": size,
            "kind": np.array(["a", "b"])[np.arange(n) % 2],
            "price": (2 * size + 1).round(4),
        }
    ).to_csv(path, index=False)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            [],
            "zoo train: error: csv source '{file}' needs a label column: pass "
            "--label-column NAME (label_column=) with one of its columns: size, "
            "kind, price",
        ),
        (
            ["--label-column", "price"],
            "zoo train: error: csv source '{file}': label column 'price' holds 120 "
            "distinct numbers (e.g. {examples}), which looks like a regression "
            "target, not classes; pass --task regression (regression=True), or name "
            "a column of classes with --label-column; columns: size, kind, price",
        ),
    ],
)
def test_cli_csv_label_problems_are_one_line(tmp_path, capsys, flags, message):
    import pandas as pd

    file = tmp_path / "t.csv"
    write_table(file)
    examples = ", ".join(f"{v:g}" for v in pd.read_csv(file)["price"][:3])
    out = zoo_main(
        "train",
        "mlp",
        "--dataset",
        f"csv:{file}",
        *flags,
        "--run-dir",
        tmp_path / "runs",
        capsys=capsys,
    )
    one_line_error(out, message.format(file=file, examples=examples))


def test_cli_tfds_offline_is_one_line_in_seconds(tmp_path, capsys, monkeypatch):
    import socket
    import time

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    start = time.monotonic()
    out = zoo_main(
        "train",
        "lenet5",
        "--dataset",
        "tfds:mnist",
        "--data-dir",
        data_dir,
        "--epochs",
        "1",
        "--run-dir",
        tmp_path / "runs",
        capsys=capsys,
    )
    assert time.monotonic() - start < 20
    one_line_error(
        out,
        f"zoo train: error: TFDS dataset 'mnist' is not prepared in data_dir "
        f"{data_dir} and cannot be downloaded (storage.googleapis.com:443: Temporary "
        "failure in name resolution). On a connected machine run `python3 -c "
        "\"import tensorflow_datasets as tfds; tfds.builder('mnist')"
        '.download_and_prepare()"` (or `tfds build mnist`), then copy '
        f"~/tensorflow_datasets/mnist into {data_dir}, or pass the folder that "
        "holds it with --data-dir (data_dir=).",
    )
    assert list(data_dir.iterdir()) == []
