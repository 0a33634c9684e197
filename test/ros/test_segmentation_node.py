"""End-to-end tests of the segmentation node: real node processes, real rclpy pub/sub over DDS.

Two nodes run for the whole module as subprocesses (pem_stdc1, random weights,
CPU): `/raw/segmentation_node` on raw images at input resolution, and
`/small/segmentation_node` on compressed images at network resolution. The test
side is a plain rclpy node with real publishers, subscribers and a parameter client.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ros_seg.inference.image_input import ENCODINGS
from ros_seg.models.checkpoint import save_checkpoint
from ros_seg.models.class_metadata import CITYSCAPES
from ros_seg.models.registry import build_model, load_model_config
from ros_seg.msg import SegmentArray, SegmentationInfo
from ros_seg.ros.segmentation_node import SegmentationNode, StartupError, spin_until_shutdown

TIMEOUT = 60.0
HEIGHT, WIDTH = 64, 96
NODE_ARGS = ["-p", "device:=cpu", "-p", "score_threshold:=0.0", "-p", "overlap_threshold:=0.0"]
MAX_RATE_HZ = 4.0  # of the /small node
OUTPUTS = {"semantic": Image, "panoptic": Image, "segments": SegmentArray, "overlay": Image}


def start_node(namespace: str, log: Path, *args: str) -> subprocess.Popen:
    """A segmentation node process in `namespace` (environment inherited: loopback DDS, private domain)."""
    command = [sys.executable, "-m", "ros_seg.ros.segmentation_node", "--ros-args", "-r", f"__ns:={namespace}"]
    with open(log, "wb") as out:
        return subprocess.Popen([*command, *args], stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop_node(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal the node and wait for its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stamp_of(msg: Image | SegmentArray | CameraInfo) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


class Client:
    """The test's own rclpy node: publishers, subscribers that keep every message, a spin loop."""

    def __init__(self, name: str) -> None:
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self.pub: dict[str, Publisher] = {}

    def subscribe(self, topic: str, msg_type: type, qos: QoSProfile | int = 10) -> None:
        self.received[topic] = []
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)

    def spin_until(self, done: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, timeout=seconds)

    def with_stamp(self, topic: str, stamp: tuple[int, int]) -> list:
        return [m for m in self.received[topic] if stamp_of(m) == stamp]

    def wait_outputs(self, namespace: str, stamp: tuple[int, int], topics: tuple[str, ...]) -> dict:
        """The messages of `topics` (under `namespace`) carrying `stamp`, waiting for all of them."""
        found = self.spin_until(lambda: all(self.with_stamp(f"{namespace}/{t}", stamp) for t in topics))
        assert found, f"no {[t for t in topics if not self.with_stamp(f'{namespace}/{t}', stamp)]} for stamp {stamp}"
        return {t: self.with_stamp(f"{namespace}/{t}", stamp)[0] for t in topics}

    def diagnostics(self, namespace: str) -> dict[str, str]:
        """Key/values (and "message") of the node's next diagnostics status."""
        name = f"ros_seg: segmentation_node ({namespace}/segmentation_node)"
        seen: list[dict[str, str]] = []
        self.received["/diagnostics"].clear()

        def newest() -> bool:
            while self.received["/diagnostics"]:
                for status in self.received["/diagnostics"].pop(0).status:
                    if status.name == name:
                        seen.append({kv.key: kv.value for kv in status.values} | {"message": status.message})
            return bool(seen)

        assert self.spin_until(newest), f"no diagnostics from {name}"
        return seen[-1]


def header(sec: int, frame_id: str = "camera") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, 123
    return h


def random_image(encoding: str, seed: int = 0) -> np.ndarray:
    channels = ENCODINGS[encoding][0]
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8)


def image_msg(pixels: np.ndarray, encoding: str, stamp_sec: int, row_padding: int = 0) -> Image:
    height, width, channels = pixels.shape
    step = width * channels + row_padding
    rows = np.zeros((height, step), dtype=np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, -1)
    return Image(header=header(stamp_sec), height=height, width=width, encoding=encoding, step=step,
                 data=rows.tobytes())


