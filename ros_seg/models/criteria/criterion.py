"""Set-prediction loss of MaskFormer-family models (Mask2Former recipe, used unchanged by PEM).

Queries are matched one-to-one to ground-truth masks (`HungarianMatcher`);
then, for the final prediction and every deep-supervision output:

- loss_ce:   class_weight * cross-entropy of every query's class logits, the
             target being the matched mask's class or "no object" (weight
             `no_object_weight` in the class-weighted mean);
- loss_mask: mask_weight * sigmoid BCE, mean over points, summed over matched pairs;
- loss_dice: dice_weight * dice loss (+1 smoothing), summed over matched pairs;

mask terms are divided by the number of target masks in the batch (averaged
over processes when training is distributed). Mask terms are evaluated at
`num_points` points per pair chosen by importance sampling: the most uncertain
of `oversample_ratio` x as many random points (share `importance_sample_ratio`)
plus uniform random ones.

Target masks must cover the same image area as the predictions, i.e. the
padded input; predictions at 1/4 resolution and targets at full resolution are
compared at the same continuous points.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ros_seg.models.criteria.matcher import HungarianMatcher
from ros_seg.models.criteria.point_sampling import point_sample, uncertain_points
from ros_seg.models.criteria.process_group_mean import all_reduce_mean


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over pairs of the mean BCE over points: (M, P), (M, P) -> scalar."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over pairs of 1 - (2 |p n t| + 1) / (|p| + |t| + 1), p = sigmoid: (M, P), (M, P) -> scalar."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum()


class SetCriterion(nn.Module):
    """Matching + weighted class, BCE and dice losses with deep supervision.

    Args:
        num_classes: number of classes K (logits have K + 1, last = no object).
        matcher: assigns queries to targets.
        class_weight: weight of the cross-entropy term.
        mask_weight: weight of the BCE term.
        dice_weight: weight of the dice term.
        no_object_weight: class weight of "no object" in the cross-entropy.
        num_points: points per matched pair for the mask terms.
        oversample_ratio: random candidates per point for importance sampling.
        importance_sample_ratio: share of points taken from the most uncertain candidates.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def class_loss(
        self, logits: torch.Tensor, targets: list[dict], matches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Weighted cross-entropy over all queries: logits (B, Q, K+1) -> scalar (unweighted by class_weight)."""
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, (query_idx, target_idx) in enumerate(matches):
            target_classes[b, query_idx] = targets[b]["labels"][target_idx]
        return F.cross_entropy(logits.float().transpose(1, 2), target_classes, self.empty_weight)

    def mask_losses(
        self,
        masks: torch.Tensor,
        targets: list[dict],
        matches: list[tuple[torch.Tensor, torch.Tensor]],
        num_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE and dice sums over matched pairs / num_masks: masks (B, Q, h, w) -> two scalars."""
        pred = torch.cat([masks[b, query_idx] for b, (query_idx, _) in enumerate(matches)])  # (M, h, w)
        if pred.shape[0] == 0:
            zero = masks.sum() * 0.0  # keeps every mask parameter in the graph (DDP expects gradients)
            return zero, zero
        target = torch.cat([t["masks"][target_idx] for t, (_, target_idx) in zip(targets, matches)])  # (M, H, W)
        pred = pred[:, None].float()  # (M, 1, h, w)
        points = uncertain_points(pred, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
        with torch.no_grad():
            point_targets = point_sample(target[:, None].float(), points)[:, 0]  # (M, P)
        point_logits = point_sample(pred, points)[:, 0]  # (M, P)
        bce = sigmoid_bce_loss(point_logits, point_targets) / num_masks
        dice = dice_loss(point_logits, point_targets) / num_masks
        return bce, dice

    def single_output_losses(
        self, output: dict, targets: list[dict], num_masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted loss terms of one prediction {"pred_logits", "pred_masks"}."""
        matches = self.matcher(output, targets)
        bce, dice = self.mask_losses(output["pred_masks"], targets, matches, num_masks)
        return {
            "loss_ce": self.class_weight * self.class_loss(output["pred_logits"], targets, matches),
            "loss_mask": self.mask_weight * bce,
            "loss_dice": self.dice_weight * dice,
        }

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Weighted loss terms of the final output ("loss_ce", "loss_mask", "loss_dice") and of
        aux output i ("loss_ce_i", ...); the training loss is their sum.

        outputs: {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, h, w), "aux_outputs": [...]};
        targets: per image {"labels": (T,) int64, "masks": (T, H, W) bool or float}.
        """
        device = outputs["pred_logits"].device
        # Float masks once for the matcher and the losses of every layer (not a conversion per layer).
        targets = [{**t, "masks": t["masks"].float()} for t in targets]
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        num_masks = all_reduce_mean(count).clamp(min=1.0)
        losses = self.single_output_losses(outputs, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            for name, value in self.single_output_losses(aux, targets, num_masks).items():
                losses[f"{name}_{i}"] = value
        return losses
