"""Live replay: a bag's camera frames through a real segmentation_node over DDS, timed end to end.

The driver starts `segmentation_node` as its own process (model, weights,
device, backend and precision as parameters; its own namespace; DDS kept on
loopback and on a private domain unless the user allows otherwise), waits
until the node has discovered our publisher and we its outputs, warms it up
with one frame, then publishes the bag's frames as recorded (the serialized
messages unchanged) at the recorded timing divided by `rate`, or with rate
None ("max") each frame as soon as the previous one was answered.

Outputs (semantic, panoptic, segments) are matched to inputs by header stamp:
a frame is processed when all three arrived, its latency is from our publish
call to the arrival of the last one; a published frame never answered is
dropped (the node keeps only the newest frame). Predictions are scored
against the bag's ground truth. With `record`, every output message is also
written, as received, to a new mcap bag. The node is stopped with SIGINT,
then SIGTERM.

SIGTERM and SIGHUP (what `timeout`, systemd and CI send) end the replay as
Ctrl-C does: the node is stopped and the partial report written. Should the
replay itself be killed (SIGKILL), the kernel sends the node SIGTERM
(Linux's PR_SET_PDEATHSIG, set in the node's process before it starts), so no
node outlives its replay.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import CompressedImage, Image
from tqdm import tqdm

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.msg import SegmentArray
from ros_seg.replay.bag_reader import BagFrame, ReplayBag
from ros_seg.replay.bag_types import (
    BAG_VERSION,
    COMPRESSED_IMAGE,
    IMAGE,
    SEGMENT_ARRAY,
    GroundTruth,
    header,
    image_array,
    replay_typestore,
    segment_classes,
    stamp_ns,
)
from ros_seg.replay.replay_report import AccuracyScorer, OverlaySampler, ReplayResult
from ros_seg.ros.node_parameters import INPUT_QOS

NODE_NAMESPACE = "/ros_seg_replay"
OUTPUT_TYPES = {"semantic": IMAGE, "panoptic": IMAGE, "segments": SEGMENT_ARRAY}
_RCLPY_TYPES = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage, SEGMENT_ARRAY: SegmentArray}
PUBLISH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
WARMUP_RETRY_S = 5.0
STOP_WAIT_S = 10.0
MIN_DRAIN_S = 5.0
DEFAULT_DOMAIN_RANGE = 100  # private domain ids are picked in 1..100


@dataclass(frozen=True)
class LiveSettings:
    """How the live replay runs the node and paces the frames.

    Args:
        model: model name or config file (node parameter `model`).
        weights: checkpoint (node parameter `weights`); None runs random weights.
        device: node parameter `device`.
        backend: node parameter `backend`.
        precision: node parameter `precision`.
        rate: speed factor over the recorded timing; None publishes each frame once the previous was answered.
        input_qos: the node's image subscription QoS, "sensor_data" or "reliable".
        domain_id: ROS_DOMAIN_ID of the node and of this process; None keeps ROS_DOMAIN_ID or picks a private one.
        allow_remote_dds: let DDS discovery leave this machine (default: loopback only).
        record: mcap bag folder to write the outputs to, or None.
        startup_timeout_s: most seconds to wait for the node to come up and answer a first frame.
        log: file for the node's console output.
    """

    model: str
    weights: str | None = None
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"
    rate: float | None = 1.0
    input_qos: str = "sensor_data"
    domain_id: int | None = None
    allow_remote_dds: bool = False
    record: Path | None = None
    startup_timeout_s: float = 180.0
    log: Path | None = None


def dds_environment(environ: dict[str, str], domain_id: int | None, allow_remote: bool) -> dict[str, str]:
    """`environ` with the DDS settings of a replay: a ROS_DOMAIN_ID and, unless `allow_remote`, loopback only."""
    env = dict(environ)
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            raise ValueError(f"--ros-domain-id must be within 0..232, got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(domain_id)
    elif not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(1 + os.getpid() % DEFAULT_DOMAIN_RANGE)
    if not allow_remote:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        if env.get("ROS_DISTRO") == "humble":  # Humble predates ROS_AUTOMATIC_DISCOVERY_RANGE
            env["ROS_LOCALHOST_ONLY"] = "1"
    return env


def node_topic(bag_topic: str, msgtype: str) -> tuple[str, bool]:
    """The topic the node's `image` is remapped to and whether it subscribes compressed images.

    A CompressedImage topic `/x/compressed` is `/x` for the node (it adds `/compressed`).
    """
    if msgtype == COMPRESSED_IMAGE:
        return (bag_topic[: -len("/compressed")] if bag_topic.endswith("/compressed") else bag_topic), True
    return bag_topic, False


def node_command(settings: LiveSettings, image_topic: str, compressed: bool) -> list[str]:
    """The command line of the segmentation node process."""
    params = {
        "model": settings.model, "device": settings.device, "backend": settings.backend,
        "precision": settings.precision, "input_qos": settings.input_qos,
        "use_compressed": "true" if compressed else "false",
    }
    params["weights"] = str(settings.weights) if settings.weights else "random"  # random only when asked for
    command = [sys.executable, "-m", "ros_seg.ros.segmentation_node", "--ros-args",
               "-r", f"__ns:={NODE_NAMESPACE}", "-r", f"image:={image_topic}"]
    for name, value in params.items():
        command += ["-p", f"{name}:={value}"]
    return command


PR_SET_PDEATHSIG = 1
"""prctl option: the signal the kernel sends this process when its parent ends (linux/prctl.h)."""


def _end_with_parent(parent: int, prctl: Callable[..., int]) -> None:
    """Run in the node's process before it starts: SIGTERM to it when `parent` ends, also by SIGKILL; if `parent`
    ended already (before the request took effect), end now."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _end_with_this_process() -> Callable[[], None] | None:
    """The preexec_fn that ties a child to this process's life (Linux only; elsewhere None). libc is loaded here,
    in the parent: loading a library between fork and exec could wait forever on a lock another thread held."""
    if not sys.platform.startswith("linux"):
        return None
    return partial(_end_with_parent, os.getpid(), ctypes.CDLL(None, use_errno=True).prctl)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_signals_interrupt() -> dict[int, Any]:
    """From now on SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does (main thread only); the previous
    handlers, to give back to signal.signal."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}


def stop_process(process: subprocess.Popen) -> int:
    """Stop a node process: SIGINT, then SIGTERM, then SIGKILL, each after STOP_WAIT_S; its exit code."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


