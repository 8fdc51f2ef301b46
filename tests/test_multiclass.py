"""MultiClassIoULoss on every implementation against the float64 oracle
(``wiou_ops.oracle.multiclass_value_and_grad``), whose gradient is itself checked by
finite differences here.

Grid: C in {2, 3, 7, 19} x label kinds (sparse uint8 / int32 ids, one-hot float32) x
option sets (softmax / sigmoid / clipped probabilities, per_image, log, ignore_class,
absent_classes, class weights; a pairwise cover) x sample weights (none, per pixel, per
image) x y_pred dtypes x implementations (native, xla, graph, keras.ops, JAX), then
eager / tf.function / inside a user's jit_compile, the C = 2 cross-check with
WeightedIoULoss(weighting="class"), errors, serialization, model.fit parity with a
naive keras.ops loss, and one input of 1e8 elements.
"""

import itertools
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops import _multiclass, oracle
from wiou_ops._backends import ops as ops_backend
from wiou_ops._backends import tensorflow as tf_backend
from wiou_ops._common.options import validate_multiclass_options
from wiou_ops.bench import multiclass as multiclass_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
TF_IMPLEMENTATIONS = list(tf_backend.MULTICLASS_IMPLEMENTATIONS)
CLASSES = [2, 3, 7, 19]
# Value: relative error; gradient: max-abs error over max-abs (16-bit: the gradient is
# rounded to y_pred's dtype, and the inputs are 16-bit numbers the oracle reads as is).
VALUE_RTOL = {"float32": 1e-6, "float16": 2e-6, "bfloat16": 2e-6}
GRAD_RTOL = {"float32": 1e-5, "float16": 1e-3, "bfloat16": 8e-3}

# (activation, per_image, log, ignore_class, absent_classes): every pair of the first
# four values appears together; "void" is id 255 (sparse) or channel 1 (one-hot).
OPTION_SETS = [
    ("softmax", False, True, None, "include"),
    ("softmax", True, False, "void", "skip"),
    ("sigmoid", False, False, "void", "include"),
    ("sigmoid", True, True, None, "skip"),
    ("clip", False, True, "void", "skip"),
    ("clip", True, False, None, "include"),
]
LABELS = ["sparse-uint8", "sparse-int32", "onehot"]
SAMPLE_WEIGHTS = [None, "pixel", "image"]


def make_case(classes, labels, activation, ignore, sample_weight, pred_dtype="float32",
              shape=(2, 7, 13), seed=0):
    """(y_true, y_pred, sample_weight, options, oracle kwargs) for one grid point."""
    rng = np.random.default_rng(seed + classes)
    sparse = labels.startswith("sparse")
    ids = rng.integers(0, classes, shape)
    ids.reshape(-1)[: 3] = 0  # class 0 present everywhere; the last class absent in image 1
    ids[1][ids[1] == classes - 1] = 0
    if activation == "softmax" or activation == "sigmoid":
        z = rng.normal(0.0, 3.0, shape + (classes,)).astype(np.float32)
        z.reshape(-1)[:2] = [1e4, -1e4]
    else:
        z = rng.dirichlet(np.ones(classes), shape).astype(np.float32)
        z.reshape(-1)[:4] = [0.0, 1.0, 1e-7, 1.0 - 1e-7]
    y_pred = tf.cast(tf.constant(z), pred_dtype)
    options = dict(sparse_y_true=sparse, from_logits=activation != "clip",
                   multi_label=activation == "sigmoid",
                   class_weights=list(np.round(rng.uniform(0.2, 2.0, classes), 3)))
    if ignore == "void":
        if sparse:
            ids.reshape(-1)[5:9] = 255
            options["ignore_class"] = 255
        else:
            options["ignore_class"] = 1
    if sparse:
        y_true = tf.constant(ids.astype(labels.split("-")[1]))
        y_numpy = ids
    else:
        y_numpy = (ids[..., None] == np.arange(classes)).astype(np.float32)
        if options.get("multi_label"):
            y_numpy = np.maximum(y_numpy, rng.random(y_numpy.shape) < 0.2).astype(np.float32)
        y_true = tf.constant(y_numpy)
    weight, oracle_weights = None, {}
    if sample_weight == "pixel":
        w = rng.uniform(0.0, 2.0, shape).astype(np.float32)
        w[rng.random(shape) < 0.1] = 0.0
        weight, oracle_weights = tf.constant(w), dict(weight_map=w)
    elif sample_weight == "image":
        w = rng.uniform(0.5, 2.0, shape[:1]).astype(np.float32)
        weight = tf.constant(w)
    return y_true, y_pred, weight, options, (y_numpy, oracle_weights)


