"""Tuning across processes: chief + two workers on loopback, resume after SIGKILL."""

import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import tuning

pytestmark = pytest.mark.slow
SEARCH = ["mlp", "--max-trials", "4", "--epochs", "3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zoo(*args: str, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()  # no-op when it has exited
    return process.returncode, out, err


def completed(csv) -> pd.DataFrame:
    if not csv.is_file():
        return pd.DataFrame()
    table = pd.read_csv(csv, dtype={"trial_id": str})
    return table[table["status"] == "COMPLETED"]


def test_chief_and_two_workers_run_every_trial_exactly_once(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    common = [*SEARCH, "--directory", "search", "--oracle-address", address]
    chief = zoo("tune", *common, "--distributed", "chief", cwd=tmp_path)
    worker = [*common, "--distributed", "worker", "--worker-id"]
    workers = {w: zoo("tune", *worker, w, cwd=tmp_path) for w in ("w1", "w2")}
    results = {w: finish(p, 300) for w, p in workers.items()}
    code, chief_out, chief_err = finish(chief, 60)
    assert code == 0, chief_err
    ran = {}
    for w, (code, out, err) in results.items():
        assert code == 0, err
        for line in out.splitlines():
            if line.startswith(f"worker {w}: trial "):
                trial_id = line.split()[3]
                assert trial_id not in ran, f"trial {trial_id} ran twice"
                ran[trial_id] = w
    table = tuning.load_results(tmp_path / "search").table
    assert sorted(ran) == list(table["trial_id"]) == ["0", "1", "2", "3"]
    assert table["status"].eq("COMPLETED").all()
    assert list(table["runs"]) == [1, 1, 1, 1]
    assert dict(zip(table["trial_id"], table["worker"], strict=True)) == ran
    assert sum(line.startswith("trial ") for line in chief_out.splitlines()) == 4
    assert "1\n2\n" not in chief_out + "".join(r[1] for r in results.values())


def test_resume_after_sigkill_keeps_finished_trials(tmp_path):
    search = zoo("tune", *SEARCH, "--epochs", "5", "--directory", "s", cwd=tmp_path)
    csv = tmp_path / "s" / "results.csv"
    deadline = time.monotonic() + 240
    while len(completed(csv)) < 2 and search.poll() is None:
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    search.send_signal(signal.SIGKILL)
    search.wait(timeout=30)
    assert search.returncode == -signal.SIGKILL
    finished = completed(csv)
    trial_files = {
        trial_id: (tmp_path / "s" / "trials" / f"trial_{trial_id}" / "trial.json")
        for trial_id in finished["trial_id"]
    }
    before = {trial_id: path.read_bytes() for trial_id, path in trial_files.items()}

    result = tuning.search(
        "mlp", max_trials=4, epochs=5, directory=tmp_path / "s", resume=True
    )
    table = result.table
    assert list(table["trial_id"]) == ["0", "1", "2", "3"]
    assert table["status"].eq("COMPLETED").all()
    assert list(table["runs"]) == [1, 1, 1, 1]  # nothing ran twice
    for trial_id, path in trial_files.items():
        assert path.read_bytes() == before[trial_id], trial_id
    kept = table.set_index("trial_id").loc[finished["trial_id"]]
    assert list(kept["val_accuracy"]) == pytest.approx(list(finished["val_accuracy"]))
