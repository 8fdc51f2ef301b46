"""The keras.ops kernel (wiou_ops/_kernels/ops.py, via wiou_ops/_backends/ops.py): the loss
on Keras backends without a fused kernel (PyTorch; NumPy for evaluation).

Its math runs here first on the TensorFlow backend of this process (keras.ops are TF ops,
so TF's autodiff gives the gradient) against the float64 oracle in a shape x dtype x mode
grid; then in subprocesses on the NumPy backend (values) and, where PyTorch is installed,
on the PyTorch backend (values, gradients, the seed class's drop-in, model.fit).
"""

import importlib.util
import itertools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from wiou_ops import oracle
from wiou_ops._backends import ops as ops_backend
from wiou_ops._common.options import validate_options

ROOT = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS = dict(weight_background=0.3, weight_foreground=2.0)


def _value_and_grad(y_true, y_pred, upstream, sample_weight=None, **options):
    def loss(y, p):
        return ops_backend.compute(y, p, sample_weight, None, validate_options(**options))[1]

    return helpers.value_and_grad(loss, y_true, y_pred, upstream)


@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("case", ["random", "empty", "full", "saturated"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 123, 123, 1), (2, 3, 257, 257)],
                         ids=lambda s: "x".join(map(str, s)))
def test_seed_value_and_gradient_match_float64_oracle(shape, case, pred_dtype):
    y_true, y_pred = helpers.make_inputs(shape, case, pred_dtype)
    upstream = 1.3 * helpers.upstream_scale(pred_dtype, int(np.prod(shape)))
    value, grad = _value_and_grad(y_true, y_pred, upstream, weight_background=0.5,
                                  weight_foreground=1.5)
    want, want_grad = oracle.seed_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred), weight_background=0.5,
        weight_foreground=1.5, upstream=upstream)
    assert value.dtype == tf.float32 and grad.dtype == y_pred.dtype
    assert helpers.rel_err(value, want) <= helpers.VALUE_RTOL
    assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL[pred_dtype]


@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("weighting, per_image, from_logits, log", list(itertools.product(
    ["seed", "pixel", "class"], [False, True], [False, True], [True, False])))
def test_every_mode_matches_float64_oracle(weighting, per_image, from_logits, log, pred_dtype):
    shape = (3, 37, 29, 1)
    rng = np.random.default_rng(1)
    y_true = tf.constant((rng.random(shape) < 0.15).astype(np.float32))
    x = rng.normal(0, 4, shape) if from_logits else rng.random(shape)
    y_pred = tf.cast(tf.constant(x.astype(np.float32)), pred_dtype)
    weight_map = None if weighting == "seed" else rng.uniform(0, 2, shape).astype(np.float32)
    upstream = 1.7 * helpers.upstream_scale(pred_dtype, int(np.prod(shape)))
    options = dict(WEIGHTS, weighting=weighting, per_image=per_image, from_logits=from_logits,
                   log=log)
    value, grad = _value_and_grad(y_true, y_pred, upstream, sample_weight=weight_map, **options)
    want, want_grad = oracle.iou_value_and_grad(
        helpers.to_f64(y_true), helpers.to_f64(y_pred), weight_map=weight_map,
        upstream=upstream, **options)
    assert helpers.rel_err(value, want) <= helpers.VALUE_RTOL
    assert helpers.rel_err(grad, want_grad) <= helpers.GRAD_RTOL[pred_dtype]


