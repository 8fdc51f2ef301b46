"""The package's imports go one way, top to bottom (docs/design.md, "Layers").

Every ``import`` of a wiou_ops module, at module level or inside a function, is read
from the source (``ast``), so an import that only runs on some backend counts too.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wiou_ops"

# Top (imports anything below) to bottom (imports nothing of the package).
LAYERS = [
    ("tools", ("wiou_ops.bench", "wiou_ops.info")),
    ("experimental", ("wiou_ops.experimental",)),
    ("package", ("wiou_ops",)),
    ("public API", ("wiou_ops.losses", "wiou_ops.jax", "wiou_ops.reference", "wiou_ops.oracle")),
    ("router", ("wiou_ops._router",)),
    ("backends", ("wiou_ops._backends",)),
    ("backend-neutral", ("wiou_ops._common",)),
    ("kernels", ("wiou_ops._kernels",)),
    ("multi-class math", ("wiou_ops._multiclass",)),  # built on the binary math
    ("math", ("wiou_ops._iou",)),
]


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module):
    """Index in LAYERS of the longest prefix that names the module or a package above it."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/design.md"
    return best[0]


def _imports(module, path):
    """The wiou_ops modules that ``module`` imports (``from wiou_ops import x`` counts as the
    submodule x when x is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return {name for name in found if name == "wiou_ops" or name.startswith("wiou_ops.")}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    """A module imports modules of lower layers only; inside one layer, only from its own
    subpackage (the kernels share their custom-gradient wrapper)."""
    mine = _layer(module)
    for target in GRAPH[module]:
        assert target in MODULES, f"{module} imports {target}, which does not exist"
        theirs = _layer(target)
        same_package = target.rsplit(".", 1)[0] == module.rsplit(".", 1)[0] != "wiou_ops"
        assert theirs > mine or (theirs == mine and same_package), (
            f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}): "
            "imports must go down the layers")


def test_no_import_cycle():
    visiting, done = set(), set()

    def visit(module, chain):
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join(chain + [module])
        visiting.add(module)
        for target in sorted(GRAPH[module]):
            visit(target, chain + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(MODULES):
        visit(module, [])


def test_the_math_imports_no_framework():
    """_iou is plain Python: every kernel runs its functions with its own arrays."""
    tree = ast.parse(MODULES["wiou_ops._iou"].read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else
                              [ast.alias(node.module or "")])}
    assert imported <= {"dataclasses"}, imported


def test_the_checker_catches_an_upward_import(tmp_path):
    """The check is not vacuous: a kernel that imports the public API is flagged."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from wiou_ops import losses\n")
    targets = _imports("wiou_ops._kernels.bad", source)
    assert targets == {"wiou_ops.losses"}
    assert _layer("wiou_ops.losses") < _layer("wiou_ops._kernels.bad")
