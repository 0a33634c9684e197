"""Frame statistics of the segmentation node and their diagnostic_msgs report.

The node's threads count frames here (received, processed, dropped, rejected,
failed, skipped while nobody subscribes to an output; rejections also per kind
of fault, and refused camera_info messages) and record each processed frame's
latency and stage timings; once a second the node turns a snapshot into a
DiagnosticArray for /diagnostics: input and output rates, latency p50/p95,
stage means, counts, the last error (at most ERROR_CHARS characters, so a
hostile message cannot make every report large), and the model, backend and
device. The status is WARN after bad input was rejected, ERROR after a frame
failed (an exception while segmenting or publishing it; the node goes on), and
ERROR for good once the worker stopped.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ros_seg.inference.image_input import IMAGE_FAULTS

LATENCY_WINDOW = 100  # frames over which latency percentiles and stage means are taken
ERROR_CHARS = 300  # longest error text kept for reports and logs


def bounded(text: str) -> str:
    """`text` cut to ERROR_CHARS characters (marked with '...')."""
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


class FrameStatistics:
    """Thread-safe frame counters and recent per-frame timings.

    Every received frame ends up counted once as processed, dropped (replaced
    by a newer frame before it was processed), rejected (bad input), failed
    (error while segmenting or publishing) or skipped (nobody subscribed to an
    output, so the model did not run); at most one more is pending.

    Args:
        status_name: name of the DiagnosticStatus, e.g. "ros_seg: segmentation_node (/camera/seg)".
        hardware_id: the device the model runs on.
        details: fixed key/values reported with every status (model, backend, ...).
    """

    def __init__(self, status_name: str, hardware_id: str, details: dict[str, str]) -> None:
        self.status_name = status_name
        self.hardware_id = hardware_id
        self.details = dict(details)
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.rejected = 0
        self.failed = 0
        self.skipped = 0
        self.rejected_by_fault = dict.fromkeys(IMAGE_FAULTS, 0)
        self.camera_info_rejected = 0
        self.worker_error = ""  # why the worker stopped; the node is then ending
        self._idle = False  # the newest frame was skipped: nobody subscribes
        self.last_error = ""
        self.last_failure = ""
        self._errors_at_last_report = 0
        self._failed_at_last_report = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._timings: deque[dict[str, float]] = deque(maxlen=LATENCY_WINDOW)
        self._last_report = (time.monotonic(), 0, 0)  # (time, received, processed)

    def frame_received(self, replaced_pending: bool) -> None:
        """A frame arrived; `replaced_pending` when it displaced one not processed yet."""
        with self._lock:
            self.received += 1
            self.dropped += int(replaced_pending)

    def frame_rejected(self, reason: str, fault: str) -> None:
        """A frame was bad input; `fault` is its kind, one of IMAGE_FAULTS."""
        with self._lock:
            self.rejected += 1
            self.rejected_by_fault[fault] += 1
            self.last_error = bounded(reason)

    def frame_failed(self, reason: str) -> None:
        """Segmenting or publishing a frame raised an error: the next report is an ERROR."""
        with self._lock:
            self.failed += 1
            self.last_error = self.last_failure = bounded(reason)

    def camera_info_refused(self, reason: str) -> None:
        """A camera_info message could not be used (zero size); frames go on without it."""
        with self._lock:
            self.camera_info_rejected += 1
            self.last_error = bounded(reason)

    def worker_failed(self, reason: str) -> None:
        """The worker thread stopped on an error it could not recover from: every later report is an ERROR."""
        with self._lock:
            self.worker_error = self.last_error = bounded(reason)

    def frame_skipped(self) -> None:
        """A frame was not segmented because nobody subscribes to any output."""
        with self._lock:
            self.skipped += 1
            self._idle = True

    def frame_processed(self, latency_ms: float, timings: dict[str, float]) -> None:
        """A frame's outputs were published `latency_ms` after it arrived; `timings` are its stages in ms."""
        with self._lock:
            self.processed += 1
            self._idle = False
            self._latencies.append(latency_ms)
            self._timings.append(dict(timings))

    def recent_timings(self) -> list[dict[str, float]]:
        """Stage timings (ms) of the most recent processed frames, oldest first."""
        with self._lock:
            return [dict(t) for t in self._timings]

    def counts(self) -> dict[str, int]:
        """Frame counts so far."""
        with self._lock:
            return {
                "received": self.received,
                "processed": self.processed,
                "dropped": self.dropped,
                "rejected": self.rejected,
                "failed": self.failed,
                "skipped": self.skipped,
                **{f"rejected_{fault}": n for fault, n in self.rejected_by_fault.items()},
                "camera_info_rejected": self.camera_info_rejected,
            }

    def report(self, stamp: Time) -> DiagnosticArray:
        """The statistics as a DiagnosticArray; rates cover the time since the previous report."""
        now = time.monotonic()
        with self._lock:
            last_time, last_received, last_processed = self._last_report
            elapsed = max(now - last_time, 1e-6)
            input_rate = (self.received - last_received) / elapsed
            output_rate = (self.processed - last_processed) / elapsed
            self._last_report = (now, self.received, self.processed)
            latencies = np.asarray(self._latencies, dtype=np.float64)
            stage_names = sorted({name for t in self._timings for name in t})
            stage_means = {
                name: float(np.mean([t[name] for t in self._timings if name in t])) for name in stage_names
            }
            errors = self.rejected + self.failed + self.camera_info_rejected
            new_errors = errors - self._errors_at_last_report
            new_failures = self.failed - self._failed_at_last_report
            self._errors_at_last_report, self._failed_at_last_report = errors, self.failed
            values = {
                "input_rate_hz": f"{input_rate:.2f}",
                "output_rate_hz": f"{output_rate:.2f}",
                "latency_p50_ms": f"{np.percentile(latencies, 50):.1f}" if latencies.size else "",
                "latency_p95_ms": f"{np.percentile(latencies, 95):.1f}" if latencies.size else "",
                "frames_received": str(self.received),
                "frames_processed": str(self.processed),
                "frames_dropped": str(self.dropped),
                "frames_rejected": str(self.rejected),
                "frames_failed": str(self.failed),
                "frames_skipped_no_subscribers": str(self.skipped),
                **{f"frames_rejected_{fault}": str(n) for fault, n in self.rejected_by_fault.items()},
                "camera_info_rejected": str(self.camera_info_rejected),
                "last_error": self.last_error,
            }
            values.update({f"{name}_ms": f"{mean:.1f}" for name, mean in stage_means.items()})
            if self.worker_error:
                level, message = DiagnosticStatus.ERROR, f"stopped: the worker failed: {self.worker_error}"
            elif new_failures:
                level, message = DiagnosticStatus.ERROR, f"{new_failures} frame(s) failed: {self.last_failure}"
            elif new_errors:
                level, message = DiagnosticStatus.WARN, f"{new_errors} bad input(s) rejected: {self.last_error}"
            elif self.received == 0:
                level, message = DiagnosticStatus.OK, "waiting for images"
            elif self._idle:
                level, message = DiagnosticStatus.OK, "idle: nobody subscribes to an output, the model does not run"
            else:
                level, message = DiagnosticStatus.OK, "segmenting"
        values.update(self.details)
        status = DiagnosticStatus(
            level=level,
            name=self.status_name,
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status = [status]
        return array
