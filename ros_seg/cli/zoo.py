"""`ros-seg zoo`: the official checkpoints ros_seg can run: list them, pull one into the cache."""
from __future__ import annotations

import argparse
import json
import sys

from ros_seg.inference.model_zoo import DEFAULT_RETRIES, cached_entries, pull, zoo_dir
from ros_seg.inference.zoo_catalogue import ENTRIES, ZooEntry, zoo_entry, zoo_names
from ros_seg.models.class_metadata import class_metadata


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo",
        help="official checkpoints: list them, pull one (download, verify, convert) into the cache",
        description="The checkpoints the authors of Mask2Former, PRO-SCALE and Panoptic SegFormer publish that "
        "ros_seg can run. `zoo pull NAME` downloads the official file (resuming a broken-off download), checks "
        "it against the authors' checksum where they give one, converts it once into a ros_seg checkpoint in "
        "$ROS_SEG_CACHE/zoo (default ~/.cache/ros_seg/zoo), and the node then runs it with "
        "`weights:=zoo:NAME` (the node never downloads). Offline robots: download the file elsewhere and use "
        "`zoo pull NAME --from-file FILE`.",
        epilog="actions: `ros-seg zoo list [--json OUT]`; `ros-seg zoo pull NAME [--from-file FILE] [--mirror URL] "
        "[--retries N] [--no-progress]` (`ros-seg zoo ACTION --help` describes each option)",
    )
    zoo = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    listing = zoo.add_parser("list", help="the zoo's models, what they were trained on, where they come from",
                             description="List the zoo: name, ros_seg model, label set and classes, the authors' "
                             "published accuracy, the file, its published checksum and whether it is in the cache.")
    listing.add_argument("--json", metavar="OUT", help="write the list as JSON to OUT ('-' for stdout)")
    listing.set_defaults(func=run_list)
    get = zoo.add_parser("pull", help="download, verify and convert one official checkpoint into the cache",
                         description="Download NAME's official file (progress on stderr; a broken-off download is "
                         "resumed with an HTTP Range request, here and on the next run), check it against the "
                         "checksum the authors publish, convert it into a ros_seg checkpoint in the cache. A model "
                         "already in the cache is reused. Every failure (unknown name, wrong checksum, a file of "
                         "another model or label set) leaves nothing half-written in the cache.")
    get.add_argument("name", metavar="NAME", help=f"zoo model: {', '.join(zoo_names())}")
    get.add_argument("--from-file", metavar="FILE",
                     help="use this official file (downloaded by hand) instead of downloading; checked the same way")
    get.add_argument("--mirror", metavar="URL",
                     help="download the official file name from this base URL (a local mirror) instead of the "
                     "authors' link")
    get.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                     help=f"times a broken-off download is resumed before giving up (default {DEFAULT_RETRIES})")
    get.add_argument("--no-progress", action="store_true", help="no progress bar")
    get.set_defaults(func=run_pull)


def _row(entry: ZooEntry, cached: bool) -> dict:
    return {
        "name": entry.name,
        "model": entry.model,
        "dataset": entry.dataset,
        "classes": class_metadata(entry.dataset).num_classes,
        "task": entry.task,
        "published": entry.published,
        "official_config": entry.official_config,
        "url": entry.url,
        "page": entry.page,
        "file_name": entry.file_name,
        "size": entry.size,
        "md5_prefix": entry.md5_prefix,
        "cached": cached,
    }


def run_list(args: argparse.Namespace) -> int:
    cached = cached_entries()
    rows = [_row(entry, entry in cached) for entry in ENTRIES]
    if args.json:
        text = json.dumps({"cache": str(zoo_dir()), "models": rows}, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        return 0
    for row in rows:
        accuracy = ", ".join(f"{k} {v:g}" for k, v in row["published"].items())
        state = "in cache" if row["cached"] else "not pulled"
        print(f"{row['name']}  [{state}]")
        print(f"    model {row['model']}, {row['dataset']} ({row['classes']} classes), {row['task']}; published: "
              f"{accuracy}")
        print(f"    file {row['file_name']} (size: {row['size'] or 'not published'}, checksum: "
              f"{zoo_entry(row['name']).checksum_text})")
        print(f"    from {row['url'] or 'no direct link: download by hand from ' + row['page']}")
    print(f"cache: {zoo_dir()}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    path = pull(args.name, from_file=args.from_file, mirror=args.mirror, retries=args.retries,
                progress=not args.no_progress, say=lambda line: print(line, file=sys.stderr))
    entry = zoo_entry(args.name)
    print(path)
    print(f"run it: ros2 launch ros_seg segmentation.launch.py model:={entry.model} weights:=zoo:{entry.name}",
          file=sys.stderr)
    return 0
