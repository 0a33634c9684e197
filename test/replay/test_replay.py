"""`ros-seg replay`: offline scoring through the real report code, live through the real node, error cases.

The offline accuracy check replays the ground truth as the prediction (a
test-only segmenter that answers each frame with its own ground truth), so
mIoU and PQ must be 100. The live test runs the real segmentation_node
(pem_stdc1, random weights, CPU) on a few tiny frames over loopback DDS.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from ros_seg.cli import main
from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.panoptic_ground_truth import ground_truth_panoptic
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.inference.result import Segment, SegmentationResult
from ros_seg.models.class_metadata import CITYSCAPES
from ros_seg.replay.bag_reader import ReplayBag
from ros_seg.replay.bag_types import (
    BAG_VERSION,
    GroundTruth,
    camera_info_message,
    image_message,
    replay_typestore,
    segment_array_message,
)
from ros_seg.replay.bag_writer import GT_PANOPTIC_TOPIC, GT_SEGMENTS_TOPIC, GT_SEMANTIC_TOPIC, write_bag
from ros_seg.replay.offline_replay import replay_offline
from ros_seg.replay.replay_report import jitter_ms, output_rate_hz, write_report

FRAMES = 4
SIZE = (64, 128)
REPORT_FILES = {"report.json", "report.md", "latency_over_time.png", "latency_histogram.png", "per_class_iou.png",
                "overlays.png"}
START_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, FRAMES, split="val", size=SIZE, seed=5, sequence=True)
    return root


class GroundTruthOracle:
    """Test-only segmenter: answers frame i with the ground truth of dataset sample i, in order.

    Args:
        dataset: the dataset the bag was written from.
        interrupt_at: raise KeyboardInterrupt (a user's Ctrl-C) on this frame.
    """

    def __init__(self, dataset: CityscapesDataset, interrupt_at: int | None = None) -> None:
        self.metadata = dataset.metadata
        self.dataset = dataset
        self.interrupt_at = interrupt_at
        self.calls = 0

    def segment(self, image: np.ndarray, encoding: str) -> SegmentationResult:
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        sample = self.dataset[self.calls]
        self.calls += 1
        assert image.shape[:2] == sample["semantic"].shape
        panoptic, segments, _ = ground_truth_panoptic(sample)
        listed = [
            Segment(id=i, class_id=c, class_name=self.metadata.names[c], is_thing=self.metadata.is_thing[c],
                    score=1.0, area=int((panoptic == i).sum()), bbox=(0, 0, 1, 1), centroid=(0.0, 0.0))
            for i, c in segments.items()
        ]
        return SegmentationResult(sample["semantic"], panoptic.astype(np.int32), listed, {})


def write_topics(path: Path, messages: dict[str, list]) -> None:
    """A bag with the given messages per topic, each logged at its header stamp."""
    store = replay_typestore()
    with Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, msgs in messages.items():
            connection = writer.add_connection(topic, msgs[0].__msgtype__, typestore=store)
            for msg in msgs:
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                writer.write(connection, stamp, store.serialize_cdr(msg, msg.__msgtype__))


def ground_truth_messages(truth: GroundTruth, stamp: int) -> dict[str, list]:
    return {
        GT_SEMANTIC_TOPIC: [image_message(truth.semantic, "mono8", stamp, "camera")],
        GT_PANOPTIC_TOPIC: [image_message(truth.panoptic, "32SC1", stamp, "camera")],
        GT_SEGMENTS_TOPIC: [segment_array_message(truth, CITYSCAPES, stamp, "camera")],
    }


def replay(*args: str) -> int:
    return main(["replay", *args])


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("storage", "compressed"), [("mcap", None), ("sqlite3", "png"), ("mcap", "jpeg")])
def test_offline_ground_truth_as_prediction_scores_100(data: Path, tmp_path: Path, storage: str,
                                                       compressed: str | None) -> None:
    bag_path = tmp_path / "bag"
    write_bag(data, bag_path, storage=storage, compressed=compressed, rate_hz=17.0, start_ns=START_NS)
    dataset = CityscapesDataset(data, "val", "panoptic")
    with ReplayBag(bag_path) as bag:
        result = replay_offline(bag, GroundTruthOracle(dataset), bag.select_image_topic(None), {"model": "oracle"})
    report = write_report(tmp_path / "out", result)
    assert report["miou"] == 100.0 and report["pq"] == 100.0 and report["sq"] == 100.0 and report["rq"] == 100.0
    assert report["pq_things"] in (100.0, None) and report["pq_stuff"] == 100.0
    assert all(v in (100.0, None) for v in report["per_class_iou"].values())
    assert report["frames_in"] == report["frames_processed"] == report["frames_scored"] == FRAMES
    assert report["frames_dropped"] == 0
    assert set(report["time_split_s"]) == {"bag_io_decode", "model", "scoring"}
    assert 0.0 <= report["share_outside_model"] <= 1.0
    assert REPORT_FILES <= {p.name for p in (tmp_path / "out").iterdir()}
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report


def test_offline_ground_truth_from_a_folder(data: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    dataset = CityscapesDataset(data, "val", "panoptic")
    for index in range(len(dataset)):
        cv2.imwrite(str(images / f"{index:03d}.png"), dataset[index]["image"][:, :, ::-1])
    write_bag(images, tmp_path / "bag", start_ns=START_NS)
    with ReplayBag(tmp_path / "bag") as bag:
        assert not bag.has_ground_truth
        result = replay_offline(bag, GroundTruthOracle(dataset), "/camera/image_raw", {}, gt_dir=data)
    assert result.accuracy["miou"] == 100.0 and result.accuracy["pq"] == 100.0 and result.frames_scored == FRAMES


def test_ctrl_c_gives_a_partial_report(data: Path, tmp_path: Path) -> None:
    write_bag(data, tmp_path / "bag", start_ns=START_NS)
    dataset = CityscapesDataset(data, "val", "panoptic")
    with ReplayBag(tmp_path / "bag") as bag:
        result = replay_offline(bag, GroundTruthOracle(dataset, interrupt_at=2), "/camera/image_raw", {})
    report = write_report(tmp_path / "out", result)
    assert report["interrupted"] is True and report["frames_processed"] == 2 and report["miou"] == 100.0
    assert "Interrupted" in (tmp_path / "out" / "report.md").read_text()


def test_offline_cli_with_the_real_model(data: Path, tmp_path: Path) -> None:
    write_bag(data, tmp_path / "bag", storage="sqlite3", start_ns=START_NS)
    out = tmp_path / "out"
    assert replay(str(tmp_path / "bag"), "--offline", "--model", "pem_stdc1", "--device", "cpu", "--out", str(out),
                  "--max-frames", "2") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames_processed"] == report["frames_scored"] == 2 and report["mode"] == "offline"
    assert 0.0 <= report["miou"] <= 100.0 and report["latency_ms"]["p50"] > 0
    env = report["environment"]
    assert env["model"] == "pem_stdc1" and env["input_resolution"] == "64x128" and env["bag_frames"] == FRAMES


def test_several_image_topics_need_topic(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sample = CityscapesDataset(data, "val", "panoptic")[0]
    panoptic, segments, _ = ground_truth_panoptic(sample)
    truth = GroundTruth(sample["semantic"], panoptic.astype(np.int32), segments, ())
    messages = {
        "/left/image_raw": [image_message(sample["image"], "rgb8", START_NS, "camera")],
        "/right/image_raw": [image_message(np.ascontiguousarray(sample["image"][:, :, ::-1]), "bgr8", START_NS,
                                           "camera")],
        **ground_truth_messages(truth, START_NS),
    }
    write_topics(tmp_path / "bag", messages)
    args = [str(tmp_path / "bag"), "--offline", "--model", "pem_stdc1", "--device", "cpu"]
    assert replay(*args, "--out", str(tmp_path / "a")) == 2
    err = one_line_error(capsys)
    assert "several image topics" in err and "/left/image_raw" in err and "/right/image_raw" in err
    assert replay(*args, "--out", str(tmp_path / "b"), "--topic", "/right/image_raw") == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["environment"]["bag_topic"] == "/right/image_raw" and report["frames_scored"] == 1
    assert replay(*args, "--out", str(tmp_path / "c"), "--topic", "/nope") == 2
    assert "no image topic '/nope'" in one_line_error(capsys)


def test_bad_bags_exit_2_with_one_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--offline", "--model", "pem_stdc1", "--device", "cpu", "--out", str(tmp_path / "out")]
    assert replay(str(tmp_path / "missing"), *args) == 2
    assert "does not exist" in one_line_error(capsys)

    good = tmp_path / "good"
    write_bag(data, good, start_ns=START_NS)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text((good / "metadata.yaml").read_text())
    (corrupt / "good.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(300))
    assert replay(str(corrupt), *args) == 2
    assert "corrupt" in one_line_error(capsys)
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(os.urandom(100))
    assert replay(str(garbage), *args) == 2
    assert "corrupt" in one_line_error(capsys)

    no_images = tmp_path / "no_images"
    write_topics(no_images, {"/camera/camera_info": [camera_info_message(*SIZE, START_NS, "camera")]})
    assert replay(str(no_images), *args) == 2
    assert "no sensor_msgs/Image or CompressedImage topic" in one_line_error(capsys)

    sample = CityscapesDataset(data, "val", "panoptic")[0]
    small = GroundTruth(sample["semantic"][::2, ::2].copy(), np.zeros((32, 64), np.int32), {}, ())
    mismatch = tmp_path / "mismatch"
    write_topics(mismatch, {"/camera/image_raw": [image_message(sample["image"], "rgb8", START_NS, "camera")],
                            **ground_truth_messages(small, START_NS)})
    assert replay(str(mismatch), *args) == 2
    assert "ground truth of frame 0 is 64x32 but its image is 128x64" in one_line_error(capsys)


def test_live_replay_through_the_real_node(data: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(data, bag, rate_hz=4.0, start_ns=START_NS)
    out, record = tmp_path / "out", tmp_path / "outputs"
    command = [sys.executable, "-m", "ros_seg.cli", "replay", str(bag), "--live", "--model", "pem_stdc1",
               "--device", "cpu", "--out", str(out), "--record", str(record), "--rate", "2"]
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and os.environ["ROS_DOMAIN_ID"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "live" and report["frames_in"] == FRAMES
    assert report["frames_in"] == report["frames_processed"] + report["frames_dropped"]
    assert report["frames_processed"] >= 1 and report["frames_scored"] == report["frames_processed"]
    latency = report["latency_ms"]
    assert set(latency) == {"p50", "p95", "p99", "max"} and 0 < latency["p50"] <= latency["max"]
    if report["frames_processed"] >= 2:
        # Mean |difference| of consecutive latencies: at most the spread of the latencies.
        assert report["output_rate_hz"] > 0 and 0 <= report["jitter_ms"] <= latency["max"]
    env = report["environment"]
    assert env["dds_discovery_range"] == "LOCALHOST" and env["ros_domain_id"] == int(os.environ["ROS_DOMAIN_ID"])
    assert env["rmw"] and env["qos"] and env["bag_rate_hz"] == 4.0
    assert {"report.json", "report.md", "latency_over_time.png", "node.log"} <= {p.name for p in out.iterdir()}
    with ReplayBag(record) as recorded:
        assert recorded.frame_count("/ros_seg_replay/segments") >= report["frames_processed"]
        assert set(recorded.topics) == {"/ros_seg_replay/semantic", "/ros_seg_replay/panoptic",
                                        "/ros_seg_replay/segments"}


def test_jitter_and_output_rate_of_known_series() -> None:
    """Jitter: mean absolute difference of consecutive latencies; rate: outputs per second between the first
    and the last output."""
    assert jitter_ms([10.0, 13.0, 11.0, 11.0]) == pytest.approx((3 + 2 + 0) / 3)
    assert jitter_ms([5.0]) is None
    assert output_rate_hz([1.0, 1.5, 2.0, 3.0]) == pytest.approx(3 / 2.0)
    assert output_rate_hz([1.0]) is None
