"""One module per Keras backend: it checks the inputs, picks among its kernels, and
turns the kernel's sums into the loss with ``_common.reduction``.

``tensorflow`` (``native``, ``xla``, ``graph``), ``jax`` (the JAX kernel) and ``ops``
(PyTorch, NumPy: the ``keras.ops`` kernel). ``wiou_ops._router`` picks the module.
"""
