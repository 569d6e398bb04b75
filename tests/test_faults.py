"""Issue 18's bad-input and fault table (docs/faults.md), written by the tests.

Every case below drives bad input or an injected fault of issue 18 end to end: the
`zoo` command in this process (`cli.main`, stdout and stderr captured), a fresh
`zoo` process where the file descriptor 2 matters, or the Python call. It checks
what was left behind and returns the rows of the table. `test_case` asserts each
case's rows (one line without a traceback; exit code 2 for an error, 130 for
Ctrl-C; every leftover check true); `test_docs_faults_md_is_current` renders the
table from all cases and compares it with docs/faults.md (`ZOO_WRITE_DOCS=1`
rewrites it). Each case runs once per process and this module owns every case, so
the table depends neither on the order of the tests nor on the xdist worker.
Rows name paths by role (TMP: the case's temporary directory), not by machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_data_sources import go_offline, make_table
from test_export import (
    DAMAGES,
    SAVED_MODEL_DAMAGES,
    _digits_uint8,
    _write_png,
    table_run,
)
from test_tuning import free_port, port_in_time_wait
from test_zoo_errors import env_without_tf_log_level, write_pngs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "faults.md"
REGENERATE = (
    "ZOO_WRITE_DOCS=1 python3 -m pytest -q -n 0 -p no:cacheprovider "
    "tests/test_faults.py"
)

# Issue 18's numbered points, in its words (shortened).
POINTS = {
    "user 1": "`tfds:` sources fail on a fresh install, slowly and noisily, offline",
    "user 2": "`inf` in a CSV, NaN or out-of-range numpy images train silently",
    "user 3": "no CLI predict for a CSV-trained model",
    "user 4": "a `.keras` model whose input does not fit the data",
    "user 5": "`--resume` of a finished run exits 0 and changes it",
    "user 6": "CSV label messages: numeric target, no `--label-column`, empty CSV",
    "user 7": "noise: TensorFlow's C++ logs, a warning per unreadable image",
    "user 8": "smaller: Ctrl-C hints, Hyperband retrain epochs, `--image-size 0`, "
    "usage errors, relative paths, 16-bit PNGs, `zoo evaluate` on bad data",
    "fault 1": "disk full during a checkpoint: segfault, then never resumable",
    "fault 2": "`zoo tune` killed after a trial ends: empty oracle.json, trial re-run",
    "fault 3": "killed while the checkpoint metadata is rewritten: never resumable",
    "fault 4": "a kill between the weights and the metadata trains an epoch twice",
    "fault 5": "the distributed chief never exits while a trial is left running",
    "fault 6": "`--worker-id` used as a file path; duplicate ids",
    "fault 7": "nothing locks a run or tuning directory",
    "fault 8": "silent wrong exports and metrics (no dataset.json, short history)",
    "fault 9": "temporary files with predictable names follow symlinks",
    "fault 10": "`retrain_and_export()` imports whatever module search.json names",
    "fault 11": "corrupted run, tuning and SavedModel files give raw messages",
    "fault 12": "`zoo predict` loads every image as one batch",
}
# What a row is: an error (exit 2) or Ctrl-C (exit 130) of the `zoo` command, a
# ValueError of a Python call, one warning line of a command that succeeds, a gRPC
# refusal of the chief, or the checked outcome of a fault that has no message.
KINDS = ("error", "interrupt", "raised", "warning", "refused", "outcome")


class Killed(BaseException):
    """A SIGKILL at a named write, simulated: nothing in zoo catches it."""


@dataclasses.dataclass
class Out:
    command: str
    exit: int | str
    out: str
    err: str


@dataclasses.dataclass
class Row:
    case: str
    point: str
    kind: str
    command: str
    exit: int | str
    message: str
    checks: list[tuple[str, bool]]
    program: str  # "zoo train", say: the command whose stderr the message is
    lines: int  # of stderr (messages), or 1 (outcomes)


class Case:
    """One case at work: runs commands, collects leftover checks and rows."""

    def __init__(self, lab: Lab, name: str, tmp: Path) -> None:
        self.lab, self.name, self.tmp = lab, name, tmp
        self.rows: list[Row] = []
        self.checks: list[tuple[str, bool]] = []

    def check(self, ok: object, what: str) -> None:
        """A check for the next row: what was verified, and whether it held."""
        self.checks.append((what, bool(ok)))

    def zoo(self, *argv: object) -> Out:
        """`zoo ARGV` in this process, as the console script runs it (one string:
        split as a shell would)."""
        from zoo import cli

        args = _args(argv)
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            # pytest records warnings: print them with Python's default filters.
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (
                DeprecationWarning,
                PendingDeprecationWarning,
                ImportWarning,
                ResourceWarning,
            ):
                warnings.filterwarnings("ignore", category=category)
            warnings.showwarning = _print_warning
            try:
                code = cli.main(args)
            except SystemExit as exit_:  # argparse
                code = exit_.code
        return Out(f"zoo {shlex.join(args)}", code, out.getvalue(), err.getvalue())

    def zoo_process(self, *argv: object, env: dict[str, str]) -> Out:
        """`zoo ARGV` in a fresh process (its own stderr file descriptor)."""
        args = _args(argv)
        done = subprocess.run(
            [sys.executable, "-m", "zoo.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=ROOT,
        )
        return Out(f"zoo {shlex.join(args)}", done.returncode, done.stdout, done.stderr)

    def call(self, command: str, function: Callable[[], object]) -> Out:
        """A Python call expected to raise ValueError (`command`: how it reads)."""
        try:
            function()
        except ValueError as err:
            return Out(command, type(err).__name__, "", f"{err}\n")
        raise AssertionError(f"{command} raised nothing")

    def row(
        self,
        point: str,
        out: Out,
        kind: str = "error",
        *,
        how: str = "",
        message: str | None = None,
    ) -> None:
        """A row of the table: `out`'s stderr line (or `message`, the checked
        outcome), with the checks made since the previous row."""
        assert point in POINTS and kind in KINDS, (point, kind)
        text = out.err.rstrip("\n") if message is None else message
        lines = 1 if message is not None else len(out.err.splitlines())
        if "Traceback" in out.err + out.out:
            lines = -1  # reported as not one line
        command = f"{how}: {out.command}" if how else out.command
        clean = functools.partial(self.lab.clean, tmp=self.tmp)
        self.rows.append(
            Row(
                self.name,
                point,
                kind,
                clean(command),
                out.exit,
                clean(text),
                [(clean(w), ok) for w, ok in self.checks],
                " ".join(out.command.split()[:2]),
                lines,
            )
        )
        self.checks = []

    def copy(self, world: str, name: str = "run") -> Path:
        """A copy of a shared world (never changed by a case) to damage."""
        target = self.tmp / name
        shutil.copytree(self.lab.world(world), target)
        return target


def _args(argv: tuple[object, ...]) -> list[str]:
    if len(argv) == 1 and isinstance(argv[0], str):
        return shlex.split(argv[0])
    return [str(a) for a in argv]


def _print_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno))


def contents(folder: Path, exact: bool = False) -> dict[Path, object]:
    """Every file under `folder` but a run's .lock with its bytes; `exact`: with
    its modification time too, and the .lock."""
    return {
        p: (p.stat().st_mtime_ns, p.read_bytes()) if exact else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (exact or p.name != ".lock")
    }


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name]


def resume(c: Case, run: Path) -> tuple[Out, str]:
    """`zoo train --resume RUN`, then what the run's files say of its epochs."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = c.zoo("train", "--resume", run)
    epochs = ", ".join(map(str, pd.read_csv(run / "history.csv")["epoch"]))
    counted = json.loads((run / "metrics.json").read_text())["epochs"]
    c.check(no_temp_files(run), "no temporary file in the run")
    return out, f"history.csv epochs {epochs}; metrics.json counts {counted} epochs"


