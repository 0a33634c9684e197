"""Hostile input and faults at the segmentation node (issue 26): real node processes, real DDS.

Two nodes run for the module (pem_stdc1 with fixed random weights, CPU, 32x48
network input, a pixel budget of 256x256 so that frames over it stay small to
send, reliable input QoS of depth 100 so that every frame sent is received and
counted): /limits_raw on sensor_msgs/Image and /limits_compressed on
image/compressed. Other tests start short-lived nodes that must refuse to start,
or whose worker fails.
"""
from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ros_seg.inference.image_input import ENCODINGS, IMAGE_FAULTS
from ros_seg.ros.diagnostics import ERROR_CHARS

from test_segmentation_node import (  # isort: skip
    TIMEOUT, Client, camera_info, header, image_msg, random_image, seeded_weights, stamp_of, start_node,
    startup_error, stop_node,
)

BUDGET = 256 * 256  # max_image_pixels of the module's nodes
NODE_ARGS = ["-p", "device:=cpu", "-p", f"max_image_pixels:={BUDGET}", "-p", "input_qos:=reliable",
             "-p", "input_qos_depth:=100", "-p", "network_height:=32", "-p", "network_width:=48",
             "-p", "output_resolution:=network"]
RAW, COMPRESSED = "/limits_raw", "/limits_compressed"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
PEAK_GROWTH_MIB = 64  # most the node's peak RSS may grow while it refuses oversized frames
FUZZ_RAW, FUZZ_COMPRESSED = 160, 120  # frames per fuzz run
FUZZ_SECONDS = 60.0  # bound on sending the fuzz frames and their settling in the counts
FUZZ_SEED = 26


def peak_rss_mib(process: subprocess.Popen) -> float:
    """Peak resident memory (VmHWM) of a running process, in MiB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(width: int, height: int, color_type: int = 0, bit_depth: int = 8, bytes_per_pixel: int = 1) -> bytes:
    """A valid PNG of `width` x `height` zero pixels, compressed row by row (a 16384x16384 gray one is 261 KB)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + width * bytes_per_pixel)
    idat = b"".join([compressor.compress(row) for _ in range(height)] + [compressor.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def with_png_size(png: bytes, height: int, width: int) -> bytes:
    """`png` with its IHDR declaring another size (CRC recomputed)."""
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png_chunk(b"IHDR", ihdr) + png[33:]


def jpeg_frame_header(jpeg: bytes) -> int:
    """Offset of the SOF0 marker of a baseline JPEG from OpenCV."""
    return jpeg.index(b"\xff\xc0")


def with_jpeg_size(jpeg: bytes, height: int, width: int) -> bytes:
    """`jpeg` with its frame header declaring another size (the entropy-coded data is left as it is)."""
    at = jpeg_frame_header(jpeg) + 5
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return png_of_zeros(16384, 16384)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen]]:
    logs = tmp_path_factory.mktemp("hostile_input_logs")
    weights = ("-p", f"weights:={seeded_weights(logs / 'pem_stdc1_seeded.pt')}")
    processes = {
        # camera_fps stands for a parameter of another node in a shared params file: allowed by the opt-out.
        RAW: start_node(RAW, logs / "limits_raw.log", *NODE_ARGS, *weights,
                        "-p", "allow_undeclared_parameters:=true", "-p", "camera_fps:=30"),
        COMPRESSED: start_node(COMPRESSED, logs / "limits_compressed.log", *NODE_ARGS, *weights,
                               "-p", "use_compressed:=true"),
    }
    for namespace, process in processes.items():
        process.log = logs / f"{namespace[1:]}.log"
    yield processes
    for process in processes.values():
        assert stop_node(process) == 0, process.log.read_text()


def good_png(stamp_sec: int) -> CompressedImage:
    return CompressedImage(header=header(stamp_sec), format="png",
                           data=cv2.imencode(".png", random_image("bgr8"))[1].tobytes())


