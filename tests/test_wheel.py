"""The package as a user installs it: the sdist, a wheel built from it in pip's default
isolated build, and that wheel in fresh virtual environments with no checkout on
sys.path.

Each fresh venv gets its dependencies without a second download: the distributions this
test venv already has (TensorFlow, Keras, ... or JAX alone) are shared into it, read-only,
through a ``.pth`` file that lists a folder of links to exactly their files; pip sees them
as installed (``--no-index`` proves nothing is fetched). The wheel itself is installed
by pip as usual.
"""

import json
import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from wiou_ops._kernels import native_build

# One pytest-xdist worker runs this whole file: the sdist and wheel are built once.
pytestmark = pytest.mark.xdist_group("wheel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE_PACKAGES = pathlib.Path(metadata.distribution("numpy").locate_file(""))


def _run(command, cwd=None, env=None, timeout=900):
    out = subprocess.run([str(part) for part in command], cwd=cwd, env=env, timeout=timeout,
                         capture_output=True, text=True)
    assert out.returncode == 0, f"{command}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def _closure(names):
    """The installed distributions ``names`` and everything they require (no extras)."""
    found, todo = {}, list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        for text in found[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def _fresh_venv(directory, share):
    """A new venv whose site-packages sees the distributions ``share`` (and their
    requirements) of this venv, and nothing else of it."""
    _run([sys.executable, "-m", "venv", directory])
    shared = directory / "shared"
    shared.mkdir()
    distributions = _closure(share)
    for distribution in distributions.values():
        tops = {pathlib.PurePath(str(f)).parts[0] for f in distribution.files or ()}
        for top in tops - {".."}:
            source = SITE_PACKAGES / top
            if source.exists() and not (shared / top).exists():
                (shared / top).symlink_to(source)
    python = directory / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    pathlib.Path(site.stdout.strip(), "shared-from-test-venv.pth").write_text(f"{shared}\n")
    return python, set(distributions)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WIOU_OPS"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """(sdist, wheel): the sdist, and a wheel pip builds from it in an isolated build
    environment (no TensorFlow there, so the wheel carries the kernel's sources only)."""
    out = tmp_path_factory.mktemp("dist")
    # cwd: not the checkout, whose build/ folder would shadow the build package
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, ROOT],
         cwd=out)
    (sdist,) = out.glob("*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, sdist], cwd=out)
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_sdist_carries_the_kernel_sources_and_the_tests(dist):
    with tarfile.open(dist[0]) as sdist:
        names = {pathlib.PurePath(name).relative_to(pathlib.PurePath(name).parts[0]).as_posix()
                 for name in sdist.getnames() if len(pathlib.PurePath(name).parts) > 1}
    assert {f"kernels/{name}" for name in native_build.SOURCE_FILES} <= names
    assert {"kernels/test_wiou_math.cc", "tests/test_native_build.py", "Makefile", "LICENSE",
            "setup.py", "pyproject.toml"} <= names
    assert not [name for name in names if name.endswith((".so", ".o"))]


def test_manifest_leaves_out_bytecode_even_while_it_is_being_written(tmp_path, monkeypatch):
    """Files the interpreter is writing (``x.pyc.<number>``, renamed into place a moment
    later) are in no sdist: a list that named one could not be copied once it was gone."""
    from setuptools.command.egg_info import FileList

    kept = ["tests/test_x.py", "kernels/k.cc", "docs/guide.md"]
    left_out = ["tests/__pycache__/test_x.cpython-311.pyc",
                "tests/__pycache__/test_x.cpython-311.pyc.140234",
                "tests/__pycache__/test_x.cpython-311-pytest-8.3.5.pyc.5678",
                "kernels/k.o", "kernels/k.so"]
    for name in kept + left_out:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    files = FileList()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            files.process_template_line(line)
    assert sorted(files.files) == sorted(kept)


def test_isolated_wheel_carries_sources_and_license(dist):
    with zipfile.ZipFile(dist[1]) as wheel:
        names = set(wheel.namelist())
    sources = f"wiou_ops/{native_build.SOURCES_PACKAGE_DIR}"
    assert {f"{sources}/{name}" for name in native_build.SOURCE_FILES} <= names
    assert f"wiou_ops/{native_build.LIBRARY_NAME}" not in names  # no TensorFlow in that build
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


_CHECK = """
    import json, sys
    import numpy as np
    import wiou_ops
    from wiou_ops import oracle
    from wiou_ops._kernels import native
    import tensorflow as tf

    rng = np.random.default_rng(0)
    y = (rng.random((3, 45, 47, 1)) < 0.1).astype("float32")
    p = rng.uniform(0, 1, (3, 45, 47, 1)).astype("float32")
    loss_fn = wiou_ops.WeightedIoULoss(0.5, 1.5)
    x = tf.constant(p)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, x)
    grad = tape.gradient(loss, x).numpy()
    want, want_grad = oracle.seed_value_and_grad(y.astype("float64"), p.astype("float64"),
                                                 weight_background=0.5, weight_foreground=1.5)
    print(json.dumps({
        "file": wiou_ops.__file__, "implementation": wiou_ops.last_implementation(),
        "origin": native.FOUND.origin, "library": str(native.FOUND.path),
        "isa": native.isa(),
        "value_err": abs(float(loss) - want) / abs(want),
        "grad_err": float(np.max(np.abs(grad - want_grad)) / np.max(np.abs(want_grad))),
    }))
"""


def test_fresh_venv_builds_the_kernel_once_on_first_use(dist, tmp_path):
    """pip install <wheel from an isolated build>; two processes import at the same moment
    with an empty cache: one compiles, the other waits for it; both run ``native`` and
    match the float64 oracle; the next process reuses the cache."""
    python, shared = _fresh_venv(tmp_path / "venv", ["tensorflow-cpu", "keras"])
    assert "wiou-ops" not in shared
    _run([python, "-m", "pip", "install", "--no-index", dist[1]])
    cache = tmp_path / "cache"
    env = _clean_env(WIOU_OPS_CACHE_DIR=str(cache))
    code = textwrap.dedent(_CHECK)
    racers = [subprocess.Popen([python, "-c", code], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(2)]
    outputs = [racer.communicate(timeout=900) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-3000:] for _, err in outputs]
    results = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert sorted(r["origin"] for r in results) == ["built", "cache"]
    assert sum(err.count("compiling the native CPU kernel") for _, err in outputs) == 1
    for result in results:
        assert result["file"].startswith(str(tmp_path / "venv"))
        assert result["implementation"] == "native"
        assert result["library"].startswith(str(cache))
        assert result["value_err"] <= 1e-6 and result["grad_err"] <= 1e-5
    again = _run([python, "-c", code], cwd=tmp_path, env=env)
    assert json.loads(again.stdout.splitlines()[-1])["origin"] == "cache"
    info = _run([python, "-m", "wiou_ops.info"], cwd=tmp_path, env=env)
    lines = dict(line.split(None, 1) for line in info.stdout.splitlines() if line.strip())
    assert lines["native_origin"] == "user cache" and lines["native_cache"] == str(cache)
    assert lines["implementations"] == "['native', 'xla', 'graph']"


_PLAIN_JAX = """
    import importlib.util, json, sys
    import numpy as np
    import jax, jax.numpy as jnp
    import wiou_ops.jax
    from wiou_ops import oracle

    rng = np.random.default_rng(1)
    y = (rng.random((2, 33, 35, 1)) < 0.2).astype("float32")
    p = rng.uniform(0, 1, (2, 33, 35, 1)).astype("float32")
    value, grad = jax.value_and_grad(
        lambda x: wiou_ops.jax.weighted_iou_loss(y, x, weight_background=0.5,
                                                 weight_foreground=1.5, weighting="pixel"))(p)
    want, want_grad = oracle.iou_value_and_grad(y, p, weighting="pixel", weight_background=0.5,
                                                weight_foreground=1.5)
    print(json.dumps({
        "file": wiou_ops.__file__,
        "missing": [m for m in ("keras", "tensorflow") if importlib.util.find_spec(m) is None],
        "loaded": [m for m in ("keras", "tensorflow") if m in sys.modules],
        "value_err": abs(float(value) - want) / abs(want),
        "grad_err": float(np.max(np.abs(np.asarray(grad) - want_grad))
                          / np.max(np.abs(want_grad))),
    }))
"""


def test_plain_jax_venv_without_keras_or_tensorflow(dist, tmp_path):
    python, shared = _fresh_venv(tmp_path / "venv", ["jax"])
    assert not shared & {"keras", "tensorflow", "tensorflow-cpu"}
    # --no-deps: Keras is a dependency of the Keras API, which a plain-JAX user skips
    _run([python, "-m", "pip", "install", "--no-index", "--no-deps", dist[1]])
    out = _run([python, "-c", textwrap.dedent(_PLAIN_JAX)], cwd=tmp_path, env=_clean_env())
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["file"].startswith(str(tmp_path / "venv"))
    assert result["missing"] == ["keras", "tensorflow"] and result["loaded"] == []
    assert result["value_err"] <= 1e-6 and result["grad_err"] <= 1e-5
