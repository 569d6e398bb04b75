"""A run directory's life: create or reopen it, fit it phase by phase, record,
checkpoint, resume, evaluate on the test split, export, summarize.

Every entry point (`training.train`, each phase of `transfer.finetune`, the tuner's
`retrain_and_export`) goes through `execute`; they differ in what they build, never
in how a run is fitted, recorded, evaluated and exported.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
TRANSFER_FILE = "transfer.json"
BEST_MODEL = "best.keras"
LAST_MODEL = "last.keras"
INIT_MODEL = "model_init.keras"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
# The models a finished run holds, in the order export and finetune prefer them.
RUN_MODEL_FILES = (BEST_MODEL, LAST_MODEL)
