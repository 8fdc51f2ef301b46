"""JAX past 2^31 elements: the counts on this CPU, and the TPU lowering, checked.

* The value of one group past 2^31 elements, inputs generated inside the compiled
  function (a periodic pattern whose float64 sums are exact products), plain JAX
  and the Keras class on the JAX backend. In a subprocess without XLA:CPU's
  YNNPACK reduction fusion: that fusion writes the float32 terms out first
  (12 bytes per element, 26 GB here; the flag is XLA's own, and also makes the
  loss ~10x faster on CPU), which does not fit this 24 GB machine.
* ``jax.export`` for TPU of the sharded loss (8-device mesh, ``axis_name``), for
  every weighting, with and without per_image, at a global shape past 2^31: it
  lowers, with no host callback or custom call, and its element counts are the
  exact integers rounded once to float32 (never an int32 that wrapped).
"""

import math
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jax.numpy as jnp
from jax import lax

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 8200 * 262_179  # one row of 2^31 + 2.4e6 elements, no multiple of 32
PERIOD = 1000
LO, HI = float(np.float32(1e-7)), float(np.float32(1 - 1e-7))
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="


def _pattern():
    """(y uint8, p bfloat16) of shape (1, N): element i holds p = (i mod 1000)/1000, y = 1
    where i mod 20 = 0 (uint32 indices: N < 2^32)."""
    k = lax.broadcasted_iota(jnp.uint32, (1, N), 1) % PERIOD
    return (k % 20 == 0).astype(jnp.uint8), (k.astype(jnp.float32) / PERIOD).astype(jnp.bfloat16)


def _oracle(weighting):
    """Float64 value: each residue k appears N // 1000 (+1 for k < N mod 1000) times."""
    k = np.arange(PERIOD)
    counts = (N // PERIOD + (k < N % PERIOD)).astype(np.float64)
    p = np.asarray(jnp.asarray(k.astype(np.float32) / PERIOD).astype(jnp.bfloat16),
                   np.float64)
    y = (k % 20 == 0).astype(np.float64)
    p_hat = np.clip(p, LO, HI)

    def log_ratio(inter, union):
        return -math.log((inter + LO) / (union + LO))

    inter = math.fsum(counts * y * p_hat)
    union = math.fsum(counts * (y + p_hat - y * p_hat))
    if weighting == "seed":
        n1 = math.fsum(counts * y)
        return log_ratio(inter, union) * (0.5 * (N - n1) + 1.5 * n1) / N
    # class weighting: the background IoU of 1 - y and 1 - p̂ too
    inter_b = math.fsum(counts * (1 - y) * (1 - p_hat))
    union_b = math.fsum(counts * ((1 - y) + y * (1 - p_hat)))
    return (1.5 * log_ratio(inter, union) + 0.5 * log_ratio(inter_b, union_b)) / 2.0


def _run(code, **env):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
                                  XLA_FLAGS=NO_YNN, **env),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [float(v) for v in out.stdout.split()]


@pytest.mark.large
def test_value_of_one_group_past_int32():
    got = _run("""
        import jax
        from wiou_ops import jax as wiou_jax
        from tests.test_jax_past_int32 import _pattern
        for weighting in ("seed", "class"):
            loss = jax.jit(lambda: wiou_jax.weighted_iou_loss(
                *_pattern(), weight_background=0.5, weight_foreground=1.5, weighting=weighting))
            print(float(loss()))
    """)
    for value, weighting in zip(got, ["seed", "class"]):
        want = _oracle(weighting)
        assert abs(value - want) <= 1e-6 * want, (weighting, value, want)


@pytest.mark.large
def test_keras_loss_on_the_jax_backend_counts_past_int32():
    """The Keras class on the JAX backend: its own count and reduction at that size."""
    got = _run("""
        import jax, keras
        import wiou_ops
        from tests.test_jax_past_int32 import _pattern
        assert keras.backend.backend() == "jax"
        loss = wiou_ops.WeightedIoULoss(0.5, 1.5)
        print(float(jax.jit(lambda: loss(*_pattern()))()))
    """, KERAS_BACKEND="jax")
    want = _oracle("seed")
    assert abs(got[-1] - want) <= 1e-6 * want, (got, want)


def test_sharded_loss_lowers_for_tpu_past_int32():
    code = """
        import os, re
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        try:
            from jax import shard_map
        except ImportError:
            from jax.experimental.shard_map import shard_map
        from wiou_ops import jax as wiou_jax
        mesh = jax.make_mesh((8,), ("batch",))
        shape = (8200, 511, 513, 1)  # 2^31 + 2e6 elements over 8 shards: n is no float32
        n = int(np.prod(shape))
        wrapped = (n + 2**31) % 2**32 - 2**31
        sharding = NamedSharding(mesh, P("batch"))
        y = jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=sharding)
        p = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=sharding)
        for codes in (False, True):  # the TPU backward: from y and p, or from label codes
            for weighting in ("seed", "pixel", "class"):
                for per_image in (False, True):
                    loss = shard_map(
                        lambda y, p: wiou_jax.weighted_iou_loss(
                            y, p, weighting=weighting, per_image=per_image,
                            weight_background=0.5, weight_foreground=1.5, axis_name="batch",
                            backward="label_codes" if codes else "inputs"),
                        mesh=mesh, in_specs=(P("batch"), P("batch")), out_specs=P())
                    step = jax.jit(jax.value_and_grad(loss, 1))
                    text = jax.export.export(step, platforms=("tpu",))(y, p).mlir_module()
                    assert "custom_call" not in text and "callback" not in text, weighting
                    numbers = set()
                    for value, kind in re.findall(
                            r"constant dense<([-0-9.eE+]+)> : tensor<([a-z0-9]+)>", text):
                        numbers.add(float(np.float32(value)))
                        assert kind != "i64" or abs(float(value)) < 2**31
                    assert float(np.float32(wrapped)) not in numbers
                    if weighting == "seed":  # the element count divides: once, in float32
                        assert float(np.float32(n)) in numbers, sorted(numbers)
                    elif per_image:  # the mean over the global batch's images
                        assert float(shape[0]) in numbers, sorted(numbers)
        print("ok")
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == "ok"

