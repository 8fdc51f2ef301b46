"""Experimental: a Pallas (Triton) forward for NVIDIA GPUs, the sums and the label codes
in one pass.

The JAX kernel (``wiou_ops._kernels.jax``) computes the sums and the 1-byte label
codes (``_iou.label_codes``) as separate XLA expressions and relies on XLA's
multi-output fusion to read y and p once for both. This kernel does it by construction: each program reads one
block of y and p, writes the block's codes and one partial sum per term (and the
count of soft labels); XLA adds the partial sums (a few per 4096 pixels). The
backward from the codes is a plain XLA elementwise pass, already minimal.

Per block b of group g (``_iou.terms``, codes as in ``_iou.label_codes``)::

    partial[k][g, b] = Σ_{i in b} term_k(y_i, p̂_i)      k < K
    partial[K][g, b] = #{i in b: code_i = soft}
    codes[g, i]      = _iou.label_codes(y_i, p_i)   (clipped, y = 0, y = 1, soft)

For hard labels without weight map or logits only (where the codes apply).
``interpret=True`` runs the same kernel on any backend (the tests, on CPU).
No default path runs it: ``weighted_iou_loss`` here is ``wiou_ops.jax``'s loss with
this forward, for the GPU benchmark to time against the default. JAX 0.11
deprecates Pallas's Triton backend for Mosaic GPU (it still lowers and runs there):
a kernel kept after a GPU run should move to Mosaic GPU.
"""

import types

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

import wiou_ops.jax
from wiou_ops import _iou

BLOCK = 4096  # pixels per program: a power of two (Triton), 16 per thread at 8 warps
NUM_WARPS = 8
_LABEL_DTYPES = ("float32", "float16", "bfloat16", "uint8", "int8", "int32")
_PRED_DTYPES = ("float32", "float16", "bfloat16")


def weighted_iou_loss(y_true, y_pred, **options):
    """``wiou_ops.jax.weighted_iou_loss`` with this kernel as the forward (and the backward
    from its label codes) where it applies; the default kernel elsewhere."""
    options.setdefault("backward", "label_codes")
    return wiou_ops.jax._loss(y_true, y_pred, codes_forward=_forward_if_supported, **options)


def _forward_if_supported(y, x, spec):
    """The kernel's ``codes_forward`` hook: None where this kernel does not apply."""
    return sums_and_codes(y, x, spec) if supports(y, x, spec, None) else None


# ``_iou``'s array namespace, with the clip as min/max (what Triton lowers).
PALLAS_OPS = types.SimpleNamespace(
    clip=lambda x, lo, hi: jnp.minimum(jnp.maximum(x, lo), hi), sigmoid=jax.nn.sigmoid,
    where=jnp.where, log=jnp.log)


def supports(y_true, y_pred, spec, weights):
    """Whether this kernel computes what the JAX kernel asks for these inputs."""
    return (weights is None and not spec.from_logits and y_pred.size < 2**31  # int32 offsets
            and str(y_true.dtype) in _LABEL_DTYPES and str(y_pred.dtype) in _PRED_DTYPES)


def sums_and_codes(y, x, spec, *, interpret=None):
    """(sums (G, K) float32, codes (G, n) uint8, any soft label) of grouped y, x (G, n).

    ``interpret``: None runs the kernel compiled on a GPU and interpreted elsewhere.
    """
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    groups, n = x.shape
    blocks = pl.cdiv(n, BLOCK)
    num_terms = spec.num_terms

    def kernel(y_ref, x_ref, codes_ref, *partial_refs):
        index = pl.program_id(1) * BLOCK + jnp.arange(BLOCK)
        valid = index < n  # the last block of a group may run past its end
        y_blk = _load(y_ref, valid, interpret).astype(jnp.float32)
        x_blk = _load(x_ref, valid, interpret).astype(jnp.float32)
        terms = _iou.sums_terms(y_blk, x_blk, _iou.element_weight(y_blk, None, spec), spec,
                                PALLAS_OPS)
        codes = _iou.label_codes(y_blk, x_blk, spec, jnp.where)
        _store(codes_ref, codes.astype(jnp.uint8), valid, interpret)
        soft = (codes == _iou.CODE_SOFT).astype(jnp.float32)
        for ref, value in zip(partial_refs, [*terms, soft]):
            ref[...] = jnp.sum(jnp.where(valid, value, 0.0))

    row_block = pl.BlockSpec((None, BLOCK), lambda g, b: (g, b))
    one_value = pl.BlockSpec((None, None), lambda g, b: (g, b))
    params = {}
    if not interpret:
        from jax.experimental.pallas import triton as pl_triton

        params["compiler_params"] = pl_triton.CompilerParams(num_warps=NUM_WARPS, num_stages=1)
    codes, *partials = pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct((groups, n), jnp.uint8)]
        + [jax.ShapeDtypeStruct((groups, blocks), jnp.float32)] * (num_terms + 1),
        grid=(groups, blocks),
        in_specs=[row_block, row_block],
        out_specs=[row_block] + [one_value] * (num_terms + 1),
        interpret=interpret,
        name="wiou_sums_and_codes",
        **params,
    )(y, x)
    sums = jnp.stack([part.sum(axis=1) for part in partials[:num_terms]], axis=1)
    return sums, codes, partials[num_terms].sum() > 0


def _load(ref, mask, interpret):
    if interpret:  # blocks past the end are padded there; the mask zeroes their terms
        return ref[...]
    from jax.experimental.pallas import triton as pl_triton

    return pl_triton.load(ref, mask=mask, other=0)


def _store(ref, value, mask, interpret):
    if interpret:
        ref[...] = value
        return
    from jax.experimental.pallas import triton as pl_triton

    pl_triton.store(ref, value, mask=mask)
