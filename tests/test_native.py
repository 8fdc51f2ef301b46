"""The native CPU kernel: determinism, fallbacks, dispatch rules.

Its values and gradients are checked against the float64 oracle and the seed
class in test_parity.py and test_dropin.py, like every implementation.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops import _iou
from wiou_ops._kernels import native as _native

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_native = pytest.mark.skipif(
    "native" not in wiou_ops.available_implementations(),
    reason=f"native op not built: {_native.UNAVAILABLE_REASON}",
)


def _python(code, env=None, cwd=ROOT):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_native_is_built_by_make():
    """`make test` builds the op: its absence here is a build failure, not a skip."""
    assert "native" in wiou_ops.available_implementations(), _native.UNAVAILABLE_REASON


@needs_native
def test_bit_identical_across_thread_counts():
    code = """
        import sys, hashlib
        import numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
        import wiou_ops
        rng = np.random.default_rng(0)
        shape = (3, 517, 389, 1)  # 603,339 elements: many blocks and a ragged tail
        y = tf.constant(rng.random(shape) < 0.07)
        p = tf.constant(rng.random(shape, dtype=np.float32))
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = wiou_ops.weighted_iou_loss(y, p, implementation="native")
        grad = tape.gradient(loss, p)
        print(hashlib.sha256(loss.numpy().tobytes() + grad.numpy().tobytes()).hexdigest())
    """
    digests = set()
    for threads in (1, 2, 4, 7):
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(threads)],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), cwd=ROOT,
            capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1, digests


@needs_native
def test_repeated_calls_reuse_buffer_safely():
    """The gradient buffer is recycled only when free: held results never change."""
    y_true, y_pred = helpers.make_inputs((4, 64, 64, 1), "random")
    loss = wiou_ops.WeightedIoULoss(implementation="native")
    held = []
    for scale in (1.0, 2.0, 3.0):
        _, grad = helpers.value_and_grad(loss, y_true, y_pred, scale)
        held.append(grad)
    base = helpers.to_f64(held[0])
    for scale, grad in zip((1.0, 2.0, 3.0), held):
        np.testing.assert_allclose(helpers.to_f64(grad), scale * base, rtol=1e-6)


def test_disable_variable_turns_native_off():
    out = _python("""
        import warnings
        warnings.simplefilter("error")
        import numpy as np, wiou_ops
        print(wiou_ops.available_implementations())
        wiou_ops.weighted_iou_loss(np.zeros((1, 4, 4, 1), "float32"), np.full((1, 4, 4, 1), 0.5, "float32"))
        print(wiou_ops.last_implementation())
    """, env={"WIOU_OPS_DISABLE_NATIVE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['xla', 'graph']", "xla"]


def test_missing_library_warns_once_and_falls_back(tmp_path):
    """A package without the library or the sources to build one (test_native_build.py
    covers the builds)."""
    shutil.copytree(ROOT / "wiou_ops", tmp_path / "wiou_ops",
                    ignore=shutil.ignore_patterns(_native.native_build.LIBRARY_NAME,
                                                  "__pycache__"))
    out = _python("""
        import numpy as np, wiou_ops
        import wiou_ops.losses
        print(wiou_ops.available_implementations())
        wiou_ops.weighted_iou_loss(np.zeros((1, 4, 4, 1), "float32"), np.full((1, 4, 4, 1), 0.5, "float32"))
        print(wiou_ops.last_implementation())
    """, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['xla', 'graph']", "xla"]
    assert out.stderr.count(
        "RuntimeWarning: wiou_ops: the native CPU kernel is not available: this package has "
        "neither a native CPU kernel nor the sources to build one") == 1


def test_library_for_another_tensorflow_is_refused_before_loading(tmp_path):
    (tmp_path / _native.native_build.LIBRARY_NAME).write_bytes(
        b"\x7fELF not a real library WIOU_BUILT_FOR_TENSORFLOW=2.99.0\n")
    library, found, reason = _native.load(tmp_path)
    assert library is None and found is None
    assert "built for TensorFlow 2.99.0" in reason and tf.__version__ in reason


def test_unstamped_or_missing_library(tmp_path):
    assert "neither a native CPU kernel nor the sources" in _native.load(tmp_path)[2]
    (tmp_path / _native.native_build.LIBRARY_NAME).write_bytes(b"\x7fELF garbage")
    assert "no TensorFlow version stamp" in _native.load(tmp_path)[2]


@needs_native
def test_native_refuses_xla_context_and_unsupported_dtypes():
    y = np.zeros((1, 8, 8, 1), np.float32)
    p = np.full((1, 8, 8, 1), 0.5, np.float32)
    loss = wiou_ops.WeightedIoULoss(implementation="native")
    with pytest.raises(ValueError, match="XLA"):
        tf.function(loss, jit_compile=True)(y, p)
    with pytest.raises(TypeError, match="float64"):
        loss(y, p.astype(np.float64))
    # auto sends what native cannot take to xla
    wiou_ops.weighted_iou_loss(y, p.astype(np.float64))
    assert wiou_ops.last_implementation() == "xla"
    tf.function(wiou_ops.WeightedIoULoss(), jit_compile=True)(y, p)
    assert wiou_ops.last_implementation() == "xla"


@needs_native
def test_stream_read_probe_sums():
    x = np.random.default_rng(0).random(100_003).astype(np.float32)
    got = float(_native.stream_read(tf.constant(x)))
    assert got == pytest.approx(float(np.sum(x, dtype=np.float64)), rel=1e-5)


@needs_native
def test_multiclass_loops_probe():
    """The benchmark's loops alone: without the IoU terms the backward pass writes
    softmax(logits); with them, the softmax VJP for the fixed coefficients (1e-7, 1e-7):
    g_c = 1e-7·(y_c + 1), dz = p·(g - Σ_k g_k·p_k). Ragged pixel count, C = 7."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 7, (3, 37, 29)).astype(np.uint8)
    z = rng.normal(0.0, 3.0, (3, 37, 29, 7)).astype(np.float32)
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    got = _native.multiclass_loops(tf.constant(ids), tf.constant(z), iou_terms=False).numpy()
    assert np.max(np.abs(got - p)) <= 1e-6
    g = 1e-7 * (np.eye(7)[ids] + 1.0)
    want = p * (g - np.sum(g * p, -1, keepdims=True))
    got = _native.multiclass_loops(tf.constant(ids), tf.constant(z)).numpy()
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


