"""The public Keras API: WeightedIoULoss and weighted_iou_loss (binary masks: the drop-in
for the seed class, and more); MultiClassIoULoss and multiclass_iou_loss (C classes,
per-class weights, see ``_multiclass.py``).

It checks the options (``_common.options``) and hands the call
to the backend router (``_router``); every weighting reduces to a few fused sums per
IoU (``_iou.py``), turned into Keras's reduced loss (``_common.reduction``)::

    p̂ = clip(p, ε, 1-ε)  (or sigmoid(z) with from_logits)
    L(I, U) = -log((I + ε)/(U + ε))   (log=False: 1 - (I + ε)/(U + ε))

    seed:  I = Σ y·p̂, U = Σ (y + p̂ - y·p̂);   loss = keras_reduce(L · (w_b·(1 - y) + w_f·y))
    pixel: I = Σ s·w·y·p̂, U = Σ s·w·(y + p̂ - y·p̂);               loss = keras_reduce(L)
    class: (w_f·L(fg) + w_b·L(bg)) / (w_f + w_b), L(bg) the IoU of 1 - y and 1 - p̂

with sums over the whole batch, or per image (``per_image=True``). Seed
weighting gives the seed class's value and gradient for every reduction,
sample weight and mask; Keras's reductions are linear in its map, so without
sample weights the map is never built: ``loss = L · (w_b·(N - Σy) + w_f·Σy)/N``.
Note what this shows: the seed's class weights rescale the loss by the batch's
mean weight and never change the gradient's direction. The README's "Which weighting
to use" has the guide; docs/design.md the layers and the numerics.
"""

import keras
from keras import ops

from wiou_ops import _router
from wiou_ops._common.keras_compat import get_keras_mask
from wiou_ops._common.options import validate_multiclass_options, validate_options


def weighted_iou_loss(y_true, y_pred, sample_weight=None, **options):
    """Weighted IoU (soft Jaccard) loss of binary predictions, fused.

    Args:
      y_true: labels in [0, 1]; float, bool, uint8 or int; same shape as y_pred.
      y_pred: probabilities; float32, float16 or bfloat16 (consumed as is,
        accumulated in float32).
      sample_weight: optional; broadcast and applied as Keras does.
      **options: keyword-only options of ``WeightedIoULoss`` (weight_background,
        weight_foreground, epsilon, weighting, per_image, from_logits, log,
        cross_replica, check_inputs, implementation, reduction).

    Returns:
      The reduced loss, a float32 scalar; for ``reduction="none"`` the per-pixel
      map (seed weighting) or the per-image losses (pixel/class with per_image).
      Seed weighting::

        L = -log((Σ y·p̂ + ε) / (Σ (y + p̂ - y·p̂) + ε)),  p̂ = clip(p, ε, 1-ε)
        loss = L · reduce(w_b·(1 - y) + w_f·y)

      The other weightings are in the module docstring and the README.
    """
    return _router.compute(y_true, y_pred, sample_weight, None, validate_options(**options))


