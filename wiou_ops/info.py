"""``python -m wiou_ops.info``: what this installation has, and what it would run.

Versions (wiou_ops, Python, Keras and its backend, TensorFlow, JAX), the implementations
available on the current Keras backend and why the native kernel is not when it is not,
the kernel's file and where it came from (the package, or the user cache), the
TensorFlow it was built for, the instruction-set level its loops run at, and the cache
directory.
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
    info = {
        "wiou_ops": wiou_ops.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_isa": native_library.cpu_isa() or None,
        "keras": _version("keras"),
        "tensorflow": _version("tensorflow"),
        "jax": _version("jax"),
        "native_cache": str(native_library.cache_root()),
    }
    try:
        import keras

        info["keras_backend"] = keras.backend.backend()
        info["implementations"] = wiou_ops.available_implementations()
    except ImportError as error:
        info["keras_backend"] = None
        info["implementations"] = []
        info["keras_error"] = str(error)
    if info["keras_backend"] == "tensorflow":
        info.update(_native_report())
    return info


def _native_report():
    """The native kernel as the TensorFlow backend loaded it (or why it did not)."""
    from wiou_ops._kernels import native

    if native.FOUND is None:
        return {"native_unavailable": native.UNAVAILABLE_REASON}
    found = native.FOUND
    active, cpu = native.isa()
    out = {
        "native_library": str(found.path),
        "native_origin": {"package": "shipped in the package", "cache": "user cache",
                          "built": f"user cache, built now in {found.build_seconds:.0f} s"
                          }[found.origin],
        "native_built_for_tensorflow": native_library.built_for(found.path),
        "native_isa": active if active == cpu else f"{active} (this CPU has {cpu})",
    }
    if found.package_note:
        out["native_package_library_skipped"] = found.package_note
    return out


def main():
    info = report()
    width = max(len(key) for key in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
