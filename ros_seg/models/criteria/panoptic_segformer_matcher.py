"""Hungarian matching of Panoptic SegFormer's thing queries to ground-truth things.

Cost of assigning thing query q to target t (the authors' weights):

    class_weight * focal(q, class_t) + l1_weight * |box_q - box_t|_1
    + giou_weight * -GIoU(box_q, box_t) + dice_weight * dice(mask_q, mask_t)

with the focal cost of Deformable DETR (alpha 0.25, gamma 2: the focal loss of
"positive" minus that of "negative" at the target class). Box terms count when
the prediction has boxes, the dice term when it has masks (targets resized to
the mask resolution by area averaging; the masks are the model's non-negative
scores, used without a sigmoid in the authors' dice 1 - 2|m t| / (|m|^2 + |t|^2),
each squared sum + 0.001). Stuff queries are not matched: each
stands for its class. Solved by scipy's linear_sum_assignment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ros_seg.models.criteria.box_ops import cxcywh_to_xyxy, generalized_box_iou

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_EPS = 0.001


def squared_dice(masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The authors' dice of non-negative masks (M, P) against (M, P) targets, per pair -> (M,)."""
    overlap = (masks * targets).sum(-1)
    return 1 - 2 * overlap / ((masks * masks).sum(-1) + DICE_EPS + (targets * targets).sum(-1) + DICE_EPS)


def pairwise_squared_dice(masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`squared_dice` of every mask (Q, P) with every target (T, P) -> (Q, T)."""
    overlap = masks @ targets.T  # (Q, T)
    norms = (masks * masks).sum(-1)[:, None] + DICE_EPS + (targets * targets).sum(-1)[None, :] + DICE_EPS
    return 1 - 2 * overlap / norms


def pairwise_focal_cost(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(Q, K) sigmoid logits, (T,) classes -> (Q, T) focal cost of predicting class_t."""
    probs = logits.float().sigmoid()
    positive = FOCAL_ALPHA * (1 - probs) ** FOCAL_GAMMA * -F.logsigmoid(logits.float())
    negative = (1 - FOCAL_ALPHA) * probs**FOCAL_GAMMA * -F.logsigmoid(-logits.float())
    return (positive - negative)[:, labels]


def resize_targets(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W) binary masks -> (T, h, w) float coverage at `size` (area averaging)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    return F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]


class ThingMatcher:
    """One-to-one assignment of thing queries to thing targets per image.

    Args:
        class_weight: weight of the focal classification cost.
        l1_weight: weight of the L1 box cost.
        giou_weight: weight of the -GIoU box cost.
        dice_weight: weight of the dice mask cost.
    """

    def __init__(
        self, class_weight: float = 2.0, l1_weight: float = 5.0, giou_weight: float = 2.0, dice_weight: float = 2.0
    ) -> None:
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.dice_weight = dice_weight

    @torch.no_grad()
    def cost_matrix(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        boxes: torch.Tensor | None,
        target_boxes: torch.Tensor,
        masks: torch.Tensor | None,
        target_masks: torch.Tensor | None,
    ) -> torch.Tensor:
        """Cost (Q, T) of one image: logits (Q, K_things), labels (T,) thing slots, boxes (Q, 4) and
        target_boxes (T, 4) cxcywh, masks (Q, h, w) scores and target_masks (T, h, w) coverage."""
        cost = self.class_weight * pairwise_focal_cost(logits, labels)
        if boxes is not None:
            cost = cost + self.l1_weight * torch.cdist(boxes.float(), target_boxes, p=1)
            giou = generalized_box_iou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(target_boxes))
            cost = cost - self.giou_weight * giou
        if masks is not None:
            cost = cost + self.dice_weight * pairwise_squared_dice(masks.flatten(1).float(), target_masks.flatten(1))
        return cost

    @torch.no_grad()
    def __call__(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        targets: list[dict[str, torch.Tensor]],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """logits (B, Q, K_things); boxes (B, Q, 4) or None; masks (B, Q, h, w) or None; targets per image
        {"labels": (T,) thing slots, "boxes": (T, 4), "masks": (T, H, W)} -> per image (query idx, target idx)."""
        matches = []
        for b, target in enumerate(targets):
            labels = target["labels"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=labels.device)
                matches.append((empty, empty.clone()))
                continue
            target_masks = resize_targets(target["masks"], masks.shape[-2:]) if masks is not None else None
            cost = self.cost_matrix(
                logits[b],
                labels,
                boxes[b] if boxes is not None else None,
                target["boxes"],
                masks[b] if masks is not None else None,
                target_masks,
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append(
                (
                    torch.as_tensor(rows, dtype=torch.int64, device=labels.device),
                    torch.as_tensor(cols, dtype=torch.int64, device=labels.device),
                )
            )
        return matches
