"""`ros-seg replay --live` under the signals of timeout, systemd and CI: SIGTERM and SIGHUP end it as Ctrl-C does
(partial report, node stopped); SIGKILL of the replay still takes its node down."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.replay.bag_writer import write_bag

rclpy = pytest.importorskip("rclpy")
from ros_seg.ros import replay_driver  # noqa: E402  (needs ROS 2)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signals")
    write_dataset(root / "data", 3, split="val", size=(64, 128), seed=5, sequence=True)
    write_bag(root / "data", root / "bag", rate_hz=0.2)  # 10 s of frames: still playing when the signal comes
    return root / "bag"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _ended(pid: int) -> bool:
    """Whether `pid` has exited (gone, or a zombie waiting for a reaper)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _start_replay(bag: Path, out: Path, settle_s: float) -> tuple[subprocess.Popen, int]:
    """The replay process and its node's pid, `settle_s` after the node's process started."""
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and os.environ["ROS_DOMAIN_ID"]
    replay = subprocess.Popen([sys.executable, "-m", "ros_seg.cli", "replay", str(bag), "--live", "--model",
                               "pem_stdc1", "--device", "cpu", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and replay.poll() is None:
        nodes = _children(replay.pid)
        if nodes:
            time.sleep(settle_s)
            return replay, nodes[0]
        time.sleep(0.1)
    replay.kill()
    pytest.fail(f"the replay did not start its node: {replay.communicate()[1][-2000:]}")


def _node_ends(node: int, timeout: float) -> bool:
    """Whether `node` ends within `timeout` s; one still running after it is killed (no orphan left by a test)."""
    deadline = time.monotonic() + timeout
    while not _ended(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _ended(node):
        return True
    os.kill(node, signal.SIGKILL)
    return False


def test_sigterm_writes_the_partial_report_and_stops_the_node(bag: Path, tmp_path: Path) -> None:
    replay, node = _start_replay(bag, tmp_path / "out", settle_s=1.0)  # the replay has its handlers by then
    replay.send_signal(signal.SIGTERM)
    _, err = replay.communicate(timeout=60)
    assert _node_ends(node, 5.0), "the node outlived its replay"
    assert replay.returncode == 130, err[-2000:]
    assert "interrupted, the report is partial" in err and "Traceback" not in err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["mode"] == "live"


def test_sigkill_of_the_replay_takes_the_node_down(bag: Path, tmp_path: Path) -> None:
    replay, node = _start_replay(bag, tmp_path / "out", settle_s=0.0)
    replay.send_signal(signal.SIGKILL)
    replay.communicate(timeout=30)
    assert _node_ends(node, 30.0), "the node outlived its replay"


def test_sighup_interrupts_like_ctrl_c() -> None:
    previous = replay_driver._stop_signals_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1.0)  # the handler runs between bytecodes of this thread
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
