"""WeightedIoULoss on the JAX Keras backend (KERAS_BACKEND=jax, in a subprocess).

The drop-in there: same value and gradient as the seed class (inputs without
ties at the clip bounds, where the seed on JAX halves the gradient), model.fit
parity, and no TensorFlow import on the way.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import numpy as np
import jax, jax.numpy as jnp
import keras
import wiou_ops
assert keras.backend.backend() == "jax"
out = {"tf_imported_by_import": "tensorflow" in sys.modules,
       "available": wiou_ops.available_implementations()}

rng = np.random.default_rng(0)
shape = (4, 24, 20, 1)
y = jnp.asarray(rng.random(shape) < 0.1, jnp.float32)
p = jnp.asarray(rng.uniform(0.02, 0.98, shape), jnp.float32)
weights = {None: None, "pixel": jnp.asarray(rng.uniform(0, 2, shape), jnp.float32),
           "sample": jnp.asarray(rng.uniform(0, 2, shape[:1]), jnp.float32)}
from wiou_ops import oracle
rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))
errors, oracle_errors = [], []
for reduction in ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none"]:
    for kind, sw in weights.items():
        seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5, reduction=reduction)
        ours = wiou_ops.WeightedIoULoss(0.5, 1.5, reduction=reduction)
        f = lambda loss: (lambda q: jnp.sum(loss(y, q, sample_weight=sw) * 1.7))
        v1, g1 = jax.value_and_grad(f(seed))(p)
        v2, g2 = jax.jit(jax.value_and_grad(f(ours)))(p)
        errors.append((reduction, kind, rel(v2, np.float64(v1)), rel(g2, np.asarray(g1, np.float64))))
        value = ours(y, p, sample_weight=sw)  # the map itself for "none"
        upstream = np.full(value.shape, 1.7) if reduction == "none" else 1.7
        want, want_grad = oracle.seed_value_and_grad(
            np.asarray(y, np.float64), np.asarray(p, np.float64), weight_background=0.5,
            weight_foreground=1.5, reduction=reduction, upstream=upstream,
            sample_weight=None if sw is None else np.asarray(sw, np.float64))
        oracle_errors.append((reduction, kind, rel(value, want), rel(g2, want_grad)))
out["errors"] = errors
out["oracle_errors"] = oracle_errors
out["last"] = wiou_ops.last_implementation()
out["tf_imported"] = "tensorflow" in sys.modules  # (Keras's fit may import it for data)

from tests import keras_fit
init = keras_fit.initial_weights()
x = rng.normal(size=(40, 16, 16, 3)).astype("float32")
t = (rng.random((40, 16, 16, 1)) < 0.05).astype("float32")
trained = [keras_fit.fit(loss, init, x, t)[1]
           for loss in [wiou_ops.SeedWeightedIoULoss(0.5, 1.5), wiou_ops.WeightedIoULoss(0.5, 1.5)]]
out["fit_max_diff"] = keras_fit.max_abs_diff(*trained)
out["fit_moved"] = keras_fit.max_abs_diff(trained[0], init)
# The GPU/TPU backward from label codes, forced on here: model.fit must give the same bits.
from wiou_ops._kernels import jax as jax_kernel
jax_kernel.CODE_PLATFORMS = ("cpu",)
codes = keras_fit.fit(wiou_ops.WeightedIoULoss(0.5, 1.5), init, x, t)[1]
out["codes_fit_max_diff"] = keras_fit.max_abs_diff(codes, trained[1])
print(json.dumps(out))
"""


def test_drop_in_on_the_jax_backend():
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["available"] == ["jax"] and out["last"] == "jax"
    assert not out["tf_imported_by_import"], "import wiou_ops pulled in TensorFlow"
    assert not out["tf_imported"], "computing the loss on JAX imported TensorFlow"
    # Against the seed: the seed's own float32 error on Keras-JAX (XLA:CPU) is ~1e-5.
    for reduction, kind, value_err, grad_err in out["errors"]:
        assert value_err <= 5e-5 and grad_err <= 5e-5, (reduction, kind, value_err, grad_err)
    # Against float64, every sample-weight shape: the loss reduces the weighted map itself.
    assert len(out["oracle_errors"]) == 15
    for reduction, kind, value_err, grad_err in out["oracle_errors"]:
        assert value_err <= 1e-6 and grad_err <= 1e-5, (reduction, kind, value_err, grad_err)
    assert out["fit_moved"] > 1e-3
    assert out["fit_max_diff"] <= 1e-5
    assert out["codes_fit_max_diff"] == 0.0