# --- shared worlds: built once per process, copied before a case damages them -------

WORLDS: dict[str, Callable[[Lab, Path], Path]] = {}
# How rows name the worlds that cases use without copying them.
LABELS = {"digits_run": "RUN", "digits_export": "SERVED", "table_export": "SERVED"}
TINY_FIX = ["--fix", "num_layers=1", "--fix", "units_1=16", "--fix", "batch_size=128"]


def world(function: Callable[[Lab, Path], Path]) -> Callable[[Lab, Path], Path]:
    WORLDS[function.__name__] = function
    return function


@world
def digits_run(lab: Lab, root: Path) -> Path:
    """A finished 2-epoch `zoo train mlp` run on digits, a checkpoint every epoch."""
    from zoo import cli

    argv = (
        f"train mlp --dataset digits --epochs 2 --checkpoint-every 1 --run-dir {root}"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*argv.split(), "--name", "r"]) == 0
    return root / "r"


@world
def unfinished_run(lab: Lab, root: Path) -> Path:
    """The digits run as a kill after its last checkpoint leaves it."""
    shutil.copytree(lab.world("digits_run"), root / "r")
    (root / "r" / "metrics.json").unlink()
    return root / "r"


@contextlib.contextmanager
def unverified():
    """Exports without their verification in a fresh process (~3 s each): the
    worlds need an export, the verification has tests of its own."""
    from zoo.export import savedmodel, verification

    def verify(path, samples, tolerance=None):
        return verification.VerifyReport(str(path), "float32", 1e-5, 0, 0, 0, 1, ())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(savedmodel, "verify", verify)
        yield


@world
def digits_export(lab: Lab, root: Path) -> Path:
    """`zoo export` of the digits run: the export base holding version 1."""
    from zoo import cli

    with contextlib.redirect_stdout(io.StringIO()), unverified():
        run = lab.world("digits_run")
        assert cli.main(["export", str(run), "--out", str(root / "served")]) == 0
    return root / "served"


@world
def table_export(lab: Lab, root: Path) -> Path:
    """The wine table run of test_export (an untrained MLP), exported."""
    from zoo import export

    _, _, run = table_run(root)  # beside root/wine.csv
    with unverified():
        export.export_saved_model(run, root / "served")
    return root / "served"


TUNE = ["tune", "mlp", *"--max-trials 3 --epochs 1 --seed 0 --in-process".split()]
TUNE += TINY_FIX


@world
def killed_search(lab: Lab, root: Path) -> Path:
    """A 3-trial `zoo tune` killed at the rename of trials/oracle.json just after
    trial 1 ended (still listed as running there), then resumed.
    `outcome.json` beside it records what each session ran."""
    from zoo import cli

    directory = root / "search"
    oracle, trial_1 = (directory / "trials" / n for n in ("oracle.json", "trial_1"))
    replace, ran = os.replace, []

    def kill_at_write(src, dst, *args, **kwargs):
        done = trial_1 / "trial.json"
        if (
            str(dst) == str(oracle)
            and done.is_file()
            and '"COMPLETED"' in done.read_text()
            and not ran
        ):
            ran.append("killed")
            raise Killed(dst)
        return replace(src, dst, *args, **kwargs)

    printed = []
    for resume in ([], ["--resume"]):
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
            if not resume:
                patch.setattr(os, "replace", kill_at_write)
            try:
                code = cli.main([*TUNE, "--directory", str(directory), *resume])
            except Killed:
                code = "killed"
        lines = out.getvalue().splitlines()
        printed.append([line.split()[1] for line in lines if line.startswith("trial ")])
        assert code == ("killed" if not resume else 0), code
    (root / "outcome.json").write_text(json.dumps(printed))
    return directory


# --- the cases ------------------------------------------------------------------------

CASES: dict[str, Callable[[Case], None]] = {}


def case(function: Callable[[Case], None]) -> Callable[[Case], None]:
    CASES[function.__name__.replace("_", "-")] = function
    return function


