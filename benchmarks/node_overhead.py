"""Node overhead: publish-to-receipt of every output, minus the model's own time.

    source scripts/env.sh && python benchmarks/node_overhead.py [--frames 10] [--size 1024x2048] \
        [--network-size 512x1024] [--weights models/pem_stdc1_synth.pt]

The segmentation node (pem_stdc1 with the demo checkpoint by default, CPU) runs
in this process on its own executor thread, as rclpy nodes are often composed;
a client node publishes one rgb8 frame at a time — a synthetic street scene
(`ros-seg synth`'s renderer) of the input size, so that a trained model sees
what it was trained on — and waits for `semantic`, `panoptic`, `segments` (and
`overlay`, in the second pass) carrying its stamp. With --network-size the node
resizes images to that size before the network and its maps back to the input
size (node parameters network_height/network_width). Per frame:

    end to end    = receipt of the last output - publish
    overhead      = end to end - model inference (the Segmenter's `infer`)
    node overhead = end to end - the whole Segmenter (pre-process, infer, post-process)

It also times building the input Image message two ways: through the
constructor with bytes, and the copy-once path of image_conversion.array_to_image.
Results: benchmarks/results/node_overhead_net<H>x<W>.{json,md} (network size).
Random weights (--weights none) give noise-like masks whose boundaries are
everywhere: the worst case of post-processing, not what a deployed model does.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_seg.data.synthetic_scenes import synthesize_drive
from ros_seg.eval.latency_metrics import latency_stats
from ros_seg.eval.machine_info import machine_info
from ros_seg.msg import SegmentArray
from ros_seg.ros.image_conversion import array_to_image
from ros_seg.ros.segmentation_node import SegmentationNode

RESULTS = Path(__file__).resolve().parent / "results"
DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "pem_stdc1_synth.pt"
TIMEOUT_S = 120.0


def message_build_ms(pixels: np.ndarray, repeats: int = 10) -> dict[str, float]:
    """Median ms to build an rgb8 Image of `pixels`: constructor with bytes vs array_to_image."""
    height, width, _ = pixels.shape
    samples: dict[str, list[float]] = {"constructor_bytes": [], "array_to_image": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        Image(height=height, width=width, encoding="rgb8", step=3 * width, data=pixels.tobytes())
        t1 = time.perf_counter()
        array_to_image(pixels, "rgb8", Header())
        t2 = time.perf_counter()
        samples["constructor_bytes"].append((t1 - t0) * 1e3)
        samples["array_to_image"].append((t2 - t1) * 1e3)
    return {k: round(float(np.median(v)), 3) for k, v in samples.items()}


class OutputWaiter:
    """Client node that records when each output topic delivers each stamp."""

    def __init__(self, node: Node, topics: dict[str, type]) -> None:
        self.node = node
        self.arrivals: dict[str, dict[int, float]] = {}
        for topic, msg_type in topics.items():
            self.subscribe(topic, msg_type)

    def subscribe(self, topic: str, msg_type: type) -> None:
        arrivals = self.arrivals.setdefault(topic, {})
        self.node.create_subscription(
            msg_type, topic, lambda msg: arrivals.setdefault(msg.header.stamp.sec, time.perf_counter()), 2
        )

    def last_arrival(self, stamp_sec: int) -> float | None:
        times = [a.get(stamp_sec) for a in self.arrivals.values()]
        return None if None in times else max(times)


def run_pass(node: SegmentationNode, client: Node, executor: SingleThreadedExecutor, waiter: OutputWaiter,
             pixels: np.ndarray, first_stamp: int, frames: int, warmup: int) -> dict:
    publisher = client.create_publisher(Image, "image", 2)
    end = time.monotonic() + TIMEOUT_S
    while publisher.get_subscription_count() == 0 and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    rows: list[dict[str, float]] = []
    for i in range(warmup + frames):
        stamp = first_stamp + i
        header = Header(frame_id="camera")
        header.stamp.sec = stamp
        msg = array_to_image(pixels, "rgb8", header)
        sent = time.perf_counter()
        publisher.publish(msg)
        while waiter.last_arrival(stamp) is None:
            if time.monotonic() > end:
                raise TimeoutError(f"no outputs for frame {stamp} from the node")
            executor.spin_once(timeout_sec=0.01)
        total = (waiter.last_arrival(stamp) - sent) * 1e3
        if i < warmup:
            continue
        timings = node.statistics.recent_timings()[-1]
        segmenter = timings["preprocess"] + timings["infer"] + timings["postprocess"]
        rows.append({
            "end_to_end": total,
            "infer": timings["infer"],
            "overhead": total - timings["infer"],
            "node_overhead": total - segmenter,
            "preprocess": timings["preprocess"],
            "postprocess": timings["postprocess"],
            "decode": timings["decode"],
            "publish": timings["publish"],
        })
    client.destroy_publisher(publisher)
    return {key: latency_stats([r[key] for r in rows]) for key in rows[0]}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Segmentation node overhead",
        "",
        f"`{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads; torch {m['torch']}, "
        f"Python {m['python']}, {m['os']}. Input {result['size'][0]}x{result['size'][1]} rgb8, "
        f"{result['model']} ({result['weights']}) at network size {result['network_size'][0]}x"
        f"{result['network_size'][1]} on {result['device']}, {result['frames']} frames per pass (p50 / p95 ms); "
        f"load average before / after: {result['load_average'][0]:.1f} / {result['load_average'][1]:.1f}.",
        "",
        "overhead = end to end - model inference; node overhead = end to end - whole Segmenter "
        "(pre-process + inference + post-process incl. resize to the input size).",
        "",
        "| pass | end to end | inference | **overhead** | Segmenter post-process | Segmenter pre-process "
        "| node decode | node publish | node overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in result["passes"].items():
        cells = [f"{p[k]['p50']:.1f} / {p[k]['p95']:.1f}" for k in
                 ("end_to_end", "infer", "overhead", "postprocess", "preprocess", "decode", "publish", "node_overhead")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    b = result["input_message_build_ms"]
    lines += [
        "",
        f"Building the {result['size'][0]}x{result['size'][1]} rgb8 input Image: constructor with bytes "
        f"{b['constructor_bytes']:.2f} ms, array_to_image (one copy) {b['array_to_image']:.2f} ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=10, help="timed frames per pass")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames first")
    parser.add_argument("--size", default="1024x2048", help="input HxW")
    parser.add_argument("--network-size", default=None, help="HxW the node resizes to (default: the input size)")
    parser.add_argument("--model", default="pem_stdc1")
    parser.add_argument("--weights", default=str(DEMO_WEIGHTS), help="checkpoint, or 'none' for random weights")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))
    height, width = (int(v) for v in args.size.split("x"))
    net_h, net_w = (int(v) for v in (args.network_size or args.size).split("x"))
    pixels = synthesize_drive(np.random.default_rng(5), (height, width)).render(0).image

    load_before = os.getloadavg()[0]
    rclpy.init()
    overrides = [Parameter("device", value="cpu"), Parameter("model", value=args.model)]
    if args.weights != "none":
        overrides.append(Parameter("weights", value=args.weights))
    if args.network_size:
        overrides += [Parameter("network_height", value=net_h), Parameter("network_width", value=net_w)]
    node = SegmentationNode(parameter_overrides=overrides)
    node_executor = SingleThreadedExecutor()
    node_executor.add_node(node)
    spinner = threading.Thread(target=node_executor.spin, daemon=True)
    spinner.start()
    client = Node("node_overhead_client")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    waiter = OutputWaiter(client, {"semantic": Image, "panoptic": Image, "segments": SegmentArray})
    passes = {"without overlay": run_pass(node, client, executor, waiter, pixels, 1000, args.frames, args.warmup)}
    waiter.subscribe("overlay", Image)
    passes["with overlay"] = run_pass(node, client, executor, waiter, pixels, 2000, args.frames, args.warmup)
    node_executor.shutdown()
    node.destroy_node()
    client.destroy_node()
    rclpy.shutdown()

    command = f"python benchmarks/node_overhead.py --frames {args.frames} --size {args.size} --model {args.model}"
    command += f" --weights {args.weights}" + (f" --network-size {args.network_size}" if args.network_size else "")
    result = {
        "benchmark": "node_overhead",
        "command": command,
        "model": args.model,
        "weights": args.weights,
        "network_size": [net_h, net_w],
        "device": "cpu",
        "size": [height, width],
        "frames": args.frames,
        "passes": passes,
        "input_message_build_ms": message_build_ms(pixels),
        "load_average": [load_before, os.getloadavg()[0]],
        "machine": machine_info(torch.device("cpu")),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"node_overhead_net{net_h}x{net_w}" + ("_random_weights" if args.weights == "none" else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