@pytest.fixture(scope="module")
def client(nodes: dict[str, subprocess.Popen]) -> Iterator[Client]:
    rclpy.init()
    c = Client("hostile_input_test")
    for namespace in nodes:
        c.subscribe(f"{namespace}/semantic", Image)
    c.subscribe(f"{RAW}/output_camera_info", CameraInfo)
    c.subscribe("/diagnostics", DiagnosticArray, 100)
    c.pub["raw"] = c.node.create_publisher(Image, f"{RAW}/image", RELIABLE)
    c.pub["compressed"] = c.node.create_publisher(CompressedImage, f"{COMPRESSED}/image/compressed", RELIABLE)
    c.pub["camera_info"] = c.node.create_publisher(CameraInfo, f"{RAW}/camera_info", 10)
    started = c.spin_until(lambda: all(p.get_subscription_count() > 0 for p in c.pub.values())
                           and all(c.node.count_publishers(f"{n}/semantic") > 0 for n in nodes))
    assert started, "nodes did not come up: " + "".join(p.log.read_text() for p in nodes.values())
    first_frames = {"raw": (RAW, image_msg(random_image("rgb8"), "rgb8", 1)), "compressed": (COMPRESSED, good_png(2))}
    for name, (namespace, msg) in first_frames.items():  # until they come through: discovery is complete
        for _ in range(int(TIMEOUT)):
            c.pub[name].publish(msg)
            if c.spin_until(lambda n=namespace, m=msg: c.with_stamp(f"{n}/semantic", stamp_of(m)), timeout=2.0):
                break
        assert c.with_stamp(f"{namespace}/semantic", stamp_of(msg)), f"no output from {namespace}"
    yield c
    c.node.destroy_node()
    rclpy.shutdown()


def settled_counts(client: Client, namespace: str, received: int | None = None) -> dict[str, str]:
    """The node's diagnostics once every received frame (`received` of them, when given) is accounted for."""
    status: dict[str, str] = {}

    def settled() -> bool:
        status.update(client.diagnostics(namespace))
        counts = [int(status[f"frames_{k}"]) for k in ("processed", "dropped", "rejected", "failed",
                                                          "skipped_no_subscribers")]
        total = int(status["frames_received"])
        return sum(counts) == total and (received is None or total == received)

    assert client.spin_until(settled), f"frame counts of {namespace} do not settle (want {received}): {status}"
    return status


def send_and_segment(client: Client, publisher: str, namespace: str, msg: Image | CompressedImage) -> None:
    """Publish a good frame; its segmentation comes out: the node still serves."""
    client.pub[publisher].publish(msg)
    assert client.spin_until(lambda: client.with_stamp(f"{namespace}/semantic", stamp_of(msg))), "no output"


def test_raw_frame_over_the_pixel_budget_is_refused_and_counted(client: Client, nodes: dict) -> None:
    before = settled_counts(client, RAW)
    client.pub["raw"].publish(image_msg(np.zeros((257, 256, 3), np.uint8), "rgb8", 300))  # one row over
    after = settled_counts(client, RAW, int(before["frames_received"]) + 1)
    assert int(after["frames_rejected_too_large"]) == int(before["frames_rejected_too_large"]) + 1
    assert "pixel budget of 65536 (parameter max_image_pixels)" in after["last_error"], after["last_error"]
    assert int(after["frames_processed"]) == int(before["frames_processed"])
    # A frame of exactly the budget is segmented.
    send_and_segment(client, "raw", RAW, image_msg(np.zeros((256, 256, 3), np.uint8), "rgb8", 301))


def test_compressed_frames_over_the_budget_are_refused_before_decoding(client: Client, nodes: dict,
                                                                     huge_png: bytes) -> None:
    """A 261 KB PNG and a 1 KB JPEG whose headers declare 16384x16384 (268 MB gray, 805 MB color once decoded)."""
    jpeg = with_jpeg_size(cv2.imencode(".jpg", random_image("bgr8"))[1].tobytes(), 16384, 16384)
    before = settled_counts(client, COMPRESSED)
    peak_before = peak_rss_mib(nodes[COMPRESSED])
    for stamp, (fmt, data) in enumerate((("png", huge_png), ("jpeg", jpeg)), 310):
        client.pub["compressed"].publish(CompressedImage(header=header(stamp), format=fmt, data=data))
    after = settled_counts(client, COMPRESSED, int(before["frames_received"]) + 2)
    assert int(after["frames_rejected_too_large"]) == int(before["frames_rejected_too_large"]) + 2
    assert "16384x16384 = 268435456 pixels, over the pixel budget" in after["last_error"], after["last_error"]
    assert peak_rss_mib(nodes[COMPRESSED]) - peak_before < PEAK_GROWTH_MIB
    send_and_segment(client, "compressed", COMPRESSED, good_png(312))


