"""Past 2^31 elements on TensorFlow: exact counts, value and gradient against float64.

Run as a script (``python -m tests.past_int32_tf``) by tests/test_past_int32.py, in a
fresh interpreter: its ~15 GB peak must not add to what a long test session holds.
It prints one JSON object, case -> "ok" or the failed check.


One image of 2^31 + 2^21 + 7 elements (uint8 labels, bfloat16 predictions: 6.4 GB,
plus 4.3 GB of gradient), so every element count, shape and per-image group size
is past int32. Before the counts were exact, ``native`` returned 0.96 here where
float64 says 1.44 (the count wrapped to int32), and ``xla`` failed on an int32
shape.
"""

import json
import math

import numpy as np
import tensorflow as tf

import wiou_ops

N = 2**31 + 2**21 + 7
CHUNK = 1 << 26
W_B, W_F = 0.5, 1.5
LO, HI = float(np.float32(1e-7)), float(np.float32(1 - 1e-7))  # the seed's float32 clip
EPS = LO
# Every bfloat16 bit pattern as a float64 number (NaN patterns as 0: they never occur
# here), and whether the clip keeps it.
BF16_VALUES = np.nan_to_num((np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
                            ).astype(np.float64)
IN_RANGE = (BF16_VALUES >= LO) & (BF16_VALUES <= HI)


def _chunks():
    """(y bool, p as bfloat16 bits) chunk by chunk: ~10 % foreground, p uniform in [0, 1)
    with some exact 1.0 (clipped above) and values below ε (clipped below)."""
    rng = np.random.default_rng(2024)
    for start in range(0, N, CHUNK):
        u = rng.random(min(N, start + CHUNK) - start, dtype=np.float32).view(np.uint32)
        y = (u & 0xFFFF) < 6554  # the low bits: independent of p's
        bits = (u >> 16).astype(np.uint16)
        bits[::9973] = 0x3F80  # 1.0
        yield y, bits


def make_inputs():
    """(y_true, y_pred, float64 sums): the oracle counts every (label, bfloat16 value)
    pair chunk by chunk, so its sums are exact products of counts and values."""
    counts = np.zeros(2 << 16, np.int64)  # [y · 2^16 + bits]
    labels, predictions = [], []
    for y, bits in _chunks():
        counts += np.bincount(bits + (y.astype(np.int64) << 16), minlength=2 << 16)
        labels.append(tf.constant(y.astype(np.uint8)))
        predictions.append(tf.constant(bits))
    y_true = tf.reshape(tf.concat(labels, 0), [1, N])
    del labels
    y_pred = tf.reshape(tf.bitcast(tf.concat(predictions, 0), tf.bfloat16), [1, N])
    del predictions
    background, foreground = counts[: 1 << 16], counts[1 << 16:]
    p_hat = np.clip(BF16_VALUES, LO, HI)
    n1 = int(foreground.sum())
    inter = math.fsum(foreground * p_hat)
    union = n1 + math.fsum(background * p_hat)
    assert int(counts.sum()) == N and 0 < n1 < N
    return y_true, y_pred, (inter, union, n1)


def _oracle(inter, union, n1):
    """Seed weighting's value and its two non-zero gradient values (y = 0, y = 1)."""
    mean_weight = (W_B * (N - n1) + W_F * n1) / N
    value = -math.log((inter + EPS) / (union + EPS)) * mean_weight
    return value, mean_weight / (union + EPS), -mean_weight / (inter + EPS)


def _value_and_grad(y_true, y_pred, implementation, mode, per_image):
    def run(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = wiou_ops.weighted_iou_loss(
                y_true, y_pred, weight_background=W_B, weight_foreground=W_F,
                per_image=per_image, implementation=implementation)
        return loss, tape.gradient(loss, y_pred)

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "jit")
    return run(y_true, y_pred)


def _gradient_values(y_true, y_pred, grad):
    """The gradient's value where the clip keeps p, for y = 0 and y = 1, after checking
    chunk by chunk that it is 0 wherever the clip cuts p and one value per label elsewhere."""
    values = {}
    for start in range(0, N, CHUNK):
        end = min(N, start + CHUNK)
        g = tf.bitcast(grad[0, start:end], tf.uint16).numpy()
        y = y_true[0, start:end].numpy().astype(bool)
        kept = IN_RANGE[tf.bitcast(y_pred[0, start:end], tf.uint16).numpy()]
        assert not np.any((g & 0x7FFF) * ~kept), "a clipped element got a gradient"
        for label, where in ((0, kept & ~y), (1, kept & y)):
            if label not in values:
                values[label] = g[np.argmax(where)]
            assert not np.any((g != values[label]) & where), f"y={label}: several values"
    return BF16_VALUES[values[0]], BF16_VALUES[values[1]]


def _assert_close_to(got, want):
    """As close to float64 as rounding to bfloat16 allows, give or take 1e-5."""
    rounded = float(tf.cast(tf.cast(want, tf.bfloat16), tf.float64))
    assert abs(got - want) <= abs(rounded - want) + 1e-5 * abs(want), (got, want)


# (implementation, mode, per_image); xla first, then native.
CASES = [("xla", "eager", False), ("auto", "jit", True),
         ("native", "eager", False), ("native", "tf.function", True)]


def check(inputs, implementation, mode, per_image):
    """Raises AssertionError unless value and gradient match float64."""
    y_true, y_pred, sums = inputs
    loss, grad = _value_and_grad(y_true, y_pred, implementation, mode, per_image)
    assert wiou_ops.last_implementation() == ("xla" if implementation == "auto" else
                                              implementation), wiou_ops.last_implementation()
    value, want_background, want_foreground = _oracle(*sums)
    assert abs(float(loss) - value) <= 1e-6 * value, ("value", float(loss), value)
    assert grad.dtype == tf.bfloat16 and grad.shape == (1, N), (grad.dtype, grad.shape)
    got_background, got_foreground = _gradient_values(y_true, y_pred, grad)
    _assert_close_to(got_background, want_background)
    _assert_close_to(got_foreground, want_foreground)


def case_id(implementation, mode, per_image):
    return f"{implementation}-{mode}-{'per_image' if per_image else 'batch'}"


def main():
    inputs = make_inputs()
    results = {}
    for case in CASES:
        if case[0] == "native" and "native" not in wiou_ops.available_implementations():
            results[case_id(*case)] = "native kernel not built"
            continue
        try:
            check(inputs, *case)
            results[case_id(*case)] = "ok"
        except AssertionError as err:
            results[case_id(*case)] = f"{type(err).__name__}: {err}"
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
