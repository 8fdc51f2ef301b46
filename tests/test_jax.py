"""The JAX kernel (wiou_ops/_kernels/jax.py, public as wiou_ops.jax) against the float64
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

from tests import helpers
from wiou_ops import oracle
from wiou_ops import _iou
from wiou_ops import jax as wiou_jax
from wiou_ops._kernels import jax as jax_kernel

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = [(1, 1, 1, 1), (5, 123, 123, 1), (2, 3, 257, 257)]


def _inputs(shape, case, pred_dtype, true_dtype):
    y_true, y_pred = helpers.make_inputs(shape, case, pred_dtype, true_dtype)
    return jnp.asarray(y_true.numpy()), jnp.asarray(y_pred.numpy())


@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("case", ["random", "empty", "full", "saturated"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_value_and_gradient_match_float64_oracle(shape, case, pred_dtype, layout):
    y_true, y_pred = _inputs(shape, case, pred_dtype, "float32")
    n = int(np.prod(shape))
    upstream = 1.3 * helpers.upstream_scale(pred_dtype, n)

    def loss(p):
        return wiou_jax.seed_weighted_iou_loss(y_true, p, weight_background=0.5,
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
    got = jax.value_and_grad(lambda p: wiou_jax.seed_weighted_iou_loss(y_true, p))(y_pred)
    want = jax.value_and_grad(lambda p: wiou_jax.seed_weighted_iou_loss(ref_true, p))(y_pred)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_sum_reduction_and_errors():
    y_true, y_pred = _inputs((2, 16, 16, 1), "random", "float32", "float32")
    mean = wiou_jax.seed_weighted_iou_loss(y_true, y_pred)
    total = wiou_jax.seed_weighted_iou_loss(y_true, y_pred, reduction="sum")
    assert float(total) == pytest.approx(float(mean) * y_pred.size, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        wiou_jax.seed_weighted_iou_loss(y_true[..., 0], y_pred)
    with pytest.raises(TypeError, match="y_pred"):
        wiou_jax.seed_weighted_iou_loss(y_true, y_pred.astype(jnp.int32))


@pytest.mark.parametrize("options", [(False, False, True), (True, False, False),
                                     (False, True, False), (True, True, True)],
                         ids=lambda o: "per_image={}-logits={}-log={}".format(*o))
@pytest.mark.parametrize("pred_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("weighting", ["seed", "pixel", "class"])
def test_every_mode_matches_float64_oracle(weighting, pred_dtype, options, layout):
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


@pytest.mark.parametrize("layout_name", ["rows", "native", "native-gpu"])
def test_sharded_equals_unsharded_on_8_devices(layout_name):
    code = """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        try:
            from jax import shard_map
        except ImportError:
            from jax.experimental.shard_map import shard_map
        import sys
        from wiou_ops import jax as wiou_jax
        from wiou_ops._kernels import jax as jax_kernel
        if sys.argv[1] != "rows":  # the TPU/GPU layout, lowered for this CPU
            jax_kernel.ROW_PLATFORMS = ()
        if sys.argv[1] == "native-gpu":  # XLA:GPU's stages and backward
            jax_kernel.GPU_STAGE_PLATFORMS = jax_kernel.RECOMPUTE_PLATFORMS = ("cpu",)
        assert len(jax.devices()) == 8
        mesh = jax.make_mesh((8,), ("batch",))
        rng = np.random.default_rng(0)
        y = jnp.asarray(rng.random((16, 33, 31, 1)) < 0.1, jnp.float32)
        p = jnp.asarray(rng.random((16, 33, 31, 1)), jnp.float32)
        w = jnp.asarray(rng.uniform(0, 2, (16, 33, 31, 1)), jnp.float32)
        put = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
        y_soft = y.at[13, 3, 4, 0].set(0.5)  # one soft label, on the 7th shard only
        cases = [(weighting, per_image, False, y) for weighting in ("seed", "pixel", "class")
                 for per_image in (False, True)]
        # The GPU/TPU backward from label codes; the soft label sends one shard down the
        # y/p branch of its cond and the others not.
        cases += [("seed", False, True, y), ("class", True, True, y_soft),
                  ("pixel", False, True, y_soft)]
        worst = [0.0, 0.0]
        for weighting, per_image, codes, labels in cases:
            opts = dict(weight_background=0.5, weight_foreground=1.5, weighting=weighting,
                        per_image=per_image, log=not per_image,
                        backward="label_codes" if codes else "inputs")
            sw = None if weighting == "seed" or codes else w
            whole = jax.value_and_grad(
                lambda y, p, sw: wiou_jax.weighted_iou_loss(y, p, sample_weight=sw, **opts), 1)
            sharded = shard_map(
                lambda y, p, sw: wiou_jax.weighted_iou_loss(y, p, sample_weight=sw,
                                                            axis_name="batch", **opts),
                mesh=mesh, in_specs=(P("batch"),) * 3, out_specs=P())
            l1, g1 = whole(labels, p, sw)
            l2, g2 = jax.jit(jax.value_and_grad(sharded, 1))(
                put(labels), put(p), None if sw is None else put(sw))
            worst[0] = max(worst[0], abs(float(l1) - float(l2)) / float(l1))
            worst[1] = max(worst[1], float(jnp.max(jnp.abs(g1 - g2)) / jnp.max(jnp.abs(g1))))
        print(*worst)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), layout_name], cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    value_err, grad_err = map(float, out.stdout.split()[-2:])
    assert value_err <= 1e-6 and grad_err <= 1e-5


