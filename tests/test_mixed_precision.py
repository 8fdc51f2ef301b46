"""Mixed precision: 16-bit predictions consumed as they are, training parity with float32.

Under ``mixed_bfloat16`` and ``mixed_float16`` (Keras wraps the optimizer in a
LossScaleOptimizer) a small segmentation model trains with the loss on its
16-bit output and follows the float32 run. Tolerances: the relative gap of the
loss curves stays within what the 16-bit forward pass itself costs (the same
model, seed and batches; bfloat16 keeps 8 significant bits, float16 11).
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import wiou_ops

STEPS = 12
# max |loss_16 - loss_32| / loss_32 over the curve (measured: bf16 ~1e-2, f16 ~1e-3).
CURVE_RTOL = {"mixed_bfloat16": 5e-2, "mixed_float16": 1e-2}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 24, 24, 3)).astype(np.float32)
    y = (x[..., :1] + 0.5 * x[..., 1:2] > 1.2).astype(np.float32)  # ~10 % foreground
    return x, y


def _train(policy, loss):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(1, 1, activation="sigmoid"),
        ])
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        x, y = _data()
        history = model.fit(x, y, batch_size=8, epochs=STEPS, shuffle=False, verbose=0)
        output_dtype = model.layers[-1].compute_dtype
        return np.asarray(history.history["loss"]), model, output_dtype
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("options", [dict(), dict(weighting="pixel", weight_foreground=4.0),
                                     dict(weighting="class", per_image=True, log=False)],
                         ids=["seed", "pixel", "class-per_image"])
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_follows_float32(policy, options):
    reference, _, _ = _train("float32", wiou_ops.WeightedIoULoss(**options))
    curve, model, output_dtype = _train(policy, wiou_ops.WeightedIoULoss(**options))
    assert output_dtype == policy.split("_")[1]  # the loss really got 16-bit predictions
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.all(np.isfinite(curve))
    assert curve[-1] < 0.9 * curve[0]  # it trains
    gap = np.max(np.abs(curve - reference) / reference)
    assert gap <= CURVE_RTOL[policy], (gap, curve, reference)


def _entry_instructions(hlo):
    entry = hlo[hlo.index("ENTRY"):]
    return entry[:entry.index("\n}")].splitlines()[1:]


def _f32_elements(line):
    match = re.match(r"\s*(?:ROOT )?%\S+ = f32\[([0-9,]*)\]", line)
    return None if match is None else int(np.prod([int(d) for d in match.group(1).split(",") if d]))


@pytest.mark.parametrize("weighting", ["seed", "class"])
@pytest.mark.parametrize("pred_dtype", ["float16", "bfloat16"])
def test_xla_kernels_never_up_cast_y_pred_as_a_whole(pred_dtype, weighting):
    """In the optimized HLO of the xla forward and backward, no float32 tensor of y_pred's
    size is computed from y_pred alone (a standalone up-cast); every use of the 16-bit
    input is fused with the arithmetic that consumes it.

    What XLA:CPU does materialize (it fuses no producer into its tree reductions)
    are the float32 *terms* of the sums, each from y and y_pred together: the
    README says so; the native kernel, the CPU default, reads each input once.
    """
    from wiou_ops import _iou, _xla

    shape = (4, 64, 64, 1)
    n = int(np.prod(shape))
    y = tf.zeros(shape, tf.uint8)
    p = tf.cast(tf.fill(shape, 0.5), pred_dtype)
    spec = _iou.SumsSpec(weighting=weighting)
    hlos = [
        _xla.XLA_SUMS.experimental_get_compiler_ir(y, p, None, spec)(stage="optimized_hlo"),
        _xla.XLA_GRADIENT.experimental_get_compiler_ir(y, p, None, tf.ones([1, 2]), spec)(
            stage="optimized_hlo"),
    ]
    for hlo in hlos:
        lines = _entry_instructions(hlo)
        pred_param = next(re.match(r"\s*(%\S+) = ", line).group(1) for line in lines
                          if "parameter(1)" in line)
        hlo_type = {"float16": "f16", "bfloat16": "bf16"}[pred_dtype]
        assert f"{pred_param} = {hlo_type}[" in hlo  # y_pred arrives as 16-bit
        up_casts = [line for line in lines
                    if (_f32_elements(line) or 0) >= n
                    and re.search(r"\((" + re.escape(pred_param) + r")\)", line)]
        assert not up_casts, up_casts
