"""The segmentation node: camera images in, semantic / panoptic label images and segments out.

    segmentation_node --ros-args -p model:=pem_stdc1 -p weights:=pem_stdc1.pt -r image:=/camera/image_raw

Subscribes `image` (sensor_msgs/Image) or `image/compressed` (use_compressed),
and `camera_info`; publishes `semantic`, `panoptic`, `segments`, `overlay`
(only while subscribed), `segmentation_info` (transient local, once),
`output_camera_info` (at network resolution only) and `/diagnostics`.

The subscription callback checks each frame's header against the pixel budget
and its layout (frame_limits: refused frames are counted per fault, never
copied or decoded), then keeps the newest frame in a one-slot buffer (a frame
replaced before it was processed counts as dropped); a worker thread converts,
segments and publishes, so the executor never waits on inference. An error in
one frame is counted and the worker goes on; an error that stops the worker
makes /diagnostics report ERROR and ends the node with exit code 1 and a
one-line reason.
With `lazy` (the default) the worker skips the model while nobody subscribes
to an enabled output and resumes with the first subscriber; the image
subscription stays, so diagnostics keep the input rate and count the skipped
frames.
"""
from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecyclePublisher
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ros_seg.inference.image_input import ENCODINGS, ImageError
from ros_seg.inference.result import SegmentationResult
from ros_seg.inference.segmenter import Segmenter, resolve_device
from ros_seg.inference.visualize import panoptic_overlay, prepare_overlay
from ros_seg.models.meta_architecture import PostprocessOptions
from ros_seg.msg import SegmentArray, SegmentationInfo
from ros_seg.ros.diagnostics import FrameStatistics, bounded
from ros_seg.ros.frame_limits import check_frame
from ros_seg.ros.image_conversion import array_to_image, compressed_to_array, image_to_array, rgb_array
from ros_seg.ros.message_builders import scaled_camera_info, segment_array, segmentation_info
from ros_seg.ros.node_parameters import (
    ParameterError,
    RuntimeSettings,
    StartupSettings,
    declare_node_parameters,
    read_parameters,
    refuse_undeclared_parameters,
    undeclared_parameters,
    updated_runtime_settings,
)

NODE_NAME = "segmentation_node"
ERROR_LOG_PERIOD_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


class StartupError(RuntimeError):
    """The node cannot start; the message names the parameter or file at fault."""


class WorkerFailed(RuntimeError):
    """The worker thread stopped on an error; raised out of the executor's spin, it ends the node."""


@dataclass(frozen=True)
class Frame:
    """A received image message and when it arrived (time.monotonic seconds)."""

    msg: Image | CompressedImage
    received_at: float


class LatestFrame:
    """One-slot buffer between the subscription callback and the worker thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store `frame`; True when it replaced a frame the worker had not taken."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self, not_before: float) -> Frame | None:
        """The newest frame, waiting for one and until time.monotonic() >= `not_before`; None once closed."""
        with self._condition:
            while not self._closed:
                wait = not_before - time.monotonic()
                if self._frame is not None and wait <= 0:
                    frame, self._frame = self._frame, None
                    return frame
                self._condition.wait(timeout=wait if self._frame is not None else None)
            return None

    def close(self) -> None:
        """Wake the worker for good."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def input_qos(settings: StartupSettings) -> QoSProfile:
    """Sensor-data (best effort) or reliable keep-last QoS of the image subscription."""
    reliability = ReliabilityPolicy.RELIABLE if settings.input_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=settings.input_qos_depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


def build_segmenter(settings: StartupSettings) -> Segmenter:
    """The Segmenter the parameters describe; StartupError naming the parameter or file otherwise."""
    try:
        resolve_device(settings.device)
    except ValueError as exc:
        raise StartupError(f"parameter 'device': {exc}") from None
    try:
        return Segmenter(
            model=settings.model or None,
            weights=settings.weights or None,
            device=settings.device,
            precision=settings.precision,
            backend=settings.backend,
            channels_last=settings.channels_last,
            compile_mode=settings.compile_mode,
            input_size=settings.network_size,
            output_resolution=settings.output_resolution,
        )
    except (ValueError, OSError) as exc:
        weights = f" with weights file {settings.weights!r}" if settings.weights else ""
        raise StartupError(
            f"cannot load model {settings.model!r}{weights} on backend {settings.backend!r}: {exc}"
        ) from None


