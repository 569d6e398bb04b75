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

This module runs a search; the rest lives beside it: `tuning.results` (the oracle
side: per-trial line, results table, `SearchResult`, `load_results`, plots),
`tuning.tuner` (the worker side: `ZooTuner`) and `tuning.distributed` (the chief's
gRPC service, the workers' settings). Their public names are importable from here
too: the forkserver imports this module once (`worker.PRELOAD`), so every module a
trial needs is loaded.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras_tuner as kt

from tuning import hypermodels, spaces, worker
from tuning.distributed import (
    ROLES,
    check_can_listen,
    check_worker_id,
    kerastuner_settings,
    parse_address,
    serve_oracle,
    wait_for_oracle,
)
from tuning.results import (
    DATA_OPTIONS,
    ERROR_FILE,
    METRICS,
    OBJECTIVES,
    PLOTS,
    PROJECT,
    SPEC_FILE,
    TABLE_FILE,
    TASK_OBJECTIVES,
    SearchResult,
    TrialRecorder,
    error_line,
    load_results,
    plot_results,
    read_spec,
    recording_oracle,
    results_table,
)
from tuning.tuner import HEARTBEAT_SECONDS, IDLE_POLL_SECONDS, ZooTuner
from zoo import files, recipe
from zoo.config import TrainConfig

# The public names of this module before it was split stay importable from here.
__all__ = [
    "DATA_OPTIONS",
    "ERROR_FILE",
    "IDLE_POLL_SECONDS",
    "METRICS",
    "OBJECTIVES",
    "PLOTS",
    "PROJECT",
    "ROLES",
    "SPEC_FILE",
    "TABLE_FILE",
    "TUNERS",
    "SearchResult",
    "ZooTuner",
    "load_results",
    "parse_address",
    "plot_results",
    "results_table",
    "search",
]

TUNERS = {
    "random": kt.oracles.RandomSearchOracle,
    "grid": kt.oracles.GridSearchOracle,
    "hyperband": kt.oracles.HyperbandOracle,
    "bayesian": kt.oracles.BayesianOptimizationOracle,
}


def _choice(what: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}."
        )


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


# The lock file of a search directory (`zoo.files.lock`), held by the search
# process or the chief while it runs.
LOCK_FILE = ".lock"


