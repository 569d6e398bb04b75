"""The `zoo` command: a thin argparse shell over the package's public functions.

TensorFlow is imported only inside the commands that need it, so `zoo --help` and
`zoo list` answer instantly. A ValueError (bad input) becomes one line on stderr and
exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
from pathlib import Path

from zoo import config
from zoo.config import TrainConfig
from zoo.registry import list_models, model_card


def parse_ints(text: str, example: str = "224,224,3") -> tuple[int, ...]:
    """'224,224,3' -> (224, 224, 3)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like {example}; received {text!r}"
        ) from None
    return shape


def parse_shape(text: str) -> tuple[int, ...]:
    return parse_ints(text)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    return parse_ints(text, "1,8,64")


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence TensorFlow's C++ start-up chatter (absl/oneDNN/CUDA lines that no
    environment variable turns off in TF 2.21) while TensorFlow is first imported.
    Python exceptions still surface: they are printed after stderr is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def one_line_warnings(command: str):
    """Python warnings as `zoo CMD: warning: MESSAGE`, one line each (not the
    file:line header and source line that Python prints)."""
    import warnings

    saved = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: (
        f"zoo {command}: warning: {message}\n"
    )
    try:
        yield
    finally:
        warnings.formatwarning = saved


def load_tensorflow() -> None:
    """Import TensorFlow and Keras quietly; commands that need them call this first."""
    import zoo  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

    with quiet_native_stderr():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, once


def cmd_list(args: argparse.Namespace) -> None:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try `zoo list`.")
    print(
        f"{'name':<10} {'family':<9} {'reference input':<16} {'classes':>7} "
        f"{'params':>12} {'min input':>9}"
    )
    for name in names:
        c = model_card(name)
        print(
            f"{name:<10} {c.family:<9} {'x'.join(map(str, c.reference_input)):<16} "
            f"{c.reference_classes:>7} {c.reference_params:>12,} "
            f"{c.min_input:>9}"
        )


def cmd_info(args: argparse.Namespace) -> None:
    card = model_card(args.name)
    load_tensorflow()
    import zoo
    from zoo.report import format_table

    model = zoo.build(
        args.name,
        input_shape=args.input_shape,
        num_classes=args.num_classes,
        **dict(args.model_args),
    )
    print(f"{card.name} ({card.family}) - {card.paper}")
    print(format_table(zoo.describe(model)))


def cmd_build(args: argparse.Namespace) -> None:
    if not str(args.out).endswith(".keras"):
        raise ValueError(
            f"--out {args.out!r} must be a .keras file, e.g. --out {args.name}.keras."
        )
    model_card(args.name)
    load_tensorflow()
    import zoo
    from zoo import files

    extra = {"weights": args.weights} if args.weights else {}
    model = zoo.build(
        args.name,
        input_shape=args.input_shape,
        num_classes=args.num_classes,
        **dict(args.model_args),
        **extra,
    )
    files.save_model(model, args.out)
    count = sum(math.prod(w.shape) for w in model.trainable_weights)
    source = f", weights converted from {args.weights}" if args.weights else ""
    print(f"{args.name}: {count:,} trainable parameters{source}; saved {args.out}")


def cmd_export(args: argparse.Namespace) -> None:
    load_tensorflow()
    from zoo import export

    path = export.export(
        args.source,
        args.out,
        format=args.format,
        version=args.version,
        raw_image_input=not args.float_input,
        top_k=args.top_k,
        precision=args.precision,
        jit_compile=args.jit_compile,
        fold_batch_norm=args.fold_batch_norm,
        freeze_filters="auto" if args.freeze_filters else False,
        tolerance=args.tolerance,
    )
    print(f"exported and verified ({args.format}, {args.precision}): {path}")


