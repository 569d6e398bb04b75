"""The Keras model zoo: `build`, `list_models`, `model_card`, `describe`.

`import zoo` does not import TensorFlow; `build` and `describe` do, on first use.
"""

import os

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
    "model_card",
    "register",
]


def describe(model):
    """Per-layer table of a model: see `zoo.report.describe`."""
    from zoo.report import describe as _describe

    return _describe(model)


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

    import zoo.blocks  # noqa: F401  (registers ChannelPad)
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
