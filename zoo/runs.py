"""A run directory's life: create or reopen it, fit it phase by phase, record,
checkpoint, resume, evaluate on the test split, export, summarize.

Every entry point (`training.train`, each phase of `transfer.finetune`, the tuner's
`retrain_and_export`) goes through `execute`; they differ in what they build, never
in how a run is fitted, recorded, evaluated and exported.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import data_pipelines as dp
import zoo
from zoo import cluster, evaluation, files, plots, recipe
from zoo.config import TrainConfig

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
TRANSFER_FILE = "transfer.json"
BEST_MODEL = "best.keras"
LAST_MODEL = "last.keras"
INIT_MODEL = "model_init.keras"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
# The models a finished run holds, in the order export and finetune prefer them.
RUN_MODEL_FILES = (BEST_MODEL, LAST_MODEL)
PROGRESS_FILE = "progress.json"  # in CHECKPOINTS: the one record of how far a run got
LOCK_FILE = ".lock"
# Learning curves are redrawn at most this often during a run (and at its end):
# drawing them costs more than a short epoch.
PLOT_EVERY_SECONDS = 30.0
# A checkpoint is due when the time since the last one reaches this multiple of
# what the last one cost (see RunRecorder).
CHECKPOINT_COST_RATIO = 40


@dataclass
class Phase:
    """One fit of a run: its recipe, and what it changes in the model first.

    Attributes:
        config: The phase's recipe (epochs, optimizer, learning rate, ...).
        name: Recorded in history.csv's `phase` column and metrics.json; None for
            a run of one phase (`zoo train`).
        prepare: Called on the model before the phase is compiled (e.g. freeze or
            unfreeze layers); on resume it is called again for finished phases,
            so it must only set state, never train.
    """

    config: TrainConfig
    name: str | None = None
    prepare: Callable[[keras.Model], Any] | None = None


@dataclass
class TrainResult:
    """What a run returns: its directory, test metrics, history, best model."""

    run_dir: Path
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: keras.Model
    export_dir: Path | None = None


class TrainingError(ValueError):
    """Training stopped on a condition the user must act on (e.g. a NaN loss)."""


class Run:
    """A run directory: its config, its files, its progress, and the lock held
    while `execute` runs it (released when it returns or raises, and when the
    process ends, even by SIGKILL).

    Under `--strategy multi-worker` every worker runs the same lifecycle, but only
    the chief (worker 0) writes: `writer` is False on the others, which read the
    run (to resume) and never write to it.
    """

    def __init__(self, path: Path, config: TrainConfig) -> None:
        self.path = Path(path)
        self.config = config
        self.writer = config.strategy != "multi-worker" or cluster.this_task().chief
        # Created by this process (with the parents it made): removed if it fails
        # before its first checkpoint.
        self.created: list[Path] | None = None
        self.extended = False  # reopened with a larger --epochs: train on
        self._lock = None

    @classmethod
    def create(
        cls, config: TrainConfig, path: Path | None = None, kind: str = "train"
    ) -> Run:
        """A new run directory: `path`, or `run_dir/name`, or a timestamped one."""
        root = Path(config.run_dir)
        if root.exists() and not root.is_dir():
            raise ValueError(f"run_dir {str(root)!r} is a file; pass a directory.")
        parent = path.parent if path is not None else root
        made = [p for p in (parent, *parent.parents) if not p.exists()]
        if path is not None:
            path = files.fresh_dir(path)
        elif config.name:
            path = root / config.name
            if (path / LOCK_FILE).is_file():  # a run in progress: not to resume
                files.lock(
                    path / LOCK_FILE,
                    f"run directory {str(path)!r} already exists and process "
                    "{owner} is training it; pick another --name.",
                    probe=True,
                )
            if path.exists():
                raise FileExistsError(
                    f"run directory {str(path)!r} already exists; resume it with "
                    f"zoo {kind} --resume {path} or pick another --name."
                )
            path.mkdir(parents=True)
        else:
            model = Path(config.model).stem
            path = files.timestamped_dir(root, model, files.slug(config.dataset))
        run = cls(path, config)
        run.created = made  # the parents this run made, removed with it if empty
        return run

    @classmethod
    def reopen(
        cls, path: str | os.PathLike, options: dict[str, Any], kind: str = "train"
    ) -> Run:
        """An existing run to resume; `options` may only repeat its config."""
        path = Path(path)
        saved = (
            files.read_record(path / CONFIG_FILE, "--resume") if path.is_dir() else None
        )
        if saved is None:
            raise ValueError(
                f"{str(path)!r} is not a run directory (no {CONFIG_FILE}); pass a "
                f"directory made by `zoo {kind}`."
            )
        actual = "finetune" if (path / TRANSFER_FILE).is_file() else "train"
        if actual != kind:
            raise ValueError(
                f"{str(path)!r} is a `zoo {actual}` run; resume it with zoo {actual} "
                f"--resume {path}."
            )
        # `zoo train --resume RUN --epochs N` with a larger N trains the run on.
        extended = (
            kind == "train"
            and isinstance(options.get("epochs"), int)
            and options["epochs"] > saved.get("epochs", 0)
        )
        conflicts = [
            f"{k}={v!r} (run has {saved.get(k)!r})"
            for k, v in options.items()
            if k in saved and saved[k] != v and not (k == "epochs" and extended)
        ]
        if conflicts:
            raise ValueError(
                f"--resume {path}: flags conflict with the run's config: "
                f"{', '.join(conflicts)}. Drop them, or start a new run."
            )
        legacy = path / CHECKPOINTS / "training_metadata.json"
        if legacy.is_file() and not (path / CHECKPOINTS / PROGRESS_FILE).is_file():
            raise ValueError(
                f"{str(path)!r} was checkpointed by an earlier zoo (Keras "
                "BackupAndRestore files, no progress.json); resume it with that "
                "version, or start a new run."
            )
        if extended:
            saved = {**saved, "epochs": options["epochs"]}
        run = cls(path, TrainConfig.from_dict(saved, str(path / CONFIG_FILE)))
        run.extended = extended
        dataset_info(path, "resumed")
        progress = run.progress()
        if progress["epoch"] and progress.get("workers", 1) != run.workers():
            raise ValueError(
                f"run {str(path)!r} was trained on {progress['workers']} worker(s) "
                f"and this resume has {run.workers()}; resume it with the same "
                "number of workers (TF_CONFIG), or start a new run."
            )
        if run.file(METRICS_FILE).is_file() and not extended:
            epochs = progress["epoch"]
            more = f" with a larger --epochs, or zoo finetune {path}"
            raise ValueError(
                f"run {str(path)!r} already finished ({epochs} of {epochs} epochs, "
                f"{METRICS_FILE} written); nothing to resume. Start a new run, train "
                f"it on{more if kind == 'train' else f': zoo finetune {path}'}."
            )
        if run.writer:  # refused now, before the data are loaded, if owned
            run.lock(probe=True)
        return run

    def lock(self, probe: bool = False) -> None:
        """Own the run, or refuse: two processes must never write one run.
        `probe` only checks that no other process owns it, writing nothing."""
        if not self.writer:
            return
        handle = files.lock(
            self.path / LOCK_FILE,
            f"run {str(self.path)!r} is in use by process {{owner}}; wait for it to "
            "end (or stop it) before resuming.",
            probe,
        )
        if not probe:
            self._lock = handle

    def workers(self) -> int:
        """How many workers train the run: the shards and the batches each sees
        depend on it, so a run resumes only on as many."""
        if self.config.strategy != "multi-worker":
            return 1
        return len(cluster.this_task().workers)

    def alone(self, write: Callable[..., Any], *args, **kwargs) -> Any:
        """Call `write` (a save only the chief does), under multi-worker outside
        the strategy's scope: Keras' saving creates variables (a reference
        Optimizer each time), which under the strategy every worker would have
        to create alike. Scopes are per thread, so a thread of its own is
        outside."""
        if self.config.strategy != "multi-worker":
            return write(*args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            return thread.submit(write, *args, **kwargs).result()

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def discard_if_empty(self) -> None:
        """Remove a run this process created when no epoch was checkpointed: an
        error before training (a model that does not fit the data, say) leaves
        nothing half-written behind."""
        if (
            self.created is not None
            and not (self.checkpoints / PROGRESS_FILE).is_file()
        ):
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.created:
                with contextlib.suppress(OSError):  # not empty: someone else's too
                    parent.rmdir()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: Any) -> None:
        files.write_json(self.path / name, data)

    def read_json(self, name: str) -> Any:
        return files.read_json(self.path / name)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def progress(self) -> dict[str, Any]:
        """How far the run got: finished epochs, phases done, the history rows, and
        the checkpoint files of the last and the best epoch (empty when new)."""
        path = self.checkpoints / PROGRESS_FILE
        saved = files.read_record(path, "--resume")
        if saved is None:
            return {"epoch": 0, "done": [], "rows": []}
        problem = _progress_problem(saved, self.checkpoints)
        if problem:
            raise ValueError(
                f"'{path}' is damaged: {problem}; the run cannot be resumed from it. "
                "Restore the checkpoints/ folder from a copy, or start a new run."
            )
        return saved


def _progress_problem(saved: dict[str, Any], checkpoints: Path) -> str | None:
    """What is wrong with a progress.json, or None: its epoch counter, history
    rows and checkpoint files must agree."""
    epoch, rows = saved.get("epoch"), saved.get("rows")
    if not isinstance(epoch, int) or epoch < 0:
        return f"epoch is {epoch!r}, not a count of epochs"
    if not isinstance(rows, list) or len(rows) != epoch:
        count = len(rows) if isinstance(rows, list) else rows
        return f"{count} history rows for {epoch} finished epochs"
    if not isinstance(saved.get("done"), list):
        return f"done is {saved.get('done')!r}, not a list of phases"
    for key in ("weights", "best"):
        name = saved.get(key)
        needed = key == "weights" and bool(epoch or saved["done"])
        if (name is not None or needed) and not (
            isinstance(name, str) and (checkpoints / name).is_file()
        ):
            return f"its {key} checkpoint {name!r} is missing"
    return None


def dataset_info(
    run_dir: str | os.PathLike, action: str, hint: str = ""
) -> dp.DatasetInfo:
    """A run's dataset.json: the input size, preprocessing and classes its model
    was trained with. A run cannot be exported, evaluated or resumed faithfully
    without it, so a missing or damaged file is refused in one line naming it."""
    path = Path(run_dir) / DATASET_FILE
    data = files.read_record(path, f"a run to be {action}")
    if data is None:
        raise FileNotFoundError(
            f"run directory '{run_dir}' has no {DATASET_FILE} (the input size, "
            f"preprocessing and classes of its data), so it cannot be {action} "
            f"faithfully. Restore the file from a copy of the run{hint}."
        )
    try:
        info = dp.DatasetInfo.from_dict(data)
        shapes = [*info.input_shape, *info.raw_shape, info.num_classes]
    except (KeyError, TypeError, ValueError) as err:
        problem = f"missing {err}" if isinstance(err, KeyError) else files.brief(err)
    else:
        bad = [d for d in shapes if not isinstance(d, int) or d < 1]
        if not bad:
            return info
        problem = f"shapes and class counts must be positive ints, not {bad}"
    raise ValueError(
        f"'{path}' is damaged ({problem}): it does not describe the run's data. "
        "Restore it from a copy of the run."
    )


def load_weights(model: keras.Model, path: Path) -> None:
    """Layer weights and, when the optimizer matches, its state. A checkpoint of
    another phase holds another optimizer's state, which Keras skips with a
    warning; the layer weights are what is wanted then. A best epoch kept in
    memory until a checkpoint is a `.npz` of `model.get_weights()`."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as saved:
                model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model.load_weights(path)
    except Exception as err:  # h5py, zipfile and Keras raise many types
        raise ValueError(
            f"cannot load the checkpoint '{path}': {files.brief(err)}. It is "
            "damaged; restore the checkpoints/ folder from a copy, or start a new run."
        ) from None


