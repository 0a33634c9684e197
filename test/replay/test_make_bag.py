"""`ros-seg make-bag`: bags in both storages, raw and compressed, read back with rosbags and ReplayBag."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from ros_seg.cli import main
from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.panoptic_ground_truth import ground_truth_panoptic
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.replay.bag_reader import ReplayBag
from ros_seg.replay.bag_types import replay_typestore, stamp_ns
from ros_seg.replay.bag_writer import GT_PANOPTIC_TOPIC, GT_SEGMENTS_TOPIC, GT_SEMANTIC_TOPIC

FRAMES = 3
SIZE = (64, 128)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, FRAMES, split="val", size=SIZE, seed=3, sequence=True)
    return root


def make_bag(*args: str) -> int:
    return main(["make-bag", *args])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_bag_has_frames_camera_info_and_ground_truth(data: Path, tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "bag"
    assert make_bag("--data", str(data), "--out", str(bag), "--storage", storage, "--rate", "10") == 0
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == storage
    assert metadata["message_count"] == 5 * FRAMES

    store = replay_typestore()
    stamps: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        for connection, log_time, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            assert stamp_ns(msg.header) == log_time
            assert msg.header.frame_id == "camera"
            stamps.setdefault(connection.topic, []).append(log_time)
    assert set(stamps) == {"/camera/image_raw", "/camera/camera_info", GT_SEMANTIC_TOPIC, GT_PANOPTIC_TOPIC,
                           GT_SEGMENTS_TOPIC}
    assert len({tuple(v) for v in stamps.values()}) == 1, "every topic has the same stamps"
    assert np.allclose(np.diff(stamps["/camera/image_raw"]), 1e8)

    dataset = CityscapesDataset(data, "val", "panoptic")
    with ReplayBag(bag) as replay:
        assert replay.image_topics == ["/camera/image_raw"] and replay.has_ground_truth
        assert replay.rate_hz("/camera/image_raw") == 10.0
        frames = list(replay.frames("/camera/image_raw"))
        assert [f.index for f in frames] == list(range(FRAMES))
        for frame in frames:
            sample = dataset[frame.index]
            image, encoding = frame.decode()
            assert encoding == "rgb8" and np.array_equal(image, sample["image"])
            panoptic, segments, crowd = ground_truth_panoptic(sample)
            truth = frame.ground_truth
            assert np.array_equal(truth.semantic, sample["semantic"])
            assert np.array_equal(truth.panoptic, panoptic)
            assert truth.segments == segments and sorted(truth.crowd) == sorted(crowd)


def test_segments_and_camera_info_describe_the_frame(data: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    assert make_bag("--data", str(data), "--out", str(bag), "--max-frames", "1", "--frame-id", "cam_front") == 0
    store = replay_typestore()
    with Reader(bag) as reader:
        messages = {c.topic: store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()}
    info, segments = messages["/camera/camera_info"], messages[GT_SEGMENTS_TOPIC]
    assert (info.height, info.width) == SIZE and info.header.frame_id == "cam_front"
    panoptic = np.asarray(messages[GT_PANOPTIC_TOPIC].data).view(np.int32).reshape(SIZE)
    assert (segments.height, segments.width) == SIZE
    for segment in segments.segments:
        rows, cols = np.nonzero(panoptic == segment.id)
        assert segment.area == len(rows)
        assert (segment.bbox_x, segment.bbox_y) == (cols.min(), rows.min())
        assert (segment.bbox_width, segment.bbox_height) == (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
        assert segment.centroid_x == pytest.approx(cols.mean(), abs=1e-3)


@pytest.mark.parametrize(("storage", "image_format"), [("sqlite3", "png"), ("mcap", "jpeg")])
def test_compressed_bag(data: Path, tmp_path: Path, storage: str, image_format: str) -> None:
    bag = tmp_path / "bag"
    assert make_bag("--data", str(data), "--out", str(bag), "--storage", storage, "--compressed", image_format) == 0
    dataset = CityscapesDataset(data, "val", "panoptic")
    with ReplayBag(bag) as replay:
        assert replay.image_topics == ["/camera/image_raw/compressed"]
        for frame in replay.frames(replay.select_image_topic(None)):
            image, encoding = frame.decode()
            rgb = image[:, :, ::-1]
            assert encoding == "bgr8" and frame.message.format == f"rgb8; {image_format} compressed bgr8"
            error = np.abs(rgb.astype(int) - dataset[frame.index]["image"]).mean()
            assert error == 0 if image_format == "png" else error < 12
            assert np.array_equal(frame.ground_truth.semantic, dataset[frame.index]["semantic"])


def test_size_resizes_frames_and_ground_truth(data: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    assert make_bag("--data", str(data), "--out", str(bag), "--size", "32x64", "--camera-topic", "/front/image") == 0
    with ReplayBag(bag) as replay:
        frame = next(replay.frames("/front/image"))
        assert frame.decode()[0].shape == (32, 64, 3)
        truth = frame.ground_truth
        assert truth.semantic.shape == truth.panoptic.shape == (32, 64)
        assert set(np.unique(truth.panoptic).tolist()) - {0} == set(truth.segments)
        assert "/front/camera_info" in replay.topics


def test_plain_image_folder_gives_a_bag_without_ground_truth(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"frame_{i}.png"), rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    bag = tmp_path / "bag"
    assert make_bag("--data", str(folder), "--out", str(bag)) == 0
    with ReplayBag(bag) as replay:
        assert not replay.has_ground_truth
        frames = list(replay.frames("/camera/image_raw"))
        assert len(frames) == 2 and frames[0].ground_truth is None
        assert frames[1].decode()[0].shape == (24, 40, 3)


def test_bad_inputs_exit_2_with_one_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert make_bag("--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a")) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_bag("--data", str(empty), "--out", str(tmp_path / "b")) == 2
    assert "holds no images" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    assert make_bag("--data", str(data), "--out", str(taken)) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and len(err.strip().splitlines()) == 1
