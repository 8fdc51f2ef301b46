"""Bad input gets a clear error naming the argument, at trace time."""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops

Y = np.zeros((2, 8, 8, 1), np.float32)
P = np.full((2, 8, 8, 1), 0.5, np.float32)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(weighting="dice"), ValueError, "weighting"),
    (dict(implementation="cuda"), ValueError, "implementation"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(weight_background=-1.0), ValueError, "weight_background"),
    (dict(weight_foreground=float("nan")), ValueError, "weight_foreground"),
    (dict(weight_foreground="2"), TypeError, "weight_foreground"),
    (dict(weight_background=0.0, weight_foreground=0.0), ValueError, "both be 0"),
    (dict(epsilon=0.0), ValueError, "epsilon"),
    (dict(per_image="yes"), TypeError, "per_image"),
    (dict(weighting="pixel"), NotImplementedError, "#5"),
    (dict(weighting="class"), NotImplementedError, "#5"),
    (dict(per_image=True), NotImplementedError, "#5"),
    (dict(from_logits=True), NotImplementedError, "#5"),
    (dict(log=False), NotImplementedError, "#5"),
    (dict(cross_replica=True), NotImplementedError, "#6"),
])
def test_bad_options(kwargs, error, words):
    with pytest.raises(error, match=words):
        wiou_ops.WeightedIoULoss(**kwargs)
    with pytest.raises(error, match=words):
        wiou_ops.weighted_iou_loss(Y, P, **kwargs)


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="weight_fg"):
        wiou_ops.weighted_iou_loss(Y, P, weight_fg=2.0)


@pytest.mark.parametrize("trace", [False, True], ids=["eager", "traced"])
def test_shape_mismatch(trace):
    loss = wiou_ops.WeightedIoULoss()
    call = tf.function(loss) if trace else loss
    with pytest.raises(ValueError, match=r"y_true.*y_pred.*same shape"):
        call(Y[..., 0], P)
    with pytest.raises(ValueError, match="y_true"):
        call(np.zeros((2, 8, 7, 1), np.float32), P)


def test_dynamic_shape_mismatch_is_caught_at_run_time():
    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32)
    call = tf.function(wiou_ops.WeightedIoULoss(), input_signature=[spec, spec])
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        call(np.zeros((3, 8, 8, 1), np.float32), P)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_non_floating_predictions(dtype):
    with pytest.raises(TypeError, match="y_pred"):
        wiou_ops.weighted_iou_loss(Y, tf.cast(P, dtype))
    with pytest.raises(TypeError, match="y_pred"):
        tf.function(wiou_ops.WeightedIoULoss())(Y, tf.cast(P, dtype))


def test_string_labels():
    with pytest.raises(TypeError, match="y_true"):
        wiou_ops.weighted_iou_loss(tf.fill([2, 8, 8, 1], "a"), P)
