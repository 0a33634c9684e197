"""The launch files run with the real `ros2 launch`, driven and inspected from other processes.

`ros2 launch`, `ros2 param` and the launch packages come from the system ROS 2
or from the upstream bundle that scripts/setup.sh installs (../shared/ros2-cli);
without them these tests skip. Each launched system is shared by several tests
(small network, random or seeded weights, CPU). Frames come from
test/ros/frame_publisher.py, a camera stand-in in its own process, with the shipped
Fast DDS profile as a camera driver would be started, or without it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from ros_seg.msg import SegmentArray

from repo_paths import REPO_ROOT

from test_segmentation_node import check_outputs, seeded_weights  # isort: skip
from frame_publisher import frame  # isort: skip

psutil = pytest.importorskip("psutil", reason="psutil comes with the ROS 2 launch tools (scripts/setup.sh)")
ROOT = REPO_ROOT
pytestmark = [
    pytest.mark.skipif(
        shutil.which("ros2") is None or importlib.util.find_spec("launch_ros") is None,
        reason="no ros2 launch here: run scripts/setup.sh (it installs ../shared/ros2-cli) or source a ROS 2",
    ),
    pytest.mark.slow,  # the real ros2 launch: in CI, not in the quick loop
]
SHIPPED_PROFILE = ROOT / "config" / "fastdds_large_frames.xml"
SMALL = ("device:=cpu", "network_height:=64", "network_width:=128", "score_threshold:=0.0",
         "overlap_threshold:=0.0")
CAMERA_SIZES = {"VGA": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "1024x2048": (1024, 2048)}
OUTPUTS = {"semantic": Image, "panoptic": Image, "segments": SegmentArray}
TIMEOUT = 120.0


class Launched:
    """A `ros2 launch` process in a session of its own (so Ctrl-C can be sent as a terminal sends it)."""

    def __init__(self, log: Path, launch_file: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["ros2", "launch", "ros_seg", launch_file, *args], stdout=out, stderr=subprocess.STDOUT,
                env=env or dict(os.environ), start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, nodes: int = 1) -> list[psutil.Process]:
        """Wait until `nodes` nodes log that they are segmenting; their processes."""
        end = time.monotonic() + TIMEOUT
        while self.text().count("]: segmenting ") < nodes:
            assert self.process.poll() is None, f"launch ended early:\n{self.text()}"
            assert time.monotonic() < end, f"nodes not up after {TIMEOUT} s:\n{self.text()}"
            time.sleep(0.2)
        return psutil.Process(self.process.pid).children(recursive=True)

    def ctrl_c(self, times: int = 1) -> int:
        """SIGINT to the launch and its children `times` times, 0.3 s apart, as Ctrl-C in a terminal; exit code."""
        for i in range(times):
            if i:
                time.sleep(0.3)
            os.killpg(self.process.pid, signal.SIGINT)
        return self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"launch did not end within {timeout} s:\n{self.text()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            self.wait()


def assert_clean_exit(launched: Launched, code: int, node_processes: list[psutil.Process]) -> None:
    text = launched.text()
    assert code == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "process has died" not in text, text
    _, alive = psutil.wait_procs(node_processes, timeout=5)
    assert not alive, f"orphan processes {alive}"


def publish_frames(topic: str, sizes: list[tuple[int, int]], first_stamp: int, reliability: str = "best_effort",
                   profile: bool = True) -> subprocess.Popen:
    """Start test/ros/frame_publisher.py; with `profile` it runs with the shipped Fast DDS profile."""
    env = {k: v for k, v in os.environ.items() if "PROFILES_FILE" not in k}
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHIPPED_PROFILE)
    command = [sys.executable, str(Path(__file__).with_name("frame_publisher.py")), "--topic", topic, "--reliability",
               reliability, "--first-stamp", str(first_stamp), "--sizes", ",".join(f"{h}x{w}" for h, w in sizes)]
    return subprocess.Popen(command, env=env)


class Listener:
    """Subscribes to outputs in its own rclpy context and keeps every message."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("launch_test_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}

    def subscribe(self, namespace: str) -> None:
        for name, msg_type in OUTPUTS.items():
            topic = f"{namespace}/{name}"
            self.received[topic] = []
            self.node.create_subscription(msg_type, topic, self.received[topic].append, 10)

    def spin_until(self, done: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def outputs(self, namespace: str, stamp_sec: int) -> dict:
        """The namespace's semantic, panoptic and segments messages of stamp (stamp_sec, 123), waited for."""
        def of(name: str) -> list:
            return [m for m in self.received[f"{namespace}/{name}"]
                    if (m.header.stamp.sec, m.header.stamp.nanosec) == (stamp_sec, 123)]

        found = self.spin_until(lambda: all(of(name) for name in OUTPUTS))
        assert found, f"{namespace}: no {[n for n in OUTPUTS if not of(n)]} for stamp {stamp_sec}"
        return {name: of(name)[0] for name in OUTPUTS}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(["ros2", *args], capture_output=True, text=True, timeout=timeout)


def ros2_param(verb: str, *args: str) -> str:
    """`ros2 param VERB ARGS` without the daemon, waiting for discovery; its stdout and stderr."""
    done = ros2("param", verb, *args, "--no-daemon", "--timeout", "20")
    return done.stdout + done.stderr


def ros2_lifecycle(verb: str, *args: str, timeout: float = 30.0) -> str:
    """`ros2 lifecycle VERB ARGS` without the daemon, asked again while discovery has not found the node."""
    for _ in range(5):
        done = ros2("lifecycle", verb, *args, "--no-daemon", "--spin-time", "1", timeout=timeout)
        if "Node not found" not in done.stdout + done.stderr:
            break
    return done.stdout + done.stderr


def lifecycle_transition(node: str, transition: str, goal: str, deadline: float = 240.0) -> None:
    """`ros2 lifecycle set NODE TRANSITION` until `ros2 lifecycle get` reports `goal`.

    The CLI sends its request as soon as the service looks ready and then
    waits for the answer without a time limit. While discovery is still
    matching the request and response topics, the request or the answer can be
    lost, and the CLI waits for ever (seen in 2 of 7 runs on a loaded 2-core
    machine; `get` has the same pattern). So every call is timed out, the
    node's state asked, and a lost request sent again, until `deadline`
    seconds have passed: a node stuck in a transition fails the test then.
    """
    answers = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for verb, args in (("set", (node, transition)), ("get", (node,))):
            try:
                answers.append(f"{verb}: " + ros2_lifecycle(verb, *args, timeout=45))
            except subprocess.TimeoutExpired:
                answers.append(f"{verb}: (no answer within 45 s)")
            if "Transitioning successful" in answers[-1] or goal in answers[-1]:
                return
    raise AssertionError(f"{node} did not reach {goal} with {transition!r} in {deadline:.0f} s: {answers}")


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seeded_weights(tmp_path_factory.mktemp("weights") / "pem_stdc1_seeded.pt")


@pytest.fixture(scope="module")
def cameras(tmp_path_factory: pytest.TempPathFactory, weights: Path, listener: Listener) -> Iterator[dict]:
    """multi_camera.launch.py with three cameras, default DDS settings (the shipped profile)."""
    log = tmp_path_factory.mktemp("launch") / "multi_camera.log"
    launched = Launched(log, "multi_camera.launch.py", "cameras:=front,left,right", f"weights:={weights}", *SMALL)
    try:
        for camera in ("front", "left", "right"):
            listener.subscribe(f"/{camera}")
        nodes = launched.wait_ready(3)
        yield {"launch": launched, "nodes": nodes}
    finally:
        launched.stop()


def test_multi_camera_answers_every_camera_with_its_header(cameras: dict, listener: Listener) -> None:
    publishers = [publish_frames(f"/{camera}/image_raw", [(120, 160 + 32 * i)], 10 + i)
                  for i, camera in enumerate(("front", "left", "right"))]
    for i, camera in enumerate(("front", "left", "right")):
        out = listener.outputs(f"/{camera}", 10 + i)
        check_outputs(out, frame(120, 160 + 32 * i, 10 + i), 120, 160 + 32 * i, require_segments=False)
    assert all(p.wait(timeout=60) == 0 for p in publishers)


def test_launch_applies_the_shipped_dds_profile(cameras: dict) -> None:
    node_processes = [p for p in cameras["nodes"] if "segmentation_node" in " ".join(p.cmdline())]
    assert len(node_processes) == 3
    for process in node_processes:
        environment = process.environ()
        assert Path(environment["FASTDDS_DEFAULT_PROFILES_FILE"]).resolve() == SHIPPED_PROFILE.resolve()


@pytest.mark.parametrize("reliability", ["best_effort", "reliable"])
def test_frames_of_every_camera_size_arrive(cameras: dict, listener: Listener, reliability: str) -> None:
    first = 100 if reliability == "best_effort" else 200
    sizes = list(CAMERA_SIZES.values())
    publisher = publish_frames("/front/image_raw", sizes, first, reliability)
    segments = 0
    for index, (height, width) in enumerate(sizes):
        out = listener.outputs("/front", first + index)
        check_outputs(out, frame(height, width, first + index), height, width, require_segments=False)
        segments += len(out["segments"].segments)
    assert segments > 0, "seeded weights and thresholds 0 find segments"
    assert publisher.wait(timeout=60) == 0


def test_parameters_set_and_described_at_run_time(cameras: dict) -> None:
    node = "/left/segmentation_node"
    described = ros2_param("describe", node, "score_threshold")
    assert "Min value: -1.0" in described and "Max value: 1.0" in described, described
    assert "Set parameter successful" in ros2_param("set", node, "score_threshold", "0.5")
    refused = ros2_param("set", node, "score_threshold", "2.0")
    assert "Setting parameter failed" in refused and "out of range" in refused, refused
    refused = ros2_param("set", node, "input_qos", "reliable")
    assert "read-only" in refused, refused


def test_ctrl_c_stops_every_node_cleanly(cameras: dict) -> None:
    assert_clean_exit(cameras["launch"], cameras["launch"].ctrl_c(), cameras["nodes"])
    assert cameras["launch"].text().count("process has finished cleanly") == 3


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, weights: Path, listener: Listener) -> Iterator[dict]:
    """segmentation.launch.py with launch arguments, a params file and a user-chosen Fast DDS profile."""
    folder = tmp_path_factory.mktemp("single")
    params = folder / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_rate_hz: 5.0\n")
    own_profile = folder / "own_profile.xml"
    shutil.copy(SHIPPED_PROFILE, own_profile)
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(own_profile))
    launched = Launched(folder / "segmentation.log", "segmentation.launch.py", "namespace:=solo", "image:=camera",
                        "input_qos:=reliable", "max_rate_hz:=2.0", f"params_file:={params}", "log_level:=warn",
                        f"weights:={weights}", *SMALL, env=env)
    try:
        listener.subscribe("/solo")
        # log_level:=warn hides the node's "segmenting" line: it is up once its outputs are advertised.
        up = listener.spin_until(lambda: listener.node.count_publishers("/solo/segments") > 0 or
                                 launched.process.poll() is not None)
        assert up and launched.process.poll() is None, launched.text()
        nodes = psutil.Process(launched.process.pid).children(recursive=True)
        yield {"launch": launched, "nodes": nodes, "own_profile": own_profile}
    finally:
        launched.stop()


