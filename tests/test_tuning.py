"""Tuning: spaces, fixed hyperparameters, real small searches on digits, bad input."""

import contextlib
import io
import json
import os
import pathlib
import shutil
import socket
import sys
import threading
import time

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
from conftest import RUN_FILES

import data_pipelines as dp
import tuning
import zoo
from tuning import distributed, spaces
from tuning import tuner as tuner_module
from tuning.search import IDLE_POLL_SECONDS, ZooTuner
from zoo import cli, files, recipe, training
from zoo.config import TrainConfig

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tuning.md"
QUICK = {"max_trials": 4, "epochs": 3, "seed": 0}
FIXED = {"activation": "tanh", "batch_size": 128}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def mlp_search(tmp_path_factory):
    """One real isolated random search on digits, shared by the tests below."""
    directory = tmp_path_factory.mktemp("search") / "mlp"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = tuning.search("mlp", directory=directory, fixed=FIXED, **QUICK)
    return result, printed.getvalue().splitlines()


# --- spaces ---------------------------------------------------------------------------


def test_mlp_space_units_exist_only_with_their_layer():
    space = spaces.declare(spaces.mlp)
    units = {f"units_{i}" for i in range(1, 7)}
    assert units <= {hp.name for hp in space.space}
    for layers in range(1, 7):
        hp = space.copy()
        hp.values[spaces.NUM_LAYERS] = layers
        hp.ensure_active_values()
        active = {n for n in units if n in hp.values}
        assert active == {f"units_{i}" for i in range(1, layers + 1)}
        assert len(spaces.mlp(hp)["hidden_units"]) == layers


@pytest.mark.parametrize("family", sorted(spaces.SPACES))
def test_every_hyperparameter_is_documented(family):
    text = DOCS.read_text()
    names = {hp.name for hp in spaces.declare(spaces.SPACES[family]).space}
    assert names, family
    assert not {n for n in names if f"`{n}`" not in text}


def test_declare_finds_hyperparameters_declared_only_when_active():
    def branches(hp):  # KerasTuner's pattern: declared only in the active branch
        kind = hp.Choice("kind", ["a", "b", "c"])
        for branch in ("b", "c"):
            with hp.conditional_scope("kind", [branch]):
                if kind == branch:
                    hp.Int(f"{branch}_units", 8, 64)
        return {}

    names = [hp.name for hp in spaces.declare(branches).space]
    assert names == ["kind", "b_units", "c_units"]


def test_fix_pins_values_under_the_same_conditions():
    space = spaces.declare(spaces.mlp)
    fixed = spaces.fix(
        space, {"units_2": 32, "activation": "elu", "batch_norm": "true"}
    )
    by_name = {hp.name: hp for hp in fixed.space}
    assert [hp.name for hp in fixed.space] == [hp.name for hp in space.space]
    assert isinstance(by_name["units_2"], kt.engine.hyperparameters.Fixed)
    assert by_name["units_2"].value == 32 and isinstance(by_name["units_2"].value, int)
    original = next(hp for hp in space.space if hp.name == "units_2")
    assert by_name["units_2"].conditions == original.conditions
    assert by_name["batch_norm"].value is True
    hp = fixed.copy()
    hp.values[spaces.NUM_LAYERS] = 3
    hp.ensure_active_values()
    assert spaces.mlp(hp)["hidden_units"][1] == 32
    assert spaces.mlp(hp)["activation"] == "elu"


@pytest.mark.parametrize(
    ("fixed", "expected"),
    [
        ({"units_1": 100}, "units_1=100: outside its space (one of 16, 32"),
        ({"num_layers": 7}, "num_layers=7: outside its space (an int in [1, 6])"),
        ({"activation": "selu"}, "activation='selu': outside its space (one of relu"),
        ({"learning_rate": 1.0}, "outside its space (a number in [0.0001, 0.1]"),
        ({"batch_norm": "maybe"}, "batch_norm='maybe': outside its space (true or"),
        ({"colour": "red"}, "cannot fix colour: not a hyperparameter of this space"),
    ],
)
def test_fix_outside_the_space_is_refused(fixed, expected):
    with pytest.raises(ValueError, match="cannot fix") as err:
        spaces.fix(spaces.declare(spaces.mlp), fixed)
    assert expected in str(err.value)


