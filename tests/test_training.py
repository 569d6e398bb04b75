"""The training app end to end: CLI runs on digits, run files, resume, determinism."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import RUN_FILES

import zoo
from zoo import cli, recipe, runs, training
from zoo.config import TrainConfig

FAST = ["--image-size", "16", "--batch-size", "64"]


def zoo_cli(*args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def zoo_main(*args, capsys):
    """`zoo ...` in this process: bad input fails before training, so the seconds a
    fresh process spends importing TensorFlow would be the whole test."""
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def kill_after(args, run, epochs):
    """Start `zoo <args> --name <run.name>` in a process (cwd: run's parent) and
    SIGKILL it once `epochs` epochs are checkpointed; the run directory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *args, "--name", run.name],
        cwd=run.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        meta = run / "checkpoints" / "progress.json"
        if meta.exists() and json.loads(meta.read_text())["epoch"] >= epochs:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return run


def weights(path):
    return zoo.load_model(path).get_weights()


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real CLI run on digits, shared by the tests that inspect its files."""
    root = tmp_path_factory.mktemp("runs")
    out = zoo_cli(
        "train",
        "lenet5",
        "--dataset",
        "digits",
        *FAST,
        "--epochs",
        "12",
        "--augment",
        "rotate:0.05",
        "--run-dir",
        str(root),
        "--name",
        "run",
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    return root / "run", out


def test_cli_run_reaches_high_accuracy_and_writes_every_file(finished_run):
    run, out = finished_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85  # chance is 0.10
    assert metrics["params"] == 15_626  # LeNet-5 at 16x16x1
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    progress = json.loads((run / "checkpoints" / "progress.json").read_text())
    assert progress["epoch"] == 12 and progress["done"] == [None]
    assert (run / "checkpoints" / progress["weights"]).is_file()
    for split in ("train", "validation"):
        assert list((run / "tensorboard" / split).glob("events.out.tfevents.*"))
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(12))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(
        history
    )
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "lenet5" and config["augment"] == ["rotate:0.05"]
    assert json.loads((run / "dataset.json").read_text())["sizes"] == {
        "train": 1293,
        "val": 144,
        "test": 360,
    }
    for png in ("loss.png", "accuracy.png", "confusion_matrix.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith("lenet5 on digits: test accuracy ")
    assert "15,626 parameters" in summary and str(run) in summary
    assert out.stdout.count("Epoch ") == 12  # one line per epoch without a TTY


def test_cli_evaluate_matches_the_recorded_test_metrics(finished_run):
    run, _ = finished_run
    out = zoo_cli("evaluate", str(run), cwd=run.parent)
    assert out.returncode == 0, out.stderr
    accuracy = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert f"test accuracy {accuracy:.4f}" in out.stdout
    assert "on 360 samples of digits" in out.stdout


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    """Same data order, optimizer state and augmentation draws after the resume."""
    args = [
        "train",
        "lenet5",
        *FAST,
        "--epochs",
        "8",
        "--deterministic",
        "--augment",
        "rotate:0.05,zoom:0.1",
        "--checkpoint-every",
        "1",
        "--run-dir",
        str(tmp_path),
    ]
    assert zoo_cli(*args, "--name", "full", cwd=tmp_path).returncode == 0
    cut = kill_after(args, tmp_path / "cut", epochs=3)
    done = len(pd.read_csv(cut / "history.csv"))
    assert 3 <= done < 8, "the kill must land mid-training"

    out = zoo_cli("train", "--resume", str(cut), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    history = pd.read_csv(cut / "history.csv")
    assert list(history["epoch"]) == list(range(8))  # no repeated, no missing epoch
    full = pd.read_csv(tmp_path / "full" / "history.csv")
    np.testing.assert_allclose(history["loss"], full["loss"], rtol=1e-6)
    assert (
        max_diff(weights(cut / "last.keras"), weights(tmp_path / "full" / "last.keras"))
        == 0.0
    )


def test_same_seed_and_deterministic_give_identical_weights(tmp_path):
    for name in ("a", "b"):
        out = zoo_cli(
            "train",
            "resnet20",
            "--image-size",
            "8",
            "--epochs",
            "2",
            "--augment",
            "flip,zoom:0.1",
            "--dropout",
            "0.2",
            "--seed",
            "3",
            "--deterministic",
            "--run-dir",
            str(tmp_path),
            "--name",
            name,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
    assert (
        max_diff(
            weights(tmp_path / "a" / "last.keras"),
            weights(tmp_path / "b" / "last.keras"),
        )
        == 0.0
    )


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from zoo import cli, training
        r = training.train("lenet5", "digits", image_size=16, epochs=6,
                           strategy="mirrored", run_dir={str(tmp_path)!r}, name="m",
                           verbose=0)
        print("RESULT", r.metrics["replicas"], r.metrics["test_accuracy"])
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    _, replicas, accuracy = out.stdout.strip().splitlines()[-1].split()
    assert int(replicas) == 2
    assert float(accuracy) > 0.6


@pytest.mark.parametrize(
    "options",
    [
        {"mixed_precision": "mixed_bfloat16"},
        {"jit_compile": True},
    ],
)
def test_gpu_options_train_correctly_on_cpu(options, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = training.train(
            "lenet5",
            "digits",
            image_size=16,
            epochs=6,
            run_dir=str(tmp_path),
            verbose=0,
            **options,
        )
    # Keras only warns when it turns jit_compile off (under op determinism).
    assert not [w for w in caught if "jit_compile" in str(w.message)]
    assert result.metrics["test_accuracy"] > 0.6
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored
    x = np.zeros((2, 16, 16, 1), "float32")
    assert result.model(x).dtype == "float32"  # outputs stay float32


def test_a_deterministic_run_leaves_op_determinism_as_it_found_it(tmp_path):
    """--deterministic turns TensorFlow's op determinism on for the run only (a
    failed one too): a notebook's next run is neither slowed by it nor denied
    XLA, which Keras turns off under determinism."""
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    training.train("mlp", "digits", epochs=1, deterministic=True,
                   run_dir=str(tmp_path), name="on", verbose=0)  # fmt: skip
    assert not tf_config.is_op_determinism_enabled()
    with pytest.raises(ValueError, match="does not exist"):
        training.train("mlp", f"idx:{tmp_path / 'none'}", deterministic=True,
                       run_dir=str(tmp_path), verbose=0)  # fmt: skip
    assert not tf_config.is_op_determinism_enabled()
    tf_config.enable_op_determinism()  # the process's own setting is kept
    try:
        training.train("mlp", "digits", epochs=1, deterministic=True,
                       run_dir=str(tmp_path), name="kept", verbose=0)  # fmt: skip
        assert tf_config.is_op_determinism_enabled()
    finally:
        tf_config.disable_op_determinism()


def test_toml_config_supplies_every_flag(tmp_path):
    (tmp_path / "experiment.toml").write_text(
        textwrap.dedent("""
        model = "mlp"
        dataset = "digits"
        epochs = 3
        optimizer = "sgd"
        learning_rate = 0.05
        nesterov = true
        schedule = "cosine"
        warmup_epochs = 1
        label_smoothing = 0.1
        model_args = { hidden_units = [64, 32] }
        name = "from-toml"
    """)
    )
    out = zoo_cli(
        "train",
        "--config",
        "experiment.toml",
        "--epochs",
        "4",
        "--run-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "from-toml" / "config.json").read_text())
    assert (config["model"], config["epochs"], config["optimizer"]) == ("mlp", 4, "sgd")
    assert config["model_args"] == {"hidden_units": [64, 32]}
    history = pd.read_csv(tmp_path / "from-toml" / "history.csv")
    lr = history["learning_rate"].to_numpy()
    assert lr[0] == pytest.approx(0.05, rel=1e-3)  # warm-up reached its target
    assert lr[-1] < lr[1] < lr[0]  # then cosine decay
    model = zoo.load_model(tmp_path / "from-toml" / "best.keras")
    assert [la.units for la in model.layers if isinstance(la, keras.layers.Dense)] == [
        64,
        32,
        10,
    ]


def test_schedules_and_optimizers_by_name():
    config = TrainConfig(
        epochs=10, learning_rate=0.1, schedule="step", step_epochs=3, step_factor=0.5
    )
    lr = recipe.learning_rate(config, steps_per_epoch=10)
    assert [float(lr(s)) for s in (0, 29, 30, 60)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.025]
    )
    warm = recipe.learning_rate(TrainConfig(learning_rate=0.1, warmup_epochs=2), 5)
    assert [float(warm(s)) for s in (0, 4, 9, 10, 50)] == pytest.approx(
        [0.01, 0.05, 0.1, 0.1, 0.1]
    )
    sgd = recipe.make_optimizer(
        TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True), 1
    )
    assert (type(sgd).__name__, sgd.momentum, sgd.nesterov) == ("SGD", 0.8, True)
    for name, cls in [
        ("adam", "Adam"),
        ("adamw", "AdamW"),
        ("rmsprop", "RMSprop"),
        ("adagrad", "Adagrad"),
        ("adadelta", "Adadelta"),
    ]:
        opt = recipe.make_optimizer(TrainConfig(optimizer=name), 1)
        assert type(opt).__name__ == cls
    loss = recipe.make_loss(TrainConfig(label_smoothing=0.1), True)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)


def one_line_error(out, message):
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizer", "adamm"], "unknown optimizer 'adamm'; allowed: sgd, adam"),
        (["--loss", "hinge"], "unknown loss 'hinge'; allowed: crossentropy"),
        (["--schedule", "linear"], "unknown schedule 'linear'; allowed: constant"),
        (["--augment", "rotat:0.1"], "unknown augmentation 'rotat'"),
        (["--image-size", "8"], "lenet5 needs inputs of at least 16x16"),
        (["--lr", "0"], "learning_rate must be > 0"),
        (["--image-size", "0"], "image_size must be an int >= 1 (or [height, width])"),
        (["--name", "../x"], "name='../x' is not a directory name; pass a plain"),
        (["--dataset", "idx:AFILE"], "afile' is a file; pass the directory holding it"),
        (
            ["--deterministic", "--jit-compile"],
            "deterministic and jit_compile cannot be combined: Keras turns XLA off "
            "under TensorFlow's op determinism; drop --jit-compile or --deterministic.",
        ),
    ],
)
def test_cli_bad_training_input(args, message, tmp_path, capsys):
    afile = tmp_path.parent / "afile"  # outside tmp_path, which must stay empty
    afile.write_text("")
    args = [a.replace("AFILE", str(afile)) for a in args]
    out = zoo_main("train", "lenet5", *args, "--run-dir", tmp_path, capsys=capsys)
    one_line_error(out, message)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_model_too_big_for_the_data_names_the_image_size(tmp_path, capsys):
    out = zoo_main("train", "alexnet", "--run-dir", tmp_path, capsys=capsys)
    one_line_error(
        out,
        "alexnet needs inputs of at least 63x63; received "
        "input_shape=(8, 8, 1). Use inputs of 63x63 or larger (--image-size",
    )
    assert "The digits images are 8x8." in out.stderr


def test_cli_bad_config_files_and_run_dirs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text("epochs = [")
    one_line_error(
        zoo_main("train", "--config", "bad.toml", capsys=capsys),
        "cannot parse 'bad.toml' as TOML",
    )
    (tmp_path / "keys.toml").write_text("epoch = 3\n")
    one_line_error(
        zoo_main("train", "--config", "keys.toml", capsys=capsys),
        "unknown key(s) epoch in keys.toml; allowed: model, dataset",
    )
    one_line_error(
        zoo_main("train", "--resume", str(tmp_path), capsys=capsys),
        "is not a run directory (no config.json)",
    )
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TrainConfig(epochs=5).to_dict()))
    one_line_error(
        zoo_main("train", "--resume", str(run), "--seed", "9", capsys=capsys),
        "flags conflict with the run's config: seed=9 (run has 0)",
    )
    one_line_error(
        zoo_main(
            "train",
            "lenet5",
            "--image-size",
            "16",
            "--run-dir",
            str(tmp_path),
            "--name",
            "r",
            capsys=capsys,
        ),
        f"run directory '{run}' already exists",
    )
    one_line_error(
        zoo_main("evaluate", str(tmp_path), capsys=capsys),
        "is not a finished run directory",
    )


def test_nan_loss_in_the_first_epoch_leaves_no_run_directory(tmp_path, capsys):
    args = ["mlp", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "2"]
    out = zoo_main("train", *args, "--run-dir", tmp_path, "--name", "n", capsys=capsys)
    one_line_error(out, "loss became NaN in epoch 1; training stopped. No epoch ended")
    assert not any(tmp_path.iterdir())  # the name is free again


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # The step schedule multiplies the rate by 1e12 after epoch 1: NaN in epoch 2.
    out = zoo_main(
        "train",
        "lenet5",
        *FAST,
        "--epochs",
        "6",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--schedule",
        "step",
        "--step-epochs",
        "1",
        "--step-factor",
        "1e12",
        "--run-dir",
        tmp_path,
        "--name",
        "n",
        capsys=capsys,
    )
    one_line_error(
        out,
        "loss became NaN in epoch 2; training stopped. The last good checkpoint "
        "(epoch 1) is",
    )
    assert "Try a lower learning rate" in out.stderr
    history = pd.read_csv(tmp_path / "n" / "history.csv")
    assert list(history["epoch"]) == [0]
    assert all(np.isfinite(w).all() for w in weights(tmp_path / "n" / "last.keras"))
    meta = json.loads((tmp_path / "n" / "checkpoints" / "progress.json").read_text())
    assert meta["epoch"] == 1  # the NaN epoch was never backed up
    assert not (tmp_path / "n" / "metrics.json").exists()


def test_train_accepts_a_keras_model(tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(10, activation="softmax")(x), name="tiny"
    )
    result = training.train(
        model, "digits", epochs=10, learning_rate=0.01, run_dir=str(tmp_path), verbose=0
    )
    assert result.run_dir.name.endswith("-tiny-digits")
    assert (result.run_dir / "model_init.keras").is_file()
    assert result.metrics["test_accuracy"] > 0.8


# --- regression on CSV -------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    """A CLI regression run: an MLP on scikit-learn's diabetes table (442 patients,
    10 features, disease progression after one year) written as a CSV file."""
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("regression")
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(
        root / "diabetes.csv", index=False
    )
    out = zoo_cli(
        "train", "mlp", "--dataset", "csv:diabetes.csv", "--label-column", "target",
        "--task", "regression", "--model-arg", "hidden_units=[32]", "--dropout",
        "0.2", "--val-fraction", "0.2", "--lr", "3e-3", "--batch-size", "32",
        "--epochs", "40", "--run-dir", str(root), "--name", "run", cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return root, out


def test_cli_regression_mlp_on_csv_beats_the_mean_in_target_units(regression_run):
    from sklearn.metrics import mean_absolute_error
    from sklearn.model_selection import train_test_split

    root, out = regression_run
    run = root / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "regression" and config["loss"] == "mse"
    # The same 20 % test split (random_state=0) as the pipeline, in raw units.
    table = pd.read_csv(root / "diabetes.csv")
    y = table.pop("target").to_numpy()
    y_train, y_test = train_test_split(y, test_size=0.2, random_state=0)
    mean_mae = mean_absolute_error(y_test, np.full_like(y_test, y_train.mean()))
    assert mean_mae == pytest.approx(59.2, abs=0.1)
    assert metrics["test_r2"] > 0.25, metrics  # linear regression: 0.33 here
    assert metrics["test_mae"] < 0.85 * mean_mae, metrics
    assert metrics["test_rmse"] ** 2 == pytest.approx(metrics["test_loss"], rel=1e-4)
    assert "best_val_loss" in metrics and "test_accuracy" not in metrics
    assert f"test MAE {metrics['test_mae']:.4g}" in out.stdout
    for name in ("predictions.png", "loss.png", "mae.png", "best.keras"):
        assert (run / name).is_file(), name
    assert not (run / "confusion_matrix.png").exists()
    history = pd.read_csv(run / "history.csv")
    assert {"mae", "rmse", "val_mae", "val_rmse"} <= set(history.columns)
    # The model predicts in the target's units: its last layer undoes the
    # standardization of the target with the training mean and std.
    model = zoo.load_model(run / "best.keras")
    assert model.layers[-1].name == "target_scale" and model.output_shape == (None, 1)
    info = json.loads((run / "dataset.json").read_text())
    assert info["target"]["mean"] == pytest.approx(y_train.mean(), abs=10)


def test_cli_evaluate_a_regression_run(regression_run):
    root, _ = regression_run
    out = zoo_cli("evaluate", str(root / "run"), cwd=root)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert f"test MAE {metrics['test_mae']:.4g}" in out.stdout
    assert "on 89 samples of csv:diabetes.csv" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--task", "regression"],
            "regression needs numeric targets: a csv source with a numeric label "
            "column, or numpy arrays (x, y); source 'digits' has class labels",
        ),
        (
            ["--task", "regression", "--loss", "crossentropy"],
            "unknown loss 'crossentropy' for regression; allowed: mse, mae, huber.",
        ),
        (
            ["--task", "regression", "--from-logits"],
            "from_logits and label_smoothing apply to classification",
        ),
    ],
)
def test_cli_bad_regression_input(args, message, tmp_path, capsys):
    out = zoo_main("train", "mlp", *args, "--run-dir", tmp_path, capsys=capsys)
    one_line_error(out, message)
    assert not any(tmp_path.iterdir())


def test_regression_losses_by_name():
    for name, cls in [("mse", "MeanSquaredError"), ("mae", "MeanAbsoluteError"),
                      ("huber", "Huber")]:  # fmt: skip
        config = TrainConfig(task="regression", loss=name)
        assert type(recipe.make_loss(config, False)).__name__ == cls
    assert TrainConfig(task="regression").loss == "mse"
    assert TrainConfig().loss == "crossentropy"


def test_cli_flags_are_generated_from_the_config():
    """Every TrainConfig field a command offers has exactly one flag with help text,
    and every flag of train/finetune/tune is a config field or an argument of the
    function the command calls."""
    import inspect

    import tuning
    from zoo import cli, config, transfer

    commands = cli.build_parser()._subparsers._group_actions[0].choices
    calls = {
        "train": training.train,
        "finetune": transfer.finetune,
        "tune": tuning.search,
    }
    for command, function in calls.items():
        actions = [a for a in commands[command]._actions if a.dest != "help"]
        fields = set(config.options_for(command))
        dests = [a.dest for a in actions]
        assert len(dests) == len(set(dests)), command
        assert fields <= set(dests), (command, fields - set(dests))
        parameters = set(inspect.signature(function).parameters)
        # train's TOML file; tune's export goes to SearchResult.retrain_and_export
        parameters |= {"train": {"config"}, "tune": {"export"}}.get(command, set())
        assert set(dests) - fields <= parameters, (command, set(dests) - fields)
        for action in actions:
            if action.dest in fields:
                assert action.help and action.option_strings, (command, action.dest)
    assert {"activation", "epochs", "task"} <= set(config.options_for("train"))
    assert not {"activation", "epochs"} & set(config.options_for("finetune"))
    assert {"strategy", "mixed_precision", "deterministic"} <= set(
        config.options_for("finetune")
    )


def test_resuming_a_finished_run_keeps_its_models(tmp_path):
    """--resume on a run that already ended fits nothing and rewrites the same
    models and metrics (a kill after the last epoch lands here)."""
    first = training.train(
        "mlp", "digits", epochs=3, run_dir=str(tmp_path), name="r", verbose=0
    )
    before = {n: weights(first.run_dir / n) for n in ("last.keras", "best.keras")}
    (first.run_dir / "metrics.json").unlink()
    progress = json.loads((first.run_dir / "checkpoints" / "progress.json").read_text())
    again = training.train(resume=first.run_dir, verbose=0)
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    # the wall time counts the earlier session's epochs, not only this session
    assert again.metrics["wall_time_s"] > progress["seconds"] > 0
    for name, values in before.items():
        assert max_diff(weights(first.run_dir / name), values) == 0, name
    assert len(again.history) == 3


def test_a_running_run_cannot_be_resumed_twice(tmp_path):
    """The process that runs a run owns it; a second --resume is refused at once,
    and the run is free again once its process stops, even by SIGKILL."""
    run = tmp_path / "busy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "train", "mlp", "--epochs", "500",
         "--run-dir", str(tmp_path), "--name", "busy"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run / "checkpoints" / "progress.json").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    with pytest.raises(ValueError, match=f"is in use by process {proc.pid}; wait"):
        training.train(resume=run, verbose=0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    runs.Run.reopen(run, {})  # free again


def test_checkpoints_are_sized_to_the_epoch(tmp_path, monkeypatch):
    """Short epochs are checkpointed every few epochs (a checkpoint costs about as
    much as one here), `checkpoint_every=1` every epoch; both end with every epoch in
    history.csv and a checkpoint of the last one."""
    saved = []
    save = runs.files.save_weights
    monkeypatch.setattr(
        runs.files, "save_weights", lambda m, p: saved.append(p.name) or save(m, p)
    )
    for name, every in (("sized", None), ("every", 1)):
        saved.clear()
        result = training.train(
            "mlp", "digits", epochs=20, checkpoint_every=every, run_dir=str(tmp_path),
            name=name, verbose=0,
        )  # fmt: skip
        epochs = [n for n in saved if n.startswith("epoch-")]
        assert saved[-1] == "end-20.weights.h5" and len(result.history) == 20
        if every:
            assert len(epochs) == 20
        else:
            assert epochs[0] == "epoch-0001.weights.h5" and len(epochs) < 10, saved


def test_cli_usage_errors_are_one_line_naming_the_command(capsys):
    for args, message in [
        (["finetune", "x", "--activation", "relu"],
         "zoo finetune: error: unrecognized arguments: --activation relu; see zoo "
         "finetune --help"),
        (["train", "--strategy", "foo"],
         "zoo train: error: argument --strategy: invalid choice: 'foo' (choose from "
         "'mirrored', 'multi-worker'); see zoo train --help"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli.main(args)
        assert exit_.value.code == 2
        assert capsys.readouterr().err == message + "\n"


def test_a_failed_run_removes_the_run_dir_parents_it_made(tmp_path, capsys):
    parent = tmp_path / "new" / "runs"
    out = zoo_main("train", "alexnet", "--run-dir", parent, capsys=capsys)
    one_line_error(out, "alexnet needs inputs of at least 63x63")
    assert not any(tmp_path.iterdir())


def test_interrupted_run_names_the_directory_to_resume(tmp_path, capsys, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_fit_phases", interrupt)
    code = cli.main(["train", "mlp", "--run-dir", str(tmp_path), "--name", "r"])
    err = capsys.readouterr().err
    assert code == 130
    hint = f"continue it with zoo train --resume {tmp_path / 'r'}"
    assert err == f"zoo train: interrupted; {hint}\n"


def test_atomic_writes_do_not_follow_a_planted_symlink(tmp_path):
    """Temporary files get random names and are created exclusively: a symlink at
    the old predictable name (`.metrics.tmp.json`) cannot redirect a write."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (tmp_path / ".metrics.tmp.json").symlink_to(victim)
    (tmp_path / ".metrics.json.tmp").symlink_to(victim)
    runs.files.write_json(tmp_path / "metrics.json", {"a": 1})
    assert victim.read_text() == "untouched"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}
    assert not (tmp_path / "metrics.json").is_symlink()
    (tmp_path / "plain.txt").write_text("")  # the mode the umask gives new files
    mode = (tmp_path / "plain.txt").stat().st_mode
    assert (tmp_path / "metrics.json").stat().st_mode == mode