def test_launch_arguments_reach_the_node(single: dict, listener: Listener) -> None:
    node = "/solo/segmentation_node"
    assert "String value is: reliable" in ros2_param("get", node, "input_qos")
    # The params file is loaded after the launch arguments: its max_rate_hz wins.
    assert "Double value is: 5.0" in ros2_param("get", node, "max_rate_hz")
    # input_qos:=reliable: a camera driver without the shipped profile, publishing reliably, gets 1024x2048 through.
    publisher = publish_frames("/solo/camera", [CAMERA_SIZES["1024x2048"]], 300, "reliable", profile=False)
    check_outputs(listener.outputs("/solo", 300), frame(1024, 2048, 300), 1024, 2048)
    assert publisher.wait(timeout=60) == 0
    assert "]: segmenting " not in single["launch"].text(), "log_level:=warn did not reach the node"


def test_users_dds_profile_is_kept(single: dict) -> None:
    node_process = next(p for p in single["nodes"] if "segmentation_node" in " ".join(p.cmdline()))
    assert node_process.environ()["FASTDDS_DEFAULT_PROFILES_FILE"] == str(single["own_profile"])


def test_second_ctrl_c_exits_cleanly(single: dict) -> None:
    assert_clean_exit(single["launch"], single["launch"].ctrl_c(times=2), single["nodes"])


