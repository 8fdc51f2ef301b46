"""Float32 accumulation stays accurate: 1e8 elements, value within 1e-6 of float64."""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from wiou_ops import oracle

N = 100_000_000  # 100 x 1000 x 1000 x 1


@pytest.fixture(scope="module")
def large_inputs():
    rng = np.random.default_rng(123)
    y = (rng.random(N, dtype=np.float32) < 0.05).astype(np.uint8).reshape(100, 1000, 1000, 1)
    p = rng.random(N, dtype=np.float32).reshape(y.shape)
    # The oracle in chunks keeps float64 copies small.
    inter = union = sum_y = 0.0
    lo, hi = float(np.float32(1e-7)), float(np.float32(1 - 1e-7))
    for yc, pc in zip(np.array_split(y.ravel(), 20), np.array_split(p.ravel(), 20)):
        yc, pc = yc.astype(np.float64), np.clip(pc.astype(np.float64), lo, hi)
        inter += np.sum(yc * pc)
        union += np.sum(yc + pc - yc * pc)
        sum_y += np.sum(yc)
    eps = lo
    log_iou = -np.log((inter + eps) / (union + eps))
    want = log_iou * (0.5 * (N - sum_y) + 1.5 * sum_y) / N
    return tf.constant(y), tf.constant(p), want


@pytest.mark.parametrize("impl", wiou_ops.available_implementations())
def test_value_at_1e8_elements_within_1e6_of_float64(large_inputs, impl):
    y, p, want = large_inputs
    got = float(wiou_ops.weighted_iou_loss(y, p, weight_background=0.5,
                                           weight_foreground=1.5, implementation=impl))
    assert abs(got - want) / abs(want) <= 1e-6, (got, want)


def test_oracle_helper_agrees_on_a_chunk(large_inputs):
    """The chunked oracle above and wiou_ops/oracle.py are the same formula."""
    y, p, _ = large_inputs
    ys, ps = y[:1].numpy(), p[:1].numpy()
    want, _ = oracle.seed_value_and_grad(ys, ps, weight_background=0.5, weight_foreground=1.5)
    got = float(wiou_ops.weighted_iou_loss(ys, ps, weight_background=0.5, weight_foreground=1.5))
    assert abs(got - want) / want <= 1e-6


# ---- 10^9 elements in float16: no overflow, float32 accumulation stays accurate ----------

N_1E9 = 1_000_000_000
PERIOD = 1000  # the inputs repeat a 1000-element pattern: exact float64 sums by multiplication


def _period_pattern():
    p = (np.arange(PERIOD) / PERIOD).astype(np.float16)  # 0 .. 0.999, rounded to float16
    y = (np.arange(PERIOD) % 20 == 0).astype(np.uint8)   # 5 % foreground
    return y, p


@pytest.mark.skipif("native" not in wiou_ops.available_implementations(),
                    reason="the native kernel is tested in test_native.py for being built")
def test_float16_predictions_at_1e9_elements_native():
    """3 GB of inputs, 2 GB of float16 gradient: the value within 1e-6 of float64 and a
    finite gradient equal to the float64 one under a 2^15 loss scale."""
    y_period, p_period = _period_pattern()
    y = tf.reshape(tf.tile(tf.constant(y_period), [N_1E9 // PERIOD]), [1000, 1000, 1000, 1])
    p = tf.reshape(tf.tile(tf.constant(p_period), [N_1E9 // PERIOD]), [1000, 1000, 1000, 1])
    want, want_grad = oracle.seed_value_and_grad(y_period, p_period, weight_background=0.5,
                                                 weight_foreground=1.5, upstream=2.0**15)
    # Sums scale with the repetitions, the IoU does not: the loss equals the period's, and
    # the gradient (∝ 1/N) is the period's divided by the repetitions.
    want_grad = want_grad / (N_1E9 // PERIOD)
    with tf.GradientTape() as tape:
        tape.watch(p)
        loss = wiou_ops.weighted_iou_loss(y, p, weight_background=0.5, weight_foreground=1.5,
                                          implementation="native")
    grad = tape.gradient(loss, p, output_gradients=tf.constant(2.0**15))
    del tape
    assert abs(float(loss) - want) <= 1e-6 * abs(want)
    assert grad.dtype == tf.float16
    assert bool(tf.reduce_all(tf.math.is_finite(grad)))
    first, last = grad[0, 0, :PERIOD, 0].numpy(), grad[-1, -1, -PERIOD:, 0].numpy()
    for part in (first, last):
        np.testing.assert_allclose(part.astype(np.float64), want_grad, rtol=2e-3,
                                   atol=1e-3 * np.max(np.abs(want_grad)))


def test_xla_blocked_sum_at_1e9_float16_elements():
    """The xla implementation's float32 accumulation at 10^9 float16 inputs, generated
    inside the compiled function (the sums' kernel, without 3 GB of inputs)."""
    from wiou_ops._kernels import xla

    @tf.function(jit_compile=True)
    def blocked_sum_of_pattern():
        i = tf.range(N_1E9, dtype=tf.int32)
        p = tf.cast(tf.cast(tf.math.floormod(i, PERIOD), tf.float32) / PERIOD, tf.float16)
        return xla.blocked_row_sums(tf.reshape(tf.cast(p, tf.float32), [1, -1]))[0]

    _, p_period = _period_pattern()
    want = np.sum(p_period.astype(np.float64)) * (N_1E9 // PERIOD)
    got = float(blocked_sum_of_pattern())
    assert np.isfinite(got) and abs(got - want) <= 1e-6 * want, (got, want)