# Run on another Keras backend: "numpy" (values only), "torch" or "jax" (gradients too; the
# JAX backend has its fused kernel but shares the input checks with keras.ops).
SCRIPT = """
import itertools, json, sys
import numpy as np
import keras
import wiou_ops
from wiou_ops import oracle

BACKEND = keras.backend.backend()
out = {"backend": BACKEND, "available": wiou_ops.available_implementations(),
       "tf_imported": "tensorflow" in sys.modules}
WEIGHTS = dict(weight_background=0.3, weight_foreground=2.0)
EPS = 1e-7
rng = np.random.default_rng(0)
shape = (3, 21, 19, 1)
y = (rng.random(shape) < 0.15).astype(np.float32)

if BACKEND == "torch":
    import torch

    def run(loss_fn, p, dtype="float32", upstream=1.7):
        t = torch.tensor(np.asarray(p, np.float32)).to(getattr(torch, dtype)).requires_grad_()
        value = loss_fn(t)
        (value * torch.as_tensor(upstream, dtype=value.dtype)).sum().backward()
        return (value.detach().float().numpy().astype(np.float64),
                t.grad.float().numpy().astype(np.float64), str(t.grad.dtype))
elif BACKEND == "jax":
    import jax, jax.numpy as jnp

    def run(loss_fn, p, dtype="float32", upstream=1.7):
        value, vjp = jax.vjp(loss_fn, jnp.asarray(p, dtype))
        (grad,) = vjp(jnp.broadcast_to(jnp.asarray(upstream, value.dtype), value.shape))
        return (np.asarray(value, np.float64), np.asarray(grad.astype(jnp.float32), np.float64),
                str(grad.dtype))
else:
    def run(loss_fn, p, dtype="float32", upstream=1.7):
        return np.asarray(loss_fn(np.asarray(p, dtype)), np.float64), None, None

def rel(a, b):
    if a is None:
        return 0.0
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

def probabilities():
    p = rng.random(shape).astype(np.float32)
    # Clip bounds and ties (the seed class on JAX, jnp.clip, gives ties half the gradient).
    p.flat[:8] = np.float32([0.0, 1.0, 0.5 * EPS, 1.0 - 0.5 * EPS] * 2 if BACKEND == "jax"
                            else [0.0, 1.0, EPS, 1.0 - EPS] * 2)
    return p

# Every mode against float64.
modes = {}
for weighting, per_image, logits, log in itertools.product(
        ["seed", "pixel", "class"], [False, True], [False, True], [True, False]):
    p = rng.normal(0, 4, shape).astype(np.float32) if logits else probabilities()
    weight_map = None if weighting == "seed" else rng.uniform(0, 2, shape).astype(np.float32)
    options = dict(WEIGHTS, weighting=weighting, per_image=per_image, from_logits=logits,
                   log=log)
    loss = wiou_ops.WeightedIoULoss(**options)
    value, grad, _ = run(lambda q: loss(y, q, sample_weight=weight_map), p)
    want, want_grad = oracle.iou_value_and_grad(y, p, weight_map=weight_map, upstream=1.7,
                                                **options)
    errors = modes.setdefault(weighting, [0.0, 0.0])
    errors[0] = max(errors[0], rel(value, want))
    errors[1] = max(errors[1], rel(grad, want_grad))
out["modes"] = modes

# The drop-in: the seed class's value (and gradient) for every reduction and sample weight.
p = probabilities()
sample_weights = {"none": None, "map": rng.uniform(0, 2, shape).astype(np.float32),
                  "per_sample": rng.uniform(0, 2, shape[:1]).astype(np.float32)}
drop_in = []
for reduction in ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none"]:
    for kind, sw in sample_weights.items():
        seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5, reduction=reduction)
        ours = wiou_ops.WeightedIoULoss(0.5, 1.5, reduction=reduction)
        upstream = np.full(shape, 1.7, np.float32) if reduction == "none" else 1.7
        v1, g1, _ = run(lambda q: seed(y, q, sample_weight=sw), p, upstream=upstream)
        v2, g2, _ = run(lambda q: ours(y, q, sample_weight=sw), p, upstream=upstream)
        row = [reduction, kind, rel(v2, v1), rel(g2, g1)]
        if kind != "per_sample":  # the oracle takes weights of y's shape
            want, want_grad = oracle.seed_value_and_grad(
                y, p, weight_background=0.5, weight_foreground=1.5, reduction=reduction,
                upstream=upstream, sample_weight=sw)
            row += [rel(v2, want), rel(g2, want_grad)]
        drop_in.append(row)
out["drop_in"] = drop_in

# Label dtypes give the same numbers as float labels; 16-bit predictions keep their dtype.
base = run(lambda q: wiou_ops.WeightedIoULoss()(y, q), p)
out["label_dtypes"] = {
    dtype: [rel(got[0], base[0]), rel(got[1], base[1])]
    for dtype in ["uint8", "bool", "int32"]
    for got in [run(lambda q: wiou_ops.WeightedIoULoss()(y.astype(dtype), q), p)]}
out["pred_dtypes"] = {}
for dtype in (["float16"] if BACKEND == "numpy" else ["float16", "bfloat16"]):
    value, grad, grad_dtype = run(lambda q: wiou_ops.WeightedIoULoss()(y, q), p, dtype, 1000.0)
    rounded = np.asarray(keras.ops.convert_to_numpy(
        keras.ops.cast(keras.ops.cast(p, dtype), "float32")), np.float64)
    want, want_grad = oracle.seed_value_and_grad(y, rounded, upstream=1000.0)
    out["pred_dtypes"][dtype] = [rel(value, want), rel(grad, want_grad), grad_dtype]

# Bad input: clear errors naming the argument.
def error(fn):
    try:
        fn()
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None

out["errors"] = {
    "shape": error(lambda: wiou_ops.WeightedIoULoss()(y[..., 0], p)),
    "pred_dtype": error(lambda: wiou_ops.weighted_iou_loss(y, (p * 10).astype("int32"))),
    "rank": error(lambda: wiou_ops.weighted_iou_loss(y.ravel(), p.ravel(), per_image=True)),
    "implementation": error(lambda: wiou_ops.weighted_iou_loss(y, p, implementation="native")),
    "check_inputs": error(lambda: wiou_ops.weighted_iou_loss(y, p + 1.0, check_inputs=True)),
    "check_labels": error(lambda: wiou_ops.weighted_iou_loss(y * 2, p, check_inputs=True)),
}
out["checked_ok"] = float(np.asarray(wiou_ops.weighted_iou_loss(y, p, check_inputs=True)))
out["last"] = wiou_ops.last_implementation()

out["tf_imported"] = out["tf_imported"] or "tensorflow" in sys.modules  # (fit may: data)

if BACKEND == "torch":  # model.fit with the seed class and with wiou_ops, same start
    from tests import keras_fit
    init = keras_fit.initial_weights()
    x = rng.normal(size=(40, 16, 16, 3)).astype("float32")
    t = (rng.random((40, 16, 16, 1)) < 0.05).astype("float32")
    trained = [keras_fit.fit(loss, init, x, t)[1] for loss in
               [wiou_ops.SeedWeightedIoULoss(0.5, 1.5), wiou_ops.WeightedIoULoss(0.5, 1.5)]]
    out["fit_max_diff"] = keras_fit.max_abs_diff(*trained)
    out["fit_moved"] = keras_fit.max_abs_diff(trained[0], init)
print(json.dumps(out))
"""


