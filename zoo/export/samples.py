"""Inputs for the serving signature: the images an export is verified on, and the
batches `serve_bench` times."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

NUM_SAMPLES = 8


def verification_samples(
    sample_images: np.ndarray | None, spec: tf.TensorSpec
) -> np.ndarray:
    """Validated verification samples, or seeded random ones."""
    if sample_images is None:
        return random_samples(spec, NUM_SAMPLES)
    samples = np.asarray(sample_images)
    expected = tuple(spec.shape[1:])
    if samples.ndim != len(expected) + 1 or samples.shape[1:] != expected:
        raise ValueError(
            f"sample images have shape {samples.shape}; the serving input takes "
            f"(batch, {', '.join(map(str, expected))}). Pass a batch of that shape."
        )
    if spec.dtype == tf.uint8 and samples.dtype != np.uint8:
        raise ValueError(
            f"sample images are {samples.dtype}; the serving input takes raw uint8 "
            "pixels. Pass images before preprocessing, as uint8."
        )
    return samples.astype(spec.dtype.as_numpy_dtype)


def random_samples(spec: tf.TensorSpec, n: int) -> np.ndarray:
    """`n` inputs of `spec`'s shape and dtype, the same on every call (seed 0)."""
    rng = np.random.default_rng(0)
    shape = (n, *spec.shape[1:])
    if spec.dtype == tf.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)
