"""The one place that picks an implementation of the fused loss.

By Keras backend: TensorFlow -> ``_tf_loss`` with one of the TensorFlow
implementations below; JAX -> ``_jax_loss`` (``wiou_ops/_jax.py``); any other
backend (PyTorch, NumPy) -> ``_ops_loss``, the same sums and their hand-written
VJP in ``keras.ops`` ("ops"). Nothing here imports TensorFlow unless the
backend is TensorFlow, so a JAX-only or PyTorch-only machine can use the package.

TensorFlow, ``implementation="auto"`` (DESIGN.md, "Dispatch"):

* inside an XLA context (a user's ``jit_compile=True`` step, TPU) -> ``xla``:
  a native op there would break the user's compile;
* CPU tensors outside XLA, native op loaded, dtypes it has kernels for ->
  ``native``;
* otherwise -> ``xla`` (its own nested ``jit_compile``): on GPU, and on CPU
  when the native op is missing. DESIGN.md names ``graph`` for that last case
  because XLA:CPU runs the *seed* no faster than graph mode; for the fused
  loss XLA:CPU is the faster one (16x512x512x1 float32 forward+backward on the
  2-core CI machine: ``xla`` ~12 ms, ``graph`` ~18-20 ms; benchmarks/results/).
  ``graph`` stays available by name.

``last_implementation()`` tells which one the most recent call (or trace)
used, so tests and users can check the dispatch.
"""

import functools

import keras

IMPLEMENTATION_CHOICES = ("auto", "xla", "native", "graph")

_last = None


@functools.lru_cache(maxsize=None)
def _tf_implementations():
    """name -> implementation object, TensorFlow backend (imports TensorFlow)."""
    from wiou_ops import _native, _xla

    found = {"xla": _xla.XLA, "graph": _xla.GRAPH}
    if _native.NATIVE is not None:
        found = {"native": _native.NATIVE, **found}
    return found


if keras.backend.backend() == "tensorflow":
    _tf_implementations()  # load the native op now: its warning, if any, comes at import


def available_implementations():
    """Names usable in this process for the current Keras backend, e.g. ['native', 'xla', 'graph']."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return list(_tf_implementations())
    return ["jax"] if backend == "jax" else ["ops"]


def last_implementation():
    """Name of the implementation chosen by the latest call or trace, or None."""
    return _last


def compute(y_true, y_pred, sample_weight, mask, options, trace=True):
    """The loss for the current Keras backend (options from losses.validate_options)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from wiou_ops import _tf_loss

        return _tf_loss.compute(y_true, y_pred, sample_weight, mask, options, trace=trace)
    if backend == "jax":
        from wiou_ops import _jax_loss

        return _jax_loss.compute(y_true, y_pred, sample_weight, mask, options)
    from wiou_ops import _ops_loss

    return _ops_loss.compute(y_true, y_pred, sample_weight, mask, options)


def in_xla_context():
    """True while tracing inside ``tf.function(jit_compile=True)`` or a TPU computation."""
    import tensorflow as tf

    try:  # private but stable for years; the same check tf.function itself uses.
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover
        return False
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def _on_cpu(tensor):
    import tensorflow as tf

    if not tf.config.list_logical_devices("GPU"):
        return True
    # With a GPU visible, an unplaced graph tensor will most likely go there.
    return "CPU" in (getattr(tensor, "device", "") or "").upper()


def _check_native(y_true, y_pred):
    from wiou_ops import _native

    if "native" not in _tf_implementations():
        raise ValueError(
            f"implementation='native' is not available: {_native.UNAVAILABLE_REASON}. "
            f"Available: {available_implementations()}."
        )
    if in_xla_context():
        raise ValueError(
            "implementation='native' cannot run inside an XLA computation "
            "(jit_compile=True or TPU): use 'auto' or 'xla' there."
        )
    if not _native.supports(y_true, y_pred):
        raise TypeError(
            "implementation='native' has kernels for y_pred float32/float16/bfloat16 and "
            "y_true float32/float16/bfloat16/uint8/int32/bool, got y_pred "
            f"{y_pred.dtype.name} and y_true {y_true.dtype.name}."
        )


def select(implementation, y_true, y_pred):
    """TensorFlow backend: the implementation object for ``implementation`` and these inputs."""
    global _last
    from wiou_ops import _native

    implementations = _tf_implementations()
    if implementation == "auto":
        use_native = (
            "native" in implementations
            and not in_xla_context()
            and _on_cpu(y_pred)
            and _native.supports(y_true, y_pred)
        )
        name = "native" if use_native else "xla"
    elif implementation == "native":
        _check_native(y_true, y_pred)
        name = "native"
    elif implementation in implementations:
        name = implementation
    else:
        raise ValueError(
            f"Unknown implementation={implementation!r}; "
            f"expected one of {IMPLEMENTATION_CHOICES}."
        )
    _last = name
    return implementations[name]


def select_jax(implementation):
    """JAX backend: 'auto' and 'xla' mean the JAX implementation (XLA-compiled by jit)."""
    global _last
    if implementation not in ("auto", "xla"):
        raise ValueError(
            f"implementation={implementation!r} is a TensorFlow implementation; on the JAX "
            "backend use 'auto' (or 'xla')."
        )
    _last = "jax"
    return "jax"


def select_ops(implementation):
    """Other Keras backends (PyTorch, NumPy): only ``keras.ops`` ("auto")."""
    global _last
    if implementation != "auto":
        raise ValueError(
            f"implementation={implementation!r} is not available on the "
            f"{keras.backend.backend()!r} Keras backend: use 'auto' (keras.ops).")
    _last = "ops"
    return "ops"
