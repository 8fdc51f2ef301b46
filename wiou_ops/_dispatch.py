"""The one place that picks an implementation of the fused loss.

Rules (DESIGN.md, "Dispatch"), for ``implementation="auto"``:

* inside an XLA context (a user's ``jit_compile=True`` step, TPU) -> ``xla``:
  a native op there would break the user's compile;
* CPU tensors outside XLA, native op loaded, dtypes it has kernels for ->
  ``native``;
* otherwise -> ``xla`` (its own nested ``jit_compile``): on GPU, and on CPU
  when the native op is missing. DESIGN.md names ``graph`` for that last case
  because XLA:CPU runs the *seed* no faster than graph mode; for the fused
  loss XLA:CPU is the faster one (16x512x512x1 float32 forward+backward on the
  2-core CI machine: ``xla`` ~10 ms, ``graph`` ~16 ms; benchmarks/results/).
  ``graph`` stays available by name.

``last_implementation()`` tells which one the most recent call (or trace)
used, so tests and users can check the dispatch.
"""

import tensorflow as tf

from wiou_ops import _native, _xla

try:  # private but stable for years; the same check tf.function itself uses.
    from tensorflow.python.framework import ops as _tf_ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover
    _control_flow_util = None

IMPLEMENTATION_CHOICES = ("auto", "xla", "native", "graph")

_IMPLEMENTATIONS = {"xla": _xla.XLA, "graph": _xla.GRAPH}
if _native.NATIVE is not None:
    _IMPLEMENTATIONS = {"native": _native.NATIVE, **_IMPLEMENTATIONS}

_last = None


def available_implementations():
    """Names of the implementations usable in this process, e.g. ['native', 'xla', 'graph']."""
    return list(_IMPLEMENTATIONS)


def last_implementation():
    """Name of the implementation chosen by the latest call or trace, or None."""
    return _last


def in_xla_context():
    """True while tracing inside ``tf.function(jit_compile=True)`` or a TPU computation."""
    if _control_flow_util is None or tf.executing_eagerly():
        return False
    return _control_flow_util.GraphOrParentsInXlaContext(_tf_ops.get_default_graph())


def _on_cpu(tensor):
    if not tf.config.list_logical_devices("GPU"):
        return True
    # With a GPU visible, an unplaced graph tensor will most likely go there.
    return "CPU" in (getattr(tensor, "device", "") or "").upper()


def _check_native(y_true, y_pred):
    if "native" not in _IMPLEMENTATIONS:
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
    """Returns the implementation object for ``implementation`` and these inputs."""
    global _last
    if implementation == "auto":
        use_native = (
            "native" in _IMPLEMENTATIONS
            and not in_xla_context()
            and _on_cpu(y_pred)
            and _native.supports(y_true, y_pred)
        )
        name = "native" if use_native else "xla"
    elif implementation == "native":
        _check_native(y_true, y_pred)
        name = "native"
    elif implementation in _IMPLEMENTATIONS:
        name = implementation
    else:
        raise ValueError(
            f"Unknown implementation={implementation!r}; "
            f"expected one of {IMPLEMENTATION_CHOICES}."
        )
    _last = name
    return _IMPLEMENTATIONS[name]
