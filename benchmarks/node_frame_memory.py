"""Peak memory of a segmentation node process for one oversized frame (issue 26).

    source scripts/env.sh && python benchmarks/node_frame_memory.py [--frame raw|png] [--size 8192x8192] \
        [--memory-limit-gib 8] [-- NODE_ARGS...]

Starts a node process (the demo checkpoint on the CPU, reliable input QoS, plus
NODE_ARGS, e.g. `-p network_height:=512 -p network_width:=1024`) under an
address-space limit (so a node that tries to take the machine fails instead),
waits until it subscribes, reads its peak RSS (VmHWM in /proc), publishes one
frame from this process - an rgb8 Image of --size (reliable; 201 MB for
8192x8192), or a PNG whose header declares --size (261 KB for a 16384x16384
gray one) - waits until the node's /diagnostics account for the frame
(processed, rejected or failed) and reads the peak again. Prints one JSON line:
peak before and after (MiB), the counts and the last error. Run it against an
older tree by putting that tree first on PYTHONPATH. DDS stays on loopback.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

NAMESPACE = "/frame_memory"
STATUS = f"ros_seg: segmentation_node ({NAMESPACE}/segmentation_node)"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of zeros, compressed row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)
    idat = b"".join([compressor.compress(row) for _ in range(height)] + [compressor.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frame", choices=["raw", "png"], default="raw")
    parser.add_argument("--size", default="8192x8192", help="HxW")
    parser.add_argument("--memory-limit-gib", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("node_args", nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "64")
    height, width = (int(v) for v in args.size.split("x"))
    limit = int(args.memory_limit_gib * 2**30)
    compressed = args.frame == "png"
    command = [sys.executable, "-m", "ros_seg.ros.segmentation_node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
               "-p", "device:=cpu", "-p", "input_qos:=reliable", "-p", f"use_compressed:={str(compressed).lower()}",
               *args.node_args]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    rclpy.init()
    client = Node("frame_memory_camera")
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    topic = f"{NAMESPACE}/image" + ("/compressed" if compressed else "")
    publisher = client.create_publisher(CompressedImage if compressed else Image, topic, reliable)
    statuses: list[dict[str, str]] = []
    client.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(
        {kv.key: kv.value for kv in s.values} | {"message": s.message} for s in m.status if s.name == STATUS), 10)
    # The node's outputs are wanted, so the lazy node segments.
    client.create_subscription(Image, f"{NAMESPACE}/semantic", lambda m: None, 1)
    end = time.monotonic() + args.timeout
    while publisher.get_subscription_count() == 0 or not statuses:
        if time.monotonic() > end or node.poll() is not None:
            raise SystemExit(f"node did not come up:\n{node.communicate()[0] if node.poll() is not None else ''}")
        rclpy.spin_once(client, timeout_sec=0.1)
    before = peak_rss_mib(node.pid)
    if compressed:
        msg = CompressedImage(format="png", data=png_of_zeros(width, height))
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=pixels.tobytes())
        del pixels
    sent = time.monotonic()
    publisher.publish(msg)
    accounted = {}
    while time.monotonic() < end and node.poll() is None:
        rclpy.spin_once(client, timeout_sec=0.1)
        if statuses and sum(int(statuses[-1][f"frames_{k}"]) for k in ("processed", "rejected", "failed")) >= 1:
            accounted = statuses[-1]
            break
    after = peak_rss_mib(node.pid) if node.poll() is None else float("nan")
    node.terminate()
    output = node.communicate(timeout=60)[0]
    print(json.dumps({
        "frame": args.frame, "size": args.size, "bytes": len(msg.data), "node_args": args.node_args,
        "memory_limit_gib": args.memory_limit_gib, "peak_rss_before_mib": round(before, 1),
        "peak_rss_after_mib": round(after, 1), "seconds_to_account": round(time.monotonic() - sent, 1),
        "counts": {k: accounted.get(f"frames_{k}") for k in ("received", "processed", "rejected", "failed")},
        "last_error": accounted.get("last_error", "")[:200], "node_exit": node.returncode,
        "node_log_tail": output.strip().splitlines()[-3:],
    }))
    client.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