def test_huge_encoding_string_is_cut_in_diagnostics_and_log(client: Client, nodes: dict) -> None:
    before = settled_counts(client, RAW)
    encoding = "x" * (4 << 20)  # 4 MiB
    client.pub["raw"].publish(Image(header=header(320), height=2, width=2, encoding=encoding, step=6,
                                    data=bytes(12)))
    after = settled_counts(client, RAW, int(before["frames_received"]) + 1)
    assert int(after["frames_rejected_encoding"]) == int(before["frames_rejected_encoding"]) + 1
    assert after["last_error"].startswith("unsupported image encoding 'xxx")
    assert len(after["last_error"]) <= ERROR_CHARS + 3
    assert all(len(value) <= 2 * ERROR_CHARS for value in after.values()), max(after.values(), key=len)[:100]
    assert max(len(line) for line in nodes[RAW].log.read_text().splitlines()) < 2 * ERROR_CHARS
    send_and_segment(client, "raw", RAW, image_msg(random_image("rgb8"), "rgb8", 321))


def test_camera_info_without_a_size_is_refused_and_frames_go_on(client: Client) -> None:
    before = settled_counts(client, RAW)
    sizeless = camera_info()
    sizeless.height = 0
    client.pub["camera_info"].publish(sizeless)
    client.spin_for(0.5)
    sent = image_msg(random_image("rgb8"), "rgb8", 330)
    send_and_segment(client, "raw", RAW, sent)
    after = settled_counts(client, RAW)
    assert int(after["camera_info_rejected"]) == int(before["camera_info_rejected"]) + 1
    assert after["frames_failed"] == before["frames_failed"]
    assert "camera_info of 96x0 pixels" in after["last_error"]
    assert not client.with_stamp(f"{RAW}/output_camera_info", stamp_of(sent))
    client.pub["camera_info"].publish(camera_info())
    client.spin_for(0.5)
    sent = image_msg(random_image("rgb8"), "rgb8", 331)
    send_and_segment(client, "raw", RAW, sent)
    assert client.spin_until(lambda: client.with_stamp(f"{RAW}/output_camera_info", stamp_of(sent)))


def test_opt_out_starts_despite_undeclared_parameters(nodes: dict) -> None:
    log = nodes[RAW].log.read_text()
    assert "ignoring parameters the node does not declare: camera_fps" in log, log
    assert nodes[RAW].poll() is None


# ---- fuzzing the input path -------------------------------------------------------------------------------

def expected_raw_fault(msg: Image) -> str | None:
    """The fault the node must count for a raw frame, checked in the documented order; None for a good frame."""
    if msg.encoding not in ENCODINGS:
        return "encoding"
    if msg.height == 0 or msg.width == 0:
        return "empty"
    if msg.height * msg.width > BUDGET:
        return "too_large"
    if msg.step < msg.width * ENCODINGS[msg.encoding][0] or len(msg.data) != msg.step * msg.height:
        return "layout"
    return None


