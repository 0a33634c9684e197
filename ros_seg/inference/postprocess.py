"""From class and mask logits to semantic and panoptic label maps (MaskFormer inference).

All work stays on the logits' device and is vectorized. Memory is bounded at
high resolution: semantic scores are formed at mask resolution (K class maps)
and only those K maps are resized; for panoptic, queries are selected first and
only the kept queries' masks are resized to the output size.

Resizing maps the valid (unpadded) region of the 1/4-resolution prediction onto
the output size in one bilinear sampling, the same as upsampling to the padded
input size, cropping and resizing again, without the intermediate full-size maps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ros_seg.data.class_metadata import ClassMetadata


@dataclass
class PanopticOutput:
    """Panoptic map (H, W) int32 (0 = unlabeled) and per-segment tensors, ids 1..S in order."""

    panoptic: torch.Tensor
    classes: torch.Tensor  # (S,) int64 class ids
    scores: torch.Tensor  # (S,) float


def resize_valid_region(
    maps: torch.Tensor, valid_size: tuple[int, int], padded_size: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """Bilinearly resample the valid part of prediction maps to `out_size`.

    maps: (C, h, w) predictions covering an input of `padded_size` (H', W');
    the image occupied the top-left `valid_size` (H, W) of it. Returns (C, *out_size).
    """
    c, h, w = maps.shape
    oh, ow = out_size
    device = maps.device
    # Output pixel centre -> input pixel -> map pixel (align_corners=False convention).
    sy = valid_size[0] / oh * h / padded_size[0]
    sx = valid_size[1] / ow * w / padded_size[1]
    ys = (torch.arange(oh, device=device, dtype=torch.float32) + 0.5) * sy
    xs = (torch.arange(ow, device=device, dtype=torch.float32) + 0.5) * sx
    gy = ys / h * 2 - 1  # normalized, align_corners=False
    gx = xs / w * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)  # (oh, ow, 2) as (x, y)
    out = F.grid_sample(
        maps[None].float(), grid[None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0]  # (C, oh, ow)


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-class score maps: sum over queries of softmax(class) x sigmoid(mask).

    class_logits (Q, K+1), mask_logits (Q, h, w) -> (K, h, w).
    """
    probs = class_logits.float().softmax(-1)[:, :-1]  # (Q, K)
    return torch.einsum("qk,qhw->khw", probs, mask_logits.float().sigmoid())


def semantic_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
) -> torch.Tensor:
    """(Q, K+1), (Q, h, w) -> (H, W) int64 class ids (argmax of the class score maps)."""
    scores = semantic_scores(class_logits, mask_logits)
    return resize_valid_region(scores, valid_size, padded_size, out_size).argmax(0)


def panoptic_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    metadata: ClassMetadata,
    valid_size: tuple[int, int],
    padded_size: tuple[int, int],
    out_size: tuple[int, int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> PanopticOutput:
    """MaskFormer panoptic merging.

    Keep queries whose best class is not "no object" and whose score exceeds
    `object_mask_threshold`; each pixel goes to the kept query with the highest
    score x sigmoid(mask); a query's segment is the pixels it wins where its own
    sigmoid >= 0.5, dropped when that is less than `overlap_threshold` of its
    whole mask (sigmoid >= 0.5); segments of one stuff class merge into one.
    """
    device = mask_logits.device
    num_classes = class_logits.shape[-1] - 1
    scores, labels = class_logits.float().softmax(-1).max(-1)  # (Q,), (Q,)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    empty = PanopticOutput(
        panoptic=torch.zeros(out_size, dtype=torch.int32, device=device),
        classes=torch.zeros(0, dtype=torch.int64, device=device),
        scores=torch.zeros(0, device=device),
    )
    if not bool(keep.any()):
        return empty
    scores, labels = scores[keep], labels[keep]
    probs = resize_valid_region(mask_logits[keep], valid_size, padded_size, out_size).sigmoid_()  # (N, H, W)
    winner = (probs * scores[:, None, None]).argmax(0)  # (H, W)
    winner_prob = probs.gather(0, winner[None])[0]  # (H, W)
    inside = winner_prob >= 0.5
    n = scores.shape[0]
    mask_area = torch.bincount(winner[inside], minlength=n)  # (N,)
    original_area = (probs >= 0.5).flatten(1).sum(1)  # (N,)
    del probs

    # Small per-query decisions: on the host, a few hundred scalars at most.
    mask_area_h, original_area_h = mask_area.tolist(), original_area.tolist()
    labels_h, scores_h = labels.tolist(), scores.tolist()
    query_to_segment = [0] * n
    stuff_segment: dict[int, int] = {}
    seg_classes: list[int] = []
    seg_scores: list[float] = []
    for q in range(n):
        if mask_area_h[q] == 0 or original_area_h[q] == 0:
            continue
        if mask_area_h[q] / original_area_h[q] < overlap_threshold:
            continue
        cls = labels_h[q]
        if not metadata.is_thing[cls] and cls in stuff_segment:
            query_to_segment[q] = stuff_segment[cls]
            continue
        seg_classes.append(cls)
        seg_scores.append(scores_h[q])
        query_to_segment[q] = len(seg_classes)
        if not metadata.is_thing[cls]:
            stuff_segment[cls] = len(seg_classes)
    if not seg_classes:
        return empty
    lut = torch.tensor(query_to_segment, dtype=torch.int32, device=device)
    panoptic = torch.where(inside, lut[winner], torch.zeros((), dtype=torch.int32, device=device))
    return PanopticOutput(
        panoptic=panoptic,
        classes=torch.tensor(seg_classes, dtype=torch.int64, device=device),
        scores=torch.tensor(seg_scores, dtype=torch.float32, device=device),
    )


def segment_statistics(panoptic: torch.Tensor, num_segments: int) -> dict[str, torch.Tensor]:
    """Area, bounding box and centroid of segments 1..num_segments of a (H, W) id map.

    Returns tensors of shape (S,): area, x0, y0, x1, y1 (inclusive), cx, cy.
    Segments without pixels get area 0 and a zero box.
    """
    h, w = panoptic.shape
    device = panoptic.device
    ids = panoptic.flatten().long()
    size = num_segments + 1
    area = torch.bincount(ids, minlength=size)
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    sum_x = torch.bincount(ids, weights=xs.double(), minlength=size)
    sum_y = torch.bincount(ids, weights=ys.double(), minlength=size)
    big = max(h, w)
    x0 = torch.full((size,), big, device=device, dtype=torch.long).scatter_reduce(0, ids, xs, "amin")
    y0 = torch.full((size,), big, device=device, dtype=torch.long).scatter_reduce(0, ids, ys, "amin")
    x1 = torch.full((size,), -1, device=device, dtype=torch.long).scatter_reduce(0, ids, xs, "amax")
    y1 = torch.full((size,), -1, device=device, dtype=torch.long).scatter_reduce(0, ids, ys, "amax")
    present = area > 0
    safe = area.clamp(min=1).double()
    zero = torch.zeros_like(x0)
    return {
        "area": area[1:],
        "x0": torch.where(present, x0, zero)[1:],
        "y0": torch.where(present, y0, zero)[1:],
        "x1": torch.where(present, x1, zero)[1:],
        "y1": torch.where(present, y1, zero)[1:],
        "cx": (sum_x / safe)[1:],
        "cy": (sum_y / safe)[1:],
    }
