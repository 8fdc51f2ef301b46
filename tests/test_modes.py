"""Every weighting and option on every implementation, against the float64 oracle.

Grid: implementations x weightings x shapes x y_pred dtypes x option sets
(per_image, from_logits, log; a pairwise cover of the eight combinations), with
a weight map that has zeros (pixel/class) and a random upstream gradient.
Then the degenerate inputs, the reductions of per-image losses, how sample
weights are read, and the gradient on empty tiles.
"""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops import oracle

IMPLEMENTATIONS = wiou_ops.available_implementations()
WEIGHTINGS = ["seed", "pixel", "class"]
SHAPES = [(1, 1, 1, 1), (5, 67, 71, 1), (2, 3, 57, 61)]
# (per_image, from_logits, log): every pair of values appears together.
OPTION_SETS = [(False, False, True), (True, False, False), (False, True, False),
               (True, True, True)]
WEIGHTS = dict(weight_background=0.3, weight_foreground=2.0)


def mode_inputs(shape, case, pred_dtype, from_logits, seed=0):
    """(y_true, y_pred, weight map) with y_pred logits (normal, σ=4, ±1e4 planted) if asked."""
    y_true, y_pred = helpers.make_inputs(shape, case, "float32", seed=seed)
    rng = np.random.default_rng(seed + 7)
    if from_logits:
        z = rng.normal(0.0, 4.0, shape).astype(np.float32)
        if case == "saturated":
            z = np.where(rng.random(shape) < 0.5, -1e4, 1e4).astype(np.float32)
        elif z.size >= 4:
            z.reshape(-1)[:2] = [1e4, -1e4]
        y_pred = tf.constant(z)
    y_pred = tf.cast(y_pred, pred_dtype)
    weight_map = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    weight_map[rng.random(shape) < 0.1] = 0.0
    return y_true, y_pred, tf.constant(weight_map)


def check_mode(impl, weighting, shape, pred_dtype, per_image, from_logits, log, case="random",
               reduction="sum_over_batch_size", seed=0):
    y_true, y_pred, weight_map = mode_inputs(shape, case, pred_dtype, from_logits, seed)
    sample_weight = None if weighting == "seed" else weight_map
    oracle_args = dict(
        weighting=weighting, per_image=per_image, from_logits=from_logits, log=log, **WEIGHTS,
        weight_map=None if sample_weight is None else sample_weight.numpy(), reduction=reduction)
    up = np.random.default_rng(seed + 1).uniform(0.5, 2.0)
    if reduction == "none":
        up = up * np.ones(np.shape(oracle.iou_value_and_grad(
            helpers.to_f64(y_true), helpers.to_f64(y_pred), **oracle_args)[0]))
    if pred_dtype != "float32":
        # A loss scale, as mixed_float16 training uses: the largest gradient near 1,
        # so that 16-bit gradients are normal numbers (1 - IoU's ε/U² is ~1e-7).
        _, unit_grad = oracle.iou_value_and_grad(helpers.to_f64(y_true),
                                                 helpers.to_f64(y_pred), **oracle_args,
                                                 upstream=up)
        largest = np.max(np.abs(unit_grad))
        up = up * (2.0 ** np.clip(np.floor(-np.log2(largest)), -8, 40) if largest > 0 else 1.0)
    loss_fn = wiou_ops.WeightedIoULoss(
        **WEIGHTS, weighting=weighting, per_image=per_image, from_logits=from_logits, log=log,
        implementation=impl, reduction=reduction)

    def call(y, p):
        return loss_fn(y, p, sample_weight=sample_weight)

    loss, grad = helpers.value_and_grad(call, y_true, y_pred, up)
    want, want_grad = oracle.iou_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred), **oracle_args, upstream=up)
    assert wiou_ops.last_implementation() == impl
    assert loss.dtype == tf.float32 and grad.dtype == y_pred.dtype
    assert np.all(np.isfinite(helpers.to_f64(loss))) and np.all(
        np.isfinite(helpers.to_f64(grad)))
    value_err, grad_err = helpers.rel_err(loss, want), helpers.rel_err(grad, want_grad)
    assert value_err <= helpers.VALUE_RTOL, f"value rel err {value_err:.2e}"
    assert grad_err <= helpers.GRAD_RTOL[pred_dtype], f"grad rel err {grad_err:.2e}"
    return helpers.to_f64(loss), helpers.to_f64(grad)


@pytest.mark.parametrize("options", OPTION_SETS,
                         ids=lambda o: "per_image={}-logits={}-log={}".format(*o))
@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS + helpers.XLA_FOR_ACCELERATORS)
def test_every_mode_matches_float64_oracle(impl, weighting, shape, pred_dtype, options,
                                           monkeypatch):
    check_mode(helpers.use_implementation(impl, monkeypatch), weighting, shape, pred_dtype,
               *options)


@pytest.mark.parametrize("case", ["empty", "full", "saturated"])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS + helpers.XLA_FOR_ACCELERATORS)
def test_degenerate_masks_and_saturated_inputs(impl, weighting, from_logits, case, monkeypatch):
    impl = helpers.use_implementation(impl, monkeypatch)
    for per_image, log in ((False, True), (True, False)):
        check_mode(impl, weighting, (3, 33, 35, 1), "float32", per_image, from_logits, log,
                   case=case)


@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_with_sample_weight", "none"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_reductions(impl, weighting, reduction):
    for per_image in (False, True):
        check_mode(impl, weighting, (4, 21, 23, 1), "float32", per_image, False, True,
                   reduction=reduction)


