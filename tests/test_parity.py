"""Every implementation against the float64 oracle: value and gradient.

Grid: shapes x y_pred dtypes x input cases x implementations, with a random
upstream gradient; plus y_true dtypes and every reduction.
"""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops import oracle

SHAPES = [(1, 1, 1, 1), (5, 123, 123, 1), (16, 64, 64, 1), (2, 3, 257, 257)]
CASES = ["random", "empty", "full", "saturated"]
IMPLEMENTATIONS = wiou_ops.available_implementations()


def _check(impl, shape, case, pred_dtype, true_dtype="float32", reduction="sum_over_batch_size",
           weights=(0.5, 1.5), seed=0):
    y_true, y_pred = helpers.make_inputs(shape, case, pred_dtype, true_dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    n = int(np.prod(shape))
    scale = helpers.upstream_scale(pred_dtype, n)
    if reduction == "none":
        upstream = rng.uniform(0.5, 2.0, shape) * scale / n
    else:
        upstream = rng.uniform(0.5, 2.0) * scale
    loss_fn = wiou_ops.WeightedIoULoss(*weights, implementation=impl, reduction=reduction)
    loss, grad = helpers.value_and_grad(loss_fn, y_true, y_pred, upstream)
    want_loss, want_grad = oracle.seed_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred),
        weight_background=weights[0], weight_foreground=weights[1],
        reduction=reduction, upstream=upstream,
    )
    assert wiou_ops.last_implementation() == impl
    assert loss.dtype == tf.float32
    assert grad.dtype == y_pred.dtype
    assert np.all(np.isfinite(helpers.to_f64(grad)))
    value_err = helpers.rel_err(loss, want_loss)
    grad_err = helpers.rel_err(grad, want_grad)
    assert value_err <= helpers.VALUE_RTOL, f"value rel err {value_err:.2e}"
    assert grad_err <= helpers.GRAD_RTOL[pred_dtype], f"grad rel err {grad_err:.2e}"
    return value_err, grad_err


@pytest.mark.parametrize("impl", IMPLEMENTATIONS + helpers.XLA_FOR_ACCELERATORS)
@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_value_and_gradient_match_float64_oracle(impl, shape, case, pred_dtype, monkeypatch):
    _check(helpers.use_implementation(impl, monkeypatch), shape, case, pred_dtype)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS + helpers.XLA_FOR_ACCELERATORS)
@pytest.mark.parametrize("true_dtype", ["float32", "float16", "bfloat16", "uint8", "bool", "int32"])
def test_label_dtypes(impl, true_dtype, monkeypatch):
    _check(helpers.use_implementation(impl, monkeypatch), (3, 40, 40, 1), "random", "float32",
           true_dtype=true_dtype)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean",
                                       "mean_with_sample_weight", "none"])
def test_reductions(impl, reduction):
    _check(impl, (4, 33, 17, 1), "random", "float32", reduction=reduction)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bfloat16_predictions_with_uint8_labels(impl):
    _check(impl, (16, 64, 64, 1), "random", "bfloat16", true_dtype="uint8")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
def test_per_pixel_sample_weight_against_oracle(impl, reduction):
    y_true, y_pred = helpers.make_inputs((2, 31, 29, 1), "random", seed=3)
    sw = np.random.default_rng(4).uniform(0, 2, (2, 31, 29, 1)).astype(np.float32)
    loss_fn = wiou_ops.WeightedIoULoss(0.3, 2.0, implementation=impl, reduction=reduction)
    loss, grad = helpers.value_and_grad(
        lambda t, p: loss_fn(t, p, sample_weight=sw), y_true, y_pred, 1.7)
    want_loss, want_grad = oracle.seed_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred), weight_background=0.3,
        weight_foreground=2.0, sample_weight=sw, reduction=reduction, upstream=1.7)
    assert helpers.rel_err(loss, want_loss) <= helpers.VALUE_RTOL
    assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL["float32"]


def test_oracle_gradient_matches_finite_differences():
    """Cross-checks the oracle itself, so a wrong oracle cannot pass the grid."""
    rng = np.random.default_rng(7)
    y = (rng.random((3, 5)) < 0.4).astype(np.float64)
    p = rng.uniform(0.1, 0.9, (3, 5))
    _, grad = oracle.seed_value_and_grad(y, p, weight_background=0.5, weight_foreground=2.0)
    h = 1e-6
    for idx in [(0, 0), (1, 3), (2, 4)]:
        up, down = p.copy(), p.copy()
        up[idx] += h
        down[idx] -= h
        f_up, _ = oracle.seed_value_and_grad(y, up, weight_background=0.5, weight_foreground=2.0)
        f_down, _ = oracle.seed_value_and_grad(y, down, weight_background=0.5, weight_foreground=2.0)
        assert abs((f_up - f_down) / (2 * h) - grad[idx]) < 1e-6 * max(1.0, abs(grad[idx]))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_empty_batch_gives_zero_loss_and_empty_gradient(impl):
    y_true = np.zeros((0, 8, 8, 1), np.float32)
    y_pred = tf.zeros((0, 8, 8, 1))
    loss, grad = helpers.value_and_grad(
        wiou_ops.WeightedIoULoss(implementation=impl), y_true, y_pred, 1.0)
    assert float(loss) == 0.0 and grad.shape == (0, 8, 8, 1)