def fuzz_raw(rng: np.random.Generator, stamp_sec: int) -> Image:
    """A raw frame with random encoding, size, row step and data length (its data at most ~260 KB)."""
    kind = rng.integers(5)
    if kind == 0:
        encoding = str(rng.choice(["16UC1", "32FC1", "yuv422", "", "RGB8", "rgb8 ", "bayer_rggb8"]))
    elif kind == 1:  # printable and control characters, up to 64 KiB
        encoding = "".join(chr(c) for c in rng.integers(1, 127, int(rng.choice([3, 40, 1 << 16]))))
    else:
        encoding = str(rng.choice(list(ENCODINGS)))
    side = [0, 1, int(rng.integers(1, 200)), int(rng.integers(200, 5000)), int(rng.integers(1 << 16, 1 << 32))]
    height, width = (int(rng.choice(side, p=[0.05, 0.1, 0.6, 0.15, 0.1])) for _ in range(2))
    row = width * ENCODINGS.get(encoding, (3,))[0]
    step = int(rng.choice([row, row + int(rng.integers(1, 16)), max(row - 1, 0), int(rng.integers(0, 1 << 32))],
                          p=[0.6, 0.2, 0.1, 0.1]))
    size = step * height
    if size > 300_000 or rng.random() < 0.2:  # the data cannot (or does not) match: any short length
        size = int(rng.choice([0, 1, int(rng.integers(0, 300_000))]))
    elif rng.random() < 0.1:
        size += int(rng.choice([-1, 1]))
    data = rng.integers(0, 256, max(size, 0), dtype=np.uint8).tobytes()
    return Image(header=header(stamp_sec), height=height, width=width, encoding=encoding, step=step, data=data)


def fuzz_compressed(rng: np.random.Generator, stamp_sec: int, huge_png: bytes) -> tuple[CompressedImage, str | None]:
    """A compressed frame and the fault its header must be counted as: None for data that passes the header
    check (it is segmented, dropped or rejected as corrupt when decoding fails), "corrupt?" when the header
    check must refuse it as corrupt (counted with the decoding failures)."""
    height, width = (int(v) for v in rng.integers(1, 128, 2))
    pixels = rng.integers(0, 256, (height, width, int(rng.choice([1, 3, 4]))), dtype=np.uint8)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    jpeg = cv2.imencode(".jpg", pixels[:, :, :3] if pixels.shape[2] == 4 else pixels)[1].tobytes()
    large = (int(rng.integers(257, 1 << 16)), int(rng.integers(257, 1 << 16)))
    kind = int(rng.integers(13))
    cases: dict[int, tuple[bytes, str | None]] = {
        0: (png, None),
        1: (jpeg, None),
        2: (with_png_size(png, *large), "too_large"),
        3: (with_jpeg_size(jpeg, *large), "too_large"),
        4: (with_png_size(png, 0, width), "empty"),
        5: (with_jpeg_size(jpeg, height, 0), "empty"),
        6: (png_of_zeros(width, height, bit_depth=16, bytes_per_pixel=2), "format"),
        7: (bytes([int(rng.integers(0, 0x89))]) + rng.bytes(int(rng.integers(0, 4000))), "format"),
        8: (b"", "empty"),
        9: (b"\x89PNG\r\n\x1a\n" + rng.bytes(int(rng.integers(0, 200))), "corrupt?"),
        10: (b"\xff\xd8" + bytes([int(rng.integers(0, 0xFF))]) + rng.bytes(int(rng.integers(0, 200))), "corrupt?"),
        # Damage after the header: truncated, or bytes changed in the compressed data.
        11: (png[:int(rng.integers(33, len(png)))] if rng.random() < 0.5 else jpeg[:int(rng.integers(
            jpeg_frame_header(jpeg) + 10, len(jpeg)))], None),
        12: (huge_png, "too_large"),
    }
    data, fault = cases[kind]
    if kind == 11 and rng.random() < 0.5:
        damaged = bytearray(data)
        start = 33 if damaged.startswith(b"\x89PNG") else jpeg_frame_header(jpeg) + 10
        for at in rng.integers(start, len(damaged), 8):
            damaged[at] = int(rng.integers(0, 256))
        data = bytes(damaged)
    return CompressedImage(header=header(stamp_sec), format=str(rng.choice(["png", "jpeg", "bmp", ""])),
                           data=data), fault