def cmd_predict(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else None
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise ValueError(
            f"--out {str(out)!r} is a directory or in one that does not exist; pass "
            "a file path in an existing directory, e.g. --out predictions.csv."
        )
    load_tensorflow()
    import warnings

    from zoo import export, files

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = export.predict(
            args.path, args.images, top_k=args.top_k, batch_size=args.batch_size
        )
    for w in caught:
        print(f"zoo predict: warning: {w.message}", file=sys.stderr)
    if out is not None:
        files.write_atomic(out, table.to_csv(index=False))
        print(f"wrote {len(table)} rows to {out}")
    elif "image" in table.columns:
        print(table.to_string(index=False))
    else:  # table rows: CSV, one line per input row
        print(table.to_csv(index=False), end="")


def cmd_serve_bench(args: argparse.Namespace) -> None:
    formats = args.formats.split(",") if args.formats else None
    load_tensorflow()
    from zoo import export

    table = export.serve_bench(
        args.path, args.batch_sizes, repeats=args.repeats, formats=formats
    )
    print(table.to_string(index=False))
    read = table.drop_duplicates("format")
    print(
        "read: "
        + ", ".join(
            f"{r.format} version {r.version} ({r.precision})" for r in read.itertuples()
        )
        + f"; median of {args.repeats} interleaved calls per format"
    )
    for batch_size, rows in table.groupby("batch_size", sort=False):
        best = rows[rows.fastest].iloc[0]
        others = ", ".join(
            f"{r.format} {r.median_ms:.3g} ms"
            for r in rows.itertuples()
            if not r.fastest
        )
        print(
            f"fastest at batch {batch_size}: {best.format} ({best.median_ms:.3g} ms"
            + (f"; {others})" if others else ")")
        )


def _key_value(text: str) -> tuple[str, object]:
    """'hidden_units=[512, 256]' -> ('hidden_units', [512, 256]) (JSON values)."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; received {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _options(args: argparse.Namespace, *skip: str) -> dict:
    """The keyword options of a command: the flags given (absent flags are absent,
    so a TOML file or a resumed run's config rules), without `skip`."""
    options = {
        k: v for k, v in vars(args).items() if k not in ("command", "func", *skip)
    }
    if "model_args" in options:
        options["model_args"] = dict(options["model_args"])
    return options


def cmd_train(args: argparse.Namespace) -> None:
    options = _options(args, "model", "config", "resume")
    if args.resume is not None and (args.config or args.model):
        raise ValueError(
            "--resume continues a run with its own config; do not pass "
            "a model or --config with it."
        )
    load_tensorflow()
    from zoo import training

    if args.resume is not None:
        training.train(resume=args.resume, **options)
        return
    from_file = TrainConfig.from_toml(args.config) if args.config else {}
    merged = {**from_file, **options}
    if args.model:
        merged["model"] = args.model
    TrainConfig.from_dict(merged, args.config or "flags")  # validate first
    training.train(
        merged.pop("model", "lenet5"), merged.pop("dataset", "digits"), **merged
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    load_tensorflow()
    from zoo import training

    metrics = training.evaluate(args.run_dir, dataset=args.dataset)
    # A GAN's steps report no single loss: its headline names D(x) and D(G(z)).
    loss = f", test loss {metrics['test_loss']:.4f}" if "test_loss" in metrics else ""
    print(
        f"{args.run_dir}: {training.headline(metrics)}{loss} on "
        f"{metrics['test_size']} samples of {metrics['dataset']}"
    )


def cmd_tune(args: argparse.Namespace) -> None:
    options = _options(args, "family", "fixed", "export")
    load_tensorflow()
    import tuning
    from zoo import files

    if args.export:  # before the search, not after it
        files.check_export_dir(args.export)
    result = tuning.search(args.family, fixed=dict(args.fixed), **options)
    if args.export and args.distributed != "worker":
        result.retrain_and_export(args.export)


def cmd_tune_results(args: argparse.Namespace) -> None:
    load_tensorflow()
    import tuning

    result = tuning.load_results(args.directory)
    print(result.summary())
    print(result.top(args.top).dropna(axis=1, how="all").to_string(index=False))
    for path in result.plot():
        print(f"plot: {path}")


def cmd_finetune(args: argparse.Namespace) -> None:
    options = _options(args, "source")
    if args.source is None and "resume" not in options:
        raise ValueError(
            "finetune needs a SOURCE (run directory, .keras file, keras:NAME or a "
            "zoo model name with --weights FILE), "
            "or --resume RUN_DIR to continue a fine-tuning run."
        )
    load_tensorflow()
    from zoo import transfer

    transfer.finetune(args.source, **options)


def _flag_type(field: dataclasses.Field) -> type:
    """The Python type a TrainConfig field takes from the command line, read off
    its annotation ("int | None" -> int, "list[str]" -> str: comma-separated)."""
    name = str(field.type).split("|")[0].split("[")[0].strip()
    return {"int": int, "float": float, "bool": bool, "dict": dict}.get(name, str)


def add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per TrainConfig field that `command` offers, in the config's groups,
    with the field's help text; absent flags stay absent (SUPPRESS)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in config.fields_for(command):
        meta = field.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(
                config.GROUPS[meta["group"]]
            )
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = "" if default is None or default is False else f" (default {default})"
        kwargs: dict = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": meta["help"] + shown,
        }
        kind = _flag_type(field)
        if kind is bool:
            optional = default is None  # --batch-norm / --no-batch-norm
            kwargs["action"] = (
                argparse.BooleanOptionalAction if optional else "store_true"
            )
        elif kind is dict:
            kwargs.update(type=_key_value, action="append")
        else:
            kwargs["type"] = kind
        for key in ("choices", "metavar"):
            if meta[key] is not None:
                kwargs[key] = meta[key]
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        groups[meta["group"]].add_argument(flag, **kwargs)


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """`zoo info` and `zoo build`: the model name and the builder's arguments."""
    p.add_argument("name")
    p.add_argument(
        "--input-shape",
        type=parse_shape,
        default=None,
        help="H,W,C (default: the model's reference input)",
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument(
        "--model-arg",
        dest="model_args",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder option, e.g. variant=v1.5 or include_top=false (repeatable)",
    )


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """`zoo train`: the model, --config, --resume and the config's train flags."""
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="zoo model name or a .keras file (default lenet5)",
    )
    p.add_argument("--config", default=None, help="TOML file with any of these keys")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its last completed epoch",
    )
    add_config_flags(p, "train")


def _add_tune_flags(p: argparse.ArgumentParser) -> None:
    """`zoo tune`: the search's own flags (each an argument of `tuning.search`) and
    the config's data flags."""
    p.add_argument("family", help="mlp, cnn, resnet, recurrent or conv_autoencoder")
    search = p.add_argument_group("search")
    search.add_argument(
        "--tuner", default="random", help="random (default), grid, hyperband, bayesian"
    )
    search.add_argument(
        "--max-trials",
        dest="max_trials",
        type=int,
        default=10,
        help="trials in total, a resumed search's included (default 10)",
    )
    search.add_argument(
        "--objective",
        default=None,
        help="val_accuracy, val_loss, accuracy, loss (default: val_accuracy; "
        "conv_autoencoder: val_loss)",
    )
    search.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="epochs per trial (hyperband: the most a trial gets; default 20)",
    )
    search.add_argument(
        "--early-stopping",
        dest="early_stopping",
        type=int,
        default=3,
        metavar="PATIENCE",
        help="stop a trial after PATIENCE epochs without a better objective (0: off)",
    )
    search.add_argument(
        "--fix",
        dest="fixed",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pin a hyperparameter, e.g. activation=relu (repeatable)",
    )
    search.add_argument(
        "--directory",
        default=None,
        help="search directory (default tuning_runs/FAMILY_DATASET)",
    )
    search.add_argument(
        "--resume",
        action="store_true",
        help="continue the search in --directory; keeps finished trials",
    )
    search.add_argument(
        "--max-model-size",
        dest="max_model_size",
        type=int,
        default=None,
        help="trials whose model has more trainable parameters fail",
    )
    search.add_argument(
        "--in-process",
        dest="isolate",
        action="store_false",
        help="run trials in this process, not in a child process each",
    )
    search.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="after the search, "
        "retrain the best configuration on train+val, test it and export "
        "a verified SavedModel to DIR",
    )
    _add_distributed_flags(p.add_argument_group("distributed search"))
    add_config_flags(p, "tune")


