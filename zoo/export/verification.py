"""Verification of an export: reloaded in a fresh process that imports only its
format's runtime (TensorFlow, ONNX Runtime or OpenVINO) and NumPy, and compared
with the Keras model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.export.layout import (
    FORMAT_NAMES,
    KERAS_FILE,
    META_FILE,
    MODEL_FILES,
    OUTPUT_NAMES,
    PREPROCESSING_FILE,
    REGRESSION_OUTPUT,
    resolve_version_dir,
)
from zoo.export.rewrites import single_output, with_precision
from zoo.export.samples import verification_samples
from zoo.files import read_json

# Max abs difference of `probabilities` against the float32 Keras model accepted
# by `verify`. Largest differences measured on 512 digits with trained lenet5 /
# resnet20: float32 0, float16 7e-4 / 3.5e-3, bfloat16 1.0e-2 / 2.7e-2; the
# reduced-precision bounds leave about 3x room for deeper models.
TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-1}


# OpenVINO's CPU plugin computes in bfloat16 by default on CPUs that have it
# (this one: AVX512_BF16); the hint is a runtime property, which OpenVINO does
# not read from the IR, so every client of an export passes this one.
OPENVINO_HINTS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}

# Run in the verification subprocess: the format's runtime and NumPy only, never
# this project (nor TensorFlow for ONNX/OpenVINO), so the artifact is proven
# loadable by a plain runtime. Each defines run(images) -> {output name: array}.
_LOADERS = {
    "savedmodel": """
