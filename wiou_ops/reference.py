"""The seed class: the naive weighted IoU loss that ``WeightedIoULoss`` replaces.

Kept with exactly its semantics (its formula is below; docs/design.md, "Semantics"):
it is the benchmark baseline and one of the test oracles. Written with ``keras.ops``,
which on the TensorFlow backend are the seed's ``tf.clip_by_value``,
``tf.reduce_sum`` and ``tf.math.log``.

    p̂   = clip(p, ε, 1-ε)
    iou = (Σ y·p̂ + ε) / (Σ (y + p̂ - y·p̂) + ε)          (sums over the whole batch)
    map = -log(iou) · (w_b·(1 - y) + w_f·y)             (returned per pixel)

Keras then reduces the map (mean over all elements by default). Because iou is
one scalar, the weight map only rescales the loss by the batch's mean weight.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="wiou_ops")
class SeedWeightedIoULoss(keras.losses.Loss):
    """The seed's ``WeightedIoULoss``, verbatim semantics."""

    def __init__(self, weight_background=1.0, weight_foreground=1.0, epsilon=1e-7, **kwargs):
        super().__init__(**kwargs)
        self.weight_background = weight_background
        self.weight_foreground = weight_foreground
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, self.epsilon, 1.0 - self.epsilon)
        intersection = ops.sum(y_true * y_pred)
        union = ops.sum(y_true + y_pred - y_true * y_pred)
        iou = (intersection + self.epsilon) / (union + self.epsilon)
        weights = self.weight_background * (1 - y_true) + self.weight_foreground * y_true
        return -ops.log(iou) * weights

    def get_config(self):
        config = super().get_config()
        config.update(
            weight_background=self.weight_background,
            weight_foreground=self.weight_foreground,
            epsilon=self.epsilon,
        )
        return config
