"""Tuning figures (issue 6): memory per trial, a 10-minute search against SVC, and
the tuner's own overhead.

P5a  resident memory of the search process after each of N mlp trials on digits,
     slope in MB per trial (goal <= 1 MB): `tuning.search` (each trial in a child
     process) next to plain in-process KerasTuner (RandomSearch, same HyperModel,
     same seed: the same configurations). Both run as separate processes, sampled
     from outside with psutil whenever a trial finishes.
P5b  a real `zoo tune ... --export` run (goal: <= 10 minutes, retrained test accuracy
     on the digits test split >= scikit-learn's SVC(C=10, gamma="scale") fitted
     here on the same split).
Overhead  of the P5a search: search wall time minus the trials' wall time
     (oracle, state files, results CSV: goal <= 5 %), and the cost of starting
     each trial in a child process (trial wall time minus the child's own time).

    python3 benchmarks/bench_tuning.py [--trials 20] [--epochs 10] [--skip p5b]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

P5B_COMMAND = [
    "tune", "cnn", "--dataset", "digits", "--image-size", "16",
    "--val-fraction", "0.25", "--augment", "rotate:0.05,zoom:0.1,translate:0.1",
    "--tuner", "hyperband",
    "--max-trials", "26", "--epochs", "20", "--early-stopping", "5",
    "--objective", "val_loss", "--fix", "optimizer=adam",
    "--fix", "learning_rate=0.001", "--fix", "batch_norm=true",
]  # fmt: skip

OURS = """
import json, time, tuning
start = time.perf_counter()
tuning.search("mlp", max_trials={trials}, epochs={epochs}, directory={directory!r},
              verbose=False)
print(json.dumps({{"wall": time.perf_counter() - start}}))
"""
PLAIN = """
import json, time, keras_tuner as kt
from tuning import hypermodels
from zoo import recipe
from zoo.config import TrainConfig
start = time.perf_counter()
config = TrainConfig(dataset="digits")
model = hypermodels.hypermodel("mlp", recipe.load_data(config).info, config)
tuner = kt.RandomSearch(model, objective="val_accuracy", max_trials={trials}, seed=1,
                        directory={directory!r}, project_name="plain")
tuner.search(epochs={epochs}, verbose=0)
print(json.dumps({{"wall": time.perf_counter() - start}}))
"""


def finished_ours(directory: Path) -> int:
    path = directory / "results.csv"
    try:
        return int((pd.read_csv(path)["status"] == "COMPLETED").sum())
    except (FileNotFoundError, pd.errors.EmptyDataError, KeyError):
        return 0


def finished_plain(directory: Path) -> int:
    count = 0
    for path in directory.glob("plain/trial_*/trial.json"):
        try:
            count += json.loads(path.read_text())["status"] == "COMPLETED"
        except (json.JSONDecodeError, KeyError):
            pass  # being written
    return count


def rss_per_trial(code: str, directory: Path, finished, trials: int) -> dict:
    """Run `code` in a fresh interpreter; RSS (MB) of that process after each trial."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watched = psutil.Process(process.pid)
    samples: list[float] = []
    servers: list[float] = []  # + the forkserver, for tuning.search
    while process.poll() is None:
        done = finished(directory)
        if done > len(samples):
            try:
                rss = watched.memory_info().rss / 2**20
                server = sum(
                    c.memory_info().rss / 2**20
                    for c in watched.children()
                    if "forkserver" in " ".join(c.cmdline())
                )
            except psutil.NoSuchProcess:
                break
            samples += [rss] * (done - len(samples))
            servers += [rss + server] * (done - len(servers))
        time.sleep(0.05)
    out, _ = process.communicate()
    if process.returncode != 0 or len(samples) < trials:
        raise SystemExit(f"run failed (exit {process.returncode}): {out[-2000:]}")
    x = np.arange(1, trials + 1)
    return {
        "rss": [round(v, 1) for v in samples[:trials]],
        "slope": float(np.polyfit(x, samples[:trials], 1)[0]),
        "slope_with_server": float(np.polyfit(x, servers[:trials], 1)[0]),
        "wall": json.loads(out.strip().splitlines()[-1])["wall"],
    }


