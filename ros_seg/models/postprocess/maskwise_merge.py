"""Mask-wise merging of Panoptic SegFormer (Li et al., Algorithm 1, as the authors' code runs it) into
semantic and panoptic maps.

Each query is a candidate segment with a class (argmax of its sigmoid class
scores), a class score (that max) and a mask: the model's non-negative mask
scores, resized to the output size (bilinear, the valid region of the padded
input) and binarized at `mask_threshold` without a sigmoid. Its confidence is
class score x quality^2, the quality being the sum of the mask's scores over its
binary mask divided by (binary area + 1), as the authors' code computes it.
Candidates are then taken in descending confidence:

1. a candidate whose confidence is below `score_threshold` is skipped;
2. if its mask is empty, or the share of its binary mask that no earlier segment
   took is below `overlap_threshold` (things; the authors: more than 0.4 taken
   skips it, so 0.6) or `stuff_overlap_threshold` (stuff; the authors' 0.2 -> 0.8),
   it is skipped (an exact tie keeps it, as in the authors' code);
3. otherwise it paints the pixels of its binary mask that no earlier segment
   took: a thing becomes a new segment (its own instance id); stuff joins the
   segment of its class if one exists, else starts it.

The semantic map comes from the same painting: each painted pixel gets its
segment's class, unpainted pixels `metadata.ignore_id`.

Confidences are measured on the output-size masks, a chunk of candidates at a
time (memory stays bounded at camera resolution), and only for candidates whose
class score x (largest mask value)^2, an upper bound of the confidence, reaches
`score_threshold`; the painting runs on the masks' device, one vectorized step per
candidate.
"""
from __future__ import annotations

import torch

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.postprocess.label_maps import PanopticOutput, resize_valid_region

CHUNK = 16
"""Candidates resized to the output size at once."""


def mask_quality(masks: torch.Tensor, mask_threshold: float = 0.5) -> torch.Tensor:
    """(N, H, W) non-negative mask scores -> (N,) sum of the scores over the binary mask / (its area + 1)."""
    binary = (masks > mask_threshold).flatten(1).float()
    return (masks.flatten(1).float() * binary).sum(1) / (binary.sum(1) + 1)


def maskwise_merge(
    class_logits: torch.Tensor,
    masks: torch.Tensor,
    metadata: ClassMetadata,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
    score_threshold: float = 0.25,
    overlap_threshold: float = 0.6,
    mask_threshold: float = 0.5,
    stuff_overlap_threshold: float = 0.8,
) -> tuple[torch.Tensor, PanopticOutput]:
    """Algorithm 1 on one image: (Q, K) focal class logits, (Q, h, w) non-negative masks covering
    `padded_size`, of which the image is the top-left `valid_size` -> (semantic (H, W) int64,
    PanopticOutput) at `out_size`.

    PanopticOutput.scores holds each segment's confidence (its first candidate's, for merged stuff).
    """
    device = masks.device
    scores, labels = class_logits.float().sigmoid().max(-1)  # (Q,)

    def resized(index: torch.Tensor) -> torch.Tensor:
        return resize_valid_region(masks[index], valid_size, padded_size, out_size)  # (n, H, W)

    # A quality never exceeds the mask's largest value (bilinear resizing only averages), so a
    # candidate whose score x max^2 misses the threshold is dropped without resizing it.
    bound = scores * masks.flatten(1).amax(1).float() ** 2
    hopeful = torch.nonzero(bound >= score_threshold)[:, 0]
    quality = [mask_quality(resized(chunk), mask_threshold) for chunk in hopeful.split(CHUNK)]
    confidence = scores[hopeful] * torch.cat([scores.new_zeros(0), *quality]) ** 2
    order = hopeful[torch.argsort(confidence, descending=True)]
    confidence = scores.new_zeros(scores.shape).index_put_((hopeful,), confidence)
    order = order[confidence[order] >= score_threshold]
    semantic = torch.full(out_size, metadata.ignore_id, dtype=torch.int64, device=device)
    panoptic = torch.zeros(out_size, dtype=torch.int32, device=device)
    taken = torch.zeros(out_size, dtype=torch.bool, device=device)
    labels_h, confidence_h = labels[order].tolist(), confidence[order].tolist()
    seg_classes: list[int] = []
    seg_scores: list[float] = []
    stuff_segment: dict[int, int] = {}
    for start, chunk in zip(range(0, len(labels_h), CHUNK), order.split(CHUNK)):
        binary = resized(chunk) > mask_threshold  # (n, H, W)
        areas = binary.flatten(1).sum(1).tolist()
        for i, area in enumerate(areas):
            cls = labels_h[start + i]
            thing = metadata.is_thing[cls]
            fresh = binary[i] & ~taken
            least = overlap_threshold if thing else stuff_overlap_threshold
            if area == 0 or fresh.sum().item() / area < least:
                continue
            if not thing and cls in stuff_segment:
                segment = stuff_segment[cls]
            else:
                seg_classes.append(cls)
                seg_scores.append(confidence_h[start + i])
                segment = len(seg_classes)
                if not thing:
                    stuff_segment[cls] = segment
            panoptic.masked_fill_(fresh, segment)
            semantic.masked_fill_(fresh, cls)
            taken |= fresh
    return semantic, PanopticOutput(
        panoptic=panoptic,
        classes=torch.tensor(seg_classes, dtype=torch.int64, device=device),
        scores=torch.tensor(seg_scores, dtype=torch.float32, device=device),
    )
