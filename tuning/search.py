"""KerasTuner searches over the zoo: `search`, the results table, plots, retraining.

A search directory holds::

    search.json           # what was searched (family, data, tuner, space): resume guard
    results.csv           # one row per trial, rewritten atomically after every trial
    score_by_trial.png    # score per trial with the best so far
    score_vs_hyperparameters.png
    tensorboard/<trial>/  # TensorBoard scalars + HParams dashboard
    trials/               # KerasTuner's own state: oracle.json, trial_<id>/trial.json
    retrained/            # run directory of `retrain_and_export` (zoo evaluate works)

The oracles are KerasTuner's (random, grid, hyperband, bayesian), so are resume
(`overwrite=False`) and distributed tuning (chief/worker over gRPC). Trials run in
fresh child processes (`tuning.worker`) unless `isolate=False`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import io
import json
import math
import os
import pickle
import re
import socket
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import pandas as pd
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning

from tuning import hypermodels, spaces, worker
from zoo import training

TUNERS = {
    "random": kt.oracles.RandomSearchOracle,
    "grid": kt.oracles.GridSearchOracle,
    "hyperband": kt.oracles.HyperbandOracle,
    "bayesian": kt.oracles.BayesianOptimizationOracle,
}
OBJECTIVES = {
    "val_accuracy": "max",
    "val_loss": "min",
    "accuracy": "max",
    "loss": "min",
}
ROLES = ("chief", "worker")
# Seconds a tuner waits before asking again when the oracle answered IDLE.
IDLE_POLL_SECONDS = 0.5
# TrainConfig fields a search takes (the space chooses optimizer, rate, batch size).
DATA_OPTIONS = (
    "image_size",
    "channels",
    "normalize",
    "augment",
    "val_fraction",
    "label_column",
    "data_dir",
    "deterministic",
    "momentum",
    "nesterov",
)
SPEC_FILE = "search.json"
TABLE_FILE = "results.csv"
ERROR_FILE = "error.txt"
PROJECT = "trials"
PLOTS = ("score_by_trial.png", "score_vs_hyperparameters.png")
METRICS = (
    "val_accuracy",
    "val_loss",
    "accuracy",
    "loss",
    "params",
    "epochs",
    "best_epoch",
    "train_seconds",
    "seconds",
)
_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def _choice(what: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}."
        )


# --- the oracle side: per-trial line, results table -----------------------------------


class _Recorder:
    """Where the oracle lives (the search process, or the chief): one line per
    finished trial and the results CSV, rewritten atomically after every trial."""

    def __init__(self, directory: Path, objective: str, verbose: bool) -> None:
        self.directory = directory
        self.objective = objective
        self.verbose = verbose
        self.started = time.perf_counter()

    def trial_ended(self, oracle: kt.Oracle, trial_id: str) -> None:
        table = results_table(oracle, self.directory)
        training.write_atomic(self.directory / TABLE_FILE, table.to_csv(index=False))
        if self.verbose:
            print(self.line(oracle, table.set_index("trial_id").loc[trial_id]))

    def line(self, oracle: kt.Oracle, row: pd.Series) -> str:
        best = oracle.get_best_trials(1)
        best = best[0] if best and best[0].score is not None else None
        names = {hp.name for hp in oracle.hyperparameters.space}
        hps = " ".join(
            f"{k}={_short(v)}" for k, v in row.items() if k in names and not _missing(v)
        )
        result = (
            f"{self.objective} {row[self.objective]:.4f}"
            if row["status"] == "COMPLETED"
            else row["error"]
        )
        best_text = f"best {best.score:.4f} (trial {best.trial_id})" if best else "-"
        return (
            f"trial {row.name} {row['status']}: {result}; {best_text}; "
            f"{_short(row.get('seconds'))} s; elapsed "
            f"{time.perf_counter() - self.started:.0f} s | {hps}"
        )


def _missing(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or (isinstance(value, float) and math.isnan(value))
    )


def _short(value: Any) -> str:
    if _missing(value):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class _RecordingOracle:
    """Mixed into KerasTuner's oracles: records who ran each trial and how often it
    ended (persisted in oracle.json), and tells the recorder when a trial ends."""

    recorder: _Recorder | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers: dict[str, str] = {}
        self.runs: dict[str, int] = {}
        self.last_call = time.monotonic()

    def idle_seconds(self) -> float:
        """Seconds since a tuner last asked for or ended a trial, if none is running."""
        return 0.0 if self.ongoing_trials else time.monotonic() - self.last_call

    @kt.synchronized
    def create_trial(self, tuner_id: str):
        self.last_call = time.monotonic()
        trial = super().create_trial(tuner_id)
        if trial.status == "RUNNING":
            self.workers[trial.trial_id] = tuner_id
        return trial

    @kt.synchronized
    def end_trial(self, trial) -> None:
        self.last_call = time.monotonic()
        self.runs[trial.trial_id] = self.runs.get(trial.trial_id, 0) + 1
        super().end_trial(trial)
        if self.recorder is not None:
            self.recorder.trial_ended(self, trial.trial_id)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "workers": self.workers, "runs": self.runs}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.workers = dict(state.get("workers", {}))
        self.runs = dict(state.get("runs", {}))


@functools.cache
def _recording(oracle_class: type) -> type:
    return type(
        f"Recording{oracle_class.__name__}", (_RecordingOracle, oracle_class), {}
    )


def results_table(oracle: kt.Oracle, directory: str | os.PathLike) -> pd.DataFrame:
    """One row per trial: id, status, worker, runs, every hyperparameter (empty when
    inactive in that trial), Hyperband's `tuner/*` values, the metrics of the best
    epoch, and the error of a failed trial."""
    space = oracle.hyperparameters.space
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        hps = trial.hyperparameters
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": trial.status,
            "worker": getattr(oracle, "workers", {}).get(trial_id),
            "runs": getattr(oracle, "runs", {}).get(trial_id, 0),
        }
        for hp in space:
            if hp.name not in row or row[hp.name] is None:
                row[hp.name] = hps.values.get(hp.name) if hps.is_active(hp) else None
        row.update({k: v for k, v in hps.values.items() if k.startswith("tuner/")})
        row.update(
            {name: trial.metrics.get_best_value(name) for name in trial.metrics.metrics}
        )
        error = Path(directory, PROJECT, f"trial_{trial_id}", ERROR_FILE)
        row["error"] = _last_line(error.read_text()) if error.is_file() else None
        rows.append(row)
    names = [
        "trial_id",
        "status",
        "worker",
        "runs",
        *dict.fromkeys(h.name for h in space),
    ]
    table = _typed(
        pd.DataFrame(rows, columns=None if rows else [*names, "error"]), space
    )
    objective = oracle.objective.name
    if objective not in table:  # no trial has finished
        table[objective] = float("nan")
    metrics = list(dict.fromkeys(m for m in (objective, *METRICS) if m in table))
    others = [c for c in table if c not in (*names, *metrics, "error")]
    return table[[*names, *others, *metrics, "error"]]


def _typed(table: pd.DataFrame, space) -> pd.DataFrame:
    """Integer hyperparameters as nullable ints (empty when inactive), not floats."""
    for hp in space:
        if isinstance(hp, kt.engine.hyperparameters.Int) and hp.name in table:
            table[hp.name] = table[hp.name].astype("Int64")
    return table


def _last_line(text: str) -> str:
    """The exception line of a traceback, without the module path of its class."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    return re.sub(r"^(?:\w+\.)*(?:FailedTrialError: )?", "", last)


