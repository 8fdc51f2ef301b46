"""Packaging: ships kernels/ in the package and, when it can, a prebuilt native kernel.

Metadata lives in pyproject.toml; the recipe that compiles kernels/ lives in
wiou_ops/_kernels/native_build.py, shared with the package's first-use build.

- Every wheel carries the C++ sources (as wiou_ops/_kernel_sources/), so an installed
  package can compile its kernel for whatever TensorFlow is running (on first use, into
  the user's cache; see wiou_ops/_kernels/native_library.py).
- When TensorFlow and a C++ compiler are there at build time (``pip install
  --no-build-isolation``, ``make wheel``, ``make test``), the wheel also carries the
  kernel built against that TensorFlow, so its users need no compiler. In pip's default
  isolated build there is no TensorFlow: the wheel is then sources only, with a note.
"""

import importlib.util
import pathlib
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.command.bdist_wheel import bdist_wheel

ROOT = pathlib.Path(__file__).resolve().parent
KERNELS = ROOT / "kernels"


def _load_recipe():
    # By path: importing the package would import Keras, which the build may not have.
    path = ROOT / "wiou_ops" / "_kernels" / "native_build.py"
    spec = importlib.util.spec_from_file_location("_wiou_native_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native_build = _load_recipe()


def _note(message):
    print(f"wiou_ops setup: {message}", file=sys.stderr)


class BuildPyWithSources(build_py):
    """build_py that also copies kernels/ into the package as _kernel_sources/."""

    def run(self):
        super().run()
        target = pathlib.Path(self.build_lib) / "wiou_ops" / native_build.SOURCES_PACKAGE_DIR
        target.mkdir(parents=True, exist_ok=True)
        for name in native_build.SOURCE_FILES:
            shutil.copy2(KERNELS / name, target / name)


class BuildNative(build_ext):
    """build_ext that compiles kernels/ with native_build instead of a Python extension.

    A kernel that cannot be built is dropped from the build with a note: the package
    still installs, and builds its kernel on first use where a compiler is there.
    """

    def get_ext_filename(self, ext_name):
        return str(pathlib.Path(*ext_name.split(".")[:-1]) / native_build.LIBRARY_NAME)

    def run(self):
        # Build into build_lib as setuptools would; it copies in place for -e.
        inplace, self.inplace = self.inplace, False
        try:
            self.extensions = [ext for ext in self.extensions if self._build_native(ext)]
        finally:
            self.inplace = inplace
        super().run()

    def _build_native(self, ext):
        try:
            import tensorflow as tf
        except ImportError:
            _note("TensorFlow is not importable at build time (pip's isolated build); the "
                  "wheel carries the kernel's sources only, and the package compiles its "
                  "kernel on first use. For a prebuilt kernel: install TensorFlow, then "
                  "`pip install --no-build-isolation .`")
            return False
        out = pathlib.Path(self.get_ext_fullpath(ext.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            native_build.compile_library(out, KERNELS, tf.__version__,
                                         tf.sysconfig.get_compile_flags(),
                                         tf.sysconfig.get_link_flags())
        except native_build.BuildError as error:
            _note(f"the native CPU kernel is not built: {error}")
            return False
        return True

    def build_extension(self, ext):
        pass  # compiled in run()


class PlatformWheel(bdist_wheel):
    """Tags the wheel py3-none-<platform>: the kernel links TensorFlow's C++ library, not
    Python's, so one wheel serves every Python that TensorFlow supports."""

    def get_tag(self):
        return ("py3", "none", super().get_tag()[2])


setup(
    # The sources are compiled by BuildNative, not by setuptools' compiler.
    ext_modules=[Extension("wiou_ops._wiou_ops_native", sources=[])],
    cmdclass={"build_ext": BuildNative, "build_py": BuildPyWithSources,
              "bdist_wheel": PlatformWheel},
)