@pytest.mark.parametrize("cell", spaces.CELLS)
def test_recurrent_space_builds_the_zoo_model(cell):
    hp = spaces.declare(spaces.recurrent).copy()
    hp.values.update(
        {"cell": cell, "units": 32, "num_layers": 2, "bidirectional": True}
    )
    info = dp.load("digits").info
    maker = tuning.hypermodel("recurrent", info)
    model = maker.build_model(**maker.settings(hp)[0])
    expected = zoo.build(
        cell, input_shape=(8, 8, 1), units=32, layers=2, bidirectional=True
    )
    assert model.name == cell
    assert [la.name for la in model.layers] == [la.name for la in expected.layers]
    assert model.count_params() == expected.count_params()


def test_conv_autoencoder_space_depth_sets_the_filters():
    hp = spaces.declare(spaces.conv_autoencoder).copy()
    for depth, filters in [(1, (16,)), (2, (16, 32))]:
        hp.values.update({"depth": depth, "filters": 16, "code_size": 8})
        chosen = spaces.conv_autoencoder(hp)
        assert (chosen["filters"], chosen["code_size"]) == (filters, 8)
        model = tuning.hypermodel(
            "conv_autoencoder", dp.load("digits").info
        ).build_model(**{k: v for k, v in chosen.items() if k not in spaces.TRAINING})
        encoder = model.get_layer("encoder").layers
        convs = [la.filters for la in encoder if isinstance(la, keras.layers.Conv2D)]
        assert tuple(convs) == filters
        assert model.get_layer("encoder").output.shape == (None, 8)


def test_objective_follows_the_task():
    assert tuning.HYPERMODELS["recurrent"].task == "classification"
    assert (
        tuning.HYPERMODELS["conv_autoencoder"].task
        == zoo.model_card("conv_autoencoder").task
        == "reconstruction"
    )
    with pytest.raises(ValueError) as err:
        tuning.search("conv_autoencoder", objective="val_accuracy")
    assert str(err.value) == (
        "conv_autoencoder has no val_accuracy: its task is reconstruction; allowed "
        "objectives: val_loss, loss (the default is val_loss)."
    )
    with pytest.raises(ValueError, match="conv_autoencoder halves its images up to 2 "
                       "times, so it needs sides that are multiples of 4; received "
                       r"inputs \(6, 6, 1\). Pass --image-size 32"):  # fmt: skip
        tuning.search("conv_autoencoder", image_size=6, isolate=False)


def test_recurrent_and_autoencoder_searches(tmp_path):
    """Real trials: an lstm/gru search scored on val_accuracy, a conv_autoencoder
    search on val_loss (minimized), whose models train on (images, images)."""
    quick = {"max_trials": 2, "epochs": 3, "seed": 0, "isolate": False}
    rnn = tuning.search(
        "recurrent", directory=tmp_path / "rnn", fixed={"units": 32}, **quick
    )
    assert rnn.spec["objective"] == "val_accuracy"
    assert rnn.table["status"].eq("COMPLETED").all()
    assert set(rnn.table["cell"]) <= set(spaces.CELLS)
    assert rnn.table["val_accuracy"].between(0, 1).all()
    ae = tuning.search(
        "conv_autoencoder",
        directory=tmp_path / "ae",
        fixed={"optimizer": "adam", "learning_rate": 1e-3},
        **quick,
    )
    assert ae.spec["objective"] == "val_loss"
    table = ae.table
    assert table["status"].eq("COMPLETED").all() and "val_accuracy" not in table
    assert ae.best_score == table["val_loss"].min()
    # reconstructions beat the mean training image on the validation images
    config = TrainConfig(model="conv_autoencoder", dataset="digits")
    splits = recipe.load_data(config)
    train = np.concatenate([np.asarray(x) for x, _ in splits.train])
    val = np.concatenate([np.asarray(x) for x, _ in splits.val])
    mean_image = float(np.mean((val - train.mean(axis=0)) ** 2))
    assert table["val_mse"].min() < mean_image


# --- a real search --------------------------------------------------------------------


