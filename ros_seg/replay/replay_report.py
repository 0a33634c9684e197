"""The replay evaluation report: accuracy, timing and environment as JSON, Markdown and plots.

Both replay modes fill a `ReplayResult` (predictions are scored as they come
with an `AccuracyScorer`; a few frames are kept as overlays by an
`OverlaySampler`) and `write_report` turns it into, under the output folder:

- report.json: miou, per_class_iou {name: value}, pq, sq, rq, pq_things,
  pq_stuff (percent; null where undefined or without ground truth),
  frames_in, frames_processed, frames_dropped, frames_scored,
  latency_ms {p50, p95, p99, max}, output_rate_hz, jitter_ms, time_split_s
  (offline), interrupted, environment {cpu, gpu, torch, ros_distro, rmw,
  model, backend, precision, input_resolution, bag_frames, bag_rate_hz, qos, ...};
- report.md: the same for people;
- latency_over_time.png, latency_histogram.png, per_class_iou.png and
  overlays.png (a grid of sample frames with the predicted classes blended in).

Jitter is the mean absolute difference between the latencies of consecutive
processed frames (the inter-arrival jitter of RFC 3550 without smoothing).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ros_seg.eval.latency_metrics import latency_stats  # noqa: E402
from ros_seg.eval.panoptic_metrics import PanopticAccumulator  # noqa: E402
from ros_seg.eval.semantic_metrics import SemanticAccumulator  # noqa: E402
from ros_seg.inference.visualize import blend, colorize_semantic  # noqa: E402
from ros_seg.models.class_metadata import ClassMetadata  # noqa: E402
from ros_seg.replay.bag_types import GroundTruth  # noqa: E402

ACCURACY_KEYS = ("miou", "pq", "sq", "rq", "pq_things", "pq_stuff")
OVERLAY_WIDTH = 480
OVERLAY_ALPHA = 0.5


def _json_number(value: float | None, digits: int = 3) -> float | None:
    """A finite float rounded for the report; None for NaN or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


class AccuracyScorer:
    """mIoU and PQ of predictions against ground truth, frame by frame (the `ros-seg eval` metrics).

    Args:
        metadata: the label set of predictions and ground truth.
    """

    def __init__(self, metadata: ClassMetadata) -> None:
        self.metadata = metadata
        self.semantic = SemanticAccumulator(metadata)
        self.panoptic = PanopticAccumulator(metadata)
        self.frames = 0

    def update(self, semantic: np.ndarray, panoptic: np.ndarray, segments: dict[int, int], truth: GroundTruth) -> None:
        """Score one frame: (H, W) predicted train ids and segment ids, segment id -> train id."""
        self.semantic.update(semantic, truth.semantic)
        self.panoptic.update(panoptic, segments, truth.panoptic, truth.segments, truth.crowd)
        self.frames += 1

    def summary(self) -> dict[str, Any]:
        """miou, per_class_iou, pq, sq, rq, pq_things, pq_stuff; all None before any frame was scored."""
        if self.frames == 0:
            return {"miou": None, "per_class_iou": {name: None for name in self.metadata.names},
                    **{key: None for key in ACCURACY_KEYS[1:]}}
        semantic = self.semantic.summary()
        panoptic = self.panoptic.summary()
        return {
            "miou": _json_number(semantic["miou"]),
            "per_class_iou": {name: _json_number(v) for name, v in semantic["per_class_iou"].items()},
            **{key: _json_number(panoptic[key]) for key in ACCURACY_KEYS[1:]},
        }


