"""Mask-wise merging of Panoptic SegFormer (Li et al., Algorithm 1) into semantic and panoptic maps.

Each query is a candidate segment with a class (argmax of its sigmoid class
scores), a class score (that max) and a soft mask (sigmoid of its mask logits).
Its confidence is class score x mask quality^2, the quality being the mean
soft-mask value over the pixels of its binary mask (soft > mask_threshold), as
the authors' code computes it. Candidates are then taken in descending
confidence:

1. a candidate whose confidence is below `score_threshold` is dropped;
2. it may paint only pixels of its binary mask that no earlier segment took;
3. if that newly painted area is less than `overlap_threshold` of its binary
   mask area (or its mask is empty), it is dropped and paints nothing;
4. otherwise a thing becomes a new segment (its own instance id); stuff joins
   the segment of its class if one exists, else starts it.

The semantic map comes from the same painting: each painted pixel gets its
segment's class, unpainted pixels `metadata.ignore_id` (mask-wise merging
leaves pixels no confident mask covers unlabeled).

Confidence and quality are measured on the network-resolution masks (their
valid, unpadded part), so only the candidates that pass the score threshold are
resized to the output size; the painting runs at the output size on the
logits' device, one vectorized step per candidate.
"""
from __future__ import annotations

import math

import torch

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.postprocess.label_maps import PanopticOutput, resize_valid_region


def candidate_confidence(
    class_logits: torch.Tensor, soft_masks: torch.Tensor, mask_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q, K) focal logits and (Q, h, w) soft masks -> confidence (Q,), class score (Q,), class (Q,)."""
    scores, labels = class_logits.float().sigmoid().max(-1)
    binary = (soft_masks > mask_threshold).flatten(1).float()  # (Q, h*w)
    quality = (soft_masks.flatten(1).float() * binary).sum(1) / binary.sum(1).clamp(min=1.0)
    return scores * quality**2, scores, labels


def maskwise_merge(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    metadata: ClassMetadata,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
    score_threshold: float = 0.25,
    overlap_threshold: float = 0.6,
    mask_threshold: float = 0.5,
) -> tuple[torch.Tensor, PanopticOutput]:
    """Algorithm 1 on one image: (Q, K) focal class logits, (Q, h, w) mask logits covering `padded_size`,
    of which the image is the top-left `valid_size` -> (semantic (H, W) int64, PanopticOutput) at `out_size`.

    PanopticOutput.scores holds each segment's confidence (its first candidate's, for merged stuff).
    """
    device = mask_logits.device
    h, w = mask_logits.shape[-2:]
    valid_h = math.ceil(h * valid_size[0] / padded_size[0])
    valid_w = math.ceil(w * valid_size[1] / padded_size[1])
    soft = mask_logits[:, :valid_h, :valid_w].float().sigmoid()  # (Q, h', w')
    confidence, _, labels = candidate_confidence(class_logits, soft, mask_threshold)
    order = torch.argsort(confidence, descending=True)
    order = order[confidence[order] >= score_threshold]
    semantic = torch.full(out_size, metadata.ignore_id, dtype=torch.int64, device=device)
    panoptic = torch.zeros(out_size, dtype=torch.int32, device=device)
    if order.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return semantic, PanopticOutput(panoptic, empty, torch.zeros(0, device=device))
    resized = resize_valid_region(mask_logits[order], valid_size, padded_size, out_size)  # (N, H, W) logits
    binary = resized.sigmoid_() > mask_threshold
    del resized
    taken = torch.zeros(out_size, dtype=torch.bool, device=device)
    # Per candidate on the host: a few hundred scalars at most.
    areas = binary.flatten(1).sum(1).tolist()
    labels_h, confidence_h = labels[order].tolist(), confidence[order].tolist()
    seg_classes: list[int] = []
    seg_scores: list[float] = []
    stuff_segment: dict[int, int] = {}
    for i, (cls, area) in enumerate(zip(labels_h, areas)):
        fresh = binary[i] & ~taken
        fresh_area = int(fresh.sum())
        if area == 0 or fresh_area / area < overlap_threshold:
            continue
        if not metadata.is_thing[cls] and cls in stuff_segment:
            segment = stuff_segment[cls]
        else:
            seg_classes.append(cls)
            seg_scores.append(confidence_h[i])
            segment = len(seg_classes)
            if not metadata.is_thing[cls]:
                stuff_segment[cls] = segment
        panoptic.masked_fill_(fresh, segment)
        semantic.masked_fill_(fresh, cls)
        taken |= fresh
    return semantic, PanopticOutput(
        panoptic=panoptic,
        classes=torch.tensor(seg_classes, dtype=torch.int64, device=device),
        scores=torch.tensor(seg_scores, dtype=torch.float32, device=device),
    )
