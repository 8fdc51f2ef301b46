"""WeightedIoULoss and weighted_iou_loss: the drop-in for the seed class, and more.

The public Keras API. It checks the options (``_common.options``) and hands the call
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
from wiou_ops._common.options import validate_options


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


@keras.saving.register_keras_serializable(package="wiou_ops")
class WeightedIoULoss(keras.losses.Loss):
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

    def __getattr__(self, name):
        # weight_background, epsilon, ... read from the validated options.
        options = self.__dict__.get("_options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, y_true, y_pred, sample_weight=None):
        mask = get_keras_mask(y_pred)
        with keras.name_scope(self.name):
            loss = _router.compute(y_true, y_pred, sample_weight, mask, self._options)
            return ops.cast(loss, self.dtype)

    def call(self, y_true, y_pred):
        """The unreduced loss (what ``reduction="none"`` returns)."""
        options = dict(self._options, reduction="none")
        return _router.compute(y_true, y_pred, None, None, options, trace=False)

    def get_config(self):
        config = super().get_config()
        config.update(self._options)
        return config