MODES_SCRIPT = """
import json, itertools
import numpy as np
import jax, jax.numpy as jnp
import keras
import wiou_ops
from wiou_ops import oracle
from tests.test_modes import WEIGHTS
assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
shape = (3, 21, 19, 1)
y = (rng.random(shape) < 0.15).astype(np.float32)
worst = {}
for weighting, per_image, logits, log in itertools.product(
        ["seed", "pixel", "class"], [False, True], [False, True], [True, False]):
    p = (rng.normal(0, 4, shape) if logits else rng.random(shape)).astype(np.float32)
    weight_map = None if weighting == "seed" else rng.uniform(0, 2, shape).astype(np.float32)
    loss = wiou_ops.WeightedIoULoss(**WEIGHTS, weighting=weighting, per_image=per_image,
                                    from_logits=logits, log=log)
    value, grad = jax.jit(jax.value_and_grad(
        lambda q: 1.7 * loss(y, q, sample_weight=weight_map)))(jnp.asarray(p))
    want, want_grad = oracle.iou_value_and_grad(
        y, p, weighting=weighting, per_image=per_image, from_logits=logits, log=log, **WEIGHTS,
        weight_map=weight_map, upstream=1.7)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))
    key = weighting
    errors = worst.setdefault(key, [0.0, 0.0])
    errors[0] = max(errors[0], rel(value / 1.7, want))
    errors[1] = max(errors[1], rel(grad, want_grad))
print(json.dumps(worst))
"""


def test_every_mode_on_the_jax_backend_matches_float64_oracle():
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(MODES_SCRIPT)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    worst = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(worst) == {"seed", "pixel", "class"}
    for weighting, (value_err, grad_err) in worst.items():
        assert value_err <= 1e-6 and grad_err <= 1e-5, (weighting, value_err, grad_err)


DATA_PARALLEL_SCRIPT = """
import os, json
import numpy as np, jax, keras, wiou_ops
assert keras.backend.backend() == "jax" and len(jax.devices()) == 8
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 16, 16, 3)).astype("float32")
# Foreground unevenly spread over the batch: per-device IoUs would differ from the global one.
y = (x[..., :1] + np.linspace(-0.8, 0.8, 32)[:, None, None, None] > 1.2).astype("float32")

from tests import keras_fit
init = keras_fit.initial_weights()

def train(loss, distribution):
    keras.distribution.set_distribution(distribution)
    try:
        return keras_fit.fit(loss, init, x, y, learning_rate=0.5, batch_size=16, epochs=2)
    finally:
        keras.distribution.set_distribution(None)

out = {}
for name, opts in {"seed": {}, "pixel": dict(weighting="pixel", weight_foreground=3.0),
                   "class": dict(weighting="class", log=False)}.items():
    ref_loss, ref_w = train(wiou_ops.WeightedIoULoss(**opts), None)
    for flag in (True, False):
        dp = keras.distribution.DataParallel(devices=jax.devices())
        assert dp.device_mesh.shape == (8,) and dp.get_data_layout((16, 16, 16, 3)).axes[0]
        loss, w = train(wiou_ops.WeightedIoULoss(**opts, cross_replica=flag), dp)
        out[f"{name}|{flag}"] = [
            max(abs(a - b) / abs(a) for a, b in zip(ref_loss, loss)),
            keras_fit.max_abs_diff(ref_w, w), keras_fit.max_abs_diff(ref_w, init)]
print(json.dumps(out))
"""


def test_keras_jax_data_parallel_trains_on_the_global_iou():
    """Keras's JAX distribution API shards one global batch over 8 devices and jits the
    step over it: the loss sees the global batch, so cross_replica=True (and False) give
    the single-device training."""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(DATA_PARALLEL_SCRIPT)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == 6
    for key, (loss_diff, weight_diff, moved) in results.items():
        assert moved > 0.05, key
        assert loss_diff <= 1e-5 and weight_diff <= 1e-5, (key, loss_diff, weight_diff)