def _add_distributed_flags(p: argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--distributed",
        default=None,
        metavar="ROLE",
        help="chief (serves the oracle) or worker (runs trials)",
    )
    p.add_argument(
        "--oracle-address",
        dest="oracle_address",
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="where the chief listens (no authentication: keep it on "
        "a trusted network)",
    )
    p.add_argument(
        "--worker-id",
        dest="worker_id",
        default=None,
        help="a worker's unique name, e.g. w1 (without 'chief')",
    )
    p.add_argument(
        "--oracle-timeout",
        dest="oracle_timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a worker waits for the chief",
    )


def _unfreeze_spec(text: str) -> int | float | str | None:
    """'10' -> 10 layers, '0.25' -> a fraction, 'all' -> None, else a stage/layer."""
    if text == "all":
        return None
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def _add_finetune_flags(p: argparse.ArgumentParser) -> None:
    """`zoo finetune`: the source, the transfer settings and the config's flags."""
    s = argparse.SUPPRESS
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        help="run directory (its best.keras), .keras file, "
        "keras:NAME for a keras.applications backbone (keras:ResNet50), or a zoo "
        "model name with --weights FILE (resnet50, vgg16, ...)",
    )
    p.add_argument(
        "--resume",
        default=s,
        metavar="RUN_DIR",
        help="continue a fine-tuning run from its last completed epoch",
    )
    t = p.add_argument_group("transfer")
    t.add_argument(
        "--head-epochs",
        dest="head_epochs",
        type=int,
        default=s,
        help="phase 1: train the new head, backbone frozen (default 5)",
    )
    t.add_argument(
        "--finetune-epochs",
        dest="finetune_epochs",
        type=int,
        default=s,
        help="phase 2: fine-tune (default 10; 0 = head only)",
    )
    t.add_argument(
        "--unfreeze",
        dest="unfreeze_top",
        type=_unfreeze_spec,
        default=s,
        metavar="WHERE",
        help="what phase 2 trains: a stage "
        "or layer name and all above it, N top layers with weights, a "
        "fraction, or all (default)",
    )
    t.add_argument(
        "--finetune-lr",
        dest="finetune_lr",
        type=float,
        default=s,
        help="phase 2 learning rate (default 1e-4; --lr is phase 1's)",
    )
    t.add_argument(
        "--keep-batch-norm-frozen",
        dest="keep_batch_norm_frozen",
        action=argparse.BooleanOptionalAction,
        default=s,
        help="keep BatchNormalization frozen in phase 2 (default: yes)",
    )
    t.add_argument(
        "--dropout", type=float, default=s, help="dropout before the new classifier"
    )
    t.add_argument(
        "--cut",
        default=s,
        metavar="LAYER",
        help="layer whose output feeds the new head (default: the "
        "pooling/flatten before the old head)",
    )
    t.add_argument(
        "--weights",
        default=s,
        help="keras:NAME backbones: imagenet "
        "(default; needs internet), a weights file, or none; zoo model names: "
        "a keras.applications weights file of that model (converted)",
    )
    add_config_flags(p, "finetune")