def test_fuzzed_frames_are_all_counted_and_the_node_keeps_serving(client: Client, nodes: dict,
                                                                 huge_png: bytes) -> None:
    rng = np.random.default_rng(FUZZ_SEED)
    start = time.monotonic()
    sent = {RAW: [fuzz_raw(rng, 1000 + i) for i in range(FUZZ_RAW)]}
    raw_expected = Counter(expected_raw_fault(m) for m in sent[RAW])
    compressed = [fuzz_compressed(rng, 2000 + i, huge_png) for i in range(FUZZ_COMPRESSED)]
    sent[COMPRESSED] = [m for m, _ in compressed]
    compressed_expected = Counter(f for _, f in compressed)
    before = {n: settled_counts(client, n) for n in sent}
    peak_before = {n: peak_rss_mib(nodes[n]) for n in sent}
    for index in range(max(FUZZ_RAW, FUZZ_COMPRESSED)):
        for namespace, publisher in ((RAW, "raw"), (COMPRESSED, "compressed")):
            if index < len(sent[namespace]):
                client.pub[publisher].publish(sent[namespace][index])
        client.spin_for(0.02)
    after = {n: settled_counts(client, n, int(before[n]["frames_received"]) + len(sent[n])) for n in sent}
    elapsed = time.monotonic() - start
    for namespace, expected in ((RAW, raw_expected), (COMPRESSED, compressed_expected)):
        def delta(key: str, n: str = namespace) -> int:
            return int(after[n][key]) - int(before[n][key])

        assert delta("frames_failed") == 0, after[namespace]["last_error"]
        for fault in IMAGE_FAULTS:
            count = delta(f"frames_rejected_{fault}")
            if fault == "corrupt":  # header refusals, plus decoding failures of frames that passed the header
                assert count >= expected["corrupt?"], (namespace, fault, count, expected)
            else:
                assert count == expected.get(fault, 0), (namespace, fault, count, expected)
        assert delta("frames_rejected") == sum(delta(f"frames_rejected_{f}") for f in IMAGE_FAULTS)
        assert peak_rss_mib(nodes[namespace]) - peak_before[namespace] < PEAK_GROWTH_MIB, namespace
        assert nodes[namespace].poll() is None
    assert elapsed < FUZZ_SECONDS
    print(f"fuzz: {FUZZ_RAW} raw frames {dict(raw_expected)}, {FUZZ_COMPRESSED} compressed {dict(compressed_expected)}"
          f" in {elapsed:.1f} s; peak RSS growth " + ", ".join(
              f"{n} {peak_rss_mib(nodes[n]) - peak_before[n]:.1f} MiB" for n in sent))
    send_and_segment(client, "raw", RAW, image_msg(random_image("rgb8"), "rgb8", 3000))
    send_and_segment(client, "compressed", COMPRESSED, good_png(3001))


# ---- nodes that must not start, and a worker that fails -----------------------------------------------------

@pytest.mark.parametrize("values, reason", [
    ({"input_qos_depth": 100000000000}, "parameter 'input_qos_depth' has an invalid value 100000000000"),
    ({"max_rate_hz": 1e-12}, "parameter 'max_rate_hz' has an invalid value 1e-12"),
    ({"weigths": "/no/such.pt", "publish_overlya": False},
     "unknown parameters 'publish_overlya' (did you mean 'publish_overlay' or 'publish_semantic'?), 'weigths' "
     "(did you mean 'weights'?): not a parameter of segmentation_node; set allow_undeclared_parameters:=true"),
], ids=["huge_depth", "tiny_rate", "misspelled"])
def test_bad_parameter_values_and_names_refuse_the_start(values: dict, reason: str) -> None:
    assert reason in startup_error(values)


