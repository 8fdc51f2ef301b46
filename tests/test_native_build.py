"""The native kernel as users get it: run-time instruction-set levels, and the library's
journey from the package or the user's cache (native_library.locate).

The cache protocol (stamps, private directories, the lock) is tested with a stand-in
compiler that writes a stamped file in a fraction of a second; the real compiler, the
real import and two processes at once are tested on an installed wheel in
test_wheel.py.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from wiou_ops._kernels import native as _native
from wiou_ops._kernels import native_build, native_library

ROOT = pathlib.Path(__file__).resolve().parents[1]
LEVELS = ("baseline", "avx2", "avx512")
needs_native = pytest.mark.skipif(
    "native" not in wiou_ops.available_implementations(),
    reason=f"native op not built: {_native.UNAVAILABLE_REASON}",
)


def _python(code, *args, env=None, cwd=ROOT, timeout=600):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# ---- instruction-set levels ------------------------------------------------------------

# Every weighting with and without logits, per-image groups, a weight map, 16-bit
# predictions: test_modes.check_mode asserts each against the float64 oracle (and the
# multi-class loss's activations and labels: test_multiclass's helpers).
_LEVEL_PROBE = """
    import json, sys
    import numpy as np
    from tests.test_modes import check_mode
    from wiou_ops._kernels import native
    out = {"isa": native.isa()}
    for weighting in ("seed", "pixel", "class"):
        for pred_dtype in ("float32", "bfloat16", "float16"):
            for per_image, from_logits, log in ((False, False, True), (True, True, False)):
                loss, grad = check_mode("native", weighting, (3, 37, 41, 1), pred_dtype,
                                        per_image, from_logits, log, seed=5)
                key = f"{weighting}-{pred_dtype}-{per_image}-{from_logits}"
                out[key] = [float(np.sum(loss)), grad.ravel().tolist()]
    # MultiClassIoULoss: softmax, sigmoid and clip, sparse and one-hot labels, void pixels,
    # a weight map, ragged tiles, several pixel blocks (no per_image) and 16-bit logits.
    import wiou_ops
    from tests import test_multiclass as mc
    for classes, labels, activation, per_image in ((7, "sparse-uint8", "softmax", False),
                                                   (19, "onehot", "sigmoid", True),
                                                   (3, "sparse-int32", "clip", True)):
        for pred_dtype in ("float32", "bfloat16"):
            y_true, y_pred, weight, options, (y_numpy, weights) = mc.make_case(
                classes, labels, activation, "void", "pixel", pred_dtype, shape=(3, 37, 41))
            up = 1.0 if pred_dtype == "float32" else mc._loss_scale(
                y_numpy, y_pred, options, per_image, weight, weights)
            want = mc.oracle_for(y_numpy, y_pred, options, per_image, weight, weights, up)
            loss = wiou_ops.MultiClassIoULoss(implementation="native", per_image=per_image,
                                              **options)
            value, grad = mc.value_and_grad(loss, y_true, y_pred, weight, upstream=up)
            key = f"multiclass-{classes}-{activation}-{pred_dtype}"
            mc.assert_close(value, grad, *want, pred_dtype, key)
            out[key] = [value, grad.ravel().tolist()]
    json.dump(out, open(sys.argv[1], "w"))
