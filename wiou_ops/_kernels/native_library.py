"""Finding the native kernel's file without loading it: the one shipped in the package,
else one in the user's cache, else one compiled there now (native_build.py).

No TensorFlow here: ``native`` passes in the running TensorFlow's version and flags,
``wiou_ops.info`` reads the answer.

A library is used only when its stamps (native_build.stamps) name the running
TensorFlow and the hash of the sources this package ships: loading an op library
built for another TensorFlow can crash the process.

The cache holds code that will be loaded, so it is treated as an attack surface:
it lives in the user's own cache directory (``$WIOU_OPS_CACHE_DIR``, else
``$XDG_CACHE_HOME/wiou_ops``, else ``~/.cache/wiou_ops``), created 0700; the
directory and the library must be owned by the current user and writable by no one
else, or the library is refused with a warning that says why. A build runs under an
exclusive file lock (``fcntl.flock``), so processes that start together build once;
the library is written to a temporary name and renamed into place, so no process
ever sees half a file.
"""

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import platform
import stat
import time

from wiou_ops._kernels import native_build
from wiou_ops._kernels.native_build import LIBRARY_NAME

# The library sits beside the package's __init__.py (setup.py puts it there).
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent
CACHE_VARIABLE = "WIOU_OPS_CACHE_DIR"


@dataclasses.dataclass
class Found:
    """Where the library came from: origin is "package", "cache" or "built" (just now)."""
    path: pathlib.Path
    origin: str
    build_seconds: float = 0.0
    # Why the package's own library was passed over, if it was.
    package_note: str = ""


def library_path(directory=PACKAGE_DIR):
    return pathlib.Path(directory) / LIBRARY_NAME


def built_for(library):
    """The TensorFlow version stamped into the library file, or None without a stamp."""
    return native_build.stamps(library)["tensorflow"]


def cache_root():
    """$WIOU_OPS_CACHE_DIR, else $XDG_CACHE_HOME/wiou_ops (when absolute), else
    ~/.cache/wiou_ops."""
    if os.environ.get(CACHE_VARIABLE):
        return pathlib.Path(os.environ[CACHE_VARIABLE]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = pathlib.Path(xdg) if os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return base / "wiou_ops"


def cache_entry(root, tensorflow_version, source_hash):
    """One directory per machine type, TensorFlow and source hash. The instruction-set
    level is not part of the key: one library holds every level and picks at run time."""
    return pathlib.Path(root) / (
        f"{platform.machine()}-tf{tensorflow_version}-{source_hash[:16]}")


def untrusted_reason(path, uid=None):
    """Why ``path`` must not be trusted, or None: it must be owned by ``uid`` (the current
    user), not a symbolic link, and writable by no one else."""
    uid = os.getuid() if uid is None else uid
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symbolic link"
    if info.st_uid != uid:
        return f"{path} is owned by uid {info.st_uid}, not by this user (uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def stale_reason(library, tensorflow_version, source_hash):
    """Why the library's stamps do not fit, or None."""
    found = native_build.stamps(library)
    if found["tensorflow"] is None:
        return f"{library} carries no TensorFlow version stamp"
    if found["tensorflow"] != tensorflow_version:
        return (f"{library} was built for TensorFlow {found['tensorflow']}, but TensorFlow "
                f"{tensorflow_version} is running")
    if source_hash is not None and found["source_hash"] != source_hash:
        return f"{library} was built from other sources than this package's"
    return None


class Refused(Exception):
    """A library or cache directory failed a check; the message says which and why."""


def _private_directory(path):
    """Creates ``path`` (0700) if missing; raises Refused if it is not private to us."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    reason = untrusted_reason(path)
    if reason is not None:
        raise Refused(f"the kernel cache directory is not private: {reason} "
                      f"(fix it, e.g. `chmod 700 {path}`, or set {CACHE_VARIABLE})")


@contextlib.contextmanager
def _exclusive_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _cached(library, tensorflow_version, source_hash):
    """True for a trusted, current library; False when there is none or it is stale;
    raises Refused for one that someone else could have written."""
    if not os.path.lexists(library):
        return False
    reason = untrusted_reason(library.parent) or untrusted_reason(library)
    if reason is not None:
        raise Refused(f"the cached kernel is not loaded: {reason}; delete it to rebuild")
    return stale_reason(library, tensorflow_version, source_hash) is None


def locate(tensorflow_version, tensorflow_flags, package_dir=PACKAGE_DIR, root=None,
           build=native_build.compile_library):
    """The library to load, as a ``Found``; raises ``native_build.BuildError`` or
    ``Refused`` with the reason there is none.

    tensorflow_flags: a callable returning TensorFlow's (compile flags, link flags), only
    called when a build is needed. build: native_build.compile_library's signature.
    """
    sources = native_build.find_sources(package_dir)
    expected_hash = None if sources is None else native_build.source_hash(sources)
    packaged = library_path(package_dir)
    package_note = ""
    if packaged.exists():
        package_note = stale_reason(packaged, tensorflow_version, expected_hash) or ""
        if not package_note:
            return Found(packaged, "package")
    if sources is None:
        raise native_build.BuildError(
            package_note or "this package has neither a native CPU kernel nor the sources "
            "to build one")
    root = pathlib.Path(root) if root is not None else cache_root()
    entry = cache_entry(root, tensorflow_version, expected_hash)
    library = entry / LIBRARY_NAME
    _private_directory(root)
    if _cached(library, tensorflow_version, expected_hash):
        return Found(library, "cache", package_note=package_note)
    with _exclusive_lock(root / f"{entry.name}.lock"):
        _private_directory(entry)
        if _cached(library, tensorflow_version, expected_hash):  # built while we waited
            return Found(library, "cache", package_note=package_note)
        start = time.perf_counter()
        compile_flags, link_flags = tensorflow_flags()
        build(library, sources, tensorflow_version, compile_flags, link_flags)
        os.chmod(library, 0o700)
        return Found(library, "built", time.perf_counter() - start, package_note)


# The x86-64 micro-architecture levels as /proc/cpuinfo flags (the kernel's own check
# is __builtin_cpu_supports("x86-64-v3"/"x86-64-v4"), which also asks the OS).
_LEVEL_FLAGS = (("avx512", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
                ("avx2", {"avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"}))


def cpu_isa():
    """The widest level of the kernel's loops this CPU reports ("avx512", "avx2",
    "baseline"), from /proc/cpuinfo, without loading the kernel; "" off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    for level, needs in _LEVEL_FLAGS:
                        if needs <= flags:
                            return level
                    return "baseline"
    except OSError:
        pass
    return ""
