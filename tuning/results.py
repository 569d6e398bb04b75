"""The oracle side of a search and its results: the per-trial line, results.csv,
`SearchResult`, `load_results` and the plots.

The recorder and the recording oracle live where the oracle lives (the search
process, or the chief); `load_results` reads a search directory back from its files
at any time, during or after the search.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import pandas as pd
import tensorflow as tf

import data_pipelines as dp
from tuning import hypermodels, spaces
from zoo import files, plots, recipe, runs
from zoo.config import TrainConfig, options_for

# The search's shared constants live here, in the lowest of its modules: `tuner` and
# `search` import them from here.
OBJECTIVES = {
    "val_accuracy": "max",
    "val_loss": "min",
    "accuracy": "max",
    "loss": "min",
}
# The objectives a family's task has, its default first: an autoencoder has no
# accuracy, its reconstruction loss is the score.
TASK_OBJECTIVES = {
    "classification": ("val_accuracy", "val_loss", "accuracy", "loss"),
    "reconstruction": ("val_loss", "loss"),
}
# TrainConfig fields a search takes besides dataset and seed (the space chooses
# optimizer, rate, batch size).
DATA_OPTIONS = tuple(n for n in options_for("tune") if n not in ("dataset", "seed"))
SPEC_FILE = "search.json"
TABLE_FILE = "results.csv"
TRIAL_FILE = "trial.json"
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


# --- the oracle side: per-trial line, results table -----------------------------------


class TrialRecorder:
    """Where the oracle lives (the search process, or the chief): one line per
    finished trial and the results CSV, rewritten atomically after every trial."""

    def __init__(self, directory: Path, objective: str, verbose: bool) -> None:
        self.directory = directory
        self.objective = objective
        self.verbose = verbose
        self.started = time.perf_counter()

    def trial_ended(self, oracle: kt.Oracle, trial_id: str) -> None:
        table = results_table(oracle, self.directory)
        files.write_atomic(self.directory / TABLE_FILE, table.to_csv(index=False))
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


# A trial with one of these statuses in its trial.json has ended: it is never run
# again (KerasTuner's own statuses).
ENDED = ("COMPLETED", "FAILED")


class RecordingOracle:
    """Mixed into KerasTuner's oracles: records who ran each trial and how often it
    ended (persisted in oracle.json), and tells the recorder when a trial ends.

    Its state is saved and reloaded by hand (`save`, `_save_trial`, `reload`):
    KerasTuner 1.4.8 rewrites oracle.json and trial.json in place
    (`utils.save_json` opens them for writing, truncating them), so a kill at that
    moment left an empty file that no resume could read; and `end_trial` saves the
    oracle while the ended trial is still listed as running, so a kill before the
    next save made resume run a finished trial again. Here every file is replaced
    whole (`zoo.files.write_json`: the last good copy stays until the new one is
    complete), a trial's own trial.json is the source of truth for whether it ended,
    and a damaged file is refused in one line naming it.

    On a distributed chief it also remembers when each worker was last heard from
    (`drop_silent_tuners`) and refuses a second worker with the id of a running one
    (`refusal`).
    """

    recorder: TrialRecorder | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers: dict[str, str] = {}
        self.runs: dict[str, int] = {}
        self.last_call = time.monotonic()
        self.heard: dict[str, float] = {}  # tuner id -> time.monotonic()

    def idle_seconds(self) -> float:
        """Seconds since a tuner last asked for or ended a trial, if none is running."""
        return 0.0 if self.ongoing_trials else time.monotonic() - self.last_call

    def _holder(self, trial_id: str) -> str | None:
        """The tuner running `trial_id`, None when it is not running."""
        return next(
            (
                t
                for t, trial in self.ongoing_trials.items()
                if trial.trial_id == trial_id
            ),
            None,
        )

    def _heard_about(self, trial_id: str) -> str | None:
        holder = self._holder(trial_id)
        if holder is not None:
            self.heard[holder] = time.monotonic()
        return holder

    @kt.synchronized
    def create_trial(self, tuner_id: str):
        self.last_call = self.heard[tuner_id] = time.monotonic()
        trial = super().create_trial(tuner_id)
        if trial.status == "RUNNING":
            self.workers[trial.trial_id] = tuner_id
        return trial

    # KerasTuner's `synchronized` never releases its lock when the method raises:
    # a request naming an unknown trial (a stray gRPC message) must not raise here.

    @kt.synchronized
    def get_trial(self, trial_id: str):
        self._heard_about(trial_id)  # a worker's heartbeat while its trial runs
        return self.trials.get(trial_id)

    @kt.synchronized
    def update_trial(self, trial_id: str, metrics, step=0):
        if self._heard_about(trial_id) is None:  # ended already, or unknown
            return self.trials.get(trial_id)
        return super().update_trial(trial_id, metrics, step=step)

    @kt.synchronized
    def end_trial(self, trial) -> None:
        self.last_call = time.monotonic()
        if self._heard_about(trial.trial_id) is None:  # ended already
            return
        self.runs[trial.trial_id] = self.runs.get(trial.trial_id, 0) + 1
        super().end_trial(trial)
        if self.recorder is not None:
            self.recorder.trial_ended(self, trial.trial_id)

    @kt.synchronized
    def refusal(self, tuner_id: str) -> str | None:
        """Why a request of `tuner_id` for a trial is refused, None if it is not:
        a tuner asks only when its trial has ended, so a request under the id of a
        running trial comes from another worker with the same id."""
        trial = self.ongoing_trials.get(tuner_id)
        if trial is None:
            return None
        ago = time.monotonic() - self.heard.get(tuner_id, self.last_call)
        return (
            f"worker id {tuner_id!r} is taken: a worker with that id is running "
            f"trial {trial.trial_id} (last heard from {ago:.0f} s ago). Pass another "
            "--worker-id, or wait --oracle-timeout for the chief to give that "
            "worker up."
        )

    @kt.synchronized
    def drop_silent_tuners(self, timeout: float) -> None:
        """Give up the tuners not heard from for `timeout` seconds (killed, or cut
        off): the trial each was running fails, so the chief can end."""
        now = time.monotonic()
        for tuner_id in sorted(self.tuner_ids):
            if now - self.heard.get(tuner_id, now) <= timeout:
                continue
            self.tuner_ids.discard(tuner_id)
            trial = self.ongoing_trials.get(tuner_id)
            if trial is not None:
                message = (
                    f"worker {tuner_id} stopped answering the chief for more than "
                    f"{timeout:g} s (killed?); its trial failed."
                )
                path = Path(self._get_trial_dir(trial.trial_id), ERROR_FILE)
                files.write_atomic(path, message + "\n")
                trial.status, trial.message = "FAILED", message
                self.end_trial(trial)

    def budget_spent(self) -> bool:
        """Every trial of `max_trials` was handed out."""
        return bool(self.max_trials) and len(self.trials) >= self.max_trials

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "workers": self.workers, "runs": self.runs}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.workers = dict(state.get("workers", {}))
        self.runs = dict(state.get("runs", {}))

    def save(self) -> None:
        files.write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial) -> None:
        path = Path(self._get_trial_dir(trial.trial_id), TRIAL_FILE)
        files.write_json(path, trial.get_state())

    def reload(self) -> None:
        """The oracle as saved, with every trial that has not ended (by its
        trial.json) queued to run again, and every ended one counted as ended."""
        for path in sorted(Path(self._project_dir).glob(f"trial_*/{TRIAL_FILE}")):
            trial = load_trial(path)
            self.trials[trial.trial_id] = trial
        path = Path(self._get_oracle_fname())
        state = read_json(path, "the tuning oracle's state")
        try:
            self.set_state(state)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(
                f"{str(path)!r} is damaged: not a KerasTuner oracle state ("
                f"{type(err).__name__}: {_brief(err)}). {_RESTORE}"
            ) from None
        self.ongoing_trials = {}
        self._retry_queue = [
            t for t in self._retry_queue if self.trials[t].status not in ENDED
        ]
        for trial_id in sorted(self.trials):
            if self.trials[trial_id].status in ENDED:
                self.runs.setdefault(trial_id, 1)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
            elif trial_id not in self._retry_queue:
                self._retry_queue.append(trial_id)


@functools.cache
def recording_oracle(oracle_class: type) -> type:
    return type(
        f"Recording{oracle_class.__name__}", (RecordingOracle, oracle_class), {}
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
        row["error"] = error_line(error.read_text()) if error.is_file() else None
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


_RESTORE = "Restore it from a copy, or start the search again in a new --directory."


def read_json(path: Path, what: str) -> Any:
    """The JSON object in a search file; a missing or damaged one is refused in one
    line naming it (never a parser message without the file name)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{str(path)!r} is missing: it holds {what}. {_RESTORE}"
        ) from None
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{str(path)!r} is damaged: not valid JSON ({_brief(err)}). {_RESTORE}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{str(path)!r} is damaged: {what} is a JSON object, the file holds a "
            f"{type(data).__name__}. {_RESTORE}"
        )
    return data


