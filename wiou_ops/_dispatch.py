"""The one place that picks an implementation of the fused loss.

Rules (DESIGN.md, "Dispatch"):

* inside an XLA context (a user's ``jit_compile=True`` step, TPU) -> ``xla``:
  anything else would break the user's compile;
* CPU tensors outside XLA with the native op loaded -> ``native`` (not built
  yet: issue #3);
* otherwise -> ``xla`` (its own nested ``jit_compile``), on GPU and, until the
  native op lands, on CPU too. DESIGN.md sends CPU to ``graph`` because
  XLA:CPU runs the *seed* no faster than graph mode; the fused loss is a
  different story: measured at 16x512x512x1 float32 forward+backward on the
  2-core CI machine, ``xla`` 9.5 ms against ``graph`` 16.8 ms (report in
  benchmarks/results/). ``graph`` stays available by name.

``last_implementation()`` tells which one the most recent call (or trace)
used, so tests and users can check the dispatch.
"""

import tensorflow as tf

from wiou_ops import _xla

try:  # private but stable for years; the same check tf.function itself uses.
    from tensorflow.python.framework import ops as _tf_ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover
    _control_flow_util = None

IMPLEMENTATION_CHOICES = ("auto", "xla", "native", "graph")

_IMPLEMENTATIONS = {"xla": _xla.XLA, "graph": _xla.GRAPH}
_NOT_BUILT = {"native": "the native CPU kernel lands with issue #3 (kernels/)"}

_last = None


def available_implementations():
    """Names of the implementations usable in this process, e.g. ['xla', 'graph']."""
    return list(_IMPLEMENTATIONS)


def last_implementation():
    """Name of the implementation chosen by the latest call or trace, or None."""
    return _last


def in_xla_context():
    """True while tracing inside ``tf.function(jit_compile=True)`` or a TPU computation."""
    if _control_flow_util is None or tf.executing_eagerly():
        return False
    return _control_flow_util.GraphOrParentsInXlaContext(_tf_ops.get_default_graph())


def select(implementation, y_pred):
    """Returns the implementation object for ``implementation`` and ``y_pred``."""
    global _last
    if implementation == "auto":
        name = "xla"
    elif implementation in _IMPLEMENTATIONS:
        name = implementation
    elif implementation in _NOT_BUILT:
        raise NotImplementedError(
            f"implementation={implementation!r} is not available: "
            f"{_NOT_BUILT[implementation]}. Available: {available_implementations()}."
        )
    else:
        raise ValueError(
            f"Unknown implementation={implementation!r}; "
            f"expected one of {IMPLEMENTATION_CHOICES}."
        )
    _last = name
    return _IMPLEMENTATIONS[name]
