"""The multi-class IoU math, written once: per-class sums over C channels, their VJP,
the weighted class mean.

Plain Python like ``_iou.py``: array math goes through the caller's operators and an
array namespace ``xp`` with the ``keras.ops`` names ``clip``, ``sigmoid``, ``softmax``,
``where``, ``log``, ``exp``, ``abs``, ``cast``, ``arange``, ``sum`` and
``convert_to_tensor`` (``keras.ops``, or the TensorFlow and JAX namespaces in ``_kernels``). The C++ loops (``kernels/wiou_multiclass.h``)
implement the same sums and VJP and are tested against the same oracle.

Notation, per group g (the batch, or one image with ``per_image``) and class c, for
pixels i with C channels::

    p̂_ic = clip(p_ic, ε, 1-ε)          probabilities (softmax or sigmoid outputs)
    p̂_ic = softmax(z_i)_c              from_logits (sigmoid(z_ic) with multi_label), no clip
    y_ic = 1[id_i = c]                  sparse labels (ids outside [0, C) match no class)
    s_i  = weight map · 1[id_i ≠ ignore_class]   (dense labels: · (1 - y_i,ignore_class))

The sums (``SUMS``), one (C, 3) block per group; U follows from them::

    I_c = Σ s·y_c·p̂_c,   P_c = Σ s·p̂_c,   Y_c = Σ s·y_c,   U_c = Y_c + P_c - I_c

The loss per group (``group_losses``), over the classes that count (w_c > 0, not the
ignored channel, and with ``absent_classes="skip"`` Y_c > 0; none counting gives 0)::

    L_c = -log((I_c + ε)/(U_c + ε))     (log=False: 1 - (I_c + ε)/(U_c + ε))
    loss_g = Σ_c w_c·L_c / Σ_c w_c

Y is data (no gradient); with (a_c, b_c) = (∂/∂I_c, ∂/∂P_c) per group the VJP is one
elementwise pass (``input_gradient``)::

    g_ic = s_i·(a_c·y_ic + b_c)                    ∂/∂p̂_ic
    ∂/∂p_ic = g_ic·1[ε ≤ p_ic ≤ 1-ε]               probabilities (TensorFlow's clip rule)
    ∂/∂z_ic = g_ic·p̂_ic·(1 - p̂_ic)                 sigmoid
    ∂/∂z_ic = p̂_ic·(g_ic - Σ_k g_ik·p̂_ik)          softmax
"""

import dataclasses

from wiou_ops import _iou

# The sums' last axis: intersection, prediction mass, label mass.
SUMS = ("I", "P", "Y")


@dataclasses.dataclass(frozen=True)
class MultiClassSpec:
    """Static description of one multi-class sums computation (hashable: it keys traces)."""

    num_classes: int
    class_weights: tuple
    sparse: bool = False
    ignore_class: object = None  # an int id, or None
    multi_label: bool = False
    from_logits: bool = False
    per_image: bool = False
    epsilon: float = 1e-7
    log: bool = True
    absent_classes: str = "include"

    @classmethod
    def from_options(cls, options, num_classes):
        """The spec of ``_common.options.validate_multiclass_options``'s options for C classes."""
        weights = options["class_weights"] or (1.0,) * num_classes
        return cls(num_classes=num_classes, class_weights=tuple(weights),
                   sparse=options["sparse_y_true"], ignore_class=options["ignore_class"],
                   multi_label=options["multi_label"], from_logits=options["from_logits"],
                   per_image=options["per_image"], epsilon=options["epsilon"],
                   log=options["log"], absent_classes=options["absent_classes"])

    @property
    def activation(self):
        """"softmax" or "sigmoid" for logits, "clip" for probabilities."""
        if not self.from_logits:
            return "clip"
        return "sigmoid" if self.multi_label else "softmax"

    @property
    def ignored_channel(self):
        """The channel that ``ignore_class`` leaves out, or None (no such channel)."""
        ignore = self.ignore_class
        return ignore if ignore is not None and 0 <= ignore < self.num_classes else None

    @property
    def counted_weights(self):
        """w_c with the ignored channel's weight set to 0."""
        weights = list(self.class_weights)
        if self.ignored_channel is not None:
            weights[self.ignored_channel] = 0.0
        return tuple(weights)


