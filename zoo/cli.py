"""The `zoo` command: a thin argparse shell over the package's public functions.

TensorFlow is imported only inside the commands that need it, so `zoo --help` and
`zoo list` answer instantly. A ValueError (bad input) becomes one line on stderr and
exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from zoo.registry import list_models, model_card


def parse_shape(text: str) -> tuple[int, ...]:
    """'224,224,3' -> (224, 224, 3)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 224,224,3; received {text!r}"
        ) from None
    return shape


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
        args.name, input_shape=args.input_shape, num_classes=args.num_classes
    )
    print(f"{card.name} ({card.family}) - {card.paper}")
    print(format_table(zoo.describe(model)))


def cmd_export(args: argparse.Namespace) -> None:
    load_tensorflow()
    from zoo import export

    path = export.export_saved_model(
        args.source,
        args.out,
        version=args.version,
        raw_image_input=not args.float_input,
        top_k=args.top_k,
        precision=args.precision,
        jit_compile=args.jit_compile,
    )
    print(f"exported and verified: {path}")


def cmd_predict(args: argparse.Namespace) -> None:
    load_tensorflow()
    import warnings

    from zoo import export

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = export.predict(args.path, args.images, top_k=args.top_k)
    for w in caught:
        print(f"zoo predict: warning: {w.message}", file=sys.stderr)
    print(table.to_string(index=False))


def cmd_serve_bench(args: argparse.Namespace) -> None:
    load_tensorflow()
    from zoo import export

    table = export.serve_bench(args.path, args.batch_sizes, repeats=args.repeats)
    print(table.to_string(index=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    p.add_argument("name")
    p.add_argument(
        "--input-shape",
        type=parse_shape,
        default=None,
        help="H,W,C (default: the model's reference input)",
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="verified SavedModel for TF Serving (+ .keras)")
    p.add_argument(
        "source", help="run directory (best.keras/last.keras) or .keras file"
    )
    p.add_argument("--out", required=True, help="base dir; writes OUT/<version>/")
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
        help="float32 | float16 | bfloat16 computations (GPU)",
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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top-k table for image files (SavedModel)")
    p.add_argument("path", help="export base dir (latest version) or version dir")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=int, default=None)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve-bench", help="SavedModel latency/throughput by batch")
    p.add_argument("path", help="export base dir (latest version) or version dir")
    p.add_argument(
        "--batch-sizes",
        type=parse_shape,
        default=(1, 8, 64),
        help="comma-separated, e.g. 1,8,64",
    )
    p.add_argument("--repeats", type=int, default=20)
    p.set_defaults(func=cmd_serve_bench)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zoo` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zoo {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