def _run_on(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _check_common(out, backend, grads, implementation="ops"):
    assert out["backend"] == backend
    assert out["available"] == [implementation] and out["last"] == implementation
    assert not out["tf_imported"], "wiou_ops imported TensorFlow on another backend"
    assert set(out["modes"]) == {"seed", "pixel", "class"}
    for weighting, (value_err, grad_err) in out["modes"].items():
        assert value_err <= 1e-6 and grad_err <= (1e-5 if grads else 0.0), weighting
    assert len(out["drop_in"]) == 15
    # Seed class vs wiou_ops, both float32; on JAX the seed's own sums are flat XLA:CPU
    # reductions (~1e-5 from float64), elsewhere pairwise or cascaded.
    seed_tol = 5e-5 if backend == "jax" else 2e-6
    for reduction, kind, *errors in out["drop_in"]:
        assert errors[0] <= seed_tol and errors[1] <= seed_tol, (reduction, kind, errors)
        if kind != "per_sample":  # float64 oracle
            assert errors[2] <= 2e-6 and errors[3] <= 1e-5, (reduction, kind, errors)
    for dtype, errors in out["label_dtypes"].items():
        assert errors == [0.0, 0.0], dtype
    for dtype, (value_err, grad_err, grad_dtype) in out["pred_dtypes"].items():
        assert value_err <= 1e-6 and grad_err <= helpers.GRAD_RTOL[dtype], dtype
        if grads:
            assert grad_dtype.split(".")[-1] == dtype
    errors = out["errors"]
    assert errors["shape"].startswith("ValueError") and "y_true.shape" in errors["shape"]
    assert errors["pred_dtype"].startswith("TypeError") and "y_pred" in errors["pred_dtype"]
    assert errors["rank"].startswith("ValueError") and "per_image" in errors["rank"]
    assert errors["implementation"].startswith("ValueError") and \
        "implementation='native'" in errors["implementation"]
    assert "y_pred must be probabilities in [0, 1]" in errors["check_inputs"]
    assert "y_true must be in [0, 1]" in errors["check_labels"]
    assert out["checked_ok"] > 0


def test_numpy_backend_values_match_the_oracle_and_the_seed_class():
    _check_common(_run_on("numpy"), "numpy", grads=False)


def test_jax_backend_shares_the_input_checks_and_stays_a_drop_in():
    _check_common(_run_on("jax"), "jax", grads=True, implementation="jax")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not a test dependency (PyPI's Linux wheel is the "
                           "multi-GB CUDA build); run by hand with torch installed")
def test_torch_backend_is_a_drop_in_with_gradients():
    out = _run_on("torch")
    _check_common(out, "torch", grads=True)
    assert out["fit_moved"] > 1e-3 and out["fit_max_diff"] <= 1e-5


def test_the_pytorch_benchmark_runs_or_says_what_it_needs(tmp_path):
    """wiou-bench --backend torch: a tiny run where PyTorch is installed (schema, errors
    against float64); where it is not, a one-line message instead of Keras's ImportError."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    run = subprocess.run([sys.executable, "-m", "wiou_ops.bench", "--backend", "torch",
                          "--sizes", "2x32x32x1", "--rounds", "2", "--out", str(tmp_path)],
                         cwd=ROOT, env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=600)
    if importlib.util.find_spec("torch") is None:
        assert run.returncode == 1
        assert run.stderr.strip().splitlines()[-1] == (
            "wiou-bench --backend torch needs torch installed (pip install torch).")
        return
    assert run.returncode == 0, run.stderr[-3000:]
    from wiou_ops.bench import torch_bench

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["backend"] == "torch" and results["read_gbps"] > 0
    assert [(c["pred_dtype"], c["true_dtype"]) for c in results["cases"]] == torch_bench.DTYPES
    for case in results["cases"]:
        assert set(case["variants"]) == {torch_bench.SEED, torch_bench.OURS}
        for stats in case["variants"].values():
            assert stats["n"] == 2 and stats["rel_error"] < 1e-5
            assert stats["grad_dtype"] == case["pred_dtype"]
            assert stats["grad_rel_error"] < (1e-5 if case["pred_dtype"] == "float32"
                                              else 8e-3)
    assert f"| {torch_bench.SEED} |" in (tmp_path / "report.md").read_text()