# --- The backward from 1-byte label codes (jax_kernel._label_codes), the GPU/TPU default. --
# This CPU takes the y/p backward by default; backward="label_codes" turns the codes on here
# too, and every result must equal the y/p backward exactly (same float ops on the same values).

def _both_backwards(loss, y_pred):
    results = []
    for backward in ("label_codes", "inputs"):
        value, vjp = jax.vjp(jax.jit(lambda p: loss(p, backward)), y_pred)
        results.append((value, vjp(jnp.asarray(1.7, value.dtype))[0]))
    return results


@pytest.mark.parametrize("labels", ["float32", "uint8", "bool", "soft", "one_soft"])
@pytest.mark.parametrize("pred_dtype", helpers.PRED_DTYPES)
@pytest.mark.parametrize("weighting,per_image,log", [("seed", False, True),
                                                     ("pixel", True, False),
                                                     ("class", False, True),
                                                     ("class", True, True)])
@pytest.mark.parametrize("case", ["random", "empty", "saturated"])
def test_label_code_backward_equals_the_y_p_backward(case, weighting, per_image, log,
                                                     pred_dtype, labels, layout):
    shape = (3, 29, 31, 1)
    y_true, y_pred = _inputs(shape, case, pred_dtype, "float32")
    if labels in ("uint8", "bool"):
        y_true = y_true.astype(labels)
    elif labels == "soft":  # label smoothing: the general branch of the cond
        y_true = y_true * 0.9 + 0.05
    elif labels == "one_soft":  # one soft label in one image is enough to need y and p
        y_true = y_true.at[2, 5, 7, 0].set(0.5)
        y_pred = y_pred.at[2, 5, 7, 0].set(0.3)

    def loss(p, backward):
        return wiou_jax.weighted_iou_loss(y_true, p, weighting=weighting, per_image=per_image,
                                          log=log, weight_background=0.5,
                                          weight_foreground=1.5, backward=backward)

    (v1, g1), (v2, g2) = _both_backwards(loss, y_pred)
    assert g1.dtype == g2.dtype == y_pred.dtype and g1.shape == y_pred.shape
    np.testing.assert_array_equal(np.asarray(v1), np.asarray(v2))
    np.testing.assert_array_equal(np.asarray(g1.astype(jnp.float32)),
                                  np.asarray(g2.astype(jnp.float32)))
    if case != "empty":
        assert float(jnp.max(jnp.abs(g1.astype(jnp.float32)))) > 0


def test_label_codes_say_what_the_backward_needs():
    spec = _iou.SumsSpec(epsilon=1e-7)
    eps = np.float32(1e-7)
    y = jnp.asarray([[0.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.0, 1.0]])
    p = jnp.asarray([[0.3, 0.3, 0.0, 1.0, 0.3, 1.0, eps, 1 - eps]], jnp.float32)
    codes, any_soft = jax_kernel._label_codes(y, p, spec)
    assert codes.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(codes), [[1, 2, 0, 0, 3, 0, 1, 2]])
    assert bool(any_soft)
    # A soft label whose prediction is clipped has zero gradient: no need for y and p.
    codes, any_soft = jax_kernel._label_codes(y[:, 5:], p[:, 5:], spec)
    assert not bool(any_soft)
    # Logits and weight maps always take the y/p backward (their gradient varies per pixel).
    everywhere = ("cpu", "tpu", "cuda", "rocm")
    assert jax_kernel.code_platforms(spec, None, "label_codes") == everywhere
    assert jax_kernel.code_platforms(spec, jnp.ones((1, 8)), "label_codes") == ()
    assert jax_kernel.code_platforms(_iou.SumsSpec(from_logits=True), None,
                                     "label_codes") == ()
    assert jax_kernel.code_platforms(spec, None, "inputs") == ()
    # "auto": the platforms where the codes pay (none: benchmarks/results/aot/).
    assert jax_kernel.code_platforms(spec, None) == jax_kernel.CODE_PLATFORMS
    with pytest.raises(ValueError, match="backward"):
        jax_kernel.code_platforms(spec, None, "codes")


def test_label_code_backward_against_float64_oracle(layout):
    y_true, y_pred = _inputs((5, 123, 123, 1), "random", "float32", "uint8")

    def loss(p):
        return wiou_jax.weighted_iou_loss(y_true, p, weighting="pixel", weight_background=0.5,
                                          weight_foreground=1.5, backward="label_codes")

    value, grad = jax.jit(jax.value_and_grad(loss))(y_pred)
    want, want_grad = oracle.iou_value_and_grad(
        np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64), weighting="pixel",
        weight_background=0.5, weight_foreground=1.5)
    assert helpers.rel_err(np.asarray(value), want) <= helpers.VALUE_RTOL
    assert helpers.rel_err(np.asarray(grad), want_grad) <= helpers.GRAD_RTOL["float32"]


