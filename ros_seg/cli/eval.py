"""`ros-seg eval`: accuracy of a trained model on a Cityscapes-layout split (mIoU, PQ / SQ / RQ).

Images go through the Segmenter, as in the node and in replay, so the scores are those of what the node
publishes."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ros_seg.cli.arguments import add_json_argument, image_size, weights_file, write_json
from ros_seg.data.cityscapes import TASKS, CityscapesDataset
from ros_seg.eval.split_scoring import Prediction, score_split
from ros_seg.inference.segmenter import Segmenter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a trained model on a data split (mIoU, PQ)",
        description="Run a trained model over every image of a split in the Cityscapes layout (real "
        "Cityscapes with createPanopticImgs output, or `ros-seg synth`) and score it: mIoU and per-class IoU "
        "(cityscapesScripts' pixel-level rules) and, for the panoptic task, PQ, SQ, RQ, PQ of things and of "
        "stuff (COCO panoptic rules), all in percent, with the share of thing segments found by their area "
        "in pixels. Images go through the Segmenter (as in the node and in replay); predictions are scored at "
        "the ground truth's resolution; --size only changes the resolution the model sees. Writes a JSON "
        "object (--json) and a Markdown report (--markdown, or next to the JSON file as .md; printed when no "
        "JSON goes to stdout).",
    )
    p.add_argument("--model", required=True, help="model name (e.g. pem_stdc1) or config file; must match the weights")
    p.add_argument("--weights", required=True, metavar="CKPT", type=weights_file,
                   help="ros_seg checkpoint (e.g. OUT/model_final.pt of ros-seg train), or zoo:NAME")
    p.add_argument("--data", required=True, metavar="DIR", help="Cityscapes-layout data root")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--task", choices=TASKS, default="panoptic",
                   help="panoptic (mIoU and PQ, default) or semantic (mIoU from labelIds only)")
    p.add_argument("--size", type=image_size, default=None, metavar="HxW",
                   help="resize images to HxW before the model (default: as stored, e.g. 1024x2048)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    p.add_argument("--markdown", metavar="OUT.md", default=None, help="write the Markdown report to this file")
    add_json_argument(p)
    p.set_defaults(func=run)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The evaluation as Markdown: summary table, then per class IoU, PQ / SQ / RQ with the counts of
    matched, false and missed segments (panoptic task), and the classes its pixels were mistaken for;
    then (panoptic task) the share of thing segments matched by their area."""
    lines = [
        f"# Evaluation of {report['model']} on {report['split']} ({report['images']} images)",
        "",
        f"Weights: `{report['weights']}`; data: `{report['data']}`.",
        "",
        "| metric | value (%) |",
        "|---|---|",
    ]
    for key in ("miou", "pq", "sq", "rq", "pq_things", "pq_stuff"):
        lines.append(f"| {key} | {_percent(report[key])} |")
    per_class_pq = report.get("per_class_pq")
    confused = report.get("confused_with", {})
    header = "| class | IoU (%) |"
    if per_class_pq is not None:
        header += " PQ | SQ | RQ | TP | FP | FN |"
    header += " its pixels most often predicted as |"
    lines += ["", header, "|---" * (header.count("|") - 1) + "|"]
    for name, value in report["per_class_iou"].items():
        row = f"| {name} | {_percent(value)} |"
        if per_class_pq is not None:
            scores = per_class_pq.get(name)
            row += (" n/a | n/a | n/a | 0 | 0 | 0 |" if scores is None else
                    f" {scores['pq']:.2f} | {scores['sq']:.2f} | {scores['rq']:.2f} |"
                    f" {scores['tp']} | {scores['fp']} | {scores['fn']} |")
        row += " " + (", ".join(f"{other} {share:.1f}%" for other, share in confused.get(name, [])) or "-") + " |"
        lines.append(row)
    by_area = report.get("things_by_area")
    if by_area:
        lines += ["", "Ground-truth segments of thing classes matched (IoU > 0.5), by area:", "",
                  "| area | segments | matched | recall (%) |", "|---|---|---|---|"]
        lines += [f"| {row['area']} | {row['segments']} | {row['matched']} | {_percent(row['recall'])} |"
                  for row in by_area]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    segmenter = Segmenter(args.model, args.weights, device=args.device or "auto", input_size=args.size)
    dataset = CityscapesDataset(args.data, args.split, args.task, metadata=segmenter.metadata)

    def predict(image: np.ndarray) -> Prediction:
        result = segmenter.segment(image, "rgb8")
        return Prediction(result.semantic, result.panoptic, {s.id: s.class_id for s in result.segments})

    scores = score_split(dataset, segmenter.metadata, predict, progress=sys.stderr.isatty())
    report = {
        "model": segmenter.model_name,
        "weights": str(args.weights),
        "data": str(args.data),
        "split": args.split,
        "task": args.task,
        "size": list(args.size) if args.size else None,
        **scores,
    }
    markdown = markdown_report(report)
    if args.json is not None:
        write_json(report, args.json)
    markdown_path = args.markdown
    if markdown_path is None and args.json not in (None, "-"):
        markdown_path = str(Path(args.json).with_suffix(".md"))
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(markdown)
    if args.json != "-":
        sys.stdout.write(markdown)
    return 0