def oracle_for(y_numpy, y_pred, options, per_image, weight, oracle_weights, upstream=1.0):
    kwargs = dict(options, per_image=per_image, upstream=upstream, **oracle_weights)
    if weight is not None and not oracle_weights:  # a (B,) weight
        if per_image:
            kwargs["group_weight"] = weight.numpy()
        else:  # varies inside the batch's one group: a weight map
            kwargs["weight_map"] = np.broadcast_to(
                weight.numpy().reshape(-1, 1, 1), y_pred.shape[:-1])
    return oracle.multiclass_value_and_grad(y_numpy, tf.cast(y_pred, tf.float64).numpy(),
                                            **kwargs)


def value_and_grad(loss, y_true, y_pred, weight, mode="eager", upstream=1.0):
    def run(y_true, y_pred, weight):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred, weight)
            scaled = value * upstream
        return value, tape.gradient(scaled, y_pred)

    if mode == "function":
        run = tf.function(run)
    elif mode == "jit":
        run = tf.function(run, jit_compile=True)
    value, grad = run(y_true, y_pred, weight)
    return float(value), tf.cast(grad, tf.float64).numpy()


def assert_close(value, grad, want_value, want_grad, pred_dtype, what):
    value_error = abs(value - want_value) / max(abs(want_value), 1e-30)
    scale = np.max(np.abs(want_grad))
    grad_error = np.max(np.abs(grad - want_grad)) / scale if scale else np.max(np.abs(grad))
    assert value_error <= VALUE_RTOL[pred_dtype], f"{what}: value error {value_error:.3g}"
    assert grad_error <= GRAD_RTOL[pred_dtype], f"{what}: gradient error {grad_error:.3g}"
    return value_error, grad_error


def _loss_scale(y_numpy, y_pred, options, per_image, weight, oracle_weights):
    """An upstream factor bringing the largest gradient near 1 (as a loss scale does in
    mixed-precision training), so that 16-bit gradients are normal numbers."""
    _, grad = oracle_for(y_numpy, y_pred, options, per_image, weight, oracle_weights)
    return 1.0 / max(float(np.max(np.abs(grad))), 1e-30)


GRID = [
    # multi_label (sigmoid) needs one channel per class: multi-hot labels there.
    (classes, "onehot" if option_set[0] == "sigmoid" else labels, option_set, sample_weight)
    for classes in CLASSES
    for labels, option_set, sample_weight in itertools.islice(
        itertools.product(LABELS, OPTION_SETS, SAMPLE_WEIGHTS), classes % 5, None, 5)
]