class RunRecorder(recipe.NaNGuard):
    """Records a run: history.csv every epoch; a checkpoint (weights with optimizer
    state, and the best epoch's weights) then progress.json, the source of truth,
    when one is due; the curves every PLOT_EVERY_SECONDS.

    A checkpoint is due when the time since the last one is CHECKPOINT_COST_RATIO
    times what the last one cost: every epoch when epochs are long, every few
    when they are short, so checkpoints take at most ~2.5 % of a run; a resume is
    exact either way (it replays from the checkpoint). Every write is atomic, so a
    kill at any point leaves a resumable run. Keras' BackupAndRestore writes its
    epoch file in place after the weights (a kill between the two resumes the
    wrong epoch); CSVLogger and ModelCheckpoint write in place too.
    """

    def __init__(self, run: Run, progress: dict[str, Any], started: float) -> None:
        super().__init__()
        self.run = run
        self.state = progress
        # Wall time of the work checkpointed by earlier sessions, and when this one
        # started: a resumed run reports the time its epochs took once.
        self.earlier_seconds = progress.get("seconds", 0.0)
        self.started = started
        self.rows: list[dict[str, Any]] = list(progress["rows"])
        self.phase: str | None = None
        self.best: tuple[int, list] | None = None  # not yet checkpointed
        self.plotted = self.saved = time.monotonic()
        self.save_cost = 0.0
        if self.rows and run.writer:  # resumed: later epochs will be re-run
            self.write_history()

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = dict(logs or {})
        if self.bad_epoch is not None or not all(
            math.isfinite(float(v)) for v in logs.values()
        ):
            self.bad_epoch = epoch if self.bad_epoch is None else self.bad_epoch
            self.model.stop_training = True
            return
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        row = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
        if self.phase is not None:
            row["phase"] = self.phase
        if evaluation.is_best(row, self.rows):
            self.best = (epoch + 1, self.model.get_weights())
        self.rows.append(row)
        self.write_history()
        if not self.run.writer:
            return
        if self.due():
            self.run.alone(self.checkpoint)
        if time.monotonic() - self.plotted > PLOT_EVERY_SECONDS:
            self.plot()

    def on_train_batch_end(self, batch, logs=None) -> None:
        # Under multi-worker a batch's loss is this worker's own: only the
        # epoch's, the same on every worker, may stop them (all together).
        if self.run.config.strategy != "multi-worker":
            super().on_train_batch_end(batch, logs)

    def due(self) -> bool:
        """Whether this epoch gets a checkpoint: every `checkpoint_every` epochs if
        the config says so, else when CHECKPOINT_COST_RATIO allows."""
        every = self.run.config.checkpoint_every
        if every:
            return (len(self.rows) - self.state["epoch"]) >= every
        return time.monotonic() - self.saved >= CHECKPOINT_COST_RATIO * self.save_cost

    def end_phase(self) -> None:
        """Record the phase as done, with the model as the phase left it (after
        EarlyStopping restored its best weights, for example)."""
        if self.run.writer:
            self.run.alone(self.checkpoint, done=[*self.state["done"], self.phase])

    def checkpoint(self, done: list[str | None] | None = None) -> None:
        """Write the latest weights and the best epoch's, then progress.json;
        `done`: the phases finished, when this checkpoint ends one."""
        started = time.monotonic()
        ckpt = self.run.checkpoints
        ckpt.mkdir(exist_ok=True)
        epoch = len(self.rows)
        name = f"end-{epoch}.weights.h5" if done else f"epoch-{epoch:04d}.weights.h5"
        files.save_weights(self.model, ckpt / name)
        best = self.state.get("best")
        if self.best is not None:
            best_epoch, weights = self.best
            if best_epoch == epoch and not done:  # the same weights as `name`
                best = name
            else:
                best = f"best-{best_epoch:04d}.npz"
                with files.atomic_path(ckpt / best) as tmp:
                    np.savez(tmp, *weights)
            self.best = None
        self.state.update(
            done=done or self.state["done"],
            epoch=epoch,
            phase=self.phase,
            weights=name,
            best=best,
            rows=self.rows,
            seconds=round(self.seconds(), 2),
        )
        files.write_json(ckpt / PROGRESS_FILE, self.state)
        for path in ckpt.iterdir():
            if path.name not in {name, best, PROGRESS_FILE}:
                path.unlink()
        self.saved = time.monotonic()
        self.save_cost = self.saved - started

    def seconds(self) -> float:
        """The run's wall time so far, over every session."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def write_history(self) -> None:
        """history.csv from the rows (the csv module: pandas takes ~10x longer)."""
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        files.write_atomic(self.run.file(HISTORY_FILE), text.getvalue())

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def plot(self) -> None:
        if not self.run.writer:
            return
        plots.plot_curves(self.history(), self.run.path)
        self.plotted = time.monotonic()


def _replay_data_order(dataset: tf.data.Dataset, epochs: int) -> None:
    """Advance a resumed run's input pipeline past its finished epochs.

    Each iter() of a reshuffling tf.data dataset draws the next order, and Keras
    3.15's fit creates two per epoch (one it consumes, one at its end). Creating as
    many as the finished epochs did replays their data order (tested). Random
    augmentation layers also advance their random state with every batch, and that
    state is in no checkpoint: consuming the first iterator again replays it too
    (one pass over the data per finished epoch, no training).
    """
    for _ in range(epochs):
        for _ in dataset:
            pass
        iter(dataset)


def trainable_params(model: keras.Model) -> int:
    """Number of parameters the optimizer will update."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _fit_phases(
    run: Run,
    model: keras.Model,
    splits: dp.Splits,
    phases: Sequence[Phase],
    recorder: RunRecorder,
    verbose: int,
) -> dict[str, int]:
    """Fit every phase not done yet, resuming a started one from its checkpoint;
    the trainable parameters of each phase."""
    progress, trainable = recorder.state, {}
    # Averaging goes first: the recorder saves what it leaves.
    multi_worker = run.config.strategy == "multi-worker"
    watch = [cluster.average_moving_statistics()] if multi_worker else []
    watch.append(recorder)
    # TensorBoard creates a step variable under the strategy, which every worker
    # must do alike: the others log to a temporary folder, removed at the end (as
    # TensorFlow's multi-worker guide does with their checkpoints).
    with contextlib.ExitStack() as temporary:
        board = (
            run.file(TENSORBOARD)
            if run.writer
            else temporary.enter_context(tempfile.TemporaryDirectory())
        )
        watch.append(keras.callbacks.TensorBoard(str(board)))
        if run.writer and run.config.generative:
            from zoo import generative

            images = generative.first_images(
                splits.val if splits.val is not None else splits.train,
                generative.RECONSTRUCTIONS,
            )
            watch.append(generative.Figures(run.path, images))
        replayed = False
        for phase in phases:
            if phase.prepare is not None:
                phase.prepare(model)
            trainable[phase.name] = trainable_params(model)
            if phase.name in progress["done"]:
                continue
            checkpoint = (
                progress.get("weights") and run.checkpoints / progress["weights"]
            )
            started = checkpoint and progress.get("phase") == phase.name
            if checkpoint and not started:  # the previous phase's end
                load_weights(model, checkpoint)
            recipe.compile_model(model, phase.config, splits.info)
            if started:  # weights and this phase's optimizer state
                model.optimizer.build(model.trainable_variables)
                load_weights(model, checkpoint)
            first = sum(r.get("phase") != phase.name for r in recorder.rows)
            if not replayed:
                _replay_data_order(splits.train, len(recorder.rows))
                replayed = True
            recorder.phase = phase.name
            model.fit(
                splits.train,
                validation_data=splits.val,
                initial_epoch=len(recorder.rows),
                epochs=first + phase.config.epochs,
                callbacks=[*watch, *recipe.callbacks(phase.config)],
                verbose=verbose,
                shuffle=False,
            )
            if recorder.bad_epoch is not None:
                _stop_on_nan(run, model, recorder, phase)
            recorder.end_phase()
        if not replayed and progress.get("weights"):  # every phase was done before
            recipe.compile_model(model, phases[-1].config, splits.info)
            model.optimizer.build(model.trainable_variables)
            load_weights(model, run.checkpoints / progress["weights"])
        return trainable