# --- the worker side: one trial per child process -------------------------------------


class ZooTuner(kt.Tuner):
    """KerasTuner's Tuner with the trial in `tuning.worker` (a child process unless
    `isolate=False`); returns the best epoch's metrics to the oracle.

    Args:
        oracle: A KerasTuner oracle holding the full space (see `spaces.declare`).
        hypermodel: A `ZooHyperModel`.
        epochs: Epochs per trial (Hyperband sets its own per round).
        early_stopping: Patience in epochs on the objective, or None.
        max_model_size: Trainable parameters above which a trial fails.
        seed: Seed of every trial (weights, shuffling, augmentation).
        isolate: Run each trial in a fresh child process.
        verbose: Print a line per trial on a distributed worker.
        **kwargs: `directory`, `project_name`, ... of `keras_tuner.Tuner`.
    """

    def __init__(
        self,
        oracle: kt.Oracle,
        hypermodel: hypermodels.ZooHyperModel,
        *,
        epochs: int,
        early_stopping: int | None,
        max_model_size: int | None,
        seed: int,
        isolate: bool,
        verbose: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(oracle, hypermodel, **kwargs)
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.max_model_size = max_model_size
        self.seed = seed
        self.isolate = isolate
        self.verbose = verbose
        self.keep_weights = isinstance(oracle, kt.oracles.HyperbandOracle)
        self._asked = False  # asked the oracle for a trial, none started since

    def pre_create_trial(self) -> None:
        """Wait IDLE_POLL_SECONDS when the last request got no trial: the oracle
        answered IDLE (a Hyperband round or grid waits for another worker's trial).
        KerasTuner asks again at once, a busy loop of gRPC calls that takes the CPU
        from the trials still running."""
        if self._asked:
            time.sleep(IDLE_POLL_SECONDS)
        self._asked = True

    def on_trial_begin(self, trial) -> None:
        self._asked = False
        super().on_trial_begin(trial)

    def _populate_initial_space(self) -> None:
        """No-op: the oracle starts with the full space (`spaces.declare`); KerasTuner's
        default builds models in the search process to discover it."""

    def _weights(self, trial_id: str) -> str:
        return os.path.join(self.get_trial_dir(trial_id), "checkpoint.weights.h5")

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        """Train one trial; a failure is written to the trial's error.txt and raised
        as `FailedTrialError` (the trial is recorded as FAILED, the search goes on)."""
        values = trial.hyperparameters.values
        previous = values.get("tuner/trial_id")
        job = worker.TrialJob(
            hypermodel=self.hypermodel,
            hyperparameters=trial.hyperparameters,
            trial_id=trial.trial_id,
            objective=self.oracle.objective.name,
            direction=self.oracle.objective.direction,
            epochs=values.get("tuner/epochs", self.epochs),
            initial_epoch=values.get("tuner/initial_epoch", 0),
            early_stopping=self.early_stopping,
            max_model_size=self.max_model_size,
            weights_from=self._weights(previous) if previous else None,
            weights_to=self._weights(trial.trial_id) if self.keep_weights else None,
            tensorboard_dir=os.path.join(self.directory, "tensorboard", trial.trial_id),
            seed=self.seed,
        )
        started = time.perf_counter()
        try:
            metrics = (worker.run_isolated if self.isolate else worker.run)(job)
        except Exception as err:
            text = str(err) if self.isolate else traceback.format_exc()
            path = Path(self.get_trial_dir(trial.trial_id), ERROR_FILE)
            training.write_atomic(path, text)
            raise kt.errors.FailedTrialError(_last_line(text)) from err
        return {**metrics, "seconds": time.perf_counter() - started}

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        if self.verbose and self._is_worker():
            print(f"worker {self.tuner_id}: trial {trial.trial_id} {trial.status}")


# --- results --------------------------------------------------------------------------


@dataclass
class SearchResult:
    """A finished (or running) search, read from its directory.

    Attributes:
        directory: The search directory.
        spec: What was searched (search.json).
        table: One row per trial (results.csv).
        space: The space function, when it is importable or was given.
    """

    directory: Path
    spec: dict[str, Any]
    table: pd.DataFrame
    space: spaces.Space | None = None

    @property
    def objective(self) -> str:
        return self.spec["objective"]

    def top(self, n: int = 10) -> pd.DataFrame:
        """The `n` best completed trials, best first."""
        done = self.table[self.table["status"] == "COMPLETED"]
        ascending = OBJECTIVES[self.objective] == "min"
        return done.sort_values(self.objective, ascending=ascending).head(n)

    def summary(self) -> str:
        """One line: what was searched, trials by status, the best trial."""
        counts = self.table["status"].value_counts()
        text = (
            f"{self.spec['family']} on {self.spec['dataset']}, {self.spec['tuner']} "
            f"search in {self.directory}: {len(self.table)} trials ("
            + ", ".join(f"{n} {status.lower()}" for status, n in counts.items())
            + ")"
        )
        if counts.get("COMPLETED"):
            text += (
                f"; best trial {self.best_trial_id}: {self.objective} "
                f"{self.best_score:.4f}"
            )
        return text

    @property
    def best_trial_id(self) -> str:
        best = self.top(1)
        if best.empty:
            raise ValueError(
                f"no completed trial in {self.directory}; the search has not finished "
                "a trial yet (see the error column of results.csv)."
            )
        return str(best["trial_id"].iloc[0])

    @property
    def best_score(self) -> float:
        return float(self.top(1)[self.objective].iloc[0])

    def best_trial(self) -> kt.engine.trial.Trial:
        """KerasTuner's record of the best trial (its exact HyperParameters)."""
        path = self.directory / PROJECT / f"trial_{self.best_trial_id}" / "trial.json"
        return kt.engine.trial.Trial.load(str(path))

    @property
    def best_hyperparameters(self) -> dict[str, Any]:
        """Active hyperparameter values of the best trial."""
        values = self.best_trial().hyperparameters.values
        return {k: v for k, v in values.items() if not k.startswith("tuner/")}

    def plot(self) -> list[Path]:
        """Write the PNG plots (score per trial, score vs each hyperparameter)."""
        return plot_results(self.table, self.directory, self.spec)

    def retrain_and_export(
        self,
        base_dir: str | os.PathLike,
        *,
        epochs: int | None = None,
        verbose: int = 0,
    ) -> training.TrainResult:
        """Retrain the best configuration from scratch on train+val, test it on the
        held-out test split, and export a verified SavedModel.

        Args:
            base_dir: Export root; the SavedModel goes to `<base_dir>/<version>`.
            epochs: Epochs to train (default: the best trial's best epoch).
            verbose: Keras verbosity of the fit.

        Returns:
            A `zoo.training.TrainResult`: the run directory (`<search>/retrained`),
            test metrics, history, model and export directory.
        """
        from zoo import export

        trial = self.best_trial()
        row = self.table.set_index("trial_id").loc[trial.trial_id]
        epochs = epochs or int(row["best_epoch"])
        config = _train_config(self.spec)
        info = training.load_data(config).info
        model_maker = hypermodels.hypermodel(
            self.spec["family"], info, config, self._space()
        )
        _, config = model_maker.settings(trial.hyperparameters)
        config.epochs = epochs
        splits = training.load_data(config)
        size = splits.info.sizes["train"] + splits.info.sizes["val"]
        # Validation images join the training set unaugmented: data_pipelines has no
        # train+val split, so the two splits are merged and reshuffled every epoch.
        both = (
            splits.train.unbatch()
            .concatenate(splits.val.unbatch())
            .apply(tf.data.experimental.assert_cardinality(size))
            .shuffle(size, seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        keras.utils.set_random_seed(config.seed)
        model = model_maker.build(trial.hyperparameters)
        history = model.fit(both, epochs=epochs, verbose=verbose, shuffle=False)
        loss, accuracy = model.evaluate(splits.test, verbose=0)[:2]
        metrics = {
            "test_accuracy": float(accuracy),
            "test_loss": float(loss),
            "params": int(model.count_params()),
            "epochs": epochs,
            "trained_on": "train+val",
            "trial_id": trial.trial_id,
            "hyperparameters": self.best_hyperparameters,
        }
        run_dir = _fresh_dir(self.directory / "retrained")
        config.model = self.spec["family"]
        training.save_atomic(model, run_dir / "best.keras")
        for name, data in [
            ("config.json", dataclasses.asdict(config)),
            ("dataset.json", splits.info.to_dict()),
            ("metrics.json", metrics),
        ]:
            training.write_atomic(run_dir / name, json.dumps(data, indent=2))
        export_dir = export.export_saved_model(run_dir, base_dir)
        print(
            f"retrained trial {trial.trial_id} on train+val for {epochs} epochs: test "
            f"accuracy {accuracy:.4f} on {splits.info.sizes['test']} images; "
            f"SavedModel (verified): {export_dir}"
        )
        return training.TrainResult(
            run_dir, metrics, pd.DataFrame(history.history), model, export_dir
        )

    def _space(self) -> spaces.Space | None:
        if self.space is not None or self.spec["space"] is None:
            return self.space
        module, _, name = self.spec["space"].partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise ValueError(
                f"this search used the custom space {self.spec['space']}, which cannot "
                "be imported here; pass it: load_results(directory, space=...)."
            ) from None


def _fresh_dir(path: Path) -> Path:
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}-{n}"), n + 1
    candidate.mkdir(parents=True)
    return candidate


def _train_config(spec: Mapping[str, Any]) -> training.TrainConfig:
    fields = {k: spec[k] for k in ("dataset", "seed", *DATA_OPTIONS) if k in spec}
    return training.TrainConfig.from_dict(fields, SPEC_FILE)


def load_results(
    directory: str | os.PathLike, space: spaces.Space | None = None
) -> SearchResult:
    """The search in `directory` (made by `search`), read from its files."""
    directory = Path(directory)
    spec_path = directory / SPEC_FILE
    if not spec_path.is_file():
        raise ValueError(
            f"{str(directory)!r} is not a search directory (no {SPEC_FILE}); pass a "
            "directory made by `zoo tune`."
        )
    spec = json.loads(spec_path.read_text())
    table_path = directory / TABLE_FILE
    names = [h["config"]["name"] for h in spec["hyperparameters"]["space"]]
    table = (
        pd.read_csv(
            table_path,
            dtype={"trial_id": str, "tuner/trial_id": str},
            keep_default_na=False,  # "none", "nan" are values; an empty cell is not
            na_values=[""],
        )
        if table_path.is_file()
        else pd.DataFrame(columns=["trial_id", "status", *names, spec["objective"]])
    )
    return SearchResult(directory, spec, _typed(table, _space_of(spec)), space)


def _space_of(spec: Mapping[str, Any]) -> list:
    """The hyperparameters recorded in search.json (from_config edits its input)."""
    config = copy.deepcopy(spec["hyperparameters"])
    return kt.HyperParameters.from_config(config).space


def plot_results(
    table: pd.DataFrame, directory: str | os.PathLike, spec: Mapping[str, Any]
) -> list[Path]:
    """score_by_trial.png (score per trial, best so far) and
    score_vs_hyperparameters.png (one panel per hyperparameter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = spec["objective"]
    best_of = max if OBJECTIVES[objective] == "max" else min
    done = table[table["status"] == "COMPLETED"]
    paths = [Path(directory, name) for name in PLOTS]

    fig, ax = plt.subplots(figsize=(7, 4))
    number = done.index + 1
    ax.plot(number, done[objective], "o", label=objective)
    best = done[objective].expanding().apply(lambda s: best_of(s)) if len(done) else []
    ax.step(number, best, where="post", label="best so far")
    failed = len(table) - len(done)
    ax.set(
        xlabel="trial",
        ylabel=objective,
        title=f"{spec['family']} on {spec['dataset']}: {len(done)} completed, "
        f"{failed} failed",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, paths[0])

    hps = {h.name: h for h in _space_of(spec)}  # searched and ever active
    hps = [
        h
        for h in hps.values()
        if not isinstance(h, kt.engine.hyperparameters.Fixed)
        and h.name in done
        and done[h.name].notna().any()
    ]
    cols = min(4, max(1, len(hps)))
    rows = max(1, math.ceil(len(hps) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, hp in zip(axes.flat, hps, strict=False):
        values = done[hp.name]
        shown = values.notna()
        if getattr(hp, "sampling", None) == "log" or isinstance(
            hp, kt.engine.hyperparameters.Float
        ):
            ax.plot(values[shown].astype(float), done[objective][shown], "o")
            if getattr(hp, "sampling", None) == "log":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            labels = [str(v) for v in _sorted(values[shown].unique())]
            ax.plot(
                [labels.index(v) for v in values[shown].astype(str)],
                done[objective][shown],
                "o",
                alpha=0.7,
            )
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        ax.set(xlabel=hp.name, ylabel=objective)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(hps) :]:
        ax.axis("off")
    fig.tight_layout()
    _save_figure(fig, paths[1])
    return paths


def _sorted(values) -> list:
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)
    plt.close(fig)


# --- distributed tuning ---------------------------------------------------------------


def parse_address(address: str) -> tuple[str, int]:
    """'127.0.0.1:8000' -> ('127.0.0.1', 8000); '[::1]:8000' for IPv6."""
    host, sep, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"bad oracle address {address!r}; expected HOST:PORT, e.g. 127.0.0.1:8000."
        )
    return host, int(port)


@contextlib.contextmanager
def _kerastuner_settings(
    role: str | None, address: str, worker_id: str | None, timeout: float
) -> Iterator[None]:
    """KerasTuner's settings for the search (and nothing else): the distribution
    environment KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT,
    the workers' gRPC timeout (KerasTuner waits an hour for an absent chief), no
    traceback print per failed trial (it is in the trial's error.txt), no debug print
    per gRPC message (`_silenced`) and no Gaussian-process convergence warnings."""
    from keras_tuner.src import config
    from keras_tuner.src.distribute import oracle_client
    from keras_tuner.src.engine import conditions

    saved = {k: os.environ.pop(k, None) for k in _ENV}
    saved_timeout, saved_debug = oracle_client.TIMEOUT, config.DEBUG
    to_proto = conditions.Parent.to_proto
    config.DEBUG = False
    if role is not None:
        host, port = parse_address(address)
        tuner_id = "chief" if role == "chief" else str(worker_id)
        os.environ.update(zip(_ENV, (tuner_id, host, str(port)), strict=True))
        oracle_client.TIMEOUT = timeout
        conditions.Parent.to_proto = _silenced(to_proto)
    try:
        with warnings.catch_warnings():
            # The Bayesian oracle's Gaussian process warns on fits of few trials.
            warnings.simplefilter("ignore", ConvergenceWarning)
            yield
    finally:
        oracle_client.TIMEOUT, config.DEBUG = saved_timeout, saved_debug
        conditions.Parent.to_proto = to_proto
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def _silenced(method):
    """keras-tuner 1.4.8's `Parent.to_proto` prints its first value on every call (a
    leftover debug print): thousands of lines in a distributed search."""

    @functools.wraps(method)
    def silent(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return method(self)

    return silent


def _wait_for_oracle(address: str, timeout: float) -> None:
    """Bounded wait for the chief's gRPC server."""
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise ValueError(
            f"cannot reach the tuning oracle at {address} within {timeout:g} s; "
            f"start the chief first (zoo tune ... --distributed chief "
            f"--oracle-address {address}) or fix --oracle-address."
        ) from None
    finally:
        channel.close()


def _serve(oracle: _RecordingOracle, address: str, idle_timeout: float) -> None:
    """The chief: KerasTuner's gRPC oracle service until every trial has ended and
    every worker was told to stop (as `oracle_chief.start_server`, plus a clean
    shutdown and a bounded wait when no worker shows up).

    Raises:
        ValueError: When no worker asked for a trial for `idle_timeout` seconds
            while none was running.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            if oracle.idle_seconds() > idle_timeout:
                raise ValueError(
                    f"no worker asked the chief at {address} for a trial in "
                    f"{idle_timeout:g} s; start workers (zoo tune ... --distributed "
                    f"worker --worker-id w1 --oracle-address {address}) or raise "
                    "--oracle-timeout."
                )
            time.sleep(0.2)
    finally:
        server.stop(grace=5).wait()


def _check_can_listen(address: str) -> None:
    host, port = parse_address(address)
    try:
        family = socket.getaddrinfo(host, port)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as err:
        raise ValueError(
            f"the chief cannot listen on {address}: {err.strerror or err}; pick "
            "another --oracle-address (a free port on this machine)."
        ) from None


# --- search ---------------------------------------------------------------------------


def _spec_differences(saved: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    out = []
    for key, value in spec.items():
        if key == "max_trials" or saved.get(key) == value:
            continue
        if key == "hyperparameters":
            out.append("the search space (fixed values, or a changed custom space)")
        else:
            out.append(f"{key}={saved.get(key)!r} (received {value!r})")
    return out


def _claim_directory(directory: Path, spec: dict[str, Any], mode: str) -> None:
    """Refuse a directory of another search; write search.json for a new one.

    `mode` is "new" (the directory must not hold a search), "resume" (it must hold
    this search) or "join" (a worker: the chief's search must be this one).
    """
    path = directory / SPEC_FILE
    if not path.is_file():
        if mode != "new":
            raise ValueError(
                f"nothing to {mode} in {str(directory)!r}: no {SPEC_FILE}. "
                + (
                    "Drop --resume to start a new search there."
                    if mode == "resume"
                    else "Start the chief with the same --directory first."
                )
            )
        directory.mkdir(parents=True, exist_ok=True)
        training.write_atomic(path, json.dumps(spec, indent=2))
        return
    saved = json.loads(path.read_text())
    if mode == "new":
        raise ValueError(
            f"{str(directory)!r} already holds a search ({saved.get('family')} on "
            f"{saved.get('dataset')}); pass --resume to continue it, or pick another "
            "--directory."
        )
    differences = _spec_differences(saved, json.loads(json.dumps(spec)))
    if differences:
        raise ValueError(
            f"{str(directory)!r} holds a different search: "
            f"{'; '.join(differences)}. Use the same settings to {mode} it, or pick "
            "another --directory."
        )
    if mode == "resume":
        training.write_atomic(path, json.dumps(spec, indent=2))


def _make_oracle(
    tuner: str,
    objective: str,
    max_trials: int,
    hyperparameters: kt.HyperParameters,
    epochs: int,
    seed: int,
    max_consecutive_failed_trials: int,
) -> kt.Oracle:
    options: dict[str, Any] = {
        "objective": kt.Objective(objective, OBJECTIVES[objective]),
        "hyperparameters": hyperparameters,
        "seed": seed + 1,  # KerasTuner draws a random seed for seed=0
        "max_consecutive_failed_trials": max_consecutive_failed_trials,
    }
    if tuner == "hyperband":
        options.update(max_epochs=epochs, hyperband_iterations=None)
    else:
        options["max_trials"] = max_trials
    if tuner == "bayesian":
        options["num_initial_points"] = max(3, max_trials // 3)
    oracle = _recording(TUNERS[tuner])(**options)
    oracle.max_trials = max_trials  # Hyperband too: brackets repeat until max_trials
    oracle.verbose = 0  # KerasTuner's own per-trial printout; we print one line
    return oracle


def _check_picklable(model_maker: hypermodels.ZooHyperModel) -> None:
    try:
        pickle.dumps(model_maker)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise ValueError(
            f"the space cannot be sent to trial processes ({err}); define it as a "
            "module-level function, or pass isolate=False (--in-process)."
        ) from None


def _space_name(space: spaces.Space | None) -> str | None:
    if space is None:
        return None
    return f"{space.__module__}:{space.__qualname__}"


def _check_arguments(
    family: str,
    tuner: str,
    objective: str,
    distributed: str | None,
    oracle_address: str,
    worker_id: str | None,
    data: Mapping[str, Any],
    **counts: Any,
) -> None:
    """Refuse bad `search` arguments before anything is loaded or written."""
    _choice("family", family, hypermodels.FAMILIES)
    _choice("tuner", tuner, TUNERS)
    _choice("objective", objective, OBJECTIVES)
    if distributed is not None:
        _choice("distributed role", distributed, ROLES)
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} must be an int >= 1; received {value!r}. Pass e.g. "
                f"--{name.replace('_', '-')} 10."
            )
    unknown = sorted(set(data) - set(DATA_OPTIONS))
    if unknown:
        raise ValueError(
            f"search does not take {', '.join(unknown)}; data options: "
            f"{', '.join(DATA_OPTIONS)}. Pin hyperparameters with fixed={{...}} "
            "(--fix NAME=VALUE)."
        )
    if distributed == "worker" and (not worker_id or "chief" in str(worker_id)):
        raise ValueError(
            f"a worker needs a unique --worker-id without 'chief' in it; received "
            f"{worker_id!r}. Pass e.g. --worker-id w1."
        )
    if distributed is not None:
        parse_address(oracle_address)


def search(
    family: str,
    dataset: str = "digits",
    *,
    tuner: str = "random",
    max_trials: int = 10,
    objective: str = "val_accuracy",
    directory: str | os.PathLike | None = None,
    resume: bool = False,
    fixed: Mapping[str, Any] | None = None,
    space: spaces.Space | None = None,
    epochs: int = 20,
    early_stopping: int | None = 3,
    max_model_size: int | None = None,
    seed: int = 0,
    isolate: bool = True,
    distributed: str | None = None,
    oracle_address: str = "127.0.0.1:8000",
    worker_id: str | None = None,
    oracle_timeout: float = 60.0,
    max_consecutive_failed_trials: int = 3,
    verbose: bool = True,
    **data: Any,
) -> SearchResult:
    """Search a family's space with a KerasTuner oracle on a data_pipelines source.

    Args:
        family: "mlp", "cnn" or "resnet" (see `tuning.spaces`).
        dataset: A data_pipelines source: "digits", "idx:DIR", "tfds:NAME", ...
        tuner: "random", "grid", "hyperband" or "bayesian" (KerasTuner's oracles).
        max_trials: Trials in total (a resumed search counts its finished ones).
        objective: "val_accuracy", "val_loss", "accuracy" or "loss".
        directory: Search directory (default tuning_runs/<family>_<dataset>).
        resume: Continue the search in `directory`; finished trials are kept.
        fixed: Hyperparameters to pin, e.g. {"activation": "relu"}.
        space: Own space function `space(hp) -> settings` (see `tuning.spaces`).
        epochs: Epochs per trial (Hyperband's maximum).
        early_stopping: Patience (epochs) on the objective within a trial; None: off.
        max_model_size: Trials whose model has more trainable parameters fail.
        seed: Seed of the data split, every trial's weights, and the oracle.
        isolate: Run every trial in a fresh child process (constant memory).
        distributed: None, "chief" (runs the oracle, serves workers) or "worker".
        oracle_address: HOST:PORT the chief listens on / workers connect to.
        worker_id: Unique id of a worker (not containing "chief").
        oracle_timeout: Seconds a worker waits for the chief before giving up.
        max_consecutive_failed_trials: The search stops after this many failures
            in a row.
        verbose: Print a line per finished trial.
        **data: Data options: image_size, channels, normalize, augment,
            val_fraction, label_column, data_dir, deterministic; and SGD's
            momentum and nesterov.

    Returns:
        A `SearchResult` (table, best hyperparameters, retrain_and_export).

    Raises:
        ValueError: Bad input, said as what was received and what is allowed.
    """
    _check_arguments(
        family, tuner, objective, distributed, oracle_address, worker_id, data,
        max_trials=max_trials, epochs=epochs,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
    )  # fmt: skip
    config = training.TrainConfig.from_dict(
        {"dataset": dataset, "seed": seed, **data}, "search options"
    )
    space_fn = space or spaces.SPACES[family]
    hps = spaces.fix(spaces.declare(space_fn), fixed or {})
    directory = Path(directory or f"tuning_runs/{family}_{_slug(dataset)}")
    spec = {
        "family": family,
        "dataset": dataset,
        **{k: getattr(config, k) for k in ("seed", *DATA_OPTIONS)},
        "tuner": tuner,
        "objective": objective,
        "epochs": epochs,
        "early_stopping": early_stopping,
        "max_model_size": max_model_size,
        "space": _space_name(space),
        "hyperparameters": hps.get_config(),
        "max_trials": max_trials,
    }
    if distributed == "chief":
        _check_can_listen(oracle_address)
    with _kerastuner_settings(distributed, oracle_address, worker_id, oracle_timeout):
        if distributed == "worker":
            _wait_for_oracle(oracle_address, oracle_timeout)
        if isolate and distributed != "chief":
            worker.start()
        info = training.load_data(config).info
        model_maker = hypermodels.hypermodel(family, info, config, space)
        if isolate:
            _check_picklable(model_maker)
        mode = "join" if distributed == "worker" else "resume" if resume else "new"
        _claim_directory(directory, spec, mode)
        oracle = _make_oracle(
            tuner,
            objective,
            max_trials,
            hps,
            epochs,
            seed,
            max_consecutive_failed_trials,
        )
        if distributed != "worker":
            oracle.recorder = _Recorder(directory, objective, verbose)
        zoo_tuner = ZooTuner(
            oracle,
            model_maker,
            epochs=epochs,
            early_stopping=early_stopping,
            max_model_size=max_model_size,
            seed=seed,
            isolate=isolate,
            verbose=verbose,
            directory=str(directory),
            project_name=PROJECT,
            overwrite=False,
        )
        if verbose:
            role = " ".join(filter(None, (distributed, worker_id)))
            role = f" ({role})" if role else ""
            print(
                f"tuning {family} on {dataset}{role}: {tuner} search, {max_trials} "
                f"trials, {objective} ({OBJECTIVES[objective]}); {directory}"
            )
        try:
            if distributed == "chief":
                zoo_tuner.save()
                _serve(oracle, oracle_address, oracle_timeout)
            else:
                zoo_tuner.search(verbose=0)
        except RuntimeError as err:
            if "consecutive failures" not in str(err):
                raise
            raise ValueError(
                f"search stopped: {str(err).splitlines()[0]} Last error: "
                f"{_last_line(str(err))}. See {directory / TABLE_FILE}."
            ) from None
        except Exception as err:
            if type(err).__module__.startswith("grpc"):
                raise ValueError(
                    f"lost the tuning oracle at {oracle_address} ({err.code().name}); "
                    "the chief stopped or is unreachable."
                ) from None
            raise
        finally:
            if distributed != "worker":
                table = results_table(oracle, directory)
                training.write_atomic(directory / TABLE_FILE, table.to_csv(index=False))
    result = load_results(directory, space)
    if distributed != "worker" and not result.table.empty:
        result.plot()
        if verbose and (result.table["status"] == "COMPLETED").any():
            print(
                f"best: trial {result.best_trial_id}, {objective} "
                f"{result.best_score:.4f}, {result.best_hyperparameters}; "
                f"table {directory / TABLE_FILE}"
            )
    return result


def _slug(dataset: str) -> str:
    scheme, _, rest = dataset.partition(":")
    name = Path(rest).name if rest else scheme
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "data"