def _add_export_flags(p: argparse.ArgumentParser) -> None:
    """`zoo export`: each flag is an argument of `export.export`."""
    p.add_argument(
        "source", help="run directory (best.keras/last.keras) or .keras file"
    )
    p.add_argument("--out", required=True, help="base dir; writes OUT/<version>/")
    p.add_argument(
        "--format",
        default="savedmodel",
        help="savedmodel (TF Serving; default), onnx (ONNX Runtime, Triton: also "
        "writes OUT/config.pbtxt; needs the [onnx] extra) or openvino (OpenVINO IR; "
        "needs the [openvino] extra)",
    )
    p.add_argument(
        "--version",
        type=int,
        default=None,
        help="integer version (default: next free; never overwrites)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="classes in class_ids/scores (default: min(5, classes))",
    )
    p.add_argument(
        "--precision",
        default="float32",
        help="float32 | float16 | bfloat16 computations (savedmodel: all; onnx: "
        "float32, float16; openvino: all, as its runtime's precision hint)",
    )
    p.add_argument(
        "--jit-compile",
        action="store_true",
        help="XLA-compile the serving function (GPU)",
    )
    p.add_argument(
        "--float-input",
        action="store_true",
        help="serve float32 model inputs instead of raw uint8 images",
    )
    p.add_argument(
        "--fold-batch-norm",
        action="store_true",
        help="fold batch norms into the preceding conv/dense layers: faster, "
        "but float32 rounding changes (deep nets may fail the 1e-5 verification)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="accepted max abs difference of the verification (default 1e-5 in "
        "float32, 1e-2 float16, 1e-1 bfloat16)",
    )
    p.add_argument(
        "--no-freeze-filters",
        dest="freeze_filters",
        action="store_false",
        help="keep convolution filters as SavedModel variables (default: graph "
        "constants up to 1 GiB, which oneDNN runs faster at small batches)",
    )


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other bad input of `zoo` (argparse
    prints its whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="zoo",
        description="Keras model zoo: build, describe, train, tune and export models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the models (no TensorFlow import)")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'resnet*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "info", help="per-layer table: shapes, params, FLOPs, receptive field"
    )
    _add_model_flags(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "build",
        help="build a model (optionally with converted keras.applications "
        "weights) and save it as .keras",
    )
    _add_model_flags(p)
    p.add_argument("--out", required=True, help="the .keras file to write")
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="keras.applications weights file (.h5) of vgg16/19 or "
        "resnet50/101/152; the model then takes images in [0, 1] and applies the "
        "ImageNet preprocessing these weights expect",
    )
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("train", help="train, evaluate and record a run")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "finetune",
        help="transfer a trained model: train a new head, then fine-tune",
        description="Phase 1 trains a new classifier on the frozen backbone (--lr); "
        "phase 2 unfreezes --unfreeze and trains with --finetune-lr. One run "
        "directory records both (history.csv has a phase column).",
    )
    _add_finetune_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="test metrics of a run's best model")
    p.add_argument("run_dir")
    p.add_argument(
        "--dataset",
        default=None,
        help="another source with the same "
        "input size (default: the run's own test split)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export",
        help="verified SavedModel, ONNX or OpenVINO export for serving (+ .keras)",
    )
    _add_export_flags(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "predict", help="top-k table for image files, or CSV rows (any format)"
    )
    p.add_argument(
        "path",
        help="export base dir (its latest version, of any format) or version dir",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="INPUT",
        help="image files (PNG, JPEG, ...); for a model trained on a csv source, "
        "one CSV file of rows with the training feature columns",
    )
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images or rows per call of the export (default 64)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the predictions as CSV to FILE (default: stdout)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "serve-bench",
        help="latency/throughput by batch size of each format, side by side",
    )
    p.add_argument(
        "path",
        help="export base dir (latest version of each format), version dir, or a "
        "run directory / .keras file (exported to a temporary dir first)",
    )
    p.add_argument(
        "--formats",
        default=None,
        help="comma-separated, e.g. savedmodel,onnx,openvino (default: the formats "
        "the base holds; all three for a run)",
    )
    p.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=(1, 8, 64),
        help="comma-separated, e.g. 1,8,64",
    )
    p.add_argument(
        "--repeats", type=int, default=20, help="timed calls per batch size and format"
    )
    p.set_defaults(func=cmd_serve_bench)

    p = sub.add_parser("tune", help="KerasTuner search over a family's space")
    _add_tune_flags(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("tune-results", help="results table and plots of a search")
    p.add_argument("directory", help="search directory made by zoo tune")
    p.add_argument("--top", type=int, default=10, help="best trials shown")
    p.set_defaults(func=cmd_tune_results)

    return parser


def _write_problem(err: Exception, command: str) -> str | None:
    """One line for a write that failed on a full disk or a read-only or
    forbidden path, naming the path and what to do; None for other errors."""
    import errno

    from zoo import files

    failed = files.write_error(err)
    if failed is None:
        return None
    fix = (
        "Free some space"
        if failed.errno in (errno.ENOSPC, errno.EDQUOT)
        else "Make it writable (or write elsewhere)"
    )
    run_dir = getattr(err, "run_dir", None)
    then = (
        f", then continue the run from its last checkpoint: zoo {command} --resume "
        f"{run_dir}"
        if run_dir and command in ("train", "finetune")
        else " and run the command again"
    )
    return f"cannot write '{failed.filename}': {failed.strerror}. {fix}{then}."


def _tune_resume(argv: list[str] | None, directory) -> str:
    """The command that continues an interrupted `zoo tune`: its own arguments,
    the search directory and --resume."""
    import shlex

    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    if not any(a == "--directory" or a.startswith("--directory=") for a in args):
        args += ["--directory", str(directory)]
    return shlex.join(["zoo", *args, "--resume"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zoo` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the command whose flags they are not
        commands = parser._subparsers._group_actions[0].choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with one_line_warnings(args.command):
            args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        problem = _write_problem(err, args.command)
        if problem is None:
            raise
        print(f"zoo {args.command}: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        run_dir = getattr(interrupt, "run_dir", None)
        hint = (
            f"; continue it with zoo {args.command} --resume {run_dir}"
            if run_dir and args.command in ("train", "finetune")
            else ""
        )
        if run_dir and args.command == "tune":
            hint = f"; continue it with {_tune_resume(argv, run_dir)}"
        print(f"zoo {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
