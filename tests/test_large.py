"""Float32 accumulation stays accurate: 1e8 elements, value within 1e-6 of float64."""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import oracle

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
    """The chunked oracle above and tests/oracle.py are the same formula."""
    y, p, _ = large_inputs
    ys, ps = y[:1].numpy(), p[:1].numpy()
    want, _ = oracle.seed_value_and_grad(ys, ps, weight_background=0.5, weight_foreground=1.5)
    got = float(wiou_ops.weighted_iou_loss(ys, ps, weight_background=0.5, weight_foreground=1.5))
    assert abs(got - want) / want <= 1e-6