class _FusedLoss(keras.losses.Loss):
    """What both loss classes share: options read as attributes, the call through the
    router (``_compute``: ``_router.compute`` or ``_router.compute_multiclass``) with
    Keras's mask, and a config of plain values."""

    _compute = None  # set by each subclass

    def __getattr__(self, name):
        # weight_background, epsilon, ... read from the validated options.
        options = self.__dict__.get("_options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, y_true, y_pred, sample_weight=None):
        mask = get_keras_mask(y_pred)
        with keras.name_scope(self.name):
            loss = self._compute(y_true, y_pred, sample_weight, mask, self._options)
            return ops.cast(loss, self.dtype)

    def call(self, y_true, y_pred):
        """The unreduced loss (what ``reduction="none"`` returns)."""
        options = dict(self._options, reduction="none")
        return self._compute(y_true, y_pred, None, None, options, trace=False)

    def get_config(self):
        config = super().get_config()
        config.update({name: list(value) if isinstance(value, tuple) else value
                       for name, value in self._options.items()})
        return config


@keras.saving.register_keras_serializable(package="wiou_ops")
class WeightedIoULoss(_FusedLoss):
    """Drop-in, fused replacement for the seed's ``WeightedIoULoss``.

    Same arguments and, with ``weighting="seed"``, the same value and gradient
    as the seed class, for every Keras reduction, sample weight and mask.
    ``weighting="pixel"`` puts the class weights (and a per-pixel sample weight)
    inside the sums, ``"class"`` averages the foreground and background IoUs;
    ``per_image``, ``from_logits``, ``log`` and ``check_inputs`` as in the README.
    The loss is computed in one fused pass with a hand-written one-pass
    gradient; ``y_pred`` is not up-cast to the loss dtype first.

    Formula (seed weighting)::

        L = -log((Σ y·p̂ + ε) / (Σ (y + p̂ - y·p̂) + ε)),  p̂ = clip(p, ε, 1-ε)
        loss = L · reduce(w_b·(1 - y) + w_f·y)

    With seed weighting the class weights only rescale the loss (see the README).
    """

    _compute = staticmethod(_router.compute)

    def __init__(
        self,
        weight_background=1.0,
        weight_foreground=1.0,
        epsilon=1e-7,
        *,
        weighting="seed",
        per_image=False,
        from_logits=False,
        log=True,
        cross_replica=False,
        check_inputs=False,
        implementation="auto",
        reduction="sum_over_batch_size",
        name="weighted_iou_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._options = validate_options(
            weight_background=weight_background,
            weight_foreground=weight_foreground,
            epsilon=epsilon,
            weighting=weighting,
            per_image=per_image,
            from_logits=from_logits,
            log=log,
            cross_replica=cross_replica,
            check_inputs=check_inputs,
            implementation=implementation,
            reduction=reduction,
        )


def multiclass_iou_loss(y_true, y_pred, sample_weight=None, **options):
    """Per-class weighted IoU loss of multi-class (or multi-label) predictions, fused.

    Args:
      y_true: one-hot (or soft, or multi-hot) labels of y_pred's shape (B, ..., C), or
        integer class ids (B, ...) / (B, ..., 1) with ``sparse_y_true=True``.
      y_pred: probabilities or logits (``from_logits``), shape (B, ..., C); float32,
        float16 or bfloat16 (consumed as is, accumulated in float32).
      sample_weight: optional; per image (B,), per pixel (B, ...), or a scalar.
      **options: keyword-only options of ``MultiClassIoULoss``.

    Returns:
      The reduced loss; for ``reduction="none"`` the per-image losses with
      ``per_image``, else the batch's. Per group (batch or image) and class c::

        I_c = Σ s·y_c·p̂_c,  U_c = Σ s·(y_c + p̂_c - y_c·p̂_c)
        L_c = -log((I_c + ε)/(U_c + ε)),  loss = Σ_c w_c·L_c / Σ_c w_c
    """
    return _router.compute_multiclass(y_true, y_pred, sample_weight, None,
                                      validate_multiclass_options(**options))


@keras.saving.register_keras_serializable(package="wiou_ops")
class MultiClassIoULoss(_FusedLoss):
    """Per-class weighted IoU (soft Jaccard) loss for multi-class and multi-label
    segmentation, one fused pass over the C channels with a hand-written gradient.

    Per group g (the batch, or each image with ``per_image``) and class c, with s the
    pixel weight (sample weight, Keras mask, 0 on ``ignore_class`` pixels) and p̂ the
    clipped probabilities, or softmax(z) (sigmoid(z) with ``multi_label``) of logits::

        I_c = Σ s·y_c·p̂_c,   U_c = Σ s·(y_c + p̂_c - y_c·p̂_c)
        L_c = -log((I_c + ε)/(U_c + ε))      (log=False: 1 - (I_c + ε)/(U_c + ε))
        loss_g = Σ_c w_c·L_c / Σ_c w_c       over the classes that count

    A class counts when its weight is > 0, it is not ``ignore_class``, and, with
    ``absent_classes="skip"``, it has a labelled pixel in the group (a group where
    none counts has loss 0). Then Keras's reduction of the per-group losses.

    Args:
      class_weights: C non-negative floats (None: all 1); 0 leaves a class out.
      epsilon: smoothing ε, also the clip bound for probabilities.
      sparse_y_true: y_true holds integer class ids, shape (B, ...) or (B, ..., 1).
      ignore_class: an id whose pixels count nowhere (e.g. 255 = void); if it is
        also a channel, that channel is left out of the class mean.
      multi_label: channels are independent (sigmoid) instead of exclusive (softmax).
      from_logits: y_pred holds logits (softmax over the last axis, or sigmoid).
      per_image: one loss per image instead of one for the batch.
      log: ``-log`` of the ratio (default) or ``1 - ratio``.
      absent_classes: "include" (default) or "skip".
      cross_replica: under tf.distribute, IoU sums of the global batch.
      check_inputs: check label ids, value ranges and sample weights at run time.
      implementation: "auto", or "native", "xla", "graph" on TensorFlow.
    """

    _compute = staticmethod(_router.compute_multiclass)

    def __init__(
        self,
        class_weights=None,
        epsilon=1e-7,
        *,
        sparse_y_true=False,
        ignore_class=None,
        multi_label=False,
        from_logits=False,
        per_image=False,
        log=True,
        absent_classes="include",
        cross_replica=False,
        check_inputs=False,
        implementation="auto",
        reduction="sum_over_batch_size",
        name="multiclass_iou_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._options = validate_multiclass_options(
            class_weights=class_weights, epsilon=epsilon, sparse_y_true=sparse_y_true,
            ignore_class=ignore_class, multi_label=multi_label, from_logits=from_logits,
            per_image=per_image, log=log, absent_classes=absent_classes,
            cross_replica=cross_replica, check_inputs=check_inputs,
            implementation=implementation, reduction=reduction)