class SegmentationWork:
    """What the segmentation node does, in steps a plain node runs at once and a managed node per transition.

    Mixed into a Node (SegmentationNode) or a LifecycleNode
    (managed_segmentation_node.ManagedSegmentationNode): `_prepare` declares
    the parameters; `_load` reads them and loads the model; `_open_outputs` /
    `_close_outputs` make and destroy the publishers and the diagnostics timer;
    `_open_input` / `_close_input` the subscriptions; `_start_worker` /
    `_stop_worker` the worker thread.
    """

    def _prepare(self) -> None:
        """Declare the parameters (StartupError for a bad value) and the parameter-change callback."""
        self.settings: StartupSettings | None = None
        self.runtime: RuntimeSettings | None = None
        self.segmenter: Segmenter | None = None
        self._stop_waiting = threading.Event()
        self._slot = LatestFrame()
        self._worker: threading.Thread | None = None
        self._inputs: list = []
        self._outputs: list = []
        self._timer = None
        self._camera_info: CameraInfo | None = None
        self._worker_error = ""
        self._worker_failure = self.create_guard_condition(self._on_worker_failure)
        try:
            declare_node_parameters(self)
        except ParameterError as exc:
            raise StartupError(str(exc)) from None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load(self) -> None:
        """Read and check the parameters, load the model; StartupError naming the parameter or file."""
        try:
            self.settings, self.runtime = read_parameters(self)
            if not self.settings.allow_undeclared_parameters:
                refuse_undeclared_parameters(self)
        except ParameterError as exc:
            raise StartupError(str(exc)) from None
        if ignored := undeclared_parameters(self):
            self.get_logger().warning(f"ignoring parameters the node does not declare: {bounded(', '.join(ignored))}")
        self.segmenter = build_segmenter(self.settings)
        prepare_overlay(self.segmenter.metadata)
        if self.segmenter.weights is None:
            self.get_logger().warning(f"model {self.segmenter.model_name} has random weights: outputs are meaningless")
        self.statistics = FrameStatistics(
            status_name=f"ros_seg: segmentation_node ({self.get_fully_qualified_name()})",
            hardware_id=str(self.segmenter.device),
            details={
                "model": self.segmenter.model_name,
                "weights": self.settings.weights or "(random)",
                "backend": self.settings.backend,
                "device": str(self.segmenter.device),
                "precision": self.segmenter.precision,
            },
        )

    def _open_outputs(self, create_publisher: Callable) -> None:
        """The output publishers (made with `create_publisher`), segmentation_info, /diagnostics and its timer."""
        self._semantic_pub = create_publisher(Image, "semantic", OUTPUT_QOS)
        self._panoptic_pub = create_publisher(Image, "panoptic", OUTPUT_QOS)
        self._segments_pub = create_publisher(SegmentArray, "segments", OUTPUT_QOS)
        self._overlay_pub = create_publisher(Image, "overlay", OUTPUT_QOS)
        self._camera_info_pub = create_publisher(CameraInfo, "output_camera_info", OUTPUT_QOS)
        # Published whatever the lifecycle state: what the model is, and how the node is doing.
        self._info_pub = self.create_publisher(SegmentationInfo, "segmentation_info", LATCHED_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._outputs = [self._semantic_pub, self._panoptic_pub, self._segments_pub, self._overlay_pub,
                         self._camera_info_pub, self._info_pub, self._diagnostics_pub]
        header = Header(stamp=self.get_clock().now().to_msg())
        self._info_pub.publish(segmentation_info(self.segmenter.metadata, self.segmenter.model_name, header))
        self._timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    def _close_outputs(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        for publisher in self._outputs:
            if isinstance(publisher, LifecyclePublisher):
                self.destroy_lifecycle_publisher(publisher)
            else:
                self.destroy_publisher(publisher)
        self._outputs = []

    def _open_input(self) -> str:
        """Subscribe the image (or compressed image) and camera_info topics; the image topic's name."""
        qos = input_qos(self.settings)
        if self.settings.use_compressed:
            topic = self.resolve_topic_name("image") + "/compressed"
            image = self.create_subscription(CompressedImage, topic, self._on_image, qos)
        else:
            topic = self.resolve_topic_name("image")
            image = self.create_subscription(Image, "image", self._on_image, qos)
        self._inputs = [image, self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos)]
        return topic

    def _close_input(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []

    def _start_worker(self) -> None:
        self._slot = LatestFrame()
        self._stop_waiting.clear()
        self._worker = threading.Thread(target=self._work, name="segmentation_worker", daemon=True)
        self._worker.start()

    def _stop_worker(self) -> None:
        """Stop the worker after the frame it is on, unless stop_waiting() was called.

        The worker is a daemon thread: one left running ends with the process.
        """
        self._slot.close()
        while self._worker is not None and self._worker.is_alive() and not self._stop_waiting.is_set():
            self._worker.join(timeout=0.1)
        self._worker = None

    def stop_waiting(self) -> None:
        """Make the node stop waiting for the frame in progress (a second Ctrl-C)."""
        self._stop_waiting.set()

    def _log_started(self, topic: str) -> None:
        self.get_logger().info(
            f"segmenting {topic} with {self.segmenter.model_name} on {self.segmenter.device} "
            f"({self.settings.backend}, {self.segmenter.precision}, {self.settings.input_qos} QoS)"
        )

    def _on_image(self, msg: Image | CompressedImage) -> None:
        try:
            check_frame(msg, self.settings.max_image_pixels)
        except ImageError as exc:
            self.statistics.frame_received(replaced_pending=False)
            self._reject(exc)
            return
        replaced = self._slot.put(Frame(msg, time.monotonic()))
        self.statistics.frame_received(replaced)

    def _reject(self, exc: ImageError) -> None:
        """Count and log (throttled) a bad frame."""
        self.statistics.frame_rejected(str(exc), exc.fault)
        self.get_logger().error(f"bad image frame: {bounded(str(exc))}", throttle_duration_sec=ERROR_LOG_PERIOD_S)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if msg.width == 0 or msg.height == 0:
            self._camera_info = None
            reason = (f"camera_info of {msg.width}x{msg.height} pixels cannot be scaled: output_camera_info waits "
                      "for a camera_info with a size")
            self.statistics.camera_info_refused(reason)
            self.get_logger().error(reason, throttle_duration_sec=ERROR_LOG_PERIOD_S)
            return
        self._camera_info = msg

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        if self.runtime is None:  # not loaded yet: _load() checks every value
            return SetParametersResult(successful=True)
        try:
            self.runtime = updated_runtime_settings(self.runtime, params)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        self._diagnostics_pub.publish(self.statistics.report(self.get_clock().now().to_msg()))

    def _work(self) -> None:
        """The worker thread: serve frames; an error that escapes them is reported and ends the node."""
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - never a silent dead worker: reported, then the node ends
            if not self.context.ok():
                return
            self._worker_error = bounded(f"{type(exc).__name__}: {exc}")
            self.statistics.worker_failed(self._worker_error)
            self._publish_diagnostics()
            self._worker_failure.trigger()

    def _on_worker_failure(self) -> None:
        """In the executor: end its spin (run_node exits with code 1)."""
        raise WorkerFailed(f"the segmentation worker stopped: {self._worker_error}")

    def _serve(self) -> None:
        """Segment the newest frame, at most max_rate_hz times a second, until the slot is closed."""
        period = 1.0 / self.settings.max_rate_hz if self.settings.max_rate_hz > 0 else 0.0
        not_before = 0.0
        while (frame := self._slot.take(not_before)) is not None:
            not_before = time.monotonic() + period
            try:
                self._process(frame)
            except ImageError as exc:
                self._reject(exc)
            except Exception as exc:  # noqa: BLE001 - the node keeps serving; the error is logged and reported
                if not rclpy.ok(context=self.context):
                    return
                reason = bounded(f"{type(exc).__name__}: {exc}")
                self.statistics.frame_failed(reason)
                self.get_logger().error(f"segmenting a frame failed: {reason}",
                                        throttle_duration_sec=ERROR_LOG_PERIOD_S)

    def _has_subscribers(self) -> bool:
        """Whether someone subscribes to an output the node would publish."""
        runtime = self.runtime
        wanted = [(runtime.publish_semantic, self._semantic_pub), (runtime.publish_panoptic, self._panoptic_pub),
                  (runtime.publish_segments, self._segments_pub), (runtime.publish_overlay, self._overlay_pub),
                  (self.settings.output_resolution == "network", self._camera_info_pub)]
        return any(enabled and publisher.get_subscription_count() > 0 for enabled, publisher in wanted)

    def _process(self, frame: Frame) -> None:
        """Convert, segment and publish one frame (in the worker thread); skipped while nobody listens (lazy)."""
        if self.runtime.lazy and not self._has_subscribers():
            self.statistics.frame_skipped()
            return
        t0 = time.perf_counter()
        msg = frame.msg
        convert = compressed_to_array if isinstance(msg, CompressedImage) else image_to_array
        image, encoding = convert(msg, self.settings.max_image_pixels)
        runtime = self.runtime
        defaults = self.segmenter.default_options
        options = PostprocessOptions(  # a negative parameter stands for the model's own threshold
            runtime.score_threshold if runtime.score_threshold >= 0 else defaults.score_threshold,
            runtime.overlap_threshold if runtime.overlap_threshold >= 0 else defaults.overlap_threshold,
            runtime.semantic_rule,
        )
        t1 = time.perf_counter()
        result = self.segmenter.segment(image, encoding, options)
        t2 = time.perf_counter()
        header = msg.header
        height, width = result.panoptic.shape
        # The largest message first: its delivery overlaps the publishing of the others.
        if runtime.publish_panoptic:
            self._panoptic_pub.publish(array_to_image(result.panoptic, "32SC1", header))
        if runtime.publish_semantic:
            semantic_encoding = "mono8" if result.semantic.dtype == np.uint8 else "mono16"
            self._semantic_pub.publish(array_to_image(result.semantic, semantic_encoding, header))
        if runtime.publish_segments:
            self._segments_pub.publish(segment_array(result, header))
        if runtime.publish_overlay and self._overlay_pub.get_subscription_count() > 0:
            self._overlay_pub.publish(array_to_image(self._overlay(image, encoding, result, runtime.overlay_alpha),
                                                     "rgb8", header))
        camera_info = self._camera_info
        if self.settings.output_resolution == "network" and camera_info is not None:
            self._camera_info_pub.publish(scaled_camera_info(camera_info, height, width, header))
        t3 = time.perf_counter()
        timings = dict(result.timings)
        timings["decode"] = (t1 - t0) * 1e3
        timings["publish"] = (t3 - t2) * 1e3
        self.statistics.frame_processed((time.monotonic() - frame.received_at) * 1e3, timings)

    def _overlay(self, image: np.ndarray, encoding: str, result: SegmentationResult, alpha: float) -> np.ndarray:
        """(H, W, 3) RGB blend of the image and the panoptic colors, at the output maps' size."""
        height, width = result.panoptic.shape
        order = ENCODINGS[encoding][1]
        if image.shape[:2] != (height, width):
            image = cv2.resize(rgb_array(image, encoding), (width, height), interpolation=cv2.INTER_AREA)
            order = (0, 1, 2)
        classes = {s.id: s.class_id for s in result.segments}
        return panoptic_overlay(image, order, result.panoptic, classes, self.segmenter.metadata, alpha)


class SegmentationNode(SegmentationWork, Node):
    """Segments the newest camera image with a Segmenter and publishes label images and segments.

    Args:
        node_name: name of the node (remappable with `__node:=`).
        **kwargs: passed to rclpy.node.Node (context, parameter_overrides, ...).

    Raises:
        StartupError: a parameter is invalid or the model cannot be loaded.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._prepare()
        self._load()
        self._open_outputs(self.create_publisher)
        topic = self._open_input()
        self._start_worker()
        self._log_started(topic)

    def destroy_node(self) -> None:
        """Stop the worker (after the frame it is on, unless stop_waiting() was called), then destroy the node."""
        self._stop_worker()
        super().destroy_node()


def spin_until_shutdown(executor: Executor) -> None:
    """Spin until Ctrl-C, SIGTERM or rclpy.shutdown(); a shutdown is never an error.

    rclpy's signal handler shuts the context down from whichever moment the
    signal lands: between spin()'s check of the context and the building of its
    wait set, rclpy raises RCLError ("the given context is not valid") instead
    of returning. That error on a context that is no longer valid is the
    requested shutdown; on a valid one it is a real failure and propagates.
    """
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except rclpy_implementation.RCLError:
        if executor.context.ok():
            raise


def ros_arguments_error(exc: Exception) -> str:
    """One line from rcl's error about the command line: the reason, without rcl's source locations."""
    text = str(exc).removeprefix("failed to initialize rcl: ")
    text = re.sub(r",? at \S+:\d+", "", text).replace(" Error: error not set", "")
    return bounded(" ".join(text.split()))


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Make the node and spin it until Ctrl-C or SIGTERM: 0; 2 when it cannot start (bad ROS arguments or
    params file, StartupError); 1 when its worker failed. Each failure is one log line, no traceback."""
    try:
        rclpy.init(args=args)
    except rclpy_implementation.RCLError as exc:
        get_logger(NODE_NAME).fatal(
            f"cannot start: invalid ROS arguments: {ros_arguments_error(exc)} (parameters are -p NAME:=VALUE with a "
            "YAML value, -p \"NAME:=''\" for an empty string, or --params-file FILE)"
        )
        return 2
    try:
        node = make_node()
    except StartupError as exc:
        get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    exit_code = 0
    try:
        spin_until_shutdown(executor)
    except WorkerFailed as exc:
        node.get_logger().fatal(str(exc))
        exit_code = 1
    finally:
        # Shutting down: another SIGINT or SIGTERM (a second Ctrl-C, or launch's escalation) stops the wait
        # for the frame in progress instead of raising KeyboardInterrupt out of the worker's join.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: node.stop_waiting())
        node.destroy_node()
        rclpy.try_shutdown()
        # Python restores the default handlers while it finalizes, where a late Ctrl-C would kill the process
        # (exit code -2); ignored ones stay ignored. SIGTERM keeps its default: it still ends a hanging exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return exit_code


def main(args: list[str] | None = None) -> int:
    """Run the segmentation node until Ctrl-C or SIGTERM; 2 when it cannot start, 1 when its worker failed."""
    return run_node(SegmentationNode, args)


if __name__ == "__main__":
    sys.exit(main())
