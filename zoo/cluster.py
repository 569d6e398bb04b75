"""Multi-worker training (`--strategy multi-worker`): the cluster TF_CONFIG names,
tf.distribute.MultiWorkerMirroredStrategy over it, and what Keras 3 needs to fit
under that strategy.

Keras 3.15's `model.fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585, open: "Attempt to convert a value (PerReplica...)").
Two functions of its TensorFlow trainer are at fault, and `_fit_under_workers`
overrides exactly those two (see there); the rest of `fit` (callbacks, progress
bars, validation, the run lifecycle) works unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)
# How long a worker waits for every other worker to come up before it gives up:
# ZOO_CLUSTER_TIMEOUT seconds (pods of one job may start minutes apart).
DEFAULT_CLUSTER_TIMEOUT = 300.0


@dataclass(frozen=True)
class Task:
    """This process's place in the cluster: every worker's address (a `chief`
    first, if the cluster names one) and the index of this one among them."""

    workers: tuple[str, ...]
    index: int

    @property
    def chief(self) -> bool:
        """Worker 0 writes the run; the others only compute."""
        return self.index == 0

    def __str__(self) -> str:
        return f"worker {self.index} of {len(self.workers)}"


def _tf_config_error(problem: str) -> ValueError:
    return ValueError(
        f"--strategy multi-worker: {problem}. Set TF_CONFIG to JSON naming every "
        f"worker's host:port and this task, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' "
        "(the same cluster on every worker, index 0, 1, ...; see "
        "docs/distributed.md)."
    )


def this_task(environ: dict[str, str] | None = None) -> Task:
    """The cluster and this task, from TF_CONFIG (as Kubernetes' TFJob, Vertex AI
    and SageMaker set it); one line saying what is wrong with it otherwise."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        raise _tf_config_error("TF_CONFIG is not set")
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _tf_config_error(f"TF_CONFIG is not valid JSON ({err})") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise _tf_config_error("TF_CONFIG needs a 'cluster' and a 'task' object")
    jobs = set(cluster) - {"chief", "worker"}
    if jobs:
        raise _tf_config_error(
            f"TF_CONFIG's cluster names {', '.join(sorted(jobs))}; "
            "MultiWorkerMirroredStrategy runs only 'worker' (and one 'chief') tasks"
        )
    chief, workers = cluster.get("chief", []), cluster.get("worker", [])
    addresses = [*chief, *workers]
    if len(chief) > 1 or not addresses:
        raise _tf_config_error(
            "TF_CONFIG's cluster needs a list of 'worker' addresses (and at most "
            f"one 'chief'); it has {json.dumps(cluster)}"
        )
    for address in addresses:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit():
            raise _tf_config_error(f"{address!r} in TF_CONFIG is not host:port")
    kind, index = task.get("type"), task.get("index", 0)
    jobs = {"chief": chief, "worker": workers}
    if kind not in jobs or not isinstance(index, int):
        raise _tf_config_error(
            f"TF_CONFIG's task is {json.dumps(task)}; it needs a type ('worker' or "
            "'chief') and an integer index"
        )
    if not 0 <= index < len(jobs[kind]):
        raise _tf_config_error(
            f"TF_CONFIG's task is {kind} {index}, outside the cluster's "
            f"{len(jobs[kind])} {kind} address(es)"
        )
    return Task(tuple(addresses), index + (len(chief) if kind == "worker" else 0))


def wait_for_workers(task: Task, timeout: float) -> None:
    """Return once every other worker accepts connections, or raise after
    `timeout` seconds naming the ones that never did.

    TensorFlow waits for missing workers forever, and in C++ (no Python timer or
    signal can interrupt it), so a worker whose peer is unreachable would hang.
    Each worker listens on its own address while it waits, so the workers find
    each other whatever order they start in; the listener is closed before
    TensorFlow binds that port.
    """
    port = task.workers[task.index].rsplit(":", 1)[1]
    try:
        listener = socket.create_server(("", int(port)))
    except OSError as err:
        raise ValueError(
            f"{task}: cannot listen on {task.workers[task.index]}, this worker's "
            f"address in TF_CONFIG ({os.strerror(err.errno)}); free the port or "
            "give this worker another one in every worker's TF_CONFIG."
        ) from None
    listener.setblocking(False)
    waiting = {a for i, a in enumerate(task.workers) if i != task.index}
    deadline = time.monotonic() + timeout
    try:
        while waiting:
            with contextlib.suppress(BlockingIOError):
                listener.accept()[0].close()
            for address in sorted(waiting):
                peer_host, peer_port = address.rsplit(":", 1)
                try:
                    socket.create_connection((peer_host, int(peer_port)), 1).close()
                    waiting.discard(address)
                except OSError:
                    pass
            if waiting and time.monotonic() > deadline:
                raise ValueError(
                    f"{task}: no answer from {', '.join(sorted(waiting))} within "
                    f"{timeout:g} s; start every worker of TF_CONFIG (or check "
                    "their addresses and firewalls), or wait longer with "
                    "ZOO_CLUSTER_TIMEOUT=SECONDS."
                )
            if waiting:
                time.sleep(0.2)
        # Answer the others for as long as they may still be looking.
        linger = time.monotonic() + 2.0
        while time.monotonic() < linger:
            with contextlib.suppress(BlockingIOError):
                listener.accept()[0].close()
            time.sleep(0.05)
    finally:
        listener.close()


