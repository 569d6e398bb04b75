"""The Keras model zoo: `build`, `list_models`, `model_card`, `describe`,
`load_model`, `load_weights`.

`import zoo` does not import TensorFlow; `build` and `describe` do, on first use.
Once Keras is imported (before or after zoo), zoo's custom Keras objects are
registered, so plain `keras.saving.load_model` reads every zoo model.
"""

import importlib.abc
import importlib.util
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ logs: errors too ('failed call to cuInit', tf.data attribute
# notices) unless the user chose a level; Python exceptions are unaffected.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from zoo.registry import ModelCard, build, list_models, model_card, register  # noqa: E402

__all__ = [
    "ModelCard",
    "build",
    "describe",
    "list_models",
    "load_model",
    "load_weights",
    "model_card",
    "register",
]


def _register_keras_objects() -> None:
    """Import the modules that register zoo's layers and schedules with Keras."""
    import zoo.blocks  # noqa: F401  (ChannelPad, ImagePreprocessing, LRN)
    import zoo.models.adversarial  # noqa: F401  (AdversarialAutoencoder, DCGAN)
    import zoo.models.autoencoder  # noqa: F401  (MaskingNoise)
    import zoo.models.vae  # noqa: F401  (Sampling)
    import zoo.recipe  # noqa: F401  (Warmup, in compiled models' optimizers)


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Registers zoo's Keras objects right after `import keras`, wherever it
    happens, so that `import zoo` alone stays free of TensorFlow (`zoo list`)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _register_keras_objects()

            spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_keras_objects()
elif not any(isinstance(f, _RegisterWithKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithKeras())


def describe(model):
    """Per-layer table of a model: see `zoo.report.describe`."""
    from zoo.report import describe as _describe

    return _describe(model)


def load_weights(model, source):
    """keras.applications weights into a zoo model: see `zoo.weights.load_weights`."""
    from zoo.weights import load_weights as _load_weights

    return _load_weights(model, source)


def load_model(path, compile: bool = True):
    """`keras.saving.load_model` with the zoo's custom layers registered.

    Raises:
        ValueError: In one line naming the file, if it cannot be loaded (not a
            zip, a damaged config or weights, a class that no module defines,
            an unsafe layer refused by safe mode).
    """
    import json
    import zipfile
    from pathlib import Path

    import keras

    _register_keras_objects()
    from zoo.files import brief

    # Keras reports a damaged or non-zip .keras file as "File not found".
    if Path(path).suffix == ".keras" and Path(path).is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"cannot load '{path}' as a Keras model: it is not a .keras archive "
                "(the zip file model.save() writes): it is damaged or in another "
                "format. Save the model again."
            )
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:  # Keras raises many types for files it cannot read
        what = brief(err).split(". ")[0]  # Keras appends the whole config
        if isinstance(err, json.JSONDecodeError):
            what = f"a JSON file in it is damaged ({what})"
        raise ValueError(
            f"cannot load '{path}' as a Keras model: {what}. Pass a file written "
            "by model.save(...) with this project's code, or save it again."
        ) from None
