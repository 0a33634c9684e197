"""`colcon test` runs this suite: the package built with BUILD_TESTING on, ament_add_pytest_test, colcon's results.

The build goes to a temporary build/install base (the checkout's own build/ and
install/ stay as scripts/setup.sh made them); pytest inside colcon runs only the
import-layer tests (PYTEST_ADDOPTS), so this checks the wiring, not the suite twice.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repo_paths import REPO_ROOT

COLCON = REPO_ROOT / "scripts" / "colcon.sh"
pytestmark = [
    pytest.mark.skipif(shutil.which("colcon") is None, reason="no colcon here: run scripts/setup.sh"),
    pytest.mark.slow,  # a CMake build of the package (about a minute)
]


def colcon(*args: str, log_base: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(COLCON), "--log-base", str(log_base), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_colcon_test_runs_the_pytest_suite(tmp_path: Path) -> None:
    bases = ["--base-paths", str(REPO_ROOT), "--build-base", str(tmp_path / "build"),
             "--install-base", str(tmp_path / "install")]
    built = colcon("build", *bases, "--cmake-args", "-DBUILD_TESTING=ON", log_base=tmp_path / "log")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    env = dict(os.environ, PYTEST_ADDOPTS="-k test_import_layers -p no:cacheprovider")
    tested = colcon("test", *bases, "--event-handlers", "console_direct+", log_base=tmp_path / "log", env=env)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    assert "ros_seg_pytest" in tested.stdout, tested.stdout[-3000:]

    result = colcon("test-result", "--test-result-base", str(tmp_path / "build"), "--all", log_base=tmp_path / "log")
    summary = re.search(r"Summary: (\d+) tests, (\d+) errors, (\d+) failures", result.stdout)
    assert summary, result.stdout + result.stderr
    tests, errors, failures = map(int, summary.groups())
    selected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-k", "test_import_layers",
                               "-p", "no:cacheprovider", "test/package/test_import_layers.py"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    collected = int(re.search(r"(\d+)(?:/\d+)? tests? collected", selected.stdout).group(1))
    # colcon's count also holds ctest's own entry for the pytest run.
    assert (errors, failures) == (0, 0) and tests >= collected > 0, result.stdout