@case
def tfds_offline(c: Case) -> None:
    data, runs = c.tmp / "tfds", c.tmp / "runs"
    data.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        go_offline(patch)
        started = time.monotonic()
        out = c.zoo(
            f"train lenet5 --dataset tfds:mnist --data-dir {data} --epochs 1 "
            f"--run-dir {runs}"
        )
    c.check(time.monotonic() - started < 20, "failed within 20 s")
    c.check(not any(data.iterdir()), "data_dir left empty")
    c.check(not runs.exists(), "no run directory")
    c.row("user 1", out, how="offline (no name resolves)")


@case
def tfds_download_breaks(c: Case) -> None:
    import tensorflow_datasets as tfds

    from data_pipelines import sources

    data = c.tmp / "tfds"
    (data / "other").mkdir(parents=True)  # a dataset prepared earlier

    def broken_download(self, *args, **kwargs):
        (data / "downloads" / "mnist").mkdir(parents=True)
        (data / "downloads" / "mnist" / "t10k.gz.tmp.1234").write_bytes(b"x")
        (data / "mnist" / "3.0.1.incomplete5678").mkdir(parents=True)
        raise ConnectionError("connection reset by peer")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "_unreachable", lambda urls: None)
        patch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", broken_download)
        out = c.zoo(
            f"train lenet5 --dataset tfds:mnist --data-dir {data} --epochs 1 "
            f"--run-dir {c.tmp}/runs"
        )
    c.check(
        sorted(p.name for p in data.iterdir()) == ["other"],
        "the download's .tmp and .incomplete files removed, data_dir/other kept",
    )
    c.check(not (c.tmp / "runs").exists(), "no run directory")
    c.row("user 1", out, how="download breaks after writing files")


@case
def csv_infinite_features(c: Case) -> None:
    table = make_table(100)
    table.loc[::10, "size"] = np.inf
    table.loc[[5, 10], "weight"] = -np.inf
    table.to_csv(c.tmp / "t.csv", index=False)
    out = c.zoo(
        f"train mlp --dataset csv:{c.tmp}/t.csv --label-column species "
        f"--run-dir {c.tmp}/runs"
    )
    c.check(not (c.tmp / "runs").exists(), "no run directory")
    c.row("user 2", out)


@case
def numpy_bad_images(c: Case) -> None:
    import data_pipelines as dp

    y = np.arange(10) % 2
    nan = np.where(np.arange(160).reshape(10, 4, 4) % 7 == 0, np.nan, 0.5)
    out = c.call(
        "data_pipelines.load((x, y)), x float with NaN", lambda: dp.load((nan, y))
    )
    c.row("user 2", out, "raised")
    wide = np.linspace(0, 300, 160).reshape(10, 4, 4)
    out = c.call(
        "data_pipelines.load((x, y)), x float in [0, 300]", lambda: dp.load((wide, y))
    )
    c.row("user 2", out, "raised")


@case
def predict_csv_rows(c: Case) -> None:
    served = c.lab.world("table_export")
    frame = pd.read_csv(served.parent / "wine.csv")
    rows = frame.iloc[:70][["cellar", "target", *reversed(frame.columns[:13])]]
    rows.to_csv(c.tmp / "rows.csv", index=False)
    (c.tmp / "out").mkdir()
    target = c.tmp / "out" / "predictions.csv"
    out = c.zoo("predict", served, c.tmp / "rows.csv", "--out", target)
    printed = pd.read_csv(target)
    c.check(
        sorted(p.name for p in target.parent.iterdir()) == [target.name],
        "predictions.csv alone in its folder (written atomically)",
    )
    c.row(
        "user 3",
        out,
        "outcome",
        message=(
            f"'{out.out.strip()}'; columns {', '.join(printed.columns)}; "
            f"{len(printed)} rows (input columns matched by name)"
        ),
    )
    frame[["alcohol", "cellar", "target"]].to_csv(c.tmp / "few.csv", index=False)
    text = frame.head(3).astype({"ash": object})
    text.loc[1, "ash"] = "lots"
    text.to_csv(c.tmp / "text.csv", index=False)
    (c.tmp / "empty.csv").write_text("")
    for name in ("few.csv", "text.csv", "empty.csv"):
        out = c.zoo("predict", served, c.tmp / name)
        c.check(out.out == "", "nothing printed on stdout")
        c.row("user 3", out)


@case
def keras_model_does_not_fit_the_data(c: Case) -> None:
    import zoo

    model = zoo.build("lenet5", input_shape=(16, 16, 1), num_classes=10)
    model.save(c.tmp / "lenet5.keras")
    out = c.zoo("train", c.tmp / "lenet5.keras", "--run-dir", c.tmp / "runs")
    c.check(not (c.tmp / "runs").exists(), "no run directory")
    c.row("user 4", out)


@case
def resume_finished_run(c: Case) -> None:
    run = c.copy("digits_run")
    before = contents(run, exact=True)
    out = c.zoo("train", "--resume", run)
    c.check(
        contents(run, exact=True) == before,
        "not one file of the run touched (.lock and times included)",
    )
    c.check(not (run / "saved_models").exists(), "nothing exported")
    c.row("user 5", out)


@case
def csv_label_problems(c: Case) -> None:
    table = make_table(120)
    table["price"] = (2 * table["size"] + 1).round(4)
    table.to_csv(c.tmp / "t.csv", index=False)
    (c.tmp / "empty.csv").write_text("")
    (c.tmp / "header.csv").write_text("size,species\n")
    for source, flags in [
        ("t.csv", ""),
        ("t.csv", " --label-column price"),
        ("empty.csv", " --label-column species"),
        ("header.csv", " --label-column species"),
    ]:
        out = c.zoo(
            f"train mlp --dataset csv:{c.tmp}/{source}{flags} --run-dir {c.tmp}/runs"
        )
        c.check(not (c.tmp / "runs").exists(), "no run directory")
        c.row("user 6", out)


