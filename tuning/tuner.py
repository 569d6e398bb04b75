"""The worker side of a search: `ZooTuner` runs one trial per child process."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras_tuner as kt

from tuning import hypermodels, worker
from tuning.results import ERROR_FILE, error_line
from zoo import files

# Seconds a tuner waits before asking again when the oracle answered IDLE.
IDLE_POLL_SECONDS = 0.5
# Most seconds between the reports of a distributed worker while its trial runs:
# the chief gives up a worker it has not heard from for --oracle-timeout.
HEARTBEAT_SECONDS = 5.0


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
        heartbeat: Seconds between a distributed worker's reports to the chief
            while a trial runs.
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
        heartbeat: float = HEARTBEAT_SECONDS,
        **kwargs: Any,
    ) -> None:
        self._reloaded = False
        super().__init__(oracle, hypermodel, **kwargs)
        if not (self._reloaded or self._is_worker()):
            if os.path.isfile(self.oracle._get_oracle_fname()):
                self.reload()  # the oracle's file, not the tuner's, tells (`save`)
        self.heartbeat = heartbeat
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

    def save(self) -> None:
        """Save the oracle's state only. KerasTuner also writes the tuner's own state,
        always empty, to trials/<tuner id>.json, in place: a kill there left a file
        no resume could read, and the file only told KerasTuner that there is
        something to reload, which oracle.json tells here. A worker saves nothing:
        the chief owns the state."""
        if not self._is_worker():
            self.oracle.save()

    def reload(self) -> None:
        self._reloaded = True
        if not self._is_worker():
            self.oracle.reload()

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
            with self._reporting(trial.trial_id):
                metrics = (worker.run_isolated if self.isolate else worker.run)(job)
        except Exception as err:
            text = str(err) if self.isolate else traceback.format_exc()
            path = Path(self.get_trial_dir(trial.trial_id), ERROR_FILE)
            files.write_atomic(path, text)
            raise kt.errors.FailedTrialError(error_line(text)) from err
        return {**metrics, "seconds": time.perf_counter() - started}

    @contextlib.contextmanager
    def _reporting(self, trial_id: str) -> Iterator[None]:
        """On a distributed worker, ask the chief for the trial every `heartbeat`
        seconds while it runs: the chief hears that the worker is alive (KerasTuner's
        worker is silent until the trial ends, however long it trains)."""
        if not self._is_worker():
            yield
            return
        stop = threading.Event()

        def report() -> None:
            while not stop.wait(self.heartbeat):
                with contextlib.suppress(Exception):  # end_trial says the chief is gone
                    self.oracle.get_trial(trial_id)

        threading.Thread(target=report, name="heartbeat", daemon=True).start()
        try:
            yield
        finally:
            stop.set()

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        if self.verbose and self._is_worker():
            print(f"worker {self.tuner_id}: trial {trial.trial_id} {trial.status}")