def test_model_family_launch_files_segment(tmp_path: Path, listener: Listener) -> None:
    """proscale.launch.py and panoptic_segformer.launch.py with their default models (random weights, asked for:
    these models have no default weights), started together."""
    models = {"proscale": "proscale_r50_333", "panoptic_segformer": "panoptic_segformer_r50"}
    launched = {name: Launched(tmp_path / f"{name}.log", f"{name}.launch.py", f"namespace:={name}",
                               "weights:=random", *SMALL) for name in models}
    try:
        for i, (name, model) in enumerate(models.items()):
            listener.subscribe(f"/{name}")
            nodes = launched[name].wait_ready()
            assert f"with {model} on cpu" in launched[name].text()
            publisher = publish_frames(f"/{name}/image", [(96, 128)], 400 + i)
            out = listener.outputs(f"/{name}", 400 + i)
            check_outputs(out, frame(96, 128, 400 + i), 96, 128, require_segments=False)
            assert publisher.wait(timeout=60) == 0
            assert_clean_exit(launched[name], launched[name].ctrl_c(), nodes)
    finally:
        for one in launched.values():
            one.stop()


def test_lifecycle_node_is_driven_by_ros2_lifecycle(tmp_path: Path, listener: Listener, weights: Path) -> None:
    managed = Launched(tmp_path / "managed.log", "pem.launch.py", "lifecycle:=true", "autostart:=false",
                       "namespace:=managed", f"weights:={weights}", *SMALL)
    listener.subscribe("/managed")
    node = "/managed/segmentation_node"
    try:
        def up() -> bool:
            names = listener.node.get_node_names_and_namespaces()
            return ("segmentation_node", "/managed") in names

        assert listener.spin_until(up), managed.text()
        lifecycle_transition(node, "configure", "inactive [2]")
        lifecycle_transition(node, "activate", "active [3]")
        # Lazy inference skips frames while the node sees no subscriber of its outputs: its lifecycle
        # publishers were made at configure, so let discovery pair them with the listener first.
        assert listener.spin_until(lambda: all(listener.node.count_publishers(f"/managed/{output}") > 0
                                               for output in OUTPUTS)
                                   and listener.node.count_subscribers("/managed/image") > 0,
                                   timeout=30), managed.text()
        publisher = publish_frames("/managed/image", [(96, 128)], 500)
        check_outputs(listener.outputs("/managed", 500), frame(96, 128, 500), 96, 128, require_segments=False)
        assert publisher.wait(timeout=60) == 0
        lifecycle_transition(node, "deactivate", "inactive [2]")
        assert listener.spin_until(lambda: listener.node.count_subscribers("/managed/image") == 0, timeout=30), \
            managed.text()
        lifecycle_transition(node, "cleanup", "unconfigured [1]")
        assert "model unloaded" in managed.text()
        nodes = psutil.Process(managed.process.pid).children(recursive=True)
        assert_clean_exit(managed, managed.ctrl_c(), nodes)
    finally:
        managed.stop()