def test_finished_run_is_not_resumed_or_rewritten(finished_run, capsys):
    run, _ = finished_run
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*.*")}
    out = zoo_main("train", "--resume", run, capsys=capsys)
    one_line_error(out, "already finished (12 of 12 epochs, metrics.json written)")
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*.*")}
    assert after == before  # not one file touched, .lock included


def test_a_larger_epochs_trains_a_finished_run_on(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    out = zoo_main("train", "--resume", run, "--epochs", 12, capsys=capsys)
    one_line_error(out, "already finished (12 of 12 epochs, metrics.json written)")
    out = zoo_main("train", "--resume", run, "--epochs", 11, capsys=capsys)
    one_line_error(out, "flags conflict with the run's config: epochs=11 (run has 12)")
    out = zoo_main("train", "--resume", run, "--epochs", 14, capsys=capsys)
    assert out.returncode == 0, out.stderr
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(14))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 14
    assert json.loads((run / "config.json").read_text())["epochs"] == 14
    progress = json.loads((run / "checkpoints" / "progress.json").read_text())
    assert progress["epoch"] == 14 and progress["done"] == [None]


def test_the_name_of_a_run_in_progress_is_not_offered_for_resume(tmp_path, capsys):
    run = tmp_path / "runs" / "busy"
    run.mkdir(parents=True)
    held = runs.files.lock(run / ".lock", "unused")  # as a training process holds it
    out = zoo_main(
        "train", "--run-dir", tmp_path / "runs", "--name", "busy", capsys=capsys
    )
    held.close()
    one_line_error(
        out,
        f"run directory '{run}' already exists and process {os.getpid()} is "
        "training it; pick another --name.",
    )