@case
def quiet_deterministic_run_with_unreadable_files(c: Case) -> None:
    data = c.tmp / "data"
    write_pngs(data / "dark", 12, 10)
    write_pngs(data / "light", 12, 200)
    for i in range(3):
        (data / "light" / f"broken{i}.png").write_bytes(b"not a png")
    out = c.zoo_process(
        f"train mlp --dataset folder:{data} --epochs 1 --deterministic "
        f"--run-dir {c.tmp}/runs --name r",
        env=env_without_tf_log_level(),
    )
    c.check(
        out.exit == 0 and (c.tmp / "runs" / "r" / "metrics.json").is_file(),
        "the run finished",
    )
    c.check(
        len(out.err.splitlines()) == 1,
        "stderr holds only this line: no TensorFlow log line (no "
        "TF_CPP_MIN_LOG_LEVEL set), one line for 3 unreadable files",
    )
    c.row("user 7", out, "warning", how="fresh process, TF_CPP_MIN_LOG_LEVEL unset")


@case
def importing_the_python_api(c: Case) -> None:
    code = "import os, zoo, tensorflow as tf; tf.config.list_physical_devices(); "
    code += 'print(os.environ["TF_CPP_MIN_LOG_LEVEL"])'
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_without_tf_log_level(),
        cwd=ROOT,
    )
    lines = done.stderr.splitlines()
    count = {k: sum(line.startswith(k) for line in lines) for k in ("E0", "I0", "W")}
    c.check(
        done.returncode == 0 and done.stdout.strip() == "3",
        "TF_CPP_MIN_LOG_LEVEL set to 3 by zoo",
    )
    c.check(count["E0"] == 0, "no error line")
    c.row(
        "user 7",
        Out(
            f"python3 -c {shlex.quote(code)}", done.returncode, done.stdout, done.stderr
        ),
        "outcome",
        how="fresh process, TF_CPP_MIN_LOG_LEVEL unset",
        message=(
            f"{count['E0']} error lines (no 'failed call to cuInit'); "
            f"{len(lines)} lines remain on stderr: {count['I0']} I0000 notices "
            f"(oneDNN, no CUDA driver) and {count['W']} absl 'WARNING: All log "
            "messages before absl::InitializeLog()...', which TensorFlow prints "
            "whatever TF_CPP_MIN_LOG_LEVEL says"
        ),
    )


@case
def ctrl_c(c: Case) -> None:
    from tuning.search import ZooTuner
    from zoo import runs

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "_fit_phases", interrupt)
        out = c.zoo(f"train mlp --run-dir {c.tmp}/runs --name r")
    c.check(
        (c.tmp / "runs" / "r" / "config.json").is_file(),
        "the run directory is kept for --resume",
    )
    c.row("user 8", out, "interrupt", how="Ctrl-C in the first epoch")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ZooTuner, "run_trial", interrupt)
        patch.chdir(c.tmp)
        out = c.zoo("tune mlp --max-trials 2 --epochs 1 --in-process")
    search = c.tmp / "tuning_runs" / "mlp_digits"
    c.check(
        (search / "search.json").is_file() and no_temp_files(search),
        "search.json kept for --resume, no temporary file",
    )
    c.row("user 8", out, "interrupt", how="Ctrl-C in the first trial")


@case
def hyperband_retrains_for_the_full_epochs(c: Case) -> None:
    import tuning

    directory = c.tmp / "hb"
    with contextlib.redirect_stdout(io.StringIO()):
        out = c.zoo(
            "tune", "mlp", *"--tuner hyperband --max-trials 2 --epochs 3".split(),
            "--seed", "0", "--in-process", *TINY_FIX, "--directory", directory,
        )  # fmt: skip
    result = tuning.load_results(directory)
    row = result.table.set_index("trial_id").loc[result.best_trial_id]
    epochs = tuning.results.retrain_epochs(result.spec, row)
    c.check(out.exit == 0, "the search ended (exit 0)")
    c.row(
        "user 8",
        out,
        "outcome",
        message=(
            f"best trial {result.best_trial_id} was cut at tuner/epochs "
            f"{int(row['tuner/epochs'])} (best_epoch {int(row['best_epoch'])}); "
            f"retrain_and_export trains it for {epochs} epochs, the --epochs given"
        ),
    )


@case
def small_bad_inputs(c: Case) -> None:
    runs = c.tmp / "runs"
    out = c.zoo(f"train lenet5 --image-size 0 --run-dir {runs}")
    c.check(not runs.exists(), "no run directory")
    c.row("user 8", out)
    out = c.zoo(f"train lenet5 --epochs many --run-dir {runs}")
    c.check(out.out == "", "no usage block")
    c.row("user 8", out)
    (c.tmp / "work").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(c.tmp / "work")
        out = c.zoo("train lenet5 --dataset idx:../shared/data/mnist --run-dir runs")
    c.check(not any((c.tmp / "work").iterdir()), "nothing written in the directory")
    c.row("user 8", out, how="from TMP/work")