def test_table_has_one_row_per_trial_with_every_column(mlp_search):
    result, lines = mlp_search
    table = result.table
    hp_names = [hp.name for hp in spaces.declare(spaces.mlp).space]
    assert list(table["trial_id"]) == ["0", "1", "2", "3"]
    assert list(table["status"]) == ["COMPLETED"] * 4
    assert list(table["runs"]) == [1] * 4
    assert set(table["worker"]) == {"tuner0"}
    assert list(table.columns[4 : 4 + len(hp_names)]) == hp_names
    for column in ["val_accuracy", "val_loss", "params", "seconds", "train_seconds"]:
        assert table[column].notna().all(), column
    assert (table["val_accuracy"].between(0.05, 1)).all()
    assert (table["epochs"] <= QUICK["epochs"]).all()
    assert (table["params"] > 0).all()
    assert (table["seconds"] >= table["train_seconds"]).all()
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 4
    assert all(
        "COMPLETED: val_accuracy" in line and "best " in line for line in trial_lines
    )


def test_table_has_no_stale_conditional_values(mlp_search):
    table = mlp_search[0].table
    for _, row in table.iterrows():
        for i in range(1, 7):
            assert pd.notna(row[f"units_{i}"]) == (i <= row["num_layers"]), (i, row)
        assert pd.notna(row["regularization"]) == (row["regularizer"] != "none")
    assert table["num_layers"].nunique() > 1  # the check above saw different depths


def test_fixed_hyperparameters_are_honoured(mlp_search):
    table = mlp_search[0].table
    assert set(table["activation"]) == {"tanh"}
    assert set(table["batch_size"]) == {128}


def test_results_are_written_after_every_trial_and_read_back(mlp_search):
    result = mlp_search[0]
    again = tuning.load_results(result.directory)
    pd.testing.assert_frame_equal(again.table, result.table, check_dtype=False)
    assert not [p for p in result.directory.iterdir() if ".tmp" in p.name]
    for name in ("score_by_trial.png", "score_vs_hyperparameters.png"):
        assert (result.directory / name).read_bytes()[:4] == b"\x89PNG"
    best = result.top(1).iloc[0]
    assert best["val_accuracy"] == result.table["val_accuracy"].max()
    assert result.best_trial_id == best["trial_id"]
    assert result.best_hyperparameters["activation"] == "tanh"
    assert "4 trials (4 completed)" in result.summary()


def test_tensorboard_logs_carry_hparams(mlp_search):
    result = mlp_search[0]
    for trial_id in result.table["trial_id"]:
        logs = list((result.directory / "tensorboard" / trial_id).rglob("events.*"))
        assert logs, trial_id
        assert any(b"hparams" in path.read_bytes() for path in logs)


def test_best_model_retrained_and_exported(mlp_search, tmp_path):
    result = mlp_search[0]
    best_epoch = int(result.top(1)["best_epoch"].iloc[0])
    retrained = result.retrain_and_export(tmp_path / "export")
    assert retrained.export_dir == tmp_path / "export" / "1"
    meta = json.loads((retrained.export_dir / "export_meta.json").read_text())
    check = meta["verification"]
    assert check["max_abs_diff"] <= check["tolerance"]
    assert check["top1_agreement"] == 1.0 and check["imported_project"] == []
    assert retrained.metrics["epochs"] == best_epoch == len(retrained.history)
    assert retrained.metrics["trained_on"] == "train+val"
    evaluated = training.evaluate(retrained.run_dir)
    assert evaluated["test_size"] == 360
    assert evaluated["test_accuracy"] == pytest.approx(
        retrained.metrics["test_accuracy"], abs=1e-6
    )
    assert retrained.metrics["test_accuracy"] > 0.5
    # a run like zoo train's: the same files (test_training checks them there)
    run = retrained.run_dir
    assert {p.name for p in run.iterdir()} >= RUN_FILES
    progress = json.loads((run / "checkpoints" / "progress.json").read_text())
    assert progress["epoch"] == best_epoch and progress["done"] == [None]
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == list(range(best_epoch))
    assert list((run / "tensorboard" / "train").glob("events.out.tfevents.*"))


