"""Graph rewrites of the served model: batch-norm folding, the reduced-precision
clone, convolution filters frozen as graph constants, the single output, and the
resize that ONNX and OpenVINO converters take."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from zoo.blocks import nested_layers

# Keras dtype policy per precision: variables stay float32, computations run in
# the reduced type, the classifier layer and the outputs stay float32.
PRECISION_POLICIES = {
    "float32": "float32",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
}

# Layers whose kernel's last axis is the output channel, so a following batch
# norm over the last axis folds into kernel and bias.
_FOLDABLE = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)

# Largest filters stored as graph constants (freeze_filters="auto"): a GraphDef
# is a protocol buffer, capped at 2 GB.
_FREEZE_MAX_BYTES = 2**30

_CONV_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A copy of `model` with batch norms folded into the layer before them.

    In inference a BatchNormalization is the affine map `x * s + (beta - mean *
    s)` with `s = gamma / sqrt(moving_variance + epsilon)`. When `x` comes from a
    Conv1D/2D/3D or Dense layer with a linear activation, the map is folded into
    that layer's weights, `kernel * s` (per output channel) and bias
    `(bias - mean) * s + beta` (computed in float64), and the batch norm is
    dropped: what TensorFlow's optimize_for_inference, TensorRT and ONNX runtimes
    do, and Keras lacks. The convolution, its bias, the residual add and the ReLU
    then run as one oneDNN/cuDNN kernel.

    Only the safe pattern is folded: a layer called once whose only consumer is a
    batch norm over the last axis (channels_last), in the same functional graph
    (nested functional models included), the batch norm called once without call
    arguments. Everything else is copied as it is; `model` is not modified.

    The outputs equal the model's up to float32 rounding, which deep networks
    amplify: measured max abs difference of the probabilities 2e-6 for a trained
    ResNet-20, 3e-5 for a trained ResNet-50 (the unfolded model differs from a
    float64 evaluation by as much).

    Args:
        model: A functional or Sequential Keras model; other models are returned
            as they are.

    Returns:
        The folded copy, with the same inputs, outputs and layer names, minus the
        folded batch norms; `model` itself if nothing can be folded.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    dropped = {id(bn) for bn in pairs.values()}

    def replace(layer):
        if id(layer) in dropped:
            return layer, None  # never called: call_layer skips it
        bn = pairs.get(id(layer))
        if bn is None:
            return None
        config = {**layer.get_config(), "use_bias": True}
        return layer.__class__.from_config(config), _folded_weights(layer, bn)

    def call_layer(layer, *args, **kwargs):
        if id(layer) in dropped:
            return args[0]
        return layer(*args, **kwargs)

    return _clone_model(model, replace, call_layer)


def _foldable_pairs(model: keras.Model) -> dict[int, keras.Layer]:
    """{id(conv or dense layer): the batch norm folded into it}, nested models
    included (Sequential ones excluded: clone_model cannot skip their layers)."""
    nodes = getattr(model, "_nodes_by_depth", None)
    if nodes is None:  # a subclassed model: no graph to rewrite
        return {}
    nodes = [n for depth in nodes.values() for n in depth if not n.is_input]
    calls, uses = {}, {id(t): 1 for t in model.outputs}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    pairs = {}
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
            pairs.update(_foldable_pairs(layer))
        if (
            type(layer) is not keras.layers.BatchNormalization
            or calls[id(layer)] != 1
            or len(node.input_tensors) != 1
            or any(v is not None for v in node.arguments.kwargs.values())
        ):
            continue
        x = node.input_tensors[0]
        source = x._keras_history.operation
        if (
            type(source) in _FOLDABLE
            and calls.get(id(source)) == 1
            and uses[id(x)] == 1
            and layer.axis in (-1, len(x.shape) - 1)
            and source.get_config().get("data_format", "channels_last")
            == "channels_last"
            and source.activation is keras.activations.linear
            and source.dtype_policy.quantization_mode is None
            and not getattr(source, "lora_enabled", False)
        ):
            pairs[id(source)] = layer
    return pairs


def _folded_weights(layer: keras.Layer, bn: keras.Layer) -> list[np.ndarray]:
    """[kernel * s, (bias - mean) * s + beta] of `layer` followed by `bn`."""

    def value(variable):
        return keras.ops.convert_to_numpy(variable).astype(np.float64)

    scale = 1 / np.sqrt(value(bn.moving_variance) + bn.epsilon)
    if bn.scale:
        scale = scale * value(bn.gamma)
    bias = value(layer.bias) if layer.use_bias else 0.0
    shift = (bias - value(bn.moving_mean)) * scale
    if bn.center:
        shift = shift + value(bn.beta)
    dtype = layer.kernel.dtype
    return [(value(layer.kernel) * scale).astype(dtype), shift.astype(dtype)]


def _clone_model(model, replace, call_layer=None) -> keras.Model:
    """keras.models.clone_model, nested models included, with the weights.

    `replace(layer)` returns None to copy the layer (config and weights), or
    `(new_layer, weights)`, weights (None to leave them) being set once the
    clone is built.
    """
    weights = []

    def clone_layer(layer):
        replaced = replace(layer)
        if replaced is None:
            config = layer.get_config()
            replaced = layer.__class__.from_config(config), layer.get_weights()
        new, values = replaced
        if values is not None:
            weights.append((new, values))
        return new

    clone = keras.models.clone_model(
        model, clone_function=clone_layer, call_function=call_layer, recursive=True
    )
    for layer, values in weights:
        layer.set_weights(values)
    return clone


def count_batch_norms(model: keras.Model) -> int:
    """Number of BatchNormalization layers in `model`, nested models included."""
    return sum(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in nested_layers(model, containers=True)
    )


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """`model` computing in `precision`: itself, or a clone with the same weights.

    The clone's output layers compute in float32, so softmax runs in full
    precision; a model trained under a mixed policy is cloned for float32.
    """
    policy = PRECISION_POLICIES[precision]
    if policy == "float32" and all(
        layer.dtype_policy.name == "float32"
        for layer in nested_layers(model, containers=True)
    ):
        return model
    output_layers = {id(t._keras_history.operation) for t in model.outputs}

    def clone_layer(layer):
        config = layer.get_config()
        float32 = id(layer) in output_layers
        config["dtype"] = keras.DTypePolicy("float32" if float32 else policy)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def single_output(model: keras.Model, regression: bool = False) -> keras.Model:
    """The model's first output as probabilities: auxiliary outputs (GoogLeNet's
    aux heads) are dropped, and a model that ends in logits (a Dense layer with a
    linear activation, e.g. trained with from_logits) gets a softmax. Regression
    outputs are served as they are."""
    output = model.outputs[0]
    last = output._keras_history[0]
    if (
        not regression
        and isinstance(last, keras.layers.Dense)
        and last.activation
        in (
            keras.activations.linear,
            None,
        )
    ):
        output = keras.layers.Activation(
            "softmax", dtype="float32", name="probabilities"
        )(output)
    elif len(model.outputs) == 1:
        return model
    return keras.Model(model.input, output, name=model.name)


def inference_call(layer: keras.Layer, frozen: bool):
    """`layer(x, training=False)`; frozen, the same call with its convolution
    filters as constants of the traced graph (Keras's stateless_call fed
    `tf.constant`s of their values, which tracing embeds as Const nodes) and
    every other weight read from its variable."""
    filters = {id(v) for v in conv_filters(layer)} if frozen else set()
    if not filters:
        return lambda x: layer(x, training=False)

    def value(variable):
        if id(variable) in filters:
            array = keras.ops.convert_to_numpy(variable)
            return lambda: tf.constant(array)
        return lambda: variable.value

    trainable = [value(v) for v in layer.trainable_variables]
    fixed = [value(v) for v in layer.non_trainable_variables]

    def call(x):
        outputs, _ = layer.stateless_call(
            [v() for v in trainable], [v() for v in fixed], x, training=False
        )
        return outputs

    return call


def conv_filters(layer: keras.Layer | None) -> list[keras.Variable]:
    """The convolution filters (weights of rank >= 3 of convolution layers) of
    `layer` and the layers nested in it."""
    if layer is None:
        return []
    layers = (
        nested_layers(layer, containers=True)
        if isinstance(layer, keras.Model)
        else [layer]
    )
    return [
        v
        for sub in layers
        if isinstance(sub, _CONV_LAYERS)
        for v in sub.weights
        if len(v.shape) >= 3
    ]


def should_freeze(freeze_filters: bool | str, layers: list) -> bool:
    """Resolve `freeze_filters` ("auto": freeze when the filters fit the graph)."""
    size = sum(
        math.prod(v.shape) * np.dtype(v.dtype).itemsize
        for layer in layers
        for v in conv_filters(layer)
    )
    if freeze_filters == "auto":
        return size <= _FREEZE_MAX_BYTES
    if freeze_filters and size > _FREEZE_MAX_BYTES:
        raise ValueError(
            f"freeze_filters=True received a model with {size / 2**30:.1f} GiB of "
            f"convolution filters; a graph holds at most "
            f"{_FREEZE_MAX_BYTES / 2**30:.0f} GiB of constants (protocol buffers "
            "are capped at 2 GB). Pass freeze_filters=False (zoo export "
            "--no-freeze-filters)."
        )
    return freeze_filters


class _SeparableResize(keras.layers.Layer):
    """A fixed-size resize as two constant matrix products, over height then
    width: the exact map of any separable resize kernel at one input size."""

    def __init__(self, rows: np.ndarray, columns: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.columns = rows, columns

    def call(self, x):
        x = keras.ops.einsum("ih,nhwc->niwc", self.rows, x)
        return keras.ops.einsum("jw,niwc->nijc", self.columns, x)


def portable_resizing(preprocessing: keras.Layer | None) -> keras.Layer | None:
    """`preprocessing` with each Resizing layer of a fixed input size replaced by
    two constant matrix products.

    The antialiased resize of the training pipeline is TensorFlow's
    ScaleAndTranslate, which neither tf2onnx nor OpenVINO converts; at a fixed
    input size it is a linear map, separable over height and width, whose two
    matrices are read off the layer itself (its response to one-hot rows and
    columns). Any runtime runs the products; the result equals the layer's up to
    float32 summation order (checked here on one random batch).
    """
    if not isinstance(preprocessing, keras.Sequential):
        return preprocessing

    def clone_layer(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.Resizing) or any(
            config.get(k) for k in ("crop_to_aspect_ratio", "pad_to_aspect_ratio")
        ):
            return layer.__class__.from_config(config)
        height, width = layer.input.shape[1:3]
        rows = keras.ops.convert_to_numpy(layer(np.eye(height)[:, :, None, None]))
        columns = keras.ops.convert_to_numpy(layer(np.eye(width)[:, None, :, None]))
        resize = _SeparableResize(
            rows[:, :, 0, 0].T.astype("float32"),
            columns[:, 0, :, 0].T.astype("float32"),
            name=layer.name,
        )
        x = np.random.default_rng(0).random((1, height, width, 1), "float32")
        difference = np.max(np.abs(resize(x) - layer(x)))
        return resize if difference <= 1e-6 else layer.__class__.from_config(config)

    return keras.models.clone_model(preprocessing, clone_function=clone_layer)