@dataclass(frozen=True)
class Answer:
    """The three outputs of one input frame: its stamp, when the last arrived (monotonic s), the raw messages."""

    stamp: int
    arrived: float
    raw: dict[str, bytes]


class OutputCollector:
    """Raw subscriptions to the node's outputs; groups them by stamp into Answers (thread-safe queues).

    Set `recording` to also receive every output on `recorded` as (topic, wall time ns, raw).

    Args:
        node: the rclpy node to subscribe with.
    """

    def __init__(self, node: Node) -> None:
        self._lock = threading.Lock()
        self._partial: dict[int, dict[str, bytes]] = {}
        self.recording = False
        self.answers: queue.Queue[Answer] = queue.Queue()
        self.recorded: queue.Queue[tuple[str, int, bytes]] = queue.Queue()
        self.topics = {name: f"{NODE_NAMESPACE}/{name}" for name in OUTPUT_TYPES}
        for name, msgtype in OUTPUT_TYPES.items():
            node.create_subscription(_RCLPY_TYPES[msgtype], self.topics[name], partial(self._on_output, name),
                                     OUTPUT_QOS, raw=True)

    def _on_output(self, name: str, raw: bytes) -> None:
        arrived = time.monotonic()
        if self.recording:
            self.recorded.put((self.topics[name], time.time_ns(), raw))
        stamp = stamp_ns(replay_typestore().deserialize_cdr(raw, OUTPUT_TYPES[name]).header)
        with self._lock:
            outputs = self._partial.setdefault(stamp, {})
            outputs[name] = raw
            if len(outputs) == len(OUTPUT_TYPES):
                del self._partial[stamp]
                self.answers.put(Answer(stamp, arrived, outputs))


@dataclass
class _Sent:
    """A published frame waiting for its answer."""

    index: int
    published: float
    truth: GroundTruth | None
    rgb: np.ndarray | None