def test_resume_keeps_finished_trials(mlp_search, tmp_path):
    source = mlp_search[0]
    directory = tmp_path / "resumed"
    shutil.copytree(source.directory, directory)
    before = {
        p.parent.name: p.read_bytes()
        for p in (directory / "trials").glob("trial_*/trial.json")
    }
    options = {**QUICK, "max_trials": 5}
    result = tuning.search(
        "mlp", directory=directory, fixed=FIXED, resume=True, **options
    )
    table = result.table
    assert list(table["trial_id"]) == ["0", "1", "2", "3", "4"]
    assert list(table["runs"]) == [1] * 5
    assert table["status"].eq("COMPLETED").all()
    for name, content in before.items():
        assert (directory / "trials" / name / "trial.json").read_bytes() == content
    columns = ["trial_id", "num_layers", "units_1", "val_accuracy"]
    pd.testing.assert_frame_equal(table[columns].head(4), source.table[columns])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"family": "cnn"}, "family='mlp' (received 'cnn')"),
        ({"image_size": 16}, "image_size=None (received 16)"),
        ({"fixed": {"activation": "relu"}}, "the search space"),
        ({"tuner": "bayesian"}, "tuner='random' (received 'bayesian')"),
    ],
)
def test_resume_refuses_a_different_search(mlp_search, change, expected):
    options = {"family": "mlp", "fixed": FIXED, **QUICK, **change}
    with pytest.raises(ValueError, match="holds a different search") as err:
        tuning.search(directory=mlp_search[0].directory, resume=True, **options)
    assert expected in str(err.value)


def test_existing_or_missing_search_directory_is_refused(mlp_search, tmp_path):
    with pytest.raises(ValueError, match="already holds a search .*--resume"):
        tuning.search("mlp", directory=mlp_search[0].directory, fixed=FIXED, **QUICK)
    with pytest.raises(ValueError, match="nothing to resume in .*no search.json"):
        tuning.search("mlp", directory=tmp_path / "empty", resume=True, **QUICK)


# --- failures inside trials -----------------------------------------------------------


def exploding(hp):
    """The mlp space plus a `mode`: a normal trial, one that raises, one with NaNs."""
    settings = spaces.mlp(hp)
    mode = hp.Choice("mode", ["ok", "raise", "nan"])
    if mode == "raise":
        raise RuntimeError("boom while building")
    if mode == "nan":
        settings.update(optimizer="sgd", learning_rate=1e12)
    return settings


def test_failed_and_nan_trials_are_recorded_and_the_search_goes_on(tmp_path):
    pinned = spaces.declare(spaces.mlp).values  # defaults: only `mode` varies
    result = tuning.search(
        "mlp",
        tuner="grid",
        space=exploding,
        fixed=pinned,
        directory=tmp_path / "explode",
        isolate=False,
        **QUICK,
    )
    table = result.table.set_index("mode")
    assert list(result.table["mode"]) == ["ok", "raise", "nan"]
    assert table.loc["ok", "status"] == "COMPLETED"
    assert table.loc["raise", "status"] == "FAILED"
    assert table.loc["raise", "error"] == "RuntimeError: boom while building"
    assert table.loc["nan", "status"] == "FAILED"
    assert table.loc["nan", "error"].startswith("loss became NaN in epoch 1")
    error = tmp_path / "explode" / "trials" / "trial_1" / "error.txt"
    assert "Traceback" in error.read_text()
    assert result.spec["space"] == "test_tuning:exploding"


def test_oversized_models_fail_their_trial(tmp_path):
    result = tuning.search(
        "mlp",
        directory=tmp_path / "small",
        fixed={"num_layers": 1, "units_1": 512},
        max_model_size=10_000,
        max_trials=1,
        epochs=1,
    )
    assert result.table["status"].tolist() == ["FAILED"]
    assert "max_model_size=10,000" in result.table["error"].iloc[0]


# --- command line ---------------------------------------------------------------------


