"""Mixed precision: 16-bit predictions consumed as they are, training parity with up-casting.

Under ``mixed_bfloat16`` and ``mixed_float16`` (Keras wraps the optimizer in a
LossScaleOptimizer) a small segmentation model trains with the loss on its
16-bit output and follows the same model whose output is first up-cast to
float32 (what a naive loss does): the same predictions, so the curves differ
only by the loss's own rounding. (How far either run is from a float32 model
is the 16-bit forward pass's cost, not the loss's: 1e-2 to 1.3e-1 on the CPUs
this ran on, the seed class and this loss alike.)
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import wiou_ops

STEPS = 12
# max |loss_16 - loss_upcast| / loss_upcast over the curve: the loss widens each 16-bit
# value to float32 exactly as the up-cast does (measured: 0, bit-identical curves).
CURVE_RTOL = {"mixed_bfloat16": 1e-6, "mixed_float16": 1e-6}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 24, 24, 3)).astype(np.float32)
    y = (x[..., :1] + 0.5 * x[..., 1:2] > 1.2).astype(np.float32)  # ~10 % foreground
    return x, y


def _train(policy, loss, upcast=False):
    """Loss curve, model and the loss's input dtype; ``upcast``: a float32 identity layer
    between the model's 16-bit output and the loss."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        layers = [
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(1, 1, activation="sigmoid"),
        ]
        if upcast:
            layers.append(keras.layers.Activation("linear", dtype="float32"))
        model = keras.Sequential(layers)
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
def test_mixed_precision_training_follows_upcasting(policy, options):
    reference, _, upcast_dtype = _train(policy, wiou_ops.WeightedIoULoss(**options),
                                        upcast=True)
    curve, model, output_dtype = _train(policy, wiou_ops.WeightedIoULoss(**options))
    assert upcast_dtype == "float32"
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
@pytest.mark.parametrize("shape", [(4, 64, 64, 1), (3, 37, 53, 1)], ids=["whole", "ragged"])
def test_xla_kernels_write_no_full_size_float32(pred_dtype, weighting, shape):
    """In the optimized HLO of the xla forward and backward, no float32 array of y_pred's
    size exists: no standalone up-cast of the 16-bit input, and no float32 terms written
    out before the sums (XLA:CPU fuses them into reductions of 32 numbers, the first
    level of the blocked sums; see _iou.SUM_BLOCK), also when the length is no multiple
    of 32.
    """
    from wiou_ops import _iou
    from wiou_ops._kernels import xla as _xla

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
        full_size = [line for line in lines if (_f32_elements(line) or 0) >= n]
        assert not full_size, full_size
