"""Imports inside ros_seg follow the layers of the README's Architecture section and form no cycles.

Every import statement counts, also those inside functions: an import deferred
into a function is still a dependency. The checks read the sources with `ast`
(nothing is imported), so they run without ROS 2 and see every module.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

from repo_paths import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "ros_seg"
# Top first; a module may import its own layer and the layers below it. `ros_seg.msg`, the
# generated messages, belongs to ros.
LAYERS = ("cli", "bench", "ros", "replay", "inference", "train", "eval", "data", "models", "ops")
LAYER_OF_SUBPACKAGE = {"msg": "ros"}
Edge = tuple[str, str]


def module_name(path: Path, root: Path) -> str:
    """Dotted name of the module in `path` under the package folder `root`."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, known: set[str]) -> set[str]:
    """The ros_seg modules (or, where a name is not a module, their packages) that `path` imports."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t == root.name or t.startswith(root.name + ".")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the ros_seg modules it imports, for every .py file under `root`."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    return {module_name(f, root): imported_modules(f, root, known) - {module_name(f, root)} for f in files}


def layer(module: str) -> str | None:
    """Layer of a dotted ros_seg module name (None for the package root)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return LAYER_OF_SUBPACKAGE.get(parts[1], parts[1])


def upward_imports(graph: dict[str, set[str]]) -> list[Edge]:
    """Imports from a module to a module of a higher layer, or of a folder that is no layer."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, targets in graph.items():
        source = layer(module)
        for target in targets:
            if source is None or layer(target) is None:
                continue
            if source not in rank or layer(target) not in rank or rank[layer(target)] < rank[source]:
                upward.append((module, target))
    return sorted(upward)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of two or more modules that import each other, directly or through others (Tarjan)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_every_folder_of_the_package_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE_ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert folders <= set(LAYERS), f"folders that are no layer: {sorted(folders - set(LAYERS))}"


def test_imports_point_down() -> None:
    assert upward_imports(import_graph(PACKAGE_ROOT)) == []


def test_no_import_cycles_outside_ops() -> None:
    cycles = import_cycles(import_graph(PACKAGE_ROOT))
    assert [c for c in cycles if any(layer(m) != "ops" for m in c)] == []


def test_no_import_cycles_within_ops() -> None:
    assert [c for c in import_cycles(import_graph(PACKAGE_ROOT)) if all(layer(m) == "ops" for m in c)] == []


def test_planted_upward_import_and_cycle_are_found(tmp_path: Path) -> None:
    """The checks on a copy of the package with one upward import and one cycle planted."""
    root = tmp_path / "ros_seg"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "resources"))
    with (root / "models" / "mask_former.py").open("a") as f:
        f.write("\n\ndef _planted():\n    from ros_seg.inference.segmenter import Segmenter\n    return Segmenter\n")
    with (root / "data" / "transforms.py").open("a") as f:
        f.write("\nfrom ros_seg.data import cityscapes  # planted: cityscapes imports transforms\n")
    graph = import_graph(root)
    assert upward_imports(graph) == [("ros_seg.models.mask_former", "ros_seg.inference.segmenter")]
    assert ["ros_seg.data.cityscapes", "ros_seg.data.transforms"] in import_cycles(graph)
