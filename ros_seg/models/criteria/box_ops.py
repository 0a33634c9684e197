"""Box geometry for box supervision: conversions, boxes of masks, generalized IoU (Rezatofighi et al., CVPR 2019).

Boxes are (cx, cy, w, h) or (x0, y0, x1, y1), normalized to the image size
unless a function says otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) (cx, cy, w, h) -> (..., 4) (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def mask_boxes(masks: Tensor) -> Tensor:
    """(T, H, W) binary masks -> (T, 4) normalized (cx, cy, w, h) of their tight boxes (pixel edges).

    An empty mask gets the zero box.
    """
    count, height, width = masks.shape
    if count == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    rows = masks.any(dim=2)  # (T, H)
    cols = masks.any(dim=1)  # (T, W)
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    y0 = torch.where(rows, ys, height).amin(1)
    y1 = torch.where(rows, ys + 1, 0).amax(1)
    x0 = torch.where(cols, xs, width).amin(1)
    x1 = torch.where(cols, xs + 1, 0).amax(1)
    present = rows.any(1)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=masks.device)
    xyxy = torch.stack((x0, y0, x1, y1), dim=-1).float() / scale
    boxes = torch.stack(
        (
            (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
            xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1],
        ),
        dim=-1,
    )
    return torch.where(present[:, None], boxes, torch.zeros_like(boxes))


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise GIoU of (N, 4) and (M, 4) (x0, y0, x1, y1) boxes -> (N, M), in [-1, 1]."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)  # (N, M)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / (union + eps)
    hull_tl = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    hull_br = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    hull = (hull_br - hull_tl).clamp(min=0).prod(-1)
    return iou - (hull - union) / (hull + eps)