def _per_sample_inputs():
    rng = np.random.default_rng(3)
    shape = (4, 19, 17, 1)
    y = (rng.random(shape) < 0.2).astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    return y, p, rng.uniform(0.5, 2.0, shape[0]).astype(np.float32)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight",
                                       "none"])
@pytest.mark.parametrize("weighting", ["pixel", "class"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_per_sample_weight_weights_each_image_loss(impl, weighting, reduction):
    """per_image: a (B,) weight multiplies each image's loss, as Keras weights samples."""
    y, p, per_sample = _per_sample_inputs()
    for weight in (per_sample, per_sample[:, None, None, None]):
        loss_fn = wiou_ops.WeightedIoULoss(**WEIGHTS, weighting=weighting, per_image=True,
                                           implementation=impl, reduction=reduction)
        up = 1.0 if reduction != "none" else np.linspace(0.5, 1.5, 4)
        loss, grad = helpers.value_and_grad(
            lambda a, b: loss_fn(a, b, sample_weight=weight), y, tf.constant(p), up)
        want, want_grad = oracle.iou_value_and_grad(
            y, p, weighting=weighting, per_image=True, **WEIGHTS, group_weight=per_sample,
            reduction=reduction, upstream=up)
        assert helpers.rel_err(loss, want) <= 1e-6
        assert helpers.rel_err(grad, want_grad) <= 1e-5


@pytest.mark.parametrize("weighting", ["pixel", "class"])
def test_scalar_sample_weight_scales_the_loss(weighting):
    y, p, _ = _per_sample_inputs()
    base = wiou_ops.weighted_iou_loss(y, p, weighting=weighting, **WEIGHTS)
    scaled = wiou_ops.weighted_iou_loss(y, p, sample_weight=2.5, weighting=weighting, **WEIGHTS)
    np.testing.assert_allclose(float(scaled), 2.5 * float(base), rtol=1e-6)


@pytest.mark.parametrize("weighting", ["pixel", "class"])
def test_per_sample_weight_without_per_image_weights_pixels_of_that_sample(weighting):
    """Whole-batch IoU: a (B,) weight is a weight map constant over each sample."""
    y, p, per_sample = _per_sample_inputs()
    got = wiou_ops.weighted_iou_loss(y, p, sample_weight=per_sample, weighting=weighting,
                                     **WEIGHTS)
    full_map = np.broadcast_to(per_sample[:, None, None, None], y.shape)
    want = wiou_ops.weighted_iou_loss(y, p, sample_weight=full_map, weighting=weighting,
                                      **WEIGHTS)
    want64, _ = oracle.iou_value_and_grad(y, p, weighting=weighting, **WEIGHTS,
                                          weight_map=full_map)
    assert float(got) == float(want)
    assert abs(float(got) - want64) <= 1e-6 * abs(want64)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_class_weighting_keeps_a_gradient_on_empty_tiles(impl):
    """log=False on a tile without foreground: pixel mode's gradient vanishes (~ε/U²),
    class mode's background IoU pushes every prediction down."""
    rng = np.random.default_rng(5)
    y = np.zeros((2, 32, 32, 1), np.float32)
    p = tf.constant(rng.uniform(0.05, 0.6, y.shape).astype(np.float32))
    grads = {}
    for weighting in ("pixel", "class"):
        loss_fn = wiou_ops.WeightedIoULoss(weighting=weighting, log=False, implementation=impl)
        _, grads[weighting] = helpers.value_and_grad(loss_fn, y, p, 1.0)
    pixel, klass = helpers.to_f64(grads["pixel"]), helpers.to_f64(grads["class"])
    assert np.max(np.abs(pixel)) < 1e-9
    assert np.all(klass > 0) and np.min(klass) > 1e4 * np.max(np.abs(pixel))


def test_keras_mask_is_a_weight_map():
    """A Keras mask on y_pred ignores the masked pixels in pixel/class weighting."""
    y, p, _ = _per_sample_inputs()
    mask = np.ones(y.shape[:-1], bool)
    mask[:, :5] = False
    masked = tf.constant(p)
    masked._keras_mask = tf.constant(mask)
    for weighting in ("pixel", "class"):
        loss_fn = wiou_ops.WeightedIoULoss(weighting=weighting, **WEIGHTS)
        want = wiou_ops.weighted_iou_loss(y, p, sample_weight=mask[..., None].astype(np.float32),
                                          weighting=weighting, **WEIGHTS)
        assert float(loss_fn(y, masked)) == pytest.approx(float(want), rel=1e-6)


def test_keras_mask_without_the_private_keras_helper(monkeypatch):
    """wiou_ops reads Keras's mask through keras.src (no public API); if a Keras release
    moves it, the tensor attribute Keras sets is read instead: same loss."""
    import builtins

    from wiou_ops._common import keras_compat

    y, p, _ = _per_sample_inputs()
    mask = np.ones(y.shape[:-1], bool)
    mask[:, :5] = False
    masked = tf.constant(p)
    masked._keras_mask = tf.constant(mask)
    loss_fn = wiou_ops.WeightedIoULoss(weighting="pixel", **WEIGHTS)
    with_helper = float(loss_fn(y, masked))
    real_import = builtins.__import__

    def no_private_keras(name, *args, **kwargs):
        if name.startswith("keras.src"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_private_keras)
    assert keras_compat.get_keras_mask(masked) is masked._keras_mask
    assert keras_compat.get_keras_mask(tf.constant(p)) is None
    assert float(loss_fn(y, masked)) == with_helper
    unmasked = float(loss_fn(y, tf.constant(p)))
    assert unmasked != with_helper  # the mask did change the loss
