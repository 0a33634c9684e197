"""The pip package: every third-party import declared, and a wheel that works outside this checkout.

The wheel test builds ros_seg from a copy of its sources with the venv's setuptools (no downloads), installs
it with `pip install --target` into an empty folder and runs `ros-seg` there with a Python that sees only
that folder, the standard library and the venv's site-packages: not the source tree, not the editable
install's .pth file, not a ROS 2 prefix.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from repo_paths import REPO_ROOT

ROOT = REPO_ROOT
PACKAGE = ROOT / "ros_seg"
DEMO_WEIGHTS = ROOT / "models" / "pem_stdc1_synth.pt"
MESSAGES = ("Segment.msg", "SegmentArray.msg", "SegmentationInfo.msg")

# Imported by ros_seg on purpose without a pip dependency: installed by other means when wanted.
NOT_DECLARED = {
    "tensorrt": "NVIDIA's TensorRT, matched to the machine's CUDA driver",
    "torchvision": "a cross-check in a GPU benchmark only (PyPI's torchvision breaks the CPU torch)",
}
# Layers whose module-level imports may come from an extra instead of the core dependencies.
LAYER_EXTRAS = {"replay": "replay"}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """Canonical names of pyproject's core dependencies, and of each extra's."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {canonicalize_name(Requirement(r).name) for r in requirements}

    return names(project["dependencies"]), {k: names(v) for k, v in project["optional-dependencies"].items()}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported unconditionally at module level) of each absolute import in a file."""
    found = []

    def visit(node: ast.AST, hard: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], hard) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], hard))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try, ast.If)):
                visit(child, False)
            else:
                visit(child, hard)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    core, extras = _declared()
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0]
        if layer == "ros":  # rclpy and the message packages come from the ROS 2 installation
            continue
        for module, hard in _imports(path):
            if module in sys.stdlib_module_names or module in ("__future__", "ros_seg") or module in NOT_DECLARED:
                continue
            dists = {canonicalize_name(d) for d in distributions.get(module, [module])}
            allowed = core | extras.get(LAYER_EXTRAS.get(layer, ""), set())
            if not hard:
                allowed = allowed.union(*extras.values())
            if not dists & allowed:
                kind = "at module level" if hard else "optionally"
                problems.append(f"{path.relative_to(ROOT)} imports {module} {kind}, not declared in pyproject.toml")
    assert not problems, "\n".join(problems)


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the sources (pyproject.toml, ros_seg/, msg/), built without build isolation."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", source)
    shutil.copytree(PACKAGE, source / "ros_seg", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "msg", source / "msg")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"),
         str(source)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = (tmp_path / "dist").glob("ros_seg-*.whl")
    return wheel


# Runs in a Python started with -S: argv[1] is JSON of [site-packages folders, commands]. The folders go
# after the standard library, without running their .pth files (one is the checkout's editable install).
DRIVER = """
import json, sys
site_packages, commands = json.loads(sys.argv[1])
sys.path.extend(site_packages)
import ros_seg
from ros_seg.cli import main
print("ros_seg from", json.dumps(list(ros_seg.__path__)), flush=True)
for argv in commands:
    if main(argv) != 0:
        sys.exit("ros-seg " + " ".join(argv) + " failed")
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"ros_seg/configs/models/{p.name}" for p in (PACKAGE / "configs" / "models").glob("*.yaml")}
    assert "ros_seg/configs/models/pem_stdc1.yaml" in configs and configs <= names
    assert {f"ros_seg/resources/msg/{m}" for m in MESSAGES} <= names
    assert not [n for n in names if n.endswith(".pt") or n.startswith("test")], "weights or tests in the wheel"
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"  # ros_seg-VERSION.dist-info
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "ros-seg = ros_seg.cli:main" in entry_points

    target = tmp_path / "target"
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True,
    )
    assert (target / "bin" / "ros-seg").is_file()

    work = tmp_path / "work"
    work.mkdir()
    commands = [
        ["describe", "--model", "pem_stdc1", "--size", "64x128", "--json", "describe.json"],
        ["synth", "--out", "data", "--n", "2", "--split", "val", "--size", "128x256", "--seed", "1", "--workers", "1"],
        ["segment", "--synthetic", "--seed", "3", "--size", "128x256", "--weights", str(DEMO_WEIGHTS),
         "--device", "cpu", "--out", "segment"],
        ["eval", "--model", "pem_stdc1", "--weights", str(DEMO_WEIGHTS), "--data", "data", "--device", "cpu",
         "--json", "eval.json"],
        ["make-bag", "--data", "data", "--split", "val", "--storage", "mcap", "--out", "bag"],
        ["zoo", "list", "--json", "zoo.json"],
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "ROS_SEG_CONFIG_DIR")}
    env["PYTHONPATH"] = str(target)
    env["ROS_SEG_CACHE"] = str(tmp_path / "cache")
    run = subprocess.run(
        [sys.executable, "-S", "-c", DRIVER, json.dumps([site.getsitepackages(), commands])],
        cwd=work, env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    # pkgutil.extend_path in ros_seg/__init__.py would add the checkout's ros_seg/ if it were on sys.path.
    assert f"ros_seg from {json.dumps([str(target / 'ros_seg')])}" in run.stdout

    described = json.loads((work / "describe.json").read_text())
    assert described["model"] == "pem_stdc1" and described["size"] == [64, 128]
    assert round(described["params"] / 1e6, 2) == described["published"]["params_m_authors_code"]
    assert described["gmacs"] > 0

    segmented = json.loads((work / "segment" / "segments.json").read_text())
    assert segmented["size"] == [128, 256] and segmented["segments"]
    assert {"road", "car"} & {s["class"] for s in segmented["segments"]}
    for name in ("semantic_ids.png", "panoptic_ids.png", "overlay.png"):
        assert (work / "segment" / name).stat().st_size > 0, name

    scores = json.loads((work / "eval.json").read_text())
    assert scores["images"] == 2
    assert 20 < scores["miou"] <= 100 and 10 < scores["pq"] <= 100  # the demo checkpoint on synthetic scenes

    zoo = json.loads((work / "zoo.json").read_text())
    assert zoo["cache"] == str(tmp_path / "cache" / "zoo") and len(zoo["models"]) >= 8  # the catalogue is in the wheel

    metadata = (work / "bag" / "metadata.yaml").read_text()
    assert "ros_seg/msg/SegmentArray" in metadata and list((work / "bag").glob("*.mcap"))


def test_missing_package_hints_name_the_extra_that_declares_it() -> None:
    from ros_seg.cli import EXTRA_OF_PACKAGE

    _, extras = _declared()
    for package, extra in EXTRA_OF_PACKAGE.items():
        assert canonicalize_name(package) in extras[extra], f"{package} is not in the [{extra}] extra"
