"""`ros-seg eval`, offline `ros-seg replay` and the segmentation node publish the same label maps for the
same frames: one Segmenter pipeline (pre-processing, network, post-processing with the authors' rules)
behind all three. The demo checkpoint on two synthetic frames, each tool with its defaults."""
from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from PIL import Image as PILImage
from sensor_msgs.msg import Image

from ros_seg.cli import main
from ros_seg.inference.segmenter import Segmenter

from repo_paths import REPO_ROOT
from test_segmentation_node import Client, image_msg, stamp_of, start_node, stop_node

pytestmark = pytest.mark.slow  # a check against a real reference: in CI, not in the quick loop

DEMO = REPO_ROOT / "models" / "pem_stdc1_synth.pt"
FRAMES = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DEMO.is_file():
        pytest.skip(f"demo checkpoint {DEMO} is not available")
    root = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(root), "--n", str(FRAMES), "--split", "val", "--size", "128x256",
                 "--seed", "5", "--workers", "1"]) == 0
    return root


def _recorded_maps(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(semantic, panoptic) of every image the command segments, in order."""
    maps = []
    segment = Segmenter.segment

    def recording(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = segment(self, *args, **kwargs)
        maps.append((result.semantic.copy(), result.panoptic.copy()))
        return result

    with monkeypatch.context() as patch:
        patch.setattr(Segmenter, "segment", recording)
        assert main(argv) == 0
    return maps


def _outputs_of(client: Client, stamp: tuple[int, int]) -> tuple[Image, Image] | None:
    """The node's semantic and panoptic messages of the frame with `stamp`, once both arrived."""
    found = [client.with_stamp(f"/same_maps/{topic}", stamp) for topic in ("semantic", "panoptic")]
    return (found[0][0], found[1][0]) if all(found) else None


@pytest.fixture(scope="module")
def node_maps(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    images = sorted((data / "leftImg8bit" / "val").rglob("*.png"))
    logs = tmp_path_factory.mktemp("node")
    node = start_node("/same_maps", logs / "node.log", "-p", "device:=cpu", "-p", f"weights:={DEMO}")
    rclpy.init()
    client = Client("same_maps_test")
    try:
        for topic in ("semantic", "panoptic"):
            client.subscribe(f"/same_maps/{topic}", Image)
        publisher = client.node.create_publisher(Image, "/same_maps/image", 10)
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0), "the node did not come up"
        maps = []
        for i, path in enumerate(images, start=1):
            sent = image_msg(np.asarray(PILImage.open(path).convert("RGB")), "rgb8", i)
            outputs = functools.partial(_outputs_of, client, stamp_of(sent))
            for _ in range(30):  # the first frames may go before discovery completes on the node's side
                publisher.publish(sent)
                if client.spin_until(outputs, timeout=2.0):
                    break
            assert outputs(), f"no output for frame {i}: {(logs / 'node.log').read_text()[-2000:]}"
            semantic, panoptic = outputs()
            maps.append((np.frombuffer(semantic.data, np.uint8).reshape(semantic.height, semantic.width),
                         np.frombuffer(panoptic.data, np.int32).reshape(panoptic.height, panoptic.width)))
        yield maps
    finally:
        client.node.destroy_node()
        rclpy.shutdown()
        assert stop_node(node) == 0, (logs / "node.log").read_text()


def test_eval_replay_and_node_give_the_same_maps(
    data: Path, node_maps: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = ["--model", "pem_stdc1", "--weights", str(DEMO)]
    evaluated = _recorded_maps(monkeypatch, ["eval", *weights, "--data", str(data), "--device", "cpu",
                                             "--json", str(tmp_path / "eval.json")])
    bag = tmp_path / "frames.mcap"
    assert main(["make-bag", "--data", str(data), "--out", str(bag)]) == 0
    replayed = _recorded_maps(monkeypatch, ["replay", str(bag), *weights, "--offline", "--device", "cpu",
                                            "--out", str(tmp_path / "replay")])
    assert len(evaluated) == len(replayed) == len(node_maps) == FRAMES
    for (sem_e, pan_e), (sem_r, pan_r), (sem_n, pan_n) in zip(evaluated, replayed, node_maps):
        assert np.array_equal(sem_e, sem_r) and np.array_equal(sem_e, sem_n)
        assert np.array_equal(pan_e, pan_r) and np.array_equal(pan_e, pan_n)
    assert any(pan.any() for _, pan in evaluated), "the frames should hold panoptic segments"
    assert sys.byteorder == "little"  # the node's 32SC1 maps were read as little-endian int32
