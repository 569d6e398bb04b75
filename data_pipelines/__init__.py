"""Every dataset reaches a model through here: ``data_pipelines.load(source)``.

Example:
    >>> import data_pipelines as dp
    >>> splits = dp.load("digits", image_size=(32, 32), augment="flip,rotate:0.05")
    >>> splits.info.num_classes
    10
"""

import os

# Before TensorFlow loads: its C++ logs quiet unless the user chose a level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from data_pipelines.augment import (  # noqa: E402
    RandomAffine,
    augmentation_model,
    augmentations,
    parse_augment,
)
from data_pipelines.pipeline import (  # noqa: E402
    ChannelConversion,
    DatasetInfo,
    Splits,
    encode_table,
    load,
    preprocessing_model,
)
from data_pipelines.sources import SCHEMES, SourceSpec, parse_source  # noqa: E402

__all__ = [
    "SCHEMES",
    "ChannelConversion",
    "DatasetInfo",
    "RandomAffine",
    "SourceSpec",
    "Splits",
    "augmentation_model",
    "augmentations",
    "encode_table",
    "load",
    "parse_augment",
    "parse_source",
    "preprocessing_model",
]
