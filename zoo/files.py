"""Files that matter, written so that every state on disk is a valid state.

Each writer puts the new content under a temporary name beside the target and
renames it into place (`os.replace` is atomic on POSIX): a crash or SIGKILL
leaves the old file or the new one, never half of one. TensorFlow-free, so the
config and the CLI can use it before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# The process's umask, for the mode of new files (mkstemp creates them 0600).
_UMASK = os.umask(0)
os.umask(_UMASK)
# A write that fails for one of these reasons is the user's to fix (free space,
# a writable directory): one line naming the path, never a traceback.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# TensorFlow's C++ writers (SavedModel, TensorBoard) report them as
# "<path>; No space left on device" inside an OpError.
_WRITE_FAILURE = re.compile(
    r"(\S+); (" + "|".join(re.escape(os.strerror(e)) for e in WRITE_ERRNOS) + ")"
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary path beside `path`, ending with its name (so `.keras`,
    `.weights.h5` and `.npz` keep their suffixes), that replaces `path` when the
    block ends without an exception and is removed when it raises. The name is
    random and the file created exclusively (`tempfile.mkstemp`): a symlink
    planted at a predictable name cannot redirect the write."""
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(
            prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent
        )
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:  # name the file meant, not the temporary
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` via a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """A failed write (full disk, read-only) inside the block that names no file
    (Keras, h5py and zipfile leave `filename` empty) is re-raised naming `path`."""
    try:
        yield
    except OSError as err:
        if err.errno in WRITE_ERRNOS and err.filename is None:
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of `path`, or None when the file does not exist.

    Raises:
        ValueError: If the file is not JSON (truncated, overwritten), naming it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"'{path}' is damaged: not valid JSON ({brief(err)}). Restore it from "
            "a copy."
        ) from None


def read_record(path: str | os.PathLike, what: str) -> dict[str, Any] | None:
    """A JSON object `path` (None when absent) that `what` needs; a file that
    holds anything else is refused in one line naming it."""
    data = read_json(path)
    if data is not None and not isinstance(data, dict):
        raise ValueError(
            f"'{path}' is damaged: {what} needs a JSON object, the file holds a "
            f"{type(data).__name__}. Restore it from a copy."
        )
    return data


def brief(err: BaseException, limit: int = 300) -> str:
    """An error's message on one line, without its final stop, at most `limit`
    characters (Keras spreads some over several lines, h5py's are long)."""
    text = " ".join(str(err).split()).rstrip(".:") or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_error(err: BaseException) -> OSError | None:
    """`err` as an OSError naming the path, when it is a write the user can fix
    (a full disk, a read-only or forbidden directory), else None. TensorFlow's
    OpErrors carry the path and the reason in their message only."""
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        return err
    found = _WRITE_FAILURE.search(str(err))
    if found is None:
        return None
    code = next(e for e in WRITE_ERRNOS if os.strerror(e) == found[2])
    return OSError(code, found[2], found[1])


def check_space(path: str | os.PathLike, needed: int) -> None:
    """Refuse a write of about `needed` bytes to `path` that the disk cannot
    hold, as OSError(ENOSPC) naming it."""
    free = shutil.disk_usage(Path(path).parent).free
    if free < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def save_model(model, path: str | os.PathLike) -> None:
    """`model.save` (a `.keras` archive) atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_weights(model, path: str | os.PathLike) -> None:
    """`model.save_weights` (a `.weights.h5` file, optimizer state included)
    atomically: a full disk or a kill leaves the previous checkpoint intact (Keras'
    BackupAndRestore rewrites its file in place).

    HDF5 crashes the process (SIGSEGV) when the disk fills during a write, so the
    space is checked first: a full disk is an OSError(ENOSPC) naming `path`.
    """
    with atomic_path(path) as tmp:
        check_space(tmp, _weights_file_size(model))
        model.save_weights(tmp)


def _weights_file_size(model) -> int:
    """More than the `.weights.h5` file of `model` takes: the values of its
    weights and optimizer variables, ~4 KiB of HDF5 headers each, and 64 KiB."""
    import math

    optimizer = getattr(model, "optimizer", None)
    variables = [*model.weights, *getattr(optimizer, "variables", [])]
    values = sum(math.prod(v.shape) * _itemsize(v.dtype) for v in variables)
    return values + 4096 * len(variables) + 65536


def _itemsize(dtype) -> int:
    """Bytes per value of a Keras dtype name ("float32" -> 4; 8 if unknown)."""
    digits = re.search(r"\d+$", str(dtype))
    return int(digits[0]) // 8 if digits else 8


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib Figure (see `zoo.plots.figure`) as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def slug(dataset: str) -> str:
    """A short file-name-safe name of a data source: "idx:../data/mnist" ->
    "mnist", "csv:wine.csv" -> "wine", "tfds:mnist:3.0.0" -> "mnist"."""
    scheme, _, rest = dataset.partition(":")
    name = Path(rest.split(":")[0]).stem if rest else scheme
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name or scheme).strip("-") or "data"


def timestamped_dir(root: Path, *parts: str) -> Path:
    """A new directory `root/<time>-<parts...>` (suffixed -2, -3... if taken)."""
    stem = "-".join([time.strftime("%Y%m%d-%H%M%S"), *parts])
    return fresh_dir(root / stem)


def fresh_dir(path: Path) -> Path:
    """Create `path`, or `path-2`, `path-3`... when it is taken."""
    candidate, n = path, 2
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            candidate, n = path.with_name(f"{path.name}-{n}"), n + 1


def check_export_dir(base_dir: str | os.PathLike) -> Path:
    """The export root as a Path; refuses one that cannot become a directory of
    versions (`train`/`finetune`/`tune` call it before training, not after)."""
    base = Path(base_dir)
    existing = next((p for p in (base, *base.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        what = (
            "exists and is a file"
            if existing == base
            else f"is inside the file '{existing}'"
        )
        raise ValueError(
            f"export path '{base}' {what}; it must be a directory holding integer "
            "versions. Pass another export directory (--export / --out)."
        )
    if not os.access(existing, os.W_OK):
        raise ValueError(
            f"export path '{base}' cannot be created: '{existing}' is not writable. "
            "Pass another export directory (--export / --out)."
        )
    return base


def lock(path: str | os.PathLike, refusal: str, probe: bool = False) -> IO | None:
    """Own `path` with an exclusive lock (fcntl.flock; the kernel drops it when the
    process ends, however it ends) and write this process's pid in it, or refuse:
    two processes must never write one run or one search.

    Args:
        path: The lock file (created if absent).
        refusal: The error when another process owns it; `{owner}` is replaced
            by that process's pid.
        probe: Only check that no other process owns it, writing nothing.

    Returns:
        The open lock file (the lock lasts until it is closed), None for a probe.

    Raises:
        ValueError: Another process owns the lock: `refusal`.
    """
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115  (held open: the lock lives with it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(refusal.format(owner=owner)) from None
    if probe:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