@case
def predict_16_bit_png(c: Case) -> None:
    from PIL import Image

    from zoo import export

    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)
    Image.fromarray(sixteen).save(c.tmp / "deep.png")
    out = c.zoo("predict", c.lab.world("digits_export"), c.tmp / "deep.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = export.load_images([c.tmp / "deep.png"], (8, 8, 1))
    levels = len(np.unique(loaded))
    c.check(out.exit == 0 and "deep.png" in out.out, "the prediction is printed")
    c.check(levels == 64, f"{levels} grey levels kept (clipping to 0/255 gives 2)")
    c.row("user 8", out, "warning")


@case
def evaluate_on_bad_data(c: Case) -> None:
    run = c.copy("digits_run")
    before = contents(run)
    (c.tmp / "empty.csv").write_text("")
    folder = c.tmp / "tmpdir"  # like folder:/tmp: folders and files, no image
    (folder / "cache").mkdir(parents=True)
    (folder / "tfds").mkdir()
    (folder / "tfds" / "log.txt").write_text("a log")
    for source in (f"csv:{c.tmp / 'empty.csv'}", f"folder:{folder}"):
        out = c.zoo("evaluate", run, "--dataset", source)
        c.check(contents(run) == before, "the run untouched")
        c.row("user 8", out)


@case
def full_disk_during_a_checkpoint(c: Case) -> None:
    import keras

    runs = c.tmp / "runs"
    cut = runs / "cut"
    save, calls = keras.Model.save_weights, []

    def full_disk(model, path, *args, **kwargs):
        calls.append(path)
        if len(calls) < 2:
            return save(model, path, *args, **kwargs)
        with open(path, "wb") as half_written:
            half_written.write(b"\x89HDF\r\n\x1a\n" + bytes(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "save_weights", full_disk)
        out = c.zoo(
            "train mlp --epochs 3 --checkpoint-every 1 --deterministic "
            f"--run-dir {runs} --name cut"
        )
    progress = json.loads((cut / "checkpoints" / "progress.json").read_text())
    c.check(
        progress["epoch"] == 1 and progress["weights"] == "epoch-0001.weights.h5",
        "progress.json still names epoch 1 and its checkpoint",
    )
    c.check(
        sorted(p.name for p in (cut / "checkpoints").iterdir())
        == ["epoch-0001.weights.h5", "progress.json"],
        "checkpoints/ holds the last good checkpoint only, no half-written file",
    )
    c.row("fault 1", out, how="ENOSPC in the 2nd weights checkpoint")
    (cut / "history.csv").write_text("epoch,accuracy\n0,0.1")  # damaged meanwhile
    out, epochs = resume(c, cut)
    c.row(
        "fault 8",
        out,
        "outcome",
        how="space freed, history.csv truncated meanwhile",
        message=f"{epochs} (history.csv rewritten from progress.json)",
    )


@case
def kill_after_a_trial_ends(c: Case) -> None:
    import tuning

    directory = c.lab.world("killed_search")
    first, second = json.loads((directory.parent / "outcome.json").read_text())
    table = tuning.load_results(directory).table
    c.check(
        json.loads((directory / "trials" / "oracle.json").read_text()),
        "trials/oracle.json valid JSON after the kill",
    )
    c.check("1" not in second, "trial 1 not run again")
    c.row(
        "fault 2",
        Out(f"zoo {shlex.join(TUNE)} --directory SEARCH --resume", 0, "", ""),
        "outcome",
        how="kill at the rename of trials/oracle.json after trial 1 ended",
        message=(
            f"trials printed before the kill: {', '.join(first)}; run by "
            f"--resume: {', '.join(second)} (trial 1 not run again); results.csv: "
            + ", ".join(
                f"trial {t} {s} {r}x"
                for t, s, r in zip(
                    table["trial_id"], table["status"], table["runs"], strict=True
                )
            )
        ),
    )


@case
def damaged_tuning_files(c: Case) -> None:
    resume = [*TUNE, "--resume", "--directory"]
    for name, text, command, point in [
        ("trials/oracle.json", "", resume, "fault 2"),
        ("trials/trial_2/trial.json", '{"trial_id": "2", "hyper', resume, "fault 11"),
        ("search.json", '{"family": "mlp"}', ["tune-results"], "fault 11"),
        (
            "results.csv",
            'trial_id,status\n"0,COMPLETED\n',
            ["tune-results"],
            "fault 11",
        ),
    ]:
        search = c.copy("killed_search", f"search-{len(c.rows)}")
        (search / name).write_text(text)
        before = contents(search)
        out = c.zoo(*command, search)
        c.check(contents(search) == before, "nothing in the search rewritten")
        c.row(point, out, how=f"{name} holding {text!r}")


@case
def damaged_progress_of_a_run(c: Case) -> None:
    cases = [
        ("fault 3", "checkpoints/progress.json", "emptied", lambda p: p.write_text("")),
        (
            "fault 8",
            "checkpoints/progress.json",
            "0 history rows for 2 epochs",
            lambda p: p.write_text(
                json.dumps({**json.loads(p.read_text()), "rows": []})
            ),
        ),
        (
            "fault 4",
            "checkpoints/{weights}",
            "truncated",
            lambda p: p.write_bytes(p.read_bytes()[:3000]),
        ),
        ("fault 8", "dataset.json", "deleted", lambda p: p.unlink()),
    ]
    for point, name, damage, corrupt in cases:
        run = c.copy("unfinished_run", f"r{len(c.rows)}")
        progress = json.loads((run / "checkpoints" / "progress.json").read_text())
        name = name.format(**progress)
        corrupt(run / name)
        before = contents(run)
        out = c.zoo("train", "--resume", run)
        c.check(contents(run) == before, "nothing trained: every file as it was")
        c.row(point, out, how=f"{name} {damage}")


@case
def run_of_an_earlier_zoo(c: Case) -> None:
    from zoo.config import TrainConfig

    run = c.tmp / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(TrainConfig(epochs=5).to_dict()))
    (run / "checkpoints" / "training_metadata.json").write_text('{"epoch": 2}')
    before = contents(run)
    out = c.zoo("train", "--resume", run)
    c.check(contents(run) == before, "nothing rewritten")
    c.row("fault 3", out, how="Keras BackupAndRestore files, no progress.json")


@case
def kill_between_weights_and_progress(c: Case) -> None:
    from zoo import files, runs

    run = c.tmp / "runs" / "r"
    write, seen = files.write_json, []

    def kill_at_second_progress(path, data):
        if Path(path).name == "progress.json":
            seen.append(path)
            if len(seen) == 2:
                raise Killed(path)
        return write(path, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs.files, "write_json", kill_at_second_progress)
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(Killed):
            c.zoo(
                "train mlp --epochs 3 --checkpoint-every 1 --deterministic "
                f"--run-dir {c.tmp}/runs --name r"
            )
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    rows_before = len(pd.read_csv(run / "history.csv"))
    out, epochs = resume(c, run)
    c.check(
        epochs.startswith("history.csv epochs 0, 1, 2;"),
        "each epoch once in history.csv",
    )
    c.row(
        "fault 4",
        out,
        "outcome",
        how="kill after epoch-0002.weights.h5, before progress.json",
        message=f"the kill left {', '.join(left)} and {rows_before} history rows; "
        f"the resume continued from epoch 1: {epochs}",
    )


@case
def distributed_chief(c: Case) -> None:
    import grpc
    import keras_tuner as kt
    from keras_tuner.src import protos

    import tuning

    address = f"127.0.0.1:{free_port()}"
    ended: dict[str, object] = {}

    def chief():
        try:
            ended["result"] = tuning.search(
                "mlp",
                directory=c.tmp / "chief",
                distributed="chief",
                max_trials=2,
                oracle_address=address,
                oracle_timeout=2.0,
                verbose=False,
            )
        except BaseException as err:  # noqa: BLE001  (reported below)
            ended["error"] = err

    thread = threading.Thread(target=chief, daemon=True)
    thread.start()
    channel = grpc.insecure_channel(address)
    oracle, service = (
        protos.get_service_grpc().OracleStub(channel),
        protos.get_service(),
    )

    def create(tuner_id):
        request = service.CreateTrialRequest(tuner_id=tuner_id)
        return oracle.CreateTrial(request, wait_for_ready=True, timeout=20).trial

    def refused(call) -> Out:
        try:
            call()
        except grpc.RpcError as err:
            return Out("", err.code().name, "", f"{err.details()}\n")
        raise AssertionError("not refused")

    stray = refused(
        lambda: channel.unary_unary("/keras_tuner.Oracle/CreateTrial")(
            b"", wait_for_ready=True, timeout=60
        )
    )
    stray.command = (
        "grpc.insecure_channel(CHIEF).unary_unary('/keras_tuner.Oracle/CreateTrial')"
        "(b'')"
    )
    try:
        taken = create("w1")  # then w1 goes silent, as if killed
        duplicate = refused(lambda: create("w1"))
        duplicate.command = "a second worker w1 asks for a trial"
        running = create("w2")
        for _ in range(10):  # 2.5 s > --oracle-timeout; w2 reports every 0.25 s
            time.sleep(0.25)
            oracle.GetTrial(service.GetTrialRequest(trial_id=running.trial_id))
        request = service.UpdateTrialRequest(
            trial_id=running.trial_id, metrics={"val_accuracy": 0.5}, step=0
        )
        oracle.UpdateTrial(request)
        done = kt.engine.trial.Trial.from_proto(running)
        done.status = "COMPLETED"
        oracle.EndTrial(service.EndTrialRequest(trial=done.to_proto()))
        last = kt.engine.trial.Trial.from_proto(create("w2")).status
    except grpc.RpcError as err:
        thread.join(timeout=5)
        raise AssertionError(f"the chief ended early: {ended.get('error')!r}") from err
    thread.join(timeout=30)
    channel.close()
    c.row("fault 5", stray, "refused")
    c.row("fault 6", duplicate, "refused")
    c.check(not thread.is_alive() and "error" not in ended, "the chief ended")
    table = ended["result"].table if "result" in ended else pd.DataFrame()
    statuses = ", ".join(
        f"{t} {s} ({w})"
        for t, s, w in zip(
            table["trial_id"], table["status"], table["worker"], strict=True
        )
    )
    c.check(taken.trial_id == "0" and last == "STOPPED", "w2 was told to stop")
    c.row(
        "fault 5",
        Out(
            "zoo tune mlp --distributed chief --max-trials 2 --oracle-timeout 2",
            0,
            "",
            "",
        ),
        "outcome",
        how="w1 silent after taking trial 0, w2 reports while it runs trial 1",
        message=f"the chief ended; trials {statuses}; trial 0's error: "
        f"{table['error'].iloc[0]}",
    )
    # A chief restarted at once: the port's connections are in TIME_WAIT.
    from tuning import distributed

    try:
        distributed.check_can_listen(port_in_time_wait())
        outcome = "the chief can listen at once (no 'Address already in use')"
    except ValueError as err:
        outcome = str(err)
    c.row(
        "fault 5",
        Out("tuning.distributed.check_can_listen(ADDRESS)", 0, "", ""),
        "outcome",
        how="the port of a chief that just ended, in TIME_WAIT",
        message=outcome,
    )


@case
def worker_id_as_a_path(c: Case) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(c.tmp)
        out = c.zoo(
            "tune mlp --distributed worker --worker-id ../search "
            "--oracle-address 127.0.0.1:1"
        )
    c.check(not any(c.tmp.iterdir()), "nothing written")
    c.row("fault 6", out)


@case
def locked_run_and_search(c: Case) -> None:
    from zoo import files

    run = c.copy("unfinished_run")
    before = contents(run)
    held = files.lock(run / ".lock", "held")  # a zoo train running there
    try:
        out = c.zoo("train", "--resume", run)
    finally:
        held.close()
    c.check(contents(run) == before, "nothing rewritten")
    c.row("fault 7", out, how="while another process trains the run")
    search = c.tmp / "busy"
    search.mkdir()
    held = files.lock(search / ".lock", "held")  # a zoo tune running there
    try:
        out = c.zoo(
            f"tune mlp --max-trials 1 --epochs 1 --in-process --directory {search}"
        )
    finally:
        held.close()
    c.check(sorted(p.name for p in search.iterdir()) == [".lock"], "nothing written")
    c.row("fault 7", out, how="while another zoo tune runs there")


@case
def planted_symlinks(c: Case) -> None:
    run = c.copy("unfinished_run")
    victim = c.tmp / "victim.txt"
    victim.write_text("untouched")
    for name in (".metrics.json.tmp", ".metrics.tmp.json"):
        (run / name).symlink_to(victim)
    with contextlib.redirect_stdout(io.StringIO()):
        out = c.zoo("train", "--resume", run)
    c.check(victim.read_text() == "untouched", "TMP/victim.txt untouched")
    c.check(not (run / "metrics.json").is_symlink(), "metrics.json a new file")
    c.row(
        "fault 9",
        out,
        "outcome",
        how="symlinks to TMP/victim.txt at the old temporary names",
        message=f"TMP/victim.txt still reads '{victim.read_text()}'; metrics.json "
        "written",
    )


@case
def search_json_names_a_module(c: Case) -> None:
    import tuning

    search = c.copy("killed_search", "search")
    (c.tmp / "evilmod.py").write_text(
        "import pathlib\npathlib.Path('evil-ran').write_text('x')\n"
        "def space(hp):\n    return {}\n"
    )
    spec = json.loads((search / "search.json").read_text())
    (search / "search.json").write_text(json.dumps({**spec, "space": "evilmod:space"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(c.tmp)
        patch.syspath_prepend(str(c.tmp))
        out = c.call(
            "tuning.load_results(SEARCH).retrain_and_export(TMP/export)",
            lambda: tuning.load_results(search).retrain_and_export(c.tmp / "export"),
        )
    c.check(
        not (c.tmp / "evil-ran").exists() and "evilmod" not in sys.modules,
        "evilmod never imported",
    )
    c.check(not (c.tmp / "export").exists(), "nothing exported")
    c.row("fault 10", out, "raised", how="search.json's space: evilmod:space")


@case
def damaged_run_files(c: Case) -> None:
    for damage, (name, corrupt, _) in DAMAGES.items():
        run = c.copy("digits_run", f"run{len(c.rows)}")
        corrupt(run / name)
        out = c.zoo("export", run, "--out", c.tmp / "served")
        c.check(not (c.tmp / "served").exists(), "no export")
        point = "fault 8" if damage == "no dataset.json" else "fault 11"
        c.row(point, out, how=damage)


@case
def full_or_read_only_disk_during_export(c: Case) -> None:
    import keras
    import tensorflow as tf

    from zoo.export import savedmodel

    def saved_model(module, path, signatures):
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{path}/variables/variables.index; No space left on device"
        )

    def read_only(model, path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    run = c.lab.world("digits_run")
    for (owner, name, fault), how in [
        (
            (savedmodel.tf.saved_model, "save", saved_model),
            "TensorFlow's OpError: disk full in the SavedModel",
        ),
        (
            (keras.Model, "save", read_only),
            "EROFS in model.keras (Keras names no file)",
        ),
    ]:
        served = c.tmp / f"served{len(c.rows)}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(owner, name, fault)
            out = c.zoo("export", run, "--out", served)
        c.check(not served.exists() or not any(served.iterdir()), "no version")
        c.row("fault 11", out, how=how)


@case
def damaged_saved_models(c: Case) -> None:
    """Relative paths: TensorFlow's messages name the files, and a message is cut
    at 300 characters, which must not depend on the machine's temporary path."""
    served = c.lab.world("digits_export")
    _write_png(c.tmp / "a.png", _digits_uint8(1)[0, ..., 0])
    for damage, (corrupt, _) in SAVED_MODEL_DAMAGES.items():
        base = f"base{len(c.rows)}"
        shutil.copytree(served / "1", c.tmp / base / "1")
        corrupt(c.tmp / base / "1")
        before = contents(c.tmp / base)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(c.tmp)
            out = c.zoo(f"predict {base} a.png")
        c.check(contents(c.tmp / base) == before, "the export untouched")
        c.row("fault 11", out, how=f"{damage}, in TMP")


@case
def predict_in_batches(c: Case) -> None:
    from zoo import export

    digits = _digits_uint8(5)
    paths = [_write_png(c.tmp / f"{i}.png", d[..., 0]) for i, d in enumerate(digits)]
    read, load_images = [], export.client.load_images
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            export.client,
            "load_images",
            lambda chunk, shape: read.append(len(chunk)) or load_images(chunk, shape),
        )
        out = c.zoo(
            "predict", c.lab.world("digits_export"), *paths, "--batch-size", "2"
        )
    images = {line.split()[0] for line in out.out.splitlines()[1:]}
    c.row(
        "fault 12",
        dataclasses.replace(
            out, command="zoo predict SERVED 0.png ... 4.png --batch-size 2"
        ),
        "outcome",
        message=(
            f"images read {', '.join(map(str, read))} at a time; a "
            f"prediction for each of the {len(images)} images"
        ),
    )
    out = c.zoo("predict", c.lab.world("digits_export"), paths[0], "--batch-size", "0")
    c.row("fault 12", out)


# --- running the cases, checking and rendering rows ----------------------------------


class Lab:
    """The cases' results and shared worlds of this process."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.worlds: dict[str, Path] = {}
        self.results: dict[str, list[Row] | BaseException] = {}
        self.labels: list[tuple[str, str]] = []

    def world(self, name: str) -> Path:
        if name not in self.worlds:
            root = self.base / "worlds" / name
            root.mkdir(parents=True)
            self.worlds[name] = WORLDS[name](self, root)
            label = LABELS.get(name)
            if label:
                self.labels.append((str(self.worlds[name]), label))
                self.labels.sort(key=lambda pair: -len(pair[0]))
        return self.worlds[name]

    def rows(self, name: str) -> list[Row]:
        """The rows of a case, run on first use (a failure is kept and raised
        again to every test that asks)."""
        import keras

        if name not in self.results:
            tmp = self.base / name
            tmp.mkdir()
            keras.utils.set_random_seed(0)
            c = Case(self, name, tmp)
            try:
                CASES[name](c)
                assert not c.checks, "checks after the last row"
                self.results[name] = c.rows
            except Exception as err:  # noqa: BLE001  (raised again below)
                self.results[name] = err
            finally:
                keras.backend.clear_session()
        result = self.results[name]
        if isinstance(result, BaseException):
            raise result
        return result

    def clean(self, text: str, tmp: Path) -> str:
        """Paths by role, and what changes from run to run (pids, ports,
        random temporary names) by a placeholder."""
        for path, label in [*self.labels, (str(tmp), "TMP")]:
            text = text.replace(path, label)
        for pattern, placeholder in [
            (r"\.tmp-export-\d+-[0-9a-f]+", ".tmp-export-PID-XXXXXXXX"),
            (r"\.tmp-(?!export-)\w{8}-", ".tmp-XXXXXXXX-"),
            (r"process \d+", "process PID"),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
            (r"from \d+ s ago", "from N s ago"),
        ]:
            text = re.sub(pattern, placeholder, text)
        return text


def problems(row: Row) -> list[str]:
    """What is wrong with a row: a message of more than one line or with a
    traceback, an unexpected exit code, a leftover check that failed."""
    found = [f"leftover check failed: {what}" for what, ok in row.checks if not ok]
    if row.lines != 1 or "\n" in row.message or "Traceback" in row.message:
        found.append(f"not one line ({row.lines} lines)")
    expected = {
        "error": 2,
        "interrupt": 130,
        "raised": "ValueError",
        "warning": 0,
        "refused": "FAILED_PRECONDITION",
    }
    if row.kind in expected and row.exit != expected[row.kind]:
        found.append(f"exit {row.exit}, not {expected[row.kind]}")
    start = {"error": "error", "interrupt": "interrupted", "warning": "warning"}
    if row.kind in start and not row.message.startswith(
        f"{row.program}: {start[row.kind]}"
    ):
        found.append(f"does not start with '{row.program}: {start[row.kind]}'")
    if re.search(r"/tmp/|pytest-of-", f"{row.command} {row.message} {row.checks}"):
        found.append("a machine path left in the row")
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    return Lab(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("name", CASES)
def test_case(lab, name):
    rows = lab.rows(name)
    assert rows
    for row in rows:
        assert not problems(row), (problems(row), row)


def _cell(text: str, code: bool = True) -> str:
    """A table cell, as code or as text; pipes escaped."""
    text = text.replace("|", "\\|")
    if not code:
        return text
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render(rows: list[Row]) -> str:
    by_point = {p: [r for r in rows if r.point == p] for p in POINTS}
    kinds = {k: sum(r.kind == k for r in rows) for k in KINDS}
    checks = sum(len(r.checks) for r in rows)
    lines = [
        "# Bad input and faults: what zoo says (issue 18)",
        "",
        "<!-- Generated by tests/test_faults.py; do not edit. Regenerate with",
        f"     {REGENERATE} -->",
        "",
        "Every row is a case that tests/test_faults.py runs: the command (or Python",
        "call) with the fault it injects, the exit code, the exact message and what",
        "was checked to be left behind. The test fails when this page differs from",
        "what the code prints, so the page cannot drift from the code. Paths are",
        "named by role: TMP is the case's temporary directory, RUN a finished run,",
        "SERVED an export; PID, PORT and XXXXXXXX stand for what changes from run",
        "to run. `user N` is point N that issue 18 found by trying the project as",
        "a new user, `fault N` point N found by fault injection.",
        "",
        f"{len(rows)} rows: {kinds['error']} errors (exit code 2), "
        f"{kinds['interrupt']} Ctrl-C (exit code 130), {kinds['raised']} "
        f"ValueErrors of Python calls, {kinds['warning']} warnings of commands "
        f"that succeed and {kinds['refused']} gRPC refusals of the tuning chief, "
        f"each one line without a traceback; {kinds['outcome']} checked outcomes "
        "of faults that have no message. All "
        f"{checks} checks of what was left behind hold (nothing half-written).",
        "",
        "| Issue 18 point | Rows |",
        "|---|---|",
        *(
            f"| [{p}](#{p.replace(' ', '-')}): {_cell(POINTS[p], False)} | "
            f"{len(by_point[p])} |"
            for p in POINTS
        ),
    ]
    for point, found in by_point.items():
        lines += [
            "",
            f"## {point}",
            "",
            POINTS[point][0].upper() + POINTS[point][1:] + ".",
            "",
            "| Case | Command (fault injected) | Exit | Message, or checked outcome "
            "| Left behind (checked) |",
            "|---|---|---|---|---|",
        ]
        for r in found:
            checks = "; ".join(what for what, _ in r.checks) or "-"
            message = _cell(r.message, code=r.kind != "outcome")
            lines.append(
                f"| {r.case} | {_cell(r.command)} | {r.exit} | {message} | "
                f"{_cell(checks, False)} |"
            )
    return "\n".join(lines) + "\n"


def test_docs_faults_md_is_current(lab):
    rows = [row for name in CASES for row in lab.rows(name)]
    assert not [(r.case, problems(r)) for r in rows if problems(r)]
    assert {r.point for r in rows} == set(POINTS), "an issue 18 point without a row"
    text = render(rows)
    if os.environ.get("ZOO_WRITE_DOCS") == "1":
        DOCS.write_text(text)
    elif not DOCS.is_file() or DOCS.read_text() != text:
        old = DOCS.read_text().splitlines() if DOCS.is_file() else []
        new = text.splitlines()
        first = next(
            (
                n
                for n, pair in enumerate(zip(old, new, strict=False))
                if len(set(pair)) > 1
            ),
            min(len(old), len(new)),
        )
        pytest.fail(
            f"docs/faults.md is stale (first difference on line {first + 1}); "
            f"regenerate it: {REGENERATE}",
            pytrace=False,
        )