def seeded_weights(path: Path) -> Path:
    """pem_stdc1 with fixed random weights and "no object" made unlikely, so every node of the
    module gives the same, non-empty segments (each process would otherwise draw its own weights)."""
    torch.manual_seed(0)
    config = load_model_config("pem_stdc1")
    model, metadata = build_model(config)
    with torch.no_grad():
        model.transformer_decoder.class_embed.bias[-1] = -10.0
    save_checkpoint(path, model, config, metadata)
    return path


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen]]:
    logs = tmp_path_factory.mktemp("node_logs")
    weights = ("-p", f"weights:={seeded_weights(logs / 'pem_stdc1_seeded.pt')}")
    processes = {
        "/raw": start_node("/raw", logs / "raw.log", *NODE_ARGS, *weights),
        "/small": start_node(
            "/small", logs / "small.log", *NODE_ARGS, *weights, "-p", "use_compressed:=true",
            "-p", "network_height:=32", "-p", "network_width:=48", "-p", "output_resolution:=network",
            "-p", f"max_rate_hz:={MAX_RATE_HZ}",
        ),
    }
    yield processes
    for namespace, process in processes.items():
        assert stop_node(process) == 0, (logs / f"{namespace[1:]}.log").read_text()


@pytest.fixture(scope="module")
def client(nodes: dict[str, subprocess.Popen]) -> Iterator[Client]:
    rclpy.init()
    c = Client("segmentation_node_test")
    for namespace in nodes:
        for topic, msg_type in OUTPUTS.items():
            c.subscribe(f"{namespace}/{topic}", msg_type)
    c.subscribe("/small/output_camera_info", CameraInfo)
    c.subscribe("/diagnostics", DiagnosticArray, 100)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    c.subscribe("/raw/segmentation_info", SegmentationInfo, latched)
    c.pub["raw"] = c.node.create_publisher(Image, "/raw/image", 10)
    c.pub["best_effort"] = c.node.create_publisher(Image, "/raw/image", qos_profile_sensor_data)
    c.pub["compressed"] = c.node.create_publisher(CompressedImage, "/small/image/compressed", 10)
    c.pub["camera_info"] = c.node.create_publisher(CameraInfo, "/small/camera_info", 10)
    started = c.spin_until(
        lambda: all(p.get_subscription_count() > 0 for p in c.pub.values())
        and c.node.count_publishers("/raw/semantic") > 0 and c.node.count_publishers("/small/semantic") > 0
    )
    assert started, "segmentation nodes did not come up"
    warm_up(c)
    yield c
    c.node.destroy_node()
    rclpy.shutdown()


