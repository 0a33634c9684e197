"""`ros-seg metrics`: score prediction files in the official Cityscapes formats."""
from __future__ import annotations

import argparse
import sys

from ros_seg.cli.arguments import add_json_argument, write_json
from ros_seg.eval.json_safe import nan_to_none
from ros_seg.eval.prediction_files import score_panoptic_predictions, score_semantic_predictions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="score Cityscapes-format prediction files (mIoU or PQ/SQ/RQ)",
        description="Compare prediction files with the ground truth of a Cityscapes root (the real data set "
        "or `ros-seg synth` output), with the same rules and results as cityscapesScripts' official "
        "evaluators. Semantic: PNGs of Cityscapes label ids anywhere under --pred, each named "
        "CITY_SEQ_FRAME*.png, scored against gtFine/SPLIT/*/*_gtFine_labelIds.png -> miou, per_class_iou. "
        "Panoptic: a COCO-panoptic json in --pred (category_id = Cityscapes label id; the only json there, "
        "or cityscapes_panoptic_SPLIT.json) with its PNGs in --pred/<json stem>/, scored against "
        "gtFine/cityscapes_panoptic_SPLIT.json -> pq, sq, rq, pq_things, pq_stuff, per_class. "
        "Values are percentages. Every ground-truth image needs a prediction.",
    )
    p.add_argument("--task", choices=("semantic", "panoptic"), required=True, help="which prediction format to score")
    p.add_argument("--gt", required=True, help="Cityscapes root holding gtFine/")
    p.add_argument("--pred", required=True, help="prediction folder (for panoptic also the json file itself)")
    p.add_argument("--split", default="val", help="ground-truth split (default val)")
    add_json_argument(p)
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.2f}"


def _print_summary(result: dict) -> None:
    if "miou" in result:
        for name, iou in result["per_class_iou"].items():
            print(f"{name:14s} {_fmt(iou)}")
        print(f"mIoU {_fmt(result['miou'])}  pixel accuracy {_fmt(result['pixel_accuracy'])}  "
              f"({result['images']} images)")
        return
    for name, scores in result["per_class"].items():
        print(f"{name:14s} PQ {_fmt(scores['pq'])}  SQ {_fmt(scores['sq'])}  RQ {_fmt(scores['rq'])}")
    for group in ("", "_things", "_stuff"):
        label = group.strip("_") or "all"
        print(f"{label:7s} PQ {_fmt(result['pq' + group])}  SQ {_fmt(result['sq' + group])}  "
              f"RQ {_fmt(result['rq' + group])}  ({result['n' + group]} classes)")
    found = ", ".join(f"{row['area']} {row['matched']}/{row['segments']}" for row in result["things_by_area"])
    print(f"thing segments matched, by area: {found}")
    print(f"({result['images']} images)")


def run(args: argparse.Namespace) -> int:
    score = score_semantic_predictions if args.task == "semantic" else score_panoptic_predictions
    try:
        result = score(args.gt, args.pred, split=args.split)
    except (ValueError, OSError) as exc:
        print(f"ros-seg metrics: error: {exc}", file=sys.stderr)
        return 2
    result = {"task": args.task, "split": args.split, **nan_to_none(result)}
    if args.json is not None:
        write_json(result, args.json)
    if args.json != "-":
        _print_summary(result)
    return 0
