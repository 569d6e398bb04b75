"""The serving graph every format is made from: raw input with the training
preprocessing inside, the model, then `probabilities`/`class_ids`/`scores`
(regression: `predictions`), traced as one tf.function."""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import tensorflow as tf

from zoo.blocks import nested_layers
from zoo.export import layout
from zoo.export.rewrites import inference_call, portable_resizing
from zoo.export.samples import random_samples
from zoo.export.source import Source


def input_shape(model: keras.Model) -> tuple[int, ...]:
    """The shape of one input of `model`, which must have one of fixed size."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or None in shape:
        raise ValueError(
            f"export needs one image input of fixed size; received inputs "
            f"{[tuple(t.shape) for t in model.inputs]}. Build the model with a full "
            "input_shape."
        )
    return shape


def serving_input(
    source: Source,
    model_shape: tuple[int, ...],
    raw_image_input: bool,
    preprocessing: keras.Layer | None,
    raw_shape: Sequence[int] | None,
) -> tuple[keras.Layer | None, tf.TensorSpec]:
    """The preprocessing run inside the graph (None for float inputs) and the
    serving input's spec, checked against the model input."""
    if raw_image_input:
        if preprocessing is None:
            preprocessing = source.preprocessing
        if preprocessing is None:
            preprocessing = keras.Sequential(
                [
                    keras.Input(model_shape, dtype="uint8"),
                    keras.layers.Rescaling(1 / 255),
                ],
                name="rescaling_only",
            )
        raw = _raw_shape(preprocessing, raw_shape or source.raw_shape, model_shape)
        spec = tf.TensorSpec((None, *raw), source.raw_dtype, name=layout.INPUT_NAME)
        _check_preprocessing(preprocessing, spec, model_shape)
    elif preprocessing is not None:
        raise ValueError(
            "preprocessing was given with raw_image_input=False; it is applied only "
            "to raw uint8 inputs. Pass raw_image_input=True or drop preprocessing."
        )
    else:
        spec = tf.TensorSpec((None, *model_shape), tf.float32, name=layout.INPUT_NAME)
    return preprocessing, spec


def serving_function(
    model: keras.Model,
    preprocessing: keras.Layer | None,
    spec: tf.TensorSpec,
    top_k: int | None,
    regression: bool,
    *,
    jit_compile: bool = False,
    frozen: bool = False,
) -> tf.types.experimental.GenericFunction:
    """The traced serving tf.function: images -> probabilities, class_ids, scores
    (regression: -> predictions)."""
    run_model = inference_call(model, frozen)
    run_preprocessing = (
        None if preprocessing is None else inference_call(preprocessing, frozen)
    )

    # XLA compiles the model and top-k only: preprocessing ops such as the
    # antialiased resize (ScaleAndTranslate) have no XLA kernel.
    @tf.function(jit_compile=jit_compile, autograph=False)
    def classify(x):
        probabilities = tf.cast(run_model(x), tf.float32)
        if regression:
            return {layout.REGRESSION_OUTPUT: probabilities}
        scores, class_ids = tf.math.top_k(probabilities, k=top_k)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "scores": scores,
        }

    @tf.function(input_signature=[spec], autograph=False)
    def serve(images):
        if preprocessing is None:
            return classify(images)
        return classify(run_preprocessing(images))

    serve.get_concrete_function()
    return serve


def _raw_shape(
    preprocessing: keras.Layer,
    given: Sequence[int] | None,
    model_shape: tuple[int, ...],
) -> tuple[int, ...]:
    """Raw image shape: given, else the preprocessing Input's, else the model's."""
    if given is not None:
        return tuple(int(d) for d in given)
    try:
        inputs = preprocessing.inputs  # functional/Sequential models with an Input
    except (AttributeError, ValueError):
        inputs = []
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else ()
    return shape if shape and None not in shape else model_shape


def _check_preprocessing(
    preprocessing: keras.Layer, spec: tf.TensorSpec, model_shape: tuple[int, ...]
) -> None:
    """Build `preprocessing` on one raw input and check it yields the model input."""
    raw = tuple(spec.shape[1:])
    out = preprocessing(random_samples(spec, 1), training=False)
    if tuple(out.shape[1:]) != model_shape:
        raise ValueError(
            f"preprocessing maps raw inputs {raw} to {tuple(out.shape[1:])}, but the "
            f"model takes {model_shape}. Pass the preprocessing (or raw_shape) the "
            "model was trained with."
        )


def portable_function(
    model: keras.Model,
    preprocessing: keras.Layer | None,
    spec: tf.TensorSpec,
    top_k: int | None,
    regression: bool,
) -> tf.types.experimental.ConcreteFunction:
    """The concrete serving function that converters of other formats (tf2onnx,
    OpenVINO) take: the same graph as the SavedModel's, with the resize of the
    preprocessing as matrix products (`portable_resizing`)."""
    serve = serving_function(
        model, portable_resizing(preprocessing), spec, top_k, regression
    )
    return serve.get_concrete_function()


def unconvertible(
    fmt: str,
    op_types: list[str],
    function,
    layers: list[keras.Layer | None],
    why: str,
) -> ValueError:
    """One line naming the layer(s) of `layers` (models: their nested layers)
    whose TensorFlow ops `op_types` the converter of `fmt` has no rule for,
    found by the op's name scope in `function`'s graph and nested functions."""
    graph = function.graph.as_graph_def()
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    names = {
        sub.name
        for layer in layers
        if layer is not None
        for sub in (nested_layers(layer) if isinstance(layer, keras.Model) else [layer])
    }
    found = []
    for node in nodes:
        if node.op in op_types:
            scopes = [re.sub(r"_\d+$", "", s) for s in node.name.split("/")[:-1]]
            layer = next((s for s in reversed(scopes) if s in names), node.name)
            if f"'{layer}' ({node.op})" not in found:
                found.append(f"'{layer}' ({node.op})")
    where = f"layer {', '.join(found)}" if found else f"op {', '.join(op_types)}"
    return ValueError(
        f"--format {fmt} cannot convert {where}: {why}; nothing was written. "
        "Export this model as a SavedModel (--format savedmodel), or replace the "
        "layer."
    )
