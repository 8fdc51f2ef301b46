"""How the native kernel is compiled: one recipe for ``setup.py`` (a wheel or a checkout)
and for the first-use build into the user's cache (``native_library``).

Standard library only, and no import of the package: ``setup.py`` loads this file by
path, before anything is installed.

The library holds the loops once per instruction-set level, each its own compile unit
(``kernels/wiou_math_instances.cc`` built with that level's ``-march`` in the namespace
``isa_<level>``), a dispatcher built for the baseline that picks a level from the CPU's
own flags at run time (``kernels/wiou_dispatch.cc``), and the TensorFlow adapter
(``kernels/wiou_ops.cc``) built with TensorFlow's own flags so that Eigen's inline code
matches TensorFlow's. Every unit is built with ``-ffp-contract=off``: no level fuses a
multiply and an add where another does not, so every level gives the same bits.

The library carries two stamps in its bytes, readable without loading it:
``WIOU_BUILT_FOR_TENSORFLOW=<version>`` and ``WIOU_SOURCE_HASH=<sha256 of the sources
and this recipe>``.
"""

import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile

LIBRARY_NAME = "_wiou_ops_native.so"
# The C++ files the library is built from (kernels/ in a checkout; a copy named
# SOURCES_PACKAGE_DIR inside an installed package).
SOURCE_FILES = ("wiou_ops.cc", "wiou_dispatch.cc", "wiou_math_instances.cc", "wiou_math.h",
                "wiou_multiclass.h", "wiou_math_api.h", "wiou_math_entry_points.h")
SOURCES_PACKAGE_DIR = "_kernel_sources"

COMMON_FLAGS = ("-std=c++17", "-fPIC", "-fno-strict-aliasing", "-ffp-contract=off",
                # the 64-byte vector helpers are internal to one level's unit: no ABI to keep
                "-Wno-psabi")
# (level, -march flags) for the loops. The names match wiou_math_api.h's Isa and the
# dispatcher's __builtin_cpu_supports("x86-64-v3"/"x86-64-v4") checks.
# -mtune=znver3 for the AVX2 loops: on a 2-core AMD EPYC (Zen 3), in interleaved
# processes, GCC 12's generic tuning made the forward 1.3x slower (skylake and haswell
# tuning were slower too); not measured on an Intel AVX2 CPU. Tuning changes instruction
# choice and order, never the instruction set or the results.
X86_LEVELS = (("baseline", ("-march=x86-64", "-mtune=generic")),
              ("avx2", ("-march=x86-64-v3", "-mtune=znver3")),
              ("avx512", ("-march=x86-64-v4",)))
GENERIC_LEVELS = (("baseline", ()),)

_STAMP = re.compile(rb"WIOU_(BUILT_FOR_TENSORFLOW|SOURCE_HASH)=([0-9A-Za-z.+\-]+)\n")


class BuildError(Exception):
    """The compiler is missing or failed; the message says which and why."""


def levels(machine=None):
    """The instruction-set levels compiled for this machine (x86-64: three; else one)."""
    machine = (machine or platform.machine()).lower()
    return X86_LEVELS if machine in ("x86_64", "amd64") else GENERIC_LEVELS


def compiler():
    """The C++ compiler to use: $CXX, else g++."""
    return os.environ.get("CXX") or "g++"


def recipe(machine=None):
    """Everything besides the sources that decides the library's bits."""
    return {"common": COMMON_FLAGS, "levels": levels(machine), "loops": "-O3",
            "adapter": "-O2"}


def source_hash(directory, machine=None):
    """sha256 over the recipe and each source file's name and bytes."""
    digest = hashlib.sha256(json.dumps(recipe(machine), sort_keys=True).encode())
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((pathlib.Path(directory) / name).read_bytes())
    return digest.hexdigest()


def find_sources(package_dir):
    """The directory holding SOURCE_FILES for an installed package or a checkout, or None."""
    package_dir = pathlib.Path(package_dir)
    for candidate in (package_dir / SOURCES_PACKAGE_DIR, package_dir.parent / "kernels"):
        if all((candidate / name).is_file() for name in SOURCE_FILES):
            return candidate
    return None


def stamps(library):
    """{"tensorflow": version or None, "source_hash": hash or None} from the file's bytes."""
    found = {b"BUILT_FOR_TENSORFLOW": None, b"SOURCE_HASH": None}
    for match in _STAMP.finditer(pathlib.Path(library).read_bytes()):
        found[match.group(1)] = match.group(2).decode()
    return {"tensorflow": found[b"BUILT_FOR_TENSORFLOW"], "source_hash": found[b"SOURCE_HASH"]}


