"""The `ros-seg` command: describe, bench, segment; help texts and exit codes."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ros_seg.cli import COMMANDS, build_parser, main

from repo_paths import REPO_ROOT


def test_every_command_has_help(capsys: pytest.CaptureFixture) -> None:
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert "usage: ros-seg " + name in capsys.readouterr().out
    assert build_parser().prog == "ros-seg"


def test_readme_command_table_matches_the_help(capsys: pytest.CaptureFixture) -> None:
    """The README's table of commands names every command, and only options that its --help documents."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The `ros-seg` command", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `ros-seg (\w[\w-]*)([^`]*)`", section, flags=re.MULTILINE)
    assert {name for name, _ in rows} == set(COMMANDS)
    for name, usage in rows:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        help_text = capsys.readouterr().out
        for option in re.findall(r"--[a-z][a-z0-9-]*", usage):
            assert option in help_text, f"README names {option} for `ros-seg {name}`, its --help does not"


def test_describe_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["describe", "--model", "pem_stdc1", "--size", "512x1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "pem_stdc1" and out["size"] == [512, 1024]
    assert out["params"] == 16_957_829
    assert isinstance(out["gmacs"], float) and out["gmacs"] > out["gmacs_inference"] > 0
    assert sum(out["gmacs_by_part"].values()) == pytest.approx(out["gmacs"], rel=1e-3)


def test_describe_pem_r50_near_paper(tmp_path: Path) -> None:
    dest = tmp_path / "d.json"
    assert main(["describe", "--model", "pem_r50", "--json", str(dest)]) == 0
    out = json.loads(dest.read_text())
    assert abs(out["gmacs"] - 237.0) / 237.0 < 0.02  # paper: 237G at 1024x2048


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["describe", "--model", "pem_r51"]) == 2
    assert "unknown model 'pem_r51'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["describe", "--model", "pem_r50", "--size", "big"])
    assert exit_.value.code == 2


def test_bench_model_json(tmp_path: Path) -> None:
    dest = tmp_path / "bench.json"
    assert main(["bench", "--model", "pem_stdc1", "--size", "64x96", "--warmup", "0", "--repeats", "2",
                 "--json", str(dest)]) == 0
    out = json.loads(dest.read_text())
    assert {"model", "backend", "device", "precision", "size", "latency_ms", "fps"} <= set(out)
    assert {"p50", "p95", "mean"} <= set(out["latency_ms"])
    assert out["peak_rss_mb"] > 0 and out["machine"]["torch"]
    assert out["command"].startswith("ros-seg bench --model pem_stdc1")
    assert out["semantic_rule"] == "authors" and "--semantic-rule" not in out["command"]


def test_bench_times_the_fast_semantic_rule_on_request(tmp_path: Path) -> None:
    dest = tmp_path / "bench.json"
    assert main(["bench", "--model", "pem_stdc1", "--size", "64x96", "--warmup", "0", "--repeats", "1",
                 "--semantic-rule", "fast", "--json", str(dest)]) == 0
    out = json.loads(dest.read_text())
    assert out["semantic_rule"] == "fast", "the Segmenter that was timed post-processes with the fast rule"
    assert out["command"].endswith("--semantic-rule fast")


def test_bench_cross_attention_op(capsys: pytest.CaptureFixture) -> None:
    from ros_seg.bench.cross_attention_speed import bench_cross_attention

    out = bench_cross_attention(sizes=((4, 8), (8, 16)), warmup=0, repeats=1, num_queries=10)
    assert [r["tokens"] for r in out["results"]] == [32, 128]
    assert all(r["pem_ms"]["p50"] > 0 and r["masked_ms"]["p50"] > 0 for r in out["results"])


def test_segment_image_file(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), image)
    out = tmp_path / "out"
    assert main(["segment", "--image", str(src), "--out", str(out), "--device", "cpu"]) == 0
    for name in ("input", "semantic", "panoptic", "overlay"):
        assert cv2.imread(str(out / f"{name}.png")).shape == (60, 80, 3)
    ids = cv2.imread(str(out / "panoptic_ids.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and ids.shape == (60, 80)
    summary = json.loads((out / "segments.json").read_text())
    assert summary["model"] == "pem_stdc1" and summary["size"] == [60, 80]
    assert main(["segment", "--image", str(tmp_path / "nope.png"), "--out", str(out)]) == 2


def test_console_script_runs() -> None:
    """`ros-seg` as installed by the package (python -m form works without the entry point)."""
    done = subprocess.run([sys.executable, "-m", "ros_seg.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "describe" in done.stdout


def test_bench_training_reports_speed_and_loader_share(tmp_path: Path) -> None:
    dest = tmp_path / "train.json"
    assert main(["bench", "--op", "train", "--size", "64x128", "--warmup", "1", "--repeats", "2",
                 "--json", str(dest)]) == 0
    out = json.loads(dest.read_text())
    assert out["op"] == "train" and out["batch_size"] == 2 and out["iterations_timed"] == 2
    assert out["iterations_per_s"] > 0 and 0 <= out["loader_share"] < 1
    assert out["autocast"] in ("bfloat16", "off (fp32)")  # what the trainer ran on this CPU
    assert "--precision" not in out["command"] and "--op train" in out["command"]


def test_commands_work_where_an_optional_package_is_missing(tmp_path: Path) -> None:
    """On a machine without rosbags (a GPU box holding only PyTorch), bench still runs; make-bag says what
    is missing and exits 2."""
    blocker = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'rosbags':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ros_seg.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    script = tmp_path / "without_rosbags.py"
    script.write_text(blocker)
    bench = subprocess.run([sys.executable, str(script), "bench", "--op", "cross_attention", "--repeats", "1",
                            "--warmup", "0", "--json", "-"], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["op"] == "cross_attention"
    bag = subprocess.run([sys.executable, str(script), "make-bag", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert bag.returncode == 2 and "'rosbags'" in bag.stderr and "setup.sh" in bag.stderr
