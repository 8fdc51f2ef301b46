"""The JAX implementation (wiou_ops/_jax.py, public as wiou_ops.jax) against the float64
oracle for every weighting and option, and sharded == unsharded on 8 virtual devices."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jax  # the test extra installs it: `make test` runs these
import jax.numpy as jnp

from tests import helpers, oracle
from wiou_ops import _jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = [(1, 1, 1, 1), (5, 123, 123, 1), (2, 3, 257, 257)]


def _inputs(shape, case, pred_dtype, true_dtype):
    y_true, y_pred = helpers.make_inputs(shape, case, pred_dtype, true_dtype)
    return jnp.asarray(y_true.numpy()), jnp.asarray(y_pred.numpy())


@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("case", ["random", "empty", "full", "saturated"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_value_and_gradient_match_float64_oracle(shape, case, pred_dtype):
    y_true, y_pred = _inputs(shape, case, pred_dtype, "float32")
    n = int(np.prod(shape))
    upstream = 1.3 * helpers.upstream_scale(pred_dtype, n)

    def loss(p):
        return _jax.seed_weighted_iou_loss(y_true, p, weight_background=0.5,
                                           weight_foreground=1.5)

    value, vjp = jax.vjp(jax.jit(loss), y_pred)
    (grad,) = vjp(jnp.asarray(upstream, value.dtype))
    want, want_grad = oracle.seed_value_and_grad(
        np.asarray(y_true, np.float64), np.asarray(y_pred.astype(jnp.float32), np.float64),
        weight_background=0.5, weight_foreground=1.5, upstream=upstream)
    assert value.dtype == jnp.float32 and grad.dtype == y_pred.dtype
    assert helpers.rel_err(np.asarray(value), want) <= helpers.VALUE_RTOL
    assert helpers.rel_err(np.asarray(grad.astype(jnp.float32)), want_grad) <= \
        helpers.GRAD_RTOL[pred_dtype]


@pytest.mark.parametrize("true_dtype", ["uint8", "bool", "int32"])
def test_integer_and_bool_labels(true_dtype):
    y_true, y_pred = _inputs((3, 40, 40, 1), "random", "float32", true_dtype)
    ref_true = y_true.astype(jnp.float32)
    got = jax.value_and_grad(lambda p: _jax.seed_weighted_iou_loss(y_true, p))(y_pred)
    want = jax.value_and_grad(lambda p: _jax.seed_weighted_iou_loss(ref_true, p))(y_pred)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_sum_reduction_and_errors():
    y_true, y_pred = _inputs((2, 16, 16, 1), "random", "float32", "float32")
    mean = _jax.seed_weighted_iou_loss(y_true, y_pred)
    total = _jax.seed_weighted_iou_loss(y_true, y_pred, reduction="sum")
    assert float(total) == pytest.approx(float(mean) * y_pred.size, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        _jax.seed_weighted_iou_loss(y_true[..., 0], y_pred)
    with pytest.raises(TypeError, match="y_pred"):
        _jax.seed_weighted_iou_loss(y_true, y_pred.astype(jnp.int32))


@pytest.mark.parametrize("options", [(False, False, True), (True, False, False),
                                     (False, True, False), (True, True, True)],
                         ids=lambda o: "per_image={}-logits={}-log={}".format(*o))
@pytest.mark.parametrize("pred_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("weighting", ["seed", "pixel", "class"])
def test_every_mode_matches_float64_oracle(weighting, pred_dtype, options):
    from tests.test_modes import WEIGHTS, mode_inputs
    from wiou_ops import jax as wiou_jax

    per_image, from_logits, log = options
    y_true, y_pred, weight_map = mode_inputs((3, 37, 41, 1), "random", pred_dtype, from_logits)
    y_true, y_pred = jnp.asarray(y_true.numpy()), jnp.asarray(y_pred.numpy())
    weight_map = None if weighting == "seed" else jnp.asarray(weight_map.numpy())
    kwargs = dict(weighting=weighting, per_image=per_image, from_logits=from_logits, log=log,
                  **WEIGHTS)
    upstream = 1.3 * (1.0 if pred_dtype == "float32" else 2.0**10)

    def loss(p):
        return wiou_jax.weighted_iou_loss(y_true, p, sample_weight=weight_map, **kwargs)

    value, vjp = jax.vjp(jax.jit(loss), y_pred)
    (grad,) = vjp(jnp.asarray(upstream, value.dtype))
    want, want_grad = oracle.iou_value_and_grad(
        np.asarray(y_true, np.float64), np.asarray(y_pred.astype(jnp.float32), np.float64),
        weight_map=None if weight_map is None else np.asarray(weight_map), upstream=upstream,
        **kwargs)
    assert value.dtype == jnp.float32 and grad.dtype == y_pred.dtype
    assert helpers.rel_err(np.asarray(value), want) <= helpers.VALUE_RTOL
    assert helpers.rel_err(np.asarray(grad.astype(jnp.float32)), want_grad) <= \
        helpers.GRAD_RTOL[pred_dtype]


def test_plain_function_errors_name_the_argument():
    from wiou_ops import jax as wiou_jax

    y_true, y_pred = _inputs((2, 16, 16, 1), "random", "float32", "float32")
    with pytest.raises(ValueError, match="per_image"):
        wiou_jax.weighted_iou_loss(y_true.reshape(-1), y_pred.reshape(-1), per_image=True)
    with pytest.raises(ValueError, match="weighting"):
        wiou_jax.weighted_iou_loss(y_true, y_pred, weighting="dice")
    with pytest.raises(ValueError, match="sample_weight"):
        wiou_jax.weighted_iou_loss(y_true, y_pred, sample_weight=jnp.ones_like(y_pred))
    with pytest.raises(ValueError, match="reduction"):
        wiou_jax.weighted_iou_loss(y_true, y_pred, reduction="none")


def test_sharded_equals_unsharded_on_8_devices():
    code = """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        try:
            from jax import shard_map
        except ImportError:
            from jax.experimental.shard_map import shard_map
        from wiou_ops import _jax
        assert len(jax.devices()) == 8
        mesh = jax.make_mesh((8,), ("batch",))
        rng = np.random.default_rng(0)
        y = jnp.asarray(rng.random((16, 33, 31, 1)) < 0.1, jnp.float32)
        p = jnp.asarray(rng.random((16, 33, 31, 1)), jnp.float32)
        w = jnp.asarray(rng.uniform(0, 2, (16, 33, 31, 1)), jnp.float32)
        put = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
        worst = [0.0, 0.0]
        for weighting in ("seed", "pixel", "class"):
            for per_image in (False, True):
                opts = dict(weight_background=0.5, weight_foreground=1.5, weighting=weighting,
                            per_image=per_image, log=not per_image)
                sw = None if weighting == "seed" else w
                whole = jax.value_and_grad(
                    lambda y, p, sw: _jax.weighted_iou_loss(y, p, sample_weight=sw, **opts), 1)
                sharded = shard_map(
                    lambda y, p, sw: _jax.weighted_iou_loss(y, p, sample_weight=sw,
                                                            axis_name="batch", **opts),
                    mesh=mesh, in_specs=(P("batch"),) * 3, out_specs=P())
                l1, g1 = whole(y, p, sw)
                l2, g2 = jax.jit(jax.value_and_grad(sharded, 1))(
                    put(y), put(p), None if sw is None else put(sw))
                worst[0] = max(worst[0], abs(float(l1) - float(l2)) / float(l1))
                worst[1] = max(worst[1], float(jnp.max(jnp.abs(g1 - g2)) / jnp.max(jnp.abs(g1))))
        print(*worst)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    value_err, grad_err = map(float, out.stdout.split()[-2:])
    assert value_err <= 1e-6 and grad_err <= 1e-5