def test_cli_hyperband_continues_trials_and_shows_results(tmp_path, capsys):
    directory = str(tmp_path / "hb")
    code, out, err = run_cli(
        "tune", "mlp", "--tuner", "hyperband", "--max-trials", "4", "--epochs", "3",
        "--directory", directory, "--fix", "batch_size=128", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert sum(line.startswith("trial ") for line in out.splitlines()) == 4
    table = tuning.load_results(directory).table
    assert list(table["tuner/epochs"]) == [1, 1, 1, 3]
    first_round = table.head(3)
    best = first_round.loc[first_round["val_accuracy"].idxmax(), "trial_id"]
    assert table["tuner/trial_id"].iloc[3] == best
    assert table["tuner/initial_epoch"].iloc[3] == 1
    assert table["epochs"].iloc[3] == 3
    checkpoint = tmp_path / "hb" / "trials" / f"trial_{best}" / "checkpoint.weights.h5"
    assert checkpoint.is_file()

    code, out, err = run_cli("tune-results", directory, "--top", "2", capsys=capsys)
    assert code == 0, err
    assert out.splitlines()[0].startswith("mlp on digits, hyperband search in")
    assert len([line for line in out.splitlines() if "COMPLETED" in line]) == 2
    assert out.count("plot: ") == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["tune", "foo"],
            "unknown family 'foo'; allowed: mlp, cnn, resnet, recurrent, "
            "conv_autoencoder.",
        ),
        (["tune", "mlp", "--tuner", "genetic"], "unknown tuner 'genetic'; allowed"),
        (["tune", "mlp", "--objective", "f1"], "unknown objective 'f1'; allowed"),
        (["tune", "mlp", "--max-trials", "0"], "max_trials must be an int >= 1"),
        (["tune", "mlp", "--fix", "units_1=100"], "cannot fix units_1=100"),
        (["tune", "cnn", "--image-size", "4"], "cnn needs images of at least 8x8"),
        (["tune", "mlp", "--distributed", "boss"], "unknown distributed role"),
        (["tune", "mlp", "--distributed", "worker"], "needs a unique --worker-id"),
        (
            ["tune", "mlp", "--distributed", "worker", "--worker-id", "../search"],
            "a worker needs a unique --worker-id: a plain name of letters, digits, "
            "'-' and '_', without 'chief' in it; received '../search'.",
        ),
        (
            ["tune", "mlp", "--distributed", "worker", "--worker-id", "w 1"],
            "received 'w 1'",
        ),
        (
            ["tune", "mlp", "--distributed", "worker", "--worker-id", "w1",
             "--oracle-address", "localhost"],
            "bad oracle address 'localhost'; expected HOST:PORT",
        ),
        (["tune-results", "nowhere"], "'nowhere' is not a search directory"),
        (["tune", "mlp", "--export", "afile/x"], "export path 'afile/x' is inside "
         "the file 'afile'"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err


def test_unreachable_oracle_fails_after_a_bounded_wait(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    started = time.perf_counter()
    with pytest.raises(
        ValueError, match=f"cannot reach the tuning oracle at {address}"
    ):
        tuning.search(
            "mlp",
            directory=tmp_path / "d",
            distributed="worker",
            worker_id="w1",
            oracle_address=address,
            oracle_timeout=1.0,
        )
    assert time.perf_counter() - started < 10


def test_chief_without_workers_stops_after_a_bounded_wait(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match="no worker asked the chief"):
        tuning.search(
            "mlp",
            directory=tmp_path / "d",
            distributed="chief",
            oracle_address=address,
            oracle_timeout=1.0,
            verbose=False,
        )
    with socket.socket() as s:  # the chief's server is gone: the port is free again
        s.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))


class IdleOracle(kt.oracles.RandomSearchOracle):
    """Answers IDLE (another worker's trial must end first) for `idle_for` seconds,
    then STOPPED; counts the requests."""

    def __init__(self, idle_for: float) -> None:
        super().__init__(objective="val_accuracy", max_trials=1)
        self.idle_for = idle_for
        self.requests: list[float] = []

    def create_trial(self, tuner_id):
        self.requests.append(time.monotonic())
        done = self.requests[-1] - self.requests[0] >= self.idle_for
        status = kt.engine.trial.TrialStatus.STOPPED if done else "IDLE"
        return kt.engine.trial.Trial(self.hyperparameters.copy(), status=status)


def test_a_tuner_told_idle_waits_before_asking_again(tmp_path):
    """KerasTuner re-asks an IDLE oracle at once: a busy loop of gRPC calls on a
    distributed worker. ZooTuner asks every IDLE_POLL_SECONDS instead."""
    oracle = IdleOracle(idle_for=1.0)
    tuner = ZooTuner(
        oracle, lambda hp: None, epochs=1, early_stopping=None, max_model_size=None,
        seed=0, isolate=False, verbose=False, directory=str(tmp_path),
    )  # fmt: skip
    tuner.search()
    gaps = [b - a for a, b in zip(oracle.requests, oracle.requests[1:], strict=False)]
    assert IDLE_POLL_SECONDS == 0.5
    assert len(oracle.requests) == 3  # at 0, 0.5 and 1.0 s (thousands without the wait)
    assert all(gap >= 0.5 for gap in gaps)


# --- kills, damaged files, concurrency (issue 18) -------------------------------------

TINY = {"epochs": 1, "seed": 0, "isolate": False, "verbose": True}
TINY_FIXED = {"num_layers": 1, "units_1": 16, "batch_size": 128}