def load_trial(path: Path) -> kt.engine.trial.Trial:
    """A trial's record (trial.json), or one line naming the damaged file."""
    state = read_json(path, "a KerasTuner trial")
    try:
        return kt.engine.trial.Trial.from_state(state)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{str(path)!r} is damaged: not a KerasTuner trial ("
            f"{type(err).__name__}: {_brief(err)}). {_RESTORE}"
        ) from None


def _brief(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def error_line(text: str) -> str:
    """The exception line of a traceback, without the module path of its class."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    return re.sub(r"^(?:\w+\.)*(?:FailedTrialError: )?", "", last)


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
        return load_trial(
            self.directory / PROJECT / f"trial_{self.best_trial_id}" / TRIAL_FILE
        )

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
        verbose: int | str = 0,
    ) -> runs.TrainResult:
        """Retrain the best configuration from scratch on train+val, test it on the
        held-out test split, and export a verified SavedModel: a run like `zoo
        train`'s (same files, checkpoints, metrics.json), without validation.

        Args:
            base_dir: Export root; the SavedModel goes to `<base_dir>/<version>`.
            epochs: Epochs to train (default: `retrain_epochs`).
            verbose: Keras verbosity of the fit.

        Returns:
            A `zoo.runs.TrainResult`: the run directory (`<search>/retrained`),
            test metrics, history, model and export directory.
        """
        files.check_export_dir(base_dir)
        trial = self.best_trial()
        row = self.table.set_index("trial_id").loc[trial.trial_id]
        config = _train_config(self.spec)
        info = recipe.load_data(config).info
        model_maker = hypermodels.hypermodel(
            self.spec["family"], info, config, self._space()
        )
        kwargs, config = model_maker.settings(trial.hyperparameters)
        config = dataclasses.replace(
            config,
            model=self.spec["family"],
            epochs=epochs or retrain_epochs(self.spec, row),
            run_dir=str(self.directory),
            export=str(base_dir),
        )
        extra = {
            "trained_on": "train+val",
            "trial_id": trial.trial_id,
            "hyperparameters": self.best_hyperparameters,
        }
        with recipe.prepare(config) as splits:
            run = runs.start(config, splits, path=self.directory / "retrained")
            return runs.execute(
                run,
                _train_and_val(splits, config),
                lambda: model_maker.build_model(**kwargs),
                [runs.Phase(config)],
                extra_metrics=extra,
                verbose=verbose,
            )

    def _space(self) -> spaces.Space | None:
        """The space of the search: the one given, or a space of the project's own
        (`tuning.spaces`). A custom space is never imported by the name that
        search.json gives: whoever can write that file could name any module."""
        if self.space is not None or self.spec.get("space") is None:
            return self.space
        module, _, name = self.spec["space"].partition(":")
        own = getattr(spaces, name, None) if module == spaces.__name__ else None
        if callable(own):
            return own
        raise ValueError(
            f"this search used the custom space {self.spec['space']}; zoo does not "
            f"import a module that {SPEC_FILE} names. Import it yourself and pass it: "
            "load_results(directory, space=...)."
        )


def retrain_epochs(spec: Mapping[str, Any], row: pd.Series) -> int:
    """Epochs to retrain a trial for: its best epoch; but a Hyperband trial whose
    round gave it fewer epochs than the search's `epochs` (its `tuner/epochs`) was
    cut short, not trained out, so it gets the `epochs` of a fully trained trial."""
    budget = row.get("tuner/epochs")
    if not _missing(budget) and int(budget) < int(spec["epochs"]):
        return int(spec["epochs"])
    return int(row["best_epoch"])


def _train_config(spec: Mapping[str, Any]) -> TrainConfig:
    fields = {k: spec[k] for k in ("dataset", "seed", *DATA_OPTIONS) if k in spec}
    return TrainConfig.from_dict({"model": spec["family"], **fields}, SPEC_FILE)


def _train_and_val(splits: dp.Splits, config: TrainConfig) -> dp.Splits:
    """Training on train+val, no validation: data_pipelines has no train+val
    split, so the validation images join the training set unaugmented and the two
    are reshuffled together every epoch."""
    size = splits.info.sizes["train"] + splits.info.sizes["val"]
    both = (
        splits.train.unbatch()
        .concatenate(splits.val.unbatch())
        .apply(tf.data.experimental.assert_cardinality(size))
        .shuffle(size, seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    info = dataclasses.replace(splits.info, sizes={**splits.info.sizes, "train": size})
    return dp.Splits(both, None, splits.test, info)


def load_results(
    directory: str | os.PathLike, space: spaces.Space | None = None
) -> SearchResult:
    """The search in `directory` (made by `search`), read from its files.

    Args:
        directory: The search directory.
        space: The space function of a search with a custom space (needed to
            retrain it; never imported by the name search.json gives).
    """
    directory = Path(directory)
    spec = read_spec(directory)
    table_path = directory / TABLE_FILE
    if table_path.is_file():
        table = _read_table(table_path, spec)
    else:
        names = [h.name for h in _space_of(spec)]
        columns = ["trial_id", "status", *names, spec["objective"]]
        table = _typed(pd.DataFrame(columns=columns), _space_of(spec))
    return SearchResult(directory, spec, table, space)


# What search.json must hold for a search to be read back.
_SPEC_KEYS = ("family", "dataset", "tuner", "objective", "epochs", "hyperparameters")


def read_spec(directory: Path) -> dict[str, Any]:
    """search.json of `directory`, checked: one line naming it when it is missing
    or damaged."""
    path = directory / SPEC_FILE
    if not path.is_file():
        raise ValueError(
            f"{str(directory)!r} is not a search directory (no {SPEC_FILE}); pass a "
            "directory made by `zoo tune`."
        )
    spec = read_json(path, "the search's description")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    problem = f"it lacks {', '.join(missing)}" if missing else None
    if not problem and spec["objective"] not in OBJECTIVES:
        problem = f"unknown objective {spec['objective']!r}"
    if not problem:
        try:
            _space_of(spec)
        except Exception as err:  # KerasTuner raises anything on a bad config
            problem = f"unreadable hyperparameters ({_brief(err)})"
    if problem:
        raise ValueError(f"{str(path)!r} is damaged: {problem}. {_RESTORE}")
    return spec


def _read_table(path: Path, spec: Mapping[str, Any]) -> pd.DataFrame:
    """results.csv; a damaged one in one line naming it (it is derived from
    trials/, so a resume writes it again)."""
    try:
        table = pd.read_csv(
            path,
            dtype={"trial_id": str, "tuner/trial_id": str},
            keep_default_na=False,  # "none", "nan" are values; an empty cell is not
            na_values=[""],
        )
        missing = [
            c for c in ("trial_id", "status", spec["objective"]) if c not in table
        ]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        return _typed(table, _space_of(spec))
    except (ValueError, TypeError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(
            f"{str(path)!r} is damaged ({_brief(err)}). It is written from trials/: "
            "delete it and run the same zoo tune command with --resume to write it "
            "again."
        ) from None


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

    objective = spec["objective"]
    best_of = max if OBJECTIVES[objective] == "max" else min
    done = table[table["status"] == "COMPLETED"]
    paths = [Path(directory, name) for name in PLOTS]

    fig, axes = plots.figure(figsize=(7, 4))
    ax = axes[0, 0]
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
    files.save_figure(fig, paths[0])

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
    fig, axes = plots.figure(
        rows, cols, figsize=(4 * cols, 3 * rows), layout="constrained"
    )
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
    files.save_figure(fig, paths[1])
    return paths


def _sorted(values) -> list:
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)