def test_failures_end_the_launch_with_an_error(tmp_path: Path) -> None:
    not_a_checkpoint = tmp_path / "garbage.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    cases = {
        "node dies at startup": (["pem.launch.py", f"weights:={not_a_checkpoint}", "device:=cpu"],
                                 ["cannot start", "segmentation_node-1 exited with code 2"]),
        "multi_camera's nodes die": (["multi_camera.launch.py", "cameras:=a,b", f"weights:={not_a_checkpoint}",
                                      "device:=cpu"], ["exited with code 2"]),
        "managed node fails to autostart": (["pem.launch.py", "lifecycle:=true", f"weights:={not_a_checkpoint}",
                                             "device:=cpu"], ["cannot start", "exited with code 2"]),
        "unknown choice": (["segmentation.launch.py", "input_qos:=fast"], ["'sensor_data', 'reliable'"]),
        "not a number": (["pem.launch.py", "max_rate_hz:=fast"],
                         ["launch argument 'max_rate_hz' is 'fast': allowed are a number in [0, 1000]"]),
        "bad camera list": (["multi_camera.launch.py", "cameras:=front,,rear"], ["launch argument 'cameras'"]),
    }
    launched = {name: Launched(tmp_path / f"{i}.log", *args) for i, (name, (args, _)) in enumerate(cases.items())}
    try:
        for name, (_, expected) in cases.items():
            code = launched[name].wait(timeout=TIMEOUT)
            text = launched[name].text()
            assert code != 0, f"{name}:\n{text}"
            assert "Traceback" not in text, f"{name}:\n{text}"
            for words in expected:
                assert words in text, f"{name}: {words!r} not in\n{text}"
    finally:
        for one in launched.values():
            one.stop()


def test_replay_eval_shows_its_arguments() -> None:
    shown = ros2("launch", "ros_seg", "replay_eval.launch.py", "--show-args").stdout
    for argument in ("bag", "rate", "record_out", "input_qos", "score_threshold", "fastdds_profile"):
        assert f"'{argument}':" in shown, shown
