"""WeightedIoULoss is a drop-in for the seed class: same value, same gradient.

Eager, inside tf.function and inside tf.function(jit_compile=True); every
Keras reduction; per-sample and per-pixel sample weights; Keras masks. The
reference is the seed class itself computed in float64 (Keras's own
broadcasting of weights and masks, without float32 rounding), so the
tolerances are the float64-oracle ones.
"""

import numpy as np
import pytest
import tensorflow as tf
from keras.src import backend as keras_backend

import wiou_ops
from tests import helpers

REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none"]
SHAPE = (4, 24, 20, 1)
# Against the seed class run in float32: both sides round, in a different order.
RTOL = 1e-5


def _sample_weight(kind):
    rng = np.random.default_rng(11)
    if kind is None:
        return None
    shapes = {"per_sample": (SHAPE[0],), "per_pixel": SHAPE, "per_pixel_squeezed": SHAPE[:-1]}
    return tf.constant(rng.uniform(0.0, 2.0, shapes[kind]).astype(np.float32))


def _run(loss_obj, mode, y_true, y_pred, sample_weight, mask, upstream):
    """(loss, upstream · gradient) of ``loss_obj`` in ``mode``; inputs are cast to the
    loss's dtype first when it is float64 (the reference run)."""
    if loss_obj.dtype == "float64":
        y_true, y_pred = tf.cast(y_true, tf.float64), tf.cast(y_pred, tf.float64)
        if sample_weight is not None:
            sample_weight = tf.cast(sample_weight, tf.float64)

    def value_and_grad(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            masked = tf.identity(y_pred)
            if mask is not None:
                keras_backend.set_keras_mask(masked, mask)
            loss = loss_obj(y_true, masked, sample_weight=sample_weight)
        return loss, tape.gradient(loss, y_pred,
                                   output_gradients=tf.cast(upstream(loss), loss.dtype))

    if mode == "tf.function":
        value_and_grad = tf.function(value_and_grad)
    elif mode == "jit":
        value_and_grad = tf.function(value_and_grad, jit_compile=True)
    return value_and_grad(y_true, y_pred)


@pytest.mark.parametrize("mode", ["eager", "tf.function", "jit"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "per_sample", "per_pixel", "per_pixel_squeezed"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
def test_same_value_and_gradient_as_seed(mode, reduction, weight, use_mask):
    y_true, y_pred = helpers.make_inputs(SHAPE, "random", seed=5)
    sample_weight = _sample_weight(weight)
    mask = None
    if use_mask:
        mask = tf.constant(np.random.default_rng(3).random(SHAPE[:-1]) < 0.7)
    rng = np.random.default_rng(9)
    upstream_map = {}

    def upstream(loss):
        shape = tuple(loss.shape)
        if shape not in upstream_map:
            upstream_map[shape] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        return tf.constant(upstream_map[shape])

    seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5, reduction=reduction, dtype="float64")
    ours = wiou_ops.WeightedIoULoss(0.5, 1.5, reduction=reduction)
    if use_mask and weight == "per_sample":
        # Keras cannot broadcast a (B,) weight against a (B, H, W) mask: the
        # drop-in fails exactly where the seed does.
        for loss_obj in (seed, ours):
            with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
                _run(loss_obj, mode, y_true, y_pred, sample_weight, mask, upstream)
        return
    want_loss, want_grad = _run(seed, mode, y_true, y_pred, sample_weight, mask, upstream)
    loss, grad = _run(ours, mode, y_true, y_pred, sample_weight, mask, upstream)
    assert loss.shape == want_loss.shape
    assert helpers.rel_err(loss, want_loss) <= helpers.VALUE_RTOL
    assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL["float32"]
    assert wiou_ops.last_implementation() == helpers.expected_auto(in_xla=mode == "jit")


@pytest.mark.parametrize("pred_dtype", ["float16", "bfloat16"])
def test_16bit_predictions_match_seed_on_upcast_input(pred_dtype):
    """The seed up-casts 16-bit y_pred to float32; we read it as is: same numbers."""
    y_true, y_pred = helpers.make_inputs((8, 32, 32, 1), "random", pred_dtype, "uint8")
    seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5)
    ours = wiou_ops.WeightedIoULoss(0.5, 1.5)
    scale = helpers.upstream_scale(pred_dtype, 8 * 32 * 32)
    want_loss, want_grad = helpers.value_and_grad(
        seed, tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32), scale)
    loss, grad = helpers.value_and_grad(ours, y_true, y_pred, scale)
    assert grad.dtype == y_pred.dtype
    assert helpers.rel_err(loss, want_loss) <= RTOL
    assert helpers.rel_err(grad, tf.cast(want_grad, y_pred.dtype)) <= helpers.GRAD_RTOL[pred_dtype]


def test_call_returns_seed_per_pixel_map():
    y_true, y_pred = helpers.make_inputs(SHAPE, "random", seed=2)
    seed = wiou_ops.SeedWeightedIoULoss(0.2, 3.0)
    ours = wiou_ops.WeightedIoULoss(0.2, 3.0)
    assert helpers.rel_err(ours.call(y_true, y_pred), seed.call(y_true, y_pred)) <= RTOL


def test_class_weights_only_rescale_the_seed_gradient():
    """The documented property: seed weights never change the gradient's direction."""
    y_true, y_pred = helpers.make_inputs(SHAPE, "random", seed=4)
    _, g_plain = helpers.value_and_grad(wiou_ops.WeightedIoULoss(), y_true, y_pred, 1.0)
    _, g_weighted = helpers.value_and_grad(wiou_ops.WeightedIoULoss(2.0, 5.0), y_true, y_pred, 1.0)
    a, b = helpers.to_f64(g_plain).ravel(), helpers.to_f64(g_weighted).ravel()
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(b) / np.linalg.norm(a) != pytest.approx(1.0, abs=1e-2)


def test_dynamic_batch_dimension_in_tf_function():
    ours = wiou_ops.WeightedIoULoss(0.5, 1.5, implementation="xla")
    seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5)
    spec = tf.TensorSpec([None, 16, 16, 1], tf.float32)
    f_ours = tf.function(lambda t, p: ours(t, p), input_signature=[spec, spec])
    f_seed = tf.function(lambda t, p: seed(t, p), input_signature=[spec, spec])
    for batch in (1, 3, 7):
        y_true, y_pred = helpers.make_inputs((batch, 16, 16, 1), "random", seed=batch)
        assert helpers.rel_err(f_ours(y_true, y_pred), f_seed(y_true, y_pred)) <= RTOL
