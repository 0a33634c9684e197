"""The node's weights: the demo checkpoint as pem_stdc1's default (with its warning), `weights:=zoo:NAME` from
the zoo cache, and a clear refusal naming `ros-seg zoo pull NAME` when the model was not pulled.

Real node processes with real parameters; outputs and diagnostics received over DDS (loopback, the
test domain). The zoo entry is put in the cache by `pull --from-file` with the Mask2Former Cityscapes
file rebuilt from the official-code fixture (its MD5 prefix set to that file's).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from ros_seg.inference.model_zoo import file_digests, pull
from ros_seg.inference.weights_source import demo_checkpoint
from ros_seg.inference.zoo_catalogue import zoo_entry
from ros_seg.ros.node_parameters import parameter_specs
from ros_seg.ros.segmentation_launch import typed_value

from official_reference import M2F, rule_weights, write_model_zoo_pickle

from test_segmentation_node import TIMEOUT, Client, image_msg, random_image, start_node, stop_node  # isort: skip

ZOO_NAME = "m2f_r50_cityscapes_panoptic"
SMALL = ("-p", "device:=cpu", "-p", "network_height:=64", "-p", "network_width:=96")


@pytest.fixture
def client() -> Iterator[Client]:
    rclpy.init()
    c = Client("zoo_weights_test")
    c.subscribe("/diagnostics", DiagnosticArray, 100)
    yield c
    c.node.destroy_node()
    rclpy.shutdown()


def segment_one_frame(client: Client, namespace: str, log: Path) -> dict[str, str]:
    """Publish one frame to the node in `namespace`, wait for its semantic map; the node's diagnostics."""
    client.subscribe(f"{namespace}/semantic", Image)
    publisher = client.node.create_publisher(Image, f"{namespace}/image", 10)
    assert client.spin_until(lambda: publisher.get_subscription_count() > 0
                             and client.node.count_publishers(f"{namespace}/semantic") > 0), log.read_text()
    frame = image_msg(random_image("rgb8", seed=5), "rgb8", 700)
    # Sent until a map comes back: until the node has matched this test's subscription, it skips frames (lazy).
    for _ in range(int(TIMEOUT / 2)):
        publisher.publish(frame)
        if client.spin_until(lambda: bool(client.received[f"{namespace}/semantic"]), timeout=2.0):
            break
    assert client.received[f"{namespace}/semantic"], log.read_text()
    semantic = client.received[f"{namespace}/semantic"][0]
    assert (semantic.height, semantic.width) == (frame.height, frame.width)
    return client.diagnostics(namespace)


def test_pem_stdc1_without_weights_runs_the_demo_checkpoint_and_says_so(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    process = start_node("/demo_default", log, *SMALL)
    try:
        diagnostics = segment_one_frame(client, "/demo_default", log)
    finally:
        assert stop_node(process) == 0
    assert diagnostics["weights"] == str(demo_checkpoint())
    text = log.read_text()
    assert "running the demo checkpoint" in text and "trained on synthetic scenes only" in text
    assert "ros-seg zoo pull m2f_r50_cityscapes_panoptic" in text
    assert "random weights" not in text


def test_zoo_weights_not_pulled_are_refused_naming_the_pull_command(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_SEG_CACHE", str(tmp_path / "empty_cache"))
    log = tmp_path / "node.log"
    process = start_node("/zoo_missing", log, *SMALL, "-p", "model:=m2f_r50", "-p", f"weights:=zoo:{ZOO_NAME}")
    assert process.wait(timeout=TIMEOUT) == 2
    text = log.read_text()
    assert "Traceback" not in text, text
    assert f"parameter 'weights' is 'zoo:{ZOO_NAME}'" in text and f"`ros-seg zoo pull {ZOO_NAME}`" in text, text
    assert not (tmp_path / "empty_cache" / "zoo" / f"{ZOO_NAME}.pt").exists()


def test_launch_argument_accepts_zoo_and_random() -> None:
    weights = next(spec for spec in parameter_specs() if spec.name == "weights")
    assert typed_value(weights, f"zoo:{ZOO_NAME}") == f"zoo:{ZOO_NAME}"
    assert typed_value(weights, "random") == "random"


@pytest.mark.slow
def test_zoo_weights_from_the_cache_run_in_the_node(client: Client, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_SEG_CACHE", str(tmp_path / "cache"))
    official = tmp_path / "model_final_4ab90c.pkl"
    write_model_zoo_pickle(rule_weights(M2F), official)
    entry = dataclasses.replace(zoo_entry(ZOO_NAME), md5_prefix=file_digests(official).md5[:6])
    cached = pull(entry, from_file=official, progress=False, say=lambda line: None)
    official.unlink()
    log = tmp_path / "node.log"
    process = start_node("/zoo", log, *SMALL, "-p", "model:=m2f_r50", "-p", f"weights:=zoo:{ZOO_NAME}")
    try:
        diagnostics = segment_one_frame(client, "/zoo", log)
    finally:
        assert stop_node(process) == 0
    assert diagnostics["model"] == "m2f_r50" and diagnostics["weights"] == str(cached)
    labels = np.frombuffer(bytes(client.received["/zoo/semantic"][0].data), dtype=np.uint8)
    assert labels.max() < 19 or 255 in labels