def _stop_on_nan(run: Run, model: keras.Model, recorder: RunRecorder, phase: Phase):
    """Keep the last good epoch as last/best.keras (or remove a run that has
    none), then raise a TrainingError that says what to try."""
    where = f" ({phase.name} phase)" if phase.name else ""
    if not run.writer:
        kept = f"Worker 0 keeps the last good checkpoint in {run.path}."
    elif recorder.state.get("weights"):
        run.alone(_write_models, run, model, recorder, reload=True)
        kept = (
            f"The last good checkpoint (epoch {recorder.state['epoch']}) is "
            f"{run.file(LAST_MODEL)}."
        )
    else:  # nothing to resume from: execute removes the run (discard_if_empty)
        kept = f"No epoch ended with a finite loss: nothing kept ({run.path} removed)."
    raise TrainingError(
        f"loss became NaN in epoch {recorder.bad_epoch + 1}{where}; training "
        f"stopped. {kept} Try a lower learning rate (now "
        f"{phase.config.learning_rate:g})."
    )


def _write_models(
    run: Run, model: keras.Model, recorder: RunRecorder, reload: bool = False
) -> None:
    """last.keras and best.keras (the best epoch's weights, from memory if no
    checkpoint holds them yet). `model` holds the latest checkpoint's state, or
    is reloaded from it (`reload`, after a NaN)."""
    if not run.writer:
        return
    progress = recorder.state
    if reload:
        load_weights(model, run.checkpoints / progress["weights"])
    files.save_model(model, run.file(LAST_MODEL))
    if recorder.best is not None:
        model.set_weights(recorder.best[1])
    elif progress.get("best") and progress["best"] != progress["weights"]:
        load_weights(model, run.checkpoints / progress["best"])
    files.save_model(model, run.file(BEST_MODEL))