# --- The backward from label masks (2 bits per element, kernels/wiou_math_api.h). --------

def _native_value_and_grad(write_masks, y_true, y_pred, spec, upstream):
    impl = _native.make(_native._library, write_masks=write_masks)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        sums = impl.sums(y_true, y_pred, None, spec)
        loss = tf.reduce_sum(_iou.group_losses(sums, spec, True, tf.math.log) * upstream)
    return loss, tape.gradient(loss, y_pred)


@needs_native
@pytest.mark.parametrize("labels", ["float32", "uint8", "bool", "smoothed", "one_soft"])
@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("weighting,per_image", [("seed", False), ("pixel", True),
                                                 ("class", False), ("class", True)])
@pytest.mark.parametrize("shape", [(3, 29, 31, 1), (2, 70, 70, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_label_mask_backward_is_bit_identical(shape, weighting, per_image, pred_dtype, labels):
    """Groups of 4,900 elements: blocks and thread spans start inside mask words."""
    y_true, y_pred = helpers.make_inputs(shape, "random", pred_dtype)
    if labels in ("uint8", "bool"):
        y_true = tf.cast(y_true, labels)
    elif labels == "smoothed":  # label smoothing 0.1: no label is 0 or 1
        y_true = y_true * 0.9 + 0.05
    elif labels == "one_soft":  # one soft label, inside the clip range, in the last image
        index = [[shape[0] - 1, 3, 4, 0]]
        y_true = tf.tensor_scatter_nd_update(y_true, index, [0.5])
        y_pred = tf.tensor_scatter_nd_update(y_pred, index, tf.constant([0.3], pred_dtype))
    spec = _iou.SumsSpec(weighting=weighting, per_image=per_image, weight_background=0.5,
                         weight_foreground=1.5)
    upstream = 1.7 * helpers.upstream_scale(pred_dtype, int(np.prod(shape)))
    v1, g1 = _native_value_and_grad(True, y_true, y_pred, spec, upstream)
    v2, g2 = _native_value_and_grad(False, y_true, y_pred, spec, upstream)
    assert v1.numpy() == v2.numpy()
    np.testing.assert_array_equal(tf.bitcast(g1, tf.uint16 if g1.dtype.size == 2 else tf.uint32),
                                  tf.bitcast(g2, tf.uint16 if g2.dtype.size == 2 else tf.uint32))
    _, masks, complete = _native._library.wiou_iou_sums(
        y_true, y_pred, tf.zeros([0]), write_masks=True, **_native._attrs(spec))
    hard = labels not in ("smoothed", "one_soft")
    assert bool(complete) == hard
    groups = shape[0] if per_image else 1
    assert masks.shape == [groups * -(-int(np.prod(shape)) // groups // 16)]


@needs_native
def test_no_label_masks_with_a_weight_map_or_logits():
    y_true, y_pred = helpers.make_inputs((2, 20, 20, 1), "random")
    spec = _iou.SumsSpec(weighting="pixel")
    _, masks, complete = _native._library.wiou_iou_sums(
        y_true, y_pred, tf.ones_like(y_pred), write_masks=True, **_native._attrs(spec))
    assert masks.shape == [0] and not bool(complete)
    logit_spec = _iou.SumsSpec(from_logits=True)
    _, masks, complete = _native._library.wiou_iou_sums(
        y_true, y_pred, tf.zeros([0]), write_masks=True, **_native._attrs(logit_spec))
    assert masks.shape == [0] and not bool(complete)


@needs_native
def test_gradient_op_rejects_masks_that_do_not_fit():
    y_true, y_pred = helpers.make_inputs((2, 20, 20, 1), "random")
    spec = _iou.SumsSpec()
    coef = tf.constant([[-0.1, 0.01]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="label masks"):
        _native._library.wiou_iou_sums_grad(y_true, y_pred, tf.zeros([0]), coef,
                                            tf.zeros([3], tf.uint32), tf.constant(True),
                                            **_native._attrs(spec))


@needs_native
@pytest.mark.parametrize("implementation", ["native", "xla"])
@pytest.mark.parametrize("weighting", ["seed", "pixel", "class"])
def test_smoothed_labels_match_the_float64_oracle(weighting, implementation):
    """Label smoothing (y in {0.05, 0.95}): the backward must read y and p."""
    from wiou_ops import oracle

    y_true, y_pred = helpers.make_inputs((3, 41, 43, 1), "random")
    y_true = y_true * 0.9 + 0.05
    loss = wiou_ops.WeightedIoULoss(0.5, 1.5, weighting=weighting,
                                    implementation=implementation)
    value, grad = helpers.value_and_grad(loss, y_true, y_pred, 1.3)
    want, want_grad = oracle.iou_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred), weighting=weighting,
        weight_background=0.5, weight_foreground=1.5, upstream=1.3)
    assert helpers.rel_err(value, want) <= helpers.VALUE_RTOL
    assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL["float32"]


@needs_native
def test_label_masks_are_written_only_for_a_gradient(monkeypatch):
    """A forward-only call (Keras's evaluation) does not pay for the masks; under a tape,
    eagerly or traced in a tf.function, the forward writes them."""
    calls = []
    library = _native._library

    class Spy:
        def __getattr__(self, name):
            return getattr(library, name)

        def wiou_iou_sums(self, *args, **kwargs):
            calls.append(kwargs["write_masks"])
            return library.wiou_iou_sums(*args, **kwargs)

    from wiou_ops._backends import tensorflow as tf_backend

    monkeypatch.setitem(tf_backend.IMPLEMENTATIONS, "native", _native.make(Spy()))
    y_true, y_pred = helpers.make_inputs((2, 16, 16, 1), "random")
    # An epsilon of its own: no graph traced by another test is reused.
    loss = wiou_ops.WeightedIoULoss(epsilon=1.2345e-7, implementation="native")
    loss(y_true, y_pred)
    helpers.value_and_grad(loss, y_true, y_pred, 1.0)

    @tf.function
    def train_like(y, p):
        return helpers.value_and_grad(loss, y, p, 1.0)

    train_like(y_true, y_pred)
    tf.function(loss)(y_true, y_pred)
    assert calls == [False, True, True, False]

    # Keras: model.fit's train step records, model.evaluate's test step does not.
    import keras

    calls.clear()
    model = keras.Sequential([keras.Input((16, 16, 1)),
                              keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="sgd", loss=loss)
    model.fit(y_pred, y_true, epochs=1, batch_size=2, verbose=0)
    model.evaluate(y_pred, y_true, batch_size=2, verbose=0)
    assert calls == [True, False]


def test_info_reports_the_installation():
    """python -m wiou_ops.info: versions, implementations, the kernel, its TensorFlow and
    instruction-set level, the cache."""
    out = subprocess.run([sys.executable, "-m", "wiou_ops.info"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    assert lines["wiou_ops"] == wiou_ops.__version__
    assert lines["tensorflow"] == tf.__version__ and lines["keras_backend"] == "tensorflow"
    assert lines["implementations"] == str(wiou_ops.available_implementations())
    if "native" in wiou_ops.available_implementations():
        assert lines["native_built_for_tensorflow"] == tf.__version__
        assert lines["native_library"] == str(_native.FOUND.path)
        assert lines["native_origin"].startswith(
            {"package": "shipped in the package", "cache": "user cache",
             "built": "user cache"}[_native.FOUND.origin])
        assert lines["native_isa"] == _native.isa()[0] == lines["cpu_isa"]
    else:
        assert lines["native_unavailable"] == _native.UNAVAILABLE_REASON
    assert lines["native_cache"] == str(_native.native_library.cache_root())
