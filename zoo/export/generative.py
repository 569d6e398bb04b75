"""SavedModel export of the generative families: `encode` (uint8 images -> codes),
`decode` (codes -> uint8 images), `reconstruct` (uint8 images -> uint8 images)
and `generate` (seed, count -> uint8 images, from the prior N(0, I)).

Autoencoders serve encode, decode and reconstruct; those with a prior (vae, aae)
also generate; a GAN serves generate and decode (its generator on given noise).
The first of them is also `serving_default`, which TensorFlow Serving requires.
Written with Keras' own `keras.export.ExportArchive` (one endpoint per
signature), as every version is: in a temporary directory, verified in a fresh
process that imports only TensorFlow and NumPy, then renamed into place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo import generative
from zoo.export import layout, serving
from zoo.export.exporter import (
    _TMP_PREFIX,
    _check_version_free,
    _package_versions,
    _publish,
    _remove_stale_temp_dirs,
)
from zoo.export.source import Source
from zoo.export.verification import VerificationError, last_error
from zoo.files import naming, write_json

CODES = "codes"
IMAGES = "images"
# Verification: codes in float32 like any output; images are uint8, where a value
# on a rounding boundary may land one step apart.
CODE_TOLERANCE = 1e-5
IMAGE_TOLERANCE = 1
VERIFY_SEED, VERIFY_COUNT = 7, 8


def export_generative(source: Source, base: Path, version: int | None) -> Path:
    """Write, verify and publish the generative signatures of `source.model` as
    `<base>/<version>` (next free version when None)."""
    model = source.model
    if version is not None:
        _check_version_free(base, version)
    image_shape = generative.image_shape(model)
    preprocessing, spec = serving.serving_input(source, image_shape, True, None, None)
    archive, names = _archive(model, preprocessing, spec)
    samples = np.random.default_rng(0).integers(
        0, 256, (VERIFY_COUNT, *spec.shape[1:]), dtype=np.uint8
    )
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(base)
    version = version or (max(layout.list_versions(base), default=0) + 1)
    tmp = base / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    encodes = generative.part(model, "encoder") is not None
    tmp.mkdir()
    try:
        with naming(base):  # Keras names no file when the disk is full
            archive.write_out(str(tmp), verbose=False)
            model.save(tmp / layout.KERAS_FILE)
            if encodes:  # what `encode` applies to raw images
                preprocessing.save(tmp / layout.PREPROCESSING_FILE)
        meta = {
            "model": source.name,
            "version": version,
            "format": "savedmodel",
            "task": "reconstruction" if encodes else "generation",
            "signatures": names,
            # `encode` and `reconstruct` take raw images (the training data's
            # size, preprocessing inside); `decode`/`generate` give image_shape.
            "input_name": layout.INPUT_NAME if encodes else None,
            "input_dtype": spec.dtype.name if encodes else None,
            "input_shape": list(spec.shape[1:]) if encodes else None,
            "image_shape": list(image_shape),
            "latent_dim": generative.latent_dim(model),
            "precision": "float32",
            "training_metrics": source.metrics,
            "source_run": source.run_dir,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "package_versions": _package_versions("savedmodel"),
        }
        meta["verification"] = _verify(tmp, model, preprocessing, samples, names)
        write_json(tmp / layout.META_FILE, meta)
        return _publish(tmp, base, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _to_uint8(images):
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def _noise(seed, count, latent: int):
    """N(0, I) draws fixed by `seed` (the same on every machine: stateless)."""
    return tf.random.stateless_normal(
        tf.stack([count, latent]), seed=tf.stack([seed, 0])
    )


def _unless_empty(inputs, compute, shape, dtype):
    """compute(inputs), or an empty batch of `shape` for an empty request:
    TensorFlow's CPU convolutions fail on an empty batch and its transposed
    ones return a wrong shape."""
    return tf.cond(
        tf.shape(inputs)[0] > 0,
        lambda: compute(inputs),
        lambda: tf.zeros((0, *shape), dtype),
    )


def _archive(model, preprocessing, spec) -> tuple[keras.export.ExportArchive, list]:
    """The ExportArchive with one endpoint per signature the model supports."""
    encoder = generative.part(model, "encoder")
    maker = generative.image_maker(model)
    latent = generative.latent_dim(model)
    shape = generative.image_shape(model)
    archive = keras.export.ExportArchive()
    # The functional parts served, not the whole model: a GAN subclass has no
    # single input to trace.
    for part in [maker] if encoder is None else [maker, encoder, preprocessing]:
        archive.track(part)

    def codes_of(images):
        def encode(images):
            codes = encoder(preprocessing(images, training=False), training=False)
            return codes[0] if isinstance(codes, list | tuple) else codes  # VAE: mean

        return _unless_empty(images, encode, (latent,), tf.float32)

    def images_of(codes):
        def decode(codes):
            return _to_uint8(maker(codes, training=False))

        return _unless_empty(codes, decode, shape, tf.uint8)

    code_spec = tf.TensorSpec((None, latent), tf.float32, name=CODES)
    scalar = [tf.TensorSpec((), tf.int32, name="seed")]
    scalar.append(tf.TensorSpec((), tf.int32, name="count"))
    endpoints = []
    if encoder is not None:
        endpoints += [
            ("encode", lambda images: {CODES: codes_of(images)}, [spec]),
            (
                "reconstruct",
                lambda images: {IMAGES: images_of(codes_of(images))},
                [spec],
            ),
        ]
    if generative.has_prior(model):
        endpoints.append(
            (
                "generate",
                lambda seed, count: {IMAGES: images_of(_noise(seed, count, latent))},
                scalar,
            )
        )
    endpoints.append(
        (
            "decode",
            lambda codes: {IMAGES: images_of(codes)},
            [code_spec],
        )
    )
    if encoder is None:  # a GAN: generate first, the serving default
        endpoints.sort(key=lambda e: e[0] != "generate")
    for name, fn, signature in endpoints:
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive, [name for name, _, _ in endpoints]


def _reference(model, preprocessing, samples, names) -> dict[str, np.ndarray]:
    """What each signature must return, computed by the Keras model."""
    encoder = generative.part(model, "encoder")
    maker = generative.image_maker(model)
    out = {}
    if "encode" in names:
        codes = encoder(preprocessing(samples, training=False), training=False)
        codes = codes[0] if isinstance(codes, list | tuple) else codes
        out["encode"] = np.asarray(codes)
        out["reconstruct"] = np.asarray(_to_uint8(maker(codes, training=False)))
    noise = _noise(VERIFY_SEED, VERIFY_COUNT, generative.latent_dim(model))
    out["decode"] = np.asarray(_to_uint8(maker(noise, training=False)))
    if "generate" in names:
        out["generate"] = out["decode"]
    out["noise"] = np.asarray(noise)
    return out


_VERIFY_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
path, work, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
seed, count = int(sys.argv[4]), int(sys.argv[5])
with np.load(work + "/inputs.npz") as f:
    images, noise = f["images"], f["noise"]
loaded = tf.saved_model.load(path)
inputs = {
    "encode": {"images": images}, "reconstruct": {"images": images},
    "decode": {"codes": noise},
    "generate": {"seed": np.int32(seed), "count": np.int32(count)},
}
out = {}
for name in names + ["serving_default"]:
    result = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.get(
        name, inputs[names[0]]).items()})
    out[name] = next(iter(result.values())).numpy()
np.savez(work + "/outputs.npz", **out)
"""


