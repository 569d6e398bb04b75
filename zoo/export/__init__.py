"""Export for serving as a SavedModel (TensorFlow Serving), an ONNX model (ONNX
Runtime, Triton) or an OpenVINO IR, each verified by its own runtime.

Layout written under a base directory (the TensorFlow Serving convention)::

    <base>/<version>/saved_model.pb, variables/, fingerprint.pb, assets/
    <base>/<version>/model.onnx             # --format onnx
    <base>/config.pbtxt                     #   (Triton: the ONNX versions)
    <base>/<version>/model.xml, model.bin   # --format openvino
    <base>/<version>/export_meta.json      # model, shapes, classes, metrics, versions
    <base>/<version>/model.keras           # the trained Keras model, for Python users
    <base>/<version>/preprocessing.keras   # raw-input exports: the preprocessing model
    <base>/<version>/dataset.json          # exports of a run: its dataset.json

A version is written to a hidden temporary directory beside the versions, verified
in a fresh Python process that imports only its format's runtime and NumPy, then
renamed into place: a crash leaves earlier versions untouched and never a partial
version.

The modules: `exporter` writes a version in any format through `savedmodel`,
`onnx` or `openvino` (one per format), from the graph `serving` builds;
`verification` reloads and compares it in a fresh process, `client` feeds it
image files or table rows and times formats side by side, `rewrites` transforms
the served model (batch-norm folding, precision, frozen filters, portable
resize), `source` reads what to export, `layout` names the formats, files and
versions, `samples` makes the inputs it is verified and timed with.
"""

from zoo.export.client import load_images, predict, predict_table, serve_bench
from zoo.export.exporter import DEFAULT_TOP_K, export
from zoo.export.layout import (
    FORMATS,
    INPUT_NAME,
    KERAS_FILE,
    META_FILE,
    OUTPUT_NAMES,
    PRECISIONS,
    PREPROCESSING_FILE,
    REGRESSION_OUTPUT,
    list_versions,
    resolve_version_dir,
)
from zoo.export.rewrites import PRECISION_POLICIES, fold_batch_norms
from zoo.export.savedmodel import export_saved_model
from zoo.export.verification import (
    TOLERANCES,
    VerificationError,
    VerifyReport,
    verify,
)
from zoo.files import check_export_dir

__all__ = [
    "DEFAULT_TOP_K",
    "FORMATS",
    "INPUT_NAME",
    "KERAS_FILE",
    "META_FILE",
    "OUTPUT_NAMES",
    "PRECISION_POLICIES",
    "PRECISIONS",
    "PREPROCESSING_FILE",
    "REGRESSION_OUTPUT",
    "TOLERANCES",
    "VerificationError",
    "VerifyReport",
    "check_export_dir",
    "export",
    "export_saved_model",
    "fold_batch_norms",
    "list_versions",
    "load_images",
    "predict",
    "predict_table",
    "resolve_version_dir",
    "serve_bench",
    "verify",
]