@pytest.mark.parametrize("implementation", TF_IMPLEMENTATIONS + helpers.XLA_FOR_ACCELERATORS)
@pytest.mark.parametrize("classes,labels,option_set,sample_weight", GRID)
def test_grid_matches_float64_oracle(implementation, classes, labels, option_set,
                                     sample_weight, monkeypatch):
    implementation = helpers.use_implementation(implementation, monkeypatch)
    activation, per_image, log, ignore, absent = option_set
    pred_dtype = ("float32", "bfloat16", "float16")[classes % 3]
    y_true, y_pred, weight, options, (y_numpy, oracle_weights) = make_case(
        classes, labels, activation, ignore, sample_weight, pred_dtype)
    options = dict(options, log=log, absent_classes=absent)
    upstream = 1.3
    if pred_dtype != "float32":
        upstream = _loss_scale(y_numpy, y_pred, options, per_image, weight, oracle_weights)
    want = oracle_for(y_numpy, y_pred, options, per_image, weight, oracle_weights, upstream)
    loss = wiou_ops.MultiClassIoULoss(implementation=implementation, per_image=per_image,
                                      **options)
    value, grad = value_and_grad(loss, y_true, y_pred, weight, upstream=upstream)
    assert wiou_ops.last_implementation() == implementation
    assert_close(value, grad, *want, pred_dtype, f"{implementation} {labels} {option_set}")


@pytest.mark.parametrize("classes,labels,option_set,sample_weight", GRID[::2])
def test_keras_ops_kernel_matches_float64_oracle(classes, labels, option_set, sample_weight):
    """The keras.ops kernel (PyTorch and other backends), run here on TensorFlow ops."""
    activation, per_image, log, ignore, absent = option_set
    y_true, y_pred, weight, options, (y_numpy, oracle_weights) = make_case(
        classes, labels, activation, ignore, sample_weight)
    options = dict(options, log=log, absent_classes=absent, per_image=per_image)
    want = oracle_for(y_numpy, y_pred, {k: v for k, v in options.items() if k != "per_image"},
                      per_image, weight, oracle_weights)
    checked = validate_multiclass_options(**options)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        name, value = ops_backend.compute_multiclass(y_true, y_pred, weight, None, checked)
    grad = tape.gradient(value, y_pred).numpy()
    assert name == "ops"
    assert_close(float(value), grad, *want, "float32", f"ops {labels} {option_set}")


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("classes", [3, 19])
def test_execution_modes(mode, classes):
    """auto in eager, tf.function and inside a user's jit_compile (there: xla)."""
    y_true, y_pred, weight, options, (y_numpy, oracle_weights) = make_case(
        classes, "sparse-uint8", "softmax", "void", "pixel")
    want = oracle_for(y_numpy, y_pred, options, True, weight, oracle_weights)
    loss = wiou_ops.MultiClassIoULoss(per_image=True, **options)
    value, grad = value_and_grad(loss, y_true, y_pred, weight, mode=mode)
    assert_close(value, grad, *want, "float32", mode)
    expected = "xla" if mode == "jit" or "native" not in TF_IMPLEMENTATIONS else "native"
    assert wiou_ops.last_implementation() == expected


@pytest.mark.parametrize("ids", ["sparse-int32", "sparse-uint8"])
@pytest.mark.parametrize("option_set", OPTION_SETS[:4])
def test_jax_kernel_matches_float64_oracle(option_set, ids, layout):
    """The JAX kernel's custom_vjp (Keras on JAX and wiou_ops.jax use it), in this
    process, in each of its programs (``layout``): sums -> group losses in JAX, gradient by
    jax.grad. uint8 ids are compared as uint8 (255 is the void id)."""
    jax = pytest.importorskip("jax")
    from wiou_ops._kernels import jax as jax_kernel

    activation, per_image, log, ignore, absent = option_set
    labels = "onehot" if activation == "sigmoid" else ids
    y_true, y_pred, _, options, (y_numpy, oracle_weights) = make_case(
        7, labels, activation, ignore, "pixel")
    options = dict(options, log=log, absent_classes=absent, per_image=per_image)
    spec = _multiclass.MultiClassSpec.from_options(validate_multiclass_options(**options), 7)
    weights = oracle_weights["weight_map"]

    def loss(x):
        sums = jax_kernel.multiclass_sums(y_true.numpy(), x, weights, spec)
        return _multiclass.group_losses(sums, spec, jax_kernel.JAX_OPS).mean()

    value, grad = jax.jit(jax.value_and_grad(loss))(y_pred.numpy())
    want = oracle_for(y_numpy, y_pred, {k: v for k, v in options.items() if k != "per_image"},
                      per_image, None, oracle_weights)
    assert_close(float(value), np.asarray(grad, np.float64), *want, "float32", "jax")


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "clip"])
@pytest.mark.parametrize("log", [True, False])
def test_oracle_gradient_matches_finite_differences(activation, log):
    rng = np.random.default_rng(3)
    classes, shape = 4, (2, 3, 5)
    y_true, y_pred, _, options, (y_numpy, _) = make_case(classes, "onehot", activation,
                                                           "void", None, shape=shape)
    x = rng.normal(0, 2, shape + (classes,)) if activation != "clip" else \
        rng.uniform(0.05, 0.95, shape + (classes,))
    weight_map = rng.uniform(0.1, 2.0, shape)
    kwargs = dict(options, log=log, per_image=True, weight_map=weight_map,
                  absent_classes="skip")
    _, grad = oracle.multiclass_value_and_grad(y_numpy, x, **kwargs)
    step = 1e-6
    for index in [(0, 0, 0, 0), (1, 2, 4, 3), (0, 1, 2, 1), (1, 0, 3, 2)]:
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        numeric = (oracle.multiclass_value_and_grad(y_numpy, up, **kwargs)[0] -
                   oracle.multiclass_value_and_grad(y_numpy, down, **kwargs)[0]) / (2 * step)
        assert abs(numeric - grad[index]) <= 1e-6 * max(1.0, abs(numeric)), index


