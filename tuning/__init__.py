"""KerasTuner searches over the zoo's families (issue 6).

Example:
    >>> import tuning
    >>> result = tuning.search("mlp", dataset="digits", tuner="hyperband",
    ...                        max_trials=30, directory="tuning_runs/mlp_digits")
    >>> result.table                  # one row per trial
    >>> result.best_hyperparameters
    >>> result.retrain_and_export("saved_models/mlp_digits")
"""

import zoo  # noqa: F401  (first: sets KERAS_BACKEND and TF's log level)
from tuning import spaces
from tuning.hypermodels import FAMILIES, HYPERMODELS, build_cnn, hypermodel
from tuning.results import (
    OBJECTIVES,
    SearchResult,
    load_results,
    plot_results,
    results_table,
)
from tuning.search import TUNERS, search
from tuning.tuner import ZooTuner

__all__ = [
    "FAMILIES",
    "HYPERMODELS",
    "OBJECTIVES",
    "TUNERS",
    "SearchResult",
    "ZooTuner",
    "build_cnn",
    "hypermodel",
    "load_results",
    "plot_results",
    "results_table",
    "search",
    "spaces",
]
