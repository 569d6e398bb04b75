"""Transfer learning: a trained zoo model or a keras.applications backbone, a new head.

`from_pretrained` and `from_keras_application` build `backbone -> new classifier`
(`models`); `freeze` and `unfreeze` choose which layers train, by layer name,
stage, count or fraction (`layers`); `finetune` runs the two-phase recipe as one run
(`phases`): phase "head" trains the new head on the frozen backbone, phase
"finetune" unfreezes the chosen top layers and continues with a smaller learning
rate.
"""

from zoo.transfer.layers import freeze, stage_of, stages, trainable_params, unfreeze
from zoo.transfer.models import (
    KERAS_PREFIX,
    from_keras_application,
    from_pretrained,
    keras_applications,
    load_pretrained,
)
from zoo.transfer.phases import FINETUNE_OPTIONS, PHASES, finetune

__all__ = [
    "FINETUNE_OPTIONS",
    "KERAS_PREFIX",
    "PHASES",
    "finetune",
    "freeze",
    "from_keras_application",
    "from_pretrained",
    "keras_applications",
    "load_pretrained",
    "stage_of",
    "stages",
    "trainable_params",
    "unfreeze",
]