import tensorflow as tf
serve = tf.saved_model.load(version_dir).signatures["serving_default"]
def run(images):
    return {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
""",
    "onnx": """
import onnxruntime as ort
session = ort.InferenceSession(
    version_dir + "/model.onnx", providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
def run(images):
    return dict(zip(names, session.run(None, {"images": images})))
""",
    "openvino": """
import openvino as ov
compiled = ov.Core().compile_model(
    version_dir + "/model.xml", "CPU", {"INFERENCE_PRECISION_HINT": options["hint"]})
def run(images):
    result = compiled(images)
    return {o.get_any_name(): result[o] for o in compiled.outputs}
""",
}
_SCRIPT = """
import json, sys
import numpy as np
version_dir, inputs_path, outputs_path, main, options = sys.argv[1:6]
options = json.loads(options)
images = np.load(inputs_path)
{loader}
outputs = run(images)
single = run(images[:1])[main]
imported = [m for m in options["forbidden"] if m in sys.modules]
np.savez(outputs_path, batch1=single,
         imported_project=np.array(imported, dtype=str), **outputs)
"""
# Modules the fresh process must not have imported, per format.
_PROJECT = ("zoo", "data_pipelines", "tuning")
_FORBIDDEN = {"savedmodel": _PROJECT}
_FORBIDDEN["onnx"] = _FORBIDDEN["openvino"] = (*_PROJECT, "tensorflow", "keras")


class VerificationError(ValueError):
    """The export does not reproduce the Keras model (nothing is renamed into
    place; the CLI reports it as a one-line error)."""


@dataclass(frozen=True)
class VerifyReport:
    """Result of reloading an export in a fresh process and comparing it.

    Attributes:
        path: The version directory that was verified.
        precision: Serving precision recorded in export_meta.json.
        tolerance: Largest accepted max abs difference of `probabilities`
            (regression: of `predictions` divided by max(1, max |Keras
            prediction|), since float32 keeps ~7 significant digits in any units).
        num_samples: Number of sample images compared.
        max_abs_diff: Max abs difference, whole batch vs the Keras model
            (regression: scaled as above).
        batch1_max_abs_diff: Same for the first image sent alone (dynamic batch).
        top1_agreement: Fraction of samples whose top class matches Keras (None
            for regression).
        imported_project: Project modules the subprocess imported, and for
            ONNX/OpenVINO TensorFlow or Keras (must be empty).
        format: The export's format.
    """

    path: str
    precision: str
    tolerance: float
    num_samples: int
    max_abs_diff: float
    batch1_max_abs_diff: float
    top1_agreement: float | None
    imported_project: tuple[str, ...]
    format: str = "savedmodel"

    @property
    def ok(self) -> bool:
        """Whether both differences are within tolerance and the loader was clean."""
        return (
            self.max_abs_diff <= self.tolerance
            and self.batch1_max_abs_diff <= self.tolerance
            and not self.imported_project
        )


def verify(
    path: str | os.PathLike,
    sample_images: np.ndarray | None = None,
    *,
    tolerance: float | None = None,
) -> VerifyReport:
    """Reload an export in a fresh process and compare it with its Keras model.

    The subprocess imports only the format's runtime and NumPy: a SavedModel is
    loaded with `tf.saved_model.load` and its `serving_default` called, an ONNX
    model with an `onnxruntime.InferenceSession` (CPU), an OpenVINO IR compiled
    for the CPU at the export's precision; each is called on the samples (whole
    batch and the first image alone). The reference is computed here with the
    exported `model.keras` (and `preprocessing.keras`) in float32.

    Args:
        path: A version directory, or a base directory (its latest version).
        sample_images: A batch of the serving input shape and dtype; default 8
            seeded random images.
        tolerance: Accepted max abs difference of `probabilities`; default from
            `TOLERANCES` for the export's precision.

    Returns:
        The comparison; check `report.ok`.

    Raises:
        ValueError: If `path` is not an export or the samples do not fit it.
        VerificationError: If the subprocess cannot load or call the export.
    """
    version_dir = resolve_version_dir(path)
    meta = read_json(version_dir / META_FILE)
    if meta is None:
        raise ValueError(
            f"'{version_dir}' has no {META_FILE}; verify needs an export written by "
            "zoo.export.export."
        )
    fmt = meta.get("format", "savedmodel")
    spec = tf.TensorSpec((None, *meta["input_shape"]), meta["input_dtype"])
    samples = verification_samples(sample_images, spec)

    regression = meta.get("task") == "regression"
    main = REGRESSION_OUTPUT if regression else OUTPUT_NAMES[0]
    reference = _keras_reference(version_dir, samples, regression)
    out = _serve_in_fresh_process(version_dir, samples, main, meta)
    served = out[main]
    batch1 = out["batch1"]
    class_ids = None if regression else out["class_ids"]
    imported = tuple(str(m) for m in out["imported_project"])

    precision = meta["precision"]
    scale = max(1.0, float(np.max(np.abs(reference)))) if regression else 1.0
    return VerifyReport(
        path=str(version_dir),
        precision=precision,
        tolerance=TOLERANCES[precision] if tolerance is None else tolerance,
        num_samples=len(samples),
        max_abs_diff=float(np.max(np.abs(served - reference))) / scale,
        batch1_max_abs_diff=float(np.max(np.abs(batch1 - reference[:1]))) / scale,
        top1_agreement=None
        if regression
        else float(np.mean(class_ids[:, 0] == reference.argmax(-1))),
        imported_project=imported,
        format=fmt,
    )


def _keras_reference(
    version_dir: Path, samples: np.ndarray, regression: bool
) -> np.ndarray:
    """The exported `model.keras` (after `preprocessing.keras`, if any) on
    `samples`, in float32: what the export must reproduce."""
    model = with_precision(
        single_output(
            zoo.load_model(version_dir / KERAS_FILE, compile=False), regression
        ),
        "float32",
    )
    x = samples
    if (version_dir / PREPROCESSING_FILE).is_file():
        preprocessing = keras.saving.load_model(
            version_dir / PREPROCESSING_FILE, compile=False
        )
        x = preprocessing(samples, training=False)
    return keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32)


def _serve_in_fresh_process(
    version_dir: Path, samples: np.ndarray, main: str, meta: dict
) -> dict[str, np.ndarray]:
    """Run the format's `_SCRIPT` on `samples`: the serving outputs of the whole
    batch, `batch1` (output `main` of the first image alone) and
    `imported_project`.

    Raises:
        VerificationError: If the subprocess fails or takes over 900 s.
    """
    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as work:
        inputs_path = Path(work) / "images.npy"
        outputs_path = Path(work) / "outputs.npz"
        np.save(inputs_path, samples)
        fmt = meta.get("format", "savedmodel")
        options = {
            "forbidden": _FORBIDDEN[fmt],
            "hint": OPENVINO_HINTS[meta["precision"]],
        }
        cmd = [
            sys.executable,
            "-I",
            "-c",
            _SCRIPT.format(loader=_LOADERS[fmt]),
            str(version_dir.resolve()),  # the subprocess runs in `work`
            str(inputs_path),
            str(outputs_path),
            main,
            json.dumps(options),
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, cwd=work, timeout=900
            )
        except subprocess.TimeoutExpired as err:
            raise VerificationError(
                f"loading and calling the {FORMAT_NAMES[fmt]} in a fresh process "
                f"took over {err.timeout:.0f} s"
            ) from err
        if proc.returncode != 0:
            raise VerificationError(
                f"loading and calling {MODEL_FILES[fmt]} failed in a fresh process "
                f"(exit {proc.returncode}): {last_error(proc.stderr)}"
            )
        with np.load(outputs_path) as out:
            return {name: out[name] for name in out.files}


def last_error(stderr: str) -> str:
    """The last `SomeError: message` line of a failed process's stderr (else its
    last line): what a one-line message can quote."""
    errors = re.findall(r"^\w[\w.]*(?:Error|Exception): .*$", stderr, re.M)
    return (errors or stderr.strip().splitlines() or ["no output"])[-1]


def verification_failure(report: VerifyReport) -> str:
    """One line saying how the export failed verification and what to do."""
    name = FORMAT_NAMES[report.format]
    if report.imported_project:
        return (
            f"the {name} needed more than its runtime to load (the fresh process "
            f"imported {', '.join(report.imported_project)}); nothing was published."
        )
    diff = max(report.max_abs_diff, report.batch1_max_abs_diff)
    agreement = (
        ""
        if report.top1_agreement is None
        else f", top-1 agreement {report.top1_agreement:.0%}"
    )
    return (
        f"exported {name} disagrees with the Keras model: max abs difference "
        f"{diff:.2g} > tolerance {report.tolerance:g} ({report.precision}, "
        f"{report.num_samples} samples{agreement}); nothing was published. If "
        "this is rounding (a deep network, reduced precision), export again with "
        "a looser tolerance (zoo export --tolerance)."
    )
