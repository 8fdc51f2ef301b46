"""WeightedIoULoss and weighted_iou_loss: the drop-in for the seed class, and more.

Every weighting reduces to a few fused sums per IoU (``_iou.py``); this module
checks the options and turns the sums into Keras's reduced loss::

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
mean weight and never change the gradient's direction. README, "Which weighting
to use", has the guide.
"""

import math
import numbers

import keras
from keras import ops
from keras.src import backend as keras_backend

from wiou_ops import _dispatch, _iou, _reduction

WEIGHTINGS = ("seed", "pixel", "class")
REDUCTIONS = _reduction.REDUCTIONS


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}.")
    return value


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


def validate_options(
    *,
    weight_background=1.0,
    weight_foreground=1.0,
    epsilon=1e-7,
    weighting="seed",
    per_image=False,
    from_logits=False,
    log=True,
    cross_replica=False,
    check_inputs=False,
    implementation="auto",
    reduction="sum_over_batch_size",
):
    """Checks every option; returns them as a dict of plain Python values.

    Raises ``TypeError``/``ValueError`` naming the argument.
    """
    options = dict(
        weight_background=_check_weight("weight_background", weight_background),
        weight_foreground=_check_weight("weight_foreground", weight_foreground),
        per_image=_check_bool("per_image", per_image),
        from_logits=_check_bool("from_logits", from_logits),
        log=_check_bool("log", log),
        cross_replica=_check_bool("cross_replica", cross_replica),
        check_inputs=_check_bool("check_inputs", check_inputs),
    )
    if options["weight_background"] == 0 and options["weight_foreground"] == 0:
        raise ValueError("weight_background and weight_foreground cannot both be 0.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got {epsilon!r}.")
    if not (0 < float(epsilon) < 0.5):
        raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}.")
    options["epsilon"] = float(epsilon)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting={weighting!r}; expected one of {WEIGHTINGS}.")
    options["weighting"] = weighting
    if implementation not in _dispatch.IMPLEMENTATION_CHOICES:
        raise ValueError(
            f"Unknown implementation={implementation!r}; "
            f"expected one of {_dispatch.IMPLEMENTATION_CHOICES}."
        )
    options["implementation"] = implementation
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction={reduction!r}; expected one of {REDUCTIONS}.")
    options["reduction"] = reduction
    return options


def sums_plan(y_true, sample_weight, mask, options):
    """``(SumsSpec, weight map or None, per-group loss weight or None)`` for the fused sums.

    Seed weighting keeps Keras's own reduction of sample weights and masks (no map in
    the sums); pixel and class weighting split them with ``split_weights``.
    """
    spec = _iou.SumsSpec.from_options(options)
    if spec.weighting == "seed":
        return spec, None, None
    return (spec, *split_weights(y_true, sample_weight, mask, spec.per_image))


def split_weights(y_true, sample_weight, mask, per_image):
    """Pixel/class weighting: ``(weight map for the sums or None, loss weight per group or None)``.

    A ``sample_weight`` is aligned with y_true's leading axes (a (B,) weight
    acts as (B, 1, 1, 1), a (B, H, W) one as (B, H, W, 1)) and must broadcast
    to y_true's shape. Where it is constant over each IoU's pixels (a scalar;
    a per-sample weight with ``per_image=True``) it multiplies that IoU's loss,
    as Keras does: inside the sums it would cancel in I/U. Where it varies
    inside an IoU, or has y_true's full shape, it is a weight map inside the
    sums (0 = ignore the pixel).
    A Keras mask is always a 0/1 weight map.
    """
    rank = len(y_true.shape)
    weight_map, group_weight = None, None
    for name, weight in (("sample_weight", sample_weight), ("mask", mask)):
        if weight is None:
            continue
        weight = ops.cast(weight, "float32")
        full_shape = tuple(weight.shape) == tuple(y_true.shape)  # always a map, even 1x1 images
        if len(weight.shape) > rank:
            raise ValueError(
                f"{name} of shape {tuple(weight.shape)} has more axes than y_true of shape "
                f"{tuple(y_true.shape)}; it must broadcast to y_true's shape.")
        while len(weight.shape) < rank:
            weight = ops.expand_dims(weight, -1)
        for w_dim, y_dim in zip(weight.shape, y_true.shape):
            if w_dim not in (1, None) and y_dim is not None and w_dim != y_dim:
                raise ValueError(
                    f"{name} of shape {tuple(weight.shape)} (trailing axes added) does not "
                    f"broadcast to y_true's shape {tuple(y_true.shape)}.")
        constant_per_group = not full_shape and all(
            d == 1 for d in weight.shape[1 if per_image else 0:])
        if name == "sample_weight" and constant_per_group:
            if per_image:
                group_weight = ops.broadcast_to(ops.reshape(weight, (-1,)),
                                                ops.shape(y_true)[:1])
            else:
                group_weight = ops.reshape(weight, ())
            continue
        weight = ops.broadcast_to(weight, ops.shape(y_true))
        weight_map = weight if weight_map is None else weight_map * weight
    return weight_map, group_weight