@functools.cache
def strategy():
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster, made once per
    process and before any TensorFlow op (it configures the runtime)."""
    task = this_task()
    raw = os.environ.get("ZOO_CLUSTER_TIMEOUT", str(DEFAULT_CLUSTER_TIMEOUT))
    try:
        timeout = float(raw)
    except ValueError:
        raise ValueError(
            f"ZOO_CLUSTER_TIMEOUT={raw!r} is not a number of seconds; set it to "
            f"e.g. 600, or unset it for {DEFAULT_CLUSTER_TIMEOUT:g}."
        ) from None
    wait_for_workers(task, timeout)
    import tensorflow as tf

    _fit_under_workers()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _fit_under_workers() -> None:
    """Override the two functions of Keras 3.15's TensorFlow trainer that fail
    under MultiWorkerMirroredStrategy (keras-team/keras#20585):

    - `_maybe_symbolic_build` builds the model from a batch that it first
      averages over the replicas with `strategy.reduce`, which fails on the
      per-replica batch of a multi-worker dataset; the batch only gives shapes,
      so this worker's own part serves.
    - `reduce_per_replica` averages each step's metric values over the workers
      with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars. Each
      step's values stay this worker's own instead: an all-reduce per metric and
      step costs more than the step itself here (measured: 0.3x the images/s),
      and the values that matter are exact without it: Keras reads each epoch's
      logs, and evaluate's, from the metrics' variables, which are summed over
      the workers when read (one all-reduce per epoch). Only the per-step
      progress bar shows this worker's own running values.

    A third change takes the destruction of spent input iterators off the
    training thread (`_IteratorReaper`): Keras makes two iterators per epoch and
    drops the last epoch's when the next one starts, and under this strategy that
    drop blocked the training thread for up to the epoch's length.

    All three act only under a multi-worker strategy.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_zoo_multi_worker", False):
        return
    build, reduce = (
        trainer.TensorFlowTrainer._maybe_symbolic_build,
        (trainer.reduce_per_replica),
    )

    def multi_worker(strategy) -> bool:
        return trainer._collective_all_reduce_multi_worker(strategy)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not multi_worker(self.distribute_strategy):
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:  # one batch, as Keras takes it
            batch = next(it)
            break
        local = self.distribute_strategy.experimental_local_results
        return build(
            self,
            data_batch=tree.map_structure(
                lambda v: (
                    local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
                ),
                batch,
            ),
        )

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            local = strategy.experimental_local_results
            return tree.map_structure(lambda v: local(v)[0], values)
        return reduce(values, strategy, reduction)

    get_iterator = trainer.TFEpochIterator._get_iterator

    def reaped_iterators(self):
        dataset = get_iterator(self)
        if not multi_worker(self._distribute_strategy):
            return dataset
        return _Reaped(dataset)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TFEpochIterator._get_iterator = reaped_iterators
    trainer._zoo_multi_worker = True


class _Reaped:
    """A distributed dataset whose iterators the reaper holds (and destroys)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        iterator = iter(self.dataset)
        _reaper().hold(iterator)
        return iterator


class _IteratorReaper:
    """Destroys the input iterators Keras has dropped, in a thread of its own.

    Destroying a tf.data iterator joins its autotuning thread, which sleeps until
    its next tuning round (the interval doubles from 10 ms up to a minute), and
    the cancellation meant to wake it can lose a race: TensorFlow's
    CancellationManager runs its callbacks (the wake-up) before it marks itself
    cancelled, so a thread that wakes and checks in between sleeps on. Under
    this strategy every iterator is a MultiDeviceIterator with two such threads,
    and on busy cores the race was often lost: the training thread, which drops
    the last epoch's iterator as the next epoch starts, waited there for
    seconds, and the other workers waited for it in the first collective.
    Holding each iterator here and dropping it from this thread once Keras has
    let go of it (the destructor releases the GIL) leaves the training thread
    free; the iterators are the same, made in the same order.

    The thread is not a daemon (a daemon thread inside TensorFlow's destructors
    at exit aborts the process): it ends once the main thread has, dropping what
    it still holds.
    """

    def __init__(self):
        self.held: list = []
        self.lock = threading.Lock()
        threading.Thread(target=self.run, name="zoo-reaper").start()

    def hold(self, iterator) -> None:
        with self.lock:
            self.held.append(iterator)

    def run(self) -> None:
        while threading.main_thread().is_alive():
            time.sleep(REAP_EVERY_SECONDS)
            with self.lock:
                # getrefcount counts the list's reference and its own argument's.
                held = range(len(self.held))
                spent = [i for i in held if sys.getrefcount(self.held[i]) <= 2]
                dropped = [self.held.pop(i) for i in reversed(spent)]
            dropped.clear()  # the destructors run here, off the training thread
        with self.lock:
            dropped, self.held = self.held, []
        dropped.clear()


# How often the reaper looks for iterators Keras has dropped.
REAP_EVERY_SECONDS = 0.2


@functools.cache
def _reaper() -> _IteratorReaper:
    return _IteratorReaper()


def average_moving_statistics():
    """A callback that averages the batch-norm moving statistics over the workers
    before each validation and at each epoch's end.

    Keras 3 updates them from each replica's own batches and never aggregates
    them (Keras 2 all-reduced every update), so the workers' copies drift apart
    while their trained weights stay identical; one all-reduce per epoch makes
    every worker (and the chief's saved models) hold the same, averaged values.
    """
    import keras
    import tensorflow as tf

    class AverageMovingStatistics(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.variables = self.mean = None

        def _average(self):
            if self.variables is None:  # the first call: what to average, how
                self.variables = [
                    v
                    for layer in self.model._flatten_layers()
                    if isinstance(layer, keras.layers.BatchNormalization)
                    for v in (layer.moving_mean, layer.moving_variance)
                ]
                strategy = self.model.distribute_strategy

                def mean(*local):
                    flat = tf.concat([tf.reshape(v, [-1]) for v in local], 0)
                    return tf.distribute.get_replica_context().all_reduce("MEAN", flat)

                self.mean = tf.function(
                    lambda *local: strategy.experimental_local_results(
                        strategy.run(mean, local)
                    )[0]
                )
            if not self.variables:
                return
            flat = self.mean(*(v.value for v in self.variables))
            sizes = [math.prod(v.shape) for v in self.variables]
            for variable, part in zip(
                self.variables, tf.split(flat, sizes), strict=True
            ):
                variable.assign(tf.reshape(part, variable.shape))

        def on_test_begin(self, logs=None):
            self._average()

        def on_epoch_end(self, epoch, logs=None):
            self._average()

    return AverageMovingStatistics()


# Longest text `from_chief` carries (a run directory's path).
MAX_TEXT_BYTES = 4096


def from_chief(text: str) -> str:
    """The chief's `text` on every worker (the others pass anything): one
    all-reduce in which only the chief's bytes are not zero."""
    import numpy as np
    import tensorflow as tf

    data = np.zeros(MAX_TEXT_BYTES, np.int32)
    if this_task().chief:
        raw = text.encode()[:MAX_TEXT_BYTES]
        data[: len(raw)] = np.frombuffer(raw, np.uint8)
    workers = strategy()
    value = tf.constant(data)

    def total():
        return tf.distribute.get_replica_context().all_reduce("SUM", value)

    try:
        summed = workers.experimental_local_results(tf.function(workers.run)(total))[0]
    except tf.errors.OpError as err:
        raise lost(err, None) from None
    return bytes(summed.numpy().astype(np.uint8)).rstrip(b"\0").decode()


def lost(error: Exception, run_dir) -> ValueError:
    """One line for a collective that failed because a worker stopped (killed,
    crashed, unreachable): which one and why, as TensorFlow tells, and how to go
    on."""
    text = str(getattr(error, "message", error))
    task = r"/job:(\w+)/replica:\d+/task:(\d+)"
    unhealthy = re.findall(task, text.partition("unhealthy")[2])
    remote = re.search(r"remote target " + task, text)
    aborted = re.search(r"aborted by: ([^\n]+)", text)
    if unhealthy:
        names = ", ".join(f"{job} {i}" for job, i in sorted(set(unhealthy)))
        reason = f"{names} stopped sending heartbeats"
    elif remote and aborted:
        reason = f"{remote[1]} {remote[2]}: {aborted[1].strip()}"
    elif aborted:
        reason = aborted[1].strip()
    else:  # TensorFlow puts the error itself on the last line
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[-1] if lines else type(error).__name__
    then = f"zoo train --resume {run_dir}" if run_dir else "the same command"
    return ValueError(
        f"{this_task()}: the cluster lost a worker ({reason[:240]}); training "
        f"stopped. Restart every worker with {then} (docs/distributed.md)."
    )