class Killed(BaseException):
    """A SIGKILL at a named write, simulated: nothing of the search catches it."""


def tiny_search(directory, max_trials, **options):
    """A search of 1-epoch trials in this process; the ids of the trials it ran."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = tuning.search(
            "mlp", directory=directory, max_trials=max_trials, fixed=TINY_FIXED,
            **{**TINY, **options},
        )  # fmt: skip
    lines = printed.getvalue().splitlines()
    return result, [line.split()[1] for line in lines if line.startswith("trial ")]


@pytest.mark.parametrize(
    ("target", "rerun"),
    [
        ("trials/oracle.json", []),  # saved while trial 1 is still listed running
        ("results.csv", []),  # written after the oracle, before the tuner's save
        ("trials/trial_1/trial.json", ["1"]),  # its result never reached the disk
    ],
)
def test_a_kill_after_a_trial_ends_never_runs_a_recorded_trial_again(
    tmp_path, monkeypatch, target, rerun
):
    """A kill at the named write (just before its rename: the temporary file is
    complete) when trial 1 has ended; resume runs only what was not recorded."""
    directory = tmp_path / "s"
    replace = os.replace
    trial_1 = directory / "trials" / "trial_1" / "trial.json"
    state = {"killed": False}

    def kill_at_write(src, dst, *args, **kwargs):
        ended = pathlib.Path(src if str(dst) == str(trial_1) else trial_1)
        if (
            not state["killed"]
            and str(dst) == str(directory / target)
            and ended.is_file()
            and '"COMPLETED"' in ended.read_text()
        ):
            state["killed"] = True
            raise Killed(target)
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", kill_at_write)
    with pytest.raises(Killed):
        tiny_search(directory, 3)
    monkeypatch.setattr(os, "replace", replace)
    json.loads((directory / "trials" / "oracle.json").read_text())  # a valid copy
    before = (directory / "trials" / "trial_0" / "trial.json").read_bytes()

    result, ran = tiny_search(directory, 3, resume=True)
    assert ran == [*rerun, "2"]
    table = result.table
    assert list(table["trial_id"]) == ["0", "1", "2"]
    assert table["status"].eq("COMPLETED").all()
    assert list(table["runs"]) == [1, 1, 1]
    assert (directory / "trials" / "trial_0" / "trial.json").read_bytes() == before


@pytest.fixture
def damaged(mlp_search, tmp_path):
    """A copy of the shared search, for a test to damage."""
    directory = tmp_path / "damaged"
    shutil.copytree(mlp_search[0].directory, directory)
    return directory


RESUME = [
    "tune", "mlp", "--max-trials", "5", "--epochs", "3", "--seed", "0",
    "--fix", "activation=tanh", "--fix", "batch_size=128", "--resume",
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "command", "expected"),
    [
        ("trials/oracle.json", "", RESUME,
         "is damaged: not valid JSON (Expecting value: line 1 column 1 (char 0))."),
        ("trials/oracle.json", "{}", RESUME,
         "is damaged: not a KerasTuner oracle state (KeyError: 'ongoing_trials')."),
        ("trials/trial_2/trial.json", '{"trial_id": "2", "hyper', RESUME,
         "is damaged: not valid JSON (Unterminated string starting at"),
        ("trials/trial_2/trial.json", "[1, 2]", RESUME,
         "is damaged: a KerasTuner trial is a JSON object, the file holds a list."),
        ("search.json", "\x00\xff garbage", RESUME, "is damaged: not valid JSON"),
        ("search.json", '{"family": "mlp"}', ["tune-results"],
         "is damaged: it lacks dataset, tuner, objective, epochs, hyperparameters."),
        ("results.csv", 'trial_id,status\n"0,COMPLETED\n', ["tune-results"],
         "is damaged (Error tokenizing data. C error: EOF inside string"),
        ("results.csv", "", ["tune-results"],
         "is damaged (No columns to parse from file). It is written from trials/: "
         "delete it and run the same zoo tune command with --resume to write it "
         "again."),
    ],
)  # fmt: skip
def test_a_damaged_tuning_file_is_one_line_naming_it(
    damaged, capsys, name, content, command, expected
):
    path = damaged / name
    path.write_text(content)

    def state():
        found = damaged.rglob("*")
        return {p: p.read_bytes() for p in found if p.suffix in (".json", ".csv")}

    before = state()
    args = [*command, "--directory", str(damaged)] if command == RESUME else [
        *command, str(damaged)]  # fmt: skip
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"zoo {command[0]}: error: '{path}' ")
    assert expected in err
    assert state() == before  # nothing rewritten


def test_two_searches_on_one_directory_the_second_is_refused(tmp_path, capsys):
    directory = tmp_path / "busy"
    directory.mkdir()
    held = files.lock(directory / ".lock", "held")  # a running zoo tune
    try:
        code, _, err = run_cli(
            "tune", "mlp", "--max-trials", "1", "--epochs", "1", "--in-process",
            "--directory", str(directory), capsys=capsys,
        )  # fmt: skip
    finally:
        held.close()
    assert code == 2
    assert err == (
        f"zoo tune: error: search directory '{directory}' is in use by process "
        f"{os.getpid()} (a zoo tune running there); wait for it to end (or stop it), "
        "or pick another --directory.\n"
    )
    assert not (directory / "search.json").exists()


def test_retrain_never_imports_the_module_search_json_names(
    damaged, tmp_path, monkeypatch
):
    (tmp_path / "evilmod.py").write_text(
        "import pathlib\npathlib.Path('evil-ran').write_text('x')\n"
        "def space(hp):\n    return {}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = json.loads((damaged / "search.json").read_text())
    (damaged / "search.json").write_text(json.dumps({**spec, "space": "evilmod:space"}))
    result = tuning.load_results(damaged)
    with pytest.raises(ValueError) as err:
        result.retrain_and_export(tmp_path / "export")
    assert str(err.value) == (
        "this search used the custom space evilmod:space; zoo does not import a "
        "module that search.json names. Import it yourself and pass it: "
        "load_results(directory, space=...)."
    )
    assert not (tmp_path / "evil-ran").exists() and "evilmod" not in sys.modules
    own = {**spec, "space": "tuning.spaces:mlp"}  # the project's own spaces resolve
    (damaged / "search.json").write_text(json.dumps(own))
    assert tuning.load_results(damaged)._space() is spaces.mlp


def test_hyperband_retrains_a_trial_cut_short_for_the_full_epochs(tmp_path):
    result, ran = tiny_search(tmp_path / "hb", 2, tuner="hyperband", epochs=3)
    table = result.table
    assert ran == ["0", "1"]
    assert list(table["tuner/epochs"]) == [1, 1] and list(table["best_epoch"]) == [1, 1]
    row = table.set_index("trial_id").loc[result.best_trial_id]
    assert tuning.results.retrain_epochs(result.spec, row) == 3
    retrained = result.retrain_and_export(tmp_path / "export")
    assert retrained.metrics["epochs"] == 3 == len(retrained.history)
    full = row.copy()
    full["tuner/epochs"], full["best_epoch"] = 3, 2  # trained out, best at epoch 2
    assert tuning.results.retrain_epochs(result.spec, full) == 2


def test_ctrl_c_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    def interrupted(self, trial, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ZooTuner, "run_trial", interrupted)
    monkeypatch.chdir(tmp_path)
    args = ["tune", "mlp", "--max-trials", "2", "--epochs", "1", "--in-process"]
    code, _, err = run_cli(*args, capsys=capsys)
    assert code == 130
    assert err == (
        "zoo tune: interrupted; continue it with zoo tune mlp --max-trials 2 "
        "--epochs 1 --in-process --directory tuning_runs/mlp_digits --resume\n"
    )
    directory = ["--directory", "tuning_runs/mlp_digits"]
    code, _, again = run_cli(*args, "--resume", *directory, capsys=capsys)
    assert code == 130 and again == err  # neither flag twice


def test_a_worker_reports_to_the_chief_while_its_trial_runs(tmp_path, monkeypatch):
    oracle = kt.oracles.RandomSearchOracle(
        objective="val_accuracy", max_trials=1,
        hyperparameters=spaces.declare(spaces.mlp),
    )  # fmt: skip
    tuner = ZooTuner(
        oracle, None, epochs=1, early_stopping=None, max_model_size=None, seed=0,
        isolate=False, verbose=False, heartbeat=0.1, directory=str(tmp_path),
    )  # fmt: skip
    trial = oracle.create_trial("w1")
    asked = []
    monkeypatch.setattr(oracle, "get_trial", asked.append)
    monkeypatch.setattr(ZooTuner, "_is_worker", lambda self: True)
    monkeypatch.setattr(
        tuner_module.worker, "run", lambda job: time.sleep(0.55) or {"val_accuracy": 1}
    )
    assert tuner.run_trial(trial)["val_accuracy"] == 1
    assert asked[:4] == [trial.trial_id] * 4
    time.sleep(0.3)
    assert len(asked) <= 5  # the reports stop with the trial


def stub(address):
    import grpc
    from keras_tuner.src import protos

    channel = grpc.insecure_channel(address)
    return protos.get_service_grpc().OracleStub(channel), protos.get_service(), channel


def test_the_chief_refuses_bad_and_duplicate_ids_and_gives_up_silent_workers(
    tmp_path,
):
    """A stray message, a second worker "w1", two workers that go silent (killed)
    and one that reports while its long trial runs: the chief fails the silent
    workers' trials after --oracle-timeout and ends when the budget is spent."""
    import grpc

    address = f"127.0.0.1:{free_port()}"
    ended = {}

    def chief():
        try:
            ended["result"] = tuning.search(
                "mlp", directory=tmp_path / "c", distributed="chief", max_trials=3,
                oracle_address=address, oracle_timeout=2.0, verbose=False,
            )  # fmt: skip
        except BaseException as err:  # noqa: BLE001  (reported by the test)
            ended["error"] = err

    thread = threading.Thread(target=chief, daemon=True)
    thread.start()
    oracle, service, channel = stub(address)

    def create(tuner_id):
        request = service.CreateTrialRequest(tuner_id=tuner_id)
        return oracle.CreateTrial(request, wait_for_ready=True, timeout=60).trial

    with pytest.raises(grpc.RpcError) as stray:
        # one stray message from any local process (issue 18's reproduction)
        channel.unary_unary("/keras_tuner.Oracle/CreateTrial")(
            b"", wait_for_ready=True, timeout=60
        )
    assert stray.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "received ''" in stray.value.details()
    assert create("w1").trial_id == "0"
    with pytest.raises(grpc.RpcError) as duplicate:
        create("w1")
    assert duplicate.value.details().startswith(
        "worker id 'w1' is taken: a worker with that id is running trial 0 (last "
        "heard from 0 s ago)."
    )
    assert create("w2").trial_id == "1"
    long = create("w3")
    for _ in range(12):  # 3 s > --oracle-timeout, reporting every 0.25 s
        time.sleep(0.25)
        oracle.GetTrial(service.GetTrialRequest(trial_id=long.trial_id))
    oracle.UpdateTrial(
        service.UpdateTrialRequest(
            trial_id=long.trial_id, metrics={"val_accuracy": 0.5}, step=0
        )
    )
    done = kt.engine.trial.Trial.from_proto(long)
    done.status = "COMPLETED"
    oracle.EndTrial(service.EndTrialRequest(trial=done.to_proto()))
    assert kt.engine.trial.Trial.from_proto(create("w3")).status == "STOPPED"
    thread.join(timeout=30)
    assert not thread.is_alive(), "the chief did not end"
    assert "error" not in ended, ended.get("error")
    table = ended["result"].table
    assert list(table["status"]) == ["FAILED", "FAILED", "COMPLETED"]
    assert list(table["worker"]) == ["w1", "w2", "w3"]
    assert table["error"].iloc[0] == (
        "worker w1 stopped answering the chief for more than 2 s (killed?); its "
        "trial failed."
    )


def port_in_time_wait() -> str:
    """The address of a port as a chief that just ended leaves it: connections in
    TIME_WAIT (its server side closed first)."""
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        connection, _ = server.accept()
        connection.close()  # the server side closes first: TIME_WAIT on the port
        client.close()
    return f"127.0.0.1:{port}"


def test_a_restarted_chief_can_listen_at_once(tmp_path):
    distributed.check_can_listen(port_in_time_wait())  # no "Address already in use"


def test_cli_tunes_an_autoencoder_on_its_task_default_objective(tmp_path, capsys):
    """`zoo tune conv_autoencoder` needs no --objective: val_loss is its default."""
    directory = str(tmp_path / "ae")
    code, out, err = run_cli(
        "tune", "conv_autoencoder", "--max-trials", "1", "--epochs", "1",
        "--directory", directory, capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert tuning.load_results(directory).spec["objective"] == "val_loss"