def svc_accuracy() -> tuple[float, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    svc = SVC(C=10, gamma="scale").fit(x_train, y_train)
    return float(svc.score(x_test, y_test)), len(y_test)


def p5b(work: Path) -> dict:
    command = [
        sys.executable, "-m", "zoo.cli", *P5B_COMMAND,
        "--directory", str(work / "p5b"), "--export", str(work / "p5b_export"),
    ]  # fmt: skip
    print("+ zoo " + " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    print(run.stdout, flush=True)
    if run.returncode != 0:
        raise SystemExit(f"zoo tune failed: {run.stderr[-2000:]}")
    metrics = json.loads((work / "p5b" / "retrained" / "metrics.json").read_text())
    return {"wall": wall, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--skip", default="", help="comma-separated: p5a, p5b")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(
        f"# bench_tuning {datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} "
        f"CPUs, load average {os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        work = Path(tmp)
        if "p5a" not in skip:
            fill = {"trials": args.trials, "epochs": args.epochs}
            ours_dir, plain_dir = work / "ours", work / "plain"
            ours = rss_per_trial(
                OURS.format(directory=str(ours_dir), **fill),
                ours_dir,
                finished_ours,
                args.trials,
            )
            plain = rss_per_trial(
                PLAIN.format(directory=str(plain_dir), **fill),
                plain_dir,
                finished_plain,
                args.trials,
            )
            table = pd.read_csv(ours_dir / "results.csv")
            trial_time, own_time = table["seconds"].sum(), table["train_seconds"].sum()
            print(f"RSS after each trial, MB: tuning.search {ours['rss']}")
            print(f"RSS after each trial, MB: plain KerasTuner {plain['rss']}\n")
            rows += [
                (
                    f"P5a RSS growth per trial, tuning.search ({args.trials} trials)",
                    f"{ours['slope']:+.2f} MB",
                    "<= 1 MB",
                    ours["slope"] <= 1,
                ),
                (
                    "P5a same, search process + its forkserver",
                    f"{ours['slope_with_server']:+.2f} MB",
                    "<= 1 MB",
                    ours["slope_with_server"] <= 1,
                ),
                (
                    "P5a RSS growth per trial, plain in-process KerasTuner",
                    f"{plain['slope']:+.2f} MB",
                    "(reference)",
                    None,
                ),
                (
                    "search wall time, tuning.search / plain KerasTuner",
                    f"{ours['wall']:.0f} s / {plain['wall']:.0f} s",
                    "(reference)",
                    None,
                ),
                (
                    "tuner bookkeeping (wall - trials' wall) / wall",
                    f"{(ours['wall'] - trial_time) / ours['wall']:.1%}",
                    "<= 5 %",
                    (ours["wall"] - trial_time) / ours["wall"] <= 0.05,
                ),
                (
                    "child-process start (trials' wall - their own time) / wall",
                    f"{(trial_time - own_time) / ours['wall']:.1%}",
                    "(reference)",
                    None,
                ),
            ]
        if "p5b" not in skip:
            svc, images = svc_accuracy()
            run = p5b(work)
            rows += [
                (
                    "P5b `zoo tune` + retrain + export, wall time",
                    f"{run['wall'] / 60:.1f} min",
                    "<= 10 min",
                    run["wall"] <= 600,
                ),
                (
                    f"P5b retrained test accuracy ({images} digits) vs SVC(C=10)",
                    f"{run['test_accuracy']:.2%} vs {svc:.2%}",
                    ">= SVC",
                    # float32 vs float64: compare correctly classified images
                    round(run["test_accuracy"] * images) >= round(svc * images),
                ),
            ]
            print(f"P5b best configuration (trial {run['trial_id']}, trained on "
                  f"{run['trained_on']} for {run['epochs']} epochs): "
                  f"{run['hyperparameters']}\n")  # fmt: skip
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")
    for name, measured, target, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"| {name} | {measured} | {target} | {mark} |")


if __name__ == "__main__":
    main()