@pytest.mark.parametrize("implementation", TF_IMPLEMENTATIONS)
def test_two_classes_equal_the_binary_class_weighting(implementation):
    """C = 2 with channels (1 - p, p), one-hot labels and weights (w_b, w_f) is
    WeightedIoULoss(w_b, w_f, weighting="class") (p inside [ε, 1-ε]: no clip)."""
    rng = np.random.default_rng(5)
    y = (rng.random((3, 17, 19, 1)) < 0.2).astype(np.float32)
    p = tf.constant(rng.uniform(0.02, 0.98, y.shape).astype(np.float32))
    onehot = tf.constant(np.concatenate([1.0 - y, y], axis=-1))
    for per_image, log in [(False, True), (True, False)]:
        binary = wiou_ops.WeightedIoULoss(0.4, 2.5, weighting="class", per_image=per_image,
                                          log=log, implementation=implementation)
        multi = wiou_ops.MultiClassIoULoss([0.4, 2.5], per_image=per_image, log=log,
                                           implementation=implementation)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(p)
            want = binary(tf.constant(y), p)
            got = multi(onehot, tf.concat([1.0 - p, p], axis=-1))
        np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
        np.testing.assert_allclose(tape.gradient(got, p).numpy(), tape.gradient(want, p).numpy(),
                                   rtol=1e-4, atol=1e-5 * np.max(np.abs(
                                       tape.gradient(want, p).numpy())))


@pytest.mark.parametrize("implementation", TF_IMPLEMENTATIONS)
@pytest.mark.parametrize("classes", [256, 300])
def test_hundreds_of_classes(implementation, classes):
    """Any C: 256 and 300 classes, sparse int32 ids with void pixels, per-pixel weights."""
    y_true, y_pred, weight, options, (y_numpy, oracle_weights) = make_case(
        classes, "sparse-int32", "softmax", "void", "pixel", shape=(2, 5, 9))
    options = dict(options, absent_classes="skip")
    want = oracle_for(y_numpy, y_pred, options, True, weight, oracle_weights)
    loss = wiou_ops.MultiClassIoULoss(per_image=True, implementation=implementation,
                                      **options)
    value, grad = value_and_grad(loss, y_true, y_pred, weight)
    assert_close(value, grad, *want, "float32", f"{implementation} C={classes}")