def _claim_directory(directory: Path, spec: dict[str, Any], mode: str):
    """Refuse a directory of another search, or one that another process is
    searching; write search.json for a new one.

    `mode` is "new" (the directory must not hold a search), "resume" (it must hold
    this search) or "join" (a worker: the chief's search must be this one).

    Returns:
        The directory's lock (`zoo.files.lock`; None for a worker, which shares
        the chief's directory): close it when the search ends.
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
    held = None if mode == "join" else _lock(directory)
    try:
        _check_spec(directory, spec, mode)
    except BaseException:
        if held is not None:
            held.close()
        raise
    return held


def _lock(directory: Path):
    return files.lock(
        directory / LOCK_FILE,
        f"search directory {str(directory)!r} is in use by process {{owner}} (a "
        "zoo tune running there); wait for it to end (or stop it), or pick "
        "another --directory.",
    )


def _check_spec(directory: Path, spec: dict[str, Any], mode: str) -> None:
    path = directory / SPEC_FILE
    if not path.is_file():
        files.write_atomic(path, json.dumps(spec, indent=2))
        return
    saved = read_spec(directory)
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
    oracle = recording_oracle(TUNERS[tuner])(**options)
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


def _objective(family: str, objective: str | None) -> str:
    """The objective given, or the default of the family's task; refuses one that
    the task does not have (an autoencoder's accuracy)."""
    task = hypermodels.HYPERMODELS[family].task
    allowed = TASK_OBJECTIVES[task]
    if objective is None:
        return allowed[0]
    _choice("objective", objective, OBJECTIVES)
    if objective not in allowed:
        raise ValueError(
            f"{family} has no {objective}: its task is {task}; allowed objectives: "
            f"{', '.join(allowed)} (the default is {allowed[0]})."
        )
    return objective


def _check_arguments(
    family: str,
    tuner: str,
    objective: str | None,
    distributed: str | None,
    oracle_address: str,
    worker_id: str | None,
    data: Mapping[str, Any],
    **counts: Any,
) -> str:
    """Refuse bad `search` arguments before anything is loaded or written; the
    objective (given, or the family's default)."""
    _choice("family", family, hypermodels.FAMILIES)
    _choice("tuner", tuner, TUNERS)
    objective = _objective(family, objective)
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
    if distributed == "worker":
        check_worker_id(worker_id)
    if distributed is not None:
        parse_address(oracle_address)
    return objective


def _run_search(
    zoo_tuner: ZooTuner,
    oracle: kt.Oracle,
    directory: Path,
    distributed: str | None,
    oracle_address: str,
    oracle_timeout: float,
) -> None:
    """Run the trials (a chief serves the oracle instead), said as a `ValueError`
    when the search stops on failures or loses its oracle; the oracle side writes
    results.csv however it ends."""
    try:
        if distributed == "chief":
            zoo_tuner.save()
            serve_oracle(oracle, oracle_address, oracle_timeout)
        else:
            zoo_tuner.search(verbose=0)
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        raise ValueError(
            f"search stopped: {str(err).splitlines()[0]} Last error: "
            f"{error_line(str(err))}. See {directory / TABLE_FILE}."
        ) from None
    except KeyboardInterrupt as interrupt:
        interrupt.run_dir = directory  # the CLI's hint names the search to resume
        raise
    except Exception as err:
        if type(err).__module__.startswith("grpc") and _refused(err):
            raise ValueError(
                f"the chief refused this worker: {err.details()}"
            ) from None
        if type(err).__module__.startswith("grpc"):
            raise ValueError(
                f"lost the tuning oracle at {oracle_address} ({err.code().name}); "
                "the chief stopped or is unreachable."
            ) from None
        raise
    finally:
        if distributed != "worker":
            table = results_table(oracle, directory)
            files.write_atomic(directory / TABLE_FILE, table.to_csv(index=False))


def _refused(err) -> bool:
    """A gRPC error of the chief's own refusal (see `distributed.serve_oracle`)."""
    import grpc

    return err.code() == grpc.StatusCode.FAILED_PRECONDITION


def search(
    family: str,
    dataset: str = "digits",
    *,
    tuner: str = "random",
    max_trials: int = 10,
    objective: str | None = None,
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
        family: "mlp", "cnn", "resnet", "recurrent" or "conv_autoencoder" (see
            `tuning.spaces`).
        dataset: A data_pipelines source: "digits", "idx:DIR", "tfds:NAME", ...
        tuner: "random", "grid", "hyperband" or "bayesian" (KerasTuner's oracles).
        max_trials: Trials in total (a resumed search counts its finished ones).
        objective: "val_accuracy", "val_loss", "accuracy" or "loss"; default: the
            family's task's (`TASK_OBJECTIVES`): val_accuracy for classifiers,
            val_loss for conv_autoencoder, which has no accuracy.
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
    objective = _check_arguments(
        family, tuner, objective, distributed, oracle_address, worker_id, data,
        max_trials=max_trials, epochs=epochs,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
    )  # fmt: skip
    config = TrainConfig.from_dict(
        {"model": family, "dataset": dataset, "seed": seed, **data}, "search options"
    )
    space_fn = space or spaces.SPACES[family]
    hps = spaces.fix(spaces.declare(space_fn), fixed or {})
    directory = Path(directory or f"tuning_runs/{family}_{files.slug(dataset)}")
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
        check_can_listen(oracle_address)
    with kerastuner_settings(distributed, oracle_address, worker_id, oracle_timeout):
        if distributed == "worker":
            wait_for_oracle(oracle_address, oracle_timeout)
        if isolate and distributed != "chief":
            worker.start()
        info = recipe.load_data(config).info
        model_maker = hypermodels.hypermodel(family, info, config, space)
        if isolate:
            _check_picklable(model_maker)
        mode = "join" if distributed == "worker" else "resume" if resume else "new"
        held = _claim_directory(directory, spec, mode)
        try:
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
                oracle.recorder = TrialRecorder(directory, objective, verbose)
            zoo_tuner = ZooTuner(
                oracle,
                model_maker,
                epochs=epochs,
                early_stopping=early_stopping,
                max_model_size=max_model_size,
                seed=seed,
                isolate=isolate,
                verbose=verbose,
                heartbeat=min(HEARTBEAT_SECONDS, oracle_timeout / 4),
                directory=str(directory),
                project_name=PROJECT,
                overwrite=False,
            )
            if mode == "resume":  # its state was read: a new max_trials is kept
                files.write_atomic(directory / SPEC_FILE, json.dumps(spec, indent=2))
            if verbose:
                role = " ".join(filter(None, (distributed, worker_id)))
                role = f" ({role})" if role else ""
                print(
                    f"tuning {family} on {dataset}{role}: {tuner} search, {max_trials} "
                    f"trials, {objective} ({OBJECTIVES[objective]}); {directory}"
                )
            _run_search(
                zoo_tuner,
                oracle,
                directory,
                distributed,
                oracle_address,
                oracle_timeout,
            )
        finally:
            if held is not None:
                held.close()
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
