"""Multi-worker training on loopback against one process: accuracy, identical
weights, and images/s.

Two `--strategy multi-worker` workers on 127.0.0.1 (TF_CONFIG set here, ports
chosen free) against one process using both cores, on `digits` at 32x32 with
the same global batch (64), seed and epochs.

- Accuracy: lenet5 and resnet20, `deterministic=True` in both set-ups (one data
  order: the comparison is of the arithmetic, not of two shuffles); the worker's
  final weights are compared with the chief's last.keras, array by array.
- Throughput: resnet20 as users run it (`--dataset`, digits by default), each
  worker limited to one core in two ways (LIMITS): one TensorFlow compute thread
  each, and that plus `taskset`. Two figures, both from the chief (worker 0):
  - per epoch: the training split's images over each epoch's training time
    (from the epoch's start to its validation, so epoch boundaries count), the
    median over the epochs after the first (tracing), then over repeats;
  - steady: the global batch over the median time between full steps, the first
    two of each epoch and the first epoch left out.
  The set-ups alternate, repeat by repeat; the load average is printed, since
  other processes on the machine shift every figure.

    python3 benchmarks/bench_multiworker.py --repeats 3
    python3 benchmarks/bench_multiworker.py --speed-only --dataset idx:DIR
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
sys.path.insert(0, str(ROOT / "tests"))
from test_multiworker import free_ports, tf_config  # noqa: E402  (one definition)

CHILD = r"""
import json, sys, time
import keras, numpy as np
from zoo import training
model, dataset, epochs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
options = json.loads(sys.argv[5])
seconds, steps = [], []

class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.begin = self.last = time.perf_counter()
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.epoch >= 1 and batch >= 2:
            steps.append([batch, now - self.last])
        self.last = now
    def on_test_begin(self, logs=None):  # the epoch's training ends here
        if getattr(self, "begin", None) is not None:
            seconds.append(time.perf_counter() - self.begin)
            self.begin = None

fit = keras.Model.fit
def timed_fit(self, *args, callbacks=None, **kwargs):
    return fit(self, *args, callbacks=[Timer(), *(callbacks or [])], **kwargs)
keras.Model.fit = timed_fit
result = training.train(model, dataset, image_size=32, epochs=epochs, verbose=0,
                        **options)
np.savez(out + ".npz", *result.model.get_weights())
json.dump({"seconds": seconds, "steps": steps, "metrics": result.metrics,
           "run_dir": str(result.run_dir)}, open(out + ".json", "w"))
"""


# The global batch in every set-up.
BATCH = 64


def launch(model, dataset, epochs, out, options, cores, env):
    options = {"batch_size": BATCH, **options}
    cmd = [sys.executable, "-c", CHILD, model, dataset, str(epochs), out]
    cmd.append(json.dumps(options))
    return subprocess.Popen(
        ["taskset", "-c", cores, *cmd],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(procs):
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode:
            raise SystemExit(f"a training process failed:\n{err[-3000:]}")


def read(out):
    with open(out + ".json") as f:
        return json.load(f)


def one_process(model, dataset, epochs, tmp, tag, **options):
    out = f"{tmp}/{tag}"
    opts = {"run_dir": f"{tmp}/runs", "name": tag, **options}
    wait([launch(model, dataset, epochs, out, opts, "0,1", {})])
    return read(out)


# Two ways to give each worker one core: one TensorFlow compute thread each (the
# other threads, gRPC's and tf.data's, go where the OS puts them), or `taskset`.
LIMITS = {"one thread": False, "pinned": True}


def two_workers(model, dataset, epochs, tmp, tag, pinned=False, **options):
    """Two workers' run; the chief's timings and metrics, and whether the worker
    ended with the chief's weights."""
    import numpy as np

    import zoo

    ports = free_ports(2)
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    procs = []
    for i in range(2):
        opts = {"run_dir": f"{tmp}/runs", "name": tag, "strategy": "multi-worker"}
        env = {"TF_CONFIG": tf_config(ports, i), **one_thread}
        cores = str(i) if pinned else "0,1"
        out = f"{tmp}/{tag}-{i}"
        opts = {**opts, **options}
        procs.append(launch(model, dataset, epochs, out, opts, cores, env))
    wait(procs)
    chief = read(f"{tmp}/{tag}-0")
    last = zoo.load_model(Path(chief["run_dir"]) / "last.keras").get_weights()
    with np.load(f"{tmp}/{tag}-1.npz") as saved:
        worker = [saved[k] for k in saved.files]
    chief["identical"] = len(last) == len(worker) and all(
        np.array_equal(a, b) for a, b in zip(last, worker, strict=True)
    )
    return chief


def images_per_second(result, train_size):
    """Per epoch and steady (see the module's docstring)."""
    full = train_size // BATCH  # the steps of a full global batch
    steps = [seconds for step, seconds in result["steps"] if step < full]
    return {
        "per epoch": train_size / statistics.median(result["seconds"][1:]),
        "steady": BATCH / statistics.median(steps),
    }


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="resnet20 epochs")
    parser.add_argument("--lenet-epochs", type=int, default=10)
    parser.add_argument(
        "--speed-only", action="store_true", help="skip the accuracy runs"
    )
    parser.add_argument(
        "--dataset", default="digits", help="the throughput runs' data (digits)"
    )
    args = parser.parse_args()
    import data_pipelines as dp

    train_size = dp.load(args.dataset, image_size=32).info.sizes["train"]
    print(json.dumps({"load_average_at_start": load()}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Accuracy: one data order in both (deterministic), so the comparison is of
        # the arithmetic (the workers' all-reduce), not of two shuffles.
        accuracy = (("lenet5", args.lenet_epochs), ("resnet20", args.epochs))
        for model, epochs in () if args.speed_only else accuracy:
            same = {"deterministic": True}
            one = one_process(model, "digits", epochs, tmp, f"{model}-one", **same)
            two = two_workers(model, "digits", epochs, tmp, f"{model}-two", **same)
            row = {
                "model": model,
                "epochs": epochs,
                "test_accuracy_one_process": one["metrics"]["test_accuracy"],
                "test_accuracy_two_workers": two["metrics"]["test_accuracy"],
                "identical_weights": two["identical"],
            }
            print(json.dumps(row), flush=True)
        # Throughput as users run it (not deterministic), resnet20, interleaved.
        seen = {"one process": [], **{limit: [] for limit in LIMITS}}
        speed = ("resnet20", args.dataset, args.epochs, tmp)
        for r in range(args.repeats):
            run = one_process(*speed, f"speed-one-{r}")
            seen["one process"].append(images_per_second(run, train_size))
            for limit, pinned in LIMITS.items():
                run = two_workers(*speed, f"speed-{r}-{pinned}", pinned=pinned)
                seen[limit].append(images_per_second(run, train_size))
        for figure in ("per epoch", "steady"):
            base = statistics.median(run[figure] for run in seen["one process"])
            for name, runs in seen.items():
                values = [run[figure] for run in runs]
                row = {
                    "resnet20 images/s": name,
                    "dataset": args.dataset,
                    "figure": figure,
                    "median": round(statistics.median(values), 1),
                    "repeats": [round(v, 1) for v in values],
                    "ratio_to_one_process": round(statistics.median(values) / base, 3),
                }
                print(json.dumps(row), flush=True)
        print(json.dumps({"load_average_at_end": load()}), flush=True)


if __name__ == "__main__":
    main()