class OverlaySampler:
    """Keeps up to `count` evenly spaced frames as small overlays of the predicted classes.

    Args:
        total_frames: how many frames the replay will see (to spread the samples).
        metadata: class colors.
        count: most overlays kept.
    """

    def __init__(self, total_frames: int, metadata: ClassMetadata, count: int = 6) -> None:
        self.metadata = metadata
        self.wanted = set(np.linspace(0, max(total_frames - 1, 0), num=min(count, max(total_frames, 1)),
                                      dtype=int).tolist())
        self.overlays: list[tuple[int, np.ndarray]] = []

    def wants(self, index: int) -> bool:
        """True when frame `index` is one of the samples."""
        return index in self.wanted

    def add(self, index: int, image_rgb: np.ndarray, semantic: np.ndarray) -> None:
        """Keep frame `index`: its (H, W, 3) RGB image blended with the colors of its (H, W) predicted classes."""
        height, width = semantic.shape
        if image_rgb.shape[:2] != (height, width):
            image_rgb = cv2.resize(image_rgb, (width, height), interpolation=cv2.INTER_AREA)
        overlay = blend(np.ascontiguousarray(image_rgb), colorize_semantic(semantic, self.metadata), OVERLAY_ALPHA)
        scale = min(1.0, OVERLAY_WIDTH / width)
        if scale < 1.0:
            overlay = cv2.resize(overlay, (OVERLAY_WIDTH, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        self.overlays.append((index, overlay))


@dataclass
class ReplayResult:
    """Everything a replay measured; `write_report` writes it out.

    Args:
        mode: "offline" or "live".
        frames_in: frames read from the bag (offline) or published to the node (live).
        frames_processed: frames with a prediction.
        latencies_ms: (frame index, latency in ms) per processed frame, in output order.
        output_times_s: monotonic time of each prediction, in output order.
        accuracy: AccuracyScorer.summary() of the scored frames.
        frames_scored: frames scored against ground truth.
        environment: machine, software, model and bag description.
        overlays: (frame index, RGB overlay) samples.
        time_split_s: seconds spent per stage (offline: bag I/O and decode, model, scoring).
        interrupted: True when Ctrl-C stopped the replay early.
    """

    mode: str
    frames_in: int = 0
    frames_processed: int = 0
    latencies_ms: list[tuple[int, float]] = field(default_factory=list)
    output_times_s: list[float] = field(default_factory=list)
    accuracy: dict[str, Any] = field(default_factory=dict)
    frames_scored: int = 0
    environment: dict[str, Any] = field(default_factory=dict)
    overlays: list[tuple[int, np.ndarray]] = field(default_factory=list)
    time_split_s: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False


def jitter_ms(latencies: list[float]) -> float | None:
    """Mean absolute difference of consecutive latencies (ms); None for fewer than two."""
    if len(latencies) < 2:
        return None
    return float(np.abs(np.diff(np.asarray(latencies, dtype=np.float64))).mean())


def output_rate_hz(times_s: list[float]) -> float | None:
    """Predictions per second between the first and the last one; None for fewer than two."""
    if len(times_s) < 2 or times_s[-1] <= times_s[0]:
        return None
    return (len(times_s) - 1) / (times_s[-1] - times_s[0])


def report_dict(result: ReplayResult) -> dict[str, Any]:
    """The report.json object of a replay."""
    latencies = [ms for _, ms in result.latencies_ms]
    stats = latency_stats(latencies) if latencies else {}
    report: dict[str, Any] = dict(result.accuracy)
    report.update({
        "mode": result.mode,
        "frames_in": result.frames_in,
        "frames_processed": result.frames_processed,
        "frames_dropped": result.frames_in - result.frames_processed,
        "frames_scored": result.frames_scored,
        "latency_ms": {key: stats.get(key) for key in ("p50", "p95", "p99", "max")},
        "output_rate_hz": _json_number(output_rate_hz(result.output_times_s)),
        "jitter_ms": _json_number(jitter_ms(latencies)),
    })
    if result.time_split_s:
        total = sum(result.time_split_s.values())
        outside = total - result.time_split_s.get("model", 0.0)
        report["time_split_s"] = {key: round(value, 3) for key, value in result.time_split_s.items()}
        report["share_outside_model"] = _json_number(outside / total if total > 0 else None, 4)
    report["interrupted"] = result.interrupted
    report["environment"] = result.environment
    return report


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown_report(report: dict[str, Any], plots: list[str]) -> str:
    """report.md: summary, timing, per-class IoU, environment and the plots."""
    env = report["environment"]
    title = f"# Replay evaluation ({report['mode']}): {env.get('model')} on {env.get('bag')}"
    lines = [title, ""]
    if report["interrupted"]:
        lines += ["**Interrupted (Ctrl-C): partial results.**", ""]
    lines += ["| metric | value |", "|---|---|"]
    for key in (*ACCURACY_KEYS, "frames_in", "frames_processed", "frames_dropped", "frames_scored",
                "output_rate_hz", "jitter_ms"):
        lines.append(f"| {key} | {_value(report[key])} |")
    for key, value in report["latency_ms"].items():
        lines.append(f"| latency {key} (ms) | {_value(value)} |")
    if "time_split_s" in report:
        for key, value in report["time_split_s"].items():
            lines.append(f"| time in {key} (s) | {_value(value)} |")
        lines.append(f"| share of time outside the model | {_value(report['share_outside_model'])} |")
    lines += ["", "| class | IoU (%) |", "|---|---|"]
    lines += [f"| {name} | {_value(value)} |" for name, value in report["per_class_iou"].items()]
    lines += ["", "## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_value(value)} |" for key, value in env.items()]
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _save(figure: plt.Figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def write_plots(out: Path, result: ReplayResult, per_class_iou: dict[str, float | None]) -> list[str]:
    """PNG plots of latency over time, the latency histogram, per-class IoU and sample overlays; their names."""
    written = []
    if result.latencies_ms:
        index, latency = zip(*result.latencies_ms)
        figure, axes = plt.subplots(figsize=(8, 3.5))
        axes.plot(index, latency, marker=".", linewidth=1)
        axes.set(xlabel="frame", ylabel="latency (ms)", title=f"Latency per frame ({result.mode})")
        axes.grid(alpha=0.3)
        written.append(_save(figure, out / "latency_over_time.png"))
        figure, axes = plt.subplots(figsize=(6, 3.5))
        axes.hist(latency, bins=min(50, max(5, len(latency) // 2)))
        axes.set(xlabel="latency (ms)", ylabel="frames", title="Latency histogram")
        written.append(_save(figure, out / "latency_histogram.png"))
    if any(v is not None for v in per_class_iou.values()):
        names = list(per_class_iou)
        values = [per_class_iou[n] if per_class_iou[n] is not None else 0.0 for n in names]
        figure, axes = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
        axes.barh(names, values)
        axes.invert_yaxis()
        axes.set(xlabel="IoU (%)", xlim=(0, 100), title="IoU per class (0 drawn for undefined)")
        written.append(_save(figure, out / "per_class_iou.png"))
    if result.overlays:
        columns = min(3, len(result.overlays))
        rows = -(-len(result.overlays) // columns)
        height, width = result.overlays[0][1].shape[:2]
        figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, rows * 4 * height / width + 0.6),
                                    squeeze=False)
        for axis in axes.ravel():
            axis.axis("off")
        for axis, (index, overlay) in zip(axes.ravel(), result.overlays):
            axis.imshow(overlay)
            axis.set_title(f"frame {index}", fontsize=9)
        written.append(_save(figure, out / "overlays.png"))
    return written


def write_report(out: Path, result: ReplayResult) -> dict[str, Any]:
    """Write report.json, report.md and the plots under `out` (created); returns the report object."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = report_dict(result)
    plots = write_plots(out, result, report["per_class_iou"])
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(report, plots))
    return report