@pytest.mark.parametrize("implementation", TF_IMPLEMENTATIONS)
def test_empty_and_saturated_inputs(implementation):
    """No pixel of a class, every pixel ignored, ±1e4 logits: finite values and gradients
    that match the oracle; with "skip" and nothing counting the loss is 0."""
    classes, shape = 3, (2, 4, 6)
    z = np.where(np.random.default_rng(1).random(shape + (classes,)) < 0.5, -1e4, 1e4)
    y_pred = tf.constant(z.astype(np.float32))
    for ids, options in [
        (np.zeros(shape, np.int32), dict()),
        (np.full(shape, 255, np.int32), dict(ignore_class=255, absent_classes="skip")),
    ]:
        options = dict(options, sparse_y_true=True, from_logits=True)
        loss = wiou_ops.MultiClassIoULoss(implementation=implementation, **options)
        value, grad = value_and_grad(loss, tf.constant(ids), y_pred, None)
        want_value, want_grad = oracle.multiclass_value_and_grad(ids, z, **options)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(value, want_value, rtol=1e-6)
        np.testing.assert_allclose(grad, want_grad, atol=1e-6)
    assert value == 0.0 and not np.any(grad)


def test_reductions_and_per_sample_weights():
    y_true, y_pred, weight, options, (y_numpy, _) = make_case(3, "onehot", "softmax", None,
                                                             "image")
    for reduction in ["sum_over_batch_size", "sum", "none"]:
        loss = wiou_ops.MultiClassIoULoss(per_image=True, reduction=reduction, **options)
        got = loss(y_true, y_pred, weight).numpy()
        want, _ = oracle.multiclass_value_and_grad(
            y_numpy, y_pred.numpy(), per_image=True, group_weight=weight.numpy(),
            reduction=reduction, **options)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # A (B, H, W, 1) weight is read as (B, H, W); a Keras mask of the pixels likewise.
    pixel = np.random.default_rng(2).uniform(0, 1, (2, 7, 13, 1)).astype(np.float32)
    loss = wiou_ops.MultiClassIoULoss(**options)
    np.testing.assert_allclose(float(loss(y_true, y_pred, pixel)),
                               float(loss(y_true, y_pred, pixel[..., 0])), rtol=1e-7)


def test_options_errors_name_the_argument():
    cases = [
        (dict(class_weights=[1.0, -1.0]), ValueError, "class_weights\\[1\\]"),
        (dict(class_weights=[0.0, 0.0]), ValueError, "class_weights"),
        (dict(class_weights="ab"), TypeError, "class_weights"),
        (dict(class_weights=[1.0]), ValueError, "class_weights"),
        (dict(sparse_y_true=True, multi_label=True), ValueError, "sparse_y_true"),
        (dict(ignore_class=-1), ValueError, "ignore_class"),
        (dict(ignore_class=1.5), TypeError, "ignore_class"),
        (dict(absent_classes="drop"), ValueError, "absent_classes"),
        (dict(epsilon=0.0), ValueError, "epsilon"),
        (dict(implementation="cuda"), ValueError, "implementation"),
    ]
    for kwargs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            wiou_ops.MultiClassIoULoss(**kwargs)