def _run_all(commands, cwd, jobs):
    """Runs the commands, at most ``jobs`` at a time; raises BuildError on the first failure."""
    pending, running = list(commands), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                command = pending.pop(0)
                try:
                    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)
                except OSError as error:
                    raise BuildError(f"cannot run {command[0]}: {error}") from error
                running.append((command, process))
            command, process = running.pop(0)
            output, _ = process.communicate()
            if process.returncode != 0:
                raise BuildError(f"{' '.join(command)} failed:\n{output[-4000:]}")
    finally:
        for _, process in running:
            process.kill()
            process.wait()


def _loop_commands(cxx, sources, tmp, machine, extra_flags=()):
    """(objects, commands) for every level's loops and the dispatcher."""
    unit_levels = levels(machine)
    objects, commands = [], []
    for level, march in unit_levels:
        objects.append(tmp / f"loops_{level}.o")
        commands.append([cxx, *COMMON_FLAGS, *extra_flags, "-O3", *march,
                         f"-DWIOU_ISA_NAMESPACE=isa_{level}",
                         "-c", str(sources / "wiou_math_instances.cc"), "-o", str(objects[-1])])
    objects.append(tmp / "dispatch.o")
    commands.append([cxx, *COMMON_FLAGS, *extra_flags, "-O2", *unit_levels[0][1],
                     "-c", str(sources / "wiou_dispatch.cc"), "-o", str(objects[-1])])
    return objects, commands


def compile_library(out_path, sources, tensorflow_version, compile_flags, link_flags,
                    machine=None, jobs=None):
    """Builds the library from ``sources`` into ``out_path`` (written last, in one rename).

    compile_flags / link_flags: TensorFlow's ``tf.sysconfig`` flags. Raises BuildError.
    """
    cxx = compiler()
    if shutil.which(cxx) is None:
        raise BuildError(f"no C++ compiler ({cxx}; set CXX to use another)")
    sources = pathlib.Path(sources)
    out_path = pathlib.Path(out_path).resolve()
    stamp_defines = [f'-DWIOU_BUILT_FOR_TENSORFLOW="{tensorflow_version}"',
                     f'-DWIOU_SOURCE_HASH="{source_hash(sources, machine)}"']
    with tempfile.TemporaryDirectory(prefix=".wiou-build-", dir=out_path.parent) as tmp:
        tmp = pathlib.Path(tmp)
        objects, commands = _loop_commands(cxx, sources, tmp, machine)
        objects.append(tmp / "adapter.o")
        commands.append([cxx, *COMMON_FLAGS, "-O2", *levels(machine)[0][1],
                         "-Wno-deprecated-declarations", *stamp_defines, *compile_flags,
                         "-c", str(sources / "wiou_ops.cc"), "-o", str(objects[-1])])
        _run_all(commands, cwd=sources, jobs=jobs or os.cpu_count() or 1)
        linked = tmp / LIBRARY_NAME
        _run_all([[cxx, "-shared", *map(str, objects), "-o", str(linked), *link_flags]],
                 cwd=sources, jobs=1)
        os.replace(linked, out_path)
    return out_path


# -Wno-*uninitialized: GCC 12 false positives inside its own AVX-512 intrinsic headers.
TEST_WARNINGS = ("-Wall", "-Wextra", "-Wno-uninitialized", "-Wno-maybe-uninitialized")


def compile_kernel_test(out_path, sources, jobs=None):
    """Builds kernels/test_wiou_math.cc (no TensorFlow) with every level's loops, exactly
    as the library builds them, and the test itself for the host CPU."""
    cxx = compiler()
    sources = pathlib.Path(sources)
    out_path = pathlib.Path(out_path).resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wiou-build-", dir=out_path.parent) as tmp:
        tmp = pathlib.Path(tmp)
        objects, commands = _loop_commands(cxx, sources, tmp, None, TEST_WARNINGS)
        objects.append(tmp / "test.o")
        commands.append([cxx, *COMMON_FLAGS, *TEST_WARNINGS, "-O2", "-march=native",
                         "-c", str(sources / "test_wiou_math.cc"), "-o", str(objects[-1])])
        _run_all(commands, cwd=sources, jobs=jobs or os.cpu_count() or 1)
        _run_all([[cxx, *map(str, objects), "-o", str(out_path)]], cwd=sources, jobs=1)
    return out_path


if __name__ == "__main__":  # python wiou_ops/_kernels/native_build.py kernel-test OUT
    import sys

    if sys.argv[1:2] != ["kernel-test"] or len(sys.argv) != 3:
        sys.exit("usage: native_build.py kernel-test OUT")
    try:
        compile_kernel_test(sys.argv[2], pathlib.Path(__file__).resolve().parents[2] / "kernels")
    except BuildError as error:
        sys.exit(str(error))