def camera_info() -> CameraInfo:
    info = CameraInfo(header=header(0), height=HEIGHT, width=WIDTH, distortion_model="plumb_bob")
    info.k = [80.0, 0.0, 48.0, 0.0, 80.0, 32.0, 0.0, 0.0, 1.0]
    info.p = [80.0, 0.0, 48.0, -8.0, 0.0, 80.0, 32.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def warm_up(c: Client) -> None:
    """Publish until each publisher's frames come through: discovery is complete on both sides."""
    frames = {
        "raw": image_msg(random_image("rgb8"), "rgb8", 1),
        "best_effort": image_msg(random_image("rgb8"), "rgb8", 2),
        "compressed": CompressedImage(header=header(3), format="png",
                                      data=cv2.imencode(".png", random_image("bgr8"))[1].tobytes()),
    }
    for name, msg in frames.items():
        topic = "/small/output_camera_info" if name == "compressed" else "/raw/segments"
        for _ in range(int(TIMEOUT)):
            c.pub["camera_info"].publish(camera_info())
            c.pub[name].publish(msg)
            if c.spin_until(functools.partial(c.with_stamp, topic, stamp_of(msg)), timeout=2.0):
                break
        assert c.with_stamp(topic, stamp_of(msg)), f"no output for the {name} publisher"


def check_outputs(
    out: dict, sent: Image | CompressedImage, height: int, width: int, require_segments: bool = True
) -> None:
    """Encodings, sizes, headers and panoptic / segment consistency of one frame's outputs."""
    semantic, panoptic, segments = out["semantic"], out["panoptic"], out["segments"]
    for msg in out.values():
        assert msg.header == sent.header
    assert (semantic.encoding, semantic.height, semantic.width, semantic.step) == ("mono8", height, width, width)
    assert (panoptic.encoding, panoptic.height, panoptic.width, panoptic.step) == ("32SC1", height, width, 4 * width)
    assert (segments.height, segments.width) == (height, width)
    labels = np.frombuffer(semantic.data, dtype=np.uint8).reshape(height, width)
    assert np.all((labels < CITYSCAPES.num_classes) | (labels == CITYSCAPES.ignore_id))
    dtype = np.dtype(np.int32).newbyteorder(">" if panoptic.is_bigendian else "<")
    ids = np.frombuffer(panoptic.data, dtype=dtype).reshape(height, width)
    assert segments.segments or not require_segments, "thresholds 0 keep at least one segment"
    assert set(np.unique(ids)) - {0} == {s.id for s in segments.segments}
    assert sum(s.area for s in segments.segments) == np.count_nonzero(ids)
    for s in segments.segments:
        ys, xs = np.nonzero(ids == s.id)
        assert s.area == xs.size
        assert (s.bbox_x, s.bbox_y) == (xs.min(), ys.min())
        assert (s.bbox_width, s.bbox_height) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert s.centroid_x == pytest.approx(xs.mean(), abs=1e-2)
        assert CITYSCAPES.names[s.class_id] == s.class_name
    if "overlay" in out:
        overlay = out["overlay"]
        assert (overlay.encoding, overlay.height, overlay.width, overlay.step) == ("rgb8", height, width, 3 * width)


@pytest.mark.parametrize("encoding", [*ENCODINGS, "rgb8 with row padding"])
def test_every_encoding_gives_every_output(client: Client, encoding: str) -> None:
    name = encoding.split()[0]
    stamp_sec = 10 + list(ENCODINGS).index(name) + (10 if encoding != name else 0)
    sent = image_msg(random_image(name), name, stamp_sec, row_padding=8 if encoding != name else 0)
    client.pub["raw"].publish(sent)
    out = client.wait_outputs("/raw", stamp_of(sent), tuple(OUTPUTS))
    check_outputs(out, sent, HEIGHT, WIDTH)


def test_segmentation_info_is_latched(client: Client) -> None:
    assert client.spin_until(lambda: client.received["/raw/segmentation_info"])
    info = client.received["/raw/segmentation_info"][0]
    assert info.model_name == "pem_stdc1"
    assert list(info.class_names) == list(CITYSCAPES.names)
    r, g, b = CITYSCAPES.colors[0]
    assert info.class_colors[0] == (r << 16) | (g << 8) | b
    assert list(info.is_thing) == list(CITYSCAPES.is_thing) and info.ignore_id == 255


def test_best_effort_publisher_is_received(client: Client) -> None:
    sent = image_msg(random_image("bgr8", seed=1), "bgr8", 30)
    client.pub["best_effort"].publish(sent)
    check_outputs(client.wait_outputs("/raw", stamp_of(sent), tuple(OUTPUTS)), sent, HEIGHT, WIDTH)


def test_burst_processes_newest_and_counts_drops(client: Client) -> None:
    before = client.diagnostics("/raw")
    pixels = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    burst = [image_msg(pixels, "rgb8", 100 + i) for i in range(8)]
    for msg in burst:  # a 100 Hz camera, faster than the node segments
        client.pub["raw"].publish(msg)
        client.spin_for(0.01)
    client.wait_outputs("/raw", stamp_of(burst[-1]), ("segments",))
    processed = {stamp_of(m) for m in client.received["/raw/segments"]} & {stamp_of(m) for m in burst}
    assert len(processed) < len(burst)
    after: dict[str, str] = {}

    def settled() -> bool:
        after.update(client.diagnostics("/raw"))
        accounted = sum(int(after[f"frames_{k}"]) for k in ("processed", "dropped", "rejected", "failed"))
        return accounted == int(after["frames_received"])

    assert client.spin_until(settled), f"frame counts do not add up: {after}"
    assert int(after["frames_dropped"]) > int(before["frames_dropped"])
    assert float(after["latency_p95_ms"]) >= float(after["latency_p50_ms"]) > 0
    assert after["device"] == "cpu" and after["backend"] == "torch"


def test_bad_frames_are_reported_and_node_keeps_serving(client: Client, nodes: dict) -> None:
    good = image_msg(random_image("rgb8"), "rgb8", 40)
    bad = {
        "unsupported image encoding": Image(header=header(41), height=HEIGHT, width=WIDTH, encoding="16UC1",
                                            step=2 * WIDTH, data=bytes(2 * WIDTH * HEIGHT)),
        "bytes but step": Image(header=header(42), height=HEIGHT, width=WIDTH, encoding="rgb8", step=3 * WIDTH,
                                data=bytes(3 * WIDTH * HEIGHT - 5)),
        "empty image": Image(header=header(43), height=0, width=WIDTH, encoding="rgb8", step=3 * WIDTH),
        "shorter than one": Image(header=header(44), height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH,
                                  data=bytes(WIDTH * HEIGHT)),
    }
    rejected = int(client.diagnostics("/raw")["frames_rejected"])
    for reason, msg in bad.items():
        client.pub["raw"].publish(msg)
        status = {}

        def reported(status: dict = status, rejected: int = rejected) -> bool:
            status.update(client.diagnostics("/raw"))
            return int(status["frames_rejected"]) > rejected

        assert client.spin_until(reported), f"bad frame ({reason}) was not reported"
        rejected = int(status["frames_rejected"])
        assert reason in status["last_error"]
        assert "rejected" in status["message"]
    client.pub["raw"].publish(good)
    check_outputs(client.wait_outputs("/raw", stamp_of(good), tuple(OUTPUTS)), good, HEIGHT, WIDTH)
    assert nodes["/raw"].poll() is None


def set_parameters(client: Client, **values: object) -> list:
    parameters = AsyncParameterClient(client.node, "/raw/segmentation_node")
    assert parameters.wait_for_services(timeout_sec=TIMEOUT)
    future = parameters.set_parameters([Parameter(name, value=value) for name, value in values.items()])
    assert client.spin_until(future.done)
    return future.result().results


def test_runtime_parameter_changes_take_effect(client: Client) -> None:
    results = set_parameters(client, score_threshold=1.0, publish_semantic=False, overlay_alpha=0.0)
    assert all(r.successful for r in results), results
    pixels = random_image("rgb8", seed=5)
    sent = image_msg(pixels, "rgb8", 50)
    client.pub["raw"].publish(sent)
    out = client.wait_outputs("/raw", stamp_of(sent), ("panoptic", "segments", "overlay"))
    assert out["segments"].segments == []
    assert not np.frombuffer(out["panoptic"].data, dtype=np.int32).any()
    assert np.array_equal(np.frombuffer(out["overlay"].data, dtype=np.uint8), pixels.reshape(-1))
    client.spin_for(1.0)
    assert not client.with_stamp("/raw/semantic", stamp_of(sent))

    rejected = set_parameters(client, overlay_alpha=1.5)[0]
    # rclpy checks the declared range before the node's own check: "Parameter overlay_alpha out of range ...".
    assert not rejected.successful and "overlay_alpha out of range" in rejected.reason, rejected.reason
    assert not set_parameters(client, model="pem_r50")[0].successful
    assert not set_parameters(client, semantic_rule="bogus")[0].successful

    assert all(r.successful for r in set_parameters(client, score_threshold=0.0, publish_semantic=True,
                                                    overlay_alpha=0.5, semantic_rule="fast"))
    sent = image_msg(pixels, "rgb8", 51)
    client.pub["raw"].publish(sent)
    check_outputs(client.wait_outputs("/raw", stamp_of(sent), tuple(OUTPUTS)), sent, HEIGHT, WIDTH)
    assert all(r.successful for r in set_parameters(client, semantic_rule="authors"))


def test_lazy_node_skips_the_model_without_subscribers(client: Client) -> None:
    """With every subscribed output switched off nobody listens: frames are counted as skipped, not segmented;
    the model runs again once an output is wanted (or with lazy off)."""
    flags = ("publish_semantic", "publish_panoptic", "publish_segments", "publish_overlay")

    def counts() -> tuple[int, int]:
        status = client.diagnostics("/raw")
        return int(status["frames_processed"]), int(status["frames_skipped_no_subscribers"])

    def after_frame(stamp_sec: int, changed: Callable[[tuple[int, int], tuple[int, int]], bool]) -> dict:
        before = counts()
        client.pub["raw"].publish(image_msg(random_image("rgb8"), "rgb8", stamp_sec))
        found: list[dict] = []

        def done() -> bool:
            status = client.diagnostics("/raw")
            found.append(status)
            return changed(before, (int(status["frames_processed"]), int(status["frames_skipped_no_subscribers"])))

        assert client.spin_until(done, timeout=30), f"counts stayed at {before}"
        return found[-1]

    assert all(r.successful for r in set_parameters(client, **dict.fromkeys(flags, False)))
    try:
        status = after_frame(60, lambda old, new: new[1] > old[1])
        assert "idle" in status["message"]
        assert all(r.successful for r in set_parameters(client, lazy=False))
        after_frame(61, lambda old, new: new[0] > old[0])
    finally:
        assert all(r.successful for r in set_parameters(client, lazy=True, **dict.fromkeys(flags, True)))
    sent = image_msg(random_image("rgb8"), "rgb8", 62)
    client.pub["raw"].publish(sent)
    check_outputs(client.wait_outputs("/raw", stamp_of(sent), tuple(OUTPUTS)), sent, HEIGHT, WIDTH)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_input_at_network_resolution(client: Client, extension: str) -> None:
    client.pub["camera_info"].publish(camera_info())
    client.spin_for(0.3)
    pixels = random_image("bgr8", seed=7)
    sent = CompressedImage(header=header(60 + len(extension)), format=extension[1:],
                           data=cv2.imencode(extension, pixels)[1].tobytes())
    client.pub["compressed"].publish(sent)
    out = client.wait_outputs("/small", stamp_of(sent), tuple(OUTPUTS))
    check_outputs(out, sent, 32, 48)

    assert client.spin_until(lambda: client.with_stamp("/small/output_camera_info", stamp_of(sent)))
    info = client.with_stamp("/small/output_camera_info", stamp_of(sent))[0]
    assert (info.height, info.width) == (32, 48) and info.header == sent.header
    assert list(info.k) == pytest.approx([40.0, 0.0, 24.0, 0.0, 40.0, 16.0, 0.0, 0.0, 1.0])
    assert list(info.p[:4]) == pytest.approx([40.0, 0.0, 24.0, -4.0])


def test_corrupt_compressed_frame_is_rejected(client: Client, nodes: dict) -> None:
    rejected = int(client.diagnostics("/small")["frames_rejected"])
    client.pub["compressed"].publish(CompressedImage(header=header(70), format="jpeg", data=b"\xff\xd8 not a jpeg"))
    status = {}

    def reported() -> bool:
        status.update(client.diagnostics("/small"))
        return int(status["frames_rejected"]) > rejected

    assert client.spin_until(reported)
    assert "cannot be decoded" in status["last_error"]
    png = cv2.imencode(".png", random_image("mono8"))[1].tobytes()
    sent = CompressedImage(header=header(71), format="png", data=png)
    client.pub["compressed"].publish(sent)
    check_outputs(client.wait_outputs("/small", stamp_of(sent), tuple(OUTPUTS)), sent, 32, 48)
    assert nodes["/small"].poll() is None


def test_max_rate_throttles_processing(client: Client) -> None:
    data = cv2.imencode(".png", random_image("bgr8"))[1].tobytes()
    burst = [CompressedImage(header=header(200 + i), format="png", data=data) for i in range(30)]
    start = time.monotonic()
    for msg in burst:  # 20 Hz for 1.5 s
        client.pub["compressed"].publish(msg)
        client.spin_for(0.05)
    client.wait_outputs("/small", stamp_of(burst[-1]), ("segments",))
    elapsed = time.monotonic() - start
    processed = {stamp_of(m) for m in client.received["/small/segments"]} & {stamp_of(m) for m in burst}
    assert len(processed) <= elapsed * MAX_RATE_HZ + 1


STARTUP_FAILURES = {
    "device": ({"device": "gpu"}, "auto, cpu, cuda or cuda:N"),
    "backend": ({"backend": "openvino"}, "torch"),
    "precision": ({"precision": "fp64"}, "fp32"),
    "compile": ({"compile": "fast"}, "reduce-overhead"),
    "channels_last": ({"channels_last": "yes"}, "true or false"),
    "input_qos": ({"input_qos": "fast"}, "sensor_data, reliable"),
    "input_qos_depth": ({"input_qos_depth": 0}, "[1, 100]"),
    "max_rate_hz": ({"max_rate_hz": -2.0}, "[0, 1000]"),
    "overlay_alpha": ({"overlay_alpha": 1.5}, "[0, 1]"),
    "score_threshold": ({"score_threshold": "high"}, "[-1, 1]"),
    "publish_overlay": ({"publish_overlay": "maybe"}, "true or false"),
    "model": ({"model": "no_such_model"}, "pem_stdc1"),
    "network_width": ({"network_height": 32}, "both 0"),
    "weights": ({"weights": "/no/such/weights.pt"}, "/no/such/weights.pt"),
}


def startup_error(values: dict[str, object]) -> str:
    """The StartupError of a node made in this process with parameters `values`."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError) as error:
            SegmentationNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    finally:
        rclpy.shutdown(context=context)
    return str(error.value)


@pytest.mark.parametrize("parameter", list(STARTUP_FAILURES))
def test_invalid_parameter_fails_at_startup(parameter: str) -> None:
    values, allowed = STARTUP_FAILURES[parameter]
    error = startup_error(values)
    assert f"'{parameter}'" in error and allowed in error


def test_startup_failure_exits_with_a_clear_message(tmp_path: Path) -> None:
    not_a_checkpoint = tmp_path / "garbage.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    cases = {"weights": [f"weights:={not_a_checkpoint}"], "device": ["device:=cuda:7"]}
    processes = {
        name: start_node(f"/{name}", tmp_path / f"{name}.log", *[a for p in params for a in ("-p", p)])
        for name, params in cases.items()
    }
    for name, process in processes.items():
        assert process.wait(timeout=TIMEOUT) == 2, name
        log = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in log, log
        assert "cannot start" in log, log
    assert f"weights file '{not_a_checkpoint}'" in (tmp_path / "weights.log").read_text()
    assert "parameter 'device'" in (tmp_path / "device.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_shuts_the_node_down_cleanly(tmp_path: Path, sig: int) -> None:
    log = tmp_path / "node.log"
    process = start_node(f"/shutdown_{sig.name}", log, "-p", "device:=cpu")
    end = time.monotonic() + TIMEOUT
    while "segmenting" not in log.read_text() and time.monotonic() < end and process.poll() is None:
        time.sleep(0.1)
    assert stop_node(process, sig) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


class ShutdownBeforeWait(SingleThreadedExecutor):
    """An executor whose context is shut down after spin()'s check, before the wait set is built:
    where a signal landing at the wrong moment leaves rclpy's own executor."""

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self.context.shutdown()
        super().spin_once(timeout_sec)


class FailingWait(SingleThreadedExecutor):
    """An executor that fails while its context is still valid."""

    def spin_once(self, timeout_sec: float | None = None) -> None:
        raise rclpy_implementation.RCLError("wait set failed")


@pytest.fixture
def private_context() -> Iterator[Callable[[type[SingleThreadedExecutor]], SingleThreadedExecutor]]:
    """Executors of a given type, each with one node, on a context of their own."""
    made = []

    def make(executor_type: type[SingleThreadedExecutor]) -> SingleThreadedExecutor:
        context = Context()
        rclpy.init(context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        node = Node("shutdown_race", context=context)
        executor = executor_type(context=context)
        executor.add_node(node)
        made.append((context, node, executor))
        return executor

    yield make
    for context, node, executor in made:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_shutdown_racing_the_executor_is_a_shutdown(private_context: Callable) -> None:
    # rclpy's own spin() raises when the shutdown lands between its check and its wait ...
    with pytest.raises(rclpy_implementation.RCLError, match="context is not valid"):
        private_context(ShutdownBeforeWait).spin()
    # ... which the node takes for the requested shutdown it is.
    executor = private_context(ShutdownBeforeWait)
    spin_until_shutdown(executor)
    assert not executor.context.ok()


def test_executor_failure_on_a_valid_context_propagates(private_context: Callable) -> None:
    with pytest.raises(rclpy_implementation.RCLError, match="wait set failed"):
        spin_until_shutdown(private_context(FailingWait))


@pytest.mark.parametrize("model", ["proscale_r50_111", "panoptic_segformer_r50"])
def test_other_architectures_run_in_the_node(client: Client, tmp_path: Path, model: str) -> None:
    """Mask2Former + PRO-SCALE and Panoptic SegFormer behind the same node contract."""
    namespace = f"/{model}"
    process = start_node(namespace, tmp_path / "node.log", *NODE_ARGS, "-p", f"model:={model}", "-p",
                         "weights:=random")
    try:
        for topic in ("semantic", "panoptic", "segments"):
            client.subscribe(f"{namespace}/{topic}", OUTPUTS[topic])
        publisher = client.node.create_publisher(Image, f"{namespace}/image", 10)
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0), (tmp_path / "node.log").read_text()
        sent = image_msg(random_image("rgb8", seed=3), "rgb8", 500)
        for _ in range(int(TIMEOUT)):
            publisher.publish(sent)
            if client.spin_until(lambda: client.with_stamp(f"{namespace}/segments", stamp_of(sent)), timeout=2.0):
                break
        out = client.wait_outputs(namespace, stamp_of(sent), ("semantic", "panoptic", "segments"))
        # Random weights may leave every mask empty; the contract (headers, encodings, ids) still holds.
        check_outputs(out, sent, HEIGHT, WIDTH, require_segments=False)
    finally:
        assert stop_node(process) == 0, (tmp_path / "node.log").read_text()
