"""Packaging; builds kernels/ into wiou_ops/_wiou_ops_native.so.

Metadata lives in pyproject.toml. The native CPU kernel is compiled against
the TensorFlow that is importable at build time, with its ``tf.sysconfig``
flags, so it needs ``pip install --no-build-isolation`` after TensorFlow is
installed (``make test`` and ``make bench`` do this). Without TensorFlow or a
C++ compiler the build warns and the package stays pure Python: ``auto`` then
uses ``xla`` on CPU.

Two compile units on purpose: the loops (kernels/wiou_math_instances.cc, no
TensorFlow header) are built for the host CPU (-O3 -march=native); the
TensorFlow adapter (kernels/wiou_ops.cc) keeps TensorFlow's own flags so that
Eigen's inline code matches TensorFlow's. ``WIOU_OPS_CXXFLAGS`` overrides the
flags of the loops (e.g. "-O3 -mavx2 -mfma -mf16c" for a portable build).
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
KERNELS = ROOT / "kernels"
LIBRARY = "_wiou_ops_native.so"
LOOP_FLAGS = ["-O3", "-march=native", "-fno-strict-aliasing", "-fPIC", "-std=c++17"]


def _warn(message):
    print(f"wiou_ops setup: {message}", file=sys.stderr)


def build_native(out_dir):
    """Compiles kernels/ into out_dir; returns the library path, or None with a warning."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        _warn(f"no C++ compiler ({cxx}); the native CPU kernel is not built.")
        return None
    try:
        import tensorflow as tf
    except ImportError:
        _warn("TensorFlow is not importable at build time; the native CPU kernel is not built "
              "(install TensorFlow first, then `pip install --no-build-isolation .`).")
        return None
    loop_flags = shlex.split(os.environ.get("WIOU_OPS_CXXFLAGS", "")) or LOOP_FLAGS
    loop_flags = [f for f in loop_flags if f not in ("-fPIC", "-std=c++17")] + ["-fPIC", "-std=c++17"]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / LIBRARY
    with tempfile.TemporaryDirectory() as tmp:
        loops = pathlib.Path(tmp) / "wiou_math_instances.o"
        commands = [
            [cxx, *loop_flags, "-c", str(KERNELS / "wiou_math_instances.cc"), "-o", str(loops)],
            [cxx, "-shared", "-fPIC", "-O2", "-Wno-deprecated-declarations",
             f'-DWIOU_BUILT_FOR_TENSORFLOW="{tf.__version__}"',
             str(KERNELS / "wiou_ops.cc"), str(loops), "-o", str(library),
             *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()],
        ]
        for command in commands:
            try:
                subprocess.run(command, check=True, cwd=KERNELS)
            except (OSError, subprocess.CalledProcessError) as err:
                _warn(f"compiling the native CPU kernel failed ({err}); it is not built.")
                return None
    return library


class BuildNative(build_ext):
    """build_ext that compiles kernels/ with build_native() instead of a Python extension.

    A kernel that cannot be built is dropped from the build (with build_native's
    warning), so the install still succeeds as pure Python.
    """

    def get_ext_filename(self, ext_name):
        return os.path.join(*ext_name.split(".")[:-1], LIBRARY)

    def run(self):
        # Build into build_lib as setuptools would; it copies in place for -e.
        inplace, self.inplace = self.inplace, False
        try:
            self.extensions = [
                ext for ext in self.extensions
                if build_native(pathlib.Path(self.get_ext_fullpath(ext.name)).parent) is not None
            ]
        finally:
            self.inplace = inplace
        super().run()

    def build_extension(self, ext):
        pass  # compiled in run()


setup(
    # The sources are compiled by BuildNative, not by setuptools' compiler.
    ext_modules=[Extension("wiou_ops._wiou_ops_native", sources=[])],
    cmdclass={"build_ext": BuildNative},
)