def test_call_errors_name_the_argument():
    probs = tf.fill([2, 4, 4, 3], 1.0 / 3)
    ids = tf.zeros([2, 4, 4], tf.uint8)
    with pytest.raises(ValueError, match="class_weights has 2 entries but y_pred has 3"):
        wiou_ops.MultiClassIoULoss([1.0, 2.0])(tf.one_hot(ids, 3), probs)
    with pytest.raises(ValueError, match="1 class channel"):
        wiou_ops.MultiClassIoULoss()(tf.zeros([2, 4, 4, 1]), tf.zeros([2, 4, 4, 1]))
    with pytest.raises(ValueError, match="y_true of shape .* sparse_y_true=True"):
        wiou_ops.MultiClassIoULoss()(ids, probs)
    with pytest.raises(ValueError, match="y_true of shape"):
        wiou_ops.MultiClassIoULoss(sparse_y_true=True)(tf.zeros([2, 4, 5], tf.uint8), probs)
    with pytest.raises(ValueError, match="ignore_class=7 is not a channel"):
        wiou_ops.MultiClassIoULoss(ignore_class=7)(tf.one_hot(ids, 3), probs)
    with pytest.raises(TypeError, match="y_pred must be a floating"):
        wiou_ops.MultiClassIoULoss(sparse_y_true=True)(ids, tf.zeros([2, 4, 4, 3], tf.int32))
    bad = tf.constant(np.full([2, 4, 4], 3, np.uint8))
    for implementation in TF_IMPLEMENTATIONS:
        loss = wiou_ops.MultiClassIoULoss(sparse_y_true=True, check_inputs=True,
                                          implementation=implementation)
        with pytest.raises(tf.errors.InvalidArgumentError, match="class ids outside"):
            loss(bad, probs)
    # Without check_inputs an id outside [0, C) matches no class: no crash, the oracle's value.
    for implementation in TF_IMPLEMENTATIONS:
        loss = wiou_ops.MultiClassIoULoss(sparse_y_true=True, implementation=implementation)
        want, _ = oracle.multiclass_value_and_grad(bad.numpy(), probs.numpy(),
                                                   sparse_y_true=True)
        np.testing.assert_allclose(float(loss(bad, probs)), want, rtol=1e-6)


@pytest.mark.parametrize("implementation", TF_IMPLEMENTATIONS + helpers.XLA_FOR_ACCELERATORS)
def test_ids_outside_the_classes_match_none(implementation, monkeypatch):
    """int32 ids below 0 or at/above C, without ignore_class, count as pixels of no class
    (they still weigh in every P_c): value and gradient as the oracle's. On GPU the
    backward compares the ids in float32, where 2^24 + 1 and 2^31 - 1 round: still no
    class."""
    implementation = helpers.use_implementation(implementation, monkeypatch)
    rng = np.random.default_rng(3)
    ids = rng.integers(-2, 5, (2, 5, 7)).astype(np.int32)
    ids[0, 0, :5] = [-1, 1000, np.iinfo(np.int32).min, 2**24 + 1, np.iinfo(np.int32).max]
    z = rng.normal(0.0, 2.0, (2, 5, 7, 3)).astype(np.float32)
    options = dict(sparse_y_true=True, from_logits=True)
    loss = wiou_ops.MultiClassIoULoss(implementation=implementation, **options)
    value, grad = value_and_grad(loss, tf.constant(ids), tf.constant(z), None)
    want_value, want_grad = oracle.multiclass_value_and_grad(ids, z, **options)
    assert_close(value, grad, want_value, want_grad, "float32", implementation)


def test_serialization_round_trip():
    loss = wiou_ops.MultiClassIoULoss([1.0, 0.0, 2.5], sparse_y_true=True, ignore_class=255,
                                      from_logits=True, per_image=True, log=False,
                                      absent_classes="skip")
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, wiou_ops.MultiClassIoULoss)
    assert restored.get_config() == loss.get_config()
    y_true, y_pred, _, _, _ = make_case(3, "sparse-uint8", "softmax", "void", None)
    np.testing.assert_allclose(float(restored(y_true, y_pred)), float(loss(y_true, y_pred)))


def test_model_fit_matches_a_naive_keras_ops_loss():
    """Five steps of model.fit: the same weights as with the naive formula (<= 1e-5)."""
    classes, weights = 4, [0.5, 1.0, 2.0, 1.5]
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (8, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, classes, (8, 16, 16)).astype(np.int32)

    def trained(loss):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((16, 16, 3)),
                                  keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                                  keras.layers.Conv2D(classes, 1)])
        initial = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        model.fit(x, y, batch_size=4, epochs=5, steps_per_epoch=1, verbose=0, shuffle=False)
        return initial, model.get_weights()

    initial, fused = trained(wiou_ops.MultiClassIoULoss(weights, sparse_y_true=True,
                                                        from_logits=True))
    _, naive = trained(lambda t, p: multiclass_bench.naive_loss(t, p, classes, sparse=True,
                                                                class_weights=weights))
    for got, want in zip(fused, naive):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert max(np.max(np.abs(a - b)) for a, b in zip(fused, initial)) > 1e-3, \
        "training must move the weights"


