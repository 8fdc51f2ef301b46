import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(params=["rows", "native", "native-gpu"])
def layout(request, monkeypatch):
    """Every program of the kernel, run on this CPU: "rows" (XLA:CPU's own, blocked sums),
    "native" (TPU: the inputs' own shape, staged sums) and "native-gpu" (GPU: the staged
    sums planned for XLA:GPU, the barrier before the backward recomputes p̂, float32 ids),
    the native ones by lowering their branch for CPU. Caches are cleared so that no trace
    of another layout is reused."""
    import jax

    from wiou_ops._kernels import jax as jax_kernel

    jax.clear_caches()
    if request.param != "rows":
        monkeypatch.setattr(jax_kernel, "ROW_PLATFORMS", ())
    if request.param == "native-gpu":
        monkeypatch.setattr(jax_kernel, "RECOMPUTE_PLATFORMS", ("cpu",))
        monkeypatch.setattr(jax_kernel, "GPU_STAGE_PLATFORMS", ("cpu",))
    yield request.param
    jax.clear_caches()
