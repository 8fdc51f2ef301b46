"""The native kernel's file, without TensorFlow: where it is, which TensorFlow it was
built for, and the CPU it runs on. ``native`` loads it; ``wiou_ops.info`` reports it."""

import pathlib
import re

LIBRARY_NAME = "_wiou_ops_native.so"
# The library sits beside the package's __init__.py (setup.py puts it there).
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent
_STAMP = re.compile(rb"WIOU_BUILT_FOR_TENSORFLOW=([0-9A-Za-z.+\-]+)\n")


def library_path(directory=PACKAGE_DIR):
    return pathlib.Path(directory) / LIBRARY_NAME


def built_for(library):
    """The TensorFlow version stamped into the library file, or None without a stamp.

    Read from the file's bytes: loading a library built for another TensorFlow can
    crash the process.
    """
    stamp = _STAMP.search(pathlib.Path(library).read_bytes())
    return None if stamp is None else stamp.group(1).decode()


def cpu_isa():
    """The widest x86 vector extension the CPU reports ("avx512", "avx2"), else "".

    Linux only (/proc/cpuinfo); "" elsewhere.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    if "avx512f" in flags:
                        return "avx512"
                    return "avx2" if "avx2" in flags else ""
    except OSError:
        pass
    return ""