def test_keras_jax_backend_matches_the_oracle():
    """MultiClassIoULoss on the JAX Keras backend (subprocess): value and gradient."""
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import os, json
        import numpy as np, jax, wiou_ops
        from wiou_ops import oracle
        rng = np.random.default_rng(0)
        z = rng.normal(0, 3, (2, 5, 7, 6)).astype(np.float32)
        ids = rng.integers(0, 6, (2, 5, 7)).astype(np.int32)
        ids[0, 0, :2] = 255
        opts = dict(sparse_y_true=True, from_logits=True, ignore_class=255, per_image=True,
                    class_weights=[1, 2, 0, 1, 1, 3])
        loss = wiou_ops.MultiClassIoULoss(**opts)
        value, grad = jax.jit(jax.value_and_grad(lambda x: loss(ids, x)))(z)
        want, want_grad = oracle.multiclass_value_and_grad(ids, z, **opts)
        print(json.dumps([abs(float(value) - want) / want,
                          float(np.max(np.abs(grad - want_grad)) / np.max(np.abs(want_grad))),
                          wiou_ops.last_implementation()]))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", WIOU_OPS_DISABLE_NATIVE="1")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    import json
    value_error, grad_error, name = json.loads(run.stdout.strip().splitlines()[-1])
    assert name == "jax" and value_error <= 1e-6 and grad_error <= 1e-5


