"""Multi-worker training on loopback against one process: accuracy, identical
weights, and images/s.

Two `--strategy multi-worker` workers on 127.0.0.1 (TF_CONFIG set here, ports
chosen free), each pinned to one core (`taskset`, one TensorFlow thread pool
thread each), against one process using both cores, with the same global batch,
seed and epochs on `digits`. Throughput is the training images per second of
each epoch after the first (tracing), median over epochs, then over repeats; the
two set-ups alternate, repeat by repeat. The workers' final weights are compared
with the chief's last.keras, array by array.

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


def one_process(model, epochs, tmp, tag):
    out = f"{tmp}/{tag}"
    opts = {"run_dir": f"{tmp}/runs", "name": tag}
    wait([launch(model, epochs, out, opts, "0,1", {})])
    return read(out)


def two_workers(model, epochs, tmp, tag):
    import numpy as np

    import zoo

    ports = free_ports(2)
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    procs = []
    for i in range(2):
        opts = {"run_dir": f"{tmp}/runs", "name": tag, "strategy": "multi-worker"}
        env = {"TF_CONFIG": tf_config(ports, i), **one_thread}
        procs.append(launch(model, epochs, f"{tmp}/{tag}-{i}", opts, str(i), env))
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
    args = parser.parse_args()
    import data_pipelines as dp

    train_size = dp.load("digits", image_size=32).info.sizes["train"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, epochs, repeats in (
            ("lenet5", args.lenet_epochs, 1),
            ("resnet20", args.epochs, args.repeats),
        ):
            single, multi = [], []
            for r in range(repeats):  # interleaved
                single.append(one_process(model, epochs, tmp, f"{model}-one-{r}"))
                multi.append(two_workers(model, epochs, tmp, f"{model}-two-{r}"))
            one_ips = statistics.median(
                images_per_second(s, train_size) for s in single
            )
            two_ips = statistics.median(images_per_second(m, train_size) for m in multi)
            rows.append(
                {
                    "model": model,
                    "epochs": epochs,
                    "repeats": repeats,
                    "test_accuracy_one_process": [
                        s["metrics"]["test_accuracy"] for s in single
                    ],
                    "test_accuracy_two_workers": [
                        m["metrics"]["test_accuracy"] for m in multi
                    ],
                    "identical_weights": all(m["identical"] for m in multi),
                    "images_per_s_one_process": round(one_ips, 1),
                    "images_per_s_two_workers": round(two_ips, 1),
                    "ratio": round(two_ips / one_ips, 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
