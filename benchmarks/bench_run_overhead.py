"""Per-run bookkeeping: the share of a run's wall time spent outside fit's epochs.

Runs `training.train("lenet5", "digits", image_size=32, epochs=30)` (the README's
main job without export) in a fresh process per repeat and times, with a callback
added to every `fit`, each epoch from its start to the end of its validation:
fit's own steps. Everything else in `train` is overhead: start-up (data, model,
run directory), per-epoch bookkeeping (checkpoints, history, best/last models,
curves, TensorBoard) and the end (models, test evaluation, confusion matrix,
metrics.json). The per-epoch part is the time from one epoch's validation end to
the next epoch's start (it includes fit's own iterator set-up); "bookkeeping"
times the saving, plotting and recording calls themselves (the run's callbacks'
epoch ends, the final curves, best/last models and confusion matrix).

`--baseline DIR` times a checkout of another commit the same way, repeats
interleaved, so the two are compared in one run:

    git worktree add /tmp/before a154012
    python3 benchmarks/bench_run_overhead.py --repeats 3 --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh process with the code under test first on sys.path.
CHILD = r"""
import json, sys, time
import keras
epochs = []

class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()
        if epochs and "val_end" in epochs[-1]:
            epochs[-1]["next_begin"] = self.begin
    def on_test_end(self, logs=None):
        epochs.append({"begin": self.begin, "val_end": time.perf_counter()})

fit, fits = keras.Model.fit, []
def timed_fit(self, *args, callbacks=None, **kwargs):
    begin = time.perf_counter()
    history = fit(self, *args, callbacks=[Timer(), *(callbacks or [])], **kwargs)
    fits.append((begin, time.perf_counter()))
    return history
keras.Model.fit = timed_fit

# The bookkeeping itself: saving, plotting, recording (outermost calls only).
import importlib
depth, spent = [0], [0.0]
def count(owner, name):
    original = getattr(owner, name, None)
    if original is None:
        return
    def counted(*args, **kwargs):
        depth[0] += 1
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if not depth[0]:
                spent[0] += time.perf_counter() - begin
    setattr(owner, name, counted)
count(keras.callbacks.TensorBoard, "on_epoch_end")
for module in ("zoo.runs", "zoo.training", "zoo.plots"):
    try:
        module = importlib.import_module(module)
    except ImportError:  # the baseline has no zoo.runs / zoo.plots
        continue
    for cls in ("RunRecorder", "FiniteBackup"):
        for method in ("on_epoch_end", "plot"):
            count(getattr(module, cls, None), method)
    for function in ("_write_models", "plot_confusion", "plot_predictions"):
        count(module, function)

from zoo import training
started = time.perf_counter()
training.train("lenet5", "digits", image_size=32, epochs=EPOCHS,
               run_dir=sys.argv[1], verbose=0)
ended = time.perf_counter()
fit_steps = sum(e["val_end"] - e["begin"] for e in epochs)
between = sum(e.get("next_begin", fits[-1][1]) - e["val_end"] for e in epochs)
print("RESULT", json.dumps({
    "wall": ended - started,
    "start": epochs[0]["begin"] - started,
    "fit": fit_steps,
    "per_epoch": between,
    "end": ended - fits[-1][1],
    "bookkeeping": spent[0],
}))
"""


def run_once(code_dir: Path, epochs: int) -> dict[str, float]:
    """One timed run of the code in `code_dir` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(code_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as runs:
        out = subprocess.run(
            [sys.executable, "-c", CHILD.replace("EPOCHS", str(epochs)), runs],
            capture_output=True,
            text=True,
            env=env,
            cwd=runs,
            check=True,
        )
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--baseline", type=Path, help="checkout of another commit")
    args = parser.parse_args()
    codes = {"this checkout": ROOT}
    if args.baseline:
        codes["baseline"] = args.baseline.resolve()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
    for repeat in range(args.repeats):
        for name, code in codes.items():  # interleaved
            results[name].append(run_once(code, args.epochs))
            r = results[name][-1]
            print(f"repeat {repeat + 1} {name}: {json.dumps(r)}")
    print(f"\n{args.epochs} epochs of lenet5 on digits at 32x32, median of repeats")
    print(
        "| code | wall s | start | fit's epochs | between epochs | end "
        "| bookkeeping (saving, plotting, recording) |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    for name, rows in results.items():
        wall = statistics.median(r["wall"] for r in rows)
        cells = [
            f"{statistics.median(r[k] for r in rows):.2f} s "
            f"({statistics.median(r[k] / r['wall'] for r in rows):.1%})"
            for k in ("start", "fit", "per_epoch", "end", "bookkeeping")
        ]
        print(f"| {name} | {wall:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