def _verify(path: Path, model, preprocessing, samples, names) -> dict:
    """Call every signature in a fresh process and compare with the Keras model:
    codes within CODE_TOLERANCE, uint8 images within IMAGE_TOLERANCE."""
    reference = _reference(model, preprocessing, samples, names)
    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as work:
        np.savez(Path(work) / "inputs.npz", images=samples, noise=reference["noise"])
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _VERIFY_SCRIPT,
                    str(path.resolve()),
                    work,
                    ",".join(names),
                    str(VERIFY_SEED),
                    str(VERIFY_COUNT),
                ],
                capture_output=True,
                text=True,
                cwd=work,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                timeout=900,
            )
        except subprocess.TimeoutExpired as err:
            raise VerificationError(
                f"loading and calling the SavedModel in a fresh process took over "
                f"{err.timeout:.0f} s; nothing was published."
            ) from err
        if proc.returncode != 0:
            raise VerificationError(
                f"tf.saved_model.load and its signatures failed in a fresh process "
                f"(exit {proc.returncode}): {last_error(proc.stderr)}; nothing was "
                "published."
            )
        with np.load(Path(work) / "outputs.npz") as f:
            served = {name: f[name] for name in f.files}
    diffs = {}
    for name in names:
        diffs[name] = float(
            np.abs(served[name].astype("float64") - reference[name]).max()
        )
        limit = CODE_TOLERANCE if name == "encode" else IMAGE_TOLERANCE
        if diffs[name] > limit:
            raise VerificationError(
                f"the exported {name!r} signature disagrees with the Keras model: "
                f"max abs difference {diffs[name]:.3g} > {limit:g}; nothing was "
                "published."
            )
    if not np.array_equal(served["serving_default"], served[names[0]]):
        raise VerificationError(
            f"serving_default is not the {names[0]!r} signature; nothing was published."
        )
    return {"max_abs_diff": diffs, "num_samples": VERIFY_COUNT}
