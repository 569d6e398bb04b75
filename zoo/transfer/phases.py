"""`finetune`: the two-phase transfer recipe as one run.

Phase "head" trains the new head on the frozen backbone; phase "finetune" unfreezes
the chosen top layers and continues with a smaller learning rate. Both phases are
`zoo.runs.Phase`s of one run, so fine-tuning has everything `zoo train` has:
checkpoints, resume after a kill, `--strategy`, `--mixed-precision`,
`--deterministic`, the recorder and the verified export.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras

import zoo
from zoo import recipe, runs
from zoo.config import TrainConfig, options_for
from zoo.transfer.layers import (
    check_unfreezes_something,
    freeze,
    resolve_layer,
    unfreeze,
)
from zoo.transfer.models import (
    KERAS_PREFIX,
    application_backbone,
    application_model,
    from_pretrained,
    load_pretrained,
)
from zoo.weights import REFERENCES

PHASES = ("head", "finetune")
# TrainConfig fields finetune accepts: the recipe's, not the model's knobs.
FINETUNE_OPTIONS = tuple(n for n in options_for("finetune") if n != "dataset")
# finetune's own settings (saved as transfer.json) and their defaults.
DEFAULTS = {
    "head_epochs": 5,
    "finetune_epochs": 10,
    "unfreeze_top": None,
    "finetune_lr": 1e-4,
    "keep_batch_norm_frozen": True,
    "dropout": 0.0,
    "cut": None,
    "weights": "imagenet",
}
# Names in transfer.json that differ from the argument's.
SAVED_AS = {"finetune_lr": "finetune_learning_rate"}


def finetune(
    source: str | os.PathLike | keras.Model | None = None,
    dataset: str = "digits",
    *,
    head_epochs: int = 5,
    finetune_epochs: int = 10,
    unfreeze_top: int | float | str | None = None,
    finetune_lr: float = 1e-4,
    keep_batch_norm_frozen: bool = True,
    dropout: float = 0.0,
    cut: str | None = None,
    weights: str | os.PathLike | None = "imagenet",
    resume: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    **options: Any,
) -> runs.TrainResult:
    """Train a new head on a frozen backbone, then fine-tune its top layers.

    Both phases are recorded in one run directory, as `zoo train` records a run,
    plus `transfer.json` (these settings); history.csv has a `phase` column
    ("head", "finetune") and the curves mark where fine-tuning starts. best.keras
    is the best epoch of either phase by validation accuracy.

    Args:
        source: A run directory or .keras file (a new head is built for the data's
            classes, see `from_pretrained`), "keras:NAME" for a keras.applications
            backbone (see `from_keras_application`; `image_size` sets its input,
            default 224), a zoo model name with `weights` a keras.applications
            weights file of it (vgg16/19, resnet50/101/152: converted by
            `zoo.load_weights`, ImageNet preprocessing inside; `image_size`
            default 224), or a keras.Model trained as it is (build it with
            `from_pretrained`/`from_keras_application`; its outputs must match the
            data's classes). Not needed with `resume`.
        dataset: A data_pipelines source string.
        head_epochs: Epochs of phase 1 (the backbone frozen, all but the classifier).
        finetune_epochs: Epochs of phase 2; 0 trains the head only.
        unfreeze_top: What phase 2 unfreezes (see `unfreeze`): a stage or layer name
            and everything above it, a number or fraction of the top layers with
            weights; None unfreezes every layer.
        finetune_lr: Learning rate of phase 2 (phase 1 uses `learning_rate`).
        keep_batch_norm_frozen: Keep BatchNormalization layers frozen in phase 2.
        dropout: Dropout before the new classifier.
        cut: Layer whose output feeds the new head (see `from_pretrained`).
        weights: Weights of a "keras:NAME" backbone: "imagenet", a file or None;
            of a zoo model name: a keras.applications weights file.
        resume: A fine-tuning run directory to continue from its last completed
            epoch, in whichever phase it stopped (settings may only repeat it).
        verbose: Keras verbosity; "auto" is a progress bar on a terminal.
        **options: TrainConfig fields that apply (FINETUNE_OPTIONS): learning_rate,
            batch_size, optimizer, schedule, augment, seed, strategy,
            mixed_precision, run_dir, name, export... The data are resized to the
            model's input unless `image_size` is given.

    Returns:
        The TrainResult (run directory, test metrics of best.keras, history, model).
    """
    started = time.perf_counter()
    settings = {
        "head_epochs": head_epochs,
        "finetune_epochs": finetune_epochs,
        "unfreeze_top": unfreeze_top,
        "finetune_lr": finetune_lr,
        "keep_batch_norm_frozen": keep_batch_norm_frozen,
        "dropout": dropout,
        "cut": cut,
        "weights": weights,
    }
    refused = sorted(set(options) - set(FINETUNE_OPTIONS))
    if refused:
        raise ValueError(
            f"finetune does not take {', '.join(refused)}; allowed: "
            f"{', '.join(FINETUNE_OPTIONS)}."
        )
    if options.get("strategy") == "multi-worker":
        raise ValueError(
            "zoo finetune runs on one machine; --strategy multi-worker is for zoo "
            "train (use --strategy mirrored for this machine's GPUs)."
        )
    if resume is not None:
        run, source, settings = _reopen(resume, source, settings, options)
        config = run.config
    else:
        _check_settings(source, settings)
        config = _config(source, dataset, settings, options)
    with recipe.prepare(config) as splits:
        phases = _phases(config, settings)
        build = _builder(source, settings, splits.info.num_classes, config)
        if resume is None:
            run = runs.start(
                config,
                splits,
                kind="finetune",
                extra_files={runs.TRANSFER_FILE: _saved(source, config, settings)},
            )
        return runs.execute(
            run, splits, build, phases, save_init=True, verbose=verbose, started=started
        )


def _saved(
    source: Any, config: TrainConfig, settings: dict[str, Any]
) -> dict[str, Any]:
    """transfer.json: the source and the settings of both phases."""
    saved = {
        "source": source.name if isinstance(source, keras.Model) else str(source),
        "head_learning_rate": config.learning_rate,
        **{SAVED_AS.get(k, k): v for k, v in settings.items()},
    }
    weighted = _app(source) or _zoo_name(source)
    saved["weights"] = str(settings["weights"]) if weighted else None
    return saved


def _app(source: Any) -> str | None:
    """The keras.applications name of a "keras:NAME" source, else None."""
    if isinstance(source, str) and source.startswith(KERAS_PREFIX):
        return source[len(KERAS_PREFIX) :]
    return None


def _zoo_name(source: Any) -> str | None:
    """A zoo model name that takes keras.applications weights files, as source."""
    if isinstance(source, str) and source in REFERENCES:
        return source
    return None


def _converted(name: str, weights: Any, size: int) -> keras.Model:
    """The zoo model `name` without its top, with converted keras.applications
    weights and their ImageNet preprocessing inside (`zoo.load_weights`)."""
    return zoo.build(
        name, input_shape=(size, size, 3), include_top=False, weights=weights
    )


def _check_settings(source: Any, settings: dict[str, Any]) -> None:
    """Refuse bad settings before anything is loaded or written."""
    for key in ("head_epochs", "finetune_epochs"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be an int >= 0; received {value!r}.")
    if settings["head_epochs"] + settings["finetune_epochs"] < 1:
        raise ValueError(
            "head_epochs + finetune_epochs must be >= 1; received 0 and 0."
        )
    if source is None:
        raise ValueError(
            "finetune needs a source: a run directory, a .keras file, keras:NAME "
            "or a keras.Model (or resume=RUN_DIR to continue a fine-tuning run)."
        )
    if isinstance(source, keras.Model) and (settings["cut"] or settings["dropout"]):
        raise ValueError(
            "cut and dropout shape a new head, but a keras.Model source is trained "
            "as it is; pass them to transfer.from_pretrained(model, ...) instead."
        )
    lr = settings["finetune_lr"]
    if (
        isinstance(lr, bool)
        or not isinstance(lr, int | float)
        or not (math.isfinite(lr) and lr > 0)
    ):
        raise ValueError(
            f"finetune_lr (--finetune-lr) must be a number > 0; received "
            f"{lr!r}. Fine-tuning usually takes 10-100x less than the "
            "head's learning_rate, e.g. 1e-4."
        )
    if _app(source) is not None and settings["cut"] is not None:
        raise ValueError(
            f"cut={settings['cut']!r} applies to run directories and .keras files; "
            f"a {KERAS_PREFIX}NAME backbone feeds the new head from its global "
            "pooling. Drop cut (--cut)."
        )
    if _zoo_name(source) and str(settings["weights"]) in ("imagenet", "none", "None"):
        reference = REFERENCES[source]
        raise ValueError(
            f"a zoo model name as source needs weights: a keras.applications "
            f"{reference.application} weights file (--weights FILE); ImageNet "
            f"files download with keras.applications.{reference.application}"
            "(weights='imagenet') on a machine with internet."
        )
    if (
        _app(source) is None
        and not _zoo_name(source)
        and (settings["weights"] != "imagenet")
    ):
        raise ValueError(
            f"weights={str(settings['weights'])!r} applies to {KERAS_PREFIX}NAME "
            "sources only (and zoo model names such as resnet50); "
            f"{source!r} brings its own weights. Drop weights."
        )


def _config(
    source: Any, dataset: str, settings: dict[str, Any], options: dict[str, Any]
) -> TrainConfig:
    """The run's config; the data are resized to the model's input."""
    app = _app(source) or _zoo_name(source)
    if app is not None:
        size = options.get("image_size") or 224
        input_shape, name = (size, size, 3), app.lower()
    else:
        pretrained = load_pretrained(source)
        input_shape, name = tuple(pretrained.input_shape[1:]), pretrained.name
    values = {
        "model": name if isinstance(source, keras.Model) else f"{name}_transfer",
        "dataset": dataset,
        "epochs": settings["head_epochs"] + settings["finetune_epochs"],
        **options,
        **_image_options(input_shape, options),
    }
    config = TrainConfig.from_dict(values, "options")
    for phase in _phases(config, settings):
        phase.config.validate()
    return config


def _image_options(
    input_shape: tuple[int, ...], options: dict[str, Any]
) -> dict[str, Any]:
    """image_size and channels that make the data fit the model's input."""
    if len(input_shape) != 3:
        return {}
    height, width, channels = input_shape
    fit = {"image_size": height if height == width else [height, width]}
    if channels in (1, 3):
        fit["channels"] = channels
    for key, value in fit.items():
        given = options.get(key)
        if given is not None and given != value and [given] * 2 != value:
            raise ValueError(
                f"the model takes inputs of shape {tuple(input_shape)}; {key}="
                f"{given!r} does not fit. Drop it: the data are resized and "
                "converted to the model's input."
            )
    return fit


def _phases(config: TrainConfig, settings: dict[str, Any]) -> list[runs.Phase]:
    """The head phase (backbone frozen) and the fine-tuning phase (the top
    unfrozen, `finetune_lr`), each only when it has epochs."""

    def unfrozen(model: keras.Model) -> None:
        unfreeze(
            freeze(model),
            settings["unfreeze_top"],
            keep_batch_norm_frozen=settings["keep_batch_norm_frozen"],
        )

    head = dataclasses.replace(config, epochs=settings["head_epochs"])
    tune = dataclasses.replace(
        config,
        epochs=settings["finetune_epochs"],
        learning_rate=settings["finetune_lr"],
    )
    phases = [
        runs.Phase(head, "head", freeze),
        runs.Phase(tune, "finetune", unfrozen),
    ]
    return [p for p in phases if p.config.epochs]


def _builder(
    source: Any, settings: dict[str, Any], num_classes: int, config: TrainConfig
) -> Callable[[], keras.Model]:
    """Makes the model to fine-tune, frozen but for its classifier, and checks
    that `unfreeze_top` names something phase 2 can train."""
    head = recipe.classifier_activation(config)
    app, top = _app(source), settings["unfreeze_top"]

    def build() -> keras.Model:
        if app is not None:
            shape = (config.image_size, config.image_size, 3)
            base = application_backbone(app, settings["weights"], shape, "avg")
            model = application_model(app, base, num_classes, settings["dropout"], head)
        elif _zoo_name(source):
            model = from_pretrained(
                _converted(source, settings["weights"], config.image_size),
                num_classes,
                cut=settings["cut"],
                dropout=settings["dropout"],
                classifier_activation=head,
            )
        elif isinstance(source, keras.Model):
            model = _checked_model(source, num_classes, config.dataset)
        else:
            model = from_pretrained(
                load_pretrained(source),
                num_classes,
                cut=settings["cut"],
                dropout=settings["dropout"],
                classifier_activation=head,
            )
        model = freeze(recipe.with_policy(model, config))
        if top is not None:  # a bad spec fails now, not after phase 1
            resolve_layer(model, top, "unfreeze", last=False)
            if settings["finetune_epochs"]:
                check_unfreezes_something(
                    model, top, settings["keep_batch_norm_frozen"]
                )
        return model

    return build


def _checked_model(model: keras.Model, num_classes: int, dataset: str) -> keras.Model:
    if model.outputs[0].shape[-1] != num_classes:
        raise ValueError(
            f"{model.name} has {model.outputs[0].shape[-1]} outputs but "
            f"{dataset} has {num_classes} classes. Pass the run directory "
            "or .keras file (a new head is built), or build the model with "
            f"transfer.from_pretrained(model, num_classes={num_classes})."
        )
    return model


def _reopen(
    path: str | os.PathLike,
    source: Any,
    settings: dict[str, Any],
    options: dict[str, Any],
) -> tuple[runs.Run, Any, dict[str, Any]]:
    """The fine-tuning run to resume, its source and its saved settings; given
    settings may only repeat them."""
    run = runs.Run.reopen(path, options, kind="finetune")
    saved = run.read_json(runs.TRANSFER_FILE)
    given = {SAVED_AS.get(k, k): v for k, v in settings.items() if v != DEFAULTS[k]}
    if source is not None:
        given["source"] = str(source)
    conflicts = [
        f"{k}={v!r} (run has {saved.get(k)!r})"
        for k, v in given.items()
        if saved.get(k) != v
    ]
    if conflicts:
        raise ValueError(
            f"--resume {path}: settings conflict with the run's transfer.json: "
            f"{', '.join(conflicts)}. Drop them, or start a new run."
        )
    settings = {k: saved[SAVED_AS.get(k, k)] for k in DEFAULTS}
    return run, saved["source"], settings