@pytest.mark.slow  # four node processes (~30 s on a loaded 2-core machine)
def test_bad_arguments_exit_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad_yaml.yaml"
    bad_yaml.write_text("a: [\n")
    misspelled = tmp_path / "misspelled.yaml"
    misspelled.write_text("/**:\n  ros__parameters:\n    publish_overlya: false\n")
    cases = {  # name -> (ROS arguments, text of the one-line reason)
        "empty_value": (["-p", "model:="], "invalid ROS arguments: Couldn't parse parameter override rule: "
                                            "'-p model:='"),
        "malformed_p": (["-p", "model"], "invalid ROS arguments: Couldn't parse parameter override rule: '-p model'"),
        "bad_params_file": (["--params-file", str(bad_yaml)], "invalid ROS arguments: Couldn't parse params file"),
        "misspelled": (["-p", "weigths:=/no/such.pt", "--params-file", str(misspelled)],
                       "unknown parameters 'publish_overlya' (did you mean 'publish_overlay' or 'publish_semantic'?), "
                       "'weigths' (did you mean 'weights'?)"),
    }
    processes = {name: start_node(f"/{name}", tmp_path / f"{name}.log", "-p", "device:=cpu", *args)
                 for name, (args, _) in cases.items()}
    for name, process in processes.items():
        code = process.wait(timeout=TIMEOUT)
        log = (tmp_path / f"{name}.log").read_text()
        reasons = [line for line in log.splitlines() if "cannot start" in line]
        assert code == 2 and "Traceback" not in log and len(reasons) == 1, log
        assert cases[name][1] in reasons[0], log


WORKER_FAULTS = """
import sys
from dataclasses import replace

from ros_seg.ros.segmentation_node import SegmentationNode, run_node


class FaultyNode(SegmentationNode):
    # Frame 13 fails while it is segmented; max_rate_hz 1e-12, forced past the parameter check, makes the
    # worker's wait for the frame after that overflow.

    def _load(self):
        super()._load()
        self.settings = replace(self.settings, max_rate_hz=1e-12)

    def _process(self, frame):
        if frame.msg.header.stamp.sec == 13:
            raise RuntimeError("injected fault in frame 13")
        super()._process(frame)


sys.exit(run_node(FaultyNode))
"""


def test_worker_faults_are_errors_in_diagnostics_and_a_dead_worker_ends_the_node(client: Client,
                                                                               tmp_path: Path) -> None:
    namespace, log = "/worker_fault", tmp_path / "worker_fault.log"
    weights = seeded_weights(tmp_path / "pem_stdc1_seeded.pt")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_FAULTS, "--ros-args", "-r", f"__ns:={namespace}", *NODE_ARGS,
             "-p", f"weights:={weights}"], stdout=out, stderr=subprocess.STDOUT)
    name = f"ros_seg: segmentation_node ({namespace}/segmentation_node)"
    statuses: list[DiagnosticStatus] = []

    def seen(want: Callable[[DiagnosticStatus], bool]) -> bool:
        statuses.extend(s for m in client.received["/diagnostics"] for s in m.status if s.name == name)
        client.received["/diagnostics"].clear()
        return any(want(s) for s in statuses)

    try:
        publisher = client.node.create_publisher(Image, f"{namespace}/image", RELIABLE)
        client.subscribe(f"{namespace}/semantic", Image)
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0), log.read_text()
        client.received["/diagnostics"].clear()
        # A frame that fails: ERROR for that report, then the node goes on (OK again, still running).
        publisher.publish(image_msg(random_image("rgb8"), "rgb8", 13))
        assert client.spin_until(lambda: seen(lambda s: s.level == DiagnosticStatus.ERROR)), log.read_text()
        failed = next(s for s in statuses if s.level == DiagnosticStatus.ERROR)
        assert failed.message == "1 frame(s) failed: RuntimeError: injected fault in frame 13", failed.message
        statuses.clear()
        assert client.spin_until(lambda: seen(lambda s: s.level == DiagnosticStatus.OK)), log.read_text()
        assert process.poll() is None
        # The next frame makes the worker's wait overflow: ERROR for good, and the node ends with code 1.
        publisher.publish(image_msg(random_image("rgb8"), "rgb8", 14))
        assert client.spin_until(lambda: process.poll() is not None), log.read_text()
        client.spin_for(0.5)
        seen(lambda s: False)
    finally:
        stop_node(process)
    text = log.read_text()
    assert process.returncode == 1 and "Traceback" not in text, text
    fatal = [line for line in text.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "the segmentation worker stopped: OverflowError" in fatal[0], text
    assert statuses[-1].level == DiagnosticStatus.ERROR, [s.message for s in statuses]
    assert statuses[-1].message.startswith("stopped: the worker failed: OverflowError"), statuses[-1].message
