"""The worker side of a search: `ZooTuner` runs one trial per child process."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import keras_tuner as kt

from tuning import hypermodels, worker
from tuning.results import ERROR_FILE, error_line
from zoo import files

# Seconds a tuner waits before asking again when the oracle answered IDLE.
IDLE_POLL_SECONDS = 0.5


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
            files.write_atomic(path, text)
            raise kt.errors.FailedTrialError(error_line(text)) from err
        return {**metrics, "seconds": time.perf_counter() - started}

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        if self.verbose and self._is_worker():
            print(f"worker {self.tuner_id}: trial {trial.trial_id} {trial.status}")
