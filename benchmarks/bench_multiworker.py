"""Multi-worker training on loopback against one process: accuracy, identical
weights, and images/s.

Two `--strategy multi-worker` workers on 127.0.0.1 (TF_CONFIG set here, ports
chosen free) against one process using both cores, on `digits` at 32x32 with
the same global batch (64), seed and epochs.

- Accuracy: lenet5 and resnet20, `deterministic=True` in both set-ups (one data
  order: the comparison is of the arithmetic, not of two shuffles); the worker's
  final weights are compared with the chief's last.keras, array by array.
- Throughput: resnet20 as users run it, each worker limited to one core in two
  ways (LIMITS): one TensorFlow compute thread each, and that plus `taskset`.
  Images/s of each epoch's training after the first (tracing), median over
  epochs, then over repeats; the set-ups alternate, repeat by repeat.

    python3 benchmarks/bench_multiworker.py --repeats 3
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
model, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = json.loads(sys.argv[4])
seconds = []

class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()
    def on_test_begin(self, logs=None):  # the epoch's training ends here
        if getattr(self, "begin", None) is not None:
            seconds.append(time.perf_counter() - self.begin)
            self.begin = None

fit = keras.Model.fit
def timed_fit(self, *args, callbacks=None, **kwargs):
    return fit(self, *args, callbacks=[Timer(), *(callbacks or [])], **kwargs)
keras.Model.fit = timed_fit
result = training.train(model, "digits", image_size=32, epochs=epochs,
                        batch_size=64, verbose=0, **options)
np.savez(out + ".npz", *result.model.get_weights())
json.dump({"seconds": seconds, "metrics": result.metrics,
           "run_dir": str(result.run_dir)}, open(out + ".json", "w"))
"""


def launch(model, epochs, out, options, cores, env):
    cmd = [sys.executable, "-c", CHILD, model, str(epochs), out, json.dumps(options)]
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


def one_process(model, epochs, tmp, tag, **options):
    out = f"{tmp}/{tag}"
    opts = {"run_dir": f"{tmp}/runs", "name": tag, **options}
    wait([launch(model, epochs, out, opts, "0,1", {})])
    return read(out)


# Two ways to give each worker one core: one TensorFlow compute thread each (the
# other threads, gRPC's and tf.data's, go where the OS puts them), or `taskset`.
LIMITS = {"one thread": False, "pinned": True}


def two_workers(model, epochs, tmp, tag, pinned=False, **options):
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
        procs.append(launch(model, epochs, out, {**opts, **options}, cores, env))
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
    return train_size / statistics.median(result["seconds"][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="resnet20 epochs")
    parser.add_argument("--lenet-epochs", type=int, default=10)
    parser.add_argument(
        "--speed-only", action="store_true", help="skip the accuracy runs"
    )
    args = parser.parse_args()
    import data_pipelines as dp

    train_size = dp.load("digits", image_size=32).info.sizes["train"]
    with tempfile.TemporaryDirectory() as tmp:
        # Accuracy: one data order in both (deterministic), so the comparison is of
        # the arithmetic (the workers' all-reduce), not of two shuffles.
        accuracy = (("lenet5", args.lenet_epochs), ("resnet20", args.epochs))
        for model, epochs in () if args.speed_only else accuracy:
            one = one_process(model, epochs, tmp, f"{model}-one", deterministic=True)
            two = two_workers(model, epochs, tmp, f"{model}-two", deterministic=True)
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
        for r in range(args.repeats):
            run = one_process("resnet20", args.epochs, tmp, f"speed-one-{r}")
            seen["one process"].append(images_per_second(run, train_size))
            for limit, pinned in LIMITS.items():
                tag = f"speed-{r}-{pinned}"
                run = two_workers("resnet20", args.epochs, tmp, tag, pinned=pinned)
                seen[limit].append(images_per_second(run, train_size))
        base = statistics.median(seen["one process"])
        for name, values in seen.items():
            row = {
                "resnet20 images/s": name,
                "median": round(statistics.median(values), 1),
                "repeats": [round(v, 1) for v in values],
                "ratio_to_one_process": round(statistics.median(values) / base, 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
