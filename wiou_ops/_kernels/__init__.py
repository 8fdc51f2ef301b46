"""Kernels: the fused IoU sums and their hand-written VJP, one module per way to run them.

Each computes exactly ``_iou.SumsSpec`` and imports only ``_iou`` (and its framework):
``xla`` and ``native`` (TensorFlow, joined by ``custom_gradient``), ``jax``
(``jax.custom_vjp``) and ``ops`` (``keras.ops``, any other Keras backend). Choosing
among them is the backends' job (``wiou_ops._backends``).
"""
