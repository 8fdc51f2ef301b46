"""Properties of every mode (hypothesis), and the known relations to Keras's Dice and Tversky.

Properties, on every implementation: loss >= 0; a perfect prediction costs
only the ε smoothing; the loss grows as the prediction degrades; gradients are
finite; pixels of weight 0 change nothing; per_image equals looping over the
samples. Shapes come from a short list so that traces are reused.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import wiou_ops

IMPLEMENTATIONS = wiou_ops.available_implementations()
SHAPES = [(1, 7, 9, 1), (3, 16, 16, 1), (2, 5, 31, 3)]

settings.register_profile("wiou", max_examples=12, deadline=None, derandomize=True,
                          print_blob=True)
settings.load_profile("wiou")


@st.composite
def cases(draw):
    """Inputs and options: binary masks with at least one foreground and one background
    pixel, probabilities anywhere in [0, 1] (0 and 1 included; passed as logits with
    from_logits), a weight map with zeros."""
    shape = draw(st.sampled_from(SHAPES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    fg = draw(st.floats(0.01, 0.9))
    y = (rng.random(shape) < fg).astype(np.float32)
    y.reshape(-1)[0], y.reshape(-1)[-1] = 1.0, 0.0
    p = rng.random(shape).astype(np.float32)
    p[rng.random(shape) < 0.05] = 0.0
    p[rng.random(shape) < 0.05] = 1.0
    weight_map = rng.uniform(0.0, 3.0, shape).astype(np.float32)
    weight_map[rng.random(shape) < 0.2] = 0.0
    weight_map.reshape(-1)[0] = weight_map.reshape(-1)[-1] = 1.0  # keep both classes weighted
    options = dict(
        weighting=draw(st.sampled_from(["seed", "pixel", "class"])),
        per_image=draw(st.booleans()),
        log=draw(st.booleans()),
        from_logits=draw(st.booleans()),
        weight_background=draw(st.sampled_from([0.1, 1.0, 3.0])),
        weight_foreground=draw(st.sampled_from([0.5, 1.0, 10.0])),
        implementation=draw(st.sampled_from(IMPLEMENTATIONS)),
    )
    return y, p, weight_map, options


def _as_input(p, options):
    """Probabilities as the loss takes them: logits (up to ±1e4 at 0 and 1) with from_logits."""
    if not options["from_logits"]:
        return p
    q = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    z = np.log(q / (1 - q))
    z[p == 0], z[p == 1] = -1e4, 1e4
    return z.astype(np.float32)


def _loss_and_grad(y, p, options, sample_weight=None, reduction="sum_over_batch_size"):
    loss_fn = wiou_ops.WeightedIoULoss(**options, reduction=reduction)
    if options["weighting"] == "seed":
        sample_weight = None  # the seed's sample weights are Keras's, outside the sums
    p = tf.constant(_as_input(p, options))
    with tf.GradientTape() as tape:
        tape.watch(p)
        loss = loss_fn(y, p, sample_weight=sample_weight)
    return loss.numpy(), tape.gradient(loss, p).numpy()


def _per_image_ok(y, options):
    # With per_image, every image needs both classes for the "perfect" property.
    return all(0 < img.sum() < img.size for img in y)


@given(cases())
def test_loss_is_non_negative_and_gradient_finite(case):
    y, p, weight_map, options = case
    loss, grad = _loss_and_grad(y, p, options, sample_weight=weight_map)
    assert np.all(loss >= 0.0)
    assert np.all(np.isfinite(grad))


@given(cases())
def test_perfect_prediction_costs_only_the_smoothing(case):
    y, _, _, options = case
    if options["per_image"] and not _per_image_ok(y, options):
        options = dict(options, per_image=False)
    loss, _ = _loss_and_grad(y, y.copy(), options)
    # p = y is clipped to [ε, 1-ε] (logits ±1e4: exact): each IoU is 1 - O(N·ε).
    assert np.all(loss <= 4 * y.size * 1e-7 * max(1.0, options["weight_foreground"],
                                                  options["weight_background"]))


@given(cases(), st.floats(0.05, 0.2))
def test_loss_grows_as_the_prediction_degrades(case, step):
    y, _, _, options = case
    losses = []
    for t in (0.0, step, 2 * step, 0.45):
        p = (y * (1.0 - t) + (1.0 - y) * t).astype(np.float32)
        losses.append(float(np.sum(_loss_and_grad(y, p, options)[0])))
    assert all(a < b for a, b in zip(losses, losses[1:])), losses


@given(cases())
def test_zero_weight_pixels_change_nothing(case):
    y, p, weight_map, options = case
    if options["weighting"] == "seed":
        options = dict(options, weighting="pixel")
    loss, grad = _loss_and_grad(y, p, options, sample_weight=weight_map)
    ignored = weight_map == 0
    y2, p2 = y.copy(), p.copy()
    y2[ignored] = 1.0 - y2[ignored]
    p2[ignored] = np.float32(0.5) * p2[ignored] + np.float32(0.25)
    loss2, grad2 = _loss_and_grad(y2, p2, options, sample_weight=weight_map)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    assert np.all(grad[ignored] == 0) and np.all(grad2[ignored] == 0)
    np.testing.assert_allclose(grad2[~ignored], grad[~ignored], rtol=1e-5,
                               atol=1e-6 * np.max(np.abs(grad)))


@given(cases())
def test_per_image_equals_a_loop_over_samples(case):
    y, p, weight_map, options = case
    options = dict(options, per_image=True)
    sample_weight = None if options["weighting"] == "seed" else weight_map
    loss_fn = wiou_ops.WeightedIoULoss(**options, reduction="none")
    p = _as_input(p, options)
    per_image = loss_fn(y, p, sample_weight=sample_weight).numpy()
    single = wiou_ops.WeightedIoULoss(**dict(options, per_image=False), reduction="none")
    for b in range(y.shape[0]):
        one = single(y[b:b + 1], p[b:b + 1],
                     sample_weight=None if sample_weight is None else sample_weight[b:b + 1])
        np.testing.assert_allclose(per_image[b], one.numpy().reshape(per_image[b].shape),
                                   rtol=1e-6)


# ---- Known relations -------------------------------------------------------------------

def _soft_inputs(shape=(4, 40, 40, 1), seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(shape) < 0.15).astype(np.float32)
    p = rng.uniform(0.01, 0.99, shape).astype(np.float32)  # inside the clip: p̂ = p
    return y, p


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_unweighted_one_minus_iou_is_dice_transformed(impl, per_image):
    """IoU = D/(2 - D) with D the soft Dice coefficient: keras.losses.Dice gives 1 - D."""
    y, p = _soft_inputs()
    ours = wiou_ops.weighted_iou_loss(y, p, weighting="pixel", log=False, per_image=per_image,
                                      implementation=impl, reduction="none")
    axis = (1, 2, 3) if per_image else None
    dice = 1.0 - keras.losses.Dice(axis=axis, reduction="none")(y, p).numpy().astype(np.float64)
    want = 1.0 - dice / (2.0 - dice)
    # Both smooth by ~1e-7 (ε here, backend.epsilon() in Dice) against sums of ~1e3.
    np.testing.assert_allclose(np.asarray(ours, np.float64), want, rtol=0, atol=2e-6)
    # Unit weights: the seed's map holds the same L at every pixel.
    seed_map = wiou_ops.weighted_iou_loss(y, p, log=False, per_image=per_image,
                                          implementation=impl, reduction="none").numpy()
    per_pixel = np.broadcast_to(np.reshape(ours, (-1, 1, 1, 1) if per_image else ()), y.shape)
    np.testing.assert_allclose(seed_map, per_pixel, rtol=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.2, 1.0), (0.5, 2.0), (3.0, 0.7)])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_constant_pixel_weights_are_a_tversky_index(impl, per_image, weights):
    """Pixel weighting with constant class weights, log=False, binary labels:

        I = w_f·TP,  U = w_f·(TP + FN) + w_b·FP      (TP = Σ y·p, FN = Σ y·(1-p), FP = Σ (1-y)·p)
        1 - L = (TP + ε/w_f) / (TP + FN + (w_b/w_f)·FP + ε/w_f)

    keras.losses.Tversky(alpha, beta) is 1 - TP / (TP + alpha·Σ y(1-p) + beta·Σ (1-y)p + ε_k):
    its alpha weights what is usually called the false negatives. So alpha = 1,
    beta = w_b/w_f, and with ε = w_f·ε_k the only difference left is ε_k in our
    numerator: L = K - ε_k·(1 - K)/TP exactly.
    """
    w_b, w_f = weights
    eps_k = keras.backend.epsilon()
    y, p = _soft_inputs(seed=1)
    ours = wiou_ops.weighted_iou_loss(
        y, p, weighting="pixel", weight_background=w_b, weight_foreground=w_f, log=False,
        epsilon=w_f * eps_k, per_image=per_image, implementation=impl, reduction="none")
    axis = (1, 2, 3) if per_image else None
    tversky = keras.losses.Tversky(alpha=1.0, beta=w_b / w_f, axis=axis, reduction="none")
    k = tversky(y, p).numpy().astype(np.float64)
    tp = np.sum(y.astype(np.float64) * p, axis=axis)
    want = k - eps_k * (1.0 - k) / tp
    np.testing.assert_allclose(np.asarray(ours, np.float64), want, rtol=2e-6)
