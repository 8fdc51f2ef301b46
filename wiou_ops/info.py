"""``python -m wiou_ops.info``: what this installation has, and what it would run.

Versions (wiou_ops, Python, Keras and its backend, TensorFlow, JAX), the implementations
available on the current Keras backend and why the native kernel is not when it is not,
the kernel's file, the TensorFlow it was built for, and the CPU's vector extension.
"""

import importlib
import importlib.util
import platform
import sys

import wiou_ops
from wiou_ops._kernels import native_library


def _version(module):
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.import_module(module).__version__
    except Exception as error:  # noqa: BLE001 - reported, not raised: this is a diagnosis
        return f"fails to import ({type(error).__name__}: {error})"


def report():
    """Everything ``main`` prints, as a dict of plain values."""
    library = native_library.library_path()
    info = {
        "wiou_ops": wiou_ops.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_isa": native_library.cpu_isa() or "baseline",
        "keras": _version("keras"),
        "tensorflow": _version("tensorflow"),
        "jax": _version("jax"),
        "native_library": str(library) if library.exists() else None,
        "native_built_for_tensorflow": (native_library.built_for(library)
                                        if library.exists() else None),
    }
    try:
        import keras

        info["keras_backend"] = keras.backend.backend()
        info["implementations"] = wiou_ops.available_implementations()
    except ImportError as error:
        info["keras_backend"] = None
        info["implementations"] = []
        info["keras_error"] = str(error)
    if info["keras_backend"] == "tensorflow" and "native" not in info["implementations"]:
        from wiou_ops._kernels import native

        info["native_unavailable"] = native.UNAVAILABLE_REASON
    return info


def main():
    info = report()
    width = max(len(key) for key in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