def execute(
    run: Run,
    splits: dp.Splits,
    build: Callable[[], keras.Model],
    phases: Sequence[Phase],
    *,
    save_init: bool = False,
    extra_metrics: dict[str, Any] | None = None,
    verbose: int | str = "auto",
    started: float | None = None,
) -> TrainResult:
    """The one lifecycle of a run: fit its phases (resuming from its checkpoint),
    write last/best.keras and the curves, evaluate best.keras on the test split,
    write metrics.json, export when the config asks, print the summary line.

    Args:
        run: A new or reopened run (config.json and dataset.json written).
        splits: The data; `splits.val` may be None (no validation: the last
            epoch is the best).
        build: Makes the model, inside the strategy scope and dtype policy.
        phases: The fits, in order (one for `zoo train`).
        save_init: Save the built model as model_init.keras, so a resume
            rebuilds it from there (a model the config cannot rebuild).
        extra_metrics: Added to metrics.json.
        verbose: Keras verbosity; "auto" is a progress bar on a terminal and a
            line per epoch otherwise.
        started: `time.perf_counter()` when the run began (default: now).
    """
    started = time.perf_counter() if started is None else started
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    config = run.config
    run.lock()
    evaluated = False
    previous_policy = keras.mixed_precision.dtype_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    try:
        strategy = recipe.distribution(config)
        with strategy.scope():
            model = _initial_model(run, build, save_init)
            recorder = RunRecorder(run, _progress(run), started)
            recorder.state["workers"] = run.workers()
            trainable = _fit_phases(run, model, splits, phases, recorder, verbose)
            recorder.plot()
            run.alone(_write_models, run, model, recorder)
        if not run.writer:  # a worker other than the chief: done
            print(f"{cluster.this_task()}: done; worker 0 writes the run {run.path}")
            metrics = evaluation.epoch_metrics(recorder.rows, trainable)
            return TrainResult(run.path, metrics, recorder.history(), model)
        best = zoo.load_model(run.file(BEST_MODEL))
        metrics = {
            **evaluation.evaluate_test(run.path, best, splits, config.task),
            "params": int(best.count_params()),
            **evaluation.epoch_metrics(recorder.rows, trainable),
        }
        evaluated = True
    except KeyboardInterrupt as interrupt:
        interrupt.run_dir = run.path  # the CLI's hint names the run to resume
        raise
    except Exception as err:
        run.discard_if_empty()
        if (run.checkpoints / PROGRESS_FILE).is_file():  # resumable (a full disk)
            err.run_dir = run.path
        if config.strategy == "multi-worker" and isinstance(err, tf.errors.OpError):
            raise cluster.lost(err, run.path) from None
        raise
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        if not evaluated:  # failed or interrupted: the run is free again
            run.unlock()
    try:
        metrics.update(extra_metrics or {})
        metrics["wall_time_s"] = round(recorder.seconds(), 2)
        metrics["replicas"] = strategy.num_replicas_in_sync
        run.write_json(METRICS_FILE, metrics)
        export_dir = None
        if config.export:
            from zoo import export

            export_dir = export.export_saved_model(run.path, config.export)
    finally:
        run.unlock()
    print(evaluation.summary(config, run.path, metrics, export_dir))
    return TrainResult(run.path, metrics, recorder.history(), best, export_dir)


