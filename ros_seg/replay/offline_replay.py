"""Offline replay: every frame of a bag through a Segmenter in this process, none dropped.

Accuracy is scored against the bag's ground-truth topics or, with `gt_dir`,
against a Cityscapes-layout folder whose frames match the bag's in order.
The wall time is split into bag I/O and decoding, the model (the Segmenter's
whole `segment` call) and scoring, so the report shows how much of a replay is
spent outside the model. A frame's latency is its `segment` call.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from ros_seg.inference.image_input import ENCODINGS
from ros_seg.inference.result import SegmentationResult
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.replay.bag_reader import ReplayBag, check_ground_truth_size
from ros_seg.replay.bag_types import GroundTruth
from ros_seg.replay.bag_writer import FrameSource, frame_source
from ros_seg.replay.replay_report import AccuracyScorer, OverlaySampler, ReplayResult


class FrameSegmenter(Protocol):
    """What offline replay needs of a segmenter (ros_seg.inference.segmenter.Segmenter is one)."""

    metadata: ClassMetadata

    def segment(self, image: np.ndarray, encoding: str) -> SegmentationResult:
        """Segment one (H, W, C) uint8 image in `encoding`."""


def _truth_from_folder(source: FrameSource, index: int) -> GroundTruth:
    """Ground truth of bag frame `index` from the `--gt` folder's frame of the same position."""
    if index >= source.count:
        raise ValueError(f"the --gt folder has {source.count} frames but the bag has more: they must match in order")
    truth = source.frame(index).ground_truth
    if truth is None:
        raise ValueError("the --gt folder has no ground truth (expected the Cityscapes layout with gtFine/)")
    return truth


def _rgb(image: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) image in `encoding` -> (H, W, 3) RGB."""
    return image if encoding == "rgb8" else image[:, :, list(ENCODINGS[encoding][1])]


def replay_offline(
    bag: ReplayBag,
    segmenter: FrameSegmenter,
    topic: str,
    environment: dict,
    gt_dir: Path | None = None,
    gt_split: str = "val",
    max_frames: int | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Segment every frame of `topic` and score it; Ctrl-C ends early with `interrupted` set.

    Args:
        bag: the open bag.
        segmenter: the model (or any object with `metadata` and `segment`).
        topic: camera topic of the bag.
        environment: the report's environment entry.
        gt_dir: Cityscapes-layout folder whose ground truth replaces the bag's.
        gt_split: split of `gt_dir`.
        max_frames: replay at most this many frames.
        progress: show a progress bar.
    """
    truth_source = frame_source(Path(gt_dir), gt_split, segmenter.metadata) if gt_dir is not None else None
    total = bag.frame_count(topic) if max_frames is None else min(max_frames, bag.frame_count(topic))
    scorer = AccuracyScorer(segmenter.metadata)
    overlays = OverlaySampler(total, segmenter.metadata)
    result = ReplayResult(mode="offline", environment=environment)
    split = {"bag_io_decode": 0.0, "model": 0.0, "scoring": 0.0}
    frames = bag.frames(topic, max_frames)
    bar = tqdm(total=total, desc="replaying offline", unit="frame", disable=not progress)
    try:
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            image, encoding = frame.decode()
            truth = _truth_from_folder(truth_source, frame.index) if truth_source is not None else frame.ground_truth
            if truth_source is not None:
                check_ground_truth_size(truth, image.shape[:2], frame.index)
            result.frames_in += 1
            t1 = time.perf_counter()
            prediction = segmenter.segment(image, encoding)
            t2 = time.perf_counter()
            result.frames_processed += 1
            result.latencies_ms.append((frame.index, (t2 - t1) * 1e3))
            result.output_times_s.append(t2)
            if truth is not None:
                classes = {s.id: s.class_id for s in prediction.segments}
                scorer.update(prediction.semantic, prediction.panoptic, classes, truth)
            if overlays.wants(frame.index):
                overlays.add(frame.index, _rgb(image, encoding), prediction.semantic)
            t3 = time.perf_counter()
            split["bag_io_decode"] += t1 - t0
            split["model"] += t2 - t1
            split["scoring"] += t3 - t2
            bar.update()
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    result.accuracy = scorer.summary()
    result.frames_scored = scorer.frames
    result.overlays = overlays.overlays
    result.time_split_s = split
    return result
