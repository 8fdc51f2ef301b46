"""Seed weighting with every sample-weight shape Keras accepts: within 1e-6 of float64.

Eager, tf.function and inside a user's jit_compile, on every TensorFlow
implementation that can run there. The reference is the seed class computed in
float64 (Keras's own broadcasting of the weights, no float32 rounding). Keras's
own float32 reduction of the weighted map (a flat sum under XLA:CPU) was
3.6e-5 off on these inputs; the loss now reduces the map itself.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers

SHAPES = [(3, 37, 53, 1), (7, 1, 999, 1), (1, 640, 480), (4, 96, 96, 1)]
LABEL_DTYPES = ["uint8", "bool", "float32"]
WEIGHT_KINDS = ["per_sample", "per_pixel", "per_pixel_squeezed", "scalar"]
MODES = ["eager", "tf.function", "jit"]
IMPLEMENTATIONS = [name for name in ("auto", "native", "xla", "graph")
                   if name == "auto" or name in wiou_ops.available_implementations()]
UPSTREAM = 1.7


def _weight(shape, kind):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    weight_shape = {"per_sample": shape[:1], "per_pixel": shape,
                    "per_pixel_squeezed": shape[:-1], "scalar": ()}[kind]
    return rng.uniform(0.0, 2.0, weight_shape).astype(np.float32)


def _value_and_grad(loss_obj, y_true, y_pred, sample_weight, mode):
    def run(y_true, y_pred, sample_weight):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = loss_obj(y_true, y_pred, sample_weight=sample_weight)
        return loss, tape.gradient(loss, y_pred, output_gradients=tf.cast(UPSTREAM, loss.dtype))

    if mode == "tf.function":
        run = tf.function(run)
    elif mode == "jit":
        run = tf.function(run, jit_compile=True)
    return run(y_true, y_pred, sample_weight)


@functools.lru_cache(maxsize=None)
def _reference(shape, label_dtype, kind):
    """Inputs and the float64 seed class's value and gradient."""
    y_true, y_pred = helpers.make_inputs(shape, "random", "float32", label_dtype,
                                         seed=sum(shape))
    weight = _weight(shape, kind)
    seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5, dtype="float64")
    want = _value_and_grad(seed, tf.cast(y_true, tf.float64), tf.cast(y_pred, tf.float64),
                           tf.constant(weight, tf.float64), "eager")
    return y_true, y_pred, weight, want


# (B, H) weights do not broadcast to (B, H, W) in Keras either; native cannot run inside
# XLA (test_dispatch.py checks that it says so).
CASES = [(shape, label_dtype, kind, mode, impl)
         for shape in SHAPES for label_dtype in LABEL_DTYPES for kind in WEIGHT_KINDS
         for mode in MODES
         for impl in IMPLEMENTATIONS + (helpers.XLA_FOR_ACCELERATORS if mode == "jit" else [])
         if not (kind == "per_pixel_squeezed" and shape[-1] != 1)
         and not (impl == "native" and mode == "jit")]


@pytest.mark.parametrize("shape, label_dtype, kind, mode, impl", CASES,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None)
def test_seed_with_sample_weight_within_1e6_of_float64(shape, label_dtype, kind, mode, impl,
                                                       monkeypatch):
    y_true, y_pred, weight, (want_loss, want_grad) = _reference(shape, label_dtype, kind)
    ours = wiou_ops.WeightedIoULoss(0.5, 1.5,
                                    implementation=helpers.use_implementation(impl, monkeypatch))
    loss, grad = _value_and_grad(ours, y_true, y_pred, tf.constant(weight), mode)
    assert loss.shape == want_loss.shape
    assert helpers.rel_err(loss, want_loss) <= 1e-6
    assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL["float32"]
