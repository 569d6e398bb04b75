"""Run one trial: build, fit with early stopping, report the best epoch's metrics.

`run` trains in the calling process. `run_isolated` runs the same function in a
fresh child process forked from a multiprocessing *forkserver* that imported
TensorFlow once: the child starts in milliseconds, and everything a trial
allocates (graphs, datasets, allocator arenas) is returned to the system when it
exits, so the search process does not grow from trial to trial.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import re
import tempfile
import time
import traceback
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path

import keras
import keras_tuner as kt

from tuning.hypermodels import ZooHyperModel
from zoo import recipe, runs

# Imported once by the forkserver; every trial process starts with them loaded.
PRELOAD = ["tuning.search", "tensorboard.plugins.hparams.api"]


@dataclass
class TrialJob:
    """Everything a trial needs; pickled to the trial process."""

    hypermodel: ZooHyperModel
    hyperparameters: kt.HyperParameters
    trial_id: str
    objective: str
    direction: str  # "max" or "min"
    epochs: int
    initial_epoch: int = 0
    early_stopping: int | None = None
    max_model_size: int | None = None
    weights_from: str | None = None  # Hyperband: continue from this checkpoint
    weights_to: str | None = None  # checkpoint of the best epoch
    tensorboard_dir: str | None = None
    seed: int = 0


class TrialGuard(recipe.NaNGuard):
    """Stops a fit whose loss is not finite; ends the trial process when its parent
    (`parent_pid`) is gone."""

    def __init__(self, parent_pid: int | None = None) -> None:
        super().__init__()
        self.parent_pid = parent_pid

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            os._exit(1)  # the search process died (e.g. SIGKILL): stop at once
        super().on_train_batch_end(batch, logs)


def _callbacks(job: TrialJob, guard: TrialGuard) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [guard]
    if job.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                job.objective, patience=job.early_stopping, mode=job.direction
            )
        )
    if job.weights_to:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                job.weights_to,
                monitor=job.objective,
                mode=job.direction,
                save_best_only=True,
                save_weights_only=True,
            )
        )
    if job.tensorboard_dir:
        from keras_tuner.src.engine.tuner_utils import convert_hyperparams_to_hparams
        from tensorboard.plugins.hparams import api as hparams_api

        hparams = convert_hyperparams_to_hparams(job.hyperparameters, hparams_api)
        callbacks += [
            keras.callbacks.TensorBoard(job.tensorboard_dir, write_graph=False),
            hparams_api.KerasCallback(job.tensorboard_dir, hparams, job.trial_id),
        ]
    return callbacks


def run(job: TrialJob, parent_pid: int | None = None) -> dict[str, float]:
    """Train one trial in this process; metrics of the best epoch.

    Raises:
        keras_tuner.errors.FailedTrialError: Oversized model or non-finite loss.
    """
    started = time.perf_counter()
    keras.utils.set_random_seed(job.seed)
    try:
        model = job.hypermodel.build(job.hyperparameters)
        size = runs.trainable_params(model)
        if job.max_model_size and size > job.max_model_size:
            raise kt.errors.FailedTrialError(
                f"model has {size:,} trainable parameters, more than "
                f"max_model_size={job.max_model_size:,}; trial skipped."
            )
        if job.weights_from:
            model.load_weights(job.weights_from)
        guard = TrialGuard(parent_pid)
        history = job.hypermodel.fit(
            job.hyperparameters,
            model,
            epochs=job.epochs,
            initial_epoch=job.initial_epoch,
            callbacks=_callbacks(job, guard),
            verbose=0,
        ).history
        if guard.bad_epoch is not None:
            raise kt.errors.FailedTrialError(
                f"loss became NaN in epoch {guard.bad_epoch + 1}; the trial failed "
                "(learning rate too high for this configuration?)."
            )
    finally:
        keras.backend.clear_session()
    scores = history[job.objective]
    best = (max if job.direction == "max" else min)(
        range(len(scores)), key=scores.__getitem__
    )
    return {
        **{name: float(values[best]) for name, values in history.items()},
        "params": float(size),
        "epochs": float(job.initial_epoch + len(scores)),
        "best_epoch": float(job.initial_epoch + best + 1),
        "train_seconds": time.perf_counter() - started,
    }


def _child(job: TrialJob, conn) -> None:
    try:
        # The parent is the forkserver, which exits when the search process dies.
        metrics = run(job, os.getppid())
        conn.send({"metrics": metrics, "space": job.hyperparameters})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


# stderr of the forkserver and every trial process: TensorFlow's start-up chatter
# stays out of the search's output, and a process that dies before it can answer
# leaves its last words here.
_log: Path | None = None


def _context():
    global _log
    ctx = multiprocessing.get_context("forkserver")
    if _log is None:
        fd, name = tempfile.mkstemp(prefix="zoo-tuning-", suffix=".log")
        _log = Path(name)
        atexit.register(_log.unlink, missing_ok=True)
        ctx.set_forkserver_preload(PRELOAD)
        saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        try:
            forkserver.ensure_running()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return ctx


def start() -> None:
    """Start the forkserver early so its TensorFlow import overlaps other work."""
    _context()


def _death(exitcode: int | None, log_start: int) -> str:
    """Why a trial process ended without answering, from its stderr."""
    with open(_log, "rb") as log:
        log.seek(log_start)
        lines = log.read().decode(errors="replace").splitlines()
    errors = [line for line in lines if re.match(r"^\w[\w.]*(Error|Exception)\b", line)]
    cause = errors[-1] if errors else "killed, or out of memory?"
    if "bootstrapping phase" in cause:
        cause = (
            "the script that started the search runs it again on import; guard it "
            "with `if __name__ == '__main__':` or pass isolate=False"
        )
    return f"the trial process died with exit code {exitcode} ({cause})"


class TrialProcessError(RuntimeError):
    """A trial failed in its process; the message is that process's traceback."""


def run_isolated(job: TrialJob) -> dict[str, float]:
    """`run` in a fresh child process; its exception comes back as TrialProcessError.

    A child that dies without answering (killed, out of memory) fails the trial too.
    """
    ctx = _context()
    log_start = _log.stat().st_size
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(job, send), name=f"trial-{job.trial_id}")
    process.start()
    send.close()
    try:
        answer = receive.recv()
    except EOFError:
        process.join()
        answer = {"error": _death(process.exitcode, log_start)}
    finally:
        receive.close()
        if process.is_alive():
            process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
    if "error" in answer:
        raise TrialProcessError(answer["error"])
    # Hyperparameters first declared while building (KerasTuner's "new entries")
    # reach the oracle with the trial, as when the build runs in this process.
    job.hyperparameters.merge(answer["space"], overwrite=False)
    return answer["metrics"]