def label_indicator(labels, spec, dtype, xp, id_dtype="int32"):
    """y (G, n, C) in ``dtype``: dense labels as they are; sparse ids (G, n) compared with
    every class id (under XLA the comparison fuses into the sums: no one-hot tensor).
    ``id_dtype``: the integer type the ids are compared in (the labels' own, where every
    class id fits in it, spares a converted copy of them)."""
    if not spec.sparse:
        return xp.cast(labels, dtype)
    ids = xp.cast(labels, id_dtype)[..., None]
    return xp.cast(ids == xp.arange(spec.num_classes, dtype=id_dtype), dtype)


def id_dtype(spec, label_dtype_name, bounds, as_float=False):
    """The type sparse ids are compared in (``label_indicator``'s ``id_dtype``): the
    labels' own, ``label_dtype_name`` with (min, max) ``bounds`` (None: not an integer
    type), where every class id and ``ignore_class`` fits in it, else int32. Compared as
    they are, the ids need no converted copy (XLA:TPU wrote uint8 ids out as int32).

    ``as_float``: integer ids compared as float32 instead, where that is exact (every class
    id below 2^24, so no other integer rounds onto one). XLA:GPU fuses a float comparison
    into its softmax-gradient kernel, but writes an integer one out first as a one-hot
    bool array (C bytes per pixel: 38 MiB of temp per H100 at 8x512x512x19).
    """
    if bounds is None:
        return "int32"
    ids = [spec.num_classes - 1] + ([] if spec.ignore_class is None else [spec.ignore_class])
    if as_float and all(0 <= i < 2**24 for i in ids):
        return "float32"
    return label_dtype_name if all(bounds[0] <= i <= bounds[1] for i in ids) else "int32"


def pixel_weight(labels, weight_map, spec, dtype, xp, id_dtype="int32"):
    """s (G, n): the weight map (or None for 1) times 0 on ``ignore_class`` pixels."""
    if spec.ignore_class is None:
        return weight_map
    if spec.sparse:
        keep = xp.cast(xp.cast(labels, id_dtype) != spec.ignore_class, dtype)
    else:
        keep = 1.0 - xp.cast(labels[..., spec.ignore_class], dtype)
    return keep if weight_map is None else weight_map * keep


def probabilities(x, spec, xp):
    """p̂ (G, n, C): softmax over the last axis, sigmoid, or the clip to [ε, 1-ε]."""
    if spec.activation == "softmax":
        return xp.softmax(x, axis=-1)
    if spec.activation == "sigmoid":
        return xp.sigmoid(x)
    return xp.clip(x, spec.epsilon, 1.0 - spec.epsilon)


def sums_terms(y, p, s):
    """The three per-element terms (G, n, C) whose sums over n are I, P, Y."""
    if s is None:
        return [y * p, p, y]
    sy = s[..., None] * y
    return [sy * p, s[..., None] * p, sy]


def input_gradient(coef, y, x, s, spec, xp):
    """The VJP of the sums w.r.t. x, from coef (G, C, 2) = (∂/∂I, ∂/∂P): x and y of shape
    (G, n, C), or in their own shape (B, ..., C) with G = B or 1."""
    per_class = (slice(None),) + (None,) * (len(y.shape) - 2) + (slice(None),)
    g = coef[per_class + (0,)] * y + coef[per_class + (1,)]
    if s is not None:
        g = g * s[..., None]
    if spec.activation == "softmax":
        p = xp.softmax(x, axis=-1)
        return p * (g - xp.sum(g * p, axis=-1, keepdims=True))
    if spec.activation == "sigmoid":
        return g * _iou.sigmoid_slope(x, xp)
    passes = (x >= spec.epsilon) & (x <= 1.0 - spec.epsilon)
    return xp.where(passes, g, 0.0)


def group_losses(sums, spec, xp):
    """Loss per group, shape (G,), from the sums (G, C, 3); autodiff differentiates it."""
    eps = spec.epsilon
    inter, pred, label = sums[..., 0], sums[..., 1], sums[..., 2]
    ratio = (inter + eps) / (label + pred - inter + eps)
    class_losses = -xp.log(ratio) if spec.log else 1.0 - ratio
    weights = xp.convert_to_tensor(spec.counted_weights, sums.dtype)
    if spec.absent_classes == "skip":  # Y is data: the choice of classes has no gradient
        weights = weights * xp.cast(label > 0, sums.dtype)
    total = xp.sum(weights * class_losses, axis=-1)
    norm = xp.sum(weights, axis=-1)  # (G,) with "skip", else a scalar
    counts = norm > 0
    return xp.where(counts, total / xp.where(counts, norm, 1.0), 0.0)
