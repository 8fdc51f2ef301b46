"""The TensorFlow backend's choice of kernel: what `auto` picks, and the XLA-context check."""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops import oracle
from wiou_ops._backends import tensorflow as tf_backend


def test_xla_context_detection():
    seen = {}

    def probe(x, key):
        seen[key] = tf_backend.in_xla_context()
        return x

    probe(tf.constant(1.0), "eager")
    tf.function(lambda x: probe(x, "graph"))(tf.constant(1.0))
    tf.function(lambda x: probe(x, "jit"), jit_compile=True)(tf.constant(1.0))
    outer = tf.function(lambda x: tf.function(lambda y: probe(y, "nested"))(x), jit_compile=True)
    outer(tf.constant(1.0))
    assert seen == {"eager": False, "graph": False, "jit": True, "nested": True}


def test_available_and_recorded():
    assert set(wiou_ops.available_implementations()) >= {"xla", "graph"}
    y = np.zeros((1, 4, 4, 1), np.float32)
    p = np.full((1, 4, 4, 1), 0.3, np.float32)
    for impl in wiou_ops.available_implementations():
        wiou_ops.weighted_iou_loss(y, p, implementation=impl)
        assert wiou_ops.last_implementation() == impl
    wiou_ops.weighted_iou_loss(y, p)
    assert wiou_ops.last_implementation() == helpers.expected_auto(in_xla=False)


@pytest.mark.skipif("native" not in wiou_ops.available_implementations(),
                    reason="the native kernel is tested in test_native.py for being built")
def test_native_inside_a_users_jit_compile_is_refused_by_name():
    y_true, y_pred = helpers.make_inputs((2, 8, 8, 1), "random")
    step = tf.function(lambda y, p: wiou_ops.weighted_iou_loss(y, p, implementation="native"),
                       jit_compile=True)
    with pytest.raises(ValueError, match="'native' cannot run inside an XLA computation"):
        step(y_true, y_pred)


def test_xla_is_compiled_for_the_platform_the_step_runs_on():
    """The device the predictions are made on picks ``xla``'s program (under a TPUStrategy
    the strategy does): TPU and GPU get the inputs' own layout and staged sums, CPU its
    (G, n/32, 32) blocks. No such device is needed to trace."""
    from wiou_ops._kernels import xla

    loss = wiou_ops.WeightedIoULoss(0.5, 1.5)
    seen, programs = {}, {}

    def step_on(device, platform):
        @tf.function(jit_compile=True)
        def step(y_true, y_pred):
            with tf.device(device):
                y_true, y_pred = tf.identity(y_true), tf.identity(y_pred)
                seen[platform] = (tf_backend.compiled_platform(y_pred),
                                  tf_backend.select("auto", y_true, y_pred))
                return loss(y_true, y_pred)
        return step

    spec = tf.TensorSpec((4, 64, 64, 1), tf.float32)
    for device, platform in (("/device:TPU:0", "tpu"), ("/device:GPU:0", "gpu"),
                             ("/device:CPU:0", "cpu")):
        programs[platform] = step_on(device, platform).experimental_get_compiler_ir(
            spec, spec)(stage="hlo")
    assert seen == {p: (p, xla.XLA[p]) for p in ("tpu", "gpu", "cpu")}
    assert "f32[1,512,32]" in programs["cpu"]
    for platform in ("tpu", "gpu"):
        assert ",32]" not in programs[platform]
        assert "f32[4,64,64,1]" in programs[platform]  # read in its own shape
    # No GPU here: an unplaced tensor computes on the CPU.
    assert tf_backend.compiled_platform(tf.constant(1.0)) == "cpu"


@pytest.mark.parametrize("impl", helpers.XLA_FOR_ACCELERATORS)
@pytest.mark.parametrize("per_image", [False, True])
def test_accelerator_program_with_axes_unknown_at_trace_time(impl, per_image, monkeypatch):
    """A Keras step traces the batch axis as None (and a fully convolutional model may
    leave the spatial axes None): the staged sums sum those axes in a last stage."""
    impl = helpers.use_implementation(impl, monkeypatch)
    y_true, y_pred = helpers.make_inputs((5, 67, 71, 1), "random", seed=4)
    loss = wiou_ops.WeightedIoULoss(0.3, 2.0, weighting="pixel", per_image=per_image,
                                    implementation=impl)
    want, want_grad = oracle.iou_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred), weighting="pixel",
        per_image=per_image, weight_background=0.3, weight_foreground=2.0)
    for shape in ((None, 67, 71, 1), (None, None, None, 1)):
        spec = tf.TensorSpec(shape, tf.float32)

        @tf.function(input_signature=[spec, spec], jit_compile=True)
        def step(y, p):
            with tf.GradientTape() as tape:
                tape.watch(p)
                value = loss(y, p)
            return value, tape.gradient(value, p)

        value, grad = step(y_true, y_pred)
        assert helpers.rel_err(value, want) <= helpers.VALUE_RTOL, shape
        assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL["float32"], shape