def test_a_keras_file_that_does_not_fit_the_data_is_refused(
    finished_run, tmp_path, capsys
):
    model = finished_run[0] / "best.keras"  # lenet5 at 16x16x1
    out = zoo_main("train", model, "--run-dir", tmp_path / "runs", capsys=capsys)
    one_line_error(
        out,
        "lenet5 takes inputs of shape (16, 16, 1) but digits gives (8, 8, 1); "
        "pass --image-size 16 --channels 1.",
    )
    assert not any(tmp_path.iterdir())


def test_a_run_checkpointed_by_an_earlier_zoo_is_not_restarted(tmp_path, capsys):
    """Runs checkpointed with Keras' BackupAndRestore (before progress.json) would
    silently start over; they are refused instead."""
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(TrainConfig(epochs=5).to_dict()))
    (run / "checkpoints" / "training_metadata.json").write_text('{"epoch": 2}')
    out = zoo_main("train", "--resume", run, capsys=capsys)
    one_line_error(out, "was checkpointed by an earlier zoo (Keras BackupAndRestore")
    assert sorted(p.name for p in run.rglob("*")) == [
        "checkpoints", "config.json", "training_metadata.json"
    ]  # fmt: skip


# --- damaged run files and full disks ----------------------------------------------


def _no_temp_files(folder):
    return not [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_full_disk_during_a_checkpoint_keeps_the_last_one(
    tmp_path, capsys, monkeypatch
):
    """ENOSPC in the middle of a checkpoint: one line naming the file, the previous
    checkpoint stays valid, and the resumed run equals an uninterrupted one (even
    with history.csv truncated meanwhile: it is rewritten from progress.json)."""
    args = ["train", "mlp", "--epochs", "4", "--checkpoint-every", "1",
            "--deterministic", "--run-dir", tmp_path]  # fmt: skip
    assert zoo_main(*args, "--name", "full", capsys=capsys).returncode == 0
    save = keras.Model.save_weights
    calls = []

    def full_disk(model, path, *a, **k):
        calls.append(path)
        if len(calls) < 3:
            return save(model, path, *a, **k)
        with open(path, "wb") as half_written:
            half_written.write(b"\x89HDF\r\n\x1a\n" + bytes(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    cut = tmp_path / "cut"
    out = zoo_main(*args, "--name", "cut", capsys=capsys)
    one_line_error(
        out,
        f"zoo train: error: cannot write '{cut}/checkpoints/epoch-0003.weights.h5': "
        "No space left on device. Free some space, then continue the run from its "
        f"last checkpoint: zoo train --resume {cut}.",
    )
    progress = json.loads((cut / "checkpoints" / "progress.json").read_text())
    assert progress["epoch"] == 2 and progress["weights"] == "epoch-0002.weights.h5"
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == [
        "epoch-0002.weights.h5", "progress.json"
    ]  # fmt: skip
    monkeypatch.undo()
    (cut / "history.csv").write_text("epoch,accuracy\n0,0.1")  # damaged meanwhile
    assert zoo_main("train", "--resume", cut, capsys=capsys).returncode == 0
    history = pd.read_csv(cut / "history.csv")
    full = pd.read_csv(tmp_path / "full" / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(history["loss"], full["loss"], rtol=1e-6)
    last = [weights(r / "last.keras") for r in (cut, tmp_path / "full")]
    assert max_diff(*last) == 0.0
    assert _no_temp_files(cut)


def test_a_full_tmpfs_refuses_the_weights_file_instead_of_crashing(tmp_path):
    """HDF5 crashes the process (SIGSEGV) when the disk fills while it writes a
    weights file; the space is checked first, on a real nearly full tmpfs."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        model = zoo.build("lenet5", input_shape=(16, 16, 1), num_classes=10)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(np.zeros((4, 16, 16, 1)), np.zeros(4), verbose=0)
        runs.files.save_weights(model, small / "a.weights.h5")  # 233 KB fits
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        (small / "fill").write_bytes(bytes(free - 100_000))
        with pytest.raises(OSError) as raised:
            runs.files.save_weights(model, small / "b.weights.h5")
        assert raised.value.errno == errno.ENOSPC
        assert raised.value.filename == str(small / "b.weights.h5")
        assert sorted(p.name for p in small.iterdir()) == ["a.weights.h5", "fill"]
        model.load_weights(small / "a.weights.h5")  # the previous file is intact
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory):
    """A run with two checkpointed epochs and no metrics.json (as after a kill)."""
    root = tmp_path_factory.mktemp("unfinished")
    result = training.train("mlp", "digits", epochs=2, checkpoint_every=1,
                            run_dir=str(root), name="r", verbose=0)  # fmt: skip
    (result.run_dir / "metrics.json").unlink()
    return result.run_dir


def _progress(update):
    def damage(path):
        progress = json.loads(path.read_text())
        progress.update(update)
        path.write_text(json.dumps(progress))

    return damage


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("checkpoints/progress.json", lambda p: p.write_text('{"epoch": 2, "ro'),
         "'{file}' is damaged: not valid JSON (Unterminated string starting at: "
         "line 1 column 14 (char 13)). Restore it from a copy."),
        ("checkpoints/progress.json", _progress({"rows": []}),
         "'{file}' is damaged: 0 history rows for 2 finished epochs; the run cannot "
         "be resumed from it. Restore the checkpoints/ folder from a copy, or start "
         "a new run."),
        ("checkpoints/progress.json", _progress({"epoch": "2"}),
         "'{file}' is damaged: epoch is '2', not a count of epochs;"),
        ("checkpoints/{weights}", lambda p: p.unlink(),
         "'{run}/checkpoints/progress.json' is damaged: its weights checkpoint "
         "'{weights}' is missing;"),
        ("checkpoints/{best}", lambda p: p.unlink(),
         "'{run}/checkpoints/progress.json' is damaged: its best checkpoint "
         "'{best}' is missing;"),
        ("checkpoints/{weights}", lambda p: p.write_bytes(p.read_bytes()[:3000]),
         "cannot load the checkpoint '{file}': "),
        ("dataset.json", lambda p: p.unlink(),
         "run directory '{run}' has no dataset.json (the input size, preprocessing "
         "and classes of its data), so it cannot be resumed faithfully."),
        ("config.json", lambda p: p.write_text("{"),
         "'{file}' is damaged: not valid JSON (Expecting property name"),
    ],
)  # fmt: skip
def test_damaged_files_of_a_run_to_resume_are_one_line(
    name, damage, message, unfinished_run, tmp_path, capsys
):
    run = tmp_path / "r"
    shutil.copytree(unfinished_run, run)
    files = json.loads((run / "checkpoints" / "progress.json").read_text())
    assert files["weights"] != files["best"]  # end-2.weights.h5, epoch-0002...
    name = name.format(**files)
    damage(run / name)
    before = _contents(run)
    out = zoo_main("train", "--resume", run, capsys=capsys)
    expected = message.format(file=run / name, run=run, **files)
    one_line_error(out, f"zoo train: error: {expected}")
    assert _contents(run) == before  # nothing trained, nothing rewritten


def _contents(run):
    return {
        p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"
    }
