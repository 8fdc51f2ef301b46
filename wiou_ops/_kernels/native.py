"""The native CPU kernel (C++ in ``kernels/``): loading, version check, the ``native``
implementation.

``setup.py`` compiles ``kernels/`` into ``wiou_ops/_wiou_ops_native.so`` against the
installed TensorFlow and stamps that TensorFlow's version into the file
(``WIOU_BUILT_FOR_TENSORFLOW=...``). Loading an op library built for another
TensorFlow can crash the process, so the stamp is read from the file's bytes
and a mismatch is refused before loading. Whatever
stops the op (not built, no compiler at install, another TensorFlow, a load
error) gives one warning and ``native`` is simply not offered;
``WIOU_OPS_DISABLE_NATIVE=1`` turns it off silently.

The kernels take y_pred float32/float16/bfloat16 and y_true
float32/float16/bfloat16/uint8/int32/bool; other dtypes go to ``xla``.
"""

import os
import warnings

import tensorflow as tf

from wiou_ops._kernels.custom_gradient import FusedIoUSums
from wiou_ops._kernels.native_library import (  # noqa: F401 - LIBRARY_NAME: for callers
    LIBRARY_NAME, PACKAGE_DIR, built_for, library_path)

DISABLE_VARIABLE = "WIOU_OPS_DISABLE_NATIVE"

PRED_DTYPES = (tf.float32, tf.float16, tf.bfloat16)
TRUE_DTYPES = (tf.float32, tf.float16, tf.bfloat16, tf.uint8, tf.int32, tf.bool)


def load(directory=PACKAGE_DIR):
    """Returns ``(op_library, None)`` or ``(None, reason it is not available)``."""
    if os.environ.get(DISABLE_VARIABLE, "") not in ("", "0"):
        return None, f"disabled by {DISABLE_VARIABLE}"
    library = library_path(directory)
    if not library.exists():
        return None, (
            "the native CPU kernel is not built (no C++ compiler or no TensorFlow when the "
            "package was built); build it with `pip install --no-build-isolation -e .` "
            "or `make test`"
        )
    version = built_for(library)
    if version is None:
        return None, f"{library} carries no TensorFlow version stamp; rebuild it"
    if version != tf.__version__:
        return None, (
            f"the native CPU kernel was built for TensorFlow {version}, but TensorFlow "
            f"{tf.__version__} is running; rebuild it with `pip install --no-build-isolation -e .`"
        )
    try:
        return tf.load_op_library(str(library)), None
    except (tf.errors.NotFoundError, OSError) as err:
        return None, f"the native CPU kernel failed to load: {err}"


def supports(y_true, y_pred):
    """True when the kernels are registered for these dtypes."""
    return y_pred.dtype in PRED_DTYPES and y_true.dtype in TRUE_DTYPES


def stream_read(x):
    """Sum of a float32 tensor at streaming-read speed (benchmark instrument), or None."""
    if _library is None:
        return None
    return _library.wiou_stream_read(x)


def _attrs(spec):
    return dict(
        weighting=spec.weighting,
        from_logits=spec.from_logits,
        per_image=spec.per_image,
        epsilon=spec.epsilon,
        weight_background=spec.weight_background,
        weight_foreground=spec.weight_foreground,
    )


def _weight_map(weights):
    # The ops take an empty tensor for "no weight map" (s = 1).
    return tf.zeros([0], tf.float32) if weights is None else tf.cast(weights, tf.float32)


def make(library, write_masks=True):
    """The ``native`` implementation.

    With ``write_masks`` (no weight map or logits, and a gradient tape
    recording) the forward also writes two bits per element (clip range,
    y = 1) and a flag that every label that mattered was 0 or 1; the backward
    then reads those instead of y and p (kernels/wiou_math_api.h). Same bits
    either way; a soft label anywhere falls back to y and p.
    """
    def forward(y_true, y_pred, weights, spec, for_gradient):
        sums, label_masks, masks_complete = library.wiou_iou_sums(
            y_true, y_pred, _weight_map(weights), write_masks=write_masks and for_gradient,
            **_attrs(spec))
        return sums, (label_masks, masks_complete)

    def backward(y_true, y_pred, weights, coef, spec, saved):
        label_masks, masks_complete = saved
        return library.wiou_iou_sums_grad(y_true, y_pred, _weight_map(weights),
                                          tf.cast(coef, tf.float32), label_masks,
                                          masks_complete, **_attrs(spec))

    return FusedIoUSums("native", forward, backward)


def variant(write_masks):
    """The ``native`` implementation with or without the label masks (benchmarks compare
    the two); None when the kernel is not available."""
    return make(_library, write_masks=write_masks) if _library is not None else None


_library, UNAVAILABLE_REASON = load()
NATIVE = variant(write_masks=True)
if NATIVE is None and not UNAVAILABLE_REASON.startswith("disabled"):
    warnings.warn(
        f"wiou_ops: {UNAVAILABLE_REASON}. Falling back to the 'xla' implementation on CPU.",
        RuntimeWarning,
        stacklevel=2,
    )
