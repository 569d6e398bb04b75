"""`--strategy multi-worker`: real worker processes on loopback ports chosen free at
test time, MultiWorkerMirroredStrategy between them, the chief writing the run."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import RUN_FILES
from test_training import one_line_error, zoo_main

import zoo
from zoo import cluster

# Every worker of these tests trains this; `digits` at 16x16 keeps epochs short.
TRAIN = ["--dataset", "digits", "--batch-size", "64"]
# A worker through the Python API, saving the weights it ends with (what the chief
# saves as last.keras), so the test can compare the workers.
WORKER = """
import sys, numpy as np
from zoo import training
result = training.train(sys.argv[1], "digits", image_size=int(sys.argv[5]),
                        epochs=int(sys.argv[2]),
                        strategy="multi-worker", run_dir=sys.argv[3], name="run",
                        deterministic=True, verbose=2)
np.savez(sys.argv[4], *result.model.get_weights())
"""


def free_ports(n):
    """Ports free on 127.0.0.1 now (the workers bind them a moment later)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index):
    workers = [f"127.0.0.1:{p}" for p in ports]
    return json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    )


def start_workers(argvs, ports, tmp_path, **env):
    """One process per argv, worker i with TF_CONFIG index i; worker 1 and up get
    their own TMPDIR, which must be empty when they are done."""
    procs = []
    for i, argv in enumerate(argvs):
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir(exist_ok=True)
        procs.append(
            subprocess.Popen(
                [sys.executable, *map(str, argv)],
                env={
                    **os.environ,
                    "TF_CONFIG": tf_config(ports, i),
                    "TMPDIR": str(tmp),
                    "PYTHONUNBUFFERED": "1",
                    "TF_CPP_MIN_LOG_LEVEL": "3",  # a user's default (conftest: 2)
                    **env,
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
        )
    return procs


def finish(procs, timeout=300):
    return [(p.wait(timeout), *p.communicate()) for p in procs]


def zoo_args(*args):
    return ["-m", "zoo.cli", "train", *map(str, args)]


def zoo_args_tail(*args):
    return list(map(str, args))


def train_two_workers(model, tmp_path, epochs=3, size=16):
    """Two workers train `model`; their results and the run."""
    ports, runs = free_ports(2), tmp_path / "runs"
    procs = start_workers(
        [
            ["-c", WORKER, model, epochs, runs, tmp_path / f"worker{i}.npz", size]
            for i in range(2)
        ],
        ports,
        tmp_path,
    )
    results = finish(procs)
    for code, out, err in results:
        assert code == 0, out + err
    assert sorted(p.name for p in runs.iterdir()) == ["run"]  # the chief's only
    return results, runs / "run"


@pytest.mark.slow
def test_two_workers_end_with_identical_weights_and_logs(tmp_path):
    results, run = train_two_workers("resnet20", tmp_path)
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not any((tmp_path / "tmp1").iterdir())  # the worker's temporary logs
    assert "worker 1 of 2: done; worker 0 writes the run" in results[1][1]
    # Each epoch's logs are the same on both workers (summed over them).
    epochs = [
        [line.split(" - ", 3)[-1] for line in out.splitlines() if "val_loss" in line]
        for _, out, _ in results
    ]
    assert len(epochs[0]) == 3 and epochs[0] == epochs[1], epochs
    # Bit-identical weights, batch-norm moving statistics included.
    with np.load(tmp_path / "worker1.npz") as saved:
        worker = [saved[k] for k in saved.files]
    chief = zoo.load_model(run / "last.keras").get_weights()
    assert len(chief) == len(worker) == 97
    assert all(np.array_equal(a, b) for a, b in zip(chief, worker, strict=True))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["epochs"] == 3


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path):
    """Same global batch, seed, epochs and (deterministic) data order. The
    workers' steps need not group the examples as one process's batches do
    (tf.data shards the batched order, then splits each worker's batches), so
    short runs differ by a few points (3 epochs at 16x16: 3.3 measured); trained
    on, they agree (as in the benchmark)."""
    _, run = train_two_workers("lenet5", tmp_path, epochs=10, size=32)
    two = json.loads((run / "metrics.json").read_text())
    single = subprocess.run(
        [sys.executable, *zoo_args("lenet5", *TRAIN, "--image-size", 32)]
        + zoo_args_tail("--epochs", 10, "--run-dir", tmp_path / "single")
        + ["--deterministic", "--name", "one"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    one = json.loads((tmp_path / "single" / "one" / "metrics.json").read_text())
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.01, (
        two["test_accuracy"],
        one["test_accuracy"],
    )


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_and_every_worker_resumes(tmp_path):
    ports, runs = free_ports(2), tmp_path / "runs"
    args = zoo_args("lenet5", *TRAIN, "--image-size", 32, "--epochs", 5)
    args += ["--strategy", "multi-worker", "--checkpoint-every", 1]
    args += ["--run-dir", runs, "--name", "run"]
    chief, worker = start_workers([args, args], ports, tmp_path)
    for line in worker.stdout:  # Keras prints the header as the epoch begins
        if line.startswith("Epoch 3/5"):
            worker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            break
    code, out, err = finish([chief], timeout=120)[0]
    assert time.monotonic() - killed < 60
    one_line_error(
        subprocess.CompletedProcess(args, code, out, err),
        "zoo train: error: worker 0 of 2: the cluster lost a worker (worker 1 "
        "stopped sending heartbeats); training stopped. Restart every worker with "
        f"zoo train --resume {runs / 'run'} (docs/distributed.md).",
    )
    run = runs / "run"
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    # Resumed by one worker only: refused, nothing touched.
    resume = ["-m", "zoo.cli", "train", "--resume", str(run)]
    alone = start_workers([resume], free_ports(1), tmp_path)
    code, out, err = finish(alone)[0]
    one_line_error(
        subprocess.CompletedProcess(resume, code, out, err),
        f"run '{run}' was trained on 2 worker(s) and this resume has 1; resume it "
        "with the same number of workers (TF_CONFIG), or start a new run.",
    )
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before

    for code, out, err in finish(start_workers([resume, resume], ports, tmp_path)):
        assert code == 0, out + err
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3, 4]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 5


def test_the_reaper_destroys_dropped_iterators_in_its_own_thread():
    """What a multi-worker fit drops is destroyed by the reaper's thread (where a
    destructor may wait, see cluster._IteratorReaper), and only once nothing
    else refers to it."""
    destroyed = {}

    class Iterator:
        def __init__(self, name):
            self.name = name

        def __del__(self):
            destroyed[self.name] = threading.current_thread().name

    reaper = cluster._IteratorReaper()
    kept, dropped = Iterator("kept"), Iterator("dropped")
    reaper.hold(kept)
    reaper.hold(dropped)
    del dropped
    deadline = time.monotonic() + 10 * cluster.REAP_EVERY_SECONDS
    while not destroyed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert destroyed == {"dropped": "zoo-reaper"}
    assert reaper.held == [kept]


def test_tf_config_is_checked_before_anything_is_written(tmp_path, monkeypatch, capsys):
    port = free_ports(1)[0]
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    cases = {
        None: "--strategy multi-worker: TF_CONFIG is not set. Set TF_CONFIG",
        "{cluster": "--strategy multi-worker: TF_CONFIG is not valid JSON (",
        json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]}}): (
            "TF_CONFIG needs a 'cluster' and a 'task' object."
        ),
        tf_config([port], 1): (
            "TF_CONFIG's task is worker 1, outside the cluster's 1 worker address(es)"
        ),
        json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{port}"], "ps": ["h:1"]},
                "task": {"type": "worker", "index": 0},
            }
        ): "TF_CONFIG's cluster names ps; MultiWorkerMirroredStrategy runs only",
        json.dumps(
            {"cluster": {"worker": ["nohost"]}, "task": {"type": "worker"}}
        ): "'nohost' in TF_CONFIG is not host:port",
    }
    for value, message in cases.items():
        if value is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", value)
        out = zoo_main(
            "train", "lenet5", *TRAIN, "--image-size", 16, "--strategy", "multi-worker",
            "--run-dir", tmp_path / "runs", capsys=capsys,
        )  # fmt: skip
        one_line_error(out, message)
        assert example in out.stderr
        assert not (tmp_path / "runs").exists()


