"""The native CPU kernel (C++ in ``kernels/``): loading, version check, the ``native``
implementation.

``native_library.locate`` finds the library: the one shipped in the package when it was
built for the running TensorFlow from this package's sources, else one in the user's
cache, else it compiles one there now (once, under a file lock) from the sources the
package ships, with the running TensorFlow's ``tf.sysconfig`` flags. Whatever stops the
op (no compiler, a failed build, a cache someone else could write, a load error) gives
one warning and ``native`` is simply not offered; ``WIOU_OPS_DISABLE_NATIVE=1`` turns it
off silently.

The library holds the loops at every instruction-set level and picks the widest the
CPU supports when it loads; ``WIOU_OPS_ISA=baseline|avx2|avx512`` lowers it.

The kernels take y_pred float32/float16/bfloat16 and y_true
float32/float16/bfloat16/uint8/int32/bool; other dtypes go to ``xla``.
"""

import logging
import os
import warnings

import tensorflow as tf

from wiou_ops._kernels import native_build, native_library
from wiou_ops._kernels.custom_gradient import FusedIoUSums, multiclass_coefficients

DISABLE_VARIABLE = "WIOU_OPS_DISABLE_NATIVE"
ISA_VARIABLE = "WIOU_OPS_ISA"  # read by the library itself (kernels/wiou_dispatch.cc)
ISA_LEVELS = ("baseline", "avx2", "avx512")

PRED_DTYPES = (tf.float32, tf.float16, tf.bfloat16)
TRUE_DTYPES = (tf.float32, tf.float16, tf.bfloat16, tf.uint8, tf.int32, tf.bool)
# Multi-class labels: ids (uint8, int32) or dense labels (any of them).
MULTICLASS_LABEL_DTYPES = (tf.float32, tf.float16, tf.bfloat16, tf.uint8, tf.int32)


def _tensorflow_flags():
    return tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()


def check_isa_variable():
    """Raises ValueError naming WIOU_OPS_ISA when it holds no known level."""
    asked = os.environ.get(ISA_VARIABLE, "")
    if asked and asked not in ISA_LEVELS:
        raise ValueError(f"{ISA_VARIABLE}={asked!r} is not one of {', '.join(ISA_LEVELS)}")


def load(package_dir=native_library.PACKAGE_DIR, root=None):
    """Returns ``(op_library, Found, None)`` or ``(None, None, reason it is not available)``."""
    if os.environ.get(DISABLE_VARIABLE, "") not in ("", "0"):
        return None, None, f"disabled by {DISABLE_VARIABLE}"
    check_isa_variable()
    try:
        found = native_library.locate(
            tf.__version__, _tensorflow_flags, package_dir, root,
            build=_logged_build)
    except (native_build.BuildError, native_library.Refused, OSError) as error:
        return None, None, f"the native CPU kernel is not available: {error}"
    try:
        return tf.load_op_library(str(found.path)), found, None
    except (tf.errors.NotFoundError, OSError) as err:
        return None, None, f"the native CPU kernel failed to load: {err}"


def _logged_build(out_path, *args, **kwargs):
    # A first-use build takes a minute or two: say so while it runs, not after.
    logging.getLogger("wiou_ops").warning(
        "wiou_ops: compiling the native CPU kernel for TensorFlow %s into %s "
        "(once per TensorFlow version; about a minute or two)", tf.__version__, out_path)
    return native_build.compile_library(out_path, *args, **kwargs)


def isa():
    """(level in use, widest level of this CPU), from the loaded library; None without it."""
    if _library is None:
        return None
    active, cpu = _library.wiou_kernel_isa()
    return active.numpy().decode(), cpu.numpy().decode()


def supports(y_true, y_pred):
    """True when the kernels are registered for these dtypes."""
    return y_pred.dtype in PRED_DTYPES and y_true.dtype in TRUE_DTYPES


def supports_multiclass(labels, y_pred):
    """True when the multi-class kernels are registered for these dtypes (labels: sparse
    ids or dense labels)."""
    return y_pred.dtype in PRED_DTYPES and labels.dtype in MULTICLASS_LABEL_DTYPES


def true_dtypes(supports_fn):
    """The label dtypes ``supports_fn`` accepts (for error messages)."""
    return MULTICLASS_LABEL_DTYPES if supports_fn is supports_multiclass else TRUE_DTYPES


def stream_read(x):
    """Sum of a float32 tensor at streaming-read speed (benchmark instrument), or None."""
    if _library is None:
        return None
    return _library.wiou_stream_read(x)


def multiclass_loops(labels, logits, iou_terms=True):
    """Benchmark instrument: both multi-class passes over sparse uint8 ids and float32
    logits (softmax, no weights), as the op calls alone. With ``iou_terms`` the loss's own
    ops (the sums, then the gradient for fixed coefficients); without, the same loops
    with the IoU terms left out (their compute floor). Returns the gradient-sized output,
    or None without the library."""
    if _library is None:
        return None
    if not iou_terms:
        return _library.wiou_multi_class_without_iou(labels, logits)
    attrs = dict(activation="softmax", sparse=True, ignore_class=-1, per_image=False,
                 epsilon=1e-7)
    empty = tf.zeros([0], tf.float32)
    sums = _library.wiou_multi_class_sums(labels, logits, empty, **attrs)
    classes = tf.shape(logits)[-1]
    # Coefficients of the order of the loss's, after the sums (the data dependence
    # orders the two ops as in a training step).
    coef = tf.fill([1, classes, 2], 1e-7) + 0.0 * sums[:, :, :2]
    return _library.wiou_multi_class_sums_grad(labels, logits, empty, coef, **attrs)


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


def make_multiclass(library):
    """The multi-class ``native`` implementation (kernels/wiou_multiclass.h): one pass over
    the C channels for the sums, one for the gradient (p̂ recomputed from y_pred)."""
    def attrs(spec):
        return dict(activation=spec.activation, sparse=spec.sparse,
                    ignore_class=-1 if spec.ignore_class is None else spec.ignore_class,
                    per_image=spec.per_image, epsilon=spec.epsilon)

    def forward(labels, y_pred, weights, spec, for_gradient):
        del for_gradient  # nothing to save: the backward re-reads labels and y_pred
        return library.wiou_multi_class_sums(labels, y_pred, _weight_map(weights),
                                             **attrs(spec)), ()

    def backward(labels, y_pred, weights, coef, spec, saved):
        del saved
        return library.wiou_multi_class_sums_grad(labels, y_pred, _weight_map(weights),
                                                  tf.cast(coef, tf.float32), **attrs(spec))

    return FusedIoUSums("native", forward, backward, coefficients=multiclass_coefficients)


def variant(write_masks):
    """The ``native`` implementation with or without the label masks (benchmarks compare
    the two); None when the kernel is not available."""
    return make(_library, write_masks=write_masks) if _library is not None else None


_library, FOUND, UNAVAILABLE_REASON = load()
NATIVE = variant(write_masks=True)
MULTICLASS_NATIVE = make_multiclass(_library) if _library is not None else None
if NATIVE is None and not UNAVAILABLE_REASON.startswith("disabled"):
    warnings.warn(
        f"wiou_ops: {UNAVAILABLE_REASON}. Falling back to the 'xla' implementation on CPU.",
        RuntimeWarning,
        stacklevel=2,
    )
