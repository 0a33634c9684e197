"""`ros-seg make-bag`: a rosbag2 of camera frames and ground truth from a Cityscapes-layout or image folder."""
from __future__ import annotations

import argparse
import sys

from ros_seg.cli.arguments import image_size, positive_rate
from ros_seg.replay.bag_types import COMPRESSED_FORMATS
from ros_seg.replay.bag_writer import (
    GT_PANOPTIC_TOPIC,
    GT_SEGMENTS_TOPIC,
    GT_SEMANTIC_TOPIC,
    STORAGES,
    camera_info_topic,
    write_bag,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-bag",
        help="write a rosbag2 (mcap or sqlite3) of camera frames and ground truth for replay evaluation",
        description="Write the frames of a Cityscapes-layout folder (real Cityscapes with createPanopticImgs "
        "output, or `ros-seg synth --sequence`) or of a plain folder of images as a rosbag2 that `ros2 bag "
        "play` and `ros-seg replay` read: sensor_msgs/Image rgb8 on the camera topic (or CompressedImage on "
        "CAMERA_TOPIC/compressed with --compressed) and CameraInfo on the camera's camera_info topic, at "
        f"--rate; with Cityscapes data also the ground truth on {GT_SEMANTIC_TOPIC} (mono8 train ids), "
        f"{GT_PANOPTIC_TOPIC} (32SC1 segment ids) and {GT_SEGMENTS_TOPIC} (ros_seg/msg/SegmentArray). "
        "Every message of a frame has the same header (stamp, frame_id) and is logged at that stamp.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="Cityscapes-layout root or folder of images")
    p.add_argument("--out", required=True, metavar="BAG", help="bag folder to create (must not exist)")
    p.add_argument("--split", default="val", help="Cityscapes split to read (default val)")
    p.add_argument("--storage", choices=tuple(STORAGES), default="mcap", help="storage plugin (default mcap)")
    p.add_argument("--rate", type=positive_rate, default=17.0, metavar="HZ",
                   help="frame rate of the stamps (default 17, the Cityscapes camera)")
    p.add_argument("--compressed", nargs="?", const="jpeg", choices=tuple(COMPRESSED_FORMATS), default=None,
                   help="write sensor_msgs/CompressedImage (jpeg when no format is given, or png) instead of raw rgb8")
    p.add_argument("--size", type=image_size, default=None, metavar="HxW",
                   help="resize frames (area) and ground truth (nearest) to HxW (default: as stored)")
    p.add_argument("--camera-topic", default="/camera/image_raw", help="image topic (default /camera/image_raw)")
    p.add_argument("--frame-id", default="camera", help="header frame_id (default camera)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="write at most N frames")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    summary = write_bag(
        args.data, args.out, split=args.split, storage=args.storage, rate_hz=args.rate, compressed=args.compressed,
        size=args.size, camera_topic=args.camera_topic, frame_id=args.frame_id, max_frames=args.max_frames,
        progress=sys.stderr.isatty(),
    )
    truth = "with ground truth" if summary.ground_truth else "without ground truth"
    print(
        f"wrote {summary.frames} frames of {summary.size[0]}x{summary.size[1]} (HxW, {truth}) to {summary.path}: "
        f"{summary.image_topic} and {camera_info_topic(args.camera_topic)} at {args.rate:g} Hz, "
        f"{summary.duration_s:.1f} s, {args.storage}"
    )
    return 0