def test_an_unreachable_worker_is_one_line_after_the_timeout(
    tmp_path, monkeypatch, capsys
):
    ports = free_ports(2)
    monkeypatch.setenv("TF_CONFIG", tf_config(ports, 0))
    monkeypatch.setenv("ZOO_CLUSTER_TIMEOUT", "2")
    started = time.monotonic()
    out = zoo_main(
        "train", "lenet5", *TRAIN, "--image-size", 16, "--strategy", "multi-worker",
        "--run-dir", tmp_path / "runs", capsys=capsys,
    )  # fmt: skip
    assert time.monotonic() - started < 10
    one_line_error(
        out,
        f"worker 0 of 2: no answer from 127.0.0.1:{ports[1]} within 2 s; start "
        "every worker of TF_CONFIG (or check their addresses and firewalls), or "
        "wait longer with ZOO_CLUSTER_TIMEOUT=SECONDS.",
    )
    assert not (tmp_path / "runs").exists()
    with socket.create_server(("127.0.0.1", ports[0])):  # the port was let go
        out = zoo_main(  # and when it is taken, that is one line too
            "train", "lenet5", *TRAIN, "--image-size", 16, "--strategy",
            "multi-worker", "--run-dir", tmp_path / "runs", capsys=capsys,
        )  # fmt: skip
    one_line_error(
        out,
        f"worker 0 of 2: cannot listen on 127.0.0.1:{ports[0]}, this worker's "
        "address in TF_CONFIG (Address already in use); free the port or give this "
        "worker another one in every worker's TF_CONFIG.",
    )


def test_finetune_refuses_multi_worker(tmp_path, capsys):
    out = zoo_main(
        "finetune", "keras:MobileNetV2", "--dataset", "digits",
        "--strategy", "multi-worker", "--run-dir", tmp_path / "runs", capsys=capsys,
    )  # fmt: skip
    one_line_error(
        out,
        "zoo finetune: error: zoo finetune runs on one machine; --strategy "
        "multi-worker is for zoo train (use --strategy mirrored for this machine's "
        "GPUs).",
    )
    assert not (tmp_path / "runs").exists()