def test_plain_jax_api_imports_without_keras_or_tensorflow():
    """wiou_ops.jax needs JAX only: with Keras and TensorFlow unimportable, the package
    imports, the plain-JAX loss runs, and the Keras names say what is missing."""
    code = """
        import importlib.abc, sys

        class NoFrameworks(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("keras", "tensorflow"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoFrameworks())
        import jax.numpy as jnp
        import wiou_ops.jax
        y = jnp.asarray([[0.0, 1.0, 1.0, 0.0]])
        p = jnp.asarray([[0.2, 0.7, 0.9, 0.4]])
        print(float(wiou_ops.jax.weighted_iou_loss(y, p)))
        assert not {"keras", "tensorflow"} & set(sys.modules)
        import wiou_ops
        try:
            wiou_ops.WeightedIoULoss
        except ImportError as error:
            assert "Keras" in str(error) and "wiou_ops.jax" in str(error), error
        else:
            raise AssertionError("WeightedIoULoss imported without Keras")
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    inter, union = 0.7 + 0.9, 0.2 + 1.0 + 1.0 + 0.4  # y·p and y + p - y·p summed
    want = -np.log((inter + 1e-7) / (union + 1e-7))
    assert float(out.stdout.split()[-1]) == pytest.approx(want, rel=1e-6)


def test_native_layout_keeps_the_inputs_shape(layout):
    """What the layout fixture runs: the rows layout views the input as blocks of 32
    behind barriers; the native one sums over the input's own axes, no reshape of it."""
    y_true, y_pred = _inputs((4, 64, 64, 1), "random", "bfloat16", "uint8")
    text = jax.jit(jax.grad(lambda p: wiou_jax.weighted_iou_loss(y_true, p))).lower(
        y_pred).as_text()
    blocks = "x32x" in text  # the (G, n/32, 32) view of the rows layout
    assert blocks == (layout == "rows")
    # The GPU backward's barrier holds the inputs themselves (no data moves through it).
    barriers = [line for line in text.splitlines() if "optimization_barrier" in line]
    on_inputs = any("4x64x64x1xbf16" in line for line in barriers)
    assert on_inputs == (layout == "native-gpu")


@pytest.mark.parametrize("platform,limit", [("tpu", _iou.SUM_CHAIN_LIMIT),
                                            ("cpu", _iou.CPU_SUM_CHAIN_LIMIT),
                                            ("gpu", _iou.GPU_ROW_STAGE_LIMIT)])
@pytest.mark.parametrize("shape,axes", [((3, 5, 7), (0, 1, 2)), ((1, 2**31), (0, 1)),
                                        ((128, 512, 512, 1), (0, 1, 2, 3)),
                                        ((8, 512, 512, 19), (0, 1, 2)),
                                        ((4, 512, 512, 1), (1, 2, 3)), ((2**17 + 1,), (0,)),
                                        ((4, 2**20, 1), (0, 1, 2)), ((6, 1, 1), (0, 1, 2)),
                                        ((2, 7, 2**14, 3), (1, 2))])
def test_reduction_stages_bound_the_chain(shape, axes, platform, limit):
    """Every stage adds at most the platform's limit of numbers into one output (an axis
    split where one alone is longer), and the stages sum every element exactly once. On
    GPU each stage sums adjacent axes (a plain row or column reduction), a column one at
    most GPU_COLUMN_STAGE_LIMIT."""
    steps = _iou.stages_for(platform, shape, axes)
    if platform == "gpu" and (len(shape) - 1) not in axes:
        limit = _iou.GPU_COLUMN_STAGE_LIMIT
    # 2^17 + 1 = 3 x 43691 (a prime): that factor is summed whole, as any such axis is.
    assert _iou.chain_bound(shape, steps) <= (43691 if shape == (2**17 + 1,) else limit)
    kept = shape
    for step in steps:
        if step[0] == "split":
            assert kept[step[1]] % step[2] == 0
        elif platform == "gpu":
            assert list(step[1]) == list(range(step[1][0], step[1][-1] + 1)), steps
        kept = _iou.stage_shape(kept, step)
    # What is left is the axes not summed over, in order: every summed element counted once.
    assert kept == tuple(n for a, n in enumerate(shape) if a not in axes)


def test_staged_sum_is_accurate_in_float32():
    """The staged sums in float32 against float64, at 2^22 elements of one group."""
    rng = np.random.default_rng(3)
    x = rng.random((4, 1024, 1024), np.float32)
    got = jax.jit(lambda v: jax_kernel.staged_sum(v, (0, 1, 2)))(jnp.asarray(x))
    assert abs(float(got) - x.astype(np.float64).sum()) <= 1e-6 * x.astype(np.float64).sum()
