"""SavedModel export for TensorFlow Serving, verified by TensorFlow's own loader.

Layout written under a base directory (the TensorFlow Serving convention)::

    <base>/<version>/saved_model.pb, variables/, fingerprint.pb, assets/
    <base>/<version>/export_meta.json      # model, shapes, classes, metrics, versions
    <base>/<version>/model.keras           # the trained Keras model, for Python users
    <base>/<version>/preprocessing.keras   # raw-input exports: the preprocessing model
    <base>/<version>/dataset.json          # exports of a run: its dataset.json

A version is written to a hidden temporary directory beside the versions, verified
in a fresh Python process that imports only TensorFlow and NumPy, then renamed into
place: a crash leaves earlier versions untouched and never a partial version.

The modules: `savedmodel` writes a version, `verification` reloads and compares
it in a fresh process, `client` feeds it image files or table rows and times it,
`rewrites` transforms the served model (batch-norm folding, precision, frozen filters),
`source` reads what to export, `layout` names the files and finds the versions,
`samples` makes the inputs it is verified and timed with.
"""

from zoo.export.client import load_images, predict, predict_table, serve_bench
from zoo.export.layout import (
    INPUT_NAME,
    KERAS_FILE,
    META_FILE,
    OUTPUT_NAMES,
    PREPROCESSING_FILE,
    REGRESSION_OUTPUT,
    list_versions,
    resolve_version_dir,
)
from zoo.export.rewrites import PRECISION_POLICIES, fold_batch_norms
from zoo.export.savedmodel import DEFAULT_TOP_K, export_saved_model
from zoo.export.verification import (
    TOLERANCES,
    VerificationError,
    VerifyReport,
    verify,
)
from zoo.files import check_export_dir

__all__ = [
    "DEFAULT_TOP_K",
    "INPUT_NAME",
    "KERAS_FILE",
    "META_FILE",
    "OUTPUT_NAMES",
    "PRECISION_POLICIES",
    "PREPROCESSING_FILE",
    "REGRESSION_OUTPUT",
    "TOLERANCES",
    "VerificationError",
    "VerifyReport",
    "check_export_dir",
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