def test_hundred_million_elements_native_and_xla():
    """1e8 elements of y_pred (25M pixels x 4 classes): float32 accumulation stays within
    1e-6 of a float64 sum in chunks; gradient within 1e-5 at sampled pixels."""
    classes, pixels = 4, 25_000_000
    rng = np.random.default_rng(9)
    z = rng.normal(0, 2, (1, pixels, classes)).astype(np.float32)
    ids = rng.integers(0, classes, (1, pixels)).astype(np.uint8)
    inter, pred, label = np.zeros(classes), np.zeros(classes), np.zeros(classes)
    for lo in range(0, pixels, 2_500_000):
        zz = z[0, lo:lo + 2_500_000].astype(np.float64)
        e = np.exp(zz - zz.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        y = ids[0, lo:lo + 2_500_000, None] == np.arange(classes)
        inter += np.sum(p * y, axis=0)
        pred += p.sum(axis=0)
        label += y.sum(axis=0)
    eps = float(np.float32(1e-7))
    union = label + pred - inter
    want = np.mean(-np.log((inter + eps) / (union + eps)))
    sample = rng.integers(0, pixels, 1000)
    zs = z[0, sample].astype(np.float64)
    ps = np.exp(zs - zs.max(axis=1, keepdims=True))
    ps /= ps.sum(axis=1, keepdims=True)
    ys = (ids[0, sample, None] == np.arange(classes)).astype(np.float64)
    g = (ys * (-1.0 / (inter + eps) - 1.0 / (union + eps)) + 1.0 / (union + eps)) / classes
    want_grad = ps * (g - np.sum(g * ps, axis=1, keepdims=True))
    z_t, ids_t = tf.constant(z), tf.constant(ids)
    del z
    for implementation in [name for name in TF_IMPLEMENTATIONS if name != "graph"]:
        loss = wiou_ops.MultiClassIoULoss(sparse_y_true=True, from_logits=True,
                                          implementation=implementation)
        with tf.GradientTape() as tape:
            tape.watch(z_t)
            value = loss(ids_t, z_t)
        grad = tape.gradient(value, z_t)
        assert abs(float(value) - want) / want <= 1e-6, implementation
        got = tf.gather(grad[0], sample).numpy()
        assert np.max(np.abs(got - want_grad)) / np.max(np.abs(want_grad)) <= 1e-5
        del grad


def test_benchmark_smoke(tmp_path):
    """wiou-bench's multi-class section runs and reports every variant (tiny input)."""
    multiclass_bench.main(["--sizes", "2x16x16x3", "--quick", "--out", str(tmp_path)])
    text = (tmp_path / "multiclass.md").read_text()
    native_rows = ["native", multiclass_bench.LOOPS, multiclass_bench.LOOPS_WITHOUT_IOU]
    for name in ["naive tf.function", "naive jit_compile", "xla", *(
            native_rows if "native" in TF_IMPLEMENTATIONS else [])]:
        assert f"| {name} |" in text
    if "native" in TF_IMPLEMENTATIONS:
        assert "Bounds of the native loops (forward+backward): byte floor" in text


def test_plain_jax_sharded_equals_unsharded_on_8_devices():
    """wiou_ops.jax.multiclass_iou_loss with axis_name under shard_map: the global-batch
    value and gradient, equal to the unsharded ones (batch and per-image groups)."""
    pytest.importorskip("jax")
    code = """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        try:
            from jax import shard_map
        except ImportError:
            from jax.experimental.shard_map import shard_map
        from wiou_ops import jax as wiou_jax, oracle
        mesh = jax.make_mesh((8,), ("batch",))
        rng = np.random.default_rng(0)
        z = jnp.asarray(rng.normal(0, 3, (16, 9, 11, 5)), jnp.float32)
        ids = jnp.asarray(rng.integers(0, 5, (16, 9, 11)), jnp.int32).at[3, 0, :4].set(255)
        w = jnp.asarray(rng.uniform(0, 2, (16, 9, 11)), jnp.float32)
        put = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
        worst = [0.0, 0.0]
        for per_image in (False, True):
            opts = dict(sparse_y_true=True, from_logits=True, ignore_class=255,
                        per_image=per_image, class_weights=[1, 2, 0.5, 1, 3],
                        absent_classes="skip")
            whole = jax.value_and_grad(
                lambda y, z, w: wiou_jax.multiclass_iou_loss(y, z, sample_weight=w, **opts), 1)
            sharded = shard_map(
                lambda y, z, w: wiou_jax.multiclass_iou_loss(y, z, sample_weight=w,
                                                             axis_name="batch", **opts),
                mesh=mesh, in_specs=(P("batch"),) * 3, out_specs=P())
            l1, g1 = whole(ids, z, w)
            l2, g2 = jax.jit(jax.value_and_grad(sharded, 1))(put(ids), put(z), put(w))
            want, want_grad = oracle.multiclass_value_and_grad(
                np.asarray(ids), np.asarray(z), weight_map=np.asarray(w), **opts)
            for value, grad in ((l1, g1), (l2, g2)):
                worst[0] = max(worst[0], abs(float(value) - want) / want)
                worst[1] = max(worst[1], float(np.max(np.abs(np.asarray(grad) - want_grad))
                                               / np.max(np.abs(want_grad))))
        print(*worst)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    value_err, grad_err = map(float, out.stdout.split()[-2:])
    assert value_err <= 1e-6 and grad_err <= 1e-5


def test_float_ids_only_where_exact():
    """The GPU backward's float32 ids (``_multiclass.id_dtype(as_float=True)``): only for
    integer labels and class ids below 2^24, where no other integer rounds onto one."""
    from types import SimpleNamespace

    from wiou_ops import _multiclass

    spec = SimpleNamespace(num_classes=19, ignore_class=255)
    assert _multiclass.id_dtype(spec, "uint8", (0, 255), as_float=True) == "float32"
    assert _multiclass.id_dtype(spec, "uint8", (0, 255)) == "uint8"
    assert _multiclass.id_dtype(spec, "float32", None, as_float=True) == "int32"
    big = SimpleNamespace(num_classes=2**24 + 1, ignore_class=None)
    assert _multiclass.id_dtype(big, "int32", (-2**31, 2**31 - 1), as_float=True) == "int32"