def _seed_reduction(losses, sums, y_true, y_pred, sample_weight, mask, options, count,
                    row_sums):
    """Seed weighting: Keras's reduction of the map ``L · (w_b·(1 - y) + w_f·y)``.

    With sample weights, a mask or ``reduction="none"`` the weight map is
    reduced as Keras reduces it (exact seed semantics for every broadcast, at
    the cost of one pass over y_true; ``_reduction`` sums it accurately);
    otherwise the total weight per group is ``w_b·(n - Sy) + w_f·Sy`` from the
    fused pass's Sy, with n the exact element count.
    """
    dtype = losses.dtype
    w_b, w_f = options["weight_background"], options["weight_foreground"]
    reduction = options["reduction"]
    if reduction in (None, "none") or sample_weight is not None or mask is not None:
        y = ops.cast(y_true, dtype)
        weight = w_b * (1.0 - y) + w_f * y
        # Keras's reductions are linear in the map: Σ_g L_g · reduce(w of group g).
        return _reduction.reduce_weighted_values(
            weight, sample_weight=sample_weight, mask=mask, reduction=reduction, dtype=dtype,
            row_sums=row_sums, group_factor=losses)
    groups = int(sums.shape[0])
    if count is None:
        count = _reduction.element_count(ops.shape(y_pred))
    if isinstance(count, int):
        group_size = float(count // max(groups, 1))  # per-image groups are equal
    else:
        group_size = ops.cast(count, dtype) / max(groups, 1)
    sum_y = sums[:, 2]
    total = ops.sum(losses * (w_b * (group_size - sum_y) + w_f * sum_y))
    if reduction == "sum":
        return total
    return _reduction.scale_loss_for_distribution(
        ops.divide_no_nan(total, _reduction.as_float(count, dtype)))


def loss_from_sums(sums, y_true, y_pred, sample_weight, mask, group_weight, options,
                   count=None, row_sums=_reduction.plain_row_sums):
    """The reduced loss (or unreduced for ``reduction="none"``) from the fused sums (G, K).

    Seed weighting: see ``_seed_reduction`` (the per-pixel map for "none").
    Pixel/class weighting: Keras's reduction of the per-group losses, (B,)
    with ``per_image`` (a scalar otherwise), weighted by ``group_weight``.
    ``count``: the exact element count behind ``sums`` (a Python int or an
    integer tensor) when they were all-reduced across replicas
    (``cross_replica``), else None for y_pred's own size. ``row_sums``: the
    backend's accurate row sums of a (G, n) array, for full-size maps.

    Under tf.distribute Keras divides a reduced map by the number of replicas
    (the optimizer then sums the replicas' gradients) but leaves a scalar loss
    as it is. One IoU for the whole batch is such a scalar, so it is scaled
    here as Keras scales the seed's map: the update is then the mean of the
    replicas' IoU gradients, or, with ``cross_replica``, the global IoU's.
    """
    spec = _iou.SumsSpec.from_options(options)
    losses = _iou.group_losses(sums, spec, options["log"], ops.log)
    if options["weighting"] == "seed":
        return _seed_reduction(losses, sums, y_true, y_pred, sample_weight, mask, options,
                               count, row_sums)
    if options["per_image"]:
        return _reduction.reduce_weighted_values(
            losses, sample_weight=group_weight, reduction=options["reduction"],
            dtype=losses.dtype)
    loss = _reduction.reduce_weighted_values(
        losses[0], sample_weight=group_weight, reduction=options["reduction"],
        dtype=losses.dtype)
    return _reduction.scale_loss_for_distribution(loss)


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
    return _dispatch.compute(y_true, y_pred, sample_weight, None, validate_options(**options))


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
        mask = keras_backend.get_keras_mask(y_pred)
        with keras.name_scope(self.name):
            loss = _dispatch.compute(y_true, y_pred, sample_weight, mask, self._options)
            return ops.cast(loss, self.dtype)

    def call(self, y_true, y_pred):
        """The unreduced loss (what ``reduction="none"`` returns)."""
        options = dict(self._options, reduction="none")
        return _dispatch.compute(y_true, y_pred, None, None, options, trace=False)

    def get_config(self):
        config = super().get_config()
        config.update(self._options)
        return config