"""


@needs_native
def test_every_level_matches_the_oracle_and_the_others(tmp_path):
    """WIOU_OPS_ISA forces each level this CPU has (a level above it is clamped); each
    matches the float64 oracle, and all agree within 1e-7 relative (in fact bit for bit:
    no level contracts a multiply-add that another does not)."""
    cpu = _native.isa()[1]
    results = {}
    for level in LEVELS:
        path = tmp_path / f"{level}.json"
        out = _python(_LEVEL_PROBE, path, env={"WIOU_OPS_ISA": level})
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(path.read_text())
        expected = level if LEVELS.index(level) <= LEVELS.index(cpu) else cpu
        assert result.pop("isa") == [expected, cpu]
        results[level] = result
    reference = results["baseline"]
    for level, result in results.items():
        for key, (loss, grad) in result.items():
            want_loss, want_grad = reference[key]
            assert loss == pytest.approx(want_loss, rel=1e-7, abs=0), (level, key)
            scale = max(np.max(np.abs(want_grad)), 1e-30)
            assert np.max(np.abs(np.subtract(grad, want_grad))) <= 1e-7 * scale, (level, key)


def test_unknown_level_is_a_clear_error():
    out = _python("""
        import numpy as np, wiou_ops
        wiou_ops.weighted_iou_loss(np.zeros((1, 4, 4, 1), "float32"),
                                   np.full((1, 4, 4, 1), 0.5, "float32"))
    """, env={"WIOU_OPS_ISA": "avx3"})
    assert out.returncode != 0
    assert "WIOU_OPS_ISA='avx3' is not one of baseline, avx2, avx512" in out.stderr


def test_cpu_level_from_proc_matches_the_kernel():
    """wiou-bench names machines by native_library.cpu_isa(); the kernel decides by
    __builtin_cpu_supports. Both must name the same level."""
    if _native.isa() is None:
        pytest.skip(f"native op not built: {_native.UNAVAILABLE_REASON}")
    assert native_library.cpu_isa() == _native.isa()[1]


# ---- locate: package, cache, build -----------------------------------------------------

TF_VERSION = tf.__version__


def _stamped(tensorflow_version, source_hash):
    return (b"\x7fELF stand-in WIOU_BUILT_FOR_TENSORFLOW=" + tensorflow_version.encode()
            + b"\nWIOU_SOURCE_HASH=" + source_hash.encode() + b"\n")


class StandInCompiler:
    """native_build.compile_library's signature; writes a stamped file, counts calls."""

    def __init__(self, tensorflow_version=TF_VERSION):
        self.calls = 0
        self.tensorflow_version = tensorflow_version

    def __call__(self, out_path, sources, tensorflow_version, compile_flags, link_flags):
        self.calls += 1
        assert compile_flags == ["-I/tf"] and link_flags == ["-ltf"]
        tmp = pathlib.Path(out_path).with_suffix(".tmp")
        tmp.write_bytes(_stamped(tensorflow_version, native_build.source_hash(sources)))
        os.replace(tmp, out_path)
        return out_path


def _flags():
    return ["-I/tf"], ["-ltf"]


@pytest.fixture
def package(tmp_path):
    """A package directory that ships the kernel's sources but no library."""
    directory = tmp_path / "site" / "wiou_ops"
    shutil.copytree(ROOT / "kernels", directory / native_build.SOURCES_PACKAGE_DIR,
                    ignore=shutil.ignore_patterns("test_*"))
    return directory


def _source_hash(package_dir):
    return native_build.source_hash(native_build.find_sources(package_dir))


def test_package_library_is_used_when_its_stamps_fit(package, tmp_path):
    library = native_library.library_path(package)
    library.write_bytes(_stamped(TF_VERSION, _source_hash(package)))
    build = StandInCompiler()
    found = native_library.locate(TF_VERSION, _flags, package, tmp_path / "cache", build)
    assert (found.path, found.origin, build.calls) == (library, "package", 0)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("stale", ["other tensorflow", "other sources", "no stamp", "missing"])
def test_stale_or_missing_package_library_builds_once_into_the_cache(package, tmp_path, stale):
    library = native_library.library_path(package)
    if stale == "other tensorflow":
        library.write_bytes(_stamped("2.99.0", _source_hash(package)))
    elif stale == "other sources":
        library.write_bytes(_stamped(TF_VERSION, "0" * 64))
    elif stale == "no stamp":
        library.write_bytes(b"\x7fELF garbage")
    root = tmp_path / "cache"
    build = StandInCompiler()
    found = native_library.locate(TF_VERSION, _flags, package, root, build)
    assert found.origin == "built" and build.calls == 1
    assert found.path == native_library.cache_entry(
        root, TF_VERSION, _source_hash(package)) / native_build.LIBRARY_NAME
    if stale == "other tensorflow":
        assert "built for TensorFlow 2.99.0" in found.package_note
    elif stale == "missing":
        assert found.package_note == ""
    # private: the cache and its entry are 0700, the library writable by its owner only
    for path in (root, found.path.parent):
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
    assert os.stat(found.path).st_mode & 0o022 == 0
    # the next import reuses it
    again = native_library.locate(TF_VERSION, _flags, package, root, build)
    assert (again.path, again.origin, build.calls) == (found.path, "cache", 1)


def test_cached_library_with_a_stale_stamp_is_rebuilt(package, tmp_path):
    root = tmp_path / "cache"
    build = StandInCompiler()
    found = native_library.locate(TF_VERSION, _flags, package, root, build)
    found.path.write_bytes(found.path.read_bytes().replace(
        TF_VERSION.encode(), b"9" * len(TF_VERSION)))
    rebuilt = native_library.locate(TF_VERSION, _flags, package, root, build)
    assert (rebuilt.origin, build.calls) == ("built", 2)
    assert native_library.built_for(rebuilt.path) == TF_VERSION