class LiveReplay:
    """One live replay: node process, player node, scoring (see the module docstring).

    Args:
        bag: the open bag.
        topic: camera topic to replay.
        settings: node and pacing settings.
        metadata: the model's label set (for scoring and overlays).
        environment: the report's environment entry (DDS and QoS facts are added).
    """

    def __init__(self, bag: ReplayBag, topic: str, settings: LiveSettings, metadata: ClassMetadata,
                 environment: dict[str, Any]) -> None:
        if settings.input_qos not in INPUT_QOS:
            raise ValueError(f"unknown input QoS {settings.input_qos!r}: use one of {', '.join(INPUT_QOS)}")
        if settings.rate is not None and not settings.rate > 0:
            raise ValueError(f"--rate must be > 0 or 'max', got {settings.rate}")
        self.bag = bag
        self.topic = topic
        self.settings = settings
        self.metadata = metadata
        self.msgtype = bag.topics[topic].msgtype
        self.scorer = AccuracyScorer(metadata)
        self.result = ReplayResult(mode="live", environment=environment)
        self._sent: dict[int, _Sent] = {}
        self._max_latency_s = 0.0

    def run(self, max_frames: int | None = None, progress: bool = False) -> ReplayResult:
        """Replay the frames; Ctrl-C ends early with `interrupted` set. ValueError when the node fails."""
        env = dds_environment(dict(os.environ), self.settings.domain_id, self.settings.allow_remote_dds)
        os.environ.update(env)  # this process's own DDS participant follows the same settings
        image_topic, compressed = node_topic(self.topic, self.msgtype)
        log = open(self.settings.log, "wb") if self.settings.log else subprocess.DEVNULL
        process = subprocess.Popen(node_command(self.settings, image_topic, compressed), env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_end_with_this_process())
        context = rclpy.Context()
        # Ctrl-C stays a KeyboardInterrupt of this loop, which ends the replay and writes a partial report.
        rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]),
                   signal_handler_options=SignalHandlerOptions.NO)
        node = Node("ros_seg_replay_player", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, name="replay_spin", daemon=True)
        spinner.start()
        writer = self._open_record()
        publish_topic = f"{image_topic}/compressed" if compressed else image_topic
        publisher = node.create_publisher(_RCLPY_TYPES[self.msgtype], publish_topic, PUBLISH_QOS)
        collector = OutputCollector(node)
        self.result.environment.update({
            "rmw": rclpy.get_rmw_implementation_identifier(), "ros_domain_id": int(env["ROS_DOMAIN_ID"]),
            "dds_discovery_range": env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "default"),
            "qos": f"input {self.settings.input_qos}, outputs reliable depth 10",
            "rate": "max" if self.settings.rate is None else self.settings.rate,
        })
        previous_handlers = _stop_signals_interrupt()
        try:
            frames = self.bag.frames(self.topic, max_frames)
            first = next(frames, None)
            if first is not None:
                self._start(process, node, publisher, collector, first)
                collector.recording = writer is not None  # the warm-up answer is not recorded
                total = self.bag.frame_count(self.topic) if max_frames is None else min(
                    max_frames, self.bag.frame_count(self.topic))
                self._play(process, publisher, collector, writer, first, frames, total, progress)
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            stop_process(process)
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=context)
            spinner.join(timeout=STOP_WAIT_S)
            if writer is not None:
                self._write_recorded(collector, writer)
                writer.close()
            if log is not subprocess.DEVNULL:
                log.close()
        self.result.accuracy = self.scorer.summary()
        self.result.frames_scored = self.scorer.frames
        return self.result

    def _open_record(self) -> Writer | None:
        """The mcap bag the outputs are recorded to, with one connection per output topic."""
        if self.settings.record is None:
            return None
        writer = Writer(self.settings.record, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        self._record_connections = {
            f"{NODE_NAMESPACE}/{name}": writer.add_connection(f"{NODE_NAMESPACE}/{name}", msgtype,
                                                              typestore=replay_typestore())
            for name, msgtype in OUTPUT_TYPES.items()
        }
        return writer

    def _write_recorded(self, collector: OutputCollector, writer: Writer) -> None:
        """Write the outputs received since the last call to the record bag."""
        while not collector.recorded.empty():
            topic, log_time, raw = collector.recorded.get()
            writer.write(self._record_connections[topic], log_time, raw)

    def _failed(self, process: subprocess.Popen, what: str) -> ValueError:
        """The error for a node that died or never came up, with the end of its log."""
        tail = ""
        if self.settings.log and Path(self.settings.log).is_file():
            lines = [line for line in Path(self.settings.log).read_text(errors="replace").splitlines() if line.strip()]
            tail = f"; its last log line: {lines[-1].strip()}" if lines else ""
        code = process.poll()
        state = f"segmentation_node exited with code {code}" if code is not None else "segmentation_node"
        return ValueError(f"{state}: it {what}{tail}")

    def _start(self, process: subprocess.Popen, node: Node, publisher: Any, collector: OutputCollector,
               first: BagFrame) -> None:
        """Wait for discovery both ways, then until the node answered a warm-up copy of the first frame."""
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while (publisher.get_subscription_count() == 0
               or any(node.count_publishers(t) == 0 for t in collector.topics.values())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise self._failed(
                    process, f"did not subscribe to the images within {self.settings.startup_timeout_s:.0f} s")
            time.sleep(0.1)
        store = replay_typestore()
        attempt = 0
        while True:
            attempt += 1
            warmup = dataclasses.replace(first.message, header=header(attempt, first.message.header.frame_id))
            publisher.publish(bytes(store.serialize_cdr(warmup, self.msgtype)))
            try:
                answer = collector.answers.get(timeout=WARMUP_RETRY_S)
            except queue.Empty:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise self._failed(process, "did not answer a warm-up frame") from None
                continue
            if answer.stamp <= attempt:
                return

    def _publish(self, publisher: Any, frame: BagFrame, overlays: OverlaySampler) -> None:
        """Publish one frame as recorded and remember what to score its answer against."""
        rgb = None
        if overlays.wants(frame.index):
            image, encoding = frame.decode()
            rgb = image[:, :, ::-1] if encoding in ("bgr8", "bgra8") else image
            rgb = np.ascontiguousarray(rgb[:, :, :3])
        raw = bytes(frame.raw)
        self._sent[frame.stamp] = _Sent(frame.index, time.monotonic(), frame.ground_truth, rgb)
        publisher.publish(raw)
        self.result.frames_in += 1

    def _collect(self, collector: OutputCollector, overlays: OverlaySampler, timeout: float) -> int:
        """Score the answers that arrive within `timeout` s (the first one waited for); how many."""
        handled = 0
        wait = timeout
        while True:
            try:
                answer = collector.answers.get(timeout=max(wait, 0.0)) if wait > 0 else collector.answers.get_nowait()
            except queue.Empty:
                return handled
            wait = 0.0
            sent = self._sent.pop(answer.stamp, None)
            if sent is None:
                continue  # a late warm-up answer
            handled += 1
            latency = answer.arrived - sent.published
            self._max_latency_s = max(self._max_latency_s, latency)
            self.result.frames_processed += 1
            self.result.latencies_ms.append((sent.index, latency * 1e3))
            self.result.output_times_s.append(answer.arrived)
            self._score(answer, sent, overlays)

    def _score(self, answer: Answer, sent: _Sent, overlays: OverlaySampler) -> None:
        """Score one answer against its frame's ground truth; keep its overlay when sampled."""
        store = replay_typestore()
        semantic, _ = image_array(store.deserialize_cdr(answer.raw["semantic"], IMAGE))
        semantic = semantic.reshape(semantic.shape[:2])
        if sent.truth is not None:
            panoptic, _ = image_array(store.deserialize_cdr(answer.raw["panoptic"], IMAGE))
            classes = segment_classes(store.deserialize_cdr(answer.raw["segments"], SEGMENT_ARRAY))
            self.scorer.update(semantic, panoptic, classes, sent.truth)
        if sent.rgb is not None:
            overlays.add(sent.index, sent.rgb, semantic)

    def _play(self, process: subprocess.Popen, publisher: Any, collector: OutputCollector, writer: Writer | None,
              first: BagFrame, rest: Any, total: int, progress: bool) -> None:
        """Publish every frame on schedule, scoring answers while waiting; then drain the last answers."""
        overlays = OverlaySampler(total, self.metadata)
        bar = tqdm(total=total, desc="replaying live", unit="frame", disable=not progress)
        start = time.monotonic()
        frame: BagFrame | None = first
        try:
            while frame is not None:
                if self.settings.rate is not None:
                    due = start + (frame.log_time - first.log_time) / 1e9 / self.settings.rate
                    while (left := due - time.monotonic()) > 0:
                        self._collect(collector, overlays, min(left, 0.05))
                self._publish(publisher, frame, overlays)
                bar.update()
                if self.settings.rate is None:
                    self._collect(collector, overlays, self._answer_timeout())
                else:
                    self._collect(collector, overlays, 0.0)
                if writer is not None:
                    self._write_recorded(collector, writer)
                if process.poll() is not None:
                    raise self._failed(process, "stopped during the replay")
                frame = next(rest, None)
            while self._sent and self._collect(collector, overlays, self._answer_timeout()):
                pass
        finally:
            bar.close()
            self.result.overlays = overlays.overlays

    def _answer_timeout(self) -> float:
        """How long to wait for an answer before counting a frame dropped: 3x the slowest answer so far."""
        return max(MIN_DRAIN_S, 3.0 * self._max_latency_s)


def replay_live(bag: ReplayBag, topic: str, settings: LiveSettings, metadata: ClassMetadata,
                environment: dict[str, Any], max_frames: int | None = None, progress: bool = False) -> ReplayResult:
    """Run a LiveReplay of `topic` (see the module docstring)."""
    return LiveReplay(bag, topic, settings, metadata, environment).run(max_frames, progress)
