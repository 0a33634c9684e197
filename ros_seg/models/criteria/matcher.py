"""Hungarian matching of predicted queries to ground-truth masks (Mask2Former recipe).

For each image the cost of assigning query q to target t is

    class_weight * (-p_q(class_t)) + mask_weight * BCE(q, t) + dice_weight * dice(q, t)

where p_q is the softmax over the K + 1 classes, and BCE (mean over points)
and dice (with +1 smoothing) compare the sigmoid mask of q with the binary
target on the same uniformly random points of the image. The assignment
minimizing the summed cost comes from scipy's linear_sum_assignment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ros_seg.models.criteria.point_sampling import point_sample


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over points of BCE(sigmoid(logits_q), targets_t): (Q, P), (T, P) -> (Q, T)."""
    points = logits.shape[1]
    positive = F.softplus(-logits)  # (Q, P), -log sigmoid(x): loss where the target is 1
    negative = F.softplus(logits)  # (Q, P), -log(1 - sigmoid(x)): loss where the target is 0
    return (positive @ targets.T + negative @ (1 - targets).T) / points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - (2 |p n t| + 1) / (|p| + |t| + 1) with p = sigmoid(logits): (Q, P), (T, P) -> (Q, T)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T  # (Q, T)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]  # (Q, T)
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """One-to-one assignment of queries to targets per image.

    Args:
        class_weight: weight of the classification cost (-probability of the target class).
        mask_weight: weight of the sigmoid BCE cost.
        dice_weight: weight of the dice cost.
        num_points: points sampled uniformly per image (the same for all queries and targets).
    """

    def __init__(
        self, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0, num_points: int = 12544
    ) -> None:
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, target_masks: torch.Tensor
    ) -> torch.Tensor:
        """Cost (Q, T) of one image.

        logits (Q, K+1), masks (Q, h, w) mask logits, labels (T,) class ids,
        target_masks (T, H, W) covering the same image area as `masks`.
        """
        points = torch.rand(1, self.num_points, 2, device=masks.device)  # (1, P, 2)
        pred = point_sample(masks[:, None].float(), points.expand(masks.shape[0], -1, -1))[:, 0]  # (Q, P)
        target = point_sample(
            target_masks[:, None].float(), points.expand(target_masks.shape[0], -1, -1)
        )[:, 0]  # (T, P)
        cost_class = -logits.float().softmax(-1)[:, labels]  # (Q, T)
        return (
            self.class_weight * cost_class
            + self.mask_weight * pairwise_sigmoid_bce(pred, target)
            + self.dice_weight * pairwise_dice(pred, target)
        )

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, h, w)}; targets per image
        {"labels": (T,), "masks": (T, H, W)} -> per image (query indices, target indices), int64, equal length."""
        matches = []
        for b, target in enumerate(targets):
            labels = target["labels"]
            device = labels.device
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=device)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], labels, target["masks"])
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append(
                (
                    torch.as_tensor(rows, dtype=torch.int64, device=device),
                    torch.as_tensor(cols, dtype=torch.int64, device=device),
                )
            )
        return matches
