"""Bad input gets a clear error naming the argument: options and shapes at trace time,
values (``check_inputs=True``) at run time."""

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
    (dict(epsilon=0.5), ValueError, "epsilon"),
    (dict(epsilon=True), TypeError, "epsilon"),
    (dict(log=1), TypeError, "log"),
    (dict(from_logits=None), TypeError, "from_logits"),
    (dict(check_inputs="yes"), TypeError, "check_inputs"),
    (dict(cross_replica="yes"), TypeError, "cross_replica"),
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


IMPLEMENTATIONS = wiou_ops.available_implementations()


@pytest.mark.parametrize("per_image", [False, True])
def test_rank_one_inputs_need_no_batch_axis_unless_per_image(per_image):
    y, p = np.float32([0, 1, 1]), np.float32([0.2, 0.7, 0.9])
    if not per_image:
        assert np.isfinite(float(wiou_ops.weighted_iou_loss(y, p)))
        return
    with pytest.raises(ValueError, match="per_image.*rank >= 2"):
        wiou_ops.weighted_iou_loss(y, p, per_image=True)
    with pytest.raises(ValueError, match="per_image.*rank >= 2"):
        wiou_ops.weighted_iou_loss(np.float32(1), np.float32(0.5), per_image=True)


@pytest.mark.parametrize("weight_shape", [(2, 8, 8, 2), (3,), (2, 8, 8, 1, 1)])
@pytest.mark.parametrize("weighting", ["pixel", "class"])
def test_sample_weight_that_does_not_broadcast_is_named(weighting, weight_shape):
    with pytest.raises(ValueError, match="sample_weight"):
        wiou_ops.weighted_iou_loss(Y, P, sample_weight=np.ones(weight_shape, np.float32),
                                   weighting=weighting)


BAD_VALUES = [
    ("y_pred", dict(), lambda y, p: (y, p + 1.5), "y_pred must be probabilities"),
    ("y_pred", dict(), lambda y, p: (y, p - 0.6), "y_pred must be probabilities"),
    ("y_pred", dict(from_logits=True), lambda y, p: (y, p / 0.0), "y_pred .logits. must be finite"),
    ("y_true", dict(), lambda y, p: (y + 2.0, p), "y_true must be in"),
    ("y_true", dict(), lambda y, p: (y - 1.0, p), "y_true must be in"),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("argument, options, corrupt, words", BAD_VALUES,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_VALUES)])
@pytest.mark.parametrize("trace", [False, True], ids=["eager", "traced"])
def test_check_inputs_raises_invalid_argument_naming_it(impl, argument, options, corrupt,
                                                        words, trace):
    y, p = corrupt(tf.constant(Y), tf.constant(P))
    loss = wiou_ops.WeightedIoULoss(check_inputs=True, implementation=impl, **options)
    call = tf.function(loss) if trace else loss
    with pytest.raises(tf.errors.InvalidArgumentError, match=words):
        call(y, p)
    # Without the check the same call runs: the check is what raised.
    unchecked = wiou_ops.WeightedIoULoss(implementation=impl, **options)
    assert unchecked(y, p).shape == ()


@pytest.mark.parametrize("bad", [-1.0, float("inf")])
def test_check_inputs_catches_bad_sample_weight(bad):
    weight = np.ones(Y.shape, np.float32)
    weight[0, 0, 0, 0] = bad
    loss = wiou_ops.WeightedIoULoss(check_inputs=True, weighting="pixel")
    with pytest.raises(tf.errors.InvalidArgumentError, match="sample_weight must be"):
        loss(Y, P, sample_weight=weight)


def test_check_inputs_accepts_valid_input_with_the_same_value():
    rng = np.random.default_rng(0)
    y = (rng.random(Y.shape) < 0.3).astype(np.float32)
    p = rng.random(Y.shape).astype(np.float32)
    checked = wiou_ops.weighted_iou_loss(y, p, check_inputs=True)
    assert float(checked) == float(wiou_ops.weighted_iou_loss(y, p))


def test_check_inputs_inside_a_users_xla_step_compiles_and_is_skipped():
    """XLA drops assertions (README): the loss still compiles and runs under jit_compile."""
    loss = wiou_ops.WeightedIoULoss(check_inputs=True)
    step = tf.function(lambda y, p: loss(y, p), jit_compile=True)
    assert np.isfinite(float(step(tf.constant(Y), tf.constant(P))))
    assert wiou_ops.last_implementation() == "xla"
    assert np.isfinite(float(step(tf.constant(Y), tf.constant(P) + 1.5)))  # unchecked there