def test_library_writable_by_others_is_refused(package, tmp_path):
    root = tmp_path / "cache"
    build = StandInCompiler()
    found = native_library.locate(TF_VERSION, _flags, package, root, build)
    os.chmod(found.path, 0o722)
    with pytest.raises(native_library.Refused, match="writable by group or others"):
        native_library.locate(TF_VERSION, _flags, package, root, build)
    assert build.calls == 1


def test_library_owned_by_another_user_is_refused(package, tmp_path):
    root = tmp_path / "cache"
    found = native_library.locate(TF_VERSION, _flags, package, root, StandInCompiler())
    assert "owned by uid" in native_library.untrusted_reason(found.path, uid=os.getuid() + 1)
    if os.getuid() != 0:
        return  # only root can give a file away; the check itself is exercised above
    os.chown(found.path, 4242, -1)
    with pytest.raises(native_library.Refused, match="owned by uid 4242"):
        native_library.locate(TF_VERSION, _flags, package, root, StandInCompiler())


def test_shared_cache_directory_is_refused(package, tmp_path):
    root = tmp_path / "cache"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)  # as /tmp would be
    with pytest.raises(native_library.Refused, match="not private"):
        native_library.locate(TF_VERSION, _flags, package, root, StandInCompiler())


def test_symbolic_link_in_the_cache_is_refused(package, tmp_path):
    root = tmp_path / "cache"
    found = native_library.locate(TF_VERSION, _flags, package, root, StandInCompiler())
    elsewhere = tmp_path / "elsewhere.so"
    os.replace(found.path, elsewhere)
    found.path.symlink_to(elsewhere)
    with pytest.raises(native_library.Refused, match="symbolic link"):
        native_library.locate(TF_VERSION, _flags, package, root, StandInCompiler())


def test_no_sources_and_no_library_says_so(tmp_path):
    with pytest.raises(native_build.BuildError, match="neither a native CPU kernel nor the sources"):
        native_library.locate(TF_VERSION, _flags, tmp_path / "wiou_ops", tmp_path / "cache",
                              StandInCompiler())


def test_no_compiler_is_a_clear_reason(package, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native_build.BuildError, match="no C.. compiler"):
        native_library.locate(TF_VERSION, _flags, package, tmp_path / "cache")


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(native_library.CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native_library.cache_root() == tmp_path / "xdg" / "wiou_ops"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert native_library.cache_root() == pathlib.Path.home() / ".cache" / "wiou_ops"
    monkeypatch.setenv(native_library.CACHE_VARIABLE, str(tmp_path / "mine"))
    assert native_library.cache_root() == tmp_path / "mine"


_RACER = """
    import os, pathlib, sys, time, types
    # The package's modules without its __init__ (no Keras, no TensorFlow): both racers
    # start within milliseconds of each other.
    package = types.ModuleType("wiou_ops")
    package.__path__ = ["{root}/wiou_ops"]
    sys.modules["wiou_ops"] = package
    from wiou_ops._kernels import native_build, native_library
    def build(out_path, sources, tensorflow_version, compile_flags, link_flags):
        with open("{log}", "a") as log:
            log.write(f"{{os.getpid()}}\\n")
        time.sleep(3)  # long enough for the other process to reach the lock
        tmp = pathlib.Path(str(out_path) + ".tmp")
        tmp.write_bytes(b"WIOU_BUILT_FOR_TENSORFLOW=" + tensorflow_version.encode() + b"\\n"
                        + b"WIOU_SOURCE_HASH=" + native_build.source_hash(sources).encode()
                        + b"\\n")
        os.replace(tmp, out_path)
    while time.time() < {start}:
        time.sleep(0.01)
    found = native_library.locate("{tf}", lambda: ([], []), pathlib.Path("{package}"),
                                  pathlib.Path("{cache}"), build)
    print(found.origin, found.path)
"""


def test_two_processes_at_once_build_once(package, tmp_path):
    import time

    log = tmp_path / "builds.log"
    code = textwrap.dedent(_RACER).format(root=ROOT, log=log, start=time.time() + 5,
                                          tf=TF_VERSION, package=package,
                                          cache=tmp_path / "cache")
    racers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err for _, err in outputs]
    origins = sorted(out.split()[0] for out, _ in outputs)
    paths = {out.split()[1] for out, _ in outputs}
    assert origins == ["built", "cache"] and len(paths) == 1
    assert len(log.read_text().splitlines()) == 1