def _progress(run: Run) -> dict[str, Any]:
    """The run's progress; a run given a larger --epochs is not done any more
    (its config records the new target, its old metrics.json goes)."""
    progress = run.progress()
    if run.extended:
        progress["done"] = []
        if run.writer:
            run.write_json(CONFIG_FILE, run.config.to_dict())
            run.file(METRICS_FILE).unlink(missing_ok=True)
    return progress


def _initial_model(
    run: Run, build: Callable[[], keras.Model], save_init: bool
) -> keras.Model:
    init = run.file(INIT_MODEL)
    if init.is_file():  # a resumed run whose model the config cannot rebuild
        return zoo.load_model(init)
    model = build()
    if save_init and run.writer:
        run.alone(files.save_model, model, init)
    return model


def start(
    config: TrainConfig,
    splits: dp.Splits,
    *,
    kind: str = "train",
    path: Path | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Run:
    """Create a run directory with config.json, dataset.json and `extra_files`
    (name: JSON data, e.g. transfer.json); `kind` is the command that resumes it.
    Under multi-worker the chief creates it and tells the other workers where."""
    if config.strategy == "multi-worker" and not cluster.this_task().chief:
        return Run(Path(cluster.from_chief("")), config)
    run = Run.create(config, path, kind)
    run.write_json(CONFIG_FILE, config.to_dict())
    run.write_json(DATASET_FILE, splits.info.to_dict())
    for name, data in (extra_files or {}).items():
        run.write_json(name, data)
    if config.strategy == "multi-worker":
        cluster.from_chief(str(run.path))
    return run
