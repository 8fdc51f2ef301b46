"""Backend-neutral pieces of the loss: option checks, input checks, Keras's reduction.

``options`` is plain Python (the plain-JAX API uses it without Keras); ``inputs``
and ``reduction`` are written with ``keras.ops``. Above ``_iou``, below the backends.
"""
