"""Distributed tuning: the chief serves KerasTuner's oracle over gRPC, workers
connect to it; the settings KerasTuner reads from the environment."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import socket
import time
import warnings
from collections.abc import Iterator
from concurrent import futures
from typing import TYPE_CHECKING

from sklearn.exceptions import ConvergenceWarning

if TYPE_CHECKING:
    from tuning.results import RecordingOracle

ROLES = ("chief", "worker")
# A worker id is a file name in the search directory (KerasTuner's
# `trials/<tuner id>.json`) and a key of the chief's bookkeeping: a plain name.
_WORKER_ID = re.compile(r"[A-Za-z0-9_-]+")
_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def check_worker_id(worker_id: object) -> str:
    """A worker's id, refused unless it is a plain name without "chief" in it."""
    if (
        not isinstance(worker_id, str)
        or not _WORKER_ID.fullmatch(worker_id)
        or "chief" in worker_id
    ):
        raise ValueError(
            "a worker needs a unique --worker-id: a plain name of letters, digits, "
            f"'-' and '_', without 'chief' in it; received {worker_id!r}. Pass e.g. "
            "--worker-id w1."
        )
    return worker_id


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
def kerastuner_settings(
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


def wait_for_oracle(address: str, timeout: float) -> None:
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


def serve_oracle(oracle: RecordingOracle, address: str, idle_timeout: float) -> None:
    """The chief: KerasTuner's gRPC oracle service until the budget is spent, every
    trial has ended and every worker was told to stop (as
    `oracle_chief.start_server`, plus a clean shutdown and bounded waits).

    A worker that has not been heard from for `idle_timeout` seconds (workers ask
    for trials, and report every few seconds while one runs) is given up: its trial
    fails. A request with a malformed id or the id of another running worker is
    refused; KerasTuner would register a trial that nobody runs, or hand the same
    trial to both workers.

    Raises:
        ValueError: When no worker asked for a trial for `idle_timeout` seconds
            while none was running.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    class Servicer(oracle_chief.OracleServicer):
        def CreateTrial(self, request, context):
            try:
                refusal = oracle.refusal(check_worker_id(request.tuner_id))
            except ValueError as err:
                refusal = str(err)
            if refusal:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)
            return super().CreateTrial(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = Servicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    try:
        while True:
            oracle.drop_silent_tuners(idle_timeout)
            stopping = servicer.stop_triggered or oracle.budget_spent()
            if stopping and oracle_chief.exit_chief(oracle):
                break
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


def check_can_listen(address: str) -> None:
    """Refuse an address the chief cannot listen on, before anything is loaded. The
    probe binds as gRPC does (SO_REUSEADDR): the port of a chief that just ended
    (its connections in TIME_WAIT for a minute) is free for a new one."""
    host, port = parse_address(address)
    try:
        family = socket.getaddrinfo(host, port)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise ValueError(
            f"the chief cannot listen on {address}: {err.strerror or err}; pick "
            "another --oracle-address (a free port on this machine)."
        ) from None
