"""A camera stand-in for the launch tests: publishes rgb8 frames of given sizes from its own process.

    python test/ros/frame_publisher.py --topic /front/image_raw --sizes 480x640,1024x2048 \
        --reliability best_effort --first-stamp 100 --repeat 3

Waits until the topic has a subscriber, then publishes each size `repeat`
times, `period` seconds apart, all copies of a size with the stamp
first-stamp + its index (frame_id "camera"). Exits 0, or 1 when no subscriber
appears within `wait` seconds. Its DDS settings come from the environment
(a camera driver started with or without the shipped Fast DDS profile).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def frame(height: int, width: int, stamp_sec: int) -> Image:
    """A random rgb8 frame with stamp (stamp_sec, 123) and frame_id 'camera'."""
    pixels = np.random.default_rng(stamp_sec).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=pixels.tobytes())
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_sec, 123
    return msg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--sizes", required=True, help="comma-separated HxW")
    parser.add_argument("--reliability", choices=["best_effort", "reliable"], default="best_effort")
    parser.add_argument("--first-stamp", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--period", type=float, default=0.4)
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    rclpy.init()
    node = Node("frame_publisher")
    publisher = node.create_publisher(Image, args.topic, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                                                    reliability=reliability))
    end = time.monotonic() + args.wait
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > end:
            print(f"frame_publisher: no subscriber on {args.topic} within {args.wait} s", file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(0.5)  # the subscriber's side of discovery
    for index, (height, width) in enumerate(sizes):
        msg = frame(height, width, args.first_stamp + index)
        for _ in range(args.repeat):
            publisher.publish(msg)
            time.sleep(args.period)
    time.sleep(1.0)  # reliable samples still being acknowledged
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
