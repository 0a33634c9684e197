"""Accuracy of a model on a Cityscapes-layout split: mIoU and, for panoptic data, PQ / SQ / RQ.

Runs the model directly (no Segmenter): each image, optionally resized to an
evaluation size, goes through the model in eval mode; `semantic_inference` and
`panoptic_inference` turn the predictions into label maps at the ground
truth's resolution, which the metric accumulators score. Used by the periodic
evaluation of training and by `ros-seg eval`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ros_seg.data.panoptic_ground_truth import ground_truth_panoptic
from ros_seg.eval.json_safe import nan_to_none
from ros_seg.eval.panoptic_metrics import PanopticAccumulator
from ros_seg.eval.semantic_metrics import SemanticAccumulator
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.model_config import InferenceConfig, PanopticSegFormerConfig
from ros_seg.models.panoptic_segformer import PanopticSegFormer
from ros_seg.models.postprocess.label_maps import panoptic_inference, semantic_inference
from ros_seg.models.postprocess.maskwise_merge import maskwise_merge


@torch.no_grad()
def evaluate(
    model: MaskFormer,
    dataset: Any,
    metadata: ClassMetadata,
    inference: InferenceConfig,
    device: torch.device,
    size: tuple[int, int] | None = None,
    progress: bool = False,
    mask_threshold: float = PanopticSegFormerConfig().mask_threshold,
) -> dict[str, Any]:
    """Score `model` on every sample of `dataset` (a CityscapesDataset without transform).

    size: (H, W) the images are resized to before the model (None: as stored);
    predictions are scored at the ground truth's resolution either way.
    Returns miou, per_class_iou {name: IoU or None}, pixel_accuracy,
    confused_with {name: [(class its pixels were most often predicted as,
    percent), ...]} and, when the dataset's task is panoptic, pq, sq, rq,
    pq_things, pq_stuff, per_class_pq {name: {pq, sq, rq, tp, fp, fn}} and
    things_by_area [{area, segments, matched, recall}] (percent; None where
    undefined), plus "images". The model is left in eval mode.
    Panoptic SegFormer predictions are merged mask-wise (ros_seg.models.postprocess.maskwise_merge),
    binarizing soft masks at `mask_threshold`.
    """
    mask_wise = isinstance(model, PanopticSegFormer)
    model.eval()
    semantic = SemanticAccumulator(metadata)
    panoptic = PanopticAccumulator(metadata) if dataset.task == "panoptic" else None
    d = model.size_divisibility
    for index in tqdm(range(len(dataset)), desc="evaluating", disable=not progress, leave=False):
        sample = dataset[index]
        out_size = sample["image"].shape[:2]
        image = torch.from_numpy(sample["image"]).to(device).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        if size is not None and tuple(size) != tuple(out_size):
            image = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)
        valid = tuple(image.shape[-2:])
        padded = (-(-valid[0] // d) * d, -(-valid[1] // d) * d)
        outputs = model(image)
        logits, masks = outputs["pred_logits"][0], outputs["pred_masks"][0]  # (Q, K+1), (Q, h, w)
        if mask_wise:
            labels, result = maskwise_merge(
                logits, masks, metadata, valid, padded, out_size,
                inference.object_mask_threshold, inference.overlap_threshold, mask_threshold,
            )
        else:
            labels = semantic_inference(logits, masks, valid, padded, out_size)
        semantic.update(labels.cpu().numpy(), sample["semantic"])
        if panoptic is not None:
            if not mask_wise:
                result = panoptic_inference(
                    logits, masks, metadata, valid, padded, out_size,
                    inference.object_mask_threshold, inference.overlap_threshold,
                )
            pred_segments = {i + 1: int(c) for i, c in enumerate(result.classes.tolist())}
            gt_map, gt_segments, gt_crowd = ground_truth_panoptic(sample)
            panoptic.update(result.panoptic.cpu().numpy(), pred_segments, gt_map, gt_segments, gt_crowd)
    summary = semantic.summary()
    report: dict[str, Any] = {
        "images": len(dataset),
        "miou": summary["miou"],
        "per_class_iou": summary["per_class_iou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "confused_with": semantic.confusions(),
    }
    pq = panoptic.summary() if panoptic is not None else {}
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        report[key] = pq.get(key, math.nan)
    if panoptic is not None:
        report["per_class_pq"] = pq["per_class"]
        report["things_by_area"] = pq["things_by_area"]
    return nan_to_none(report)
