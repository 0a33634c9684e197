"""Large frames between processes: the shipped Fast DDS profile against Fast DDS's defaults, in one run.

    source scripts/env.sh && python benchmarks/dds_profile_transport.py [--frames 20] [--size 1024x2048] \
        [--network-size 512x1024] [--weights models/pem_stdc1_synth.pt]

For each configuration a segmentation node process (the demo checkpoint on
the CPU, network at --network-size) and a camera process are started with the
same DDS settings; the camera publishes rgb8 frames of --size one at a time
(the next when the previous frame's outputs arrived or after --frame-timeout
seconds) and records when semantic, panoptic and segments arrive. Per
configuration: frames delivered (all three outputs) and lost, end to end
(publish to the last output) p50/p95, and the overhead: end to end minus the
node's mean model time (its /diagnostics infer_ms). Configurations:

    default, best effort:   no profile, the node's default input QoS (sensor data)
    default, reliable:      no profile, input_qos:=reliable and a reliable camera
    shipped profile, best effort:  config/fastdds_large_frames.xml on both sides, default QoS

Results: benchmarks/results/dds_profile_transport.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PROFILE = ROOT / "config" / "fastdds_large_frames.xml"
DEMO_WEIGHTS = ROOT / "models" / "pem_stdc1_synth.pt"
CONFIGURATIONS = {
    "default, best effort": {"profile": False, "reliable": False},
    "default, reliable": {"profile": False, "reliable": True},
    "shipped profile, best effort": {"profile": True, "reliable": False},
}


def camera(args: argparse.Namespace) -> None:
    """The camera process: publish, wait for the outputs, print one JSON line of results."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ros_seg.data.synthetic_scenes import synthesize_drive
    from ros_seg.msg import SegmentArray
    from ros_seg.ros.image_conversion import array_to_image

    height, width = (int(v) for v in args.size.split("x"))
    pixels = synthesize_drive(np.random.default_rng(5), (height, width)).render(0).image
    rclpy.init()
    node = Node("dds_profile_camera")
    reliability = ReliabilityPolicy.RELIABLE if args.reliable else ReliabilityPolicy.BEST_EFFORT
    publisher = node.create_publisher(Image, "/bench/image", QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                                                        reliability=reliability))
    arrivals: dict[str, dict[int, float]] = {}
    for topic, msg_type in {"semantic": Image, "panoptic": Image, "segments": SegmentArray}.items():
        seen = arrivals.setdefault(topic, {})
        node.create_subscription(msg_type, f"/bench/{topic}",
                                 lambda m, seen=seen: seen.setdefault(m.header.stamp.sec, time.perf_counter()), 2)
    infer_ms: list[float] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "/bench/" in status.name and values.get("infer_ms"):
                infer_ms.append(float(values["infer_ms"]))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    end = time.monotonic() + 120
    while publisher.get_subscription_count() == 0 or node.count_publishers("/bench/segments") == 0:
        assert time.monotonic() < end, "the node did not come up"
        rclpy.spin_once(node, timeout_sec=0.1)
    rclpy.spin_once(node, timeout_sec=1.0)
    latencies, delivered = [], 0
    for i in range(args.warmup + args.frames):
        header = Header(frame_id="camera")
        header.stamp.sec = 1 + i
        sent = time.perf_counter()
        publisher.publish(array_to_image(pixels, "rgb8", header))
        deadline = time.monotonic() + args.frame_timeout
        while time.monotonic() < deadline and not all(1 + i in a for a in arrivals.values()):
            rclpy.spin_once(node, timeout_sec=0.01)
        if i < args.warmup:
            continue
        if all(1 + i in a for a in arrivals.values()):
            delivered += 1
            latencies.append((max(a[1 + i] for a in arrivals.values()) - sent) * 1e3)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"delivered": delivered, "latencies_ms": latencies,
                      "infer_ms": infer_ms[-1] if infer_ms else None}))
    node.destroy_node()
    rclpy.shutdown()


def run_configuration(args: argparse.Namespace, profile: bool, reliable: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if "PROFILES_FILE" not in k}
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    net_h, net_w = (int(v) for v in args.network_size.split("x"))
    node_command = [sys.executable, "-m", "ros_seg.ros.segmentation_node", "--ros-args", "-r", "__ns:=/bench",
                    "-p", "device:=cpu", "-p", f"weights:={args.weights}", "-p", f"network_height:={net_h}",
                    "-p", f"network_width:={net_w}", "-p", f"input_qos:={'reliable' if reliable else 'sensor_data'}"]
    node = subprocess.Popen(node_command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        camera_command = [sys.executable, __file__, "--camera", "--size", args.size, "--frames", str(args.frames),
                          "--warmup", str(args.warmup), "--frame-timeout", str(args.frame_timeout)]
        camera_command += ["--reliable"] if reliable else []
        out = subprocess.run(camera_command, env=env, capture_output=True, text=True, check=True, timeout=900)
    finally:
        node.terminate()
        node.wait(timeout=60)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    latencies = np.asarray(measured["latencies_ms"])
    infer = measured["infer_ms"]
    row = {"frames": args.frames, "delivered": measured["delivered"], "lost": args.frames - measured["delivered"],
           "infer_ms_mean": infer}
    if latencies.size:
        row["end_to_end_ms"] = {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))}
        if infer is not None:
            row["overhead_ms"] = {k: v - infer for k, v in row["end_to_end_ms"].items()}
    return row


def markdown(result: dict) -> str:
    lines = [
        "# Large frames between processes: shipped Fast DDS profile vs defaults",
        "",
        f"`{result['command']}`",
        "",
        f"Machine: {result['machine']}. Input {result['size']} rgb8 published one frame at a time by a camera "
        f"process, segmentation node process with the demo checkpoint at network size {result['network_size']} "
        f"on the CPU; {result['frames']} timed frames per configuration after {result['warmup']} untimed, "
        f"{result['frame_timeout']} s per frame before it counts as lost. Overhead = end to end - the node's "
        "mean model time (diagnostics infer_ms). Loopback only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).",
        "",
        "| configuration | delivered / sent | end to end p50 / p95 ms | model ms (mean) | overhead p50 / p95 ms |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["configurations"].items():
        def pair(stats: dict | None) -> str:
            return f"{stats['p50']:.0f} / {stats['p95']:.0f}" if stats else "-"

        model = f"{row['infer_ms_mean']:.0f}" if row["infer_ms_mean"] else "-"
        lines.append(f"| {name} | {row['delivered']} / {row['frames']} | {pair(row.get('end_to_end_ms'))} | "
                     f"{model} | {pair(row.get('overhead_ms'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--network-size", default="512x1024")
    parser.add_argument("--weights", default=str(DEMO_WEIGHTS))
    parser.add_argument("--frame-timeout", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--camera", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reliable", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))
    if args.camera:
        camera(args)
        return
    import platform

    configurations = {name: run_configuration(args, **c) for name, c in CONFIGURATIONS.items()}
    result = {
        "benchmark": "dds_profile_transport",
        "command": f"python benchmarks/dds_profile_transport.py --frames {args.frames} --size {args.size} "
                   f"--network-size {args.network_size}",
        "size": args.size, "network_size": args.network_size, "frames": args.frames, "warmup": args.warmup,
        "frame_timeout": args.frame_timeout,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"load average {os.getloadavg()[0]:.1f}",
        "configurations": configurations,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dds_profile_transport.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "dds_profile_transport.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
