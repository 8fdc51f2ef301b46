"""The experimental Pallas (Triton) forward (wiou_ops/experimental/pallas.py): interpreted
here, lowered for CUDA; the GPU benchmark times it."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from tests import helpers
from wiou_ops import _iou
from wiou_ops import jax as wiou_jax
from wiou_ops._kernels import jax as jax_kernel
from wiou_ops.experimental import pallas


def _inputs(shape, case, pred_dtype, true_dtype):
    y_true, y_pred = helpers.make_inputs(shape, case, pred_dtype, true_dtype)
    return jnp.asarray(y_true.numpy()), jnp.asarray(y_pred.numpy())


@pytest.mark.parametrize("groups,n", [(1, 1), (3, 4096), (2, 10000), (1, 3 * 4096 + 7)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("pred_dtype,true_dtype", [("float32", "float32"),
                                                   ("bfloat16", "uint8"),
                                                   ("float16", "int32")])
@pytest.mark.parametrize("weighting", ["seed", "pixel", "class"])
def test_pallas_forward_matches_the_xla_forward(weighting, pred_dtype, true_dtype, groups, n):
    rng = np.random.default_rng(n)
    y = jnp.asarray(rng.random((groups, n)) < 0.1).astype(true_dtype)
    p = rng.random((groups, n)).astype(np.float32)
    p.reshape(-1)[: 4 * (p.size // 8)] = np.tile(np.float32([0, 1, 1e-7, 1 - 1e-7]),
                                                   p.size // 8)  # clipped and ties
    p = jnp.asarray(p).astype(pred_dtype)
    spec = _iou.SumsSpec(weighting=weighting, per_image=groups > 1,
                              weight_background=0.5, weight_foreground=1.5)
    sums, codes, any_soft = pallas.sums_and_codes(y, p, spec)
    want_sums = jax_kernel._local_sums(y, p, None, spec)
    want_codes, want_soft = jax_kernel._label_codes(y.astype(jnp.float32),
                                                    p.astype(jnp.float32), spec)
    np.testing.assert_allclose(np.asarray(sums), np.asarray(want_sums), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(want_codes))
    assert not bool(any_soft) and not bool(want_soft)
    if true_dtype == "float32" and n > 1:  # a soft label in the last block of the last group
        y_soft = y.at[-1, -1].set(0.5)
        p_in = p.at[-1, -1].set(0.5)
        _, codes, any_soft = pallas.sums_and_codes(y_soft, p_in, spec)
        assert bool(any_soft) and int(codes[-1, -1]) == _iou.CODE_SOFT


def test_loss_with_the_pallas_forward_matches_the_default():
    y_true, y_pred = _inputs((3, 67, 71, 1), "random", "float32", "uint8")
    for weighting, per_image in (("seed", False), ("class", True)):
        options = dict(weighting=weighting, per_image=per_image, weight_background=0.5,
                       weight_foreground=1.5)
        want = jax.jit(jax.value_and_grad(
            lambda p: wiou_jax.weighted_iou_loss(y_true, p, **options)))(y_pred)
        got = jax.jit(jax.value_and_grad(
            lambda p: pallas.weighted_iou_loss(y_true, p, **options)))(y_pred)
        assert helpers.rel_err(np.asarray(got[0]), np.asarray(want[0])) <= 1e-6
        assert helpers.rel_err(np.asarray(got[1]), np.asarray(want[1])) <= 1e-6


@pytest.mark.parametrize("weighting", ["seed", "class"])
def test_pallas_forward_lowers_to_triton_for_cuda(weighting):
    """The kernel passes Pallas's Triton lowering (block shapes, primitives) here, without a
    GPU, for the GPU that the benchmark machines have (an H100: compute capability 9.0);
    compiling the Triton IR to PTX happens on the GPU (benchmarks/gpu_jax_bench.py).

    JAX 0.11 asks the target GPU of the abstract mesh (it no longer lowers Triton for a
    CPU default device); JAX 0.10 takes the same mesh."""
    spec = _iou.SumsSpec(weighting=weighting)
    y = jax.ShapeDtypeStruct((4, 512 * 512), jnp.uint8)
    p = jax.ShapeDtypeStruct((4, 512 * 512), jnp.bfloat16)
    h100 = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132,
                                       platform="gpu")
    target = jax.sharding.AbstractMesh((1,), ("batch",), (jax.sharding.AxisType.Explicit,),
                                       abstract_device=h100)
    with jax.sharding.use_abstract_mesh(target):
        lowered = jax.jit(lambda y, p: pallas.sums_and_codes(y, p, spec, interpret=False)
                          ).trace(y, p).lower(lowering_platforms=("cuda",))
    assert "__gpu$xla.gpu.triton" in lowered.as_text()
